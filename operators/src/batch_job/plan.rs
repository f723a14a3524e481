//! Planning a batch job before any work starts: open the datasets, plan the SQL, check every column
//! the pipeline names, so a bad configuration fails at once with the key to change.

use std::sync::Arc;

use arrow::datatypes::{DataType, Schema};
use millrace_connectors::parquet::{DatasetOptions, ParquetDataset};
use millrace_ml::model::Task;
use millrace_ml::preprocess::{FeatureSpec, LabelKind};

use crate::preprocess::{HashSplit, SqlPlan};
use crate::spec::{PipelineSpec, SinkPoint, TaskKind};
use crate::{Error, Result};

/// Everything a batch job needs, checked.
#[derive(Debug)]
pub struct JobPlan {
    /// The pipeline as given.
    pub spec: PipelineSpec,
    /// The training dataset.
    pub dataset: ParquetDataset,
    /// The holdout dataset, when `evaluate.path` is set.
    pub holdout: Option<ParquetDataset>,
    /// The preprocess SQL over the training dataset, producing features, label and split key.
    pub sql: SqlPlan,
    /// The columns the training dataset's source decodes: what the SQL and the `[[sink]]`s
    /// after ingest read.
    pub ingest_columns: Vec<String>,
    /// The preprocess SQL over the holdout dataset.
    pub holdout_sql: Option<SqlPlan>,
    /// The preprocess SQL for serving: features only, no label.
    pub serve_sql: SqlPlan,
    /// The row-hash split, when evaluating on a split of the ingested rows.
    pub split: Option<HashSplit>,
    /// Feature encoding to fit.
    pub features: FeatureSpec,
    /// Classification or regression.
    pub label_kind: LabelKind,
}

fn is_numeric(t: &DataType) -> bool {
    t.is_numeric()
}

fn is_categorical(t: &DataType) -> bool {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => true,
        DataType::Dictionary(_, v) => is_categorical(v),
        _ => false,
    }
}

/// A list of numbers or of strings: what a `sequence` column may be.
fn is_sequence(t: &DataType) -> bool {
    match t {
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
            is_numeric(f.data_type()) || is_categorical(f.data_type())
        }
        _ => false,
    }
}

fn check_types(
    schema: &Schema,
    key: &str,
    columns: &[String],
    ok: fn(&DataType) -> bool,
    expected: &str,
) -> Result<()> {
    for col in columns {
        let field = schema.field_with_name(col).map_err(|_| {
            Error::config(
                key,
                format!(
                    "column '{col}' is not produced by the preprocess SQL (available: {})",
                    millrace_engine::list(schema.fields().iter().map(|f| f.name().clone()))
                ),
            )
        })?;
        if !ok(field.data_type()) {
            return Err(Error::config(
                key,
                format!(
                    "column '{col}' has type {}, expected {expected}",
                    field.data_type()
                ),
            ));
        }
    }
    Ok(())
}

