//! [`FlatOptimizer`]: SGD and Adam over flat `f32` vectors, with a state that can be saved.
//!
//! Each rule is burn 0.21's, operation for operation, in `f32`:
//!
//! - weight decay (`burn::optim::decay`): `g = w * weight_decay + g`, before anything else;
//! - SGD momentum without dampening (`burn::optim::momentum`): `v = g` on the first step, then
//!   `v = g + v * momentum`; the step uses `v`, or `v * momentum + g` with Nesterov;
//! - Adam (`burn::optim::adam`): `m = g * (1 - β1)` and `v = g² * (1 - β2)` on the first step,
//!   then `m = m * β1 + g * (1 - β1)`, `v = v * β2 + g² * (1 - β2)`; with `t` the 1-based step,
//!   `c2 = sqrt(1 - β2^t)`, the step is `(m * (c2 / (1 - β1^t))) / (sqrt(v) + ε * c2)`;
//! - finally `w = w - step * lr`, with `lr` rounded to `f32`.

use serde::{Deserialize, Serialize};

use super::OptimizerSpec;
use crate::error::{Error, Result};

/// Which optimiser an [`OptimizerState`] belongs to.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// Stochastic gradient descent.
    Sgd,
    /// Adam.
    Adam,
}

impl std::fmt::Display for OptimizerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Sgd => "sgd",
            Self::Adam => "adam",
        })
    }
}

/// Everything a [`FlatOptimizer`] carries from one step to the next, in the model's flat
/// parameter order: save it with the parameters, hand both to a fresh replica, and training
/// continues exactly as if it had never stopped.
///
/// The hyper-parameters are not part of the state: they come from the [`OptimizerSpec`] given to
/// [`FlatOptimizer::restore`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OptimizerState {
    /// The optimiser the state belongs to.
    pub kind: OptimizerKind,
    /// Steps applied so far.
    pub steps: u64,
    /// SGD momentum velocity, one value per parameter; empty for Adam and for SGD without
    /// momentum.
    #[serde(default)]
    pub velocity: Vec<f32>,
    /// Adam first moment, one value per parameter; empty for SGD.
    #[serde(default)]
    pub moment1: Vec<f32>,
    /// Adam second (uncentred) moment, one value per parameter; empty for SGD.
    #[serde(default)]
    pub moment2: Vec<f32>,
}

/// The update rule with its hyper-parameters in `f32`, as burn holds them.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Rule {
    Sgd {
        /// `None` when momentum is 0 (burn then keeps no velocity).
        momentum: Option<f32>,
        nesterov: bool,
        weight_decay: Option<f32>,
    },
    Adam {
        beta1: f32,
        beta2: f32,
        epsilon: f32,
        weight_decay: Option<f32>,
    },
}

impl Rule {
    fn from_spec(spec: &OptimizerSpec) -> Result<Self> {
        spec.validate()?;
        // burn's `WeightDecayConfig` and `MomentumConfig` are only built for values > 0.
        let decay = |wd: f64| (wd > 0.0).then_some(wd as f32);
        Ok(match *spec {
            OptimizerSpec::Sgd {
                momentum,
                weight_decay,
                nesterov,
            } => Rule::Sgd {
                momentum: (momentum > 0.0).then_some(momentum as f32),
                nesterov,
                weight_decay: decay(weight_decay),
            },
            OptimizerSpec::Adam {
                beta1,
                beta2,
                epsilon,
                weight_decay,
            } => Rule::Adam {
                beta1: beta1 as f32,
                beta2: beta2 as f32,
                epsilon: epsilon as f32,
                weight_decay: decay(weight_decay),
            },
        })
    }

    fn kind(&self) -> OptimizerKind {
        match self {
            Rule::Sgd { .. } => OptimizerKind::Sgd,
            Rule::Adam { .. } => OptimizerKind::Adam,
        }
    }

    /// Lengths of `(velocity, moment1, moment2)` for `num_params` parameters.
    fn state_lens(&self, num_params: usize) -> (usize, usize, usize) {
        match self {
            Rule::Sgd { momentum, .. } => (momentum.map_or(0, |_| num_params), 0, 0),
            Rule::Adam { .. } => (0, num_params, num_params),
        }
    }
}

