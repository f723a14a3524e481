//! Hyperparameter search (`[tune]`): a search space over `[train]` keys, the trials drawn from
//! it, and the scheduler that stops the weak ones early.
//!
//! The trials are branches of one batch job: the data is read, preprocessed and encoded once,
//! and every trial trains on those rows (`batch_job/tune.rs`). A trial is the pipeline's
//! `[train]` with the trial's values set, so a trial is exactly the run `--set` would make.

mod scheduler;
mod space;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use scheduler::{Decision, Scheduler};
pub use space::Domain;

use crate::spec::{TaskKind, TrainSpec};
use crate::{Error, Result};

/// The `[tune]` section.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TuneSpec {
    /// What to optimise: an evaluation metric (`accuracy`, `log_loss`, `roc_auc` for
    /// classification; `rmse`, `mae`, `r2` for regression) or `loss` (the last epoch's training
    /// loss).
    pub metric: String,
    /// `max` or `min` the metric.
    pub mode: Mode,
    /// `random` (default: `num_trials` draws) or `grid` (every combination of the `choice`s).
    #[serde(default)]
    pub search: Search,
    /// Trials of a random search (default 10); a grid has one per combination.
    #[serde(default)]
    pub num_trials: Option<usize>,
    /// Trials training side by side (default: all of them). Each holds its model and optimiser
    /// state; a trial that ends frees its place for the next.
    #[serde(default)]
    pub max_concurrent: Option<usize>,
    /// Seed of the random draws.
    #[serde(default)]
    pub seed: u64,
    /// Report (evaluate, and let the scheduler decide) every this many optimiser steps of a
    /// trial; the scheduler's `grace_period` and `max_t` then count these reports. Default: a
    /// report after each epoch, and they count epochs.
    #[serde(default)]
    pub report_every_steps: Option<u64>,
    /// Evaluate reports on a fixed sample of about this many evaluation rows (chosen by row
    /// content, the same on any worker count) instead of all of them; a trial's last report of
    /// its whole budget is on all rows. Default: all rows at every report.
    #[serde(default)]
    pub report_eval_rows: Option<u64>,
    /// The search space: a `[train]` key (`"train.lr"`, `"train.model.hidden"`) and its
    /// domain: `{ choice = [...] }`, `{ uniform = [lo, hi] }`, `{ loguniform = [lo, hi] }` or
    /// `{ int = [lo, hi] }` (both ends included).
    pub space: BTreeMap<String, Domain>,
    /// When to stop a trial early: `{ kind = "asha" }` (default), `{ kind = "median" }` or
    /// `{ kind = "fifo" }` (never).
    #[serde(default)]
    pub scheduler: SchedulerSpec,
}

/// Whether a larger or a smaller metric is better.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Larger is better.
    Max,
    /// Smaller is better.
    Min,
}

impl Mode {
    /// `metric` as a reward: larger is better; a metric that is not a number is the worst.
    pub fn reward(self, metric: f64) -> f64 {
        match self {
            _ if metric.is_nan() => f64::NEG_INFINITY,
            Mode::Max => metric,
            Mode::Min => -metric,
        }
    }
}

/// How trials are drawn from the space.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Search {
    /// Independent draws.
    #[default]
    Random,
    /// Every combination of the `choice` domains.
    Grid,
}

/// The early-stopping scheduler. Its times count a trial's reports: epochs, or
/// `report_every_steps` steps.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum SchedulerSpec {
    /// Asynchronous successive halving (Li et al., as Ray Tune's `ASHAScheduler`): rungs at
    /// `grace_period × reduction_factor^k` reports; a trial reaching a rung stops unless its
    /// metric is in the top `1 / reduction_factor` of the trials that reached it before.
    Asha {
        /// Reports every trial makes before it can be stopped.
        #[serde(default = "one")]
        grace_period: usize,
        /// Keep the top `1 / reduction_factor` at each rung.
        #[serde(default = "three")]
        reduction_factor: f64,
        /// The most reports a trial makes (default: all of its `train.epochs`).
        #[serde(default)]
        max_t: Option<usize>,
    },
    /// The median stopping rule (Golovin et al., as Ray Tune's `MedianStoppingRule`): after
    /// `grace_period` epochs a trial stops when its best metric is worse than the median of the
    /// other trials' running means at the same epoch.
    Median {
        /// Reports every trial makes before it can be stopped.
        #[serde(default = "one")]
        grace_period: usize,
        /// Other trials needed at a report before the rule applies.
        #[serde(default = "three_usize")]
        min_samples: usize,
    },
    /// Every trial trains all its epochs.
    Fifo,
}

fn one() -> usize {
    1
}
fn three() -> f64 {
    3.0
}
fn three_usize() -> usize {
    3
}

impl Default for SchedulerSpec {
    fn default() -> Self {
        SchedulerSpec::Asha {
            grace_period: 1,
            reduction_factor: 3.0,
            max_t: None,
        }
    }
}

/// One trial: its name, the values drawn for it, and the `[train]` they make.
#[derive(Clone, Debug, PartialEq)]
pub struct Trial {
    /// `trial-000`, `trial-001`, … in draw order.
    pub name: String,
    /// The space's keys and the values drawn.
    pub config: BTreeMap<String, Value>,
    /// The pipeline's `[train]` with the values set.
    pub train: TrainSpec,
}

