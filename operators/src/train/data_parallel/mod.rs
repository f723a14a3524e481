//! Synchronous data-parallel SGD. Every worker computes the gradient of its share of each global
//! batch; the gradients (and the loss) are summed across workers in worker order; every worker
//! applies the same summed gradient, so the replicas stay bit-identical (checked at the end).
//!
//! The run is the step node of a loop dataflow ([`run_rounds`]): each step is one round of the
//! loop that carries every worker's gradient, an evaluation is one round that carries the
//! predictions, and the end is one round that carries the parameter checksums.
//!
//! The global batches do not depend on how rows are spread over workers: each epoch orders rows by a
//! seeded hash of their content and step `s` takes the rows whose hash is in the `s`-th slice of the
//! hash space. A run on 1 worker and on N workers trains on the same batches, in the same order;
//! the models differ only by the rounding of the cross-worker gradient sum.

use std::time::Instant;

use millrace_engine::timely::worker::Worker;
use millrace_engine::{Rounds, WorkerContext, run_rounds};
use millrace_ml::Replica;
use millrace_ml::metrics::EvalMetrics;

mod stepper;

use self::stepper::{EpochSteps, Stepper};
use super::message::{JobMsg, exchange};
use super::order::{checksum, slice_start};
use super::position::{DataFingerprint, TrainControl, TrainPosition};
use super::rows::TrainRows;
use crate::evaluate::Evaluator;
use crate::spec::TrainSpec;
use crate::{Error, Result};

/// Something that happened during training (reported on every worker; usually only worker 0 logs).
#[derive(Clone, Debug)]
pub enum TrainEvent {
    /// Training is about to start.
    Start {
        /// Optimiser steps in the whole run.
        total_steps: u64,
        /// Training rows over all workers.
        rows: u64,
    },
    /// One optimiser step was applied.
    Step {
        /// 0-based epoch.
        epoch: usize,
        /// 1-based global step.
        step: u64,
        /// Mean loss of the step's global batch.
        loss: f64,
        /// Rows in the step's global batch.
        rows: u64,
        /// The learning rate the step applied (`train.lr_schedule`'s at this step).
        lr: f64,
    },
    /// A checkpoint is about to be taken after this global step (logs should be flushed).
    Checkpoint {
        /// Global step.
        step: u64,
    },
    /// An evaluation finished.
    Eval {
        /// 0-based epoch after which it ran.
        epoch: usize,
        /// Global step at which it ran.
        step: u64,
        /// The metrics.
        metrics: EvalMetrics,
    },
}

/// What a finished training run reports.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct TrainReport {
    /// Training rows over all workers.
    pub rows: u64,
    /// Row visits (rows × epochs) over all workers.
    pub rows_trained: u64,
    /// Optimiser steps applied.
    pub steps: u64,
    /// Mean loss of the last epoch.
    pub last_epoch_loss: f64,
    /// Seconds in the training loop (evaluation excluded).
    pub train_s: f64,
    /// The final evaluation, if there were eval rows.
    pub eval: Option<EvalMetrics>,
    /// FNV-1a of the final parameters (equal on every worker).
    pub parameter_checksum: u64,
    /// Seconds this worker waited for the gradient sums of other workers (0 alone).
    pub sync_s: f64,
    /// Seconds this run spent in evaluations (all of them, this run only).
    pub eval_s: f64,
    /// Where training stopped: [`TrainPosition::next_epoch`] of it, as
    /// [`TrainControl::resume`], trains on from there (more epochs of a tune trial).
    pub position: TrainPosition,
}

/// Trains `trainer` on this worker's `train` rows in lock-step with every other worker.
///
/// Each step applies the gradient of the global batch's summed loss, divided by its number of rows
/// when `spec.reduction` is `mean`. Every worker must call this with the same `spec` and
/// `control` settings; `control` says when to evaluate, hears every step and evaluation, resumes
/// from a position and calls its checkpoint hook on every worker at the same steps.
pub fn train_data_parallel(
    worker: &mut Worker,
    ctx: &WorkerContext,
    trainer: &mut Replica,
    rows: &TrainRows<'_>,
    evaluator: &mut Evaluator,
    spec: &TrainSpec,
    control: &mut TrainControl<'_>,
) -> Result<TrainReport> {
    run_rounds(worker, ctx, "train/step-loop", |rounds| async move {
        train_in_loop(&rounds, ctx, trainer, rows, evaluator, spec, control).await
    })?
}

/// [`train_data_parallel`] as part of a step loop that does more than this run (the batch job's):
/// its steps, evaluations and checksums are the loop's next rounds.
pub(crate) async fn train_in_loop(
    rounds: &Rounds<JobMsg>,
    ctx: &WorkerContext,
    trainer: &mut Replica,
    rows: &TrainRows<'_>,
    evaluator: &mut Evaluator,
    spec: &TrainSpec,
    control: &mut TrainControl<'_>,
) -> Result<TrainReport> {
    let data = rows.data;
    let total = data.rows;
    if total == 0 {
        return Err(Error::config(
            "train",
            "no training rows are left after preprocessing (check the SQL WHERE, the split and the dead letters)",
        ));
    }
    let steps_per_epoch = total.div_ceil(spec.batch_size as u64).max(1);
    let position = match control.resume.take() {
        Some(p) => check_resumable(&p, data, steps_per_epoch, spec).map(|()| p)?,
        None => TrainPosition::start(steps_per_epoch, spec.seed, data),
    };
    let run = RunSetup {
        trainer,
        rows,
        evaluator,
        spec,
        position,
        steps_per_epoch,
    };
    train_loop(rounds, ctx, run, control).await
}

