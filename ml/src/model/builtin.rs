//! The built-in MLP (and logistic and linear regression, MLPs without hidden layers) as a
//! [`Model`]. The engine trains them on their hand-written fast path ([`Trainer`](crate::Trainer)
//! on the CPU, the cudarc trainer on a GPU); this implementation is the same network through
//! the generic path, which gives the same parameters and predictions for the same seed.

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

use super::inputs::Inputs;
use super::interface::{Model, ModelShape};
use super::layout::{FeatureLayout, Input};
use super::mlp::{Mlp, MlpConfig};
use super::spec::{Activation, ModelKind, ModelSpec};
use crate::error::Result;

/// The MLP's keys in a model table (`kind` aside).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MlpKeys {
    /// Hidden layer widths, input side first.
    #[serde(default)]
    pub hidden: Vec<usize>,
    /// Activation between hidden layers.
    #[serde(default)]
    pub activation: Activation,
}

/// The built-in MLP family as a [`Model`]: `kind` is `mlp`, `logistic` or `linear`.
#[derive(Clone, Copy, Debug)]
pub struct BuiltinMlp<const KIND: u8>;

/// `mlp`.
pub type MlpModel = BuiltinMlp<0>;
/// `logistic`.
pub type LogisticModel = BuiltinMlp<1>;
/// `linear`.
pub type LinearModel = BuiltinMlp<2>;

impl<const KIND: u8> BuiltinMlp<KIND> {
    fn kind() -> ModelKind {
        match KIND {
            0 => ModelKind::Mlp,
            1 => ModelKind::Logistic,
            _ => ModelKind::Linear,
        }
    }

    /// The [`ModelSpec`] of `keys`.
    pub fn spec(keys: &MlpKeys) -> ModelSpec {
        ModelSpec {
            kind: Self::kind(),
            hidden: keys.hidden.clone(),
            activation: keys.activation,
        }
    }

    fn config(keys: &MlpKeys, shape: &ModelShape) -> MlpConfig {
        MlpConfig::from_spec(&Self::spec(keys), &shape.task, shape.layout.width())
            .with_seed(shape.seed)
    }
}

impl<const KIND: u8> Model for BuiltinMlp<KIND> {
    type Config = MlpKeys;
    type Module<B: Backend> = Mlp<B>;

    fn inputs(_: &MlpKeys, _: &FeatureLayout) -> Vec<Input> {
        vec![Input::All]
    }

    fn validate(keys: &MlpKeys, shape: &ModelShape) -> Result<()> {
        Self::spec(keys).validate(&shape.task)
    }

    fn init<B: Backend>(keys: &MlpKeys, shape: &ModelShape, device: &B::Device) -> Mlp<B> {
        Self::config(keys, shape).init(device)
    }

    fn forward<B: Backend>(mlp: &Mlp<B>, inputs: &Inputs<B>) -> Result<Tensor<B, 2>> {
        Ok(mlp.forward(inputs.all()))
    }
}
