//! Matrix products through cuBLASLt, planned once per shape (descriptor, layouts, the
//! heuristic's best algorithm) and run many times, inside captured graphs too.
//!
//! Matrices are column-major as cuBLASLt sees them: `D (m x n) = op(A) (m x k) · op(B) (k x n)`.
//! Epilogues fuse the bias (and ReLU) into the forward product and the bias gradient into the
//! weight-gradient product; when the library offers no algorithm for an epilogue on this GPU the
//! plan is refused and the caller runs its own kernel instead.

use std::ffi::c_void;
use std::mem::size_of;

use cudarc::cublaslt::result as lt;
use cudarc::cublaslt::sys::{
    self, cublasComputeType_t, cublasLtEpilogue_t, cublasLtMatmulDescAttributes_t as Desc,
    cublasLtMatmulPreferenceAttributes_t as Pref, cudaDataType,
};
use cudarc::driver::sys::{CUdeviceptr, CUstream};

use super::runtime::{DevBuf, Gpu, TimingEvent};
use crate::error::{Error, Result};

/// Algorithms asked of the heuristic per product, for [`Gemm::tune`] to time.
const CANDIDATES: usize = 8;

/// Bytes of workspace cuBLASLt may use per product.
pub(crate) const WORKSPACE_BYTES: usize = 32 << 20;

/// Element type of a matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dt {
    F32,
    Bf16,
}

impl Dt {
    fn cuda(self) -> cudaDataType {
        match self {
            Dt::F32 => cudaDataType::CUDA_R_32F,
            Dt::Bf16 => cudaDataType::CUDA_R_16BF,
        }
    }

    pub(crate) fn bytes(self) -> usize {
        match self {
            Dt::F32 => 4,
            Dt::Bf16 => 2,
        }
    }
}

/// What the product does after `A·B`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Epilogue {
    None,
    /// `D += bias` (a vector of `m`, broadcast over columns).
    Bias(CUdeviceptr),
    /// `D = relu(D + bias)`.
    ReluBias(CUdeviceptr),
    /// Also writes `bias[j] = Σ_k B[j, k]`: the bias gradient when B is the output gradient.
    BgradB(CUdeviceptr),
    /// `D = relu(D + bias)`, also writing which elements were positive as a bit mask at `aux`
    /// (leading dimension `ld` bits, a multiple of 128).
    ReluAuxBias {
        bias: CUdeviceptr,
        aux: CUdeviceptr,
        ld: i64,
    },
    /// `D = D ⊙ relu'(aux)`: the product times the ReLU derivative a forward pass recorded.
    DRelu {
        aux: CUdeviceptr,
        ld: i64,
    },
}

/// One product's shape: `D (m x n) = op(A) · op(B)`, leading dimensions of the stored matrices.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Shape {
    pub(crate) trans_a: bool,
    pub(crate) trans_b: bool,
    pub(crate) m: usize,
    pub(crate) n: usize,
    pub(crate) k: usize,
    pub(crate) a: Dt,
    pub(crate) b: Dt,
    pub(crate) d: Dt,
}

/// Whether fused epilogues are used (`MILLRACE_GPU_EPILOGUES=0` turns them off, to measure
/// them against our own kernels).
fn epilogues_enabled() -> bool {
    std::env::var("MILLRACE_GPU_EPILOGUES").map_or(true, |v| v != "0")
}

/// Whether the ReLU derivative is fused into the input-gradient product (a bit mask written by
/// the forward product). Off unless `MILLRACE_GPU_DRELU=1`: on an H100 (cuBLASLt 13) the fused
/// products were slower than the plain product plus our 16-byte kernel (2.71 vs 2.34 ms per
/// step of the 1024→4096→4096→10 bf16 benchmark), though they give the same results.
pub(crate) fn drelu_enabled() -> bool {
    epilogues_enabled() && std::env::var("MILLRACE_GPU_DRELU").is_ok_and(|v| v == "1")
}

/// The cuBLASLt library handle of one replica.
pub(crate) struct Lt {
    handle: sys::cublasLtHandle_t,
    workspace: DevBuf,
}

// SAFETY: a cuBLASLt handle may be used from any one thread at a time; the replica owning it is
// used by one thread at a time.
unsafe impl Send for Lt {}

