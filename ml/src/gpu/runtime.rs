//! The CUDA side of a GPU replica: the context and its streams, device and pinned buffers, the
//! NVRTC-compiled kernels (cached on disk) and launches.
//!
//! Everything here is a thin, owning wrapper over cudarc's driver API. Buffers are raw device
//! pointers freed on drop; kernels are launched with raw arguments. The context is bound to the
//! calling thread by every public entry point of the replica, since a replica may move between
//! threads.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use cudarc::driver::sys::{CUdeviceptr, CUfunction, CUstream};
use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaStream, result};
use cudarc::nvrtc::{CompileOptions, Ptx};

use crate::error::{Error, Result};

/// The kernel source, compiled by NVRTC on first use and cached (see [`KernelCache`]).
const SOURCE: &str = include_str!("kernels.cu");

/// Turns any CUDA error into ours, naming what was being done.
pub(crate) fn cuda<T, E: std::fmt::Debug>(what: &str, r: std::result::Result<T, E>) -> Result<T> {
    r.map_err(|e| Error::Device(format!("{what}: {e:?}")))
}

/// Whether a shared library of `name` (cudarc's candidate file names) can be loaded.
fn library_present(name: &str) -> bool {
    cudarc::get_lib_name_candidates(name).iter().any(|file| {
        // SAFETY: loading a CUDA library runs only its initialisers; the handle is dropped at
        // once (cudarc keeps its own).
        unsafe { libloading::Library::new(file) }.is_ok()
    })
}

/// Checks that the NVIDIA driver, NVRTC and cuBLASLt can be loaded and that GPU `ordinal`
/// exists; every failure says what is missing and what to do.
pub(crate) fn check_device(ordinal: usize) -> Result<()> {
    // SAFETY: only tries to load the driver library.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err(Error::Device(
            "device = \"cuda\" needs an NVIDIA GPU, but no NVIDIA driver (libcuda.so) was found on this machine: install the driver, or set device = \"cpu\"".into(),
        ));
    }
    for (lib, what) in [("nvrtc", "NVRTC"), ("cublasLt", "cuBLASLt")] {
        if !library_present(lib) {
            return Err(Error::Device(format!(
                "device = \"cuda\" needs CUDA's {what} library (lib{lib}.so), which was not found: install the CUDA toolkit and add its lib64 directory (usually /usr/local/cuda/lib64) to LD_LIBRARY_PATH"
            )));
        }
    }
    let count = cuda("counting CUDA devices", CudaContext::device_count())?;
    if count <= 0 {
        return Err(Error::Device(
            "device = \"cuda\" but the NVIDIA driver sees no GPU on this machine (check nvidia-smi), or set device = \"cpu\"".into(),
        ));
    }
    if ordinal >= count as usize {
        return Err(Error::Device(format!(
            "device = \"cuda:{ordinal}\" but this machine has {count} GPU{} (cuda:0..cuda:{})",
            if count == 1 { "" } else { "s" },
            count - 1
        )));
    }
    Ok(())
}

/// Where compiled kernels are kept: `dir` when given, else `$MILLRACE_KERNEL_CACHE`, else the
/// user's cache directory (`$XDG_CACHE_HOME/millrace/kernels` or `~/.cache/millrace/kernels`).
pub fn kernel_cache_dir(dir: Option<&Path>) -> PathBuf {
    if let Some(d) = dir {
        return d.to_path_buf();
    }
    if let Some(d) = std::env::var_os("MILLRACE_KERNEL_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("millrace").join("kernels")
}

/// FNV-1a of the parts, each followed by 0xff: names cache entries after what they were
/// compiled from.
fn fnv64(parts: &[&[u8]]) -> u64 {
    let mut bytes = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for part in parts {
        bytes.extend_from_slice(part);
        bytes.push(0xff);
    }
    crate::bundle::weights::fnv1a64(&bytes)
}

/// The PTX of [`SOURCE`] for compute capability `cc`: read from the cache, or compiled by NVRTC
/// and written there (atomically: temp file, then rename). A cache that cannot be written only
/// costs the next run a compile.
fn kernels_ptx(cache: &Path, cc: (i32, i32)) -> Result<Ptx> {
    let arch = format!("--gpu-architecture=compute_{}{}", cc.0, cc.1);
    let nvrtc = {
        let (mut major, mut minor) = (0, 0);
        // SAFETY: writes two ints; NVRTC was found by `check_device`.
        unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
        format!("{major}.{minor}")
    };
    let key = fnv64(&[SOURCE.as_bytes(), arch.as_bytes(), nvrtc.as_bytes()]);
    let file = cache.join(format!(
        "millrace-kernels-sm{}{}-{key:016x}.ptx",
        cc.0, cc.1
    ));
    if let Ok(ptx) = std::fs::read_to_string(&file) {
        tracing::debug!(file = %file.display(), "GPU kernels from the cache");
        return Ok(Ptx::from_src(ptx));
    }
    tracing::info!(
        "compiling millrace's GPU kernels for sm_{}{} with NVRTC {nvrtc} (the first GPU run on this machine does this once; cached in {})",
        cc.0,
        cc.1,
        cache.display()
    );
    let started = Instant::now();
    let opts = CompileOptions {
        options: vec![arch, "--std=c++17".into()],
        ..Default::default()
    };
    let ptx = cudarc::nvrtc::compile_ptx_with_opts(SOURCE, opts)
        .map_err(|e| Error::Device(format!("compiling the GPU kernels with NVRTC: {e:?}")))?;
    tracing::info!(
        seconds = started.elapsed().as_secs_f64(),
        "GPU kernels compiled"
    );
    let text = ptx.to_src();
    let tmp = cache.join(format!(".{}.{}.tmp", key, std::process::id()));
    let written = std::fs::create_dir_all(cache)
        .and_then(|()| std::fs::write(&tmp, &text))
        .and_then(|()| std::fs::rename(&tmp, &file));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        tracing::warn!(dir = %cache.display(), error = %e, "could not cache the GPU kernels; the next run compiles them again");
    }
    Ok(Ptx::from_src(text))
}

