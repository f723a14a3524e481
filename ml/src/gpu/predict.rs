//! Forward passes on the GPU: the trainer's evaluation, and [`GpuPredictor`] for serving.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::GpuOptions;
use super::gemm::Lt;
use super::graph::{Graph, run_cached};
use super::net::Net;
use super::runtime::{DevBuf, Gpu, Pinned, cuda};
use crate::bundle::ModelBundle;
use crate::error::{Error, Result};
use crate::model::MlpConfig;
use crate::trainer::check_features;

/// Predictions for `rows` rows through `net`, in chunks of its capacity staged in `xbuf`
/// (softmax for classification). The streams must be idle.
pub(crate) fn forward_chunks(
    gpu: &Gpu,
    lt: &Lt,
    net: &Net,
    xbuf: &DevBuf,
    x: &[f32],
    rows: usize,
) -> Result<Vec<f32>> {
    let d_in = net.layout.layers[0].d_in;
    let (cap, k) = (net.capacity, net.output_dim());
    let stream = gpu.cu_stream();
    let mut out = vec![0f32; rows * k];
    let mut start = 0;
    while start < rows {
        let n = (rows - start).min(cap);
        xbuf.write(&x[start * d_in..(start + n) * d_in])?;
        net.forward(gpu, lt, stream, xbuf.ptr)?;
        net.softmax(gpu, stream, n)?;
        gpu.sync()?;
        net.out.read_into(0, &mut out[start * k..(start + n) * k])?;
        start += n;
    }
    Ok(out)
}

/// What one forward pass needs besides the net: staging and the captured graph.
struct Serving {
    net: Net,
    x: DevBuf,
    x_host: Pinned<f32>,
    out_host: Pinned<f32>,
    graph: Option<Graph>,
    use_graphs: bool,
    lt: Lt,
    gpu: Gpu,
}

/// A trained model answering batches on the GPU: the serving side of `device = "cuda"`.
///
/// One forward pass per batch: the rows are staged in page-locked memory, copied, run through
/// a captured graph (products, bias and activation epilogues, softmax) and copied back. Batches
/// of any size up to the capacity share one graph (the padding rows cost little); a bigger batch
/// grows the buffers once.
pub struct GpuPredictor {
    /// Independent forward passes (own stream, buffers and weights), so that several batcher
    /// threads keep several batches in flight.
    pool: Vec<Mutex<Serving>>,
    next: AtomicUsize,
    input_dim: usize,
    output_dim: usize,
    device_name: String,
}

impl std::fmt::Debug for GpuPredictor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuPredictor")
            .field("device", &self.device_name)
            .field("input_dim", &self.input_dim)
            .field("output_dim", &self.output_dim)
            .finish_non_exhaustive()
    }
}

impl GpuPredictor {
    /// Loads `bundle`'s weights onto the GPU `options` names, `options.streams` times.
    pub fn new(bundle: &ModelBundle, options: &GpuOptions) -> Result<Self> {
        bundle.validate()?;
        let input_dim = bundle.input_dim();
        let output_dim = bundle.task.output_dim();
        let pool = (0..options.streams.max(1))
            .map(|_| Serving::open(bundle, options).map(Mutex::new))
            .collect::<Result<Vec<_>>>()?;
        let device_name = pool[0]
            .lock()
            .map_err(|_| Error::Internal("GPU predictor lock poisoned".into()))?
            .gpu
            .name
            .clone();
        tracing::info!(gpu = %device_name, precision = ?options.precision, streams = pool.len(), "serving on the GPU");
        Ok(Self {
            pool,
            next: AtomicUsize::new(0),
            input_dim,
            output_dim,
            device_name,
        })
    }

    /// Number of input features per row.
    pub fn input_dim(&self) -> usize {
        self.input_dim
    }

    /// Values per row of output (class probabilities, or one value).
    pub fn output_dim(&self) -> usize {
        self.output_dim
    }

    /// The GPU's name.
    pub fn device_name(&self) -> &str {
        &self.device_name
    }

