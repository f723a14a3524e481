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
use millrace_engine::{Rounds, WorkerContext, run_rounds, sum_in_worker_order};
use millrace_ml::Replica;
use millrace_ml::metrics::EvalMetrics;
use serde::{Deserialize, Serialize};

use super::buffer::BatchBuffer;
use super::order::{checksum, slice_start};
use super::position::{DataFingerprint, TrainControl, TrainPosition};
use super::rows::{EpochRows, TrainRows};
use super::step::apply_summed_gradient;
use crate::evaluate::{Evaluator, Shard};
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

/// What a worker sends in a round of the training loop.
#[derive(Clone, Debug, Serialize, Deserialize)]
enum TrainMsg {
    /// A step: [gradient of the summed loss..., loss sum, rows, checkpoint?].
    Step(Vec<f32>),
    /// An evaluation: this worker's predictions and labels.
    Eval(Shard),
    /// The end: the checksum of this replica's parameters.
    Checksum(u64),
}

impl TrainMsg {
    fn kind(&self) -> &'static str {
        match self {
            TrainMsg::Step(_) => "a step's gradient",
            TrainMsg::Eval(_) => "an evaluation",
            TrainMsg::Checksum(_) => "a checksum",
        }
    }
}

/// Every worker's message of the next round, each taken apart by `take` (None: another kind of
/// message, which means the workers' loops went apart).
async fn exchange<T>(
    rounds: &Rounds<TrainMsg>,
    message: TrainMsg,
    take: impl Fn(TrainMsg) -> Option<T>,
) -> Result<Vec<T>> {
    let expected = message.kind();
    let all = rounds.all_gather(message).await?;
    all.into_iter()
        .enumerate()
        .map(|(w, m)| {
            let kind = m.kind();
            take(m).ok_or_else(|| {
                Error::Internal(format!(
                    "training round {}: worker {w} sent {kind} where {expected} was due",
                    rounds.rounds()
                ))
            })
        })
        .collect()
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
    run_rounds(worker, ctx, "train/step-loop", |rounds| {
        train_loop(rounds, ctx, run, control)
    })?
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
    rounds: Rounds<TrainMsg>,
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
    let mut run = Stepper {
        rounds: &rounds,
        num_params: setup.trainer.num_params(),
        // A GPU training alone steps asynchronously: each step's loss arrives with the next one.
        fused: ctx.peers == 1 && setup.trainer.steps_lag(),
        trainer: setup.trainer,
        spec,
        position: setup.position,
        buf: BatchBuffer::default(),
        in_flight: None,
        sync_s: 0.0,
        last_checkpoint: Instant::now(),
    };
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
    let parameter_checksum = check_replicas(&rounds, run.trainer).await?;
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

/// One global step on this worker: step `step` (0-based, in its epoch) of `epoch`, over the
/// `rows` rows gathered in the stepper's buffer.
#[derive(Clone, Copy)]
struct StepRows {
    epoch: usize,
    step: u64,
    rows: usize,
}

/// A training run's state across its steps.
struct Stepper<'t> {
    trainer: &'t mut Replica,
    spec: &'t TrainSpec,
    position: TrainPosition,
    rounds: &'t Rounds<TrainMsg>,
    num_params: usize,
    buf: BatchBuffer,
    /// One worker on a device that steps asynchronously: no exchange, losses a step late.
    fused: bool,
    in_flight: Option<InFlight>,
    /// Seconds this worker waited for the gradient sums of the others.
    sync_s: f64,
    last_checkpoint: Instant,
}

/// The checksum of this replica's parameters, checked equal on every worker: the replicas of a
/// data-parallel run must not diverge.
async fn check_replicas(rounds: &Rounds<TrainMsg>, trainer: &Replica) -> Result<u64> {
    let parameter_checksum = checksum(&trainer.try_parameters()?);
    let all = exchange(
        rounds,
        TrainMsg::Checksum(parameter_checksum),
        |m| match m {
            TrainMsg::Checksum(c) => Some(c),
            _ => None,
        },
    )
    .await?;
    if all.iter().any(|c| *c != parameter_checksum) {
        return Err(Error::Internal(format!(
            "model replicas diverged: parameter checksums per worker {all:?}"
        )));
    }
    Ok(parameter_checksum)
}

/// The steps of one epoch still to run: its row order and where to start.
struct EpochSteps<'a> {
    epoch: usize,
    /// This worker's rows in the epoch's order, from the first step's on.
    order: EpochRows<'a>,
    first_step: u64,
    steps_per_epoch: u64,
    started: Instant,
}