impl Lt {
    pub(crate) fn new(workspace: DevBuf) -> Result<Self> {
        let handle = lt::create_handle().map_err(|e| lt_err("creating the cuBLASLt handle", e))?;
        Ok(Self { handle, workspace })
    }
}

impl Drop for Lt {
    fn drop(&mut self) {
        // SAFETY: created by create_handle, destroyed once.
        let _ = unsafe { lt::destroy_handle(self.handle) };
    }
}

fn lt_err(what: &str, e: lt::CublasError) -> Error {
    Error::Device(format!("{what}: cuBLASLt {:?}", e.0))
}

/// A planned product: everything but the A, B and D pointers is fixed.
pub(crate) struct Gemm {
    desc: sys::cublasLtMatmulDesc_t,
    layouts: [sys::cublasLtMatrixLayout_t; 3],
    algo: sys::cublasLtMatmulAlgo_t,
    workspace: usize,
    /// The heuristic's candidates (algorithm, workspace), best first; see [`Gemm::tune`].
    candidates: Vec<(sys::cublasLtMatmulAlgo_t, usize)>,
    shape: Shape,
    epilogue: Epilogue,
}

// SAFETY: descriptors are plain host-side objects owned by this value.
unsafe impl Send for Gemm {}

impl Gemm {
    /// Plans `shape` with `epilogue`; `Ok(None)` when cuBLASLt has no algorithm for it here.
    pub(crate) fn plan(lt_: &Lt, shape: Shape, epilogue: Epilogue) -> Result<Option<Self>> {
        if epilogue != Epilogue::None && !epilogues_enabled() {
            return Ok(None);
        }
        let (rows_a, cols_a) = if shape.trans_a {
            (shape.k, shape.m)
        } else {
            (shape.m, shape.k)
        };
        let (rows_b, cols_b) = if shape.trans_b {
            (shape.n, shape.k)
        } else {
            (shape.k, shape.n)
        };
        let err = |e| lt_err("planning a matrix product", e);
        let desc = lt::create_matmul_desc(
            cublasComputeType_t::CUBLAS_COMPUTE_32F,
            cudaDataType::CUDA_R_32F,
        )
        .map_err(err)?;
        let mut gemm = Self {
            desc,
            layouts: [std::ptr::null_mut(); 3],
            algo: unsafe { std::mem::zeroed() },
            workspace: 0,
            candidates: Vec::new(),
            shape,
            epilogue,
        };
        gemm.layouts[0] =
            lt::create_matrix_layout(shape.a.cuda(), rows_a as u64, cols_a as u64, rows_a as i64)
                .map_err(err)?;
        gemm.layouts[1] =
            lt::create_matrix_layout(shape.b.cuda(), rows_b as u64, cols_b as u64, rows_b as i64)
                .map_err(err)?;
        gemm.layouts[2] = lt::create_matrix_layout(
            shape.d.cuda(),
            shape.m as u64,
            shape.n as u64,
            shape.m as i64,
        )
        .map_err(err)?;
        // cublasOperation_t: CUBLAS_OP_N = 0, CUBLAS_OP_T = 1.
        let op = |t: bool| -> i32 { i32::from(t) };
        gemm.set(Desc::CUBLASLT_MATMUL_DESC_TRANSA, &op(shape.trans_a))?;
        gemm.set(Desc::CUBLASLT_MATMUL_DESC_TRANSB, &op(shape.trans_b))?;
        let (kind, bias) = match epilogue {
            Epilogue::None => (cublasLtEpilogue_t::CUBLASLT_EPILOGUE_DEFAULT, None),
            Epilogue::Bias(p) => (cublasLtEpilogue_t::CUBLASLT_EPILOGUE_BIAS, Some(p)),
            Epilogue::ReluBias(p) => (cublasLtEpilogue_t::CUBLASLT_EPILOGUE_RELU_BIAS, Some(p)),
            Epilogue::BgradB(p) => (cublasLtEpilogue_t::CUBLASLT_EPILOGUE_BGRADB, Some(p)),
            Epilogue::ReluAuxBias { bias, .. } => (
                cublasLtEpilogue_t::CUBLASLT_EPILOGUE_RELU_AUX_BIAS,
                Some(bias),
            ),
            Epilogue::DRelu { .. } => (cublasLtEpilogue_t::CUBLASLT_EPILOGUE_DRELU, None),
        };
        if let Epilogue::ReluAuxBias { aux, ld, .. } | Epilogue::DRelu { aux, ld } = epilogue {
            gemm.set(Desc::CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &aux)?;
            gemm.set(Desc::CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &ld)?;
        }
        gemm.set(Desc::CUBLASLT_MATMUL_DESC_EPILOGUE, &(kind as u32))?;
        if let Some(p) = bias {
            gemm.set(Desc::CUBLASLT_MATMUL_DESC_BIAS_POINTER, &p)?;
            // The bias is f32 (master copy or gradient) unless D is bf16, where it is D's type.
            let bias_type = match (epilogue, shape.d) {
                (Epilogue::BgradB(_), _) | (_, Dt::F32) => cudaDataType::CUDA_R_32F,
                (_, Dt::Bf16) => cudaDataType::CUDA_R_16BF,
            };
            gemm.set(
                Desc::CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE,
                &(bias_type as i32),
            )?;
        }
        // SAFETY: a fresh preference object, destroyed below.
        let pref = lt::create_matmul_pref().map_err(err)?;
        let ws = WORKSPACE_BYTES;
        let mut results: Vec<sys::cublasLtMatmulHeuristicResult_t> =
            vec![unsafe { std::mem::zeroed() }; CANDIDATES];
        let mut count = 0i32;
        // SAFETY: `results` holds CANDIDATES entries for the library to fill; `count` says how
        // many it did.
        let found = unsafe {
            lt::set_matmul_pref_attribute(
                pref,
                Pref::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                (&ws) as *const usize as *const c_void,
                size_of::<usize>(),
            )
            .and_then(|()| {
                sys::cublasLtMatmulAlgoGetHeuristic(
                    lt_.handle,
                    gemm.desc,
                    gemm.layouts[0],
                    gemm.layouts[1],
                    gemm.layouts[2],
                    gemm.layouts[2],
                    pref,
                    CANDIDATES as i32,
                    results.as_mut_ptr(),
                    &mut count,
                )
                .result()
            })
        };
        // SAFETY: created above, destroyed once.
        let _ = unsafe { lt::destroy_matmul_pref(pref) };
        let found = found.and_then(|()| {
            results.truncate(count.max(0) as usize);
            results.retain(|r| r.state == sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS);
            if results.is_empty() {
                Err(lt::CublasError(
                    sys::cublasStatus_t::CUBLAS_STATUS_NOT_SUPPORTED,
                ))
            } else {
                Ok(())
            }
        });
        match found {
            Ok(()) => {
                gemm.algo = results[0].algo;
                gemm.workspace = results[0].workspaceSize;
                gemm.candidates = results.iter().map(|r| (r.algo, r.workspaceSize)).collect();
                Ok(Some(gemm))
            }
            // Any refusal of a fused epilogue falls back to our kernels; only a plain product
            // that cannot run is an error.
            Err(e)
                if e.0 == sys::cublasStatus_t::CUBLAS_STATUS_NOT_SUPPORTED
                    || epilogue != Epilogue::None =>
            {
                tracing::debug!(?shape, ?epilogue, status = ?e.0, "cuBLASLt has no algorithm; using a kernel");
                Ok(None)
            }
            Err(e) => Err(err(e)),
        }
    }

