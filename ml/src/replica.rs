//! [`Replica`]: one model replica on the CPU or on a GPU, behind the one interface the engine
//! drives (gradients, apply, fused steps, parameters, optimiser state, predictions).

use crate::backend::{CpuAutodiff, cpu_device};
use crate::device::{Device, GpuOptions};
use crate::error::Result;
use crate::model::{MlpConfig, ModelSpec, Task};
use crate::optim::{OptimizerSpec, OptimizerState};
use crate::trainer::{DynTrainer, Loss, TargetsRef, Trainer};

/// A model replica with its optimiser, on the CPU ([`Trainer`]) or an NVIDIA GPU
/// (`GpuTrainer`, with the `cuda` feature). Both speak the same flat vectors: replicas on
/// different devices exchange gradients, checkpoints and bundles alike.
#[derive(Debug)]
pub enum Replica {
    /// burn on the CPU.
    Cpu(Box<Trainer<CpuAutodiff>>),
    /// cuBLASLt and our kernels on a GPU.
    #[cfg(feature = "cuda")]
    Gpu(Box<crate::gpu::GpuTrainer>),
    /// Any registered [`Model`](crate::model::Model) through the generic
    /// [`ModuleTrainer`](crate::trainer::ModuleTrainer).
    Module(Box<dyn DynTrainer>),
}

macro_rules! each {
    ($self:expr, $t:ident => $e:expr) => {
        match $self {
            Replica::Cpu($t) => $e,
            #[cfg(feature = "cuda")]
            Replica::Gpu($t) => $e,
            Replica::Module($t) => $e,
        }
    };
}

