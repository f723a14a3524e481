//! Fitting the preprocessing over all workers.

use millrace_engine::timely::worker::Worker;
use millrace_engine::{Collective, WorkerContext};
use millrace_ml::preprocess::FitState;

use crate::{Error, Result};

/// Every worker's fit state, merged in worker order (the same result on every worker).
pub(crate) fn merge_fits(
    worker: &mut Worker,
    ctx: &WorkerContext,
    fits: &mut Collective<FitState>,
    fit: FitState,
) -> Result<FitState> {
    merge_in_worker_order(fits.all_gather(worker, ctx, fit)?)
}

/// Every worker's fit state (in worker order) merged into one.
pub(crate) fn merge_in_worker_order(states: Vec<FitState>) -> Result<FitState> {
    let mut states = states.into_iter();
    let mut merged = states
        .next()
        .ok_or_else(|| Error::Internal("no fit state from worker 0".into()))?;
    for state in states {
        merged.merge(&state);
    }
    Ok(merged)
}
