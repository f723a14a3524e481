//! The pipeline specification: what each node of the graph does. The pipeline file (TOML) and the
//! Rust DSL both produce a [`PipelineSpec`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use millrace_connectors::parquet::{Compression, DatasetFormat, DatasetOptions, PartitionFilter};
use millrace_connectors::storage::StorageOptions;

use millrace_ml::preprocess::{NullPolicy, SequenceSpec};

mod bytes;
mod checkpoint;
mod column_type;
mod duration;
mod features;
mod serve;
mod sink;
mod tracking;
mod train;
mod validate;
mod written;
pub use checkpoint::CheckpointSpec;
pub use column_type::ColumnType;
pub use duration::{DurationText, parse_duration};
pub use features::{
    FeatureAggregateSpec, FeatureTableSpec, FeaturesSpec, KafkaTableSpec, TableJoin,
};
use serde::{Deserialize, Serialize};
pub use serve::ServeSpec;
pub use sink::{KafkaTopicSpec, SinkPoint, SinkSpec};
pub use tracking::TrackingSpec;
pub(crate) use train::check_device;
pub use train::{ByteSize, TaskKind, TrainSpec};
pub use written::{Setting, Written};

use crate::{Error, Result};

/// A whole pipeline: ingest → preprocess → train → evaluate (→ serve).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    /// Name of the pipeline (used for the run directory and the model name).
    #[serde(default = "default_name")]
    pub name: String,
    /// Where the rows come from (a batch job), or the dataset the preprocessing of a streaming
    /// job is fitted on.
    #[serde(default)]
    pub ingest: IngestSpec,
    /// SQL and feature preparation.
    pub preprocess: PreprocessSpec,
    /// The model and how to train it.
    pub train: TrainSpec,
    /// What to evaluate on.
    #[serde(default)]
    pub evaluate: EvaluateSpec,
    /// Serve the trained model when the run ends.
    #[serde(default)]
    pub serve: Option<ServeSpec>,
    /// Object store settings (endpoint, region, credentials, retries) for every URL of the
    /// pipeline.
    #[serde(default)]
    pub storage: StorageOptions,
    /// Results written as Parquet datasets (local or object store), readable by Spark.
    #[serde(default)]
    pub output: OutputSpec,
    /// A streaming job: train online on a Kafka topic (instead of ingesting a dataset).
    #[serde(default)]
    pub stream: Option<crate::streaming::StreamSpec>,
    /// Checkpoints of a batch job's training (`millrace run --resume` continues from them).
    #[serde(default)]
    pub checkpoint: Option<CheckpointSpec>,
    /// More train-steps on the same preprocessed rows (`[[branch]]`, batch jobs): the data is
    /// read and encoded once, then each branch trains, evaluates and saves its own model in
    /// `branches/<name>/model` of the run directory.
    #[serde(default)]
    pub branch: Vec<BranchSpec>,
    /// Where rows go besides training (`[[sink]]`): a Parquet dataset or a Kafka topic, taken
    /// after ingest or after the preprocess.
    #[serde(default)]
    pub sink: Vec<SinkSpec>,
    /// Incremental features of a streaming job (`[features]`): a table joined on a key and
    /// per-key aggregates, as of each record's event time.
    #[serde(default)]
    pub features: Option<FeaturesSpec>,
    /// Hyperparameter search (`[tune]`, batch jobs): trials drawn from a space over `[train]`
    /// keys train side by side on the rows read once; weak ones stop early.
    #[serde(default)]
    pub tune: Option<crate::tune::TuneSpec>,
    /// Record the run in an MLflow tracking server (`[tracking]`).
    #[serde(default)]
    pub tracking: Option<TrackingSpec>,
}

/// One `[[branch]]`: a named train-step with its own model and hyperparameters.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BranchSpec {
    /// The branch's name (its model directory and the model's name when served).
    pub name: String,
    /// The model and how to train it; its `task` must be the main `[train]`'s.
    pub train: TrainSpec,
}

fn default_name() -> String {
    "pipeline".to_string()
}

