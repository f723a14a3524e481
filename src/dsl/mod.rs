//! The Rust DSL: a pipeline built in code, reading like the graph it describes. It produces the same
//! [`PipelineSpec`] a pipeline file does.
//!
//! ```no_run
//! use millrace::prelude::*;
//!
//! let report = Pipeline::new("quickstart")
//!     .ingest_parquet("data/tabular")
//!     .sql("SELECT * FROM input WHERE f3 IS NOT NULL")
//!     .standardize((0..16).map(|i| format!("f{i}")))
//!     .one_hot(["cat"])
//!     .label("label")
//!     .train(Train::mlp([64, 64]).adam().lr(1e-3).batch_size(512).epochs(1).seed(42))
//!     .evaluate_on("data/holdout")
//!     .workers(2)
//!     .run()?;
//! println!("accuracy {:?}", report.summary.eval);
//! # Ok::<(), millrace::Error>(())
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{BooleanArray, RecordBatch};
use millrace_connectors::storage::StorageOptions;
use millrace_engine::ClusterConfig;
use millrace_ml::preprocess::{NullPolicy, SequenceSpec};
use millrace_operators::batch_job::{Progress, Summary};
use millrace_operators::preprocess::Step;
use millrace_operators::spec::{
    BranchSpec, CheckpointSpec, EvaluateSpec, IngestSpec, OutputSpec, PipelineSpec, PreprocessSpec,
    ServeSpec, SinkPoint, SinkSpec,
};
use millrace_operators::streaming::{StreamSpec, StreamSummary};

use crate::run::{RunConfig, plan, run_planned};

mod sink;
mod train;
mod tune;

use crate::{Error, Result};
pub use sink::Sink;
pub use train::Train;
pub use tune::Tune;

/// What a DSL run returns.
#[derive(Clone, Debug)]
pub struct RunReport {
    /// The summary (also in `run_dir/summary.json`).
    pub summary: Summary,
    /// The run directory.
    pub run_dir: PathBuf,
}

/// A pipeline under construction.
#[derive(Clone)]
pub struct Pipeline {
    name: String,
    ingest: Option<PathBuf>,
    batch_rows: usize,
    preprocess: PreprocessSpec,
    train: Option<Train>,
    evaluate: EvaluateSpec,
    serve: Option<ServeSpec>,
    storage: StorageOptions,
    output: OutputSpec,
    checkpoint: Option<CheckpointSpec>,
    workers: usize,
    run_dir: Option<PathBuf>,
    progress: Option<Arc<dyn Progress>>,
    stream: Option<StreamSpec>,
    stop: StreamStop,
    branches: Vec<BranchSpec>,
    /// User steps given as closures, registered under their names when the pipeline is built.
    steps: Vec<(String, Step)>,
    sinks: Vec<SinkSpec>,
    features: Option<millrace_operators::spec::FeaturesSpec>,
    tune: Option<millrace_operators::tune::TuneSpec>,
    tracking: Option<millrace_operators::spec::TrackingSpec>,
}

/// When a streaming job started by [`Pipeline::run_stream`] stops (besides `stop` being set).
#[derive(Clone, Default)]
struct StreamStop {
    max_records: Option<u64>,
    idle: Option<std::time::Duration>,
    flag: Option<Arc<std::sync::atomic::AtomicBool>>,
}

