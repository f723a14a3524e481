//! The forward pass behind a served model: plain Rust on the CPU, or a GPU (with the `cuda`
//! feature). Dynamic batching stays the batcher's job; this only runs each merged batch.

use std::path::PathBuf;

use millrace_ml::bundle::{DensePredictor, ModelBundle};
use millrace_ml::{Device, Precision};

use crate::Result;

/// Where a served model's forward pass runs and, on a GPU, how.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ForwardDevice {
    /// The CPU (default) or a GPU.
    pub device: Device,
    /// Precision of a GPU's matrix products.
    pub precision: Precision,
    /// Where compiled GPU kernels are cached (`None`: the default cache).
    pub kernel_cache: Option<PathBuf>,
}

impl ForwardDevice {
    /// Checks, before anything is served, that the forward pass can run here; errors name
    /// `{section}.device` or `{section}.precision`.
    pub fn check(&self, section: &str) -> Result<()> {
        crate::spec::check_device(&self.device, self.precision, section)
    }
}

/// A model's forward pass on the device it was loaded on.
pub(crate) enum Forward {
    /// Plain Rust on the CPU.
    Cpu(DensePredictor),
    /// A GPU.
    #[cfg(feature = "cuda")]
    Gpu(Box<millrace_ml::gpu::GpuPredictor>),
    /// A registered model (not one of the built-in MLPs) on burn's CPU backend.
    Module(Box<dyn millrace_ml::registry::DynPredictor>),
}

impl Forward {
    /// Loads `bundle`'s weights onto `on`.
    pub(crate) fn new(bundle: &ModelBundle, on: &ForwardDevice) -> Result<Self> {
        if bundle.spec()?.is_none() {
            if on.device != Device::Cpu {
                return Err(crate::Error::config(
                    "serve.device",
                    format!(
                        "model kind `{}` serves on the CPU only in this build (the GPU path is \
                         the built-in MLP's); set device = \"cpu\"",
                        bundle.model.kind
                    ),
                ));
            }
            bundle.validate()?;
            return Ok(Forward::Module(bundle.module_predictor()?));
        }
        match on.device {
            Device::Cpu => Ok(Forward::Cpu(DensePredictor::new(bundle)?)),
            #[cfg(feature = "cuda")]
            Device::Cuda(ordinal) => {
                let options = millrace_ml::GpuOptions {
                    ordinal,
                    precision: on.precision,
                    kernel_cache: on.kernel_cache.clone(),
                    ..millrace_ml::GpuOptions::default()
                };
                Ok(Forward::Gpu(Box::new(millrace_ml::gpu::GpuPredictor::new(
                    bundle, &options,
                )?)))
            }
            #[cfg(not(feature = "cuda"))]
            Device::Cuda(_) => {
                on.check("serve")?;
                Err(crate::Error::Internal(
                    "a GPU passed the device check in a build without the cuda feature".into(),
                ))
            }
        }
    }

    /// Features a row.
    pub(crate) fn input_dim(&self) -> usize {
        match self {
            Forward::Cpu(p) => p.input_dim(),
            #[cfg(feature = "cuda")]
            Forward::Gpu(p) => p.input_dim(),
            Forward::Module(p) => p.input_dim(),
        }
    }

    /// Values a row of output.
    pub(crate) fn output_dim(&self) -> usize {
        match self {
            Forward::Cpu(p) => p.output_dim(),
            #[cfg(feature = "cuda")]
            Forward::Gpu(p) => p.output_dim(),
            Forward::Module(p) => p.output_dim(),
        }
    }

    /// The outputs of `rows` feature rows (`x` row-major).
    pub(crate) fn predict(&self, x: &[f32], rows: usize) -> millrace_ml::Result<Vec<f32>> {
        match self {
            Forward::Cpu(p) => p.predict(x, rows),
            #[cfg(feature = "cuda")]
            Forward::Gpu(p) => p.predict(x, rows),
            Forward::Module(p) => p.predict(x, rows),
        }
    }
}
