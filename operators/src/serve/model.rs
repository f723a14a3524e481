//! One loaded model version, ready to answer requests: its bundled preprocessing (the SQL compiled
//! to physical expressions, the fitted encoding) and a dynamic batcher in front of a plain-Rust
//! forward pass.

use std::path::Path;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use millrace_ml::bundle::{DensePredictor, ModelBundle};
use millrace_ml::model::Task;
use serde_json::{Value, json};

use super::batcher::{BatchError, BatchModel, BatcherOptions, DynamicBatcher};
use super::forward::{Forward, ForwardDevice};
use super::pipeline::{Pipeline, RawInput};
use super::protocol::v1::fast::DecoderPool;
use super::protocol::v1::{instances_to_batch, schema_from_json};
use crate::preprocess::{CompiledSql, SqlPlan, StepNames};
use crate::{Error, Result};

/// Why a request could not be answered; `status` is the HTTP status to send.
#[derive(Debug)]
pub struct RequestError {
    /// HTTP status code (4xx for the caller's mistakes, 503 when overloaded).
    pub status: u16,
    /// What is wrong, naming the instance and field.
    pub message: String,
}

impl RequestError {
    pub(crate) fn bad(message: impl Into<String>) -> Self {
        RequestError {
            status: 400,
            message: message.into(),
        }
    }

    pub(crate) fn with_status(status: u16, message: impl Into<String>) -> Self {
        RequestError {
            status,
            message: message.into(),
        }
    }
}

impl BatchModel for DensePredictor {
    fn input_dim(&self) -> usize {
        DensePredictor::input_dim(self)
    }

    fn output_dim(&self) -> usize {
        DensePredictor::output_dim(self)
    }

    fn predict(&self, x: &[f32], rows: usize) -> std::result::Result<Vec<f32>, String> {
        DensePredictor::predict(self, x, rows).map_err(|e| e.to_string())
    }
}

/// Predictions of one request: `rows × width` values (class probabilities, or one value).
#[derive(Clone, Debug, PartialEq)]
pub struct Predictions {
    /// Row-major values.
    pub values: Vec<f32>,
    /// Rows answered.
    pub rows: usize,
}

/// A model version ready to answer requests. Shared as `Arc<ServedModel>`: a request holds the
/// version it started with, so a hot swap never mixes two versions in one answer.
pub struct ServedModel {
    /// Model name (from the bundle, or given when serving).
    pub name: String,
    /// Version number.
    pub version: u64,
    task: Task,
    class_names: Option<Vec<String>>,
    input_schema: SchemaRef,
    /// Inputs a KServe v2 request may leave out: the feature columns a feature view fills in.
    fillable: Vec<String>,
    decoders: Option<DecoderPool>,
    batcher: DynamicBatcher<Pipeline>,
    bundle: ModelBundle,
}

impl std::fmt::Debug for ServedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServedModel")
            .field("name", &self.name)
            .field("version", &self.version)
            .finish()
    }
}

impl ServedModel {
    /// Loads a model directory written by a run (`model/`) with default batching.
    pub fn load(dir: &Path) -> Result<Self> {
        let bundle = ModelBundle::load(dir)?;
        Self::from_bundle(bundle)
    }

    /// Serves an already loaded bundle with default batching.
    pub fn from_bundle(bundle: ModelBundle) -> Result<Self> {
        let name = bundle.meta.name.clone();
        let version = bundle.meta.version;
        Self::new(bundle, name, version, BatcherOptions::default())
    }

    /// Serves `bundle` as `name` version `version` on the CPU, batching as `batching` says.
    pub fn new(
        bundle: ModelBundle,
        name: String,
        version: u64,
        batching: BatcherOptions,
    ) -> Result<Self> {
        Self::on_device(bundle, name, version, batching, &ForwardDevice::default())
    }

    /// Serves `bundle` as `name` version `version` with its forward pass on `device`, batching
    /// as `batching` says.
    pub fn on_device(
        bundle: ModelBundle,
        name: String,
        version: u64,
        batching: BatcherOptions,
        device: &ForwardDevice,
    ) -> Result<Self> {
        Self::with_fill(bundle, name, version, batching, device, None)
    }

