//! A tune run's state, and its checkpoint: every live trial's model, optimiser and position, the
//! finished trials, the best so far, the scheduler's results in the order it heard them, and
//! where the turn order stands. A run resumed from it goes on exactly as if it had not stopped.

use millrace_ml::Replica;
use millrace_ml::optim::OptimizerState;
use millrace_ml::preprocess::FittedPreprocessor;
use serde::{Deserialize, Serialize};

use super::log::TrialSummary;
use crate::batch_job::checkpoint::SourceRecord;
use crate::checkpoint::{CheckpointStore, decode, encode};
use crate::train::{TrainPosition, TrainReport};
use crate::tune::{Scheduler, TuneSpec};
use crate::{Error, Result};

const KIND: &str = "tune";
const FORMAT: u32 = 1;

/// A trial that is training (or the best one so far): its model and what it reported.
pub(super) struct Live {
    pub(super) index: usize,
    pub(super) replica: Replica,
    pub(super) budget: usize,
    pub(super) position: Option<TrainPosition>,
    pub(super) report: Option<TrainReport>,
    pub(super) history: Vec<f64>,
    pub(super) loss: Vec<f64>,
    pub(super) eval_s: f64,
}

/// One trial in the checkpoint.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct SavedTrial {
    index: usize,
    budget: usize,
    parameters: Vec<f32>,
    optimizer: OptimizerState,
    position: Option<TrainPosition>,
    /// The last report as JSON (its evaluation is an untagged enum, which bincode cannot read).
    report_json: Option<String>,
    history: Vec<f64>,
    loss: Vec<f64>,
    eval_s: f64,
}

/// Where a tune run stands.
pub(super) struct TuneState {
    /// Training trials, in turn order.
    pub(super) live: Vec<Live>,
    /// The live trial whose turn is next.
    pub(super) cursor: usize,
    /// Trials started so far (they start in order).
    pub(super) started: usize,
    pub(super) ended: Vec<TrialSummary>,
    /// The best ended trial and its reward.
    pub(super) best: Option<(f64, Live)>,
    /// Every (trial, reports, metric) the scheduler heard, in order.
    pub(super) results: Vec<(usize, usize, f64)>,
    pub(super) reports: usize,
    /// Trials that had ended when this run resumed.
    pub(super) resumed_finished: usize,
    /// Seconds this run (not the runs it resumed) spent evaluating, over all trials.
    pub(super) eval_s: f64,
}

/// The checkpoint of a [`TuneState`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct TuneCheckpoint {
    pipeline: String,
    workers: usize,
    /// The `[tune]` section as JSON: a run with another one does not resume from this.
    tune_json: String,
    pub(crate) preprocess: FittedPreprocessor,
    pub(crate) sources: Vec<SourceRecord>,
    live: Vec<SavedTrial>,
    cursor: usize,
    started: usize,
    ended_json: String,
    best: Option<(f64, SavedTrial)>,
    results: Vec<(usize, usize, f64)>,
    reports: usize,
}

impl Live {
    fn save(&self) -> Result<SavedTrial> {
        Ok(SavedTrial {
            index: self.index,
            budget: self.budget,
            parameters: self.replica.try_parameters()?,
            optimizer: self.replica.optimizer_state()?,
            position: self.position.clone(),
            report_json: self
                .report
                .as_ref()
                .map(serde_json::to_string)
                .transpose()
                .map_err(|e| Error::Internal(e.to_string()))?,
            history: self.history.clone(),
            loss: self.loss.clone(),
            eval_s: self.eval_s,
        })
    }

    fn restore(saved: SavedTrial, mut replica: Replica) -> Result<Self> {
        replica.set_parameters(&saved.parameters)?;
        replica.restore_optimizer(saved.optimizer)?;
        let report = saved
            .report_json
            .map(|j| serde_json::from_str(&j))
            .transpose()
            .map_err(|e| Error::Checkpoint(format!("a tune trial's report does not read: {e}")))?;
        Ok(Live {
            index: saved.index,
            replica,
            budget: saved.budget,
            position: saved.position,
            report,
            history: saved.history,
            loss: saved.loss,
            eval_s: saved.eval_s,
        })
    }
}

impl TuneState {
    /// A run that starts with no trial trained.
    pub(super) fn new() -> Self {
        TuneState {
            live: Vec::new(),
            cursor: 0,
            started: 0,
            ended: Vec::new(),
            best: None,
            results: Vec::new(),
            reports: 0,
            resumed_finished: 0,
            eval_s: 0.0,
        }
    }

