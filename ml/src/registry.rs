//! The models and losses millrace knows by name: the built-in ones, and those a user's binary
//! registers ([`register_model`], [`register_loss`]) before it runs a pipeline.
//!
//! A pipeline names a model by `kind` and a loss by `train.loss`; the engine looks them up here to
//! check the config before any work starts, to build replicas, and to load and serve bundles.
//! `mlp`, `logistic` and `linear` are registered too, but train and serve on their hand-written
//! fast paths; everything else goes through [`ModuleTrainer`].

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock, RwLock};

use crate::backend::{Cpu, CpuAutodiff, cpu_device};
use crate::error::{Error, Result};
use crate::model::params::{ParamShape, load_flat, param_shapes};
use crate::model::{EmbeddingMlp, FeatureLayout, Input, Model, ModelShape, Task};
use crate::optim::OptimizerSpec;
use crate::trainer::{
    DynTrainer, Loss, ModuleTrainer, Objective, UserLoss, UserLossFn, checked_forward,
    output_values, seeded_init,
};

/// Names the built-in fast path answers to.
pub const FAST_PATH_KINDS: [&str; 3] = ["mlp", "logistic", "linear"];

/// A predictor of some registered model, its type erased: what the server and the batch scorer
/// hold for a model that is not a built-in fast path.
pub trait DynPredictor: Send + Sync + std::fmt::Debug {
    /// The model's registered name.
    fn kind(&self) -> &str;
    /// Values per input row.
    fn input_dim(&self) -> usize;
    /// Values per output row (classes, or 1).
    fn output_dim(&self) -> usize;
    /// Probabilities (classification) or values (regression), row-major.
    fn predict(&self, x: &[f32], rows: usize) -> Result<Vec<f32>>;
}

struct ModulePredictor<M: Model> {
    kind: String,
    module: M::Module<Cpu>,
    layout: Arc<FeatureLayout>,
    task: Task,
}

impl<M: Model> std::fmt::Debug for ModulePredictor<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModulePredictor")
            .field("kind", &self.kind)
            .field("task", &self.task)
            .finish_non_exhaustive()
    }
}

impl<M: Model> DynPredictor for ModulePredictor<M>
where
    M::Module<Cpu>: Send + Sync,
{
    fn kind(&self) -> &str {
        &self.kind
    }
    fn input_dim(&self) -> usize {
        self.layout.width()
    }
    fn output_dim(&self) -> usize {
        self.task.output_dim()
    }
    fn predict(&self, x: &[f32], rows: usize) -> Result<Vec<f32>> {
        if rows == 0 {
            return Ok(Vec::new());
        }
        let output = checked_forward::<Cpu, M>(
            &self.kind,
            &self.module,
            x,
            rows,
            &self.layout,
            &self.task,
            &cpu_device(),
        )?;
        output_values(&self.task, output)
    }
}

type ParseFn = fn(&str, &serde_json::Value, &ModelShape) -> Result<Vec<Input>>;
type TrainerFn = fn(
    &str,
    &serde_json::Value,
    ModelShape,
    Objective<CpuAutodiff>,
    &OptimizerSpec,
    u64,
) -> Result<Box<dyn DynTrainer>>;
type PredictorFn =
    fn(&str, &serde_json::Value, ModelShape, &[f32]) -> Result<Box<dyn DynPredictor>>;
type ShapesFn = fn(&str, &serde_json::Value, &ModelShape) -> Result<Vec<ParamShape>>;

/// A registered model: its constructors, monomorphised for the model's type.
#[derive(Clone, Copy)]
pub struct ModelEntry {
    check: ParseFn,
    trainer: TrainerFn,
    predictor: PredictorFn,
    shapes: ShapesFn,
}

fn parse_config<M: Model>(kind: &str, keys: &serde_json::Value) -> Result<M::Config> {
    serde_json::from_value(keys.clone()).map_err(|e| key_error(kind, &e))
}