impl JobPlan {
    /// Plans `spec`: reads every Parquet footer and plans the SQL; reads no rows.
    pub fn new(spec: PipelineSpec) -> Result<Self> {
        spec.validate()?;
        let options = spec.ingest.dataset_options(&spec.storage)?;
        let dataset = ParquetDataset::open_with(&spec.ingest.path.to_string_lossy(), &options)?;
        let p = &spec.preprocess;
        let features: Vec<String> = spec.feature_columns();
        let mut needed = features.clone();
        needed.push(p.label.clone());
        for k in spec.evaluate.split_key.iter().chain(&spec.output.columns) {
            if !needed.contains(k) {
                needed.push(k.clone());
            }
        }
        dedupe_check(&features)?;
        // What the user's query produces, to check the columns the pipeline names against it.
        let produced = SqlPlan::plan_steps(p.sql.as_deref(), &p.steps(), &dataset.schema(), &[])?;
        let label_kind = check_preprocess(&spec, &produced.output_schema)?;
        let out = &produced.output_schema;
        check_types(
            out,
            "output.columns",
            &spec.output.columns,
            |_| true,
            "any type",
        )?;
        check_types(
            out,
            "evaluate.split_key",
            &spec.evaluate.split_key,
            |_| true,
            "any type",
        )?;
        // The split hashes what the pipeline reads, whatever the sinks add.
        let split_columns = needed.clone();
        let ingest_columns = check_sinks(&spec, &dataset.schema(), out, None, &mut needed)?;
        let sql = SqlPlan::plan_steps(p.sql.as_deref(), &p.steps(), &dataset.schema(), &needed)?;
        let ingest_columns = (dataset.schema().fields().iter())
            .map(|f| f.name().clone())
            .filter(|c| sql.input_columns.contains(c) || ingest_columns.contains(c))
            .collect();

        let holdout = match &spec.evaluate.path {
            Some(path) => {
                let options = DatasetOptions {
                    storage: spec.storage.clone(),
                    ..DatasetOptions::default()
                };
                Some(ParquetDataset::open_with(
                    &path.to_string_lossy(),
                    &options,
                )?)
            }
            None => None,
        };
        let holdout_sql = match &holdout {
            Some(h) => Some(
                SqlPlan::plan_steps(p.sql.as_deref(), &p.steps(), &h.schema(), &split_columns)
                    .map_err(|e| match e {
                        Error::Sql(m) => Error::config(
                            "evaluate.path",
                            format!("the preprocess SQL does not fit the holdout data: {m}"),
                        ),
                        other => other,
                    })?,
            ),
            None => None,
        };
        let serve_sql =
            SqlPlan::plan_steps(p.sql.as_deref(), &p.steps(), &dataset.schema(), &features)?;
        let split = match holdout {
            Some(_) => None,
            None => Some(HashSplit {
                eval_fraction: spec.evaluate.split,
                seed: spec.evaluate.split_seed,
                key: if spec.evaluate.split_key.is_empty() {
                    split_columns
                } else {
                    spec.evaluate.split_key.clone()
                },
            }),
        };
        let feature_spec = feature_spec(&spec);
        Ok(JobPlan {
            spec,
            dataset,
            holdout,
            sql,
            ingest_columns,
            holdout_sql,
            serve_sql,
            split,
            features: feature_spec,
            label_kind,
        })
    }

    /// The raw input schema a served request must provide.
    pub fn serve_input_schema(&self) -> Arc<Schema> {
        Arc::clone(&self.serve_sql.input_schema)
    }
}

/// Checks the `[[sink]]`s' columns and URLs against the dataset (`input`), what the preprocess
/// makes (`out`) and, in a streaming job with `[features]`, the rows with their features
/// (`with_features`); adds what the sinks after the preprocess need to `needed`, and returns the
/// input columns the sinks after ingest need.
pub(crate) fn check_sinks(
    spec: &PipelineSpec,
    input: &Schema,
    out: &Schema,
    with_features: Option<&Schema>,
    needed: &mut Vec<String>,
) -> Result<Vec<String>> {
    let names = |schema: &Schema| -> Vec<String> {
        schema.fields().iter().map(|f| f.name().clone()).collect()
    };
    let mut ingest = Vec::new();
    for sink in &spec.sink {
        let (schema, into) = match (sink.after, with_features) {
            (SinkPoint::Ingest, _) => (input, &mut ingest),
            (SinkPoint::Preprocess, _) => (out, &mut *needed),
            (SinkPoint::Features, Some(rows)) => (rows, &mut *needed),
            (SinkPoint::Features, None) => {
                return Err(Error::config(
                    "sink.after",
                    format!(
                        "sink '{}' takes its rows after the features, but there is no [features] section (a streaming job's)",
                        sink.name
                    ),
                ));
            }
        };
        let columns = sink.needs().unwrap_or_else(|| names(schema));
        for c in &columns {
            if schema.field_with_name(c).is_err() {
                return Err(Error::config(
                    "sink.columns",
                    format!(
                        "sink '{}' writes column '{c}', which is not there after {} (there: {})",
                        sink.name,
                        sink.after.name(),
                        millrace_engine::list(names(schema))
                    ),
                ));
            }
            // A feature column comes from the view, not from the SQL.
            if !into.contains(c)
                && (sink.after != SinkPoint::Features || out.field_with_name(c).is_ok())
            {
                into.push(c.clone());
            }
        }
        if let Some(url) = &sink.parquet {
            millrace_connectors::storage::StorageLocation::parse(url, &spec.storage)
                .map_err(|e| Error::config("sink.parquet", format!("sink '{}': {e}", sink.name)))?;
        }
    }
    Ok(ingest)
}