/// What a training run starts from.
struct RunSetup<'r, 'd> {
    trainer: &'r mut Replica,
    rows: &'r TrainRows<'d>,
    evaluator: &'r mut Evaluator,
    spec: &'r TrainSpec,
    position: TrainPosition,
    steps_per_epoch: u64,
}

/// The training run: the body of the step node, one round per exchange.
async fn train_loop(
    rounds: &Rounds<JobMsg>,
    ctx: &WorkerContext,
    setup: RunSetup<'_, '_>,
    control: &mut TrainControl<'_>,
) -> Result<TrainReport> {
    let (rows, evaluator, spec) = (setup.rows, setup.evaluator, setup.spec);
    let (total, steps_per_epoch) = (rows.data.rows, setup.steps_per_epoch);
    let mut listener = control.on_event.take();
    let on_event: &mut dyn FnMut(TrainEvent) = &mut |event| {
        if let Some(listen) = listener.as_mut() {
            listen(event);
        }
    };
    on_event(TrainEvent::Start {
        total_steps: steps_per_epoch * spec.epochs as u64,
        rows: total,
    });
    let mut run = Stepper::new(rounds, ctx, setup.trainer, spec, setup.position);
    let mut eval = run
        .position
        .evals
        .last()
        .and_then(|e| serde_json::from_str(&e.metrics_json).ok());
    let mut eval_s = 0.0;

    for epoch in run.position.epoch..spec.epochs {
        let started = Instant::now();
        let epoch_seed = if spec.shuffle {
            spec.seed.wrapping_add(epoch as u64)
        } else {
            spec.seed
        };
        // A resumed epoch skips the rows of the steps it already applied.
        let first_step = if epoch == run.position.epoch {
            run.position.step_in_epoch
        } else {
            run.position.epoch_loss = 0.0;
            0
        };
        run.position.epoch = epoch;
        let order = rows.epoch(epoch_seed, slice_start(first_step, steps_per_epoch))?;
        let epoch_steps = EpochSteps {
            epoch,
            order,
            first_step,
            steps_per_epoch,
            started,
        };
        let stopped = run.run_epoch(ctx, epoch_steps, control, on_event).await?;
        // The epoch's last step counts in its loss, its time and its evaluation.
        run.settle(on_event)?;
        run.position.train_s += started.elapsed().as_secs_f64();
        if stopped {
            // Mid-epoch, at `stop_after_step`: evaluated there, continued from here.
            eval = run.evaluate(evaluator, &mut eval_s, on_event).await?;
            break;
        }
        run.position.last_epoch_loss = run.position.epoch_loss / total as f64;
        let last = epoch + 1 == spec.epochs;
        let stop_here = !last && control.stop_after_step == Some(run.position.global_step);
        if control.evaluate_every_epoch || last || stop_here {
            eval = run.evaluate(evaluator, &mut eval_s, on_event).await?;
        }
        run.position.step_in_epoch = 0;
        if stop_here {
            run.position = run.position.clone().next_epoch();
            break;
        }
    }

    run.settle(on_event)?;
    let parameter_checksum = check_replicas(rounds, run.trainer).await?;
    Ok(TrainReport {
        rows: total,
        rows_trained: run.position.rows_trained,
        steps: run.position.global_step,
        last_epoch_loss: run.position.last_epoch_loss,
        train_s: run.position.train_s,
        sync_s: run.sync_s,
        eval_s,
        eval,
        parameter_checksum,
        position: run.position,
    })
}

/// The checksum of this replica's parameters, checked equal on every worker: the replicas of a
/// data-parallel run must not diverge.
async fn check_replicas(rounds: &Rounds<JobMsg>, trainer: &Replica) -> Result<u64> {
    let parameter_checksum = checksum(&trainer.try_parameters()?);
    let all = exchange(rounds, JobMsg::Checksum(parameter_checksum), |m| match m {
        JobMsg::Checksum(c) => Some(c),
        _ => None,
    })
    .await?;
    if all.iter().any(|c| *c != parameter_checksum) {
        return Err(Error::Internal(format!(
            "model replicas diverged: parameter checksums per worker {all:?}"
        )));
    }
    Ok(parameter_checksum)
}

/// Whether a run can continue from `position`: the same training rows, batch size and seed.
fn check_resumable(
    position: &TrainPosition,
    data: DataFingerprint,
    steps_per_epoch: u64,
    spec: &TrainSpec,
) -> Result<()> {
    if position.data != data {
        return Err(Error::Checkpoint(format!(
            "the training data differ from the checkpoint's ({} rows with content hash {:016x} then, {} rows with {:016x} now): resume only on the data the run started with, or start afresh without --resume",
            position.data.rows, position.data.hash, data.rows, data.hash
        )));
    }
    if position.steps_per_epoch != steps_per_epoch || position.seed != spec.seed {
        return Err(Error::Checkpoint(format!(
            "the checkpoint was taken with {} steps per epoch and seed {}, this run has {steps_per_epoch} and {}: keep train.batch_size and train.seed when resuming",
            position.steps_per_epoch, position.seed, spec.seed
        )));
    }
    if position.epoch >= spec.epochs {
        return Err(Error::Checkpoint(format!(
            "the checkpoint is in epoch {} but the run has only {} epochs",
            position.epoch + 1,
            spec.epochs
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
