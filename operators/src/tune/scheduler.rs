//! Early stopping: asynchronous successive halving (ASHA) and the median stopping rule, as Ray
//! Tune defines them, over results reported after each epoch.
//!
//! Every worker runs the same scheduler on the same results (the metrics are gathered from all
//! workers), so every worker stops the same trials at the same time.

use super::{Mode, SchedulerSpec};

/// What a trial does after a result.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Train another epoch.
    Continue,
    /// The trial has trained its whole budget.
    Complete,
    /// Stopped early, with the reason.
    Stop(String),
}

/// One rung of ASHA: its milestone (epochs) and the rewards recorded there, by trial.
struct Rung {
    milestone: usize,
    recorded: Vec<(usize, f64)>,
}

/// The scheduler of one tune run.
pub struct Scheduler {
    spec: SchedulerSpec,
    mode: Mode,
    /// ASHA's rungs, highest milestone first.
    rungs: Vec<Rung>,
    /// Each trial's rewards so far, one per epoch (median rule).
    history: Vec<Vec<f64>>,
}

impl Scheduler {
    /// A scheduler for `trials` trials (indices `0..trials`) whose longest budget is `max_t`
    /// reports.
    pub fn new(spec: &SchedulerSpec, mode: Mode, trials: usize, max_t: usize) -> Self {
        let rungs = match spec {
            SchedulerSpec::Asha {
                grace_period,
                reduction_factor,
                ..
            } => {
                let mut milestones = Vec::new();
                let mut m = *grace_period as f64;
                while m < max_t as f64 {
                    milestones.push(m.round() as usize);
                    m *= reduction_factor;
                }
                milestones.dedup();
                milestones
                    .into_iter()
                    .rev()
                    .map(|milestone| Rung {
                        milestone,
                        recorded: Vec::new(),
                    })
                    .collect()
            }
            _ => Vec::new(),
        };
        Scheduler {
            spec: spec.clone(),
            mode,
            rungs,
            history: vec![Vec::new(); trials],
        }
    }

    /// Takes `trial`'s metric after `epochs` epochs (of a budget of `budget`) and decides.
    pub fn on_result(
        &mut self,
        trial: usize,
        epochs: usize,
        budget: usize,
        metric: f64,
    ) -> Decision {
        let reward = self.mode.reward(metric);
        self.history[trial].push(reward);
        if epochs >= budget {
            return Decision::Complete;
        }
        match self.spec.clone() {
            SchedulerSpec::Asha {
                reduction_factor, ..
            } => self.asha(trial, epochs, reward, reduction_factor),
            SchedulerSpec::Median {
                grace_period,
                min_samples,
            } => self.median(trial, epochs, grace_period, min_samples),
            SchedulerSpec::Fifo => Decision::Continue,
        }
    }

    /// ASHA: at the highest rung this trial has reached and not yet been recorded in, it stops
    /// when its reward is below the `(1 − 1/rf)` quantile of the rewards recorded there before it.
    fn asha(&mut self, trial: usize, epochs: usize, reward: f64, rf: f64) -> Decision {
        let Some(rung) = self
            .rungs
            .iter_mut()
            .find(|r| epochs >= r.milestone && !r.recorded.iter().any(|(t, _)| *t == trial))
        else {
            return Decision::Continue;
        };
        let mut before: Vec<f64> = rung.recorded.iter().map(|(_, r)| *r).collect();
        rung.recorded.push((trial, reward));
        if before.is_empty() {
            return Decision::Continue;
        }
        let cutoff = percentile(&mut before, (1.0 - 1.0 / rf) * 100.0);
        if reward < cutoff {
            Decision::Stop(format!(
                "asha: below the top 1/{rf} at the {}-epoch rung ({} trials there before it)",
                rung.milestone,
                before.len()
            ))
        } else {
            Decision::Continue
        }
    }

    /// The median rule: after the grace period, stop when this trial's best reward is below the
    /// median of the other trials' running means over their first `epochs` results.
    fn median(&self, trial: usize, epochs: usize, grace: usize, min_samples: usize) -> Decision {
        if epochs < grace {
            return Decision::Continue;
        }
        let mut means: Vec<f64> = self
            .history
            .iter()
            .enumerate()
            .filter(|(t, h)| *t != trial && h.len() >= epochs)
            .map(|(_, h)| h[..epochs].iter().sum::<f64>() / epochs as f64)
            .collect();
        if means.len() < min_samples {
            return Decision::Continue;
        }
        let median = percentile(&mut means, 50.0);
        let best = self.history[trial]
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max);
        if best < median {
            Decision::Stop(format!(
                "median: best result below the median of {} other trials' running means at epoch {epochs}",
                means.len()
            ))
        } else {
            Decision::Continue
        }
    }
}

