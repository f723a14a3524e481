//! The streaming run's clock: from when the user started waiting (the process start for `millrace
//! run`) to summary.json, the last file of the run, in three phases.

use std::path::PathBuf;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::run::StreamSummary;
use crate::{Error, Result};

/// The consecutive phases of a streaming run, in seconds; they add up to `wall_s`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct StreamPhases {
    /// From the clock's start until the workers start: reading and checking the pipeline,
    /// planning the SQL, opening the checkpoint store and loading the latest checkpoint, starting
    /// the model server.
    pub plan_s: f64,
    /// The workers, from their start to their last step: connecting to Kafka, the warm-up read
    /// and the preprocessing fit, training, publishing versions, checkpoints, windows.
    pub run_s: f64,
    /// From the workers' end until summary.json is written: metrics.prom, dead letters, the final
    /// model, the curves.
    pub write_s: f64,
}

/// A streaming run whose outputs are all written but summary.json: write any files of your own
/// into the run directory (the CLI draws the curves), then call
/// [`FinishedStream::write_summary`], which stops the clock.
pub struct FinishedStream {
    pub(super) summary: StreamSummary,
    pub(super) clock: Instant,
    pub(super) workers_started: Instant,
    pub(super) workers_done: Instant,
    pub(super) path: PathBuf,
}

impl FinishedStream {
    /// Stops the clock, completes the summary's times and writes it as summary.json.
    pub fn write_summary(self) -> Result<StreamSummary> {
        let FinishedStream {
            mut summary,
            clock,
            workers_started,
            workers_done,
            path,
        } = self;
        let stop = Instant::now();
        let span = |from: Instant, to: Instant| to.saturating_duration_since(from).as_secs_f64();
        summary.wall_s = span(clock, stop);
        summary.phases = StreamPhases {
            plan_s: span(clock, workers_started),
            run_s: span(workers_started, workers_done),
            write_s: span(workers_done, stop),
        };
        let text =
            serde_json::to_string_pretty(&summary).map_err(|e| Error::Internal(e.to_string()))?;
        std::fs::write(&path, text + "\n").map_err(|e| Error::io(&path, e))?;
        Ok(summary)
    }
}
