//! Optimisers: the user's configuration ([`OptimizerSpec`]) and the optimiser itself
//! ([`FlatOptimizer`]), which updates flat `f32` parameter vectors and whose whole state
//! ([`OptimizerState`]) can be saved and restored.
//!
//! The update rules replicate burn 0.21's `Sgd` and `Adam` operation for operation (same `f32`
//! arithmetic in the same order), so a model trained with either gets the same parameters up to
//! float rounding. Owning the step means the state is ours: a checkpoint holds the step count and
//! the moment vectors in the model's flat parameter order, not burn records keyed by random
//! parameter ids.

mod flat;
mod schedule;
#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub use flat::{FlatOptimizer, OptimizerKind, OptimizerState};
pub use schedule::{Decay, LrSchedule};

fn default_beta1() -> f64 {
    0.9
}
fn default_beta2() -> f64 {
    0.999
}
fn default_epsilon() -> f64 {
    1e-8
}

/// The `train.optimizer` config section.
///
/// ```
/// use millrace_ml::optim::OptimizerSpec;
/// let spec: OptimizerSpec = serde_json::from_str(r#"{"kind": "sgd", "momentum": 0.9}"#).unwrap();
/// assert!(matches!(spec, OptimizerSpec::Sgd { momentum, .. } if momentum == 0.9));
/// assert!(matches!(OptimizerSpec::default(), OptimizerSpec::Adam { beta1, .. } if beta1 == 0.9));
/// ```
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum OptimizerSpec {
    /// Stochastic gradient descent, optionally with (Nesterov) momentum and L2 weight decay.
    ///
    /// Momentum uses no dampening (PyTorch's convention): `v = momentum * v + g`.
    Sgd {
        /// Momentum factor in `[0, 1)`; 0 disables momentum.
        #[serde(default)]
        momentum: f64,
        /// L2 penalty added to the gradient (`g + weight_decay * w`).
        #[serde(default)]
        weight_decay: f64,
        /// Nesterov momentum (needs `momentum > 0`).
        #[serde(default)]
        nesterov: bool,
    },
    /// Adam.
    Adam {
        /// Decay of the first moment, in `[0, 1)`.
        #[serde(default = "default_beta1")]
        beta1: f64,
        /// Decay of the second moment, in `[0, 1)`.
        #[serde(default = "default_beta2")]
        beta2: f64,
        /// Numerical stability term, `> 0`.
        #[serde(default = "default_epsilon")]
        epsilon: f64,
        /// L2 penalty added to the gradient (`g + weight_decay * w`).
        #[serde(default)]
        weight_decay: f64,
    },
}

impl Default for OptimizerSpec {
    fn default() -> Self {
        Self::Adam {
            beta1: default_beta1(),
            beta2: default_beta2(),
            epsilon: default_epsilon(),
            weight_decay: 0.0,
        }
    }
}

fn check_unit(key: &str, value: f64) -> Result<()> {
    if (0.0..1.0).contains(&value) {
        Ok(())
    } else {
        Err(Error::config(
            key,
            format!("must be in [0, 1), got {value}"),
        ))
    }
}

fn check_non_negative(key: &str, value: f64) -> Result<()> {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        Err(Error::config(
            key,
            format!("must be a finite number >= 0, got {value}"),
        ))
    }
}

impl OptimizerSpec {
    /// Checks the values; errors name the config key.
    pub fn validate(&self) -> Result<()> {
        match *self {
            Self::Sgd {
                momentum,
                weight_decay,
                nesterov,
            } => {
                check_unit("train.optimizer.momentum", momentum)?;
                check_non_negative("train.optimizer.weight_decay", weight_decay)?;
                if nesterov && momentum == 0.0 {
                    return Err(Error::config(
                        "train.optimizer.nesterov",
                        "Nesterov momentum needs `momentum` > 0 (e.g. 0.9)",
                    ));
                }
                Ok(())
            }
            Self::Adam {
                beta1,
                beta2,
                epsilon,
                weight_decay,
            } => {
                check_unit("train.optimizer.beta1", beta1)?;
                check_unit("train.optimizer.beta2", beta2)?;
                if !(epsilon.is_finite() && epsilon > 0.0) {
                    return Err(Error::config(
                        "train.optimizer.epsilon",
                        format!("must be > 0, got {epsilon}"),
                    ));
                }
                check_non_negative("train.optimizer.weight_decay", weight_decay)
            }
        }
    }

    /// The optimiser this spec configures.
    pub fn kind(&self) -> OptimizerKind {
        match self {
            Self::Sgd { .. } => OptimizerKind::Sgd,
            Self::Adam { .. } => OptimizerKind::Adam,
        }
    }
}
