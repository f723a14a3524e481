//! [`LrSchedule`]: the learning rate of each optimiser step of a run whose length is known.
//!
//! ```text
//! warmup   step < w:   lr · (step + 1) / w
//! constant             lr
//! linear               min_lr + (lr − min_lr) · (1 − f)
//! cosine               min_lr + (lr − min_lr) · (1 + cos(π f)) / 2
//!                      f = (step − w) / (total − w), the fraction of the decay done
//! ```
//!
//! The rate depends on nothing but the step's index and the run's length, so a resumed run, a
//! run on another number of workers and every replica of a step use the same rate.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How the rate moves between the first and last step.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Decay {
    /// The rate stays at `lr` (after the warmup).
    #[default]
    Constant,
    /// Straight down to `min_lr` at the last step.
    Linear,
    /// Half a cosine down to `min_lr` at the last step.
    Cosine,
}

/// The `train.lr_schedule` setting: `{ kind = "cosine", warmup_steps = 100, min_lr = 1e-5 }`.
///
/// ```
/// use millrace_ml::optim::{Decay, LrSchedule};
/// let s: LrSchedule = serde_json::from_str(r#"{"kind": "linear"}"#).unwrap();
/// assert_eq!(s.kind, Decay::Linear);
/// assert_eq!(s.lr_at(0.1, 0, 10), 0.1);
/// assert!((s.lr_at(0.1, 5, 10) - 0.05).abs() < 1e-12);
/// assert_eq!(LrSchedule::default().lr_at(0.1, 9, 10), 0.1);
/// ```
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct LrSchedule {
    /// `constant` (default), `linear` or `cosine`.
    #[serde(default)]
    pub kind: Decay,
    /// Steps over which the rate climbs from `lr / warmup_steps` to `lr` first (0: none).
    #[serde(default)]
    pub warmup_steps: u64,
    /// The rate a decay ends at, at the run's last step (0 by default).
    #[serde(default)]
    pub min_lr: f64,
}

impl LrSchedule {
    /// A schedule that decays `kind`-wise, with no warmup and down to 0.
    pub fn new(kind: Decay) -> Self {
        LrSchedule {
            kind,
            ..LrSchedule::default()
        }
    }

    /// True when every step uses the base rate: the default, written nowhere.
    pub fn is_constant(&self) -> bool {
        *self == LrSchedule::default()
    }

    /// The rate of step `step` (0-based) of a run of `total` steps whose base rate is `lr`.
    pub fn lr_at(&self, lr: f64, step: u64, total: u64) -> f64 {
        let warmup = self.warmup_steps;
        if step < warmup {
            return lr * (step + 1) as f64 / warmup as f64;
        }
        let done = (step - warmup) as f64 / total.saturating_sub(warmup).max(1) as f64;
        let left = match self.kind {
            Decay::Constant => return lr,
            Decay::Linear => 1.0 - done.min(1.0),
            Decay::Cosine => 0.5 * (1.0 + (std::f64::consts::PI * done.min(1.0)).cos()),
        };
        self.min_lr + (lr - self.min_lr) * left
    }

    /// Checks the schedule against the base rate `lr`; `key` is where the schedule is set
    /// (`train.lr_schedule`), for the errors.
    pub fn validate(&self, key: &str, lr: f64) -> Result<()> {
        let min_lr = format!("{key}.min_lr");
        if !(self.min_lr.is_finite() && self.min_lr >= 0.0) {
            return Err(Error::config(
                min_lr,
                format!("must be 0 or more, got {}", self.min_lr),
            ));
        }
        if self.min_lr > 0.0 && self.kind == Decay::Constant {
            return Err(Error::config(
                min_lr,
                "a constant rate has no decay to end at: set kind = \"linear\" or \"cosine\", or remove min_lr",
            ));
        }
        if self.min_lr > lr {
            return Err(Error::config(
                min_lr,
                format!(
                    "{} is above lr ({lr}): a decay goes down to min_lr",
                    self.min_lr
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_follow_the_formulas() {
        let cosine = LrSchedule {
            kind: Decay::Cosine,
            warmup_steps: 4,
            min_lr: 0.01,
        };
        // Warmup: 1/4, 2/4, 3/4, 4/4 of the rate.
        let warm: Vec<f64> = (0..4).map(|s| cosine.lr_at(1.0, s, 14)).collect();
        assert_eq!(warm, vec![0.25, 0.5, 0.75, 1.0]);
        // Then half a cosine over the 10 steps left: the top at step 4, the middle at step 9.
        assert_eq!(cosine.lr_at(1.0, 4, 14), 1.0);
        assert!((cosine.lr_at(1.0, 9, 14) - 0.505).abs() < 1e-12);
        assert!((cosine.lr_at(1.0, 14, 14) - 0.01).abs() < 1e-12);
        // Past the end (a resumed run with more steps) it stays at the floor.
        assert!((cosine.lr_at(1.0, 30, 14) - 0.01).abs() < 1e-12);
        let linear = LrSchedule::new(Decay::Linear);
        let rates: Vec<f64> = (0..4).map(|s| linear.lr_at(2.0, s, 4)).collect();
        assert_eq!(rates, vec![2.0, 1.5, 1.0, 0.5]);
        let constant = LrSchedule {
            warmup_steps: 2,
            ..LrSchedule::default()
        };
        let rates: Vec<f64> = (0..4).map(|s| constant.lr_at(2.0, s, 4)).collect();
        assert_eq!(rates, vec![1.0, 2.0, 2.0, 2.0]);
        assert!(LrSchedule::default().is_constant() && !constant.is_constant());
    }

    #[test]
    fn bad_schedules_say_what_to_change() {
        let err = |s: LrSchedule| {
            s.validate("train.lr_schedule", 0.1)
                .unwrap_err()
                .to_string()
        };
        let floor = |kind, min_lr| LrSchedule {
            kind,
            warmup_steps: 0,
            min_lr,
        };
        assert!(
            err(floor(Decay::Cosine, -1.0))
                .contains("`train.lr_schedule.min_lr`: must be 0 or more")
        );
        assert!(err(floor(Decay::Linear, 0.5)).contains("above lr (0.1)"));
        assert!(err(floor(Decay::Constant, 0.01)).contains("set kind = \"linear\""));
        assert!(
            floor(Decay::Cosine, 0.01)
                .validate("train.lr_schedule", 0.1)
                .is_ok()
        );
        let parsed: std::result::Result<LrSchedule, _> =
            serde_json::from_str(r#"{"kind": "step"}"#);
        assert!(
            parsed
                .unwrap_err()
                .to_string()
                .contains("unknown variant `step`")
        );
    }
}
