//! Batch scoring (`millrace predict`): a dataset millrace reads (Parquet files, Spark output, a
//! Delta table; local or in an object store) → a model bundle's preprocessing and forward pass →
//! a Parquet dataset Spark can read, with chosen input columns next to each prediction.
//!
//! ```text
//! predict/read (a worker's row groups) ─▶ predict/score ─▶ predict/write (part files of the task)
//!                                             └── rows it cannot score ─▶ _dead_letters/
//! ```
//!
//! Every worker reads its share of the row groups and writes its own part files; `_SUCCESS` is
//! written once all have finished, so a reader never sees half a result. Scoring is what the
//! server does for a request, so `predict` and `/v2/models/{name}/infer` agree on the same rows.
//! Everything that can be checked is checked before a row is read: the model loads, the dataset
//! has the columns the model reads (of types it can read them as), the carried and partition
//! columns exist, and the output location is empty (or `--mode overwrite`).

mod score;

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use arrow::compute::can_cast_types;
use arrow::datatypes::{Field, Schema, SchemaRef};
use millrace_connectors::parquet::{
    Compression, DatasetFormat, DatasetOptions, DatasetWriter, DatasetWriterOptions,
    ParquetDataset, ScanOptions, WriterOptions, write_success,
};
use millrace_connectors::storage::{StorageLocation, StorageOptions};
use millrace_engine::timely::dataflow::channels::pact::Pipeline;
use millrace_engine::timely::dataflow::operators::Probe;
use millrace_engine::timely::dataflow::operators::generic::operator::Operator;
use millrace_engine::timely::worker::Worker;
use millrace_engine::{ClusterConfig, DeadLetter, FlowContext, MetricsRegistry, WorkerContext};
use millrace_ml::bundle::ModelBundle;
use object_store::ObjectStoreExt;
use serde::Serialize;

use crate::batch_job::Progress;
use crate::ingest::parquet_source;
use crate::spec::OutputMode;
use crate::{Error, Result};

/// What to score and where the predictions go.
#[derive(Clone, Debug)]
pub struct PredictSpec {
    /// A model directory written by a run (`run/model`, `branches/<name>/model`, `best/model`).
    pub model: PathBuf,
    /// The dataset to score: a path or URL.
    pub input: String,
    /// Parquet files or a Delta table (`auto`: Delta when `_delta_log/` exists).
    pub format: DatasetFormat,
    /// Where the predictions go: a path or URL, written as a Spark-layout dataset.
    pub output: String,
    /// Input columns copied next to each prediction, in this order.
    pub columns: Vec<String>,
    /// Output columns to partition the dataset by (`key=value` directories).
    pub partition_by: Vec<String>,
    /// What to do when the output location already holds data.
    pub mode: OutputMode,
    /// Worker threads.
    pub workers: usize,
    /// Rows per batch read and scored.
    pub batch_rows: usize,
    /// Compression of the part files.
    pub compression: Compression,
    /// Object store settings (for the input and the output).
    pub storage: StorageOptions,
}

impl PredictSpec {
    /// Scores `input` with `model` into `output` with the defaults: 2 workers, batches of 65,536
    /// rows, snappy, no carried columns, refusing a non-empty output.
    pub fn new(model: impl Into<PathBuf>, input: &str, output: &str) -> Self {
        PredictSpec {
            model: model.into(),
            input: input.to_string(),
            format: DatasetFormat::Auto,
            output: output.to_string(),
            columns: Vec::new(),
            partition_by: Vec::new(),
            mode: OutputMode::Error,
            workers: 2,
            batch_rows: 65_536,
            compression: Compression::default(),
            storage: StorageOptions::default(),
        }
    }
}

/// A checked scoring job: the model loaded, the dataset opened (footers read), the output
/// schema known. Nothing has been read or written yet.
pub struct PredictPlan {
    spec: PredictSpec,
    bundle: ModelBundle,
    dataset: ParquetDataset,
    projection: Vec<String>,
    output_schema: SchemaRef,
    output: StorageLocation,
    job_id: String,
}

