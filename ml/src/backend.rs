//! The backends millrace trains and serves on.
//!
//! Everything generic in this crate takes a burn backend type parameter; these aliases name the
//! ones millrace ships on the CPU. The GPU path (`cuda` feature) does not go through burn: see
//! `crate::gpu`.

/// CPU inference backend (burn `NdArray`, `f32`).
pub type Cpu = burn::backend::NdArray<f32>;

/// CPU training backend: [`Cpu`] with automatic differentiation.
pub type CpuAutodiff = burn::backend::Autodiff<Cpu>;

/// The CPU device (there is only one).
pub fn cpu_device() -> burn::tensor::Device<Cpu> {
    Default::default()
}