    /// Times the heuristic's candidates on scratch operands of this product's shape and keeps
    /// the fastest (products under a gigaflop keep the heuristic's first choice: they are
    /// bound by launches, not by the algorithm). `MILLRACE_GPU_TUNE=0` turns this off.
    pub(crate) fn tune(&mut self, lt_: &Lt, gpu: &Gpu) -> Result<()> {
        let s = self.shape;
        let flops = 2.0 * s.m as f64 * s.n as f64 * s.k as f64;
        if self.candidates.len() < 2
            || flops < 1e9
            || std::env::var("MILLRACE_GPU_TUNE").is_ok_and(|v| v == "0")
        {
            return Ok(());
        }
        let a = DevBuf::zeroed(gpu, s.m * s.k * s.a.bytes())?;
        let b = DevBuf::zeroed(gpu, s.k * s.n * s.b.bytes())?;
        let d = DevBuf::zeroed(gpu, s.m * s.n * s.d.bytes())?;
        let bias = DevBuf::zeroed(gpu, s.m.max(s.n) * 4)?;
        let stream = gpu.cu_stream();
        let run = |g: &Self| match g.epilogue {
            Epilogue::BgradB(_) => g.run_with_bias(lt_, stream, a.ptr, b.ptr, d.ptr, bias.ptr),
            _ => g.run(lt_, stream, a.ptr, b.ptr, d.ptr),
        };
        let (start, end) = (TimingEvent::new()?, TimingEvent::new()?);
        let mut best: Option<(f32, usize)> = None;
        for (i, &(algo, ws)) in self.candidates.clone().iter().enumerate() {
            if ws > lt_.workspace.bytes {
                continue;
            }
            self.algo = algo;
            self.workspace = ws;
            // A candidate that fails to run is skipped; the rest are timed over 5 runs.
            if run(self).is_err() {
                continue;
            }
            start.record(stream)?;
            for _ in 0..5 {
                run(self)?;
            }
            end.record(stream)?;
            gpu.sync()?;
            let ms = end.since(&start)?;
            if best.is_none_or(|(b, _)| ms < b) {
                best = Some((ms, i));
            }
        }
        let (ms, i) = best.unwrap_or((f32::NAN, 0));
        (self.algo, self.workspace) = self.candidates[i];
        tracing::debug!(
            m = s.m,
            n = s.n,
            k = s.k,
            candidate = i,
            of = self.candidates.len(),
            tflops = flops * 5.0 / f64::from(ms) / 1e9,
            "tuned a matrix product"
        );
        Ok(())
    }