    /// As [`ServedModel::on_device`], filling the features a request leaves out from `fill`.
    pub fn with_fill(
        bundle: ModelBundle,
        name: String,
        version: u64,
        batching: BatcherOptions,
        device: &ForwardDevice,
        fill: Option<super::fill::FeatureFill>,
    ) -> Result<Self> {
        let predictor = Forward::new(&bundle, device)?;
        if predictor.input_dim() != bundle.preprocess.input_dim() {
            return Err(Error::Serve(format!(
                "model bundle: the model takes {} features but its preprocessing makes {}",
                predictor.input_dim(),
                bundle.preprocess.input_dim()
            )));
        }
        let (input_schema, sql, user_sql) = compiled_bundle_sql(&bundle, &name)?;
        let fillable = fill.as_ref().map_or_else(Vec::new, |f| {
            let names = f.feature_names();
            names
                .into_iter()
                .filter(|n| {
                    input_schema
                        .field_with_name(n)
                        .is_ok_and(|f| f.is_nullable())
                })
                .collect()
        });
        let pipeline = Pipeline {
            input_schema: input_schema.clone(),
            sql,
            user_sql,
            preprocess: bundle.preprocess.clone(),
            predictor,
            fill,
        };
        Ok(ServedModel {
            name,
            version,
            task: bundle.task,
            class_names: bundle.preprocess.class_names(),
            decoders: DecoderPool::new(&input_schema),
            input_schema,
            fillable,
            batcher: DynamicBatcher::new(Arc::new(pipeline), batching),
            bundle,
        })
    }

    /// The raw fields a request must provide.
    pub fn input_schema(&self) -> &SchemaRef {
        &self.input_schema
    }

    /// The inputs a KServe v2 request may leave out (nullable feature columns a feature view fills
    /// in by the request's key); empty for a model trained without `[features]`.
    pub fn fillable_inputs(&self) -> &[String] {
        &self.fillable
    }

    /// Decodes a `/v1/predict` body straight into this model's input columns: the batch and the
    /// model the body names; `None` for anything the general path must handle (and explain).
    pub(crate) fn decode_v1(
        &self,
        body: &[u8],
        max_rows: usize,
    ) -> Option<(RecordBatch, Option<String>)> {
        self.decoders.as_ref()?.decode(body, max_rows)
    }

    /// The loaded bundle.
    pub fn bundle(&self) -> &ModelBundle {
        &self.bundle
    }

    /// Number of classes (None for regression).
    pub fn num_classes(&self) -> Option<usize> {
        match self.task {
            Task::Classification { num_classes } => Some(num_classes),
            Task::Regression => None,
        }
    }

    /// Class names, when the label was a string.
    pub fn class_names(&self) -> Option<&[String]> {
        self.class_names.as_deref()
    }

    /// The batcher's counters, for /metrics.
    pub fn batcher_stats(&self) -> super::batcher::BatcherStats {
        self.batcher.stats()
    }

    /// Stops batching (queued requests are still answered).
    pub fn close(&self) {
        self.batcher.close();
    }

    /// Predicts a batch of raw records (the model's input schema): queued for the inference
    /// thread, which runs the bundled SQL, the fitted encoding and the forward pass once over
    /// this and the concurrent requests' rows.
    pub async fn predict_batch(&self, raw: RecordBatch) -> Result<Predictions, RequestError> {
        let rows = raw.num_rows();
        if rows == 0 {
            return Ok(Predictions {
                values: Vec::new(),
                rows: 0,
            });
        }
        self.run(RawInput::Batch(raw), rows)
            .await?
            .ok_or_else(|| RequestError::with_status(500, "rows came back for the general path"))
    }

    /// Predicts a KServe v2 JSON body of the common form holding `rows` rows, decoded on the
    /// inference thread; `Ok(None)` when the body must go through the general path instead.
    pub(crate) async fn predict_v2_body(
        &self,
        body: axum::body::Bytes,
        rows: usize,
    ) -> Result<Option<Predictions>, RequestError> {
        self.run(RawInput::V2Body(body), rows).await
    }

    async fn run(&self, input: RawInput, rows: usize) -> Result<Option<Predictions>, RequestError> {
        let values = match self.batcher.infer(input, rows).await {
            Err(BatchError::Fallback) => return Ok(None),
            other => other,
        };
        let values = values.map_err(|e| match e {
            BatchError::Overloaded { queued_rows } => RequestError::with_status(
                503,
                format!(
                    "model '{}' is overloaded ({queued_rows} rows queued); retry shortly",
                    self.name
                ),
            ),
            BatchError::Closed => RequestError::with_status(
                503,
                format!(
                    "model '{}' version {} is being replaced or shut down; retry",
                    self.name, self.version
                ),
            ),
            BatchError::Rejected(message) => RequestError::bad(message),
            BatchError::Failed(message) => RequestError::with_status(500, message),
            BatchError::Fallback => RequestError::with_status(500, "unexpected fallback"),
        })?;
        Ok(Some(Predictions { values, rows }))
    }

