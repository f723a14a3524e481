//! Planning a streaming job before it connects to anything: the message schema, the decoder, the
//! SQL over the decoded records, the feature encoding; every column the pipeline names is checked
//! here, so a bad configuration fails before a record is read.

use std::path::PathBuf;

use arrow::datatypes::SchemaRef;
use millrace_connectors::avro::{load_schema, parse_schema};
use millrace_connectors::kafka::{MessageFormat, MetadataColumns, RecordDecoder};
use millrace_connectors::parquet::ParquetDataset;
use millrace_ml::preprocess::{FeatureSpec, LabelKind};

use super::spec::{MessageEncoding, StreamSpec};
use crate::batch_job::plan::{check_preprocess, dedupe_check, feature_spec};
use crate::preprocess::SqlPlan;
use crate::spec::PipelineSpec;
use crate::streaming::features::{self, FeaturePlan};
use crate::streaming::window::WindowSpec;
use crate::{Error, Result};

/// Everything a streaming job needs, checked.
#[derive(Debug)]
pub struct StreamPlan {
    /// The pipeline as given.
    pub spec: PipelineSpec,
    /// Its `[stream]` section.
    pub stream: StreamSpec,
    /// How messages are decoded.
    pub format: MessageFormat,
    /// Which Kafka metadata columns are added (the timestamp always is: it measures freshness).
    pub metadata: MetadataColumns,
    /// Schema of the decoded records (message fields, then metadata columns).
    pub record_schema: SchemaRef,
    /// The preprocess SQL over decoded records: features and label (and the event-time column).
    pub sql: SqlPlan,
    /// The preprocess SQL for serving: features only.
    pub serve_sql: SqlPlan,
    /// Feature encoding to fit.
    pub features: FeatureSpec,
    /// Classification or regression.
    pub label_kind: LabelKind,
    /// Consumer group.
    pub group: String,
    /// Checkpoint directory.
    pub checkpoint_dir: PathBuf,
    /// Bounded out-of-orderness, ms.
    pub lateness_ms: i64,
    /// `stream.watermark_alignment`, ms: how far a partition's watermark may run ahead of the
    /// job's before it is paused.
    pub alignment_ms: Option<i64>,
    /// The dataset the preprocessing is fitted on (`[ingest]`) and the SQL over it; `None` fits
    /// on the first `stream.warmup_records` records instead.
    pub fit_on: Option<(ParquetDataset, SqlPlan)>,
    /// The event-time windows, checked against the SQL's output.
    pub window: Option<WindowSpec>,
    /// `[features]`: the table and aggregates joined onto each record after the SQL.
    pub feature_view: Option<FeaturePlan>,
}

impl StreamPlan {
    /// Plans `spec`, which must have a `[stream]` section; connects to nothing.
    pub fn new(spec: PipelineSpec) -> Result<Self> {
        spec.validate()?;
        let stream = spec
            .stream
            .clone()
            .ok_or_else(|| Error::config("stream", "a streaming job needs a [stream] section"))?;
        let format = message_format(&stream)?;
        let wants = |m: &str| stream.metadata_columns.iter().any(|c| c == m);
        let metadata = MetadataColumns {
            key: wants("key"),
            timestamp: true,
            partition: wants("partition"),
            offset: wants("offset"),
        };
        let decoder = RecordDecoder::new(format.clone(), metadata)
            .map_err(|e| Error::config("stream.schema", e.to_string()))?;
        let record_schema = decoder.schema();
        let p = &spec.preprocess;
        let features: Vec<String> = spec.feature_columns();
        dedupe_check(&features)?;
        let produced = SqlPlan::plan_steps(p.sql.as_deref(), &p.steps(), &record_schema, &[])?;
        // Feature columns come from the view, after the SQL: the encoding sees them, the SQL not.
        let feature_view = FeaturePlan::new(&spec, &produced.output_schema)?;
        let view_names = feature_view
            .as_ref()
            .map(FeaturePlan::names)
            .unwrap_or_default();
        let encoded = match &feature_view {
            Some(v) => features::with_view(&produced.output_schema, v),
            None => produced.output_schema.clone(),
        };
        let label_kind = check_preprocess(&spec, &encoded)?;
        let mut needed: Vec<String> = features
            .iter()
            .filter(|f| !view_names.contains(f))
            .cloned()
            .collect();
        needed.push(p.label.clone());
        if let Some(v) = &feature_view {
            needed.extend(
                v.columns()
                    .into_iter()
                    .filter(|c| !needed.contains(c))
                    .collect::<Vec<_>>(),
            );
        }
        if let Some(t) = &stream.event_time {
            if produced.output_schema.field_with_name(t).is_err() {
                return Err(Error::config(
                    "stream.event_time",
                    format!("column '{t}' is not produced by the preprocess SQL"),
                ));
            }
            if !needed.contains(t) {
                needed.push(t.clone());
            }
        }
        if let Some(w) = &stream.window {
            for c in w.columns() {
                if !needed.contains(&c) {
                    needed.push(c);
                }
            }
        }
        crate::batch_job::plan::check_sinks(
            &spec,
            &record_schema,
            &produced.output_schema,
            feature_view.as_ref().map(|_| encoded.as_ref()),
            &mut needed,
        )?;
        let sql = SqlPlan::plan_steps(p.sql.as_deref(), &p.steps(), &record_schema, &needed)?;
        if let Some(v) = &feature_view {
            v.check_records(&sql.output_schema)?;
        }
        let serve_sql = serve_plan(&spec, &format, &record_schema, feature_view.as_ref())?;
        // With [ingest], the preprocessing is fitted on that dataset (e.g. Spark output) before
        // the stream starts, through the same SQL.
        let fit_on = fit_dataset(&spec, &features)?;
        let lateness = stream.max_out_of_orderness.get();
        let window = match (&stream.window, &stream.event_time) {
            (Some(w), Some(time)) => {
                let window = w.window_spec(time, lateness, stream.late)?;
                window
                    .validate(&sql.output_schema)
                    .map_err(|e| Error::config("stream.window", e.to_string()))?;
                Some(window)
            }
            _ => None,
        };
        Ok(StreamPlan {
            group: stream.group(&spec.name),
            checkpoint_dir: stream
                .checkpoint_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from("checkpoints").join(&spec.name)),
            lateness_ms: i64::try_from(lateness.as_millis()).unwrap_or(i64::MAX),
            alignment_ms: alignment_ms(&stream, feature_view.is_some())?,
            features: feature_spec(&spec),
            stream,
            spec,
            format,
            metadata,
            record_schema,
            sql,
            serve_sql,
            label_kind,
            fit_on,
            window,
            feature_view,
        })
    }
}

