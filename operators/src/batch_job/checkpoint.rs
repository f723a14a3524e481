//! Checkpoints of a batch job: one consistent cut across all workers, taken between two
//! training steps (training is synchronous, so every worker is at the same step and every
//! replica holds the same parameters): the model, the optimiser state, the fitted preprocessing,
//! the training position (epoch, steps done, the seed the epoch orders derive from) and the
//! sources it is a position in.
//!
//! Every source has been read completely by the time training starts, and each step's rows are
//! chosen by a hash of their content, so the position of the training in its data is
//! `(epoch, steps done)`, whichever worker holds which file: that is what makes resuming on
//! another number of workers or processes exact. The sources' files (path, rows, bytes, row
//! groups) are recorded so a resumed run on changed data can say which file changed.

use std::time::Instant;

use millrace_connectors::parquet::ParquetDataset;
use millrace_ml::Replica;
use millrace_ml::optim::OptimizerState;
use millrace_ml::preprocess::FittedPreprocessor;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{CheckpointStore, decode, encode};
use crate::spec::PipelineSpec;
use crate::train::TrainPosition;
use crate::{Error, Result};

const KIND: &str = "batch-train";
const FORMAT: u32 = 1;

/// One file of a source, as it was when the checkpoint was taken.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    /// Path or URL.
    pub path: String,
    /// Rows in the file.
    pub rows: u64,
    /// Size in bytes.
    pub size_bytes: u64,
    /// Row groups in the file.
    pub row_groups: u64,
}

/// A source of the job and how far it was read (completely, once training runs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRecord {
    /// `ingest` or `evaluate`.
    pub name: String,
    /// The dataset's URL.
    pub url: String,
    /// Its files.
    pub files: Vec<FileRecord>,
    /// Rows read from it (all of them).
    pub rows_read: u64,
}

impl SourceRecord {
    fn of(name: &str, dataset: &ParquetDataset) -> Self {
        SourceRecord {
            name: name.to_string(),
            url: dataset.url().to_string(),
            files: dataset
                .files()
                .iter()
                .map(|f| FileRecord {
                    path: f.path.display().to_string(),
                    rows: f.rows,
                    size_bytes: f.size_bytes,
                    row_groups: f.row_groups.len() as u64,
                })
                .collect(),
            rows_read: dataset.num_rows(),
        }
    }
}

/// Everything a batch job needs to continue its training exactly.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BatchCheckpoint {
    /// The pipeline's name.
    pub pipeline: String,
    /// Workers (over all processes) of the run that wrote it.
    pub workers: usize,
    /// Where the training is.
    pub position: TrainPosition,
    /// The model's flat parameters.
    pub parameters: Vec<f32>,
    /// The optimiser's state.
    pub optimizer: OptimizerState,
    /// The preprocessing fitted before training (a resumed run encodes with it, not a refit).
    pub preprocess: FittedPreprocessor,
    /// The sources the position is in.
    pub sources: Vec<SourceRecord>,
}

impl BatchCheckpoint {
    /// The sources of `plan`'s datasets now.
    pub(crate) fn sources(
        dataset: &ParquetDataset,
        holdout: Option<&ParquetDataset>,
    ) -> Vec<SourceRecord> {
        let mut sources = vec![SourceRecord::of("ingest", dataset)];
        sources.extend(holdout.map(|h| SourceRecord::of("evaluate", h)));
        sources
    }

    /// What differs between the checkpoint's sources and `now` (empty: nothing visible).
    pub fn source_changes(&self, now: &[SourceRecord]) -> Vec<String> {
        Self::source_changes_between(&self.sources, now)
    }

    /// What differs between the sources `then` and `now` (empty: nothing visible).
    pub fn source_changes_between(then: &[SourceRecord], now: &[SourceRecord]) -> Vec<String> {
        let mut changes = Vec::new();
        for (then, now) in then.iter().zip(now) {
            if then.url != now.url {
                changes.push(format!("{}: {} then, {} now", then.name, then.url, now.url));
                continue;
            }
            for f in &then.files {
                match now.files.iter().find(|n| n.path == f.path) {
                    None => changes.push(format!("{} is gone", f.path)),
                    Some(n) if n != f => changes.push(format!(
                        "{} changed ({} rows, {} bytes then; {} rows, {} bytes now)",
                        f.path, f.rows, f.size_bytes, n.rows, n.size_bytes
                    )),
                    Some(_) => {}
                }
            }
            for n in &now.files {
                if !then.files.iter().any(|f| f.path == n.path) {
                    changes.push(format!("{} is new", n.path));
                }
            }
        }
        changes
    }
}

/// The checkpoint store of a pipeline, when it has a `[checkpoint]` section.
pub(crate) fn store(spec: &PipelineSpec) -> Result<Option<CheckpointStore>> {
    spec.checkpoint
        .as_ref()
        .map(|c| CheckpointStore::open(&c.location(&spec.name), &spec.storage, c.keep))
        .transpose()
}

/// The checkpoint store of `[[branch]]` `branch`: `branches/<name>` under the pipeline's. Its
/// checkpoints belong to the pipeline `<pipeline>/<branch>` (see [`model_name`]).
pub(crate) fn branch_store(spec: &PipelineSpec, branch: &str) -> Result<Option<CheckpointStore>> {
    spec.checkpoint
        .as_ref()
        .map(|c| {
            let base = c.location(&spec.name);
            let url = format!("{}/branches/{branch}", base.trim_end_matches('/'));
            CheckpointStore::open(&url, &spec.storage, c.keep)
        })
        .transpose()
}