/// The compiled kernels of one context, by name.
pub(crate) struct Kernels {
    _module: Arc<CudaModule>,
    functions: Vec<(&'static str, CudaFunction)>,
}

const KERNEL_NAMES: &[&str] = &[
    "dw_small_f32",
    "dw_small_bf16",
    "dw_small_reduce",
    "to_f32",
    "to_bf16",
    "bias_act_f32",
    "bias_act_bf16",
    "act_back_f32",
    "act_back_bf16",
    "bias_grad_f32",
    "bias_grad_bf16",
    "loss_ce_f32",
    "loss_ce_bf16",
    "loss_reg_f32",
    "loss_reg_bf16",
    "softmax_rows",
    "opt_tick",
    "adam",
    "sgd",
    "scale_f32",
];

impl Kernels {
    pub(crate) fn get(&self, name: &str) -> Result<CUfunction> {
        self.functions
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, f)| f.cu_function())
            .ok_or_else(|| Error::Internal(format!("no GPU kernel named {name}")))
    }
}

/// One GPU as a replica uses it: context, a compute and a copy stream, kernels, cuBLASLt.
pub(crate) struct Gpu {
    pub(crate) ctx: Arc<CudaContext>,
    pub(crate) stream: Arc<CudaStream>,
    pub(crate) copy: Arc<CudaStream>,
    pub(crate) kernels: Kernels,
    pub(crate) name: String,
    pub(crate) cc: (i32, i32),
}

impl Gpu {
    /// Opens GPU `ordinal` (after [`check_device`]), loading the kernels from `cache`.
    pub(crate) fn open(ordinal: usize, cache: &Path) -> Result<Self> {
        check_device(ordinal)?;
        let ctx = cuda("opening the CUDA device", CudaContext::new(ordinal))?;
        // Streams are ordered by hand (events between the copy and compute streams); cudarc's
        // own tracking would add events inside captured graphs.
        // SAFETY: every buffer here is used on the streams that order it, see `TrainGraph`.
        unsafe { ctx.disable_event_tracking() };
        let cc = cuda("reading the compute capability", ctx.compute_capability())?;
        let name = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
        // The cache file is read (or written) for every replica: cheap, and the kernels are then
        // in the directory the user named, whichever replica came first.
        let ptx = kernels_ptx(cache, cc)?;
        let module = cuda("loading the GPU kernels", ctx.load_module(ptx))?;
        let mut functions = Vec::with_capacity(KERNEL_NAMES.len());
        for &n in KERNEL_NAMES {
            functions.push((n, cuda(n, module.load_function(n))?));
        }
        let stream = cuda("creating a CUDA stream", ctx.new_stream())?;
        let copy = cuda("creating a CUDA stream", ctx.new_stream())?;
        Ok(Self {
            ctx,
            stream,
            copy,
            kernels: Kernels {
                _module: module,
                functions,
            },
            name,
            cc,
        })
    }

    pub(crate) fn bind(&self) -> Result<()> {
        cuda("binding the CUDA context", self.ctx.bind_to_thread())
    }