    /// Plans `shape`, failing when cuBLASLt cannot run it at all.
    pub(crate) fn plan_plain(lt_: &Lt, shape: Shape) -> Result<Self> {
        Self::plan(lt_, shape, Epilogue::None)?.ok_or_else(|| {
            Error::Device(format!(
                "cuBLASLt has no algorithm for a {}x{}x{} product on this GPU",
                shape.m, shape.n, shape.k
            ))
        })
    }

    fn set<T>(&self, attr: Desc, value: &T) -> Result<()> {
        // SAFETY: `value` is the attribute's C type, read during the call only.
        unsafe {
            lt::set_matmul_desc_attribute(
                self.desc,
                attr,
                value as *const T as *const c_void,
                size_of::<T>(),
            )
        }
        .map_err(|e| lt_err("setting up a matrix product", e))
    }

    /// Like [`Gemm::run`] for a plan made with [`Epilogue::BgradB`], writing the bias gradient
    /// at `bias`.
    pub(crate) fn run_with_bias(
        &self,
        lt_: &Lt,
        stream: CUstream,
        a: CUdeviceptr,
        b: CUdeviceptr,
        d: CUdeviceptr,
        bias: CUdeviceptr,
    ) -> Result<()> {
        self.set(Desc::CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias)?;
        self.run(lt_, stream, a, b, d)
    }

    /// Enqueues `D = op(A)·op(B)` (plus the epilogue) on `stream`.
    pub(crate) fn run(
        &self,
        lt_: &Lt,
        stream: CUstream,
        a: CUdeviceptr,
        b: CUdeviceptr,
        d: CUdeviceptr,
    ) -> Result<()> {
        let one = 1f32;
        let zero = 0f32;
        // SAFETY: the pointers hold matrices of the planned shapes (the caller's buffers are
        // sized for them); alpha/beta are f32 as the scale type says; the workspace outlives the
        // call and every graph that captures it.
        unsafe {
            lt::matmul(
                lt_.handle,
                self.desc,
                (&one) as *const f32 as *const c_void,
                (&zero) as *const f32 as *const c_void,
                a as *const c_void,
                self.layouts[0],
                b as *const c_void,
                self.layouts[1],
                d as *const c_void,
                self.layouts[2],
                d as *mut c_void,
                self.layouts[2],
                &self.algo,
                lt_.workspace.ptr as *mut c_void,
                self.workspace.min(lt_.workspace.bytes),
                stream as sys::cudaStream_t,
            )
        }
        .map_err(|e| lt_err("running a matrix product", e))
    }
}

impl Drop for Gemm {
    fn drop(&mut self) {
        // SAFETY: created in `plan`, destroyed once (null layouts were never created).
        unsafe {
            for l in self.layouts {
                if !l.is_null() {
                    let _ = lt::destroy_matrix_layout(l);
                }
            }
            let _ = lt::destroy_matmul_desc(self.desc);
        }
    }
}
