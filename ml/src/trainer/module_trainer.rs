//! [`ModuleTrainer`]: a replica of any [`Model`], speaking the same flat vectors as the built-in
//! [`Trainer`](super::Trainer).
//!
//! Parameters and gradients are the module's float parameters in its visiting order
//! ([`params`](crate::model::params)); the optimiser is the same [`FlatOptimizer`]. So data-parallel
//! training (sum the flat gradients, apply the sum on every replica), checkpoints (parameters plus
//! optimiser state) and resuming on another worker count work for a user's module exactly as for
//! the built-in MLP.

use std::sync::{Arc, Mutex};

use burn::tensor::activation::softmax;
use burn::tensor::backend::{AutodiffBackend, Backend};

use super::objective::Objective;
use super::targets::{TargetsRef, check_flat_len};
use crate::error::{Error, Result};
use crate::model::params::{flat_grads, load_flat, to_flat};
use crate::model::{FeatureLayout, Inputs, Model, ModelShape, Task, read_f32};
use crate::optim::{FlatOptimizer, OptimizerSpec, OptimizerState};

/// burn's backend RNG is process-global: replicas are initialised one at a time, each right
/// after seeding it, so the same seed gives the same parameters on any thread.
static INIT: Mutex<()> = Mutex::new(());

/// Builds `M`'s module on `device` with the backend RNG seeded with `seed`.
pub(crate) fn seeded_init<B: Backend, M: Model>(
    config: &M::Config,
    shape: &ModelShape,
    seed: u64,
    device: &B::Device,
) -> M::Module<B> {
    let _guard = INIT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    B::seed(device, seed);
    let module = M::init::<B>(config, shape, device);
    // burn initialises parameters lazily, on first use: draw them now, under the lock, or
    // replicas built at the same time would interleave their draws.
    let _ = crate::model::params::to_flat(&module);
    module
}

/// A module for predictions on `B`'s inner backend, and the parameter generation it holds.
type Cached<B, M> = (
    u64,
    <M as Model>::Module<<B as AutodiffBackend>::InnerBackend>,
);

/// A replica of model `M` on autodiff backend `B`, with its optimiser.
pub struct ModuleTrainer<B: AutodiffBackend, M: Model> {
    kind: String,
    config: M::Config,
    shape: ModelShape,
    layout: Arc<FeatureLayout>,
    objective: Objective<B>,
    /// Always `Some` between calls; taken while new parameters are written into it.
    module: Option<M::Module<B>>,
    /// The module's parameters, flat: the optimiser updates these, then they are loaded into
    /// the module.
    params: Vec<f32>,
    optimizer: OptimizerSpec,
    optim: FlatOptimizer,
    device: B::Device,
    /// Bumped whenever the parameters change.
    generation: u64,
    /// A module on the inner backend for predictions, and the generation it holds.
    inference: Mutex<Option<Cached<B, M>>>,
}

impl<B: AutodiffBackend, M: Model> std::fmt::Debug for ModuleTrainer<B, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModuleTrainer")
            .field("kind", &self.kind)
            .field("config", &self.config)
            .field("task", &self.shape.task)
            .field("loss", &self.objective)
            .field("steps", &self.optim.steps())
            .field("num_params", &self.params.len())
            .finish_non_exhaustive()
    }
}

impl<B: AutodiffBackend, M: Model> ModuleTrainer<B, M> {
    /// A replica of model `kind` (its registered name, for messages) with `config`, built for
    /// `shape`, trained on `objective` with `optimizer`, parameters from `seed`.
    ///
    /// Checks everything before building: the config against the shape, the inputs the model
    /// reads against the layout, the loss against the task, the optimiser's settings.
    pub fn new(
        kind: &str,
        config: M::Config,
        shape: ModelShape,
        objective: Objective<B>,
        optimizer: &OptimizerSpec,
        seed: u64,
        device: &B::Device,
    ) -> Result<Self> {
        shape.task.validate()?;
        M::validate(&config, &shape)?;
        shape
            .layout
            .check(kind, &M::inputs(&config, &shape.layout))?;
        objective.validate(&shape.task)?;
        optimizer.validate()?;
        let module = seeded_init::<B, M>(&config, &shape, seed, device);
        let params = to_flat(&module)?;
        if params.is_empty() {
            return Err(Error::config(
                "train.model",
                format!("model `{kind}` has no float parameters to train"),
            ));
        }
        let optim = FlatOptimizer::new(optimizer, params.len())?;
        Ok(ModuleTrainer {
            kind: kind.to_owned(),
            layout: Arc::new(shape.layout.clone()),
            config,
            shape,
            objective,
            module: Some(module),
            params,
            optimizer: optimizer.clone(),
            optim,
            device: device.clone(),
            generation: 0,
            inference: Mutex::new(None),
        })
    }

    /// The model's registered name.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The model's config.
    pub fn model_config(&self) -> &M::Config {
        &self.config
    }

    /// What the model was built for.
    pub fn shape(&self) -> &ModelShape {
        &self.shape
    }

    /// Number of parameters (length of the flat vectors).
    pub fn num_params(&self) -> usize {
        self.params.len()
    }