/// SGD or Adam over flat `f32` parameters and gradients (the order is the caller's: the
/// [`Mlp`](crate::model::Mlp) flat order for a [`Trainer`](crate::trainer::Trainer)).
///
/// ```
/// use millrace_ml::optim::{FlatOptimizer, OptimizerSpec};
/// let spec = OptimizerSpec::Sgd { momentum: 0.5, weight_decay: 0.0, nesterov: false };
/// let mut opt = FlatOptimizer::new(&spec, 2)?;
/// let mut w = [1.0f32, -1.0];
/// opt.step(&mut w, &[1.0, 2.0], 0.5)?; // v = g
/// assert_eq!(w, [0.5, -2.0]);
/// opt.step(&mut w, &[1.0, 2.0], 0.5)?; // v = g + 0.5 v
/// assert_eq!(w, [-0.25, -3.5]);
///
/// // Save the state and continue elsewhere.
/// let mut copy = FlatOptimizer::restore(&spec, 2, opt.state())?;
/// let mut w2 = w;
/// opt.step(&mut w, &[0.1, 0.2], 0.5)?;
/// copy.step(&mut w2, &[0.1, 0.2], 0.5)?;
/// assert_eq!(w, w2);
/// assert_eq!(copy.steps(), 3);
/// # Ok::<(), millrace_ml::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct FlatOptimizer {
    rule: Rule,
    num_params: usize,
    steps: u64,
    velocity: Vec<f32>,
    moment1: Vec<f32>,
    moment2: Vec<f32>,
}

impl FlatOptimizer {
    /// A fresh optimiser (no step taken) for `num_params` parameters; checks `spec`.
    pub fn new(spec: &OptimizerSpec, num_params: usize) -> Result<Self> {
        let rule = Rule::from_spec(spec)?;
        let (nv, nm1, nm2) = rule.state_lens(num_params);
        Ok(Self {
            rule,
            num_params,
            steps: 0,
            velocity: vec![0.0; nv],
            moment1: vec![0.0; nm1],
            moment2: vec![0.0; nm2],
        })
    }

    /// An optimiser configured by `spec` that continues from `state` (see
    /// [`FlatOptimizer::state`]).
    ///
    /// Errors ([`Error::Input`]) when the state belongs to another kind of optimiser or its
    /// vectors do not have one value per parameter; the message says which field differs.
    pub fn restore(spec: &OptimizerSpec, num_params: usize, state: OptimizerState) -> Result<Self> {
        let rule = Rule::from_spec(spec)?;
        if state.kind != rule.kind() {
            return Err(Error::Input(format!(
                "optimizer state is for `{}` but the optimizer is `{}` \
                 (train.optimizer.kind must match the checkpoint)",
                state.kind,
                rule.kind()
            )));
        }
        let (nv, nm1, nm2) = rule.state_lens(num_params);
        for (field, got, expected) in [
            ("velocity", state.velocity.len(), nv),
            ("moment1", state.moment1.len(), nm1),
            ("moment2", state.moment2.len(), nm2),
        ] {
            if got != expected {
                let why = match (expected, &rule) {
                    (0, Rule::Sgd { momentum: None, .. }) if field == "velocity" => {
                        "SGD without momentum keeps none".to_string()
                    }
                    (0, _) => format!("`{}` keeps none", rule.kind()),
                    _ => format!("one per parameter of a model with {num_params}"),
                };
                return Err(Error::Input(format!(
                    "optimizer state `{}` has {got} `{field}` values, expected {expected} ({why})",
                    state.kind
                )));
            }
        }
        Ok(Self {
            rule,
            num_params,
            steps: state.steps,
            velocity: state.velocity,
            moment1: state.moment1,
            moment2: state.moment2,
        })
    }

    /// A copy of the state, to save with the parameters.
    pub fn state(&self) -> OptimizerState {
        OptimizerState {
            kind: self.rule.kind(),
            steps: self.steps,
            velocity: self.velocity.clone(),
            moment1: self.moment1.clone(),
            moment2: self.moment2.clone(),
        }
    }

    /// Steps applied so far (including those of a restored state).
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Number of parameters the optimiser updates.
    pub fn num_params(&self) -> usize {
        self.num_params
    }

    /// Which optimiser this is.
    pub fn kind(&self) -> OptimizerKind {
        self.rule.kind()
    }