    /// Answers raw JSON instances with one prediction each: `{"class", "probabilities"}` or
    /// `{"value"}`.
    pub async fn predict(&self, instances: &[Value]) -> Result<Vec<Value>, RequestError> {
        let raw = instances_to_batch(instances, &self.input_schema).map_err(RequestError::bad)?;
        let predictions = self.predict_batch(raw).await?;
        Ok(self.to_json(&predictions))
    }

    /// The `/v1/predict` rendering of predictions.
    pub fn to_json(&self, predictions: &Predictions) -> Vec<Value> {
        match self.task {
            Task::Classification { num_classes } => predictions
                .values
                .chunks(num_classes.max(1))
                .map(|p| {
                    let best = argmax(p);
                    let class = match &self.class_names {
                        Some(names) => json!(names.get(best)),
                        None => json!(best),
                    };
                    json!({"class": class, "probabilities": p})
                })
                .collect(),
            Task::Regression => predictions
                .values
                .iter()
                .map(|v| json!({"value": v}))
                .collect(),
        }
    }
}

/// Index of the largest value (the first on ties).
pub(crate) fn argmax(values: &[f32]) -> usize {
    values
        .iter()
        .enumerate()
        .fold((0usize, f32::NEG_INFINITY), |acc, (i, v)| {
            if *v > acc.1 { (i, *v) } else { acc }
        })
        .0
}

/// A bundle's raw input schema and its preprocessing before the encoding (its SQL with the
/// user steps around it), planned as the server runs it: what turns a raw request (or any batch
/// of raw records) into the rows the fitted encoding reads. `name` names the bundle in errors:
/// a user function or step this binary has not registered is one.
pub fn bundle_sql(bundle: &ModelBundle, name: &str) -> Result<(SchemaRef, Option<SqlPlan>)> {
    let input_schema = match bundle.meta.extra.get("input_schema") {
        Some(v) => schema_from_json(v).map_err(|e| Error::Serve(format!("model bundle: {e}")))?,
        None => {
            return Err(Error::Serve(
                "model bundle has no input_schema: re-train it with this version of millrace"
                    .into(),
            ));
        }
    };
    let names = |key: &str| -> Vec<String> {
        (bundle.meta.extra.get(key))
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default()
    };
    let what = format!("model bundle `{name}`");
    crate::preprocess::check_udfs(&names("udfs"), &what)?;
    let steps = StepNames {
        before: names("steps_before_sql"),
        after: names("steps_after_sql"),
    };
    steps.check_registered(&what)?;
    let plan = match &bundle.meta.transform_sql {
        // Re-plan the stored (already wrapped) query against the stored input schema, once.
        Some(wrapped) => {
            let features = bundle.preprocess.required_columns(false);
            Some(SqlPlan::plan_steps(
                Some(wrapped),
                &steps,
                &input_schema,
                &features,
            )?)
        }
        None => None,
    };
    Ok((input_schema, plan))
}

/// [`bundle_sql`] compiled as the server runs it: the raw input schema, the compiled query (with
/// its steps) and the user's query text for error messages; no query and no text for a bundle
/// trained without SQL.
pub(crate) fn compiled_bundle_sql(
    bundle: &ModelBundle,
    name: &str,
) -> Result<(SchemaRef, Option<CompiledSql>, Option<String>)> {
    let (input_schema, plan) = bundle_sql(bundle, name)?;
    let Some(plan) = plan else {
        return Ok((input_schema, None, None));
    };
    let user = (bundle.meta.extra.get("user_sql"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let compiled = CompiledSql::compile(&plan)?;
    Ok((input_schema, Some(compiled), user.or(Some(plan.user_sql))))
}

/// What a bundle records about its preprocess SQL in `meta.extra` (and [`ServedModel`] reads
/// back): the raw input schema a request must match, the user's query, and the user functions
/// it calls (only when it calls some, so bundles without any keep their bytes).
pub(crate) fn sql_meta(serve_sql: &SqlPlan, user_sql: &str) -> serde_json::Map<String, Value> {
    let mut meta = serde_json::Map::new();
    meta.insert(
        "input_schema".into(),
        super::schema_to_json(&serve_sql.input_schema),
    );
    meta.insert("user_sql".into(), Value::from(user_sql));
    if !serve_sql.udfs.is_empty() {
        meta.insert("udfs".into(), Value::from(serve_sql.udfs.clone()));
    }
    let steps = serve_sql.step_names();
    for (key, names) in [
        ("steps_before_sql", steps.before),
        ("steps_after_sql", steps.after),
    ] {
        if !names.is_empty() {
            meta.insert(key.into(), Value::from(names));
        }
    }
    meta
}