/// Checks the columns `[preprocess]` names against what the SQL produces (`out`), and the model
/// against the task; returns the label kind.
pub(crate) fn check_preprocess(spec: &PipelineSpec, out: &Schema) -> Result<LabelKind> {
    let p = &spec.preprocess;
    check_types(
        out,
        "preprocess.standardize",
        &p.standardize,
        is_numeric,
        "a number",
    )?;
    check_types(
        out,
        "preprocess.numeric",
        &p.numeric,
        is_numeric,
        "a number",
    )?;
    check_types(
        out,
        "preprocess.one_hot",
        &p.one_hot,
        is_categorical,
        "a string",
    )?;
    check_types(
        out,
        "preprocess.index",
        &p.index,
        is_categorical,
        "a string",
    )?;
    let sequence: Vec<String> = p.sequence.iter().map(|s| s.column.clone()).collect();
    check_types(
        out,
        "preprocess.sequence",
        &sequence,
        is_sequence,
        "a list of numbers or of strings",
    )?;
    let label_kind = match spec.train.task {
        TaskKind::Classification => {
            check_types(
                out,
                "preprocess.label",
                std::slice::from_ref(&p.label),
                |t| t.is_integer() || is_categorical(t),
                "an integer or a string class",
            )?;
            LabelKind::Classification
        }
        TaskKind::Regression => {
            check_types(
                out,
                "preprocess.label",
                std::slice::from_ref(&p.label),
                is_numeric,
                "a number",
            )?;
            LabelKind::Regression
        }
    };
    let probe_task = match label_kind {
        LabelKind::Classification => Task::Classification { num_classes: 2 },
        LabelKind::Regression => Task::Regression,
    };
    let features = feature_spec(spec);
    spec.train.check_model(&features, &probe_task)?;
    for branch in &spec.branch {
        branch
            .train
            .check_model(&features, &probe_task)
            .map_err(|e| {
                Error::config(
                    "branch.train.model",
                    format!("branch '{}': {e}", branch.name),
                )
            })?;
    }
    if let Some(tune) = &spec.tune {
        for trial in tune.trials(&spec.train)? {
            trial
                .train
                .check_model(&features, &probe_task)
                .map_err(|e| {
                    Error::config(
                        "tune.space",
                        format!("{} ({}): {e}", trial.name, json_config(&trial.config)),
                    )
                })?;
        }
    }
    Ok(label_kind)
}

fn json_config(config: &std::collections::BTreeMap<String, serde_json::Value>) -> String {
    serde_json::to_string(config).unwrap_or_default()
}

/// The feature encoding `[preprocess]` asks for.
pub(crate) fn feature_spec(spec: &PipelineSpec) -> FeatureSpec {
    let p = &spec.preprocess;
    FeatureSpec {
        standardize: p.standardize.clone(),
        numeric: p.numeric.clone(),
        one_hot: p.one_hot.clone(),
        index: p.index.clone(),
        sequence: p.sequence.clone(),
        max_categories: p.max_categories,
        label: p.label.clone(),
        nulls: p.nulls,
    }
}

pub(crate) fn dedupe_check(features: &[String]) -> Result<()> {
    for (i, f) in features.iter().enumerate() {
        if features[..i].contains(f) {
            return Err(Error::config(
                "preprocess",
                format!(
                    "column '{f}' is listed twice among standardize, numeric, one_hot, index and \
                     sequence"
                ),
            ));
        }
    }
    Ok(())
}
