//! [`Model`]: what a model needs to train, checkpoint, resume and serve through millrace.
//!
//! A model is a normal burn module plus a little glue: its config type (the model's keys in the
//! pipeline file), the named tensors it reads, how to build it and its forward pass. millrace
//! does the rest: replicas, the gradient collective, the flat optimisers, checkpoints, bundles and
//! serving all speak the module's parameters as one flat vector ([`params`](super::params)).
//!
//! ```
//! use burn::module::Module;
//! use burn::nn::{Linear, LinearConfig};
//! use burn::tensor::Tensor;
//! use burn::tensor::backend::Backend;
//! use millrace_ml::model::{FeatureLayout, Input, Inputs, Model, ModelShape};
//! use serde::{Deserialize, Serialize};
//!
//! /// Logistic regression, written as a user would.
//! struct MyLogistic;
//!
//! #[derive(Module, Debug)]
//! struct MyLogisticNet<B: Backend> {
//!     linear: Linear<B>,
//! }
//!
//! #[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
//! #[serde(deny_unknown_fields)]
//! struct MyLogisticConfig {}
//!
//! impl Model for MyLogistic {
//!     type Config = MyLogisticConfig;
//!     type Module<B: Backend> = MyLogisticNet<B>;
//!
//!     fn inputs(_: &Self::Config, _: &FeatureLayout) -> Vec<Input> {
//!         vec![Input::Dense]
//!     }
//!     fn init<B: Backend>(_: &Self::Config, shape: &ModelShape, device: &B::Device) -> MyLogisticNet<B> {
//!         MyLogisticNet { linear: LinearConfig::new(shape.layout.dense, shape.output_dim()).init(device) }
//!     }
//!     fn forward<B: Backend>(net: &MyLogisticNet<B>, inputs: &Inputs<B>) -> millrace_ml::Result<Tensor<B, 2>> {
//!         Ok(net.linear.forward(inputs.dense()?))
//!     }
//! }
//! ```

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::inputs::Inputs;
use super::layout::{FeatureLayout, Input};
use super::spec::Task;
use crate::error::Result;

/// What a model is built for: the tensors its rows hold and what it predicts.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelShape {
    /// The named tensors of each row.
    pub layout: FeatureLayout,
    /// The learning task.
    pub task: Task,
    /// The replica's seed, for a model that draws its initial values itself (the built-in MLP
    /// does, from millrace's own RNG); burn's initialisers need not look at it, millrace seeds
    /// the backend RNG with it.
    pub seed: u64,
}

impl ModelShape {
    /// Width of the output: `num_classes` logits, or 1 value for regression.
    pub fn output_dim(&self) -> usize {
        self.task.output_dim()
    }
}

/// A trainable model: a burn module on any backend, its config and the glue millrace needs.
///
/// Rules that keep replicas bit-identical: `init` draws only from burn's backend RNG (millrace
/// seeds it for each replica, under a lock, so every replica built with the same seed starts
/// identical), and `forward` is a pure function of the module and the inputs.
pub trait Model: Send + Sync + 'static {
    /// The model's own config keys (the pipeline's `model = { kind = "…", … }` table without
    /// `kind`). Use `#[serde(deny_unknown_fields)]` so a misspelt key is an error with its line
    /// and column.
    type Config: Serialize + DeserializeOwned + Clone + std::fmt::Debug + Send + Sync + 'static;

    /// The burn module.
    type Module<B: Backend>: Module<B>;

    /// The named tensors the model reads. Checked against what the fitted preprocessing
    /// produces before any training data is read.
    fn inputs(config: &Self::Config, layout: &FeatureLayout) -> Vec<Input>;

    /// Checks the config against `shape` (e.g. a regressor asked to classify); the error should
    /// name the config key, as `Error::config("train.model.hidden", …)` does.
    fn validate(config: &Self::Config, shape: &ModelShape) -> Result<()> {
        let _ = (config, shape);
        Ok(())
    }

    /// Builds the module with fresh parameters on `device`.
    fn init<B: Backend>(
        config: &Self::Config,
        shape: &ModelShape,
        device: &B::Device,
    ) -> Self::Module<B>;

    /// The forward pass: `[rows, num_classes]` logits for classification, `[rows, 1]` values for
    /// regression.
    fn forward<B: Backend>(module: &Self::Module<B>, inputs: &Inputs<B>) -> Result<Tensor<B, 2>>;
}
