//! The `[train]` section: the model, its optimiser and schedule, and where it trains.

use std::path::PathBuf;

use millrace_ml::model::{FeatureLayout, ModelChoice, ModelShape, Task};
use millrace_ml::optim::{LrSchedule, OptimizerSpec};
use millrace_ml::registry;
use millrace_ml::trainer::{Loss, LossChoice, Objective, Reduction};
use millrace_ml::{Device, GpuOptions, Precision, Replica};
use serde::{Deserialize, Serialize};

pub use super::bytes::ByteSize;
use super::default_true;
use crate::{Error, Result};

/// Task of the model.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum TaskKind {
    /// Predict a class (default loss: cross-entropy).
    #[default]
    Classification,
    /// Predict a number (default loss: squared error).
    Regression,
}

/// The model and its training.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrainSpec {
    /// Classification or regression.
    #[serde(default)]
    pub task: TaskKind,
    /// The model: `{ kind = "mlp", hidden = [64, 64], activation = "relu" }`, or any model
    /// registered in the running binary with its own keys (`{ kind = "two_tower", dim = 32 }`).
    pub model: ModelChoice,
    /// The optimiser: `{ kind = "adam" }` or `{ kind = "sgd", momentum = 0.9 }`.
    #[serde(default)]
    pub optimizer: OptimizerSpec,
    /// The loss: `cross_entropy` (classification), `mse` or `mae` (regression), or a loss
    /// registered in the running binary. Absent: the task's default (`cross_entropy` for
    /// classification, `mse` for regression).
    #[serde(default)]
    pub loss: Option<LossChoice>,
    /// How each step combines the losses of its rows: `mean` (default) or `sum` (the gradient
    /// is not divided by the number of rows in the global batch).
    #[serde(default)]
    pub reduction: Reduction,
    /// Learning rate.
    #[serde(default = "default_lr")]
    pub lr: f64,
    /// How the learning rate moves over the run: `{ kind = "cosine", warmup_steps = 100,
    /// min_lr = 1e-5 }`, with `kind` one of `constant` (default), `linear` or `cosine`. A
    /// decay spans the run's steps (`epochs` × steps per epoch, for a tune trial too, whichever
    /// rung stops it).
    /// Batch jobs only: a stream has no last step to decay towards.
    #[serde(default, skip_serializing_if = "LrSchedule::is_constant")]
    pub lr_schedule: LrSchedule,
    /// Global batch size (rows per step summed over all workers).
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Passes over the training rows.
    #[serde(default = "default_epochs")]
    pub epochs: usize,
    /// Seed of the parameter initialisation and the shuffling.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Shuffle the rows between epochs.
    #[serde(default = "default_true")]
    pub shuffle: bool,
    /// Write a training line to metrics.jsonl every this many steps.
    #[serde(default = "default_log_every")]
    pub log_every: usize,
    /// Where the replicas train: `cpu` (default), `cuda` (= `cuda:0`) or `cuda:N`; the workers
    /// of a process are spread over the GPUs from `N` on. A GPU needs a build with
    /// `--features cuda`.
    #[serde(default)]
    pub device: Device,
    /// Precision of a GPU's matrix products: `f32` (default) or `bf16` (mixed precision, f32
    /// master weights); `bf16` needs a `cuda` device.
    #[serde(default)]
    pub precision: Precision,
    /// Where compiled GPU kernels are cached (default: `$MILLRACE_KERNEL_CACHE`, else
    /// `~/.cache/millrace/kernels`).
    #[serde(default)]
    pub kernel_cache: Option<PathBuf>,
    /// How much memory a batch job's training rows may take in this process before they are
    /// spilled to local disk (`"512MiB"`, `"2GB"` or a number of bytes); default: half of the
    /// machine's memory. Spilled rows train to the same model, bit for bit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_budget: Option<ByteSize>,
}

