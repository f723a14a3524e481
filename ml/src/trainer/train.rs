//! [`Trainer`]: one model replica with its optimiser, speaking flat `f32` vectors.
//!
//! The engine runs one `Trainer` per worker. Each computes gradients on its own rows
//! ([`Trainer::gradients`]), the engine sums the flat gradient vectors across workers, and every
//! replica applies the same sum ([`Trainer::apply`]). Because parameters are initialised from this
//! crate's own seeded RNG (not burn's process-global one), the CPU backend is deterministic and
//! the optimiser ([`FlatOptimizer`]) is plain `f32` arithmetic over the flat vectors, replicas
//! fed the same sums stay bit-identical.
//!
//! A checkpoint is [`Trainer::parameters`] plus [`Trainer::optimizer_state`]; a fresh replica
//! built with any seed continues exactly where the checkpoint left off after
//! [`Trainer::set_parameters`] and [`Trainer::restore_optimizer`].

use burn::tensor::activation::softmax;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};

use super::dense_step::DenseStep;
use super::loss::{Loss, per_row_loss};
use super::targets::TargetsRef;
use crate::error::{Error, Result};
use crate::model::{Mlp, MlpConfig, ModelSpec, Task, read_f32};
use crate::optim::{FlatOptimizer, OptimizerSpec, OptimizerState};

/// A model replica plus optimiser on autodiff backend `B`.
///
/// Flat vectors (parameters, gradients) use the order documented on [`Mlp`]: per layer, the
/// `[d_input, d_output]` weight row-major, then the bias.
pub struct Trainer<B: AutodiffBackend> {
    config: MlpConfig,
    task: Task,
    loss: Loss,
    /// Always `Some` between calls; taken while the parameters are written into a new module.
    model: Option<Mlp<B>>,
    /// The parameters, flat: the optimiser updates these. The module holds the same values,
    /// except while `stale`.
    params: Vec<f32>,
    /// The gradient without burn (see [`DenseStep`]); `None` computes it through burn's autodiff
    /// ([`Trainer::with_burn_gradients`], the reference the tests compare with).
    dense: Option<DenseStep>,
    /// Whether `params` moved on since they were written into the module (the dense step does
    /// not need the module; it is brought up to date when something reads it).
    stale: bool,
    optimizer: OptimizerSpec,
    optim: FlatOptimizer,
    device: B::Device,
    num_params: usize,
}

// A replica is built on one thread and may be moved to a worker thread.
const _: () = {
    const fn assert_send<T: Send>() {}
    assert_send::<Trainer<crate::backend::CpuAutodiff>>();
};

impl<B: AutodiffBackend> std::fmt::Debug for Trainer<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer")
            .field("config", &self.config)
            .field("task", &self.task)
            .field("loss", &self.loss)
            .field("optimizer", &self.optimizer)
            .field("steps", &self.optim.steps())
            .field("num_params", &self.num_params)
            .finish_non_exhaustive()
    }
}

impl<B: AutodiffBackend> Trainer<B> {
    /// A replica of `model` for `task` on `input_dim` features, trained on `loss` with
    /// `optimizer`, parameters drawn from `seed`.
    ///
    /// Same arguments, same parameters — on any thread. `loss` must fit the task
    /// ([`Loss::validate`]; [`Loss::for_task`] gives the default).
    pub fn new(
        model: &ModelSpec,
        optimizer: &OptimizerSpec,
        loss: Loss,
        task: &Task,
        input_dim: usize,
        seed: u64,
        device: &B::Device,
    ) -> Result<Self> {
        let config = replica_config(model, optimizer, loss, task, input_dim, seed)?;
        let num_params = config.num_params();
        let optim = FlatOptimizer::new(optimizer, num_params)?;
        let module = config.init::<B>(device);
        let params = config.initial_params();
        let dense = DenseStep::new(&config, loss, *task);
        Ok(Self {
            num_params,
            config,
            task: *task,
            loss,
            dense: Some(dense),
            stale: false,
            model: Some(module),
            params,
            optimizer: optimizer.clone(),
            optim,
            device: device.clone(),
        })
    }

    /// The same replica computing its gradients through burn's autodiff graph instead of the
    /// hand-written dense step: slower, equal to float rounding; the reference in tests.
    pub fn with_burn_gradients(mut self) -> Self {
        // The module catches up with what the dense step trained; if writing it failed, the
        // module is missing and every later call says so.
        let _ = self.fresh_module();
        self.dense = None;
        self
    }

    /// Number of parameters (length of the flat vectors).
    pub fn num_params(&self) -> usize {
        self.num_params
    }

    /// Number of input features.
    pub fn input_dim(&self) -> usize {
        self.config.input_dim
    }