/// A Parquet file, a directory of them (Spark output), or a Delta table, local or in an object store.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IngestSpec {
    /// A path or URL (`s3://bucket/prefix`, `gs://…`, `az://…`, `file://…`): a Parquet file, or a
    /// directory read recursively (names starting with `_` or `.` are ignored, `key=value`
    /// directories become partition columns), or a Delta table. Required by batch jobs; empty
    /// (no dataset) for a streaming job that fits its preprocessing on the stream.
    #[serde(default)]
    pub path: PathBuf,
    /// `auto` (a Delta table when `_delta_log/` exists, else Parquet), `parquet` or `delta`.
    #[serde(default)]
    pub format: DatasetFormat,
    /// Rows per batch read from a row group.
    #[serde(default = "default_batch_rows")]
    pub batch_rows: usize,
    /// Generate a synthetic dataset at `path` first if nothing is there (for quickstarts and tests).
    #[serde(default)]
    pub generate: Option<GenerateSpec>,
    /// Conditions on partition columns (`"event_date >= '2024-03-02'"`, `"region in ('eu', 'us')"`);
    /// directories that fail one are skipped before they are listed.
    #[serde(default)]
    pub partition_filter: Vec<String>,
    /// Partition column types (`{ event_date = "date", bucket = "int" }`); others are inferred as Spark does.
    #[serde(default)]
    pub partition_types: BTreeMap<String, String>,
    /// Wait for the `_SUCCESS` marker of the job that writes the data before reading it.
    #[serde(default)]
    pub wait_for_success: bool,
    /// How long to wait for `_SUCCESS`, in seconds.
    #[serde(default = "default_success_timeout")]
    pub success_timeout_s: f64,
    /// For Delta tables: the version to read (latest when absent).
    #[serde(default)]
    pub delta_version: Option<i64>,
}

fn default_success_timeout() -> f64 {
    3600.0
}

impl Default for IngestSpec {
    fn default() -> Self {
        IngestSpec::new(PathBuf::new())
    }
}

impl IngestSpec {
    /// Whether a dataset is named.
    pub fn is_set(&self) -> bool {
        !self.path.as_os_str().is_empty()
    }

    /// Reads `path` (a path or URL) with every other setting at its default.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        IngestSpec {
            path: path.into(),
            format: DatasetFormat::default(),
            batch_rows: default_batch_rows(),
            generate: None,
            partition_filter: Vec::new(),
            partition_types: BTreeMap::new(),
            wait_for_success: false,
            success_timeout_s: default_success_timeout(),
            delta_version: None,
        }
    }

    /// Dataset options for `storage`, checked; errors name the key.
    pub fn dataset_options(&self, storage: &StorageOptions) -> Result<DatasetOptions> {
        let format = self.format;
        let partition_filters = self
            .partition_filter
            .iter()
            .map(|f| {
                PartitionFilter::parse(f).map_err(|m| Error::config("ingest.partition_filter", m))
            })
            .collect::<Result<Vec<_>>>()?;
        if !(self.success_timeout_s.is_finite() && self.success_timeout_s >= 0.0) {
            return Err(Error::config(
                "ingest.success_timeout_s",
                format!(
                    "must be a number of seconds, got {}",
                    self.success_timeout_s
                ),
            ));
        }
        Ok(DatasetOptions {
            storage: storage.clone(),
            format,
            partition_filters,
            partition_types: self.partition_types.clone(),
            wait_for_success: self
                .wait_for_success
                .then(|| Duration::from_secs_f64(self.success_timeout_s)),
            delta_version: self.delta_version,
        })
    }
}

/// Results written as Parquet datasets, partitioned like Spark and finished with `_SUCCESS`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    /// Where to write the evaluation rows with the model's predictions (a path or URL).
    #[serde(default)]
    pub predictions: Option<String>,
    /// Input columns copied next to each prediction (e.g. an id); the label is always written.
    #[serde(default)]
    pub columns: Vec<String>,
    /// Partition the predictions by these of `columns`.
    #[serde(default)]
    pub partition_by: Vec<String>,
    /// Where to write the evaluation metrics, one row per evaluation (a path or URL).
    #[serde(default)]
    pub evaluation: Option<String>,
    /// `error` (default: refuse to write into a non-empty location) or `overwrite`.
    #[serde(default)]
    pub mode: OutputMode,
    /// `snappy` (default), `zstd`, `lz4` or `none`.
    #[serde(default)]
    pub compression: Compression,
}

/// What writing an output does when something is already there.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputMode {
    /// Refuse to write into a non-empty location.
    #[default]
    Error,
    /// Delete what is there first.
    Overwrite,
}