impl PredictPlan {
    /// Loads the model, opens the dataset and checks everything that can be checked before a
    /// row is read; errors name the setting, the column or the location at fault.
    pub fn new(spec: PredictSpec) -> Result<Self> {
        if spec.workers == 0 {
            return Err(Error::config("workers", "must be at least 1"));
        }
        if spec.batch_rows == 0 {
            return Err(Error::config("batch_rows", "must be at least 1"));
        }
        let bundle = ModelBundle::load(&spec.model).map_err(|e| {
            Error::config(
                "model",
                format!("cannot load `{}`: {e}", spec.model.display()),
            )
        })?;
        let (input_schema, _) = crate::serve::bundle_sql(&bundle, &bundle.meta.name)?;
        let options = DatasetOptions {
            storage: spec.storage.clone(),
            format: spec.format,
            ..DatasetOptions::default()
        };
        let dataset = ParquetDataset::open_with(&spec.input, &options)
            .map_err(|e| Error::config("input", e.to_string()))?;
        let schema = dataset.schema();
        check_model_columns(&input_schema, &schema, dataset.url())?;
        let mut projection: Vec<String> = input_schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let mut fields = Vec::new();
        for name in &spec.columns {
            let field = schema.field_with_name(name).map_err(|_| {
                Error::config(
                    "columns",
                    format!(
                        "`{}` has no column `{name}` to carry; it has {}",
                        dataset.url(),
                        names(&schema)
                    ),
                )
            })?;
            if fields.iter().any(|f: &Field| f.name() == name) {
                return Err(Error::config("columns", format!("`{name}` is named twice")));
            }
            fields.push(field.clone());
            if !projection.contains(name) {
                projection.push(name.clone());
            }
        }
        for field in score::prediction_fields(&bundle.preprocess) {
            if spec.columns.contains(field.name()) {
                return Err(Error::config(
                    "columns",
                    format!(
                        "`{}` is the name of a prediction column; carry another column or rename \
                         it in the data",
                        field.name()
                    ),
                ));
            }
            fields.push(field);
        }
        let output_schema = Arc::new(Schema::new(fields));
        let output = StorageLocation::parse(&spec.output, &spec.storage)
            .map_err(|e| Error::config("output", e.to_string()))?;
        let job_id = DatasetWriter::new_job_id();
        // The writer checks the partition columns (present, of a type a directory can name).
        open_writer(&spec, &output, &output_schema, 0, &job_id)
            .map_err(|e| Error::config("partition_by", e.to_string()))?;
        Ok(PredictPlan {
            spec,
            bundle,
            dataset,
            projection,
            output_schema,
            output,
            job_id,
        })
    }

    /// The schema of the rows written: the carried columns, then the prediction columns.
    pub fn output_schema(&self) -> &SchemaRef {
        &self.output_schema
    }

    /// Rows in the dataset to score (from the footers).
    pub fn rows(&self) -> u64 {
        self.dataset.num_rows()
    }

    /// The loaded model.
    pub fn bundle(&self) -> &ModelBundle {
        &self.bundle
    }
}

/// Every column the model reads must be in the dataset, of a type it can be read as.
fn check_model_columns(model: &Schema, data: &Schema, url: &str) -> Result<()> {
    let missing: Vec<&str> = (model.fields().iter())
        .filter(|f| data.field_with_name(f.name()).is_err())
        .map(|f| f.name().as_str())
        .collect();
    if !missing.is_empty() {
        return Err(Error::config(
            "input",
            format!(
                "`{url}` lacks the column{} the model reads: {}; it has {}",
                if missing.len() == 1 { "" } else { "s" },
                millrace_engine::list(missing.iter().map(|m| format!("`{m}`"))),
                names(data)
            ),
        ));
    }
    for want in model.fields() {
        let got = data.field_with_name(want.name()).map_err(Error::from)?;
        if got.data_type() != want.data_type() && !can_cast_types(got.data_type(), want.data_type())
        {
            return Err(Error::config(
                "input",
                format!(
                    "column `{}` of `{url}` is {}, which cannot be read as the model's {}",
                    want.name(),
                    got.data_type(),
                    want.data_type()
                ),
            ));
        }
    }
    Ok(())
}