    /// Predictions for `rows` rows (`x` row-major): `rows * output_dim` values, as
    /// [`DensePredictor::predict`](crate::bundle::DensePredictor::predict).
    pub fn predict(&self, x: &[f32], rows: usize) -> Result<Vec<f32>> {
        check_features(x, rows, self.input_dim)?;
        if rows == 0 {
            return Ok(Vec::new());
        }
        // A free forward pass if there is one, else wait for the next in turn.
        let first = self.next.fetch_add(1, Ordering::Relaxed) % self.pool.len();
        let free = (0..self.pool.len())
            .map(|k| (first + k) % self.pool.len())
            .find_map(|k| self.pool[k].try_lock().ok());
        let mut s = match free {
            Some(s) => s,
            None => self.pool[first]
                .lock()
                .map_err(|_| Error::Internal("GPU predictor lock poisoned".into()))?,
        };
        s.gpu.bind()?;
        if rows > s.net.capacity {
            let cap = rows.next_power_of_two();
            let Serving { gpu, lt, net, .. } = &mut *s;
            net.resize(gpu, lt, cap, false)?;
            let x = DevBuf::zeroed(gpu, cap * self.input_dim * 4)?;
            let x_host = Pinned::new(gpu, cap * self.input_dim)?;
            let out_host = Pinned::new(gpu, cap * self.output_dim)?;
            s.x = x;
            s.x_host = x_host;
            s.out_host = out_host;
            s.graph = None;
        }
        s.x_host.as_mut_slice()[..x.len()].copy_from_slice(x);
        let stream = s.gpu.cu_stream();
        // SAFETY: pinned staging owned by `s`, read by this copy before the sync below.
        cuda("copying a batch to the GPU", unsafe {
            cudarc::driver::result::memcpy_htod_async(
                s.x.ptr,
                &s.x_host.as_slice()[..x.len()],
                stream,
            )
        })?;
        let mut cache = s.graph.take();
        let mut enabled = s.use_graphs;
        let ran = run_cached(&mut cache, &mut enabled, stream, || s.enqueue());
        s.graph = cache;
        s.use_graphs = enabled;
        ran?;
        let n = rows * self.output_dim;
        let out_ptr = s.out_host.as_slice().as_ptr() as *mut std::ffi::c_void;
        // SAFETY: `out_host` is pinned and holds capacity * output_dim values; the host reads it
        // after the sync below.
        cuda("reading predictions back", unsafe {
            cudarc::driver::sys::cuMemcpyDtoHAsync_v2(out_ptr, s.net.out.ptr, n * 4, stream)
                .result()
        })?;
        s.gpu.sync()?;
        Ok(s.out_host.as_slice()[..n].to_vec())
    }
}

impl Serving {
    /// One forward pass's worth of GPU state for `bundle`.
    fn open(bundle: &ModelBundle, options: &GpuOptions) -> Result<Self> {
        let input_dim = bundle.input_dim();
        let config = MlpConfig::from_spec(&bundle.builtin_spec()?, &bundle.task, input_dim);
        let (gpu, lt, dt) = super::open(options)?;
        let cap = 256;
        let net = Net::new(&gpu, &lt, &config, dt, cap, false)?;
        net.load_params(&gpu, &bundle.weights)?;
        let output_dim = bundle.task.output_dim();
        Ok(Self {
            x: DevBuf::zeroed(&gpu, cap * input_dim * 4)?,
            x_host: Pinned::new(&gpu, cap * input_dim)?,
            out_host: Pinned::new(&gpu, cap * output_dim)?,
            graph: None,
            use_graphs: options.graphs,
            net,
            lt,
            gpu,
        })
    }

    /// The forward pass of the staged batch at full capacity, plus softmax for classification.
    fn enqueue(&self) -> Result<()> {
        let stream = self.gpu.cu_stream();
        self.net.forward(&self.gpu, &self.lt, stream, self.x.ptr)?;
        self.net.softmax(&self.gpu, stream, self.net.capacity)
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        if self.gpu.bind().is_ok() {
            let _ = self.gpu.sync();
        }
    }
}