impl Stepper<'_> {
    /// The epoch's steps from `first_step` on, each over the rows of the order's next slice,
    /// with the checkpoints due between them (none after the run's last step). True when it
    /// stopped before the epoch's end, at `control.stop_after_step`.
    async fn run_epoch(
        &mut self,
        ctx: &WorkerContext,
        steps: EpochSteps<'_>,
        control: &mut TrainControl<'_>,
        on_event: &mut dyn FnMut(TrainEvent),
    ) -> Result<bool> {
        let EpochSteps {
            epoch,
            mut order,
            first_step,
            steps_per_epoch,
            started,
        } = steps;
        for step in first_step..steps_per_epoch {
            let end = slice_start(step + 1, steps_per_epoch);
            let rows = StepRows {
                epoch,
                step,
                rows: order.next_step(end, &mut self.buf)?,
            };
            let timed = self.step(ctx, rows, control, on_event).await?;
            if step + 1 < steps_per_epoch
                && control.stop_after_step == Some(self.position.global_step)
            {
                return Ok(true);
            }
            let by_steps = control.every_steps > 0
                && self
                    .position
                    .global_step
                    .is_multiple_of(control.every_steps);
            let last = epoch + 1 == self.spec.epochs && step + 1 == steps_per_epoch;
            if (by_steps || timed) && !last {
                self.checkpoint(started, control, on_event)?;
            }
        }
        Ok(false)
    }

    /// Evaluates the replica now, records it in the position and reports it.
    async fn evaluate(
        &mut self,
        evaluator: &mut Evaluator,
        eval_s: &mut f64,
        on_event: &mut dyn FnMut(TrainEvent),
    ) -> Result<Option<EvalMetrics>> {
        let evaluating = Instant::now();
        let eval = match evaluator.shard(self.trainer)? {
            None => None,
            Some(shard) => {
                let shards = exchange(self.rounds, TrainMsg::Eval(shard), |m| match m {
                    TrainMsg::Eval(s) => Some(s),
                    _ => None,
                })
                .await?;
                evaluator.metrics(shards)
            }
        };
        *eval_s += evaluating.elapsed().as_secs_f64();
        if let Some(metrics) = &eval {
            self.position.record_eval(self.position.epoch, metrics)?;
            on_event(TrainEvent::Eval {
                epoch: self.position.epoch,
                step: self.position.global_step,
                metrics: metrics.clone(),
            });
        }
        Ok(eval)
    }

    /// One global step over this worker's `rows`. True when worker 0's clock says a checkpoint
    /// is due.
    async fn step(
        &mut self,
        ctx: &WorkerContext,
        rows: StepRows,
        control: &TrainControl<'_>,
        on_event: &mut dyn FnMut(TrainEvent),
    ) -> Result<bool> {
        if self.fused {
            self.position.global_step += 1;
            self.position.step_in_epoch = rows.step + 1;
            self.fused_step(rows.epoch, rows.rows, on_event)?;
            return Ok(self.checkpoint_due(control));
        }
        self.summed_step(ctx, rows, control, on_event).await
    }

    /// The learning rate of global step `step` (0-based): `train.lr_schedule` over the run's
    /// steps, so that a resumed run and any number of workers use the same rates.
    fn lr_of(&self, step: u64) -> f64 {
        let total = self.position.steps_per_epoch * self.spec.epochs as u64;
        self.spec.lr_schedule.lr_at(self.spec.lr, step, total)
    }

    /// Whether `control.every_s` passed since the last checkpoint, on this worker's clock.
    fn checkpoint_due(&self, control: &TrainControl<'_>) -> bool {
        control.every_s > 0.0 && self.last_checkpoint.elapsed().as_secs_f64() >= control.every_s
    }

    /// A step on one asynchronous device: launched now, accounted when the next one returns
    /// its loss.
    fn fused_step(
        &mut self,
        epoch: usize,
        rows: usize,
        on_event: &mut dyn FnMut(TrainEvent),
    ) -> Result<()> {
        if rows == 0 {
            return Ok(());
        }
        // `global_step` already counts this step.
        let lr = self.lr_of(self.position.global_step - 1);
        let (xb, y) = self.buf.view();
        let scale = self.spec.reduction.scale(rows as u64);
        let previous = self.trainer.step(xb, y, rows, scale, lr)?;
        settle(
            &mut self.position,
            self.in_flight.take(),
            previous,
            on_event,
        )?;
        self.in_flight = Some(InFlight {
            epoch,
            step: self.position.global_step,
            rows: rows as u64,
            lr,
        });
        Ok(())
    }

    /// A step in lock-step with the other workers: this worker's gradient, summed over all of
    /// them with the loss, the rows and worker 0's checkpoint decision (its clock decides
    /// time-based checkpoints, for everyone), then the same update everywhere. Returns that
    /// decision.
    async fn summed_step(
        &mut self,
        ctx: &WorkerContext,
        StepRows { epoch, step, rows }: StepRows,
        control: &TrainControl<'_>,
        on_event: &mut dyn FnMut(TrainEvent),
    ) -> Result<bool> {
        // [gradient of the summed loss..., loss sum, rows, checkpoint?], summed over workers.
        let mut grads = if rows == 0 {
            vec![0f32; self.num_params + 2]
        } else {
            let (xb, y) = self.buf.view();
            let (loss_sum, mut g) = self.trainer.gradients(xb, y, rows, 1.0)?;
            g.push(loss_sum as f32);
            g.push(rows as f32);
            g
        };
        let due = ctx.index == 0 && self.checkpoint_due(control);
        grads.push(if due { 1.0 } else { 0.0 });
        if ctx.peers > 1 {
            let waiting = Instant::now();
            let parts = exchange(self.rounds, TrainMsg::Step(grads), |m| match m {
                TrainMsg::Step(g) => Some(g),
                _ => None,
            })
            .await?;
            grads = sum_in_worker_order(&"the training step's gradient sum", &parts)?;
            self.sync_s += waiting.elapsed().as_secs_f64();
        }
        let timed = grads.pop().unwrap_or(0.0) > 0.0;
        let global_rows = grads.pop().unwrap_or(0.0) as u64;
        let loss_sum = f64::from(grads.pop().unwrap_or(f32::NAN));
        let lr = self.lr_of(self.position.global_step);
        self.position.global_step += 1;
        self.position.step_in_epoch = step + 1;
        let reduction = self.spec.reduction;
        if apply_summed_gradient(self.trainer, &mut grads, global_rows, reduction, lr)? {
            let done = InFlight {
                epoch,
                step: self.position.global_step,
                rows: global_rows,
                lr,
            };
            account(&mut self.position, done, loss_sum, on_event);
        }
        Ok(timed)
    }

    /// Accounts the step still in flight on the device, if any.
    fn settle(&mut self, on_event: &mut dyn FnMut(TrainEvent)) -> Result<()> {
        let previous = self.trainer.flush()?;
        settle(
            &mut self.position,
            self.in_flight.take(),
            previous,
            on_event,
        )
    }

    /// Calls the checkpoint hook with the position after the steps whose results are in. The
    /// hook's time is not training time: the epoch (which started at `epoch_started`) does not
    /// count it.
    fn checkpoint(
        &mut self,
        epoch_started: Instant,
        control: &mut TrainControl<'_>,
        on_event: &mut dyn FnMut(TrainEvent),
    ) -> Result<()> {
        let Some(hook) = control.on_checkpoint.as_mut() else {
            return Ok(());
        };
        self.settle(on_event)?;
        self.position.train_s += epoch_started.elapsed().as_secs_f64();
        on_event(TrainEvent::Checkpoint {
            step: self.position.global_step,
        });
        hook(&self.position, self.trainer)?;
        self.position.train_s -= epoch_started.elapsed().as_secs_f64();
        self.last_checkpoint = Instant::now();
        Ok(())
    }
}