    /// The state `checkpoint` saved, each trial's replica made by `replica(trial index)`; the
    /// scheduler hears the saved results again, in their order (`budgets` by trial index).
    pub(super) fn restore(
        checkpoint: &TuneCheckpoint,
        scheduler: &mut Scheduler,
        budgets: &[usize],
        mut replica: impl FnMut(usize) -> Result<Replica>,
    ) -> Result<Self> {
        let c = checkpoint.clone();
        let mut live = Vec::with_capacity(c.live.len());
        for saved in c.live {
            let r = replica(saved.index)?;
            live.push(Live::restore(saved, r)?);
        }
        let best = match c.best {
            Some((reward, saved)) => {
                let r = replica(saved.index)?;
                Some((reward, Live::restore(saved, r)?))
            }
            None => None,
        };
        for (trial, reports, metric) in &c.results {
            scheduler.on_result(*trial, *reports, budgets[*trial], *metric);
        }
        let ended: Vec<TrialSummary> = serde_json::from_str(&c.ended_json).map_err(|e| {
            Error::Checkpoint(format!("the tune checkpoint's trials do not read: {e}"))
        })?;
        Ok(TuneState {
            live,
            cursor: c.cursor,
            started: c.started,
            resumed_finished: ended.len(),
            ended,
            best,
            results: c.results,
            reports: c.reports,
            eval_s: 0.0,
        })
    }

    /// Writes the state to `store` (worker 0), numbered by the reports so far.
    pub(super) fn save(
        &self,
        store: &CheckpointStore,
        (pipeline, workers, tune): (&str, usize, &TuneSpec),
        preprocess: &FittedPreprocessor,
        sources: &[SourceRecord],
    ) -> Result<()> {
        let internal = |e: serde_json::Error| Error::Internal(e.to_string());
        let checkpoint = TuneCheckpoint {
            pipeline: pipeline.to_owned(),
            workers,
            tune_json: serde_json::to_string(tune).map_err(internal)?,
            preprocess: preprocess.clone(),
            sources: sources.to_vec(),
            live: self.live.iter().map(Live::save).collect::<Result<_>>()?,
            cursor: self.cursor,
            started: self.started,
            ended_json: serde_json::to_string(&self.ended).map_err(internal)?,
            best: match &self.best {
                Some((reward, b)) => Some((*reward, b.save()?)),
                None => None,
            },
            results: self.results.clone(),
            reports: self.reports,
        };
        store.write(self.reports as u64, &encode(KIND, FORMAT, &checkpoint)?)?;
        Ok(())
    }
}

impl TuneCheckpoint {
    /// The newest tune checkpoint in `store`, checked to be of this pipeline, this `[tune]`
    /// and these sources.
    pub(crate) fn load(
        store: &CheckpointStore,
        pipeline: &str,
        tune: &TuneSpec,
        sources: &[SourceRecord],
    ) -> Result<Option<Self>> {
        let Some((info, bytes)) = store.latest()? else {
            tracing::info!(
                store = store.url(),
                "--resume: no tune checkpoint yet, starting afresh"
            );
            return Ok(None);
        };
        let c: TuneCheckpoint = decode(KIND, FORMAT, &bytes, &info.url)?;
        if c.pipeline != pipeline {
            return Err(Error::Checkpoint(format!(
                "{} belongs to pipeline '{}', not '{pipeline}': point [checkpoint] dir elsewhere",
                info.url, c.pipeline
            )));
        }
        let now = serde_json::to_string(tune).map_err(|e| Error::Internal(e.to_string()))?;
        if c.tune_json != now {
            return Err(Error::Checkpoint(format!(
                "{} was taken with another [tune] section ({}); resume with the section it was \
                 taken with, or start afresh without --resume",
                info.url, c.tune_json
            )));
        }
        let then = crate::batch_job::checkpoint::BatchCheckpoint::source_changes_between(
            &c.sources, sources,
        );
        if !then.is_empty() {
            return Err(Error::Checkpoint(format!(
                "the data changed since {} was taken: {}; resume only on the data the run \
                 started with, or start afresh without --resume",
                info.url,
                then.join("; ")
            )));
        }
        tracing::info!(
            url = %info.url,
            reports = c.reports,
            finished = c.started - c.live.len(),
            "resuming the tune run"
        );
        Ok(Some(c))
    }
}