    pub(crate) fn cu_stream(&self) -> CUstream {
        self.stream.cu_stream()
    }

    pub(crate) fn sync(&self) -> Result<()> {
        cuda("waiting for the GPU", self.stream.synchronize())
    }
}

/// A kernel argument: raw pointers and scalars, by value.
#[derive(Clone, Copy)]
pub(crate) enum Arg {
    Ptr(CUdeviceptr),
    I32(i32),
    I64(i64),
    F32(f32),
}

/// Launches `f` on `stream` with `grid x 256` threads.
pub(crate) fn launch(stream: CUstream, f: CUfunction, grid: u32, args: &[Arg]) -> Result<()> {
    let mut values: Vec<Arg> = args.to_vec();
    let mut pointers: Vec<*mut std::ffi::c_void> = values
        .iter_mut()
        .map(|a| match a {
            Arg::Ptr(p) => p as *mut CUdeviceptr as *mut std::ffi::c_void,
            Arg::I32(v) => v as *mut i32 as *mut std::ffi::c_void,
            Arg::I64(v) => v as *mut i64 as *mut std::ffi::c_void,
            Arg::F32(v) => v as *mut f32 as *mut std::ffi::c_void,
        })
        .collect();
    // SAFETY: the argument list matches the kernel's signature (each call site passes the
    // kernel's parameters in order); the values live in `values` until the call returns, which
    // is all cuLaunchKernel needs.
    let r = unsafe {
        result::launch_kernel(
            f,
            (grid.max(1), 1, 1),
            (256, 1, 1),
            0,
            stream,
            &mut pointers,
        )
    };
    cuda("launching a GPU kernel", r)
}

/// Blocks for a grid-stride kernel over `n` elements (at most 16 per SM-ish, enough to fill an
/// H100 without a huge grid).
pub(crate) fn grid_for(n: usize) -> u32 {
    n.div_ceil(256).clamp(1, 132 * 16) as u32
}

/// Blocks for one thread per item.
pub(crate) fn grid_exact(n: usize) -> u32 {
    n.div_ceil(256).max(1) as u32
}

/// Device memory, freed on drop.
pub(crate) struct DevBuf {
    pub(crate) ptr: CUdeviceptr,
    pub(crate) bytes: usize,
    ctx: Arc<CudaContext>,
}

impl DevBuf {
    /// `bytes` of zeroed device memory.
    pub(crate) fn zeroed(gpu: &Gpu, bytes: usize) -> Result<Self> {
        let bytes = bytes.max(16);
        // SAFETY: a fresh allocation, zeroed before use; freed once in Drop.
        let ptr = cuda("allocating GPU memory", unsafe {
            result::malloc_sync(bytes)
        })?;
        let buf = Self {
            ptr,
            bytes,
            ctx: gpu.ctx.clone(),
        };
        // SAFETY: `ptr` holds `bytes` bytes.
        cuda("zeroing GPU memory", unsafe {
            result::memset_d8_sync(ptr, 0, bytes)
        })?;
        Ok(buf)
    }

    /// Byte offset into the buffer.
    pub(crate) fn at(&self, offset_bytes: usize) -> CUdeviceptr {
        debug_assert!(offset_bytes <= self.bytes);
        self.ptr + offset_bytes as u64
    }

    /// Copies `src` to the start of the buffer, synchronously.
    pub(crate) fn write<T: Copy>(&self, src: &[T]) -> Result<()> {
        self.write_at(0, src)
    }

    /// Copies `src` to byte `offset` of the buffer, synchronously.
    pub(crate) fn write_at<T: Copy>(&self, offset: usize, src: &[T]) -> Result<()> {
        if offset + std::mem::size_of_val(src) > self.bytes {
            return Err(Error::Internal("GPU buffer overflow on write".into()));
        }
        // SAFETY: bounds checked above; synchronous copy from a live host slice.
        cuda("copying to the GPU", unsafe {
            result::memcpy_htod_sync(self.at(offset), src)
        })
    }

    /// Copies the buffer's first `dst.len()` values back, synchronously.
    pub(crate) fn read_into<T: Copy>(&self, offset: usize, dst: &mut [T]) -> Result<()> {
        if offset + std::mem::size_of_val(dst) > self.bytes {
            return Err(Error::Internal("GPU buffer overflow on read".into()));
        }
        // SAFETY: bounds checked above; synchronous copy into a live host slice.
        cuda("copying from the GPU", unsafe {
            result::memcpy_dtoh_sync(dst, self.at(offset))
        })
    }
}

