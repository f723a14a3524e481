//! Machine learning for millrace: models, losses, optimisers, metrics, preprocessing and the
//! model bundle format, on [burn](https://burn.dev).
//!
//! This crate knows nothing of the dataflow engine. The engine drives it:
//!
//! ```text
//! Arrow batches ─► preprocess::FitState (per worker) ─merge─► FittedPreprocessor
//!                                                                  │ transform
//!                                                                  ▼
//!                 trainer::Trainer (one replica per worker): gradients ─► engine sums ─► apply
//!                                                                  │
//!                 metrics::evaluate_* ◄── predict                  ▼
//!                                              bundle::ModelBundle (save/load) ─► Predictor
//! ```
//!
//! On the CPU the built-in models' [`Trainer`] takes its gradients and predictions with a
//! hand-written dense step (matrix products on `gemm`), equal to burn's autodiff to
//! float rounding and about three times as fast; `Trainer::with_burn_gradients` keeps burn's.
//! On NVIDIA GPUs (the `cuda` feature), `gpu::GpuTrainer` and `gpu::GpuPredictor` run the same
//! models on cudarc and cuBLASLt; [`Replica`] is either kind of replica behind one interface.
//!
//! Replicas are deterministic: parameters come from this crate's own seeded RNG ([`rng`]), never
//! from burn's process-global one, so two [`Trainer`]s built with the same arguments hold
//! bit-identical parameters on any thread, and stay identical when they apply the same
//! gradients.
//!
//! # Example
//!
//! Fit a preprocessor, train logistic regression, evaluate:
//!
//! ```
//! use std::sync::Arc;
//! use arrow::array::{ArrayRef, Float64Array, Int64Array};
//! use arrow::record_batch::RecordBatch;
//! use millrace_ml::backend::{CpuAutodiff, cpu_device};
//! use millrace_ml::metrics::evaluate_classification;
//! use millrace_ml::model::{ModelKind, ModelSpec, Task};
//! use millrace_ml::optim::OptimizerSpec;
//! use millrace_ml::preprocess::{FeatureSpec, FitState, LabelKind, Targets};
//! use millrace_ml::trainer::{Loss, Trainer};
//!
//! // y = 1 when x > 10.
//! let x: Vec<f64> = (0..200).map(|i| f64::from(i) / 10.0).collect();
//! let y: Vec<i64> = x.iter().map(|&v| i64::from(v > 10.0)).collect();
//! let batch = RecordBatch::try_from_iter([
//!     ("x", Arc::new(Float64Array::from(x)) as ArrayRef),
//!     ("y", Arc::new(Int64Array::from(y)) as ArrayRef),
//! ])?;
//!
//! let spec = FeatureSpec { standardize: vec!["x".into()], label: "y".into(), ..Default::default() };
//! let mut state = FitState::new(&spec, LabelKind::Classification);
//! state.update(&batch)?;
//! let pre = state.finish()?;
//! assert_eq!(pre.num_classes(), Some(2));
//!
//! let data = pre.transform(&batch, true)?;
//! let Some(Targets::Classes(labels)) = &data.y else { unreachable!() };
//! let task = Task::Classification { num_classes: 2 };
//! let model = ModelSpec::new(ModelKind::Logistic);
//! let mut trainer = Trainer::<CpuAutodiff>::new(
//!     &model, &OptimizerSpec::default(), Loss::for_task(&task), &task, pre.input_dim(), 7,
//!     &cpu_device())?;
//! for _ in 0..100 {
//!     let (_loss, grads) = trainer.gradients(
//!         &data.x, data.y.as_ref().unwrap().as_ref(), data.rows, 1.0 / data.rows as f32)?;
//!     trainer.apply(&grads, 0.1)?;
//! }
//! let probs = trainer.predict(&data.x, data.rows)?;
//! let metrics = evaluate_classification(&probs, 2, labels);
//! let (name, accuracy) = metrics.headline();
//! assert_eq!(name, "accuracy");
//! assert!(accuracy >= 0.95, "accuracy {accuracy}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod backend;
pub mod bundle;
pub mod device;
mod error;
#[cfg(feature = "cuda")]
pub mod gpu;
pub mod metrics;
pub mod model;
pub mod optim;
pub mod preprocess;
pub mod registry;
mod replica;
pub mod rng;
pub mod trainer;

pub use bundle::{BundleMeta, ModelBundle, Predictor};
/// burn, re-exported so that callers name the same backend traits.
pub use burn;
pub use device::{Device, GpuOptions, Precision};
pub use error::{Error, Result};
pub use metrics::EvalMetrics;
pub use model::{
    Activation, FeatureLayout, Input, Inputs, Mlp, MlpConfig, Model, ModelKind, ModelShape,
    ModelSpec, Task,
};
pub use optim::{FlatOptimizer, OptimizerKind, OptimizerSpec, OptimizerState};
pub use preprocess::{
    FeatureSpec, Features, FitState, FittedPreprocessor, LabelKind, NullPolicy, RowError, Targets,
};
pub use replica::Replica;
pub use trainer::{
    DynTrainer, Loss, LossChoice, ModuleTrainer, Objective, Reduction, TargetTensor, TargetsRef,
    Trainer, UserLoss,
};
