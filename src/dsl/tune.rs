//! [`Tune`]: a `[tune]` section built in code.

use millrace_operators::tune::{Domain, Mode, SchedulerSpec, Search, TuneSpec};
use serde_json::Value;

/// A hyperparameter search over `[train]` keys, the same as a `[tune]` section:
///
/// ```
/// use millrace::dsl::Tune;
/// let tune = Tune::maximize("accuracy")
///     .loguniform("train.lr", 1e-4, 1e-1)
///     .choice("train.model.hidden", [vec![32], vec![64, 64]])
///     .num_trials(8)
///     .asha(1, 3.0);
/// ```
#[derive(Clone, Debug)]
pub struct Tune {
    pub(crate) spec: TuneSpec,
}

impl Tune {
    fn new(metric: &str, mode: Mode) -> Self {
        Tune {
            spec: TuneSpec {
                metric: metric.to_owned(),
                mode,
                search: Search::Random,
                num_trials: None,
                max_concurrent: None,
                seed: 0,
                report_every_steps: None,
                report_eval_rows: None,
                space: Default::default(),
                scheduler: SchedulerSpec::default(),
            },
        }
    }

    /// Tunes for the largest `metric` (`accuracy`, `roc_auc`, `r2`).
    pub fn maximize(metric: &str) -> Self {
        Tune::new(metric, Mode::Max)
    }

    /// Tunes for the smallest `metric` (`log_loss`, `rmse`, `mae`, `loss`).
    pub fn minimize(metric: &str) -> Self {
        Tune::new(metric, Mode::Min)
    }

    fn domain(mut self, key: &str, domain: Domain) -> Self {
        self.spec.space.insert(key.to_owned(), domain);
        self
    }

    /// `key` takes one of `values`.
    pub fn choice<V: serde::Serialize>(
        self,
        key: &str,
        values: impl IntoIterator<Item = V>,
    ) -> Self {
        let values = values
            .into_iter()
            .map(|v| serde_json::to_value(v).unwrap_or(Value::Null))
            .collect();
        self.domain(key, Domain::Choice(values))
    }

    /// `key` is drawn uniformly from `[lo, hi)`.
    pub fn uniform(self, key: &str, lo: f64, hi: f64) -> Self {
        self.domain(key, Domain::Uniform([lo, hi]))
    }

    /// `key`'s logarithm is drawn uniformly from `[ln lo, ln hi)`.
    pub fn loguniform(self, key: &str, lo: f64, hi: f64) -> Self {
        self.domain(key, Domain::Loguniform([lo, hi]))
    }

    /// `key` is an integer drawn uniformly from `lo..=hi`.
    pub fn int(self, key: &str, lo: i64, hi: i64) -> Self {
        self.domain(key, Domain::Int([lo, hi]))
    }

    /// Every combination of the `choice`s, once each (instead of random draws).
    pub fn grid(mut self) -> Self {
        self.spec.search = Search::Grid;
        self
    }

    /// Random draws to train (default 10).
    pub fn num_trials(mut self, n: usize) -> Self {
        self.spec.num_trials = Some(n);
        self
    }

    /// Trials training side by side (default: all).
    pub fn max_concurrent(mut self, n: usize) -> Self {
        self.spec.max_concurrent = Some(n);
        self
    }

    /// The seed of the random draws.
    pub fn seed(mut self, seed: u64) -> Self {
        self.spec.seed = seed;
        self
    }

    /// Asynchronous successive halving with rungs at `grace_period × reduction_factor^k`
    /// epochs (the default, with 1 and 3).
    pub fn asha(mut self, grace_period: usize, reduction_factor: f64) -> Self {
        self.spec.scheduler = SchedulerSpec::Asha {
            grace_period,
            reduction_factor,
            max_t: None,
        };
        self
    }

    /// Caps ASHA's budget at `max_t` reports a trial (default: all its epochs).
    pub fn max_t(mut self, max_t: usize) -> Self {
        if let SchedulerSpec::Asha { max_t: m, .. } = &mut self.spec.scheduler {
            *m = Some(max_t);
        }
        self
    }

    /// Report every `steps` optimiser steps instead of after each epoch; the scheduler's
    /// grace period and budget then count these reports.
    pub fn report_every_steps(mut self, steps: u64) -> Self {
        self.spec.report_every_steps = Some(steps);
        self
    }

    /// Evaluate reports on a fixed sample of about `rows` evaluation rows (a trial's last
    /// report of its budget on all of them).
    pub fn report_eval_rows(mut self, rows: u64) -> Self {
        self.spec.report_eval_rows = Some(rows);
        self
    }

    /// The median stopping rule after `grace_period` epochs, once `min_samples` other trials
    /// have results.
    pub fn median(mut self, grace_period: usize, min_samples: usize) -> Self {
        self.spec.scheduler = SchedulerSpec::Median {
            grace_period,
            min_samples,
        };
        self
    }

    /// No early stopping.
    pub fn fifo(mut self) -> Self {
        self.spec.scheduler = SchedulerSpec::Fifo;
        self
    }
}