impl Replica {
    /// A replica on `device`; the arguments are [`Trainer::new`]'s. `gpu` says how to use a GPU
    /// (its ordinal is `device`'s).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        model: &ModelSpec,
        optimizer: &OptimizerSpec,
        loss: Loss,
        task: &Task,
        input_dim: usize,
        seed: u64,
        device: Device,
        gpu: &GpuOptions,
    ) -> Result<Self> {
        match device {
            Device::Cpu => {
                let _ = gpu;
                Ok(Replica::Cpu(Box::new(Trainer::new(
                    model,
                    optimizer,
                    loss,
                    task,
                    input_dim,
                    seed,
                    &cpu_device(),
                )?)))
            }
            #[cfg(feature = "cuda")]
            Device::Cuda(ordinal) => {
                let options = GpuOptions {
                    ordinal,
                    ..gpu.clone()
                };
                Ok(Replica::Gpu(Box::new(crate::gpu::GpuTrainer::new(
                    model, optimizer, loss, task, input_dim, seed, &options,
                )?)))
            }
            #[cfg(not(feature = "cuda"))]
            Device::Cuda(_) => {
                device.check("train.device")?;
                unreachable!("Device::check refuses GPUs in builds without the cuda feature")
            }
        }
    }

    /// Where the replica runs.
    pub fn device(&self) -> Device {
        match self {
            Replica::Cpu(_) | Replica::Module(_) => Device::Cpu,
            #[cfg(feature = "cuda")]
            Replica::Gpu(t) => Device::Cuda(t.ordinal()),
        }
    }

    /// Number of parameters (length of the flat vectors).
    pub fn num_params(&self) -> usize {
        each!(self, t => t.num_params())
    }

    /// Number of input values per row.
    pub fn input_dim(&self) -> usize {
        match self {
            Replica::Module(t) => t.shape().layout.width(),
            Replica::Cpu(t) => t.config().input_dim,
            #[cfg(feature = "cuda")]
            Replica::Gpu(t) => t.config().input_dim,
        }
    }

    /// The task the model was built for.
    pub fn task(&self) -> &Task {
        match self {
            Replica::Module(t) => &t.shape().task,
            Replica::Cpu(t) => t.task(),
            #[cfg(feature = "cuda")]
            Replica::Gpu(t) => t.task(),
        }
    }

    /// The built-in MLP's configuration (`None` for another model).
    pub fn config(&self) -> Option<&MlpConfig> {
        match self {
            Replica::Module(_) => None,
            Replica::Cpu(t) => Some(t.config()),
            #[cfg(feature = "cuda")]
            Replica::Gpu(t) => Some(t.config()),
        }
    }

    /// The config name of the loss the gradients are taken of.
    pub fn loss_name(&self) -> String {
        match self {
            Replica::Module(t) => t.loss_name(),
            Replica::Cpu(t) => t.loss().name().to_owned(),
            #[cfg(feature = "cuda")]
            Replica::Gpu(t) => t.loss().name().to_owned(),
        }
    }

    /// Optimiser steps applied so far.
    pub fn steps(&self) -> u64 {
        each!(self, t => t.steps())
    }

    /// See [`Trainer::gradients`].
    pub fn gradients(
        &mut self,
        x: &[f32],
        y: TargetsRef<'_>,
        rows: usize,
        loss_scale: f32,
    ) -> Result<(f64, Vec<f32>)> {
        each!(self, t => t.gradients(x, y, rows, loss_scale))
    }

    /// See [`Trainer::apply`].
    pub fn apply(&mut self, grads: &[f32], lr: f64) -> Result<()> {
        each!(self, t => t.apply(grads, lr))
    }

    /// Gradient and optimiser step in one, for a replica that trains alone (no gradient
    /// exchange). Returns the loss sum of the step before the one it started — on a GPU the step
    /// runs while the caller prepares the next batch — and `None` when there was none; on the
    /// CPU the step is done on return and its own loss sum comes back. [`Replica::flush`] gives
    /// the last one.
    pub fn step(
        &mut self,
        x: &[f32],
        y: TargetsRef<'_>,
        rows: usize,
        loss_scale: f32,
        lr: f64,
    ) -> Result<Option<f64>> {
        match self {
            Replica::Cpu(t) => {
                let (loss, grads) = t.gradients(x, y, rows, loss_scale)?;
                t.apply(&grads, lr)?;
                Ok(Some(loss))
            }
            Replica::Module(t) => {
                let (loss, grads) = t.gradients(x, y, rows, loss_scale)?;
                t.apply(&grads, lr)?;
                Ok(Some(loss))
            }
            #[cfg(feature = "cuda")]
            Replica::Gpu(t) => t.step(x, y, rows, loss_scale, lr),
        }
    }

    /// Whether [`Replica::step`] answers one step late (the GPU's overlap).
    pub fn steps_lag(&self) -> bool {
        !matches!(self, Replica::Cpu(_) | Replica::Module(_))
    }

    /// Waits for the step in flight and returns its loss sum (`None` when there is none).
    pub fn flush(&mut self) -> Result<Option<f64>> {
        match self {
            Replica::Cpu(_) | Replica::Module(_) => Ok(None),
            #[cfg(feature = "cuda")]
            Replica::Gpu(t) => t.flush(),
        }
    }

    /// The parameters, flat. Empty only if a CPU replica lost its module to a panic.
    pub fn parameters(&self) -> Vec<f32> {
        self.try_parameters().unwrap_or_default()
    }

    /// The parameters, flat.
    pub fn try_parameters(&self) -> Result<Vec<f32>> {
        each!(self, t => t.try_parameters())
    }

    /// See [`Trainer::set_parameters`].
    pub fn set_parameters(&mut self, params: &[f32]) -> Result<()> {
        each!(self, t => t.set_parameters(params))
    }

    /// See [`Trainer::optimizer_state`].
    pub fn optimizer_state(&self) -> Result<OptimizerState> {
        match self {
            Replica::Cpu(t) => Ok(t.optimizer_state()),
            Replica::Module(t) => Ok(t.optimizer_state()),
            #[cfg(feature = "cuda")]
            Replica::Gpu(t) => t.optimizer_state(),
        }
    }

    /// See [`Trainer::restore_optimizer`].
    pub fn restore_optimizer(&mut self, state: OptimizerState) -> Result<()> {
        each!(self, t => t.restore_optimizer(state))
    }

    /// See [`Trainer::predict`].
    pub fn predict(&self, x: &[f32], rows: usize) -> Result<Vec<f32>> {
        each!(self, t => t.predict(x, rows))
    }

    /// The weights to store in a model bundle.
    pub fn to_bundle_weights(&self) -> Vec<f32> {
        self.parameters()
    }
}

impl From<Trainer<CpuAutodiff>> for Replica {
    fn from(t: Trainer<CpuAutodiff>) -> Self {
        Replica::Cpu(Box::new(t))
    }
}
