//! The pipeline specification: what each node of the graph does. The pipeline file (TOML) and the
//! Rust DSL both produce a [`PipelineSpec`].

use std::net::SocketAddr;
use std::path::PathBuf;

use millrace_ml::model::ModelSpec;
use millrace_ml::optim::OptimizerSpec;
use millrace_ml::preprocess::NullPolicy;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// A whole pipeline: ingest → preprocess → train → evaluate (→ serve).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    /// Name of the pipeline (used for the run directory and the model name).
    #[serde(default = "default_name")]
    pub name: String,
    /// Where the rows come from.
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
}

fn default_name() -> String {
    "pipeline".to_string()
}

/// A Parquet file or directory to read.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IngestSpec {
    /// A Parquet file, or a directory read recursively (names starting with `_` or `.` are ignored).
    pub path: PathBuf,
    /// Data format; only `parquet` for now.
    #[serde(default = "default_format")]
    pub format: String,
    /// Rows per batch read from a row group.
    #[serde(default = "default_batch_rows")]
    pub batch_rows: usize,
    /// Generate a synthetic dataset at `path` first if nothing is there (for quickstarts and tests).
    #[serde(default)]
    pub generate: Option<GenerateSpec>,
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
}

fn default_dataset() -> String {
    "tabular".to_string()
}
fn default_gen_files() -> usize {
    1
}

fn default_format() -> String {
    "parquet".to_string()
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
    /// Keep only the most frequent categories.
    #[serde(default)]
    pub max_categories: Option<usize>,
    /// The label column.
    pub label: String,
    /// What to do with a null feature: `dead_letter` (default), `mean` or `zero`.
    #[serde(default)]
    pub nulls: NullPolicy,
}

/// Task of the model.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum TaskKind {
    /// Predict a class (cross-entropy).
    #[default]
    Classification,
    /// Predict a number (mean squared error).
    Regression,
}

/// The model and its training.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrainSpec {
    /// Classification or regression.
    #[serde(default)]
    pub task: TaskKind,
    /// The model: `{ kind = "mlp", hidden = [64, 64], activation = "relu" }`.
    pub model: ModelSpec,
    /// The optimiser: `{ kind = "adam" }` or `{ kind = "sgd", momentum = 0.9 }`.
    #[serde(default)]
    pub optimizer: OptimizerSpec,
    /// Learning rate.
    #[serde(default = "default_lr")]
    pub lr: f64,
    /// Global batch size (rows per step summed over all workers).
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Passes over the training rows.
    #[serde(default = "default_epochs")]
    pub epochs: usize,
    /// Seed of the parameter initialisation and the shuffling.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Shuffle the rows between epochs.
    #[serde(default = "default_true")]
    pub shuffle: bool,
    /// Write a training line to metrics.jsonl every this many steps.
    #[serde(default = "default_log_every")]
    pub log_every: usize,
}

fn default_lr() -> f64 {
    1e-3
}
fn default_batch_size() -> usize {
    512
}
fn default_epochs() -> usize {
    1
}
fn default_seed() -> u64 {
    42
}
fn default_true() -> bool {
    true
}
fn default_log_every() -> usize {
    10
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

/// Serve the trained model over HTTP when the run ends.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServeSpec {
    /// Address to listen on.
    #[serde(default = "default_addr")]
    pub addr: SocketAddr,
    /// Most instances accepted in one request.
    #[serde(default = "default_max_rows")]
    pub max_rows: usize,
}

fn default_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_max_rows() -> usize {
    10_000
}

impl Default for ServeSpec {
    fn default() -> Self {
        ServeSpec {
            addr: default_addr(),
            max_rows: default_max_rows(),
        }
    }
}

impl PipelineSpec {
    /// Checks everything that can be checked without reading data; errors name the key to change.
    pub fn validate(&self) -> Result<()> {
        if self.ingest.format != "parquet" {
            return Err(Error::config(
                "ingest.format",
                format!(
                    "unknown format '{}'; supported: parquet",
                    self.ingest.format
                ),
            ));
        }
        for (key, g) in [
            ("ingest.generate", &self.ingest.generate),
            ("evaluate.generate", &self.evaluate.generate),
        ] {
            if let Some(g) = g {
                if g.dataset != "tabular" {
                    return Err(Error::config(
                        key,
                        format!("unknown dataset '{}'; available: tabular", g.dataset),
                    ));
                }
                if g.rows == 0 || g.files == 0 {
                    return Err(Error::config(key, "rows and files must be at least 1"));
                }
            }
        }
        if self.evaluate.generate.is_some() && self.evaluate.path.is_none() {
            return Err(Error::config(
                "evaluate.generate",
                "needs evaluate.path: where to write the generated holdout",
            ));
        }
        if self.ingest.batch_rows == 0 {
            return Err(Error::config("ingest.batch_rows", "must be at least 1"));
        }
        let p = &self.preprocess;
        if p.standardize.is_empty()
            && p.numeric.is_empty()
            && p.one_hot.is_empty()
            && p.index.is_empty()
        {
            return Err(Error::config(
                "preprocess",
                "no feature columns: list columns under standardize, numeric, one_hot or index",
            ));
        }
        let t = &self.train;
        if t.batch_size == 0 {
            return Err(Error::config("train.batch_size", "must be at least 1"));
        }
        if t.epochs == 0 {
            return Err(Error::config("train.epochs", "must be at least 1"));
        }
        if !(t.lr.is_finite() && t.lr > 0.0) {
            return Err(Error::config(
                "train.lr",
                format!("must be a positive number, got {}", t.lr),
            ));
        }
        if t.log_every == 0 {
            return Err(Error::config("train.log_every", "must be at least 1"));
        }
        let e = &self.evaluate;
        if e.path.is_none() && !(e.split > 0.0 && e.split < 1.0) {
            return Err(Error::config(
                "evaluate.split",
                format!(
                    "must be between 0 and 1 (exclusive) when evaluate.path is not set, got {}",
                    e.split
                ),
            ));
        }
        Ok(())
    }

    /// Every feature column, in encoding order.
    pub fn feature_columns(&self) -> Vec<String> {
        let p = &self.preprocess;
        p.standardize
            .iter()
            .chain(&p.numeric)
            .chain(&p.one_hot)
            .chain(&p.index)
            .cloned()
            .collect()
    }
}