/// A model config that does not parse, as a config error naming `train.model.<key>` when serde
/// names an unknown or missing key (in backticks), else `train.model`.
pub(crate) fn key_error(kind: &str, e: &serde_json::Error) -> Error {
    let message = e.to_string();
    let key = message
        .split('`')
        .nth(1)
        .filter(|_| message.starts_with("unknown field") || message.starts_with("missing field"))
        .map_or_else(|| "train.model".to_owned(), |k| format!("train.model.{k}"));
    Error::config(key, format!("model `{kind}`: {message}"))
}

fn check<M: Model>(kind: &str, keys: &serde_json::Value, shape: &ModelShape) -> Result<Vec<Input>> {
    let config = parse_config::<M>(kind, keys)?;
    M::validate(&config, shape)?;
    let inputs = M::inputs(&config, &shape.layout);
    shape.layout.check(kind, &inputs)?;
    Ok(inputs)
}

fn trainer<M: Model>(
    kind: &str,
    keys: &serde_json::Value,
    shape: ModelShape,
    objective: Objective<CpuAutodiff>,
    optimizer: &OptimizerSpec,
    seed: u64,
) -> Result<Box<dyn DynTrainer>>
where
    M::Module<CpuAutodiff>: Send,
    M::Module<Cpu>: Send,
{
    let config = parse_config::<M>(kind, keys)?;
    let trainer = ModuleTrainer::<CpuAutodiff, M>::new(
        kind,
        config,
        shape,
        objective,
        optimizer,
        seed,
        &cpu_device(),
    )?;
    Ok(Box::new(trainer))
}

fn predictor<M: Model>(
    kind: &str,
    keys: &serde_json::Value,
    shape: ModelShape,
    params: &[f32],
) -> Result<Box<dyn DynPredictor>>
where
    M::Module<Cpu>: Send + Sync,
{
    let config = parse_config::<M>(kind, keys)?;
    M::validate(&config, &shape)?;
    let module = seeded_init::<Cpu, M>(&config, &shape, shape.seed, &cpu_device());
    let module = load_flat(module, params)?;
    Ok(Box::new(ModulePredictor::<M> {
        kind: kind.to_owned(),
        module,
        layout: Arc::new(shape.layout.clone()),
        task: shape.task,
    }))
}

fn shapes<M: Model>(
    kind: &str,
    keys: &serde_json::Value,
    shape: &ModelShape,
) -> Result<Vec<ParamShape>> {
    let config = parse_config::<M>(kind, keys)?;
    let module = seeded_init::<Cpu, M>(&config, shape, shape.seed, &cpu_device());
    Ok(param_shapes::<Cpu, _>(&module))
}

impl ModelEntry {
    /// The entry of model type `M`.
    pub fn of<M: Model>() -> Self
    where
        M::Module<CpuAutodiff>: Send,
        M::Module<Cpu>: Send + Sync,
    {
        ModelEntry {
            check: check::<M>,
            trainer: trainer::<M>,
            predictor: predictor::<M>,
            shapes: shapes::<M>,
        }
    }

    /// Parses and checks `keys` for `shape`; returns the tensors the model reads.
    pub fn check(
        &self,
        kind: &str,
        keys: &serde_json::Value,
        shape: &ModelShape,
    ) -> Result<Vec<Input>> {
        (self.check)(kind, keys, shape)
    }

    /// A CPU replica.
    pub fn trainer(
        &self,
        kind: &str,
        keys: &serde_json::Value,
        shape: ModelShape,
        objective: Objective<CpuAutodiff>,
        optimizer: &OptimizerSpec,
        seed: u64,
    ) -> Result<Box<dyn DynTrainer>> {
        (self.trainer)(kind, keys, shape, objective, optimizer, seed)
    }

    /// A CPU predictor holding `params`.
    pub fn predictor(
        &self,
        kind: &str,
        keys: &serde_json::Value,
        shape: ModelShape,
        params: &[f32],
    ) -> Result<Box<dyn DynPredictor>> {
        (self.predictor)(kind, keys, shape, params)
    }

    /// The parameters' dotted paths and shapes, in flat order.
    pub fn param_shapes(
        &self,
        kind: &str,
        keys: &serde_json::Value,
        shape: &ModelShape,
    ) -> Result<Vec<ParamShape>> {
        (self.shapes)(kind, keys, shape)
    }
}