/// A step whose loss is not in yet (a GPU's step runs while the next batch is assembled).
#[derive(Clone, Copy, Debug)]
struct InFlight {
    /// 0-based epoch of the step.
    epoch: usize,
    /// 1-based global step.
    step: u64,
    /// Rows in the step's global batch.
    rows: u64,
    /// The step's learning rate.
    lr: f64,
}

/// Counts a finished step's loss and rows in `position` and reports it.
fn account(
    position: &mut TrainPosition,
    done: InFlight,
    loss_sum: f64,
    on_event: &mut dyn FnMut(TrainEvent),
) {
    position.epoch_loss += loss_sum;
    position.rows_trained += done.rows;
    on_event(TrainEvent::Step {
        epoch: done.epoch,
        step: done.step,
        loss: loss_sum / done.rows as f64,
        rows: done.rows,
        lr: done.lr,
    });
}

/// Accounts the step that was in flight with the loss sum the replica just handed back.
fn settle(
    position: &mut TrainPosition,
    in_flight: Option<InFlight>,
    loss_sum: Option<f64>,
    on_event: &mut dyn FnMut(TrainEvent),
) -> Result<()> {
    match (in_flight, loss_sum) {
        (Some(done), Some(loss_sum)) => {
            account(position, done, loss_sum, on_event);
            Ok(())
        }
        (None, None) => Ok(()),
        (Some(done), None) => Err(Error::Internal(format!(
            "the loss of step {} never came back from the device",
            done.step
        ))),
        (None, Some(_)) => Err(Error::Internal(
            "the device returned the loss of a step that was not in flight".into(),
        )),
    }
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
