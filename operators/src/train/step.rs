//! The gradient step every training loop ends a step with, batch and streaming alike.

use millrace_ml::Replica;
use millrace_ml::trainer::Reduction;

use crate::Result;

/// Applies `grads`, the gradient of the loss summed over `rows` rows (already summed over the
/// workers, in worker order), to `trainer`: `mean` divides it by `rows` first, then the
/// optimiser steps with learning rate `lr`. Every worker calls it with the same sums, so the
/// replicas stay bit-identical. Returns false (and changes nothing) when there were no rows.
pub(crate) fn apply_summed_gradient(
    trainer: &mut Replica,
    grads: &mut [f32],
    rows: u64,
    reduction: Reduction,
    lr: f64,
) -> Result<bool> {
    if rows == 0 {
        return Ok(false);
    }
    if reduction == Reduction::Mean {
        let scale = 1.0 / rows as f32;
        for g in grads.iter_mut() {
            *g *= scale;
        }
    }
    trainer.apply(grads, lr)?;
    Ok(true)
}