    /// One step at learning rate `lr`: updates `params` in place with `grads`.
    ///
    /// Both must have [`FlatOptimizer::num_params`] values ([`Error::Input`] otherwise, with
    /// nothing changed).
    pub fn step(&mut self, params: &mut [f32], grads: &[f32], lr: f64) -> Result<()> {
        for (what, len) in [("parameter", params.len()), ("gradient", grads.len())] {
            if len != self.num_params {
                return Err(Error::Input(format!(
                    "{what} vector has {len} values, the optimizer has {} parameters",
                    self.num_params
                )));
            }
        }
        let lr = lr as f32;
        let first = self.steps == 0;
        match self.rule {
            Rule::Sgd {
                momentum,
                nesterov,
                weight_decay,
            } => sgd_step(
                params,
                grads,
                &mut self.velocity,
                SgdParams {
                    lr,
                    first,
                    momentum,
                    nesterov,
                    weight_decay,
                },
            ),
            Rule::Adam {
                beta1,
                beta2,
                epsilon,
                weight_decay,
            } => {
                // burn counts time in `usize` and raises to `time as i32`.
                let time = i32::try_from(self.steps.saturating_add(1)).unwrap_or(i32::MAX);
                let bias_correction2_sqrt = (1.0 - beta2.powi(time)).sqrt();
                let combined_factor = bias_correction2_sqrt / (1.0 - beta1.powi(time));
                adam_step(
                    params,
                    grads,
                    &mut self.moment1,
                    &mut self.moment2,
                    AdamParams {
                        lr,
                        first,
                        beta1,
                        beta2,
                        combined_factor,
                        denominator_epsilon: epsilon * bias_correction2_sqrt,
                        weight_decay,
                    },
                )
            }
        }
        self.steps += 1;
        Ok(())
    }
}

#[derive(Clone, Copy)]
struct SgdParams {
    lr: f32,
    first: bool,
    momentum: Option<f32>,
    nesterov: bool,
    weight_decay: Option<f32>,
}

/// burn's `Sgd::step` element-wise. Each branch is its own loop so the compiler can vectorise it.
fn sgd_step(params: &mut [f32], grads: &[f32], velocity: &mut [f32], p: SgdParams) {
    let decayed = |w: f32, g: f32| match p.weight_decay {
        Some(wd) => w * wd + g,
        None => g,
    };
    match p.momentum {
        None => {
            for (w, &g) in params.iter_mut().zip(grads) {
                let g = decayed(*w, g);
                *w -= g * p.lr;
            }
        }
        Some(m) => {
            for ((w, &g), v) in params.iter_mut().zip(grads).zip(velocity.iter_mut()) {
                let g = decayed(*w, g);
                // burn: `grad * (1 - dampening) + velocity * momentum`, dampening 0 (and
                // `g * 1.0 == g`).
                *v = if p.first { g } else { g + *v * m };
                let step = if p.nesterov { *v * m + g } else { *v };
                *w -= step * p.lr;
            }
        }
    }
}

#[derive(Clone, Copy)]
struct AdamParams {
    lr: f32,
    first: bool,
    beta1: f32,
    beta2: f32,
    combined_factor: f32,
    denominator_epsilon: f32,
    weight_decay: Option<f32>,
}

/// burn's `Adam::step` (its `AdaptiveMomentum::transform`, no AMSGrad) element-wise.
fn adam_step(
    params: &mut [f32],
    grads: &[f32],
    moment1: &mut [f32],
    moment2: &mut [f32],
    p: AdamParams,
) {
    let f1 = 1.0 - p.beta1;
    let f2 = 1.0 - p.beta2;
    for (((w, &g), m1), m2) in params
        .iter_mut()
        .zip(grads)
        .zip(moment1.iter_mut())
        .zip(moment2.iter_mut())
    {
        let g = match p.weight_decay {
            Some(wd) => *w * wd + g,
            None => g,
        };
        if p.first {
            *m1 = g * f1;
            *m2 = (g * g) * f2;
        } else {
            *m1 = *m1 * p.beta1 + g * f1;
            *m2 = *m2 * p.beta2 + (g * g) * f2;
        }
        let step = (*m1 * p.combined_factor) / (m2.sqrt() + p.denominator_epsilon);
        *w -= step * p.lr;
    }
}
