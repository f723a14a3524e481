//! `embedding_mlp`: a learned embedding per `index`-encoded categorical column, concatenated
//! with the dense block, then an MLP. Built on the [`Model`] interface, as a user's model is.
//!
//! ```text
//! dense [rows, d] ─────────────────────────────┐
//! index:cat    [rows] ─► Embedding(V₁+1, e₁) ───┼─► concat [rows, d+Σe] ─► MLP ─► logits
//! index:entity [rows] ─► Embedding(V₂+1, e₂) ───┘
//! ```

use std::collections::BTreeMap;

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, Initializer};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

use super::inputs::Inputs;
use super::interface::{Model, ModelShape};
use super::layout::{FeatureLayout, Input};
use super::mlp::{Mlp, MlpConfig};
use super::spec::Activation;
use crate::error::{Error, Result};

/// The `embedding_mlp` keys of a model table.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingMlpConfig {
    /// Hidden layer widths of the MLP over the concatenation (may be empty: a linear layer).
    #[serde(default)]
    pub hidden: Vec<usize>,
    /// Activation between hidden layers.
    #[serde(default)]
    pub activation: Activation,
    /// The `index` columns to embed; default: every `index` column.
    #[serde(default)]
    pub columns: Option<Vec<String>>,
    /// Embedding width for every column; default: [`rule_of_thumb`] of its cardinality.
    #[serde(default)]
    pub embedding_dim: Option<usize>,
    /// Embedding width per column, over `embedding_dim`.
    #[serde(default)]
    pub embedding_dims: BTreeMap<String, usize>,
}

/// The default embedding width of a column with `cardinality` codes: `1.6 · n^0.56` (the rule
/// fast.ai uses), at least 2 and at most 32.
pub fn rule_of_thumb(cardinality: usize) -> usize {
    let width = (1.6 * (cardinality as f64).powf(0.56)).round() as usize;
    width.clamp(2, 32)
}

impl EmbeddingMlpConfig {
    /// The embedded columns with their cardinality and width, in order.
    pub fn embedded(&self, layout: &FeatureLayout) -> Vec<(String, usize, usize)> {
        let columns: Vec<String> = match &self.columns {
            Some(columns) => columns.clone(),
            None => layout.index.iter().map(|i| i.name.clone()).collect(),
        };
        columns
            .into_iter()
            .map(|column| {
                let cardinality = layout.index_input(&column).map_or(0, |i| i.cardinality);
                let width = self
                    .embedding_dims
                    .get(&column)
                    .copied()
                    .or(self.embedding_dim)
                    .unwrap_or_else(|| rule_of_thumb(cardinality));
                (column, cardinality, width)
            })
            .collect()
    }
}

/// The `embedding_mlp` network.
#[derive(Module, Debug)]
pub struct EmbeddingMlpNet<B: Backend> {
    /// One table per embedded column, in column order.
    pub embeddings: Vec<Embedding<B>>,
    /// The MLP over `[dense, embeddings..]`.
    pub mlp: Mlp<B>,
    /// The embedded columns.
    #[module(skip)]
    pub columns: Vec<String>,
    /// Whether the dense block is part of the input.
    #[module(skip)]
    pub dense: bool,
}

/// The built-in `embedding_mlp` model.
#[derive(Clone, Copy, Debug)]
pub struct EmbeddingMlp;

impl Model for EmbeddingMlp {
    type Config = EmbeddingMlpConfig;
    type Module<B: Backend> = EmbeddingMlpNet<B>;

    fn inputs(config: &EmbeddingMlpConfig, layout: &FeatureLayout) -> Vec<Input> {
        let mut inputs = Vec::new();
        if layout.dense > 0 {
            inputs.push(Input::Dense);
        }
        inputs.extend(
            config
                .embedded(layout)
                .into_iter()
                .map(|(c, _, _)| Input::Index(c)),
        );
        inputs
    }

    fn validate(config: &EmbeddingMlpConfig, shape: &ModelShape) -> Result<()> {
        let embedded = config.embedded(&shape.layout);
        if embedded.is_empty() {
            return Err(Error::config(
                "train.model.columns",
                "embedding_mlp has no column to embed: list categorical columns under \
                 train.features.index (or use kind = \"mlp\")",
            ));
        }
        if let Some((column, _, _)) = embedded.iter().find(|(_, _, width)| *width == 0) {
            return Err(Error::config(
                "train.model.embedding_dims",
                format!("column `{column}` has embedding width 0; every width must be at least 1"),
            ));
        }
        if let Some(column) = config
            .embedding_dims
            .keys()
            .find(|c| !embedded.iter().any(|(e, _, _)| e == *c))
        {
            return Err(Error::config(
                "train.model.embedding_dims",
                format!("`{column}` is not an embedded column (embedded: {embedded:?})"),
            ));
        }
        if let Some(i) = config.hidden.iter().position(|&w| w == 0) {
            return Err(Error::config(
                "train.model.hidden",
                format!("hidden layer {i} has width 0; every width must be at least 1"),
            ));
        }
        Ok(())
    }

    fn init<B: Backend>(
        config: &EmbeddingMlpConfig,
        shape: &ModelShape,
        device: &B::Device,
    ) -> EmbeddingMlpNet<B> {
        let embedded = config.embedded(&shape.layout);
        let embeddings: Vec<Embedding<B>> = embedded
            .iter()
            .map(|(_, cardinality, width)| {
                // Small values, so that no entity starts far from the others.
                EmbeddingConfig::new((*cardinality).max(1), *width)
                    .with_initializer(Initializer::Normal {
                        mean: 0.0,
                        std: 0.1,
                    })
                    .init(device)
            })
            .collect();
        let input_dim = shape.layout.dense + embedded.iter().map(|(_, _, w)| w).sum::<usize>();
        let mlp = MlpConfig::new(input_dim, shape.output_dim())
            .with_hidden(config.hidden.clone())
            .with_activation(config.activation)
            .with_seed(shape.seed)
            .init(device);
        EmbeddingMlpNet {
            embeddings,
            mlp,
            columns: embedded.into_iter().map(|(c, _, _)| c).collect(),
            dense: shape.layout.dense > 0,
        }
    }

    fn forward<B: Backend>(net: &EmbeddingMlpNet<B>, inputs: &Inputs<B>) -> Result<Tensor<B, 2>> {
        let rows = inputs.rows();
        let mut parts = Vec::with_capacity(net.embeddings.len() + 1);
        if net.dense {
            parts.push(inputs.dense()?);
        }
        for (table, column) in net.embeddings.iter().zip(&net.columns) {
            let codes = inputs.index(column)?.reshape([rows, 1]);
            let [_, width] = table.weight.shape().dims();
            parts.push(table.forward(codes).reshape([rows, width]));
        }
        Ok(net.mlp.forward(Tensor::cat(parts, 1)))
    }
}
