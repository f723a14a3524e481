//! `summary.json`: what a run did, in numbers.

use millrace_ml::Device;
use millrace_ml::metrics::EvalMetrics;
use serde::{Deserialize, Serialize};

/// Totals of one operator over all workers.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct OperatorSummary {
    /// Operator name.
    pub operator: String,
    /// Rows received.
    pub rows_in: u64,
    /// Rows sent on.
    pub rows_out: u64,
    /// Records dead-lettered.
    pub dead_letters: u64,
    /// Seconds busy, summed over workers.
    pub busy_s: f64,
}

/// The summary of a finished batch run.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    /// Pipeline name.
    pub name: String,
    /// Workers over all processes.
    pub workers: usize,
    /// Processes.
    #[serde(default = "one")]
    pub processes: usize,
    /// Where the first worker's replica trained: `cpu` or `cuda:N` (`train.device`; the other
    /// workers of a process take the next GPUs).
    #[serde(default)]
    pub device: Device,
    /// Rows read from the training dataset.
    pub rows_read: u64,
    /// Rows read from the holdout dataset.
    pub eval_rows_read: u64,
    /// Prediction rows written to `output.predictions` (0 when not configured).
    #[serde(default)]
    pub predictions_written: u64,
    /// Rows left for training after SQL, split and dead-lettering.
    pub train_rows: u64,
    /// Row visits in training (train_rows × epochs).
    pub rows_trained: u64,
    /// Rows evaluated.
    pub eval_rows: u64,
    /// Rows sent to the dead-letter output (see dead_letters.jsonl).
    pub rows_dead_lettered: u64,
    /// Training rows kept on local disk instead of in memory, over all workers (0 when they fit
    /// in `train.memory_budget`).
    #[serde(default)]
    pub train_rows_spilled: u64,
    /// Rows removed by the SQL's WHERE.
    pub rows_filtered: u64,
    /// Optimiser steps.
    pub steps: u64,
    /// Mean training loss of the last epoch.
    pub final_loss: f64,
    /// Wall-clock seconds from the start of the run's clock (`RunOptions::started`: the process
    /// start for `millrace run`) until summary.json is written, the last file of the run; the
    /// sum of `phases`.
    pub wall_s: f64,
    /// Where `wall_s` went, phase by phase (worker 0's view of the workers' part).
    #[serde(default)]
    pub phases: Phases,
    /// Seconds reading, preprocessing, fitting and encoding (`phases.ingest_s + phases.fit_s +
    /// phases.encode_s`).
    pub ingest_s: f64,
    /// Seconds in the training loop.
    pub train_s: f64,
    /// rows_trained / train_s.
    pub train_rows_per_s: f64,
    /// rows_read / wall_s: rows per second of the whole wait, planning and writing included.
    pub e2e_rows_per_s: f64,
    /// Final evaluation.
    pub eval: Option<EvalMetrics>,
    /// The model directory.
    pub model_path: String,
    /// FNV-1a of the final parameters (equal on every worker).
    pub parameter_checksum: String,
    /// Peak resident memory of the process, bytes (Linux; 0 elsewhere).
    pub peak_rss_bytes: u64,
    /// Milliseconds worker 0 waited per step for the other workers' gradients (the
    /// synchronisation cost; 0 on one worker).
    #[serde(default)]
    pub sync_ms_per_step: f64,
    /// The global step of the checkpoint this run resumed from.
    #[serde(default)]
    pub resumed_from_step: Option<u64>,
    /// Checkpoints written by this run.
    #[serde(default)]
    pub checkpoints: CheckpointStats,
    /// The `[[branch]]` train-steps, trained on the same encoded rows after the main one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub branches: Vec<BranchSummary>,
    /// A `[tune]` run's trials; the summary's model, steps and evaluation are the best trial's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tune: Option<super::TuneSummary>,
    /// Per-operator totals.
    pub operators: Vec<OperatorSummary>,
}

/// What one `[[branch]]` trained.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BranchSummary {
    /// The branch's name.
    pub name: String,
    /// Its model directory.
    pub model_path: String,
    /// Optimiser steps applied.
    pub steps: u64,
    /// Seconds in its training loop.
    pub train_s: f64,
    /// Mean loss of its last epoch.
    pub final_loss: f64,
    /// Its final evaluation.
    pub eval: Option<EvalMetrics>,
    /// FNV-1a of its final parameters (equal on every worker).
    pub parameter_checksum: String,
}

/// The consecutive phases of a batch run, in seconds; they add up to `wall_s`. Each ends where
/// the next begins, measured on the process's first worker:
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Phases {
    /// From the clock's start until the workers start: reading and checking the pipeline (the
    /// CLI also generates a `generate` dataset that does not exist yet), listing the datasets and
    /// reading their Parquet footers, planning the SQL, creating the run directory, checking the
    /// outputs and loading the checkpoint to resume from.
    pub plan_s: f64,
    /// Reading this worker's row groups through the preprocess SQL and the split, updating the
    /// preprocessing statistics on the way; ends when every source of the worker is exhausted.
    pub ingest_s: f64,
    /// Merging the preprocessing statistics of all workers into one fit (includes waiting for
    /// the slowest worker's ingest).
    pub fit_s: f64,
    /// Encoding the training and evaluation rows with the fitted preprocessing.
    pub encode_s: f64,
    /// Building the model replica, the training loop with its gradient exchange and the
    /// checkpoints it writes; evaluation excluded.
    pub train_s: f64,
    /// Evaluations during and after training (every epoch with `evaluate.every_epoch`, else the
    /// last).
    pub evaluate_s: f64,
    /// From the end of training until summary.json is written: predictions, the model bundle,
    /// the cluster totals, dead letters, metrics.prom, the evaluation output, `_SUCCESS`, the
    /// curves.
    pub write_s: f64,
}

impl Phases {
    /// The sum of the phases (equal to `wall_s` up to rounding).
    pub fn total_s(&self) -> f64 {
        self.plan_s
            + self.ingest_s
            + self.fit_s
            + self.encode_s
            + self.train_s
            + self.evaluate_s
            + self.write_s
    }
}

fn one() -> usize {
    1
}

/// What checkpointing cost a run.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct CheckpointStats {
    /// Where they went.
    pub location: Option<String>,
    /// Checkpoints written.
    pub written: u64,
    /// Global step of the last one.
    pub last_step: Option<u64>,
    /// Size of the last one, bytes.
    pub last_bytes: u64,
    /// Mean milliseconds to write one (encode, write, publish, prune).
    pub mean_ms: f64,
}

impl CheckpointStats {
    /// Counts one written checkpoint.
    pub fn record(&mut self, step: u64, bytes: u64, ms: f64) {
        self.mean_ms = (self.mean_ms * self.written as f64 + ms) / (self.written + 1) as f64;
        self.written += 1;
        self.last_step = Some(step);
        self.last_bytes = bytes;
    }
}

/// Peak resident set size of this process (VmHWM), in bytes; 0 where unknown.
pub fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}
