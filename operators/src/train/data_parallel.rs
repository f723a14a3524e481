//! Synchronous data-parallel SGD. Every worker computes the gradient of its share of each global
//! batch; the gradients (and the loss) are summed across workers through a timely
//! [`Collective`](millrace_engine::Collective) in worker order; every worker applies the same summed
//! gradient, so the replicas stay bit-identical (checked at the end).

use std::time::Instant;

use millrace_engine::timely::worker::Worker;
use millrace_engine::{Collective, WorkerContext};
use millrace_ml::burn::tensor::backend::AutodiffBackend;
use millrace_ml::metrics::EvalMetrics;
use millrace_ml::preprocess::{Features, Targets};
use millrace_ml::trainer::{TargetsRef, Trainer};

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
#[derive(Clone, Debug)]
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
}

fn slice_bounds(step: u64, steps: u64, n: u64) -> (usize, usize) {
    let lo = (u128::from(step) * u128::from(n) / u128::from(steps)) as usize;
    let hi = (u128::from(step + 1) * u128::from(n) / u128::from(steps)) as usize;
    (lo, hi)
}

/// A deterministic permutation of `0..n` (Fisher–Yates with splitmix64).
fn permutation(n: usize, seed: u64) -> Vec<u32> {
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let mut p: Vec<u32> = (0..n as u32).collect();
    for i in (1..n).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        p.swap(i, j);
    }
    p
}

fn checksum(values: &[f32]) -> u64 {
    let mut bytes = Vec::with_capacity(values.len() * 4);
    for v in values {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    millrace_engine::stable_hash(&bytes)
}

/// Trains `trainer` on this worker's `train` rows in lock-step with every other worker.
///
/// Every worker must call this with the same `spec`; `on_event` sees every step and evaluation.
#[allow(clippy::too_many_arguments)]
pub fn train_data_parallel<B: AutodiffBackend>(
    worker: &mut Worker,
    ctx: &WorkerContext,
    trainer: &mut Trainer<B>,
    train: &Features,
    evaluator: &mut Evaluator,
    spec: &TrainSpec,
    evaluate_every_epoch: bool,
    on_event: &mut dyn FnMut(TrainEvent),
) -> Result<TrainReport> {
    let dim = if train.rows == 0 {
        0
    } else {
        train.x.len() / train.rows
    };
    let targets = train
        .y
        .as_ref()
        .ok_or_else(|| Error::Internal("training features have no labels".into()))?;
    let mut counts_channel = Collective::<u64>::new(worker, "train/row-counts");
    let counts = counts_channel.all_gather(worker, ctx, train.rows as u64)?;
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return Err(Error::config(
            "train",
            "no training rows are left after preprocessing (check the SQL WHERE, the split and the dead letters)",
        ));
    }
    let batch = spec.batch_size as u64;
    let steps_per_epoch = total.div_ceil(batch).max(1);
    on_event(TrainEvent::Start {
        total_steps: steps_per_epoch * spec.epochs as u64,
        rows: total,
    });

    let mut grads_channel = Collective::<Vec<f32>>::new(worker, "train/gradients");
    let num_params = trainer.num_params();
    let mut xb: Vec<f32> = Vec::with_capacity(spec.batch_size * dim);
    let mut yc: Vec<i64> = Vec::new();
    let mut yv: Vec<f32> = Vec::new();
    let mut global_step = 0u64;
    let mut train_s = 0.0;
    let mut last_epoch_loss = f64::NAN;
    let mut eval = None;

    for epoch in 0..spec.epochs {
        let started = Instant::now();
        let order: Vec<u32> = if spec.shuffle {
            let seed = spec.seed
                ^ (epoch as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)
                ^ ((ctx.index as u64) << 32);
            permutation(train.rows, seed)
        } else {
            (0..train.rows as u32).collect()
        };
        let mut epoch_loss = 0.0;
        for step in 0..steps_per_epoch {
            let (lo, hi) = slice_bounds(step, steps_per_epoch, train.rows as u64);
            let global_rows: u64 = counts
                .iter()
                .map(|n| {
                    let (a, b) = slice_bounds(step, steps_per_epoch, *n);
                    (b - a) as u64
                })
                .sum();
            let rows = hi - lo;
            let mut grads = if rows == 0 {
                vec![0f32; num_params + 1]
            } else {
                xb.clear();
                for &r in &order[lo..hi] {
                    let r = r as usize;
                    xb.extend_from_slice(&train.x[r * dim..(r + 1) * dim]);
                }
                let y = match targets {
                    Targets::Classes(c) => {
                        yc.clear();
                        yc.extend(order[lo..hi].iter().map(|&r| c[r as usize]));
                        TargetsRef::Classes(&yc)
                    }
                    Targets::Values(v) => {
                        yv.clear();
                        yv.extend(order[lo..hi].iter().map(|&r| v[r as usize]));
                        TargetsRef::Values(&yv)
                    }
                };
                let (loss_sum, mut g) =
                    trainer.gradients(&xb, y, rows, 1.0 / global_rows as f32)?;
                g.push(loss_sum as f32);
                g
            };
            if ctx.peers > 1 {
                grads = grads_channel.all_reduce_sum(worker, ctx, grads)?;
            }
            let loss_sum = grads.pop().unwrap_or(f32::NAN) as f64;
            trainer.apply(&grads, spec.lr)?;
            global_step += 1;
            let loss = loss_sum / global_rows.max(1) as f64;
            epoch_loss += loss_sum;
            on_event(TrainEvent::Step {
                epoch,
                step: global_step,
                loss,
                rows: global_rows,
            });
        }
        last_epoch_loss = epoch_loss / total as f64;
        train_s += started.elapsed().as_secs_f64();
        if evaluate_every_epoch || epoch + 1 == spec.epochs {
            eval = evaluator.evaluate(worker, ctx, trainer)?;
            if let Some(metrics) = &eval {
                on_event(TrainEvent::Eval {
                    epoch,
                    step: global_step,
                    metrics: metrics.clone(),
                });
            }
        }
    }

    let params = trainer.parameters();
    let parameter_checksum = checksum(&params);
    let all = counts_channel.all_gather(worker, ctx, parameter_checksum)?;
    if all.iter().any(|c| *c != parameter_checksum) {
        return Err(Error::Internal(format!(
            "model replicas diverged: parameter checksums per worker {all:?}"
        )));
    }
    Ok(TrainReport {
        rows: total,
        rows_trained: total * spec.epochs as u64,
        steps: global_step,
        last_epoch_loss,
        train_s,
        eval,
        parameter_checksum,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_cover_every_row_once() {
        for n in [0u64, 1, 7, 100, 1001] {
            for steps in [1u64, 3, 8] {
                let mut seen = 0;
                let mut prev_hi = 0;
                for s in 0..steps {
                    let (lo, hi) = slice_bounds(s, steps, n);
                    assert_eq!(lo, prev_hi);
                    prev_hi = hi;
                    seen += hi - lo;
                }
                assert_eq!(seen as u64, n);
            }
        }
    }

    #[test]
    fn permutation_is_a_seeded_permutation() {
        let mut p = permutation(1000, 3);
        assert_eq!(p, permutation(1000, 3));
        assert_ne!(p, permutation(1000, 4));
        p.sort_unstable();
        assert_eq!(p, (0..1000).collect::<Vec<u32>>());
    }
}