    /// Values per input row.
    pub fn input_dim(&self) -> usize {
        self.layout.width()
    }

    /// The task.
    pub fn task(&self) -> &Task {
        &self.shape.task
    }

    /// The loss.
    pub fn objective(&self) -> &Objective<B> {
        &self.objective
    }

    /// Optimiser steps applied so far.
    pub fn steps(&self) -> u64 {
        self.optim.steps()
    }

    fn module(&self) -> Result<&M::Module<B>> {
        self.module
            .as_ref()
            .ok_or_else(|| Error::Internal("trainer module missing after a failed step".into()))
    }

    fn forward<BB: Backend<Device = B::Device>>(
        &self,
        module: &M::Module<BB>,
        x: &[f32],
        rows: usize,
    ) -> Result<burn::tensor::Tensor<BB, 2>> {
        checked_forward::<BB, M>(
            &self.kind,
            module,
            x,
            rows,
            &self.layout,
            &self.shape.task,
            &self.device,
        )
    }

    /// Forward and backward pass on `rows` rows; see [`Trainer::gradients`](super::Trainer::gradients).
    pub fn gradients(
        &mut self,
        x: &[f32],
        y: TargetsRef<'_>,
        rows: usize,
        loss_scale: f32,
    ) -> Result<(f64, Vec<f32>)> {
        if y.len() != rows {
            return Err(Error::Input(format!("{} targets for {rows} rows", y.len())));
        }
        if rows == 0 {
            return Ok((0.0, vec![0.0; self.params.len()]));
        }
        let module = self.module()?;
        let output = self.forward(module, x, rows)?;
        let per_row = self
            .objective
            .per_row(output, y, &self.shape.task, &self.device)?;
        let loss_sum: f64 = read_f32(per_row.clone().inner())?
            .iter()
            .map(|&v| f64::from(v))
            .sum();
        let grads = per_row.sum().mul_scalar(loss_scale).backward();
        let flat = flat_grads(module, &grads)?;
        check_flat_len("gradient", &flat, self.params.len())?;
        Ok((loss_sum, flat))
    }

    /// Applies a flat (already summed) gradient at learning rate `lr`.
    pub fn apply(&mut self, grads: &[f32], lr: f64) -> Result<()> {
        check_flat_len("gradient", grads, self.params.len())?;
        self.module()?;
        self.optim.step(&mut self.params, grads, lr)?;
        let module = self.take_module()?;
        self.module = Some(load_flat(module, &self.params)?);
        self.generation += 1;
        Ok(())
    }

    fn take_module(&mut self) -> Result<M::Module<B>> {
        self.module
            .take()
            .ok_or_else(|| Error::Internal("trainer module missing after a failed step".into()))
    }

    /// The parameters, flat.
    pub fn try_parameters(&self) -> Result<Vec<f32>> {
        self.module()?;
        Ok(self.params.clone())
    }

    /// Replaces the parameters; the optimiser state is kept. The wrong length changes nothing.
    pub fn set_parameters(&mut self, params: &[f32]) -> Result<()> {
        check_flat_len("parameter vector", params, self.params.len())?;
        let module = self.take_module()?;
        match load_flat(module.clone(), params) {
            Ok(m) => {
                self.module = Some(m);
                self.params.clear();
                self.params.extend_from_slice(params);
                self.generation += 1;
                Ok(())
            }
            Err(e) => {
                self.module = Some(module);
                Err(e)
            }
        }
    }

    /// The optimiser's state.
    pub fn optimizer_state(&self) -> OptimizerState {
        self.optim.state()
    }

    /// Continues from a checkpointed optimiser state.
    pub fn restore_optimizer(&mut self, state: OptimizerState) -> Result<()> {
        self.optim = FlatOptimizer::restore(&self.optimizer, self.params.len(), state)?;
        Ok(())
    }

    /// Predictions: softmax probabilities (`rows * num_classes`) for classification, one value
    /// per row for regression. Runs on the inner (non-autodiff) backend, on a module built from
    /// the current parameters, so nothing is recorded for backward.
    pub fn predict(&self, x: &[f32], rows: usize) -> Result<Vec<f32>> {
        if rows == 0 {
            return Ok(Vec::new());
        }
        let mut cached = self
            .inference
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let module = match cached.take() {
            Some((generation, module)) if generation == self.generation => module,
            _ => self.inference_module()?,
        };
        let output = self.forward(&module, x, rows);
        *cached = Some((self.generation, module));
        output_values(&self.shape.task, output?)
    }

    /// A module on the inner backend holding the current parameters (for prediction).
    pub fn inference_module(&self) -> Result<M::Module<B::InnerBackend>> {
        let module = seeded_init::<B::InnerBackend, M>(&self.config, &self.shape, 0, &self.device);
        load_flat(module, &self.params)
    }
}