impl Drop for DevBuf {
    fn drop(&mut self) {
        if self.ctx.bind_to_thread().is_ok() {
            // SAFETY: allocated by malloc_sync and freed once; the streams that used it were
            // synchronised by the owner's Drop.
            let _ = unsafe { result::free_sync(self.ptr) };
        }
    }
}

/// Page-locked host memory (for asynchronous copies), freed on drop.
pub(crate) struct Pinned<T: Copy + Default> {
    ptr: *mut T,
    len: usize,
    ctx: Arc<CudaContext>,
}

// SAFETY: plain host memory owned by this value; the copies that read or write it are ordered
// by events the owner waits on before touching it from the host again.
unsafe impl<T: Copy + Default + Send> Send for Pinned<T> {}

impl<T: Copy + Default> Pinned<T> {
    pub(crate) fn new(gpu: &Gpu, len: usize) -> Result<Self> {
        let len = len.max(1);
        let bytes = len * std::mem::size_of::<T>();
        // SAFETY: a fresh allocation of `bytes`, default-initialised below before any read.
        let raw = cuda("allocating pinned host memory", unsafe {
            result::malloc_host(bytes, 0)
        })?;
        let ptr = raw as *mut T;
        // SAFETY: `ptr` holds `len` values of T.
        unsafe {
            for i in 0..len {
                ptr.add(i).write(T::default());
            }
        }
        Ok(Self {
            ptr,
            len,
            ctx: gpu.ctx.clone(),
        })
    }

    pub(crate) fn as_slice(&self) -> &[T] {
        // SAFETY: `len` initialised values owned by self.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [T] {
        // SAFETY: `len` initialised values owned by self, borrowed mutably once.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl<T: Copy + Default> Drop for Pinned<T> {
    fn drop(&mut self) {
        if self.ctx.bind_to_thread().is_ok() {
            // SAFETY: allocated by malloc_host, freed once.
            let _ = unsafe { result::free_host(self.ptr as *mut std::ffi::c_void) };
        }
    }
}

/// An event to order the streams and to wait on from the host.
pub(crate) struct Event {
    raw: cudarc::driver::sys::CUevent,
}

// SAFETY: a CUDA event handle may be used from any thread of the process.
unsafe impl Send for Event {}

impl Event {
    pub(crate) fn new() -> Result<Self> {
        let raw = cuda(
            "creating a CUDA event",
            result::event::create(cudarc::driver::sys::CUevent_flags::CU_EVENT_DISABLE_TIMING),
        )?;
        Ok(Self { raw })
    }

    pub(crate) fn record(&self, stream: CUstream) -> Result<()> {
        // SAFETY: a live event and stream.
        cuda("recording a CUDA event", unsafe {
            result::event::record(self.raw, stream)
        })
    }

    /// Makes `stream` wait for the work recorded before this event.
    pub(crate) fn wait_on(&self, stream: CUstream) -> Result<()> {
        // SAFETY: a live event and stream.
        cuda("ordering CUDA streams", unsafe {
            result::stream::wait_event(
                stream,
                self.raw,
                cudarc::driver::sys::CUevent_wait_flags::CU_EVENT_WAIT_DEFAULT,
            )
        })
    }

    pub(crate) fn synchronize(&self) -> Result<()> {
        // SAFETY: a live event.
        cuda("waiting for the GPU", unsafe {
            result::event::synchronize(self.raw)
        })
    }
}

impl Drop for Event {
    fn drop(&mut self) {
        // SAFETY: created by event::create, destroyed once.
        let _ = unsafe { result::event::destroy(self.raw) };
    }
}

/// An event that records time, for measuring work on a stream.
pub(crate) struct TimingEvent {
    raw: cudarc::driver::sys::CUevent,
}

impl TimingEvent {
    pub(crate) fn new() -> Result<Self> {
        let raw = cuda(
            "creating a CUDA event",
            result::event::create(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT),
        )?;
        Ok(Self { raw })
    }

    pub(crate) fn record(&self, stream: CUstream) -> Result<()> {
        // SAFETY: a live event and stream.
        cuda("recording a CUDA event", unsafe {
            result::event::record(self.raw, stream)
        })
    }

    /// Milliseconds from `start` to this event; both must have completed.
    pub(crate) fn since(&self, start: &TimingEvent) -> Result<f32> {
        // SAFETY: live events, recorded and completed (the caller synchronised).
        cuda("reading a CUDA event", unsafe {
            result::event::elapsed(start.raw, self.raw)
        })
    }
}

impl Drop for TimingEvent {
    fn drop(&mut self) {
        // SAFETY: created by event::create, destroyed once.
        let _ = unsafe { result::event::destroy(self.raw) };
    }
}