impl TuneSpec {
    /// Checks the section against the pipeline's `[train]`: every key and value applies, every
    /// range is non-empty, and the metric is one the task produces. Errors name the key.
    pub fn validate(&self, train: &TrainSpec, has_eval_rows: bool) -> Result<()> {
        self.check_metric(train.task, has_eval_rows)?;
        match &self.scheduler {
            SchedulerSpec::Asha {
                grace_period,
                reduction_factor,
                max_t,
            } => {
                if *grace_period == 0 || reduction_factor.is_nan() || *reduction_factor <= 1.0 {
                    return Err(Error::config(
                        "tune.scheduler",
                        format!(
                            "grace_period must be at least 1 and reduction_factor above 1 (got \
                             {grace_period} and {reduction_factor})"
                        ),
                    ));
                }
                if max_t.is_some_and(|m| m < *grace_period) {
                    return Err(Error::config(
                        "tune.scheduler.max_t",
                        "is below grace_period: no trial could reach the first rung",
                    ));
                }
            }
            SchedulerSpec::Median { grace_period, .. } if *grace_period == 0 => {
                return Err(Error::config(
                    "tune.scheduler.grace_period",
                    "must be at least 1",
                ));
            }
            _ => {}
        }
        if self.report_eval_rows == Some(0) {
            return Err(Error::config(
                "tune.report_eval_rows",
                "must be at least 1 (leave it out to evaluate every report on all rows)",
            ));
        }
        if self.report_every_steps == Some(0) {
            return Err(Error::config(
                "tune.report_every_steps",
                "must be at least 1 (leave it out to report after each epoch)",
            ));
        }
        if self.max_concurrent == Some(0) {
            return Err(Error::config("tune.max_concurrent", "must be at least 1"));
        }
        let trials = self.trials(train)?;
        if trials.is_empty() {
            return Err(Error::config("tune.num_trials", "must be at least 1"));
        }
        Ok(())
    }

    fn check_metric(&self, task: TaskKind, has_eval_rows: bool) -> Result<()> {
        let produced: &[&str] = match task {
            TaskKind::Classification => &["accuracy", "log_loss", "roc_auc", "loss"],
            TaskKind::Regression => &["rmse", "mae", "r2", "loss"],
        };
        if !produced.contains(&self.metric.as_str()) {
            return Err(Error::config(
                "tune.metric",
                format!(
                    "'{}' is not a metric a {task:?} pipeline produces; use one of {}",
                    self.metric,
                    produced.join(", ")
                ),
            ));
        }
        if self.metric != "loss" && !has_eval_rows {
            return Err(Error::config(
                "tune.metric",
                format!(
                    "'{}' is measured on evaluation rows and this pipeline has none: set \
                     evaluate.split or evaluate.path, or tune on metric = \"loss\"",
                    self.metric
                ),
            ));
        }
        Ok(())
    }

    /// The trials, in order: `num_trials` random draws, or every combination of a grid. Each
    /// trial's `[train]` is built and checked here, so a key or value that does not apply is an
    /// error before any work.
    pub fn trials(&self, train: &TrainSpec) -> Result<Vec<Trial>> {
        if self.space.is_empty() {
            return Err(Error::config(
                "tune.space",
                "is empty: name at least one [train] key to search, e.g. \"train.lr\" = { loguniform = [1e-4, 1e-1] }",
            ));
        }
        for (key, domain) in &self.space {
            space::train_path(key)?;
            domain.check(key)?;
        }
        let configs = match self.search {
            Search::Random => {
                let n = self.num_trials.unwrap_or(10);
                space::random(&self.space, n, self.seed)
            }
            Search::Grid => {
                let grid = space::grid(&self.space)?;
                if let Some(n) = self.num_trials.filter(|n| *n != grid.len()) {
                    return Err(Error::config(
                        "tune.num_trials",
                        format!(
                            "is {n}, but the grid has {} combinations and runs each once; leave \
                             num_trials out",
                            grid.len()
                        ),
                    ));
                }
                grid
            }
        };
        let base = serde_json::to_value(train).map_err(|e| Error::Internal(e.to_string()))?;
        configs
            .into_iter()
            .enumerate()
            .map(|(i, config)| {
                let train = space::apply(&base, &config)?;
                Ok(Trial {
                    name: format!("trial-{i:03}"),
                    config,
                    train,
                })
            })
            .collect()
    }

    /// The most reports a trial makes: its `total_steps` in reports of `unit` steps (an epoch
    /// unless `report_every_steps`), capped by ASHA's `max_t`.
    pub fn budget(&self, total_steps: u64, unit: u64) -> usize {
        let reports = total_steps.div_ceil(unit.max(1)).max(1) as usize;
        match &self.scheduler {
            SchedulerSpec::Asha { max_t: Some(m), .. } => reports.min(*m),
            _ => reports,
        }
    }

    /// How many trials train side by side.
    pub fn concurrency(&self, trials: usize) -> usize {
        self.max_concurrent
            .unwrap_or(trials)
            .clamp(1, trials.max(1))
    }
}