/// The preprocess SQL for serving: over the message fields (and, until served requests get their
/// features from the view, the `[features]` columns, which a request carries), making the model's
/// features.
fn serve_plan(
    spec: &PipelineSpec,
    format: &MessageFormat,
    record_schema: &SchemaRef,
    feature_view: Option<&FeaturePlan>,
) -> Result<SqlPlan> {
    let serve_schema = match format {
        MessageFormat::Json { schema } => schema.clone(),
        _ => record_schema.clone(),
    };
    let serve_schema = match feature_view {
        Some(v) => features::with_view(&serve_schema, v),
        None => serve_schema,
    };
    let p = &spec.preprocess;
    let mut needed = spec.feature_columns();
    // A request names its key: the server fills in the features it leaves out by it.
    if let Some(v) = feature_view.filter(|v| !needed.contains(&v.spec.key)) {
        needed.push(v.spec.key.clone());
    }
    SqlPlan::plan_steps(p.sql.as_deref(), &p.steps(), &serve_schema, &needed)
}

/// How the stream's messages are encoded, with the schema they are read with.
fn message_format(stream: &StreamSpec) -> Result<MessageFormat> {
    Ok(match stream.format {
        MessageEncoding::Json => MessageFormat::Json {
            schema: stream.json_schema()?,
        },
        MessageEncoding::Avro => {
            let schema = match (&stream.avro_schema, &stream.avro_schema_file) {
                (Some(text), _) => parse_schema(text),
                (None, Some(path)) => load_schema(path),
                (None, None) => {
                    return Err(Error::config("stream.avro_schema", "missing"));
                }
            }
            .map_err(|e| Error::config("stream.avro_schema", e.to_string()))?;
            MessageFormat::Avro {
                schema,
                framing: stream.avro_framing,
            }
        }
        MessageEncoding::Raw => MessageFormat::Raw,
    })
}

/// With `[ingest]`, the dataset the preprocessing is fitted on before the stream starts (e.g.
/// Spark output), through the same SQL and steps.
fn fit_dataset(
    spec: &PipelineSpec,
    features: &[String],
) -> Result<Option<(ParquetDataset, SqlPlan)>> {
    if !spec.ingest.is_set() {
        return Ok(None);
    }
    let p = &spec.preprocess;
    let options = spec.ingest.dataset_options(&spec.storage)?;
    let dataset = ParquetDataset::open_with(&spec.ingest.path.to_string_lossy(), &options)?;
    let mut fit_needed = features.to_vec();
    fit_needed.push(p.label.clone());
    let sql = SqlPlan::plan_steps(p.sql.as_deref(), &p.steps(), &dataset.schema(), &fit_needed)
        .map_err(|e| match e {
            Error::Sql(m) => Error::config(
                "ingest.path",
                format!("the preprocess SQL does not fit this dataset: {m}"),
            ),
            other => other,
        })?;
    Ok(Some((dataset, sql)))
}

/// `stream.watermark_alignment` in ms: as set (`"0s"`: never pause), else 10 s for a job with
/// `[features]` (whose records wait for the watermark: a backlog read unevenly would pile them
/// up), else none.
fn alignment_ms(stream: &StreamSpec, features: bool) -> Result<Option<i64>> {
    let alignment = match &stream.watermark_alignment {
        Some(written) => written.get(),
        None if features => DEFAULT_FEATURES_ALIGNMENT,
        None => return Ok(None),
    };
    Ok((!alignment.is_zero()).then(|| i64::try_from(alignment.as_millis()).unwrap_or(i64::MAX)))
}

/// The watermark alignment of a job with `[features]` that sets none.
const DEFAULT_FEATURES_ALIGNMENT: std::time::Duration = std::time::Duration::from_secs(10);