fn names(schema: &Schema) -> String {
    millrace_engine::list(schema.fields().iter().map(|f| f.name()))
}

fn open_writer(
    spec: &PredictSpec,
    output: &StorageLocation,
    schema: &SchemaRef,
    task: usize,
    job_id: &str,
) -> Result<DatasetWriter> {
    let options = DatasetWriterOptions {
        partition_by: spec.partition_by.clone(),
        file: WriterOptions {
            compression: spec.compression,
            ..WriterOptions::default()
        },
        max_rows_per_file: 0,
        task,
        job_id: job_id.to_string(),
        max_open_files: 64,
    };
    Ok(DatasetWriter::new(
        Arc::clone(&output.store),
        output.root.clone(),
        output.url.clone(),
        Arc::clone(schema),
        options,
    )?)
}

/// What a scoring job did.
#[derive(Clone, Debug, Serialize)]
pub struct PredictSummary {
    /// The model's name.
    pub model: String,
    /// The model's version.
    pub version: u64,
    /// The dataset scored.
    pub input: String,
    /// Where the predictions are.
    pub output: String,
    /// Rows read.
    pub rows_read: u64,
    /// Rows scored and written.
    pub rows_written: u64,
    /// Rows that could not be scored (see `dead_letters`).
    pub dead_letter_rows: u64,
    /// Where the rows that could not be scored are, with the reason (when there are some).
    pub dead_letters: Option<String>,
    /// Part files written.
    pub files: usize,
    /// Worker threads.
    pub workers: usize,
    /// Wall time from the plan to `_SUCCESS`.
    pub seconds: f64,
    /// `rows_read / seconds`.
    pub rows_per_second: f64,
}

/// One worker's part of the job.
struct WorkerOutcome {
    written: u64,
    files: usize,
    dead: Vec<DeadLetter>,
}

/// Scores the plan's dataset: every worker reads, scores and writes its share; then `_SUCCESS`
/// and the dead letters. `started` is when the user started waiting (for rows/s).
pub fn run(
    plan: PredictPlan,
    progress: Arc<dyn Progress>,
    started: Instant,
) -> Result<PredictSummary> {
    crate::batch_job::prepare_location(
        &plan.output,
        plan.spec.mode,
        0,
        "(the predictions)",
        ("mode", "pass --mode overwrite"),
    )?;
    progress.ingest_start(plan.rows());
    let plan = Arc::new(plan);
    let metrics = MetricsRegistry::new();
    let outcomes = {
        let plan = Arc::clone(&plan);
        let progress = Arc::clone(&progress);
        millrace_engine::execute(
            &ClusterConfig::local(plan.spec.workers),
            Arc::clone(&metrics),
            move |worker, ctx| run_worker(worker, &ctx, &plan, &progress),
        )?
    };
    progress.ingest_done();
    let dead: Vec<&DeadLetter> = outcomes.iter().flat_map(|o| o.dead.iter()).collect();
    let dead_letters = write_dead_letters(&plan, &dead)?;
    write_success(
        plan.output.store.as_ref(),
        &plan.output.root,
        &plan.output.url,
    )?;
    let seconds = started.elapsed().as_secs_f64();
    let rows_read = (metrics.totals().into_iter())
        .find(|(name, _)| name == "predict/read")
        .map_or(0, |(_, c)| c.rows_out);
    Ok(PredictSummary {
        model: plan.bundle.meta.name.clone(),
        version: plan.bundle.meta.version,
        input: plan.dataset.url().to_string(),
        output: plan.output.url.clone(),
        rows_read,
        rows_written: outcomes.iter().map(|o| o.written).sum(),
        dead_letter_rows: dead.iter().map(|d| d.rows).sum(),
        dead_letters,
        files: outcomes.iter().map(|o| o.files).sum(),
        workers: plan.spec.workers,
        seconds,
        rows_per_second: rows_read as f64 / seconds.max(1e-9),
    })
}

