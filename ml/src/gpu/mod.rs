//! Training and serving on NVIDIA GPUs (the `cuda` feature), on cudarc: cuBLASLt for the matrix
//! products (bias, ReLU and bias-gradient epilogues fused into them) and a few kernels of our own
//! compiled at run time by NVRTC, each step captured once as a CUDA graph and replayed.
//!
//! It implements the one model definition, [`MlpConfig`](crate::model::MlpConfig): the same
//! layers, activations, losses and optimiser rules as the CPU path, on the same flat parameter
//! vectors, so a GPU replica checkpoints, exchanges gradients and bundles exactly like a CPU one.
//!
//! Why not burn's CUDA backend: burn 0.21's first step compiled kernels for 148 s and reached
//! 740k samples/s on the benchmark MLP at batch 512, and its bf16 was slower than its f32; here a
//! step is one graph launch, the kernels compile in about a second, and bf16 products run on the
//! tensor cores through cuBLASLt.
//!
//! Nothing here touches the driver until a replica is built: a build with the feature runs on
//! machines without a GPU, and asking for one there gives [`Error::Device`](crate::Error::Device)
//! saying what is missing.
#![allow(unsafe_code)] // FFI to the CUDA driver, NVRTC and cuBLASLt; each block says why it holds.

mod gemm;
mod graph;
mod net;
mod predict;
mod runtime;
mod trainer;

pub use crate::device::{GpuOptions, Precision};
pub use predict::GpuPredictor;
pub(crate) use runtime::check_device;
pub use runtime::kernel_cache_dir;
pub use trainer::GpuTrainer;

/// The GPU `options` names, opened with its cuBLASLt handle and the element type of its
/// products: what every replica and predictor starts from.
pub(crate) fn open(options: &GpuOptions) -> crate::Result<(runtime::Gpu, gemm::Lt, gemm::Dt)> {
    let gpu = runtime::Gpu::open(
        options.ordinal,
        &runtime::kernel_cache_dir(options.kernel_cache.as_deref()),
    )?;
    gpu.bind()?;
    let lt = gemm::Lt::new(runtime::DevBuf::zeroed(&gpu, gemm::WORKSPACE_BYTES)?)?;
    let dt = match options.precision {
        Precision::F32 => gemm::Dt::F32,
        Precision::Bf16 => gemm::Dt::Bf16,
    };
    Ok((gpu, lt, dt))
}

/// Number of GPUs the driver sees (0 without a driver).
pub fn device_count() -> usize {
    // SAFETY: only tries to load the driver library.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return 0;
    }
    cudarc::driver::CudaContext::device_count().map_or(0, |n| n.max(0) as usize)
}

#[cfg(test)]
mod tests;
