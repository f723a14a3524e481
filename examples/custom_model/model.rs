//! `entity_net`: a model that is not in millrace, written as a user writes one. A learned
//! embedding for each `entity` and each `cat`, an MLP tower over the dense block, and a linear
//! head over the three. Plus a loss of our own: focal loss.

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, Initializer, Linear, LinearConfig};
use burn::tensor::activation::{log_softmax, relu};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};
use millrace::ml::burn;
use millrace::ml::model::{FeatureLayout, Input, Inputs, Model, ModelShape, Task};
use millrace::ml::trainer::{TargetTensor, UserLoss};
use serde::{Deserialize, Serialize};

/// The model's keys in a pipeline: `model = { kind = "entity_net", hidden = 32, entity_dim = 8 }`.
#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct EntityNetConfig {
    /// Width of the dense tower.
    #[serde(default = "default_hidden")]
    pub hidden: usize,
    /// Width of an entity's embedding.
    #[serde(default = "default_entity_dim")]
    pub entity_dim: usize,
    /// Width of a category's embedding.
    #[serde(default = "default_cat_dim")]
    pub cat_dim: usize,
}

fn default_hidden() -> usize {
    32
}
fn default_entity_dim() -> usize {
    8
}
fn default_cat_dim() -> usize {
    3
}

/// The burn module.
#[derive(Module, Debug)]
pub struct EntityNetModule<B: Backend> {
    tower_in: Linear<B>,
    tower_out: Linear<B>,
    entity: Embedding<B>,
    cat: Embedding<B>,
    head: Linear<B>,
}

/// The glue millrace needs.
pub struct EntityNet;

fn embed<B: Backend>(table: &Embedding<B>, codes: Tensor<B, 1, Int>) -> Tensor<B, 2> {
    let rows = codes.dims()[0];
    let [_, width] = table.weight.shape().dims();
    table
        .forward(codes.reshape([rows, 1]))
        .reshape([rows, width])
}

impl Model for EntityNet {
    type Config = EntityNetConfig;
    type Module<B: Backend> = EntityNetModule<B>;

    fn inputs(_: &EntityNetConfig, _: &FeatureLayout) -> Vec<Input> {
        vec![
            Input::Dense,
            Input::Index("entity".into()),
            Input::Index("cat".into()),
        ]
    }

    fn validate(config: &EntityNetConfig, shape: &ModelShape) -> millrace::ml::Result<()> {
        if config.hidden == 0 || config.entity_dim == 0 || config.cat_dim == 0 {
            return Err(millrace::ml::Error::config(
                "train.model",
                "hidden, entity_dim and cat_dim must be at least 1",
            ));
        }
        if shape.task == Task::Regression {
            return Err(millrace::ml::Error::config(
                "train.task",
                "entity_net is a classifier",
            ));
        }
        Ok(())
    }

    fn init<B: Backend>(
        config: &EntityNetConfig,
        shape: &ModelShape,
        device: &B::Device,
    ) -> EntityNetModule<B> {
        let cardinality = |column: &str| {
            shape
                .layout
                .index_input(column)
                .map_or(1, |i| i.cardinality)
        };
        let small = Initializer::Normal {
            mean: 0.0,
            std: 0.1,
        };
        EntityNetModule {
            tower_in: LinearConfig::new(shape.layout.dense, config.hidden).init(device),
            tower_out: LinearConfig::new(config.hidden, config.hidden).init(device),
            entity: EmbeddingConfig::new(cardinality("entity"), config.entity_dim)
                .with_initializer(small.clone())
                .init(device),
            cat: EmbeddingConfig::new(cardinality("cat"), config.cat_dim)
                .with_initializer(small)
                .init(device),
            head: LinearConfig::new(
                config.hidden + config.entity_dim + config.cat_dim,
                shape.output_dim(),
            )
            .init(device),
        }
    }

    fn forward<B: Backend>(
        net: &EntityNetModule<B>,
        inputs: &Inputs<B>,
    ) -> millrace::ml::Result<Tensor<B, 2>> {
        let tower = relu(
            net.tower_out
                .forward(relu(net.tower_in.forward(inputs.dense()?))),
        );
        let entity = embed(&net.entity, inputs.index("entity")?);
        let cat = embed(&net.cat, inputs.index("cat")?);
        Ok(net.head.forward(Tensor::cat(vec![tower, entity, cat], 1)))
    }
}

/// Focal loss (γ = 2): `-(1 - p)² log p` of the true class; easy rows count less.
pub struct Focal;

impl UserLoss for Focal {
    fn validate(task: &Task) -> millrace::ml::Result<()> {
        match task {
            Task::Classification { .. } => Ok(()),
            Task::Regression => Err(millrace::ml::Error::config(
                "train.loss",
                "focal is a classification loss",
            )),
        }
    }

    fn per_row<B: Backend>(output: Tensor<B, 2>, targets: TargetTensor<B>) -> Tensor<B, 1> {
        let TargetTensor::Classes(classes) = targets else {
            unreachable!("validate refused regression")
        };
        let [rows, _] = output.dims();
        let log_p = log_softmax(output, 1)
            .gather(1, classes.reshape([rows, 1]))
            .reshape([rows]);
        let p = log_p.clone().exp();
        p.neg().add_scalar(1.0).powi_scalar(2).mul(log_p).neg()
    }
}
