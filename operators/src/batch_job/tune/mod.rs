//! A `[tune]` run on a worker: the trials train side by side on the rows read and encoded once,
//! in turn, each data-parallel over every worker, up to its next report (an epoch, or
//! `report_every_steps` steps); at each report the trial is evaluated, the scheduler hears its
//! metric and may stop it, and an ended trial's place goes to the next one at once.
//!
//! Every worker runs the same trials in the same order and hears the same metrics (they are
//! gathered from all workers), so every worker stops the same trials: no coordinator is needed.
//! With `[checkpoint]`, worker 0 saves the whole state after every report; `--resume`
//! skips the finished trials and continues the others where they were.

mod log;
mod state;

use millrace_engine::{Rounds, WorkerContext};
use millrace_ml::Replica;
use millrace_ml::preprocess::{Features, FittedPreprocessor};

pub use log::{TrialStatus, TrialSummary, TuneSummary};
pub(crate) use state::TuneCheckpoint;

use self::log::{TuneLog, metric_of};
use self::state::{Live, TuneState};
use super::checkpoint::SourceRecord;
use super::plan::JobPlan;
use super::run::RunOptions;
use super::train::replica;
use crate::checkpoint::CheckpointStore;
use crate::evaluate::Evaluator;
use crate::spec::TrainSpec;
use crate::train::{
    JobMsg, TrainControl, TrainEvent, TrainReport, TrainRows, exchange, sample_rows, train_in_loop,
};
use crate::tune::{Decision, Scheduler, Trial, TuneSpec};
use crate::{Error, Result};

/// The tune run's result on this worker: the best trial's model and every trial's summary.
pub(super) struct Tuned {
    pub(super) trainer: Replica,
    pub(super) train: TrainSpec,
    pub(super) report: TrainReport,
    pub(super) summary: TuneSummary,
}

/// Where a tune run checkpoints and what it resumes from.
pub(super) struct TuneCheckpoints<'a> {
    pub(super) store: Option<&'a CheckpointStore>,
    pub(super) resume: Option<&'a TuneCheckpoint>,
    pub(super) sources: &'a [SourceRecord],
}

/// A trial's steps: in all, and between two reports.
struct TrialPlan {
    per_epoch: u64,
    total_steps: u64,
    unit: u64,
    budget: usize,
}

impl TrialPlan {
    fn new(tune: &TuneSpec, train: &TrainSpec, rows: u64) -> Self {
        let per_epoch = rows.div_ceil(train.batch_size.max(1) as u64).max(1);
        let total_steps = per_epoch * train.epochs as u64;
        let unit = tune.report_every_steps.unwrap_or(per_epoch);
        TrialPlan {
            per_epoch,
            total_steps,
            unit,
            budget: tune.budget(total_steps, unit),
        }
    }
}

/// What every trial report needs: the worker, the rows, the evaluator.
struct Ground<'a> {
    ctx: &'a WorkerContext,
    train: &'a TrainRows<'a>,
    /// All evaluation rows: a trial's last report of its budget.
    evaluator: Evaluator,
    /// The reports before it, on `report_eval_rows` (or on all rows).
    sampled: Option<Evaluator>,
    metric: &'a str,
}