/// The `q`-th percentile (0–100) with linear interpolation between order statistics, as numpy's
/// default.
fn percentile(values: &mut [f64], q: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let pos = (values.len() - 1) as f64 * (q / 100.0);
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    values[lo] + (values[hi] - values[lo]) * (pos - lo as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asha(grace: usize, rf: f64) -> SchedulerSpec {
        SchedulerSpec::Asha {
            grace_period: grace,
            reduction_factor: rf,
            max_t: None,
        }
    }

    #[test]
    fn percentile_interpolates_like_numpy() {
        // numpy.percentile([1, 2, 3, 4], 75) == 3.25; ([5], 66.7) == 5.
        assert_eq!(percentile(&mut [4.0, 1.0, 3.0, 2.0], 75.0), 3.25);
        assert_eq!(percentile(&mut [5.0], 66.7), 5.0);
        assert_eq!(percentile(&mut [1.0, 3.0], 50.0), 2.0);
    }

    #[test]
    fn asha_keeps_the_top_third_at_each_rung() {
        // Rungs at 1, 3 and 9 epochs of a 27-epoch budget; rewards arrive in trial order.
        let mut s = Scheduler::new(&asha(1, 3.0), Mode::Max, 4, 27);
        assert_eq!(
            s.rungs.iter().map(|r| r.milestone).collect::<Vec<_>>(),
            vec![9, 3, 1]
        );
        assert_eq!(s.on_result(0, 1, 27, 0.5), Decision::Continue); // first at the rung
        assert!(matches!(s.on_result(1, 1, 27, 0.4), Decision::Stop(_))); // below 0.5
        assert_eq!(s.on_result(2, 1, 27, 0.6), Decision::Continue);
        // Recorded before trial 3: 0.5, 0.4, 0.6 → the 66.7th percentile is 0.533.
        assert!(matches!(s.on_result(3, 1, 27, 0.52), Decision::Stop(_)));
        // Epoch 2 is no rung; epoch 3 is, and trial 0 is the first there.
        assert_eq!(s.on_result(0, 2, 27, 0.55), Decision::Continue);
        assert_eq!(s.on_result(0, 3, 27, 0.56), Decision::Continue);
        assert!(matches!(s.on_result(2, 3, 27, 0.55), Decision::Stop(_)));
        assert_eq!(s.on_result(0, 27, 27, 0.7), Decision::Complete);
    }

    #[test]
    fn asha_minimises_when_asked() {
        let mut s = Scheduler::new(&asha(1, 2.0), Mode::Min, 2, 4);
        assert_eq!(s.on_result(0, 1, 4, 0.3), Decision::Continue);
        assert!(matches!(s.on_result(1, 1, 4, 0.9), Decision::Stop(_)));
    }

    #[test]
    fn asha_rungs_stop_below_the_longest_budget() {
        let s = Scheduler::new(&asha(2, 2.0), Mode::Max, 1, 8);
        assert_eq!(
            s.rungs.iter().map(|r| r.milestone).collect::<Vec<_>>(),
            vec![4, 2]
        );
        let s = Scheduler::new(&asha(1, 4.0), Mode::Max, 1, 16);
        assert_eq!(
            s.rungs.iter().map(|r| r.milestone).collect::<Vec<_>>(),
            vec![4, 1]
        );
    }

    #[test]
    fn median_rule_needs_enough_other_trials() {
        let spec = SchedulerSpec::Median {
            grace_period: 2,
            min_samples: 2,
        };
        let mut s = Scheduler::new(&spec, Mode::Max, 3, 5);
        for (t, r) in [(0, 0.8), (1, 0.7), (2, 0.1)] {
            assert_eq!(s.on_result(t, 1, 5, r), Decision::Continue); // grace
        }
        // Trials 0 and 1 see fewer than 2 others with two results: no verdict.
        assert_eq!(s.on_result(0, 2, 5, 0.9), Decision::Continue);
        assert_eq!(s.on_result(1, 2, 5, 0.7), Decision::Continue);
        // Trial 2 sees trials 0 (mean 0.85) and 1 (0.7): median 0.775 > its best 0.2.
        assert!(matches!(s.on_result(2, 2, 5, 0.2), Decision::Stop(_)));
    }

    #[test]
    fn fifo_never_stops_and_nan_counts_as_worst() {
        let mut s = Scheduler::new(&SchedulerSpec::Fifo, Mode::Max, 1, 2);
        assert_eq!(s.on_result(0, 1, 2, f64::NAN), Decision::Continue);
        assert_eq!(s.on_result(0, 2, 2, 0.1), Decision::Complete);
        let mut s = Scheduler::new(&asha(1, 2.0), Mode::Max, 2, 4);
        s.on_result(0, 1, 4, 0.1);
        assert!(matches!(s.on_result(1, 1, 4, f64::NAN), Decision::Stop(_)));
    }
}
