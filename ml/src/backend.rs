//! The backends millrace trains and serves on.
//!
//! Everything generic in this crate takes a burn backend type parameter; these aliases name the
//! ones millrace ships. [`Cpu`] (burn's `NdArray`) is always available; with the `cuda` feature,
//! `Gpu` runs on an NVIDIA device.

/// CPU inference backend (burn `NdArray`, `f32`).
pub type Cpu = burn::backend::NdArray<f32>;

/// CPU training backend: [`Cpu`] with automatic differentiation.
pub type CpuAutodiff = burn::backend::Autodiff<Cpu>;

/// CUDA inference backend (`f32`).
#[cfg(feature = "cuda")]
pub type Gpu = burn::backend::Cuda<f32>;

/// CUDA training backend: [`Gpu`] with automatic differentiation.
#[cfg(feature = "cuda")]
pub type GpuAutodiff = burn::backend::Autodiff<Gpu>;

/// The CPU device (there is only one).
pub fn cpu_device() -> burn::tensor::Device<Cpu> {
    Default::default()
}
