//! `[[branch]]` in a streaming job: more models trained on the same records, step by step. Each
//! branch scores every record before it learns from it (its own prequential metrics), sends its
//! own gradient with the step's message, applies its own summed gradient (its own learning rate
//! and reduction), publishes its own versions (`branches/<name>/models/<v>`, and into the server
//! under its name) and is part of every checkpoint.

use serde::{Deserialize, Serialize};

use super::*;
use crate::spec::BranchSpec;
use crate::streaming::checkpoint::BranchState;

/// One branch's replica and what it keeps across steps.
pub(super) struct BranchRun {
    pub(super) spec: BranchSpec,
    pub(super) trainer: Replica,
    pub(super) prequential: PrequentialState,
}

/// A branch's part of a worker's step message.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct BranchPart {
    pub(super) grads: Vec<f32>,
    pub(super) loss_sum: f64,
    pub(super) score: StepScore,
}

/// The branches of `shared`'s pipeline on this worker, at the checkpoint's state when resuming
/// (a branch the checkpoint does not hold starts afresh, with a warning).
pub(super) fn open_branches(
    ctx: &WorkerContext,
    shared: &Shared,
    fitted: &FittedPreprocessor,
) -> Result<Vec<BranchRun>> {
    let spec = &shared.plan.spec;
    let mut out = Vec::with_capacity(spec.branch.len());
    for branch in &spec.branch {
        let mut trainer = branch
            .train
            .trainer(fitted, ctx.index % shared.workers_per_process)?;
        let state = shared
            .resume
            .as_ref()
            .and_then(|c| c.branches.iter().find(|b| b.name == branch.name));
        let prequential = match (state, &shared.resume) {
            (Some(state), _) => {
                trainer.set_parameters(&state.parameters)?;
                trainer.restore_optimizer(state.optimizer.clone())?;
                state.prequential.clone()
            }
            (None, Some(_)) => {
                if ctx.index == 0 {
                    tracing::warn!(
                        branch = %branch.name,
                        "the checkpoint holds no state for this branch: it starts afresh"
                    );
                }
                PrequentialState::default()
            }
            (None, None) => PrequentialState::default(),
        };
        out.push(BranchRun {
            spec: branch.clone(),
            trainer,
            prequential,
        });
    }
    Ok(out)
}

impl BranchRun {
    /// Scores the step's rows with this branch's current model, then takes its gradient.
    pub(super) fn part(&mut self, x: &[f32], targets: &Targets, rows: usize) -> Result<BranchPart> {
        let predictions = self.trainer.predict(x, rows)?;
        let (y, score) = match targets {
            Targets::Classes(c) => (TargetsRef::Classes(c), score(&predictions, Some(c), None)),
            Targets::Values(v) => (TargetsRef::Values(v), score(&predictions, None, Some(v))),
        };
        let (loss_sum, grads) = self.trainer.gradients(x, y, rows, 1.0)?;
        Ok(BranchPart {
            grads,
            loss_sum,
            score,
        })
    }

    /// Applies branch `i`'s gradients of every worker's message, summed in worker order, and
    /// records its scores.
    pub(super) fn apply(
        &mut self,
        i: usize,
        all: &[StepMsg],
        rows: u64,
        window: u64,
    ) -> Result<()> {
        let num_params = self.trainer.num_params();
        let mut grads = vec![0f32; num_params];
        let mut step_score = StepScore::default();
        for msg in all.iter().filter(|m| m.rows > 0) {
            let part = msg.branches.get(i).ok_or_else(|| {
                Error::Internal(format!(
                    "a worker's step has no part for branch '{}'",
                    self.spec.name
                ))
            })?;
            if part.grads.len() != num_params {
                return Err(Error::Internal(format!(
                    "a worker sent {} gradient values for branch '{}', its model has {num_params}",
                    part.grads.len(),
                    self.spec.name
                )));
            }
            for (g, v) in grads.iter_mut().zip(&part.grads) {
                *g += v;
            }
            step_score.add(&part.score);
        }
        let train = &self.spec.train;
        apply_summed_gradient(
            &mut self.trainer,
            &mut grads,
            rows,
            train.reduction,
            train.lr,
        )?;
        self.prequential.push(step_score, window);
        Ok(())
    }

    /// What a checkpoint keeps of this branch.
    pub(super) fn state(&self) -> Result<BranchState> {
        Ok(BranchState {
            name: self.spec.name.clone(),
            parameters: self.trainer.try_parameters()?,
            optimizer: self.trainer.optimizer_state()?,
            prequential: self.prequential.clone(),
        })
    }

    /// The checksum of this replica's parameters (compared over workers at the end).
    pub(super) fn checksum(&self) -> u64 {
        crate::train::parameter_checksum(&self.trainer.parameters())
    }
}