    /// The task the model was built for.
    pub fn task(&self) -> &Task {
        &self.task
    }

    /// The model's configuration (layer widths, activation, seed).
    pub fn config(&self) -> &MlpConfig {
        &self.config
    }

    /// The loss the gradients are taken of.
    pub fn loss(&self) -> Loss {
        self.loss
    }

    /// Optimiser steps applied so far ([`Trainer::apply`] calls, plus those of a restored
    /// optimiser state).
    pub fn steps(&self) -> u64 {
        self.optim.steps()
    }

    fn module(&self) -> Result<&Mlp<B>> {
        self.model
            .as_ref()
            .ok_or_else(|| Error::Internal("trainer module missing after a failed step".into()))
    }

    fn check_rows(&self, x: &[f32], rows: usize) -> Result<()> {
        super::targets::check_features(x, rows, self.config.input_dim)
    }

    fn input<BB: Backend<Device = B::Device>>(&self, x: &[f32], rows: usize) -> Tensor<BB, 2> {
        Tensor::from_data(
            TensorData::new(x.to_vec(), [rows, self.config.input_dim]),
            &self.device,
        )
    }

    /// Forward and backward pass on `rows` rows (`x` row-major, `rows * input_dim` values).
    ///
    /// The loss differentiated is `loss_scale * Σ_rows loss(row)` (the trainer's [`Loss`]; pass
    /// [`Reduction::scale`](super::Reduction::scale) for a mean or a sum). Returns the unscaled loss sum (accumulated in `f64`) and the flat gradient.
    /// Gradients are additive over rows: the gradients of two halves sum to the gradient of the
    /// whole, which is what data-parallel training relies on.
    pub fn gradients(
        &mut self,
        x: &[f32],
        y: TargetsRef<'_>,
        rows: usize,
        loss_scale: f32,
    ) -> Result<(f64, Vec<f32>)> {
        self.check_rows(x, rows)?;
        if y.len() != rows {
            return Err(Error::Input(format!("{} targets for {rows} rows", y.len())));
        }
        if rows == 0 {
            return Ok((0.0, vec![0.0; self.num_params]));
        }
        // The loss was checked against the task when the replica was built.
        if let Some(dense) = self.dense.as_mut() {
            let mut grads = vec![0.0; self.num_params];
            let loss_sum = dense.gradients(&self.params, x, y, rows, loss_scale, &mut grads)?;
            return Ok((loss_sum, grads));
        }
        // Without the dense step the module is never stale.
        let model = self.module()?;
        let output = model.forward(self.input::<B>(x, rows));
        let per_row = per_row_loss(output, y, &self.task, self.loss, &self.device)?;
        let loss_sum: f64 = read_f32(per_row.clone().inner())?
            .iter()
            .map(|&v| f64::from(v))
            .sum();
        let grads = per_row.sum().mul_scalar(loss_scale).backward();

        let mut parts: Vec<Tensor<B::InnerBackend, 1>> = Vec::with_capacity(model.layers.len() * 2);
        for (layer, &(d_in, d_out)) in model.layers.iter().zip(&self.config.layer_shapes()) {
            parts.push(match layer.weight.grad(&grads) {
                Some(g) => g.reshape([d_in * d_out]),
                None => Tensor::zeros([d_in * d_out], &self.device),
            });
            if let Some(bias) = &layer.bias {
                parts.push(
                    bias.grad(&grads)
                        .unwrap_or_else(|| Tensor::zeros([d_out], &self.device)),
                );
            }
        }
        let flat = read_f32(Tensor::cat(parts, 0))?;
        if flat.len() != self.num_params {
            return Err(Error::Internal(format!(
                "gradient has {} values, model has {} parameters",
                flat.len(),
                self.num_params
            )));
        }
        Ok((loss_sum, flat))
    }

    /// Applies a flat (already summed) gradient with the optimiser at learning rate `lr`.
    ///
    /// A gradient of the wrong length is an [`Error::Input`] and changes nothing.
    pub fn apply(&mut self, grads: &[f32], lr: f64) -> Result<()> {
        super::targets::check_flat_len("gradient", grads, self.num_params)?;
        self.module()?;
        self.optim.step(&mut self.params, grads, lr)?;
        if self.dense.is_some() {
            self.stale = true;
            return Ok(());
        }
        let model = self.take_module()?;
        // `load_flat` only fails on a length mismatch, excluded above; if it ever did, the module
        // stays missing and every later call reports it.
        self.model = Some(model.load_flat(&self.params)?);
        Ok(())
    }