fn run_worker(
    worker: &mut Worker,
    ctx: &WorkerContext,
    plan: &PredictPlan,
    progress: &Arc<dyn Progress>,
) -> Result<WorkerOutcome> {
    let scorer = score::scorer(&plan.bundle, &plan.spec.columns, &plan.output_schema)?;
    let writer = open_writer(
        &plan.spec,
        &plan.output,
        &plan.output_schema,
        ctx.index,
        &plan.job_id,
    )?;
    let units = plan.dataset.plan(ctx.peers).swap_remove(ctx.index);
    let options = ScanOptions {
        projection: Some(plan.projection.clone()),
        batch_size: plan.spec.batch_rows,
    };
    let writer = Rc::new(RefCell::new((writer, 0u64, None::<Error>)));
    let dead = Rc::new(RefCell::new(Vec::new()));
    let probes = worker.dataflow_named::<u64, _, _>("predict", |scope| {
        let fc = FlowContext::new(ctx.clone());
        let p = Arc::clone(progress);
        let w = Rc::clone(&writer);
        let mut probes = vec![
            parquet_source(
                scope,
                &fc,
                "predict/read",
                plan.dataset.clone(),
                units,
                options,
            )
            .inspect("predict/progress", move |b| p.ingested(b.num_rows() as u64))
            .operator(score::OPERATOR, Pipeline, move |batch, emit| {
                scorer.score(batch, emit)
            })
            .sink("predict/write", move |batch| {
                let (writer, written, failed) = &mut *w.borrow_mut();
                if failed.is_none() {
                    match writer.write(&batch.data) {
                        Ok(()) => *written += batch.num_rows() as u64,
                        Err(e) => *failed = Some(e.into()),
                    }
                }
            }),
        ];
        if let Some(letters) = fc.dead_letters(scope) {
            let sink = Rc::clone(&dead);
            let (probe, stream) = letters.probe();
            stream.sink(Pipeline, "predict/dead-letters", move |(input, _)| {
                input.for_each(|_, data| sink.borrow_mut().append(data));
            });
            probes.push(probe);
        }
        probes
    });
    ctx.step_while(worker, || probes.iter().any(|p| !p.done()))?;
    let (writer, written, failed) = Rc::try_unwrap(writer)
        .map_err(|_| Error::Internal("the writer is still shared after the dataflow".into()))?
        .into_inner();
    if let Some(e) = failed {
        return Err(e);
    }
    let files = writer.finish()?.files.len();
    Ok(WorkerOutcome {
        written,
        files,
        dead: std::mem::take(&mut *dead.borrow_mut()),
    })
}

/// The rows that could not be scored, as JSON lines in `_dead_letters/part-00000.jsonl` of the
/// output (a name Spark and millrace skip when reading the predictions); its URL, or `None`.
fn write_dead_letters(plan: &PredictPlan, dead: &[&DeadLetter]) -> Result<Option<String>> {
    if dead.is_empty() {
        return Ok(None);
    }
    let mut text = String::new();
    for letter in dead {
        let line = serde_json::to_string(letter).map_err(|e| Error::Internal(e.to_string()))?;
        text.push_str(&line);
        text.push('\n');
    }
    let dir = plan.output.child("_dead_letters");
    let object = dir
        .root
        .clone()
        .join(format!("part-00000-{}.jsonl", plan.job_id));
    let url = dir.url_of(&object);
    millrace_connectors::runtime::block_on(
        (dir.store).put(&object, object_store::PutPayload::from(text.into_bytes())),
    )
    .map_err(|e| Error::from(millrace_connectors::Error::store(url.clone(), "write", e)))?;
    tracing::warn!(rows = dead.len(), %url, "rows could not be scored; they are dead letters with the reason");
    Ok(Some(url))
}
