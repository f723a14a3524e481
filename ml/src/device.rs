//! Where a model trains and serves: [`Device`] and, on a GPU, its [`Precision`].
//!
//! These parse and print in every build; running on a GPU needs the `cuda` feature (see
//! [`Device::check`]).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A device: the CPU, or NVIDIA GPU `n` (`"cpu"`, `"cuda"` = `"cuda:0"`, `"cuda:1"`, …).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Device {
    /// The CPU (burn's NdArray backend for training, plain Rust for serving).
    #[default]
    Cpu,
    /// NVIDIA GPU with this ordinal.
    Cuda(usize),
}

impl std::str::FromStr for Device {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim() {
            "cpu" => Ok(Device::Cpu),
            "cuda" | "gpu" => Ok(Device::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Device::Cuda)
                .ok_or_else(|| {
                    format!("unknown device `{other}`: use \"cpu\", \"cuda\" or \"cuda:N\"")
                }),
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl Serialize for Device {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Device {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Device {
    /// Number of NVIDIA GPUs usable here: 0 without the `cuda` feature, without the driver or
    /// without a GPU.
    pub fn cuda_device_count() -> usize {
        #[cfg(feature = "cuda")]
        {
            crate::gpu::device_count()
        }
        #[cfg(not(feature = "cuda"))]
        {
            0
        }
    }

    /// The GPU the `index`-th worker of a process uses: workers are spread over the GPUs from
    /// the one named (`cuda:N`: worker `i` on GPU `(N + i) % count`), so one GPU per worker where
    /// there are enough. The CPU stays the CPU.
    pub fn for_worker(&self, index: usize) -> Device {
        match *self {
            Device::Cuda(n) => {
                let count = Self::cuda_device_count().max(1);
                Device::Cuda((n + index) % count)
            }
            other => other,
        }
    }

    /// Checks, before any work starts, that this device can be used here: always for the CPU;
    /// for a GPU, that the build has the `cuda` feature and that the driver, the CUDA libraries
    /// and the GPU are there. `key` names the config setting in the error.
    pub fn check(&self, key: &str) -> Result<()> {
        match self {
            Device::Cpu => Ok(()),
            #[cfg(feature = "cuda")]
            Device::Cuda(n) => crate::gpu::check_device(*n),
            #[cfg(not(feature = "cuda"))]
            Device::Cuda(_) => Err(Error::config(
                key,
                format!(
                    "{self} asked for, but this millrace was built without GPU support: rebuild with `cargo build --release --features cuda`, or set {key} = \"cpu\""
                ),
            )),
        }
        .map_err(|e| match e {
            Error::Device(m) => Error::config(key, m),
            other => other,
        })
    }
}

/// Floating-point format of the GPU's matrix products.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// f32 everywhere (the default; matches the CPU to rounding).
    #[default]
    F32,
    /// Mixed precision: bf16 activations and weight copies in the products (f32 accumulation),
    /// f32 master weights, optimiser state and loss.
    Bf16,
}

/// How to use a GPU: which one, in what precision, where compiled kernels are cached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GpuOptions {
    /// The GPU's ordinal (`cuda:N`).
    pub ordinal: usize,
    /// Precision of the matrix products.
    pub precision: Precision,
    /// Where compiled kernels are kept; `None`: `$MILLRACE_KERNEL_CACHE`, else the user's cache
    /// directory (`~/.cache/millrace/kernels`).
    pub kernel_cache: Option<PathBuf>,
    /// Replay each step as one captured CUDA graph (on by default; off launches kernels one by
    /// one, for debugging).
    pub graphs: bool,
    /// Forward passes a served model keeps in flight at once (each on its own stream, with its
    /// own copy of the weights); one per batcher thread is enough.
    pub streams: usize,
}

impl Default for GpuOptions {
    fn default() -> Self {
        Self {
            ordinal: 0,
            precision: Precision::F32,
            kernel_cache: None,
            graphs: true,
            streams: 2,
        }
    }
}
