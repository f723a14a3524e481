//! Checkpoints of a streaming job: one consistent cut of the model, the optimiser, the fitted
//! preprocessing, the counters and every partition's next offset, taken between two training
//! steps (all workers are at the same step: training is synchronous).
//!
//! Checkpoints are stored by [`crate::checkpoint::CheckpointStore`] (a local directory or an
//! object store; written, then published), so a crash leaves either the old set or the new one.
//! Offsets are committed to Kafka only after the checkpoint is published: Kafka never holds an
//! offset that no checkpoint includes.

use std::collections::BTreeMap;

use millrace_connectors::storage::StorageOptions;
use millrace_ml::optim::OptimizerState;
use millrace_ml::preprocess::FittedPreprocessor;
use serde::{Deserialize, Serialize};

use super::prequential::PrequentialState;
use crate::Result;
use crate::checkpoint::{CheckpointStore, decode, encode};
use crate::streaming::window::WindowState;

/// 3: per-partition watermarks (`watermark_ms`, `partition_events`); 4: `[[branch]]` states;
/// 5: the `[features]` view; 6: its all-time aggregates as running values per key.
pub(crate) const FORMAT: u32 = 7;

/// Everything a streaming job needs to continue exactly where it was.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Format version of this struct.
    pub format: u32,
    /// The pipeline's name.
    pub pipeline: String,
    /// The topic the offsets belong to.
    pub topic: String,
    /// Training steps taken (including steps without rows).
    pub step: u64,
    /// Optimiser steps applied.
    pub optimizer_steps: u64,
    /// The last published model version.
    pub model_version: u64,
    /// Next offset to read, per partition (every partition of the topic).
    pub offsets: BTreeMap<i32, i64>,
    /// Records read (good and bad).
    pub rows_read: u64,
    /// Records trained on.
    pub rows_trained: u64,
    /// Records sent to the dead-letter output.
    pub rows_dead_lettered: u64,
    /// Records behind the watermark.
    pub rows_late: u64,
    /// The model's flat parameters.
    pub parameters: Vec<f32>,
    /// The optimiser's state.
    pub optimizer: OptimizerState,
    /// The frozen preprocessing.
    pub preprocess: FittedPreprocessor,
    /// The prequential metrics window.
    pub prequential: PrequentialState,
    /// The job's watermark (epoch ms): the minimum over partitions that were not idle.
    pub watermark_ms: Option<i64>,
    /// The newest event time of each partition (whichever worker read it), so that a job
    /// resumed on any number of workers starts each partition's watermark where it was.
    pub partition_events: BTreeMap<i32, i64>,
    /// Every worker's open event-time windows.
    pub windows: Vec<WindowState>,
    /// Each `[[branch]]`'s model, optimiser and prequential window.
    pub branches: Vec<BranchState>,
    /// The `[features]` view: every worker's state and the table's version.
    pub features: Option<crate::streaming::FeaturesCheckpoint>,
}

/// What a checkpoint keeps of one `[[branch]]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BranchState {
    /// The branch's name.
    pub name: String,
    /// Its flat parameters.
    pub parameters: Vec<f32>,
    /// Its optimiser's state.
    pub optimizer: OptimizerState,
    /// Its prequential metrics window.
    pub prequential: PrequentialState,
}

const KIND: &str = "stream-train";

/// The checkpoints of one streaming job.
#[derive(Clone, Debug)]
pub struct StreamCheckpoints {
    store: CheckpointStore,
}

impl StreamCheckpoints {
    /// The checkpoints at `location` (a directory or an object store URL), keeping `keep`.
    pub fn open(location: &str, storage: &StorageOptions, keep: usize) -> Result<Self> {
        Ok(StreamCheckpoints {
            store: CheckpointStore::open(location, storage, keep)?,
        })
    }

    /// Where they are.
    pub fn url(&self) -> &str {
        self.store.url()
    }

    /// The newest complete checkpoint, or `None` when there is none; a damaged one is an error
    /// naming it.
    pub fn latest(&self) -> Result<Option<Checkpoint>> {
        match self.store.latest()? {
            Some((info, bytes)) => decode(KIND, FORMAT, &bytes, &info.url).map(Some),
            None => Ok(None),
        }
    }

    /// Writes `checkpoint` (published atomically, older ones pruned); its URL and size.
    pub fn write(&self, checkpoint: &Checkpoint) -> Result<(String, u64)> {
        let bytes = encode(KIND, FORMAT, checkpoint)?;
        let info = self.store.write(checkpoint.step, &bytes)?;
        Ok((info.url, info.bytes))
    }
}
