//! Where a data-parallel training run is, and how it is checkpointed and resumed.
//!
//! Global batches are chosen by a seeded hash of each row's content (see
//! [`train_data_parallel`](super::train_data_parallel)), so the rows of step `k` of epoch `e` are
//! the same whichever worker holds them. The position of the training in its data is therefore
//! `(epoch, steps done in it)`, and a run resumed from it on any number of workers or processes
//! trains every remaining row exactly once, in the same batches.

use millrace_ml::Replica;
use serde::{Deserialize, Serialize};

use crate::Result;

/// The identity of the training rows over all workers: how many, and an order-free hash of their
/// encoded content (a wrapping sum of row hashes). A resumed run checks it against the
/// checkpoint's, so changed data is an error rather than rows trained twice or never.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataFingerprint {
    /// Training rows over all workers.
    pub rows: u64,
    /// Wrapping sum of every row's content hash.
    pub hash: u64,
}

/// An evaluation that already ran, kept so a resumed run reports the whole history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalRecord {
    /// 0-based epoch after which it ran.
    pub epoch: usize,
    /// Global step at which it ran.
    pub step: u64,
    /// The metrics as JSON (`EvalMetrics` is untagged, which bincode cannot read back).
    pub metrics_json: String,
}

/// How far a training run got: enough, with the parameters and the optimiser state, to continue
/// exactly where it was.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainPosition {
    /// The epoch in progress (0-based).
    pub epoch: usize,
    /// Steps of that epoch already applied (`steps_per_epoch`: all of them; its evaluation has
    /// not run yet).
    pub step_in_epoch: u64,
    /// Steps per epoch.
    pub steps_per_epoch: u64,
    /// Optimiser steps applied in the whole run (global step).
    pub global_step: u64,
    /// Sum of the per-row losses of the epoch in progress so far.
    pub epoch_loss: f64,
    /// Mean loss of the last finished epoch.
    pub last_epoch_loss: f64,
    /// Row visits trained so far, over all workers.
    pub rows_trained: u64,
    /// Seconds spent in the training loop so far.
    pub train_s: f64,
    /// The seed the epoch orders derive from (`seed + epoch` when shuffling): the only random
    /// state the loop has.
    pub seed: u64,
    /// The training data this position is in.
    pub data: DataFingerprint,
    /// Evaluations so far.
    pub evals: Vec<EvalRecord>,
}

impl TrainPosition {
    /// The start of a run of `steps_per_epoch` steps an epoch, with `seed`, on `data`.
    pub fn start(steps_per_epoch: u64, seed: u64, data: DataFingerprint) -> Self {
        TrainPosition {
            epoch: 0,
            step_in_epoch: 0,
            steps_per_epoch,
            global_step: 0,
            epoch_loss: 0.0,
            last_epoch_loss: f64::NAN,
            rows_trained: 0,
            train_s: 0.0,
            seed,
            data,
            evals: Vec::new(),
        }
    }

    /// The start of the epoch after the one this position finished (a run's final position):
    /// resumed from it, a run with more epochs trains on as if it had never stopped.
    pub fn next_epoch(mut self) -> Self {
        self.epoch += 1;
        self.step_in_epoch = 0;
        self.epoch_loss = 0.0;
        self
    }

    /// The evaluations so far as `metrics.jsonl` lines: `{"kind": "eval", "epoch", "step"}` and
    /// the metrics.
    pub fn eval_lines(&self) -> Vec<serde_json::Value> {
        self.evals
            .iter()
            .map(|e| {
                let mut line =
                    serde_json::json!({"kind": "eval", "epoch": e.epoch, "step": e.step});
                if let (Some(obj), Ok(serde_json::Value::Object(m))) =
                    (line.as_object_mut(), serde_json::from_str(&e.metrics_json))
                {
                    obj.extend(m);
                }
                line
            })
            .collect()
    }

    /// Records an evaluation after `epoch`, at the current global step.
    pub fn record_eval(
        &mut self,
        epoch: usize,
        metrics: &millrace_ml::metrics::EvalMetrics,
    ) -> Result<()> {
        self.evals.push(EvalRecord {
            epoch,
            step: self.global_step,
            metrics_json: serde_json::to_string(metrics)
                .map_err(|e| crate::Error::Internal(e.to_string()))?,
        });
        Ok(())
    }
}

/// Called at a checkpoint with the position and the trainer (parameters, optimiser state).
pub type CheckpointHook<'a> = &'a mut dyn FnMut(&TrainPosition, &Replica) -> Result<()>;

/// Hears every [`TrainEvent`](super::TrainEvent) on this worker.
pub type EventHook<'a> = &'a mut dyn FnMut(super::TrainEvent);

/// Evaluating, listening, checkpointing and resuming for
/// [`train_data_parallel`](super::train_data_parallel).
pub struct TrainControl<'a> {
    /// Evaluate after every epoch (else only after the last).
    pub evaluate_every_epoch: bool,
    /// Hears every step, evaluation and checkpoint (usually only worker 0 logs them).
    pub on_event: Option<EventHook<'a>>,
    /// Continue from this position (the trainer's parameters and optimiser state must already
    /// be restored from the same checkpoint).
    pub resume: Option<TrainPosition>,
    /// Checkpoint every this many global steps (0: not by steps).
    pub every_steps: u64,
    /// Checkpoint when this many seconds passed since the last one (0: not by time); worker 0's
    /// clock decides and the decision travels with the step's gradient sum.
    pub every_s: f64,
    /// Called on every worker at each checkpoint, after the step's update (every replica is
    /// identical; usually only worker 0 writes).
    pub on_checkpoint: Option<CheckpointHook<'a>>,
    /// Stop once this global step is applied (and evaluate there), before the run's end; the
    /// report's position is where to continue from (a tune trial's next report).
    pub stop_after_step: Option<u64>,
}

impl Default for TrainControl<'_> {
    fn default() -> Self {
        TrainControl {
            evaluate_every_epoch: false,
            on_event: None,
            resume: None,
            every_steps: 0,
            every_s: 0.0,
            on_checkpoint: None,
            stop_after_step: None,
        }
    }
}