/// A synthetic dataset to generate when the configured path does not exist yet.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GenerateSpec {
    /// Which dataset: `tabular` (the benchmark dataset).
    #[serde(default = "default_dataset")]
    pub dataset: String,
    /// Rows.
    pub rows: u64,
    /// Parquet files.
    #[serde(default = "default_gen_files")]
    pub files: usize,
    /// Seed.
    #[serde(default)]
    pub seed: u64,
    /// The holdout variant (timestamps from 2025).
    #[serde(default)]
    pub holdout: bool,
    /// An `entity` column of this many entities with their own effects on the label (0: none).
    #[serde(default)]
    pub entities: u64,
}

fn default_dataset() -> String {
    "tabular".to_string()
}
fn default_gen_files() -> usize {
    1
}

fn default_batch_rows() -> usize {
    65_536
}

/// Preprocessing: a row-wise SQL transform, then feature encoding fitted on the training rows.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct PreprocessSpec {
    /// `SELECT … FROM input WHERE …`, applied to every batch (row-wise: no aggregates, joins, ORDER BY, LIMIT).
    #[serde(default)]
    pub sql: Option<String>,
    /// User steps (registered by name in the user's binary: `App::new().step(…)`) run on the
    /// records before `sql`, in order.
    #[serde(default)]
    pub steps_before_sql: Vec<String>,
    /// User steps run on the output of `sql`, in order.
    #[serde(default)]
    pub steps_after_sql: Vec<String>,
    /// Numeric columns standardised with the mean and standard deviation of all training rows.
    #[serde(default)]
    pub standardize: Vec<String>,
    /// Numeric columns used as they are.
    #[serde(default)]
    pub numeric: Vec<String>,
    /// String columns one-hot encoded over the vocabulary of the training rows.
    #[serde(default)]
    pub one_hot: Vec<String>,
    /// String columns encoded as the index of their value in the vocabulary (0 for unseen).
    #[serde(default)]
    pub index: Vec<String>,
    /// List columns (of numbers or strings) as sequences padded to `max_len`, with lengths:
    /// `sequence = [{ column = "readings", max_len = 32 }]`.
    #[serde(default)]
    pub sequence: Vec<SequenceSpec>,
    /// Keep only the most frequent categories.
    #[serde(default)]
    pub max_categories: Option<usize>,
    /// The label column.
    pub label: String,
    /// What to do with a null feature: `dead_letter` (default), `mean` or `zero`.
    #[serde(default)]
    pub nulls: NullPolicy,
}

impl PreprocessSpec {
    /// The user steps placed around the SQL.
    pub fn steps(&self) -> crate::preprocess::StepNames {
        crate::preprocess::StepNames {
            before: self.steps_before_sql.clone(),
            after: self.steps_after_sql.clone(),
        }
    }
}

/// Where the evaluation rows come from: a holdout dataset, or a hash split of the ingested rows.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EvaluateSpec {
    /// A separate Parquet file or directory to evaluate on (read through the same SQL and encoding).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Generate a synthetic holdout at `path` first if nothing is there.
    #[serde(default)]
    pub generate: Option<GenerateSpec>,
    /// Fraction of the ingested rows held out for evaluation (by row hash) when no `path` is given.
    #[serde(default = "default_split")]
    pub split: f64,
    /// Seed of the row-hash split.
    #[serde(default = "default_split_seed")]
    pub split_seed: u64,
    /// Columns whose values decide the split (default: all feature and label columns).
    #[serde(default)]
    pub split_key: Vec<String>,
    /// Evaluate after every epoch (always at the end).
    #[serde(default = "default_true")]
    pub every_epoch: bool,
}

fn default_true() -> bool {
    true
}
fn default_split() -> f64 {
    0.1
}
fn default_split_seed() -> u64 {
    7
}

impl Default for EvaluateSpec {
    fn default() -> Self {
        EvaluateSpec {
            path: None,
            generate: None,
            split: default_split(),
            split_seed: default_split_seed(),
            split_key: Vec::new(),
            every_epoch: true,
        }
    }
}

impl PipelineSpec {
    /// Every feature column, in encoding order.
    pub fn feature_columns(&self) -> Vec<String> {
        let p = &self.preprocess;
        p.standardize
            .iter()
            .chain(&p.numeric)
            .chain(&p.one_hot)
            .chain(&p.index)
            .chain(p.sequence.iter().map(|s| &s.column))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests;
