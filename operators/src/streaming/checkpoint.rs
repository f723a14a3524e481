//! Checkpoints of a streaming job: one consistent cut of the model, the optimiser, the fitted
//! preprocessing, the counters and every partition's next offset, taken between two training
//! steps (all workers are at the same step: training is synchronous).
//!
//! Layout under the checkpoint directory:
//!
//! ```text
//! ckpt-000000000120/checkpoint.bin   complete: bincode of Checkpoint, then an 8-byte checksum
//! .tmp-000000000180-<uuid>/          being written (or left by a crash): ignored, cleaned up
//! ```
//!
//! A checkpoint is written into a temporary directory, synced, then published by renaming the
//! directory, so a crash leaves either the old set or the new one. Offsets are committed to Kafka
//! only after the rename: Kafka never holds an offset that no checkpoint includes.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use millrace_ml::optim::OptimizerState;
use millrace_ml::preprocess::FittedPreprocessor;
use serde::{Deserialize, Serialize};

use super::prequential::PrequentialState;
use crate::stream::window::WindowState;
use crate::{Error, Result};

const FILE: &str = "checkpoint.bin";
const PREFIX: &str = "ckpt-";
pub(crate) const FORMAT: u32 = 1;

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
    /// Newest event time seen over all workers (the watermark before lateness).
    pub max_event_ms: Option<i64>,
    /// Every worker's open event-time windows.
    pub windows: Vec<WindowState>,
}

/// FNV-1a over `bytes`, stored after the payload to detect corruption.
fn checksum(bytes: &[u8]) -> u64 {
    millrace_engine::stable_hash(bytes)
}

/// The checkpoints of one job in one directory.
#[derive(Clone, Debug)]
pub struct CheckpointStore {
    dir: PathBuf,
    keep: usize,
}

impl CheckpointStore {
    /// A store in `dir` (created when first written) keeping the last `keep` checkpoints.
    pub fn new(dir: impl Into<PathBuf>, keep: usize) -> Self {
        CheckpointStore {
            dir: dir.into(),
            keep: keep.max(1),
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Complete checkpoints, oldest first, as (step, directory).
    pub fn list(&self) -> Result<Vec<(u64, PathBuf)>> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(&self.dir, e)),
        };
        let mut found = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&self.dir, e))?;
            let name = entry.file_name();
            let Some(step) = name
                .to_str()
                .and_then(|n| n.strip_prefix(PREFIX))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            found.push((step, entry.path()));
        }
        found.sort();
        Ok(found)
    }

    /// The newest complete checkpoint, or `None` when there is none. A checkpoint whose file is
    /// damaged is an error naming it (delete that directory to fall back to the one before).
    pub fn latest(&self) -> Result<Option<Checkpoint>> {
        match self.list()?.last() {
            Some((_, dir)) => Self::read(dir).map(Some),
            None => Ok(None),
        }
    }

    /// Reads the checkpoint in `dir`.
    pub fn read(dir: &Path) -> Result<Checkpoint> {
        let path = dir.join(FILE);
        let bytes = fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let corrupt = |why: String| {
            Error::Checkpoint(format!(
                "checkpoint {} is damaged ({why}); delete {} to resume from the checkpoint before it",
                path.display(),
                dir.display()
            ))
        };
        if bytes.len() < 8 {
            return Err(corrupt(format!("{} bytes", bytes.len())));
        }
        let (payload, tail) = bytes.split_at(bytes.len() - 8);
        let mut stored = [0u8; 8];
        stored.copy_from_slice(tail);
        if u64::from_le_bytes(stored) != checksum(payload) {
            return Err(corrupt("checksum mismatch".into()));
        }
        let checkpoint: Checkpoint =
            bincode::deserialize(payload).map_err(|e| corrupt(e.to_string()))?;
        if checkpoint.format != FORMAT {
            return Err(corrupt(format!(
                "format {} is not {FORMAT}, written by another millrace version",
                checkpoint.format
            )));
        }
        Ok(checkpoint)
    }

    /// Writes `checkpoint` atomically, then drops all but the newest `keep`; returns its
    /// directory and size in bytes.
    pub fn write(&self, checkpoint: &Checkpoint) -> Result<(PathBuf, u64)> {
        fs::create_dir_all(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        let mut bytes = bincode::serialize(checkpoint)
            .map_err(|e| Error::Checkpoint(format!("cannot encode the checkpoint: {e}")))?;
        let sum = checksum(&bytes);
        bytes.extend_from_slice(&sum.to_le_bytes());
        let tmp = self.dir.join(format!(
            ".tmp-{:012}-{}",
            checkpoint.step,
            uuid::Uuid::new_v4().simple()
        ));
        fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let path = tmp.join(FILE);
        let mut file = File::create(&path).map_err(|e| Error::io(&path, e))?;
        file.write_all(&bytes).map_err(|e| Error::io(&path, e))?;
        file.sync_all().map_err(|e| Error::io(&path, e))?;
        drop(file);
        let done = self.dir.join(format!("{PREFIX}{:012}", checkpoint.step));
        if done.exists() {
            fs::remove_dir_all(&done).map_err(|e| Error::io(&done, e))?;
        }
        fs::rename(&tmp, &done).map_err(|e| Error::io(&done, e))?;
        if let Ok(dir) = File::open(&self.dir) {
            // Make the rename durable; a failure here only weakens durability, never correctness.
            let _ = dir.sync_all();
        }
        self.prune()?;
        Ok((done, bytes.len() as u64))
    }

    /// Removes old checkpoints beyond `keep` and temporary directories left by crashes.
    fn prune(&self) -> Result<()> {
        let complete = self.list()?;
        let excess = complete.len().saturating_sub(self.keep);
        for (_, dir) in &complete[..excess] {
            fs::remove_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        if let Ok(entries) = fs::read_dir(&self.dir) {
            for entry in entries.flatten() {
                let stale = entry
                    .file_name()
                    .to_str()
                    .is_some_and(|n| n.starts_with(".tmp-"));
                if stale {
                    let _ = fs::remove_dir_all(entry.path());
                }
            }
        }
        Ok(())
    }
}
