//! A model loaded for serving: its bundled preprocessing (SQL + fitted encoding) and the predictor.

use std::path::Path;

use arrow::datatypes::SchemaRef;
use millrace_ml::bundle::{ModelBundle, Predictor};
use millrace_ml::model::Task;
use serde_json::{Value, json};

use super::json::{instances_to_batch, schema_from_json};
use crate::preprocess::SqlPlan;
use crate::{Error, Result};

/// Why a request could not be answered; `status` is the HTTP status to send.
#[derive(Debug)]
pub struct RequestError {
    /// HTTP status code (4xx for the caller's mistakes).
    pub status: u16,
    /// What is wrong, naming the instance and field.
    pub message: String,
}

impl RequestError {
    fn bad(message: impl Into<String>) -> Self {
        RequestError {
            status: 400,
            message: message.into(),
        }
    }
}

/// A model ready to answer requests.
pub struct ServedModel {
    /// Name from the bundle.
    pub name: String,
    /// Version from the bundle.
    pub version: u64,
    bundle_task: Task,
    class_names: Option<Vec<String>>,
    input_schema: SchemaRef,
    sql: Option<SqlPlan>,
    predictor: Predictor,
    bundle: ModelBundle,
}

impl ServedModel {
    /// Loads a model directory written by a run (`model/`).
    pub fn load(dir: &Path) -> Result<Self> {
        let bundle = ModelBundle::load(dir)?;
        Self::from_bundle(bundle)
    }

    /// Serves an already loaded bundle.
    pub fn from_bundle(bundle: ModelBundle) -> Result<Self> {
        let predictor = Predictor::new(&bundle)?;
        let input_schema = match bundle.meta.extra.get("input_schema") {
            Some(v) => {
                schema_from_json(v).map_err(|e| Error::Serve(format!("model bundle: {e}")))?
            }
            None => {
                return Err(Error::Serve(
                    "model bundle has no input_schema: re-train it with this version of millrace"
                        .into(),
                ));
            }
        };
        let sql = match &bundle.meta.transform_sql {
            Some(wrapped) => {
                // Re-plan the stored (already wrapped) query against the stored input schema.
                let features = bundle.preprocess.required_columns(false);
                Some(SqlPlan::plan(Some(wrapped), &input_schema, &features)?)
            }
            None => None,
        };
        Ok(ServedModel {
            name: bundle.meta.name.clone(),
            version: bundle.meta.version,
            bundle_task: bundle.task,
            class_names: bundle.preprocess.class_names(),
            input_schema,
            sql,
            predictor,
            bundle,
        })
    }

    /// The raw fields a request must provide.
    pub fn input_schema(&self) -> &SchemaRef {
        &self.input_schema
    }

    /// The loaded bundle.
    pub fn bundle(&self) -> &ModelBundle {
        &self.bundle
    }

    /// Answers raw instances with one prediction each: `{"class", "probabilities"}` or `{"value"}`.
    pub async fn predict(&self, instances: &[Value]) -> Result<Vec<Value>, RequestError> {
        let raw = instances_to_batch(instances, &self.input_schema).map_err(RequestError::bad)?;
        let rows = raw.num_rows();
        let prepared = match &self.sql {
            Some(sql) => {
                let out = sql.apply_async(raw).await.map_err(RequestError::bad)?;
                if out.num_rows() != rows {
                    return Err(RequestError::bad(format!(
                        "{} of {rows} instances were filtered out by the model's preprocess SQL ({}); send only rows it keeps",
                        rows - out.num_rows(),
                        sql.user_sql
                    )));
                }
                out
            }
            None => raw,
        };
        let features = self
            .bundle
            .preprocess
            .transform(&prepared, false)
            .map_err(|e| RequestError::bad(e.to_string()))?;
        if let Some(bad) = features.rejected.first() {
            return Err(RequestError::bad(format!(
                "instances[{}].{}: {}",
                bad.row, bad.column, bad.reason
            )));
        }
        let out = self
            .predictor
            .predict(&features.x, features.rows)
            .map_err(|e| RequestError {
                status: 500,
                message: e.to_string(),
            })?;
        Ok(match &self.bundle_task {
            Task::Classification { num_classes } => out
                .chunks(*num_classes)
                .map(|p| {
                    let best = p
                        .iter()
                        .enumerate()
                        .fold((0usize, f32::NEG_INFINITY), |acc, (i, v)| {
                            if *v > acc.1 { (i, *v) } else { acc }
                        })
                        .0;
                    let class = match &self.class_names {
                        Some(names) => json!(names.get(best)),
                        None => json!(best),
                    };
                    json!({"class": class, "probabilities": p})
                })
                .collect(),
            Task::Regression => out.iter().map(|v| json!({"value": v})).collect(),
        })
    }
}
