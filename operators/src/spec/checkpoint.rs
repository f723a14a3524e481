//! `[checkpoint]`: when and where a batch job checkpoints its training, so `millrace run
//! --resume` can continue after a failure on any number of workers.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// ```toml
/// [checkpoint]
/// dir = "s3://bucket/checkpoints/tabular"   # or a local path; default checkpoints/<name>
/// every_steps = 200                          # 0: only by time
/// every_s = 60.0                             # 0: only by steps
/// keep = 3
/// ```
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CheckpointSpec {
    /// A local directory or an object store URL (`s3://bucket/prefix`) that outlives runs and is
    /// reachable from every process that may resume; default `checkpoints/<pipeline name>`.
    #[serde(default)]
    pub dir: Option<String>,
    /// Checkpoint every this many optimiser steps (0: only by time).
    #[serde(default = "default_every_steps")]
    pub every_steps: u64,
    /// Checkpoint when this many seconds passed since the last one (0: only by steps); worker 0's
    /// clock decides, and every worker learns it with the step's gradient sum.
    #[serde(default)]
    pub every_s: f64,
    /// Complete checkpoints kept (older ones are deleted).
    #[serde(default = "default_keep")]
    pub keep: usize,
}

fn default_every_steps() -> u64 {
    100
}

fn default_keep() -> usize {
    3
}

impl CheckpointSpec {
    /// The checkpoint location of pipeline `name`.
    pub fn location(&self, name: &str) -> String {
        self.dir
            .clone()
            .unwrap_or_else(|| format!("checkpoints/{name}"))
    }

    /// Checks the numbers.
    pub fn validate(&self) -> Result<()> {
        if self.every_steps == 0 && self.every_s <= 0.0 {
            return Err(Error::config(
                "checkpoint.every_steps",
                "both every_steps and every_s are 0: set one of them, or remove [checkpoint]",
            ));
        }
        if !self.every_s.is_finite() || self.every_s < 0.0 {
            return Err(Error::config(
                "checkpoint.every_s",
                format!("{} is not a number of seconds ≥ 0", self.every_s),
            ));
        }
        if self.keep == 0 {
            return Err(Error::config(
                "checkpoint.keep",
                "must be at least 1 (the newest checkpoint is what --resume reads)",
            ));
        }
        Ok(())
    }
}