/// The name a model's checkpoints carry: the pipeline's, or `<pipeline>/<branch>`.
pub(crate) fn model_name(spec: &PipelineSpec, branch: Option<&str>) -> String {
    match branch {
        None => spec.name.clone(),
        Some(b) => format!("{}/{b}", spec.name),
    }
}

/// `--resume` without a `[checkpoint]` section.
pub(crate) fn no_store() -> Error {
    Error::config(
        "checkpoint",
        "--resume needs checkpoints: add a [checkpoint] section (dir, every_steps) to the pipeline",
    )
}

/// With `resume`, the checkpoint of model `pipeline` to continue from (none yet: from the
/// start), refused when the sources changed since it was taken. Without, none.
pub(crate) fn resume_from(
    store: Option<&CheckpointStore>,
    resume: bool,
    pipeline: &str,
    sources: &[SourceRecord],
) -> Result<Option<BatchCheckpoint>> {
    let store = match (store, resume) {
        (_, false) => return Ok(None),
        (None, true) => return Err(no_store()),
        (Some(store), true) => store,
    };
    match load_latest(pipeline, store)? {
        Some(c) => {
            let changes = c.source_changes(sources);
            if !changes.is_empty() {
                return Err(Error::Checkpoint(format!(
                    "the data changed since the checkpoint at step {} was taken: {}; resume only on the data the run started with, or start afresh without --resume",
                    c.position.global_step,
                    changes.join("; ")
                )));
            }
            Ok(Some(c))
        }
        None => {
            tracing::info!(
                store = store.url(),
                model = pipeline,
                "--resume: no checkpoint yet, starting from the beginning"
            );
            Ok(None)
        }
    }
}

/// Worker 0's writer of one model's checkpoints (other workers write none), with their stats.
pub(crate) struct Saver<'a> {
    pub(crate) store: Option<&'a CheckpointStore>,
    pub(crate) pipeline: String,
    pub(crate) workers: usize,
    pub(crate) preprocess: &'a FittedPreprocessor,
    pub(crate) sources: &'a [SourceRecord],
    pub(crate) stats: super::CheckpointStats,
}

impl<'a> Saver<'a> {
    /// The saver of model `pipeline` (see [`model_name`]) into `store`, on worker 0 only.
    pub(crate) fn new(
        store: Option<&'a CheckpointStore>,
        pipeline: String,
        ctx: &millrace_engine::WorkerContext,
        preprocess: &'a FittedPreprocessor,
        sources: &'a [SourceRecord],
    ) -> Self {
        Saver {
            store: store.filter(|_| ctx.index == 0),
            pipeline,
            workers: ctx.peers,
            preprocess,
            sources,
            stats: super::CheckpointStats {
                location: store.map(|s| s.url().to_string()),
                ..super::CheckpointStats::default()
            },
        }
    }

    /// Writes the checkpoint of `position` when this worker writes them.
    pub(crate) fn save(&mut self, position: &TrainPosition, trainer: &Replica) -> Result<()> {
        let Some(store) = self.store else {
            return Ok(());
        };
        let (bytes, ms) = save(
            store,
            &self.pipeline,
            self.workers,
            position,
            trainer,
            self.preprocess,
            self.sources,
        )?;
        self.stats.record(position.global_step, bytes, ms);
        Ok(())
    }
}

/// The newest complete checkpoint of `spec`'s store, checked to belong to this pipeline.
pub(crate) fn load_latest(
    pipeline: &str,
    store: &CheckpointStore,
) -> Result<Option<BatchCheckpoint>> {
    let Some((info, bytes)) = store.latest()? else {
        return Ok(None);
    };
    let checkpoint: BatchCheckpoint = decode(KIND, FORMAT, &bytes, &info.url)?;
    if checkpoint.pipeline != pipeline {
        return Err(Error::Checkpoint(format!(
            "{} belongs to pipeline '{}', not '{pipeline}': point [checkpoint] dir elsewhere",
            info.url, checkpoint.pipeline
        )));
    }
    tracing::info!(
        url = %info.url,
        step = checkpoint.position.global_step,
        epoch = checkpoint.position.epoch,
        written_by_workers = checkpoint.workers,
        "resuming from checkpoint"
    );
    Ok(Some(checkpoint))
}

/// Writes the checkpoint of `position` (on worker 0); returns (bytes, milliseconds).
pub(crate) fn save(
    store: &CheckpointStore,
    pipeline: &str,
    workers: usize,
    position: &TrainPosition,
    trainer: &Replica,
    preprocess: &FittedPreprocessor,
    sources: &[SourceRecord],
) -> Result<(u64, f64)> {
    let started = Instant::now();
    let checkpoint = BatchCheckpoint {
        pipeline: pipeline.to_owned(),
        workers,
        position: position.clone(),
        parameters: trainer.try_parameters()?,
        optimizer: trainer.optimizer_state()?,
        preprocess: preprocess.clone(),
        sources: sources.to_vec(),
    };
    let bytes = encode(KIND, FORMAT, &checkpoint)?;
    let info = store.write(position.global_step, &bytes)?;
    Ok((info.bytes, started.elapsed().as_secs_f64() * 1e3))
}
