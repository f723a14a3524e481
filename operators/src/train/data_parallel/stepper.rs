//! One worker's side of a training run, step by step: the local gradient, the round that sums
//! it, the update, the checkpoints and evaluations due between steps, and the accounting of each
//! step's loss (a GPU's arrives with the next step).

use std::time::Instant;

use millrace_engine::{Rounds, WorkerContext, sum_in_worker_order};
use millrace_ml::Replica;
use millrace_ml::metrics::EvalMetrics;

use super::TrainEvent;
use crate::evaluate::Evaluator;
use crate::spec::TrainSpec;
use crate::train::buffer::BatchBuffer;
use crate::train::message::{JobMsg, exchange};
use crate::train::order::slice_start;
use crate::train::position::{TrainControl, TrainPosition};
use crate::train::rows::EpochRows;
use crate::train::step::apply_summed_gradient;
use crate::{Error, Result};

/// One global step on this worker: step `step` (0-based, in its epoch) of `epoch`, over the
/// `rows` rows gathered in the stepper's buffer.
#[derive(Clone, Copy)]
struct StepRows {
    epoch: usize,
    step: u64,
    rows: usize,
}

/// A training run's state across its steps.
pub(super) struct Stepper<'t> {
    pub(super) trainer: &'t mut Replica,
    pub(super) spec: &'t TrainSpec,
    pub(super) position: TrainPosition,
    rounds: &'t Rounds<JobMsg>,
    num_params: usize,
    buf: BatchBuffer,
    /// One worker on a device that steps asynchronously: no exchange, losses a step late.
    fused: bool,
    in_flight: Option<InFlight>,
    /// Seconds this worker waited for the gradient sums of the others.
    pub(super) sync_s: f64,
    last_checkpoint: Instant,
}

/// The steps of one epoch still to run: its row order and where to start.
pub(super) struct EpochSteps<'a> {
    pub(super) epoch: usize,
    /// This worker's rows in the epoch's order, from the first step's on.
    pub(super) order: EpochRows<'a>,
    pub(super) first_step: u64,
    pub(super) steps_per_epoch: u64,
    pub(super) started: Instant,
}

impl<'t> Stepper<'t> {
    /// A run of `trainer` from `position`, exchanging through `rounds`.
    pub(super) fn new(
        rounds: &'t Rounds<JobMsg>,
        ctx: &WorkerContext,
        trainer: &'t mut Replica,
        spec: &'t TrainSpec,
        position: TrainPosition,
    ) -> Self {
        Stepper {
            rounds,
            num_params: trainer.num_params(),
            // A GPU training alone steps asynchronously: each step's loss arrives with the next one.
            fused: ctx.peers == 1 && trainer.steps_lag(),
            trainer,
            spec,
            position,
            buf: BatchBuffer::default(),
            in_flight: None,
            sync_s: 0.0,
            last_checkpoint: Instant::now(),
        }
    }

    /// The epoch's steps from `first_step` on, each over the rows of the order's next slice,
    /// with the checkpoints due between them (none after the run's last step). True when it
    /// stopped before the epoch's end, at `control.stop_after_step`.
    pub(super) async fn run_epoch(
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
    pub(super) async fn evaluate(
        &mut self,
        evaluator: &mut Evaluator,
        eval_s: &mut f64,
        on_event: &mut dyn FnMut(TrainEvent),
    ) -> Result<Option<EvalMetrics>> {
        let evaluating = Instant::now();
        let eval = match evaluator.shard(self.trainer)? {
            None => None,
            Some(shard) => {
                let shards = exchange(self.rounds, JobMsg::Eval(shard), |m| match m {
                    JobMsg::Eval(s) => Some(s),
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
            let parts = exchange(self.rounds, JobMsg::Step(grads), |m| match m {
                JobMsg::Step(g) => Some(g),
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
    pub(super) fn settle(&mut self, on_event: &mut dyn FnMut(TrainEvent)) -> Result<()> {
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
pub(super) struct InFlight {
    /// 0-based epoch of the step.
    pub(super) epoch: usize,
    /// 1-based global step.
    pub(super) step: u64,
    /// Rows in the step's global batch.
    pub(super) rows: u64,
    /// The step's learning rate.
    pub(super) lr: f64,
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
pub(super) fn settle(
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