/// A registered user loss.
#[derive(Clone)]
pub struct LossEntry {
    cpu: UserLossFn<CpuAutodiff>,
}

#[derive(Default)]
struct Catalog {
    models: BTreeMap<String, ModelEntry>,
    losses: BTreeMap<String, LossEntry>,
}

fn catalog() -> &'static RwLock<Catalog> {
    static CATALOG: OnceLock<RwLock<Catalog>> = OnceLock::new();
    CATALOG.get_or_init(|| {
        let mut catalog = Catalog::default();
        catalog
            .models
            .insert("embedding_mlp".into(), ModelEntry::of::<EmbeddingMlp>());
        catalog
            .models
            .insert("mlp".into(), ModelEntry::of::<crate::model::MlpModel>());
        catalog.models.insert(
            "logistic".into(),
            ModelEntry::of::<crate::model::LogisticModel>(),
        );
        catalog.models.insert(
            "linear".into(),
            ModelEntry::of::<crate::model::LinearModel>(),
        );
        RwLock::new(catalog)
    })
}

fn valid_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(Error::config(
            "model kind",
            format!("`{name}`: a registered name is letters, digits, `_` and `-`"),
        ))
    }
}

/// Registers model type `M` as `kind`. A built-in name or a name registered before is an error
/// (two models must not answer to one name).
pub fn register_model<M: Model>(kind: &str) -> Result<()>
where
    M::Module<CpuAutodiff>: Send,
    M::Module<Cpu>: Send + Sync,
{
    valid_name(kind)?;
    let mut catalog = catalog()
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if catalog.models.contains_key(kind) {
        return Err(Error::config(
            "model kind",
            format!("a model named `{kind}` is already registered; pick another name"),
        ));
    }
    catalog
        .models
        .insert(kind.to_owned(), ModelEntry::of::<M>());
    Ok(())
}

/// Registers loss `L` as `name` (the `train.loss` value). Built-in names are taken.
pub fn register_loss<L: UserLoss>(name: &str) -> Result<()> {
    valid_name(name)?;
    if ["cross_entropy", "mse", "mae"].contains(&name) {
        return Err(Error::config(
            "train.loss",
            format!("`{name}` is a built-in loss; register yours under another name"),
        ));
    }
    let mut catalog = catalog()
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if catalog.losses.contains_key(name) {
        return Err(Error::config(
            "train.loss",
            format!("a loss named `{name}` is already registered; pick another name"),
        ));
    }
    catalog.losses.insert(
        name.to_owned(),
        LossEntry {
            cpu: UserLossFn::of::<L>(name),
        },
    );
    Ok(())
}

/// The model registered as `kind`; the error lists the known kinds and says how to register one.
pub fn model(kind: &str) -> Result<ModelEntry> {
    let catalog = catalog()
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    catalog.models.get(kind).copied().ok_or_else(|| {
        Error::config(
            "train.model.kind",
            format!(
                "no model is registered as `{kind}` (known: {}); a model of your own is registered \
                 in your binary: millrace::App::new().model::<YourModel>(\"{kind}\").main()",
                catalog
                    .models
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    })
}

/// The loss named `name` on the CPU: a built-in one or a registered [`UserLoss`].
pub fn loss(name: &str) -> Result<Objective<CpuAutodiff>> {
    if let Ok(builtin) = serde_json::from_value::<Loss>(serde_json::Value::String(name.into())) {
        return Ok(Objective::Builtin(builtin));
    }
    let catalog = catalog()
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    catalog
        .losses
        .get(name)
        .map(|e| Objective::User(e.cpu.clone()))
        .ok_or_else(|| {
            let mut known = vec!["cross_entropy", "mse", "mae"];
            known.extend(catalog.losses.keys().map(String::as_str));
            Error::config(
                "train.loss",
                format!(
                    "no loss is named `{name}` (known: {}); a loss of your own is registered in \
                     your binary: millrace::App::new().loss::<YourLoss>(\"{name}\")",
                    known.join(", ")
                ),
            )
        })
}

/// Every registered model kind.
pub fn model_kinds() -> Vec<String> {
    let catalog = catalog()
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    catalog.models.keys().cloned().collect()
}