/// `M`'s forward pass over `rows` rows of `x` laid out as `layout`, its output checked to be
/// `[rows, task.output_dim()]` (an error naming model `kind` otherwise).
pub(crate) fn checked_forward<B: Backend, M: Model>(
    kind: &str,
    module: &M::Module<B>,
    x: &[f32],
    rows: usize,
    layout: &Arc<FeatureLayout>,
    task: &Task,
    device: &B::Device,
) -> Result<burn::tensor::Tensor<B, 2>> {
    let inputs = Inputs::<B>::new(x, rows, Arc::clone(layout), device)?;
    let output = M::forward(module, &inputs)?;
    let want = [rows, task.output_dim()];
    if output.dims() != want {
        return Err(Error::Input(format!(
            "model `{kind}` returned a {:?} output for {rows} rows; it must be {want:?} \
             (rows x {} for {task:?})",
            output.dims(),
            task.output_dim(),
        )));
    }
    Ok(output)
}

/// The task's output transform: softmax over classes, values as they are.
pub(crate) fn output_values<B: Backend>(
    task: &Task,
    output: burn::tensor::Tensor<B, 2>,
) -> Result<Vec<f32>> {
    match task {
        Task::Classification { .. } => read_f32(softmax(output, 1)),
        Task::Regression => read_f32(output),
    }
}

/// A replica of some model, its type erased: what [`Replica`](crate::Replica) holds for a model
/// that is not one of the built-in fast paths.
pub trait DynTrainer: Send + std::fmt::Debug {
    /// The model's registered name.
    fn kind(&self) -> &str;
    /// The model's config, as JSON (what a bundle records).
    fn config_json(&self) -> Result<serde_json::Value>;
    /// What the model was built for.
    fn shape(&self) -> &ModelShape;
    /// Number of parameters.
    fn num_params(&self) -> usize;
    /// The loss's config name.
    fn loss_name(&self) -> String;
    /// Optimiser steps applied so far.
    fn steps(&self) -> u64;
    /// See [`ModuleTrainer::gradients`].
    fn gradients(
        &mut self,
        x: &[f32],
        y: TargetsRef<'_>,
        rows: usize,
        loss_scale: f32,
    ) -> Result<(f64, Vec<f32>)>;
    /// See [`ModuleTrainer::apply`].
    fn apply(&mut self, grads: &[f32], lr: f64) -> Result<()>;
    /// See [`ModuleTrainer::try_parameters`].
    fn try_parameters(&self) -> Result<Vec<f32>>;
    /// See [`ModuleTrainer::set_parameters`].
    fn set_parameters(&mut self, params: &[f32]) -> Result<()>;
    /// See [`ModuleTrainer::optimizer_state`].
    fn optimizer_state(&self) -> OptimizerState;
    /// See [`ModuleTrainer::restore_optimizer`].
    fn restore_optimizer(&mut self, state: OptimizerState) -> Result<()>;
    /// See [`ModuleTrainer::predict`].
    fn predict(&self, x: &[f32], rows: usize) -> Result<Vec<f32>>;
    /// The float parameters' dotted paths and shapes, in flat order (for safetensors).
    fn param_shapes(&self) -> Result<Vec<crate::model::params::ParamShape>>;
}

impl<B, M> DynTrainer for ModuleTrainer<B, M>
where
    B: AutodiffBackend,
    M: Model,
    M::Module<B>: Send,
    M::Module<B::InnerBackend>: Send,
{
    fn kind(&self) -> &str {
        &self.kind
    }
    fn config_json(&self) -> Result<serde_json::Value> {
        serde_json::to_value(&self.config)
            .map_err(|e| Error::Internal(format!("model `{}` config to JSON: {e}", self.kind)))
    }
    fn shape(&self) -> &ModelShape {
        &self.shape
    }
    fn num_params(&self) -> usize {
        self.params.len()
    }
    fn loss_name(&self) -> String {
        self.objective.name().to_owned()
    }
    fn steps(&self) -> u64 {
        self.optim.steps()
    }
    fn gradients(
        &mut self,
        x: &[f32],
        y: TargetsRef<'_>,
        rows: usize,
        loss_scale: f32,
    ) -> Result<(f64, Vec<f32>)> {
        ModuleTrainer::gradients(self, x, y, rows, loss_scale)
    }
    fn apply(&mut self, grads: &[f32], lr: f64) -> Result<()> {
        ModuleTrainer::apply(self, grads, lr)
    }
    fn try_parameters(&self) -> Result<Vec<f32>> {
        ModuleTrainer::try_parameters(self)
    }
    fn set_parameters(&mut self, params: &[f32]) -> Result<()> {
        ModuleTrainer::set_parameters(self, params)
    }
    fn optimizer_state(&self) -> OptimizerState {
        ModuleTrainer::optimizer_state(self)
    }
    fn restore_optimizer(&mut self, state: OptimizerState) -> Result<()> {
        ModuleTrainer::restore_optimizer(self, state)
    }
    fn predict(&self, x: &[f32], rows: usize) -> Result<Vec<f32>> {
        ModuleTrainer::predict(self, x, rows)
    }
    fn param_shapes(&self) -> Result<Vec<crate::model::params::ParamShape>> {
        Ok(crate::model::params::param_shapes::<B, _>(self.module()?))
    }
}