    /// The module, with the current parameters written into it first if they moved on.
    fn fresh_module(&mut self) -> Result<&Mlp<B>> {
        if self.stale {
            let model = self.take_module()?;
            self.model = Some(model.load_flat(&self.params)?);
            self.stale = false;
        }
        self.module()
    }

    fn take_module(&mut self) -> Result<Mlp<B>> {
        self.model
            .take()
            .ok_or_else(|| Error::Internal("trainer module missing after a failed step".into()))
    }

    /// The parameters, flat, in the same order as the gradients.
    ///
    /// Returns an empty vector only if the module was lost to a panic inside a previous step.
    pub fn parameters(&self) -> Vec<f32> {
        self.try_parameters().unwrap_or_default()
    }

    /// The parameters, flat; errors instead of returning an empty vector.
    pub fn try_parameters(&self) -> Result<Vec<f32>> {
        self.module()?;
        Ok(self.params.clone())
    }

    /// Replaces the parameters (e.g. to sync a replica, or from a checkpoint); the optimiser
    /// state is kept. A vector of the wrong length is an [`Error::Input`] and changes nothing.
    pub fn set_parameters(&mut self, params: &[f32]) -> Result<()> {
        let model = self.take_module()?;
        match model.clone().load_flat(params) {
            Ok(m) => {
                self.model = Some(m);
                self.params.clear();
                self.params.extend_from_slice(params);
                self.stale = false;
                Ok(())
            }
            Err(e) => {
                self.model = Some(model);
                Err(e)
            }
        }
    }

    /// The optimiser's state (step count, moments), to checkpoint with
    /// [`Trainer::parameters`].
    pub fn optimizer_state(&self) -> OptimizerState {
        self.optim.state()
    }

    /// Continues from a checkpointed optimiser state (see [`Trainer::optimizer_state`]); restore
    /// the parameters with [`Trainer::set_parameters`].
    ///
    /// Errors when `state` belongs to another optimiser kind or another model size (the message
    /// says which field differs); the current state is then kept.
    pub fn restore_optimizer(&mut self, state: OptimizerState) -> Result<()> {
        self.optim = FlatOptimizer::restore(&self.optimizer, self.num_params, state)?;
        Ok(())
    }

    /// Predictions for `rows` rows: softmax probabilities (`rows * num_classes`, row-major)
    /// for classification, one value per row for regression.
    pub fn predict(&self, x: &[f32], rows: usize) -> Result<Vec<f32>> {
        use burn::module::AutodiffModule;
        self.check_rows(x, rows)?;
        if rows == 0 {
            return Ok(Vec::new());
        }
        if self.dense.is_some() {
            // The dense forward pass, a block of rows at a time (its buffers stay in the cache
            // and small; they are its own, as this takes `&self`).
            const BLOCK: usize = 2048;
            let mut step = DenseStep::new(&self.config, self.loss, self.task);
            let dim = self.config.input_dim;
            let mut out = Vec::with_capacity(rows * self.config.output_dim);
            for block in x.chunks(BLOCK * dim) {
                step.predict_into(&self.params, block, block.len() / dim, &mut out);
            }
            return Ok(out);
        }
        let model = self.module()?.valid();
        predict_with(&model, &self.task, self.input(x, rows))
    }

    /// The weights to store in a model bundle (same as [`Trainer::parameters`]).
    pub fn to_bundle_weights(&self) -> Vec<f32> {
        self.parameters()
    }

    /// The model (e.g. to inspect or export it), with the current parameters.
    pub fn model(&mut self) -> Option<&Mlp<B>> {
        self.fresh_module().ok()
    }
}

/// The model configuration of a replica after checking every argument a replica is built
/// from (on any device): the model against the task, the loss, the feature count and the
/// optimiser's hyper-parameters.
pub(crate) fn replica_config(
    model: &ModelSpec,
    optimizer: &OptimizerSpec,
    loss: Loss,
    task: &Task,
    input_dim: usize,
    seed: u64,
) -> Result<MlpConfig> {
    model.validate(task)?;
    loss.validate(task)?;
    if input_dim == 0 {
        return Err(Error::config(
            "train.features",
            "the model has no input features; list at least one feature column",
        ));
    }
    optimizer.validate()?;
    Ok(MlpConfig::from_spec(model, task, input_dim).with_seed(seed))
}

/// Forward pass plus the task's output transform (softmax for classification).
pub(crate) fn predict_with<BB: Backend>(
    model: &Mlp<BB>,
    task: &Task,
    input: Tensor<BB, 2>,
) -> Result<Vec<f32>> {
    let out = model.forward(input);
    match task {
        Task::Classification { .. } => read_f32(softmax(out, 1)),
        Task::Regression => read_f32(out),
    }
}