/// Runs every trial of `tune` on this worker's encoded rows and returns the best one.
#[allow(clippy::too_many_arguments)]
pub(super) async fn tune_trials(
    rounds: &Rounds<JobMsg>,
    ctx: &WorkerContext,
    plan: &JobPlan,
    options: &RunOptions,
    tune: &TuneSpec,
    fitted: &FittedPreprocessor,
    train: &TrainRows<'_>,
    eval: Features,
    checkpoints: TuneCheckpoints<'_>,
) -> Result<Tuned> {
    let trials = tune.trials(&plan.spec.train)?;
    // Each trial's steps and reports, from the training rows over all workers.
    let rows = train.total();
    let plans: Vec<TrialPlan> = trials
        .iter()
        .map(|t| TrialPlan::new(tune, &t.train, rows))
        .collect();
    let budgets: Vec<usize> = plans.iter().map(|p| p.budget).collect();
    let max_t = budgets.iter().copied().max().unwrap_or(1);
    let mut scheduler = Scheduler::new(&tune.scheduler, tune.mode, trials.len(), max_t);
    let fresh = |index: usize| replica(&trials[index].train, fitted, ctx, options, None);
    let mut state = match checkpoints.resume {
        Some(c) => TuneState::restore(c, &mut scheduler, &budgets, fresh)?,
        None => TuneState::new(),
    };
    let covered = |trial: &str, report: usize| state.covers(&trials, trial, report);
    let resumed = checkpoints
        .resume
        .map(|_| (state.ended.as_slice(), &covered as &log::Covered<'_>));
    let mut log = TuneLog::open(ctx.index == 0, &options.run_dir, resumed)?;
    if ctx.index == 0 {
        let reports = budgets.iter().sum::<usize>() as u64;
        options.progress.tune_start(trials.len(), reports);
    }
    let sampled = report_evaluator(rounds, tune, &eval, fitted).await?;
    let mut ground = Ground {
        ctx,
        train,
        evaluator: Evaluator::new(Some(eval), fitted.num_classes()),
        sampled,
        metric: &tune.metric,
    };
    let concurrency = tune.concurrency(trials.len());
    let save = |state: &TuneState| match checkpoints.store.filter(|_| ctx.index == 0) {
        Some(store) => state.save(
            store,
            (&plan.spec.name, ctx.peers, tune),
            fitted,
            checkpoints.sources,
        ),
        None => Ok(()),
    };
    loop {
        // Fill the free places with the next trials, in order.
        while state.live.len() < concurrency && state.started < trials.len() {
            let index = state.started;
            state
                .live
                .push(Live::start(index, budgets[index], fresh(index)?));
            state.started += 1;
        }
        let Some(live) = state.live.get_mut(state.cursor) else {
            if state.live.is_empty() {
                break;
            }
            state.cursor = 0;
            continue;
        };
        let trial = &trials[live.index];
        let evaluated = live.eval_s;
        let metric = live
            .train_report(rounds, &mut ground, trial, &plans[live.index])
            .await?;
        state.eval_s += live.eval_s - evaluated;
        state.reports += 1;
        if ctx.index == 0 {
            options
                .progress
                .tune_report(state.reports as u64, &trial.name, &tune.metric, metric);
            if let Some(report) = &live.report {
                let loss = *live.loss.last().unwrap_or(&f64::NAN);
                log.report(&trial.name, live.history.len(), metric, loss, report)?;
            }
        }
        let (index, reports, budget) = (live.index, live.history.len(), live.budget);
        state.results.push((index, reports, metric));
        let stop_reason = match scheduler.on_result(index, reports, budget, metric) {
            Decision::Continue => {
                state.cursor += 1;
                save(&state)?;
                continue;
            }
            Decision::Complete => None,
            Decision::Stop(reason) => Some(reason),
        };
        let done = state.live.remove(state.cursor);
        let summary = done.summary(trial, &plans[done.index], stop_reason)?;
        if ctx.index == 0 {
            options.progress.tune_trial(&summary);
        }
        log.trial(&summary)?;
        let reward = tune.mode.reward(summary.metric);
        if state.best.as_ref().is_none_or(|(r, _)| reward > *r) {
            state.best = Some((reward, done));
        }
        state.ended.push(summary);
        // The next trial takes the ended one's place in the turn order.
        if state.started < trials.len() {
            let index = state.started;
            let next = Live::start(index, budgets[index], fresh(index)?);
            state.live.insert(state.cursor, next);
            state.started += 1;
            state.cursor += 1;
        }
        save(&state)?;
    }
    finish(state, trials, tune)
}

/// The evaluator of the reports before a trial's last: over a fixed sample of about
/// `report_eval_rows` of all workers' evaluation rows (None: reports use every row).
async fn report_evaluator(
    rounds: &Rounds<JobMsg>,
    tune: &TuneSpec,
    eval: &Features,
    fitted: &FittedPreprocessor,
) -> Result<Option<Evaluator>> {
    let Some(rows) = tune.report_eval_rows else {
        return Ok(None);
    };
    let counts = exchange(rounds, JobMsg::Count(eval.rows as u64), |m| match m {
        JobMsg::Count(n) => Some(n),
        _ => None,
    })
    .await?;
    let all: u64 = counts.iter().sum();
    let sample = sample_rows(eval, rows as f64 / all.max(1) as f64);
    Ok(Some(Evaluator::new(Some(sample), fitted.num_classes())))
}

/// The best trial's model and report, and the run's summary.
fn finish(state: TuneState, trials: Vec<Trial>, tune: &TuneSpec) -> Result<Tuned> {
    let mut ended = state.ended;
    ended.sort_by(|a, b| a.trial.cmp(&b.trial));
    let (_, best) = state
        .best
        .ok_or_else(|| Error::Internal("no tune trial ran".into()))?;
    let mut report = best
        .report
        .ok_or_else(|| Error::Internal("the best trial has no report".into()))?;
    // The job's evaluation time: every trial's, not the best one's alone.
    report.eval_s = state.eval_s;
    let trial = trials
        .into_iter()
        .nth(best.index)
        .ok_or_else(|| Error::Internal("the best trial is not in the space".into()))?;
    Ok(Tuned {
        trainer: best.replica,
        train: trial.train,
        summary: TuneSummary {
            metric: tune.metric.clone(),
            mode: tune.mode,
            best: trial.name,
            stopped_early: ended
                .iter()
                .filter(|t| t.status == TrialStatus::Stopped)
                .count(),
            reports: state.reports,
            epochs_trained: ended.iter().map(|t| t.epochs).sum(),
            resumed_finished: state.resumed_finished,
            trials: ended,
        },
        report,
    })
}

impl TuneState {
    /// Whether this state (a resumed run's start) covers `trial`'s report `report` (1-based).
    fn covers(&self, trials: &[Trial], trial: &str, report: usize) -> bool {
        if let Some(t) = self.ended.iter().find(|t| t.trial == trial) {
            return report <= t.reports;
        }
        self.live
            .iter()
            .any(|l| trials[l.index].name == trial && report <= l.history.len())
    }
}

impl Live {
    /// A trial about to train towards its first report, with `budget` reports.
    fn start(index: usize, budget: usize, replica: Replica) -> Self {
        Live {
            index,
            replica,
            budget,
            position: None,
            report: None,
            history: Vec::new(),
            loss: Vec::new(),
            eval_s: 0.0,
        }
    }

    /// Trains `trial` (data-parallel, from where it stopped) up to its next report, evaluates
    /// there, and returns the tuned metric.
    async fn train_report(
        &mut self,
        rounds: &Rounds<JobMsg>,
        ground: &mut Ground<'_>,
        trial: &Trial,
        plan: &TrialPlan,
    ) -> Result<f64> {
        let report_step = plan.unit * (self.history.len() as u64 + 1);
        // The mean training loss of the steps since the last report.
        let (mut loss_sum, mut rows) = (0.0, 0u64);
        let mut on_event = |event: TrainEvent| {
            if let TrainEvent::Step { loss, rows: r, .. } = event {
                loss_sum += loss * r as f64;
                rows += r;
            }
        };
        let mut control = TrainControl {
            resume: self.position.take(),
            stop_after_step: (report_step < plan.total_steps).then_some(report_step),
            on_event: Some(&mut on_event),
            ..TrainControl::default()
        };
        // The trial's last report of its whole budget is on all evaluation rows.
        let last = self.history.len() + 1 >= self.budget || report_step >= plan.total_steps;
        let evaluator = match (&mut ground.sampled, last) {
            (Some(sampled), false) => sampled,
            _ => &mut ground.evaluator,
        };
        let report = train_in_loop(
            rounds,
            ground.ctx,
            &mut self.replica,
            ground.train,
            evaluator,
            &trial.train,
            &mut control,
        )
        .await?;
        drop(control);
        let loss = loss_sum / rows as f64;
        let metric = metric_of(&report, ground.metric, loss)?;
        self.history.push(metric);
        self.loss.push(loss);
        self.eval_s += report.eval_s;
        self.position = Some(report.position.clone());
        self.report = Some(report);
        Ok(metric)
    }

    fn summary(
        &self,
        trial: &Trial,
        plan: &TrialPlan,
        stop_reason: Option<String>,
    ) -> Result<TrialSummary> {
        let report = self
            .report
            .as_ref()
            .ok_or_else(|| Error::Internal(format!("{} never trained", trial.name)))?;
        Ok(TrialSummary {
            trial: trial.name.clone(),
            config: trial.config.clone(),
            status: if stop_reason.is_some() {
                TrialStatus::Stopped
            } else {
                TrialStatus::Completed
            },
            stop_reason,
            reports: self.history.len(),
            epochs: report.steps as f64 / plan.per_epoch as f64,
            steps: report.steps,
            train_s: report.train_s,
            metric: *self.history.last().unwrap_or(&f64::NAN),
            history: self.history.clone(),
            loss: self.loss.clone(),
            eval: report.eval.clone(),
            parameter_checksum: format!("{:016x}", report.parameter_checksum),
        })
    }
}
