//! Optimiser configuration ([`OptimizerSpec`]) and its translation to burn's optimisers.

use burn::module::AutodiffModule;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{Adam, AdamConfig, GradientsParams, Optimizer, Sgd, SgdConfig};
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

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

fn decay(weight_decay: f64) -> Option<WeightDecayConfig> {
    (weight_decay > 0.0).then(|| WeightDecayConfig::new(weight_decay as f32))
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

    /// Builds the burn optimiser for module `M` on backend `B`.
    pub fn build<B: AutodiffBackend, M: AutodiffModule<B>>(&self) -> Result<BuiltOptimizer<M, B>> {
        self.validate()?;
        Ok(match *self {
            Self::Sgd {
                momentum,
                weight_decay,
                nesterov,
            } => {
                let momentum = (momentum > 0.0).then(|| {
                    MomentumConfig::new()
                        .with_momentum(momentum)
                        .with_dampening(0.0)
                        .with_nesterov(nesterov)
                });
                let config = SgdConfig::new()
                    .with_momentum(momentum)
                    .with_weight_decay(decay(weight_decay));
                BuiltOptimizer::Sgd(config.init())
            }
            Self::Adam {
                beta1,
                beta2,
                epsilon,
                weight_decay,
            } => {
                let config = AdamConfig::new()
                    .with_beta_1(beta1 as f32)
                    .with_beta_2(beta2 as f32)
                    .with_epsilon(epsilon as f32)
                    .with_weight_decay(decay(weight_decay));
                BuiltOptimizer::Adam(config.init())
            }
        })
    }
}

/// A configured burn optimiser (one of the kinds [`OptimizerSpec`] describes).
#[derive(Clone)]
pub enum BuiltOptimizer<M: AutodiffModule<B>, B: AutodiffBackend> {
    /// SGD.
    Sgd(OptimizerAdaptor<Sgd<B::InnerBackend>, M, B>),
    /// Adam.
    Adam(OptimizerAdaptor<Adam, M, B>),
}

impl<M: AutodiffModule<B>, B: AutodiffBackend> BuiltOptimizer<M, B> {
    /// One optimiser step at learning rate `lr`; returns the updated module.
    pub fn step(&mut self, lr: f64, module: M, grads: GradientsParams) -> M {
        match self {
            Self::Sgd(o) => o.step(lr, module, grads),
            Self::Adam(o) => o.step(lr, module, grads),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_defaults() -> Result<(), serde_json::Error> {
        let spec: OptimizerSpec = serde_json::from_str(r#"{"kind":"adam"}"#)?;
        assert_eq!(spec, OptimizerSpec::default());
        let spec: OptimizerSpec =
            serde_json::from_str(r#"{"kind":"sgd","momentum":0.5,"nesterov":true}"#)?;
        assert_eq!(
            spec,
            OptimizerSpec::Sgd {
                momentum: 0.5,
                weight_decay: 0.0,
                nesterov: true
            }
        );
        assert!(serde_json::from_str::<OptimizerSpec>(r#"{"kind":"sgd","lr":0.1}"#).is_err());
        Ok(())
    }

    #[test]
    fn validation_names_the_key() {
        let bad = OptimizerSpec::Sgd {
            momentum: 0.0,
            weight_decay: 0.0,
            nesterov: true,
        };
        let err = bad.validate().unwrap_err().to_string();
        assert!(err.contains("train.optimizer.nesterov"), "{err}");
        let bad = OptimizerSpec::Adam {
            beta1: 1.0,
            beta2: 0.999,
            epsilon: 1e-8,
            weight_decay: 0.0,
        };
        let err = bad.validate().unwrap_err().to_string();
        assert!(err.contains("train.optimizer.beta1"), "{err}");
    }
}