impl TrainSpec {
    /// The model replica of the `local_worker`-th worker of this process, for the features
    /// `fitted` produces: this spec's model, optimiser, loss and seed (the same parameters on
    /// every worker), on [`TrainSpec::device`] (spread over the GPUs by worker).
    pub fn trainer(
        &self,
        fitted: &millrace_ml::preprocess::FittedPreprocessor,
        local_worker: usize,
    ) -> Result<Replica> {
        let task = fitted.task();
        let device = self.device.for_worker(local_worker);
        // Replica::new takes the ordinal from `device`.
        let gpu = GpuOptions {
            precision: self.precision,
            kernel_cache: self.kernel_cache.clone(),
            ..GpuOptions::default()
        };
        let loss = self.loss_choice(&task)?;
        if let (Some(spec), LossChoice::Builtin(loss)) = (self.model.builtin()?, &loss) {
            // The hand-written fast paths (burn on the CPU, cudarc on a GPU).
            return Ok(Replica::new(
                &spec,
                &self.optimizer,
                *loss,
                &task,
                fitted.input_dim(),
                self.seed,
                device,
                &gpu,
            )?);
        }
        if device != Device::Cpu {
            return Err(Error::config(
                "train.device",
                format!(
                    "model `{}` with loss `{loss}` trains on the CPU only in this build (the GPU \
                     path is the built-in MLP's with a built-in loss); set device = \"cpu\"",
                    self.model.kind
                ),
            ));
        }
        let entry = registry::model(&self.model.kind)?;
        let objective = match loss {
            LossChoice::Builtin(loss) => Objective::Builtin(loss),
            LossChoice::User(name) => registry::loss(&name)?,
        };
        let shape = ModelShape {
            layout: FeatureLayout::of(fitted)?,
            task,
            seed: self.seed,
        };
        let trainer = entry.trainer(
            &self.model.kind,
            &self.model.keys_value(),
            shape,
            objective,
            &self.optimizer,
            self.seed,
        )?;
        Ok(Replica::Module(trainer))
    }

    /// Checks the model and loss before any data is read: the kind is registered, its keys
    /// parse and fit the task, the tensors it reads are ones `features` makes, and the loss is
    /// known and fits the task. The class count and vocabularies are not known yet; two classes
    /// and one category per `index` column stand in for them.
    pub fn check_model(
        &self,
        features: &millrace_ml::preprocess::FeatureSpec,
        task: &Task,
    ) -> Result<()> {
        let loss = self.loss_choice(task)?;
        if let LossChoice::User(name) = &loss {
            registry::loss(name)?.validate(task)?;
        }
        if let Some(spec) = self.model.builtin()? {
            spec.validate(task)?;
            return Ok(());
        }
        let entry = registry::model(&self.model.kind)?;
        let layout = FeatureLayout::planned(features);
        let shape = ModelShape {
            layout,
            task: *task,
            seed: self.seed,
        };
        entry.check(&self.model.kind, &self.model.keys_value(), &shape)?;
        Ok(())
    }

    /// Checks, before any work starts, that the replicas can run where [`TrainSpec::device`]
    /// says: a GPU needs the `cuda` feature, the driver and the GPU; `bf16` needs a GPU.
    pub fn validate_device(&self) -> Result<()> {
        check_device(&self.device, self.precision, "train")
    }

    /// The built-in loss to train `task` with: [`TrainSpec::loss`], or the task's default
    /// ([`Loss::for_task`]). Errors, naming `train.loss`, when the loss does not fit the task or
    /// is a registered user loss (see [`TrainSpec::loss_choice`]).
    pub fn loss_for(&self, task: &Task) -> Result<Loss> {
        match self.loss_choice(task)? {
            LossChoice::Builtin(loss) => Ok(loss),
            LossChoice::User(name) => Err(Error::config(
                "train.loss",
                format!("`{name}` is a registered loss, not a built-in one"),
            )),
        }
    }

    /// The loss to train `task` with, built in or registered: [`TrainSpec::loss`], or the
    /// task's default. A built-in loss is checked against the task here; a registered one when
    /// it is looked up.
    pub fn loss_choice(&self, task: &Task) -> Result<LossChoice> {
        match &self.loss {
            None => Ok(LossChoice::Builtin(Loss::for_task(task))),
            Some(LossChoice::Builtin(loss)) => {
                loss.validate(task)?;
                Ok(LossChoice::Builtin(*loss))
            }
            Some(LossChoice::User(name)) => Ok(LossChoice::User(name.clone())),
        }
    }
}

fn default_lr() -> f64 {
    1e-3
}
fn default_batch_size() -> usize {
    512
}
fn default_epochs() -> usize {
    1
}
fn default_seed() -> u64 {
    42
}
fn default_log_every() -> usize {
    10
}

/// Checks `device` and `precision`, the settings `{section}.device` and `{section}.precision`.
pub(crate) fn check_device(device: &Device, precision: Precision, section: &str) -> Result<()> {
    if precision == Precision::Bf16 && *device == Device::Cpu {
        return Err(Error::config(
            format!("{section}.precision"),
            format!(
                "{section}.precision = \"bf16\" needs device = \"cuda\" (the CPU computes in f32): set {section}.device = \"cuda\" or remove {section}.precision"
            ),
        ));
    }
    // As the operators' own config error, so the CLI can point at the key in the file.
    device
        .check(&format!("{section}.device"))
        .map_err(|e| match e {
            millrace_ml::Error::Config { key, message } => Error::Config { key, message },
            other => other.into(),
        })
}