impl Pipeline {
    /// A new pipeline called `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Pipeline {
            name: name.into(),
            ingest: None,
            batch_rows: 65_536,
            preprocess: PreprocessSpec::default(),
            train: None,
            evaluate: EvaluateSpec::default(),
            serve: None,
            storage: StorageOptions::default(),
            output: OutputSpec::default(),
            checkpoint: None,
            workers: 1,
            run_dir: None,
            progress: None,
            stream: None,
            stop: StreamStop::default(),
            branches: Vec::new(),
            steps: Vec::new(),
            sinks: Vec::new(),
            features: None,
            tune: None,
            tracking: None,
        }
    }

    /// Adds a train-step on the same preprocessed rows (`[[branch]]` in a pipeline file): the
    /// data is read and encoded once; the branch trains, evaluates and saves its own model in
    /// `branches/<name>/model`.
    pub fn branch(mut self, name: &str, train: Train) -> Self {
        self.branches.push(BranchSpec {
            name: name.to_owned(),
            train: train.spec,
        });
        self
    }

    /// Records the run in the MLflow tracking server at `uri` (`[tracking]` in a pipeline file,
    /// with its defaults: the experiment and the registered model named after the pipeline).
    /// `None` takes `$MLFLOW_TRACKING_URI`.
    pub fn tracking(mut self, uri: Option<&str>) -> Self {
        let spec: millrace_operators::spec::TrackingSpec =
            serde_json::from_value(serde_json::json!({ "uri": uri }))
                .expect("the default [tracking] settings parse");
        self.tracking = Some(spec);
        self
    }

    /// Tunes the `[train]` settings (`[tune]` in a pipeline file): trials drawn from the search
    /// space train side by side on the rows read once; the scheduler stops weak ones early; the
    /// best trial's model is `best/model` and `summary.tune` lists every trial.
    pub fn tune(mut self, tune: Tune) -> Self {
        self.tune = Some(tune.spec);
        self
    }

    /// Makes this a streaming job: records of Kafka `topic` on `bootstrap_servers` are trained
    /// on as they arrive (test-then-train), versions are published and checkpointed with the
    /// offsets — the job a `[stream]` section describes, with its defaults. Change any other
    /// `[stream]` setting with [`Pipeline::stream_options`]; run it with
    /// [`Pipeline::run_stream`]. An `.ingest_parquet(…)` then fits the preprocessing on that
    /// dataset before the stream starts.
    pub fn kafka(mut self, bootstrap_servers: &str, topic: &str) -> Self {
        let spec: StreamSpec = serde_json::from_value(serde_json::json!({
            "bootstrap_servers": bootstrap_servers,
            "topic": topic,
        }))
        .expect("a [stream] section with only the two required keys is valid");
        self.stream = Some(spec);
        self
    }

    /// Changes `[stream]` settings of a [`Pipeline::kafka`] job (schema, group, publishing and
    /// checkpoint cadence, windows, …): `f` gets the section as the pipeline file would hold it.
    pub fn stream_options(mut self, f: impl FnOnce(&mut StreamSpec)) -> Self {
        if let Some(stream) = self.stream.as_mut() {
            f(stream);
        }
        self
    }

    /// A streaming job stops after reading this many records.
    pub fn stop_after_records(mut self, records: u64) -> Self {
        self.stop.max_records = Some(records);
        self
    }

    /// A streaming job stops once no record arrived for this long.
    pub fn stop_when_idle(mut self, idle: std::time::Duration) -> Self {
        self.stop.idle = Some(idle);
        self
    }

    /// A streaming job stops (with a last checkpoint) after the step during which `flag` is set.
    pub fn stop_on(mut self, flag: Arc<std::sync::atomic::AtomicBool>) -> Self {
        self.stop.flag = Some(flag);
        self
    }

    /// Reads a Parquet file or directory (Spark output included), or a Delta table: a local path
    /// or a URL such as `s3://bucket/prefix` (see [`Pipeline::storage`]).
    pub fn ingest_parquet(mut self, path: impl AsRef<Path>) -> Self {
        self.ingest = Some(path.as_ref().to_path_buf());
        self
    }

    /// Object store settings (endpoint, region, credentials, retries) for every URL.
    pub fn storage(mut self, storage: StorageOptions) -> Self {
        self.storage = storage;
        self
    }

    /// Checkpoints the training as `checkpoint` says (see `[checkpoint]` in pipeline files).
    pub fn checkpoint(mut self, checkpoint: CheckpointSpec) -> Self {
        self.checkpoint = Some(checkpoint);
        self
    }

    /// Writes the evaluation rows' predictions, with `columns` copied from the input, as a Parquet
    /// dataset at `url` (finished with `_SUCCESS`).
    pub fn write_predictions(mut self, url: impl Into<String>, columns: &[&str]) -> Self {
        self.output.predictions = Some(url.into());
        self.output.columns = columns.iter().map(|c| c.to_string()).collect();
        self
    }

    /// Rows per batch read.
    pub fn batch_rows(mut self, rows: usize) -> Self {
        self.batch_rows = rows;
        self
    }

    /// A row-wise SQL transform over the table `input`.
    pub fn sql(mut self, sql: impl Into<String>) -> Self {
        self.preprocess.sql = Some(sql.into());
        self
    }

    /// A user step over Arrow batches, `f` (a batch → a batch with the same rows), named `name`.
    /// It runs where it is placed: before the SQL when `.sql(…)` comes after it, on the SQL's
    /// output when it comes before. It is part of the model: the bundle records the name, and
    /// a server in a binary that registers the same step (`App::new().step(name, …)`) applies
    /// it to requests. See [`Step::map`].
    pub fn map_batches(
        self,
        name: &str,
        f: impl Fn(&RecordBatch) -> std::result::Result<RecordBatch, String> + Send + Sync + 'static,
    ) -> Self {
        self.user_step(name, Step::map(f))
    }

    /// A user step keeping the rows for which `f` is true (see [`Pipeline::map_batches`] for
    /// where it runs and [`Step::filter`]).
    pub fn filter(
        self,
        name: &str,
        f: impl Fn(&RecordBatch) -> std::result::Result<BooleanArray, String> + Send + Sync + 'static,
    ) -> Self {
        self.user_step(name, Step::filter(f))
    }

    /// A user step, e.g. one that declares the columns it reads ([`Step::reads`]); placed as
    /// [`Pipeline::map_batches`] places it.
    pub fn user_step(mut self, name: &str, step: Step) -> Self {
        self.steps.push((name.to_owned(), step));
        self.step(name)
    }

    /// A step registered in this binary (`App::new().step(name, …)`) by name, placed as
    /// [`Pipeline::map_batches`] places it (`steps_before_sql` / `steps_after_sql` in a file).
    pub fn step(mut self, name: &str) -> Self {
        let list = if self.preprocess.sql.is_some() {
            &mut self.preprocess.steps_after_sql
        } else {
            &mut self.preprocess.steps_before_sql
        };
        list.push(name.to_owned());
        self
    }

    /// Joins incremental features onto each streamed record, as of its event time: a table on a
    /// key and per-key aggregates (the `[features]` section of a pipeline file).
    pub fn features(mut self, features: millrace_operators::spec::FeaturesSpec) -> Self {
        self.features = Some(features);
        self
    }

    /// Writes rows to `sink` (a Parquet dataset or a Kafka topic) besides training them: the
    /// records as read when no `.sql(…)` or step came before this call, the preprocessed rows
    /// otherwise (or where [`Sink::after`] says).
    pub fn sink(mut self, sink: Sink) -> Self {
        let mut spec = sink.spec;
        if !sink.placed {
            let p = &self.preprocess;
            let preprocessed =
                p.sql.is_some() || !p.steps_before_sql.is_empty() || !p.steps_after_sql.is_empty();
            spec.after = if preprocessed {
                SinkPoint::Preprocess
            } else {
                SinkPoint::Ingest
            };
        }
        self.sinks.push(spec);
        self
    }

    /// Standardise these numeric columns.
    pub fn standardize<S: Into<String>>(mut self, columns: impl IntoIterator<Item = S>) -> Self {
        self.preprocess
            .standardize
            .extend(columns.into_iter().map(Into::into));
        self
    }

    /// Use these numeric columns as they are.
    pub fn numeric<S: Into<String>>(mut self, columns: impl IntoIterator<Item = S>) -> Self {
        self.preprocess
            .numeric
            .extend(columns.into_iter().map(Into::into));
        self
    }

    /// One-hot encode these string columns.
    pub fn one_hot<S: Into<String>>(mut self, columns: impl IntoIterator<Item = S>) -> Self {
        self.preprocess
            .one_hot
            .extend(columns.into_iter().map(Into::into));
        self
    }

    /// Index-encode these string columns.
    pub fn index<S: Into<String>>(mut self, columns: impl IntoIterator<Item = S>) -> Self {
        self.preprocess
            .index
            .extend(columns.into_iter().map(Into::into));
        self
    }

    /// Read the list column `column` (of numbers or strings) as a sequence of its last
    /// `max_len` elements, padded, with its length (a model reads it with
    /// `Inputs::sequence`).
    pub fn sequence(mut self, column: impl Into<String>, max_len: usize) -> Self {
        self.preprocess.sequence.push(SequenceSpec {
            column: column.into(),
            max_len,
        });
        self
    }

    /// The label column.
    pub fn label(mut self, column: impl Into<String>) -> Self {
        self.preprocess.label = column.into();
        self
    }

    /// What to do with null features.
    pub fn nulls(mut self, policy: NullPolicy) -> Self {
        self.preprocess.nulls = policy;
        self
    }

    /// The train-step.
    pub fn train(mut self, train: Train) -> Self {
        self.train = Some(train);
        self
    }

    /// Evaluate on a holdout Parquet file or directory.
    pub fn evaluate_on(mut self, path: impl AsRef<Path>) -> Self {
        self.evaluate.path = Some(path.as_ref().to_path_buf());
        self
    }

    /// Evaluate on a seeded hash split of the ingested rows.
    pub fn eval_split(mut self, fraction: f64, seed: u64) -> Self {
        self.evaluate.path = None;
        self.evaluate.split = fraction;
        self.evaluate.split_seed = seed;
        self
    }

    /// Serve the model when the run ends.
    pub fn serve(mut self, serve: ServeSpec) -> Self {
        self.serve = Some(serve);
        self
    }

    /// Worker threads.
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }

    /// Where to write the run directory.
    pub fn run_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.run_dir = Some(dir.as_ref().to_path_buf());
        self
    }

    /// Progress reporting.
    pub fn progress(mut self, progress: Arc<dyn Progress>) -> Self {
        self.progress = Some(progress);
        self
    }

    /// The pipeline as a spec (what a pipeline file would say).
    pub fn build(&self) -> Result<PipelineSpec> {
        let path = match (&self.ingest, &self.stream) {
            (Some(path), _) => path.clone(),
            // A stream without a dataset fits its preprocessing on the stream.
            (None, Some(_)) => PathBuf::new(),
            (None, None) => {
                return Err(Error::Pipeline(millrace_operators::Error::config(
                    "ingest",
                    "no source: call .ingest_parquet(path) or .kafka(bootstrap_servers, topic)",
                )));
            }
        };
        let train = self.train.clone().ok_or_else(|| {
            Error::Pipeline(millrace_operators::Error::config(
                "train",
                "no train-step: call .train(Train::mlp([..]))",
            ))
        })?;
        if self.preprocess.label.is_empty() {
            return Err(Error::Pipeline(millrace_operators::Error::config(
                "preprocess.label",
                "no label column: call .label(\"column\")",
            )));
        }
        for (name, step) in &self.steps {
            millrace_operators::preprocess::put_step(name, step.clone())?;
        }
        Ok(PipelineSpec {
            name: self.name.clone(),
            ingest: IngestSpec {
                batch_rows: self.batch_rows,
                ..IngestSpec::new(path)
            },
            preprocess: self.preprocess.clone(),
            train: train.spec,
            evaluate: self.evaluate.clone(),
            serve: self.serve.clone(),
            storage: self.storage.clone(),
            output: self.output.clone(),
            stream: self.stream.clone(),
            checkpoint: self.checkpoint.clone(),
            branch: self.branches.clone(),
            sink: self.sinks.clone(),
            features: self.features.clone(),
            tune: self.tune.clone(),
            tracking: self.tracking.clone(),
        })
    }

    /// Plans and runs the pipeline, writing its run directory.
    /// Its clock (`wall_s`, the plan phase) starts at this call.
    pub fn run(self) -> Result<RunReport> {
        let started = std::time::Instant::now();
        if self.stream.is_some() {
            return Err(Error::Usage(
                "this pipeline reads a Kafka topic: run it with .run_stream()".into(),
            ));
        }
        let spec = self.build()?;
        let planned = plan(spec, None)?;
        let config = RunConfig {
            cluster: ClusterConfig::local(self.workers),
            run_dir: self.run_dir,
            progress: self
                .progress
                .unwrap_or_else(|| Arc::new(millrace_operators::batch_job::NoProgress)),
            resume: false,
            started: Some(started),
        };
        let (summary, run_dir) = run_planned(planned, None, config)?;
        Ok(RunReport { summary, run_dir })
    }

    /// Plans and runs the streaming job of [`Pipeline::kafka`] until it stops
    /// ([`Pipeline::stop_after_records`], [`Pipeline::stop_when_idle`], [`Pipeline::stop_on`]),
    /// writing its run directory: the same job as the pipeline file with the same `[stream]`.
    pub fn run_stream(self) -> Result<(StreamSummary, PathBuf)> {
        let started = std::time::Instant::now();
        let spec = self.build()?;
        if spec.stream.is_none() {
            return Err(Error::Usage(
                "this pipeline has no stream: call .kafka(bootstrap_servers, topic), or .run()"
                    .into(),
            ));
        }
        let config = crate::run::StreamRunConfig {
            cluster: ClusterConfig::local(self.workers),
            run_dir: self.run_dir,
            stop: self.stop.flag.unwrap_or_default(),
            max_records: self.stop.max_records,
            idle_timeout: self.stop.idle,
            started: Some(started),
        };
        crate::run::run_stream(spec, None, config)
    }
}
