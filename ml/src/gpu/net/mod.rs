//! The MLP on the GPU: parameters, activation buffers for a batch of up to `capacity` rows,
//! planned products, and the forward and backward passes as enqueued work.
//!
//! It implements [`MlpConfig`]'s model, the one model definition: the same layers, activation
//! and parameters as the CPU [`Mlp`](crate::model::Mlp). On the device each weight is kept
//! transposed (`[d_output, d_input]` row-major, cuBLASLt's column-major `d_input x d_output`), so
//! that the forward product is the `T·N` form and the weight gradient the `N·T` form with the
//! bias gradient fused; [`Layout`] converts flat vectors between the two orders.

use cudarc::driver::sys::{CUdeviceptr, CUstream};

use super::gemm::{Dt, Epilogue, Gemm, Lt, Shape};
use super::runtime::{Arg, DevBuf, Gpu, grid_exact, grid_for, launch};
use crate::error::Result;
use crate::model::MlpConfig;

mod backward;
mod layout;

pub(crate) use backward::LossKind;
pub(crate) use layout::{LayerGeom, Layout, act_code};

/// How a hidden layer's forward product ends.
enum Post {
    /// cuBLASLt applied bias and ReLU, writing `h` directly.
    Fused,
    /// Like `Fused`, also recording the ReLU mask for the backward product.
    FusedAux,
    /// cuBLASLt added the bias into `z`; a kernel writes `h = act(z)`.
    Act,
    /// A kernel adds the bias into `z` and writes `h = act(z)`.
    BiasAct,
}

struct Forward {
    gemm: Gemm,
    post: Post,
}

struct Backward {
    /// The input-gradient product also applies the previous layer's ReLU derivative.
    dx_drelu: bool,
    /// Weight gradient; `true` when it also wrote the bias gradient. `None`: the layer has at
    /// most [`SMALL_N`] outputs and our two-pass kernel computes both gradients.
    dw: Option<(Gemm, bool)>,
    /// Input gradient (every layer but the first).
    dx: Option<Gemm>,
}

/// Parameters (device order) and per-batch buffers of one network on one GPU.
pub(crate) struct Net {
    pub(crate) layout: Layout,
    pub(crate) act: i32,
    pub(crate) dt: Dt,
    pub(crate) capacity: usize,
    /// f32 master parameters.
    pub(crate) w: DevBuf,
    /// bf16 copy the products read, when `dt` is bf16.
    pub(crate) w16: Option<DevBuf>,
    /// The f32 input of a batch converted to bf16 (bf16 only).
    x16: Option<DevBuf>,
    z: Vec<DevBuf>,
    h: Vec<DevBuf>,
    /// ReLU masks of the hidden layers (training with fused ReLU derivatives only), and their
    /// leading dimension in bits.
    aux: Vec<DevBuf>,
    aux_ld: Vec<i64>,
    /// f32 outputs `[capacity, d_out]`.
    pub(crate) out: DevBuf,
    fwd: Vec<Forward>,
    /// Training buffers, when the net trains.
    train: Option<TrainBufs>,
}

struct TrainBufs {
    /// Gradient of the last layer's output, then of each hidden layer's (in dt).
    dout: DevBuf,
    dh: Vec<DevBuf>,
    bwd: Vec<Backward>,
    /// Partial sums of the few-output layers' gradients (see `dw_small` in kernels.cu).
    partials: DevBuf,
}

/// Layers with at most this many outputs get their weight gradient from our kernel
/// (`SMALL_N` in kernels.cu).
const SMALL_N: usize = 16;
/// Rows per partial sum of that kernel: enough chunks to fill the GPU, few enough that adding
/// them up stays cheap (at most `MAX_CHUNK_ROWS` in kernels.cu).
fn chunk_rows(cap: usize) -> usize {
    (cap / 64).clamp(32, 512)
}

impl Net {
    /// A net for batches of up to `capacity` rows with parameters `device_params` (device order).
    pub(crate) fn new(
        gpu: &Gpu,
        lt: &Lt,
        config: &MlpConfig,
        dt: Dt,
        capacity: usize,
        train: bool,
    ) -> Result<Self> {
        let layout = Layout::new(config);
        let w = DevBuf::zeroed(gpu, layout.device_len * 4)?;
        let w16 = match dt {
            Dt::Bf16 => Some(DevBuf::zeroed(gpu, layout.device_len * 2)?),
            Dt::F32 => None,
        };
        let mut net = Self {
            act: act_code(config.activation),
            dt,
            capacity: 0,
            w,
            w16,
            x16: None,
            z: Vec::new(),
            h: Vec::new(),
            aux: Vec::new(),
            aux_ld: Vec::new(),
            out: DevBuf::zeroed(gpu, 4)?,
            fwd: Vec::new(),
            train: None,
            layout,
        };
        net.resize(gpu, lt, capacity, train)?;
        Ok(net)
    }

    /// Reallocates the batch buffers and replans the products for `capacity` rows (parameters
    /// are kept).
    pub(crate) fn resize(
        &mut self,
        gpu: &Gpu,
        lt: &Lt,
        capacity: usize,
        train: bool,
    ) -> Result<()> {
        let cap = capacity.max(1);
        let e = self.dt.bytes();
        let n_layers = self.layout.layers.len();
        let hidden = &self.layout.layers[..n_layers - 1];
        self.x16 = match self.dt {
            Dt::Bf16 => Some(DevBuf::zeroed(gpu, cap * self.layout.layers[0].d_in * e)?),
            Dt::F32 => None,
        };
        self.z = hidden
            .iter()
            .map(|l| DevBuf::zeroed(gpu, cap * l.d_out * e))
            .collect::<Result<_>>()?;
        self.h = hidden
            .iter()
            .map(|l| DevBuf::zeroed(gpu, cap * l.d_out * e))
            .collect::<Result<_>>()?;
        let last = self.layout.layers[n_layers - 1];
        self.out = DevBuf::zeroed(gpu, cap * last.d_out * 4)?;
        self.capacity = cap;
        self.fwd.clear();
        let use_aux = train && self.act == 0 && super::gemm::drelu_enabled();
        self.aux_ld = hidden
            .iter()
            .map(|l| l.d_out.next_multiple_of(128) as i64)
            .collect();
        self.aux = if use_aux {
            self.aux_ld
                .iter()
                .map(|&ld| DevBuf::zeroed(gpu, ld as usize / 8 * cap))
                .collect::<Result<_>>()?
        } else {
            Vec::new()
        };
        for i in 0..n_layers {
            let forward = self.plan_forward(lt, gpu, i, cap)?;
            self.fwd.push(forward);
        }
        self.train = None;
        if train {
            let dout = DevBuf::zeroed(gpu, cap * last.d_out * e)?;
            let dh = hidden
                .iter()
                .map(|l| DevBuf::zeroed(gpu, cap * l.d_out * e))
                .collect::<Result<_>>()?;
            let mut bwd = Vec::with_capacity(n_layers);
            let mut partials = 0usize;
            for i in 0..n_layers {
                bwd.push(self.plan_backward(lt, gpu, i, cap, &mut partials)?);
            }
            let partials = DevBuf::zeroed(gpu, partials * 4)?;
            self.train = Some(TrainBufs {
                dout,
                dh,
                bwd,
                partials,
            });
        }
        Ok(())
    }

    /// Plans layer `i`'s forward product for `cap` rows, with the bias and activation fused in
    /// its epilogue where cuBLASLt can (the ReLU mask kept for the backward pass when training
    /// uses it), else applied after it.
    fn plan_forward(&self, lt: &Lt, gpu: &Gpu, i: usize, cap: usize) -> Result<Forward> {
        let n_layers = self.layout.layers.len();
        let l = self.layout.layers[i];
        let is_last = i + 1 == n_layers;
        let shape = Shape {
            trans_a: true,
            trans_b: false,
            m: l.d_out,
            n: cap,
            k: l.d_in,
            a: self.dt,
            b: if i == 0 {
                Dt::F32.max_with(self.dt)
            } else {
                self.dt
            },
            d: if is_last { Dt::F32 } else { self.dt },
        };
        let bias_master = self.w.at(l.b * 4);
        let bias_dt = match &self.w16 {
            Some(w16) if !is_last => w16.at(l.b * 2),
            _ => bias_master,
        };
        let fused = if is_last {
            Gemm::plan(lt, shape, Epilogue::Bias(bias_master))?.map(|g| (g, Post::Fused))
        } else if self.act == 0 {
            let with_aux = match self.aux.get(i) {
                Some(aux) => Gemm::plan(
                    lt,
                    shape,
                    Epilogue::ReluAuxBias {
                        bias: bias_dt,
                        aux: aux.ptr,
                        ld: self.aux_ld[i],
                    },
                )?
                .map(|g| (g, Post::FusedAux)),
                None => None,
            };
            match with_aux {
                Some(f) => Some(f),
                None => {
                    Gemm::plan(lt, shape, Epilogue::ReluBias(bias_dt))?.map(|g| (g, Post::Fused))
                }
            }
        } else {
            Gemm::plan(lt, shape, Epilogue::Bias(bias_dt))?.map(|g| (g, Post::Act))
        };
        let (mut gemm, post) = match fused {
            Some(f) => f,
            None => (Gemm::plan_plain(lt, shape)?, Post::BiasAct),
        };
        gemm.tune(lt, gpu)?;
        Ok(Forward { gemm, post })
    }

    /// Plans layer `i`'s backward products for `cap` rows: its weight (and bias) gradient, or
    /// none for a narrow layer, whose gradient is summed in `partials` chunks instead; and the
    /// gradient of its input (none for the first layer), with the previous layer's ReLU mask
    /// fused where its forward pass kept one.
    fn plan_backward(
        &self,
        lt: &Lt,
        gpu: &Gpu,
        i: usize,
        cap: usize,
        partials: &mut usize,
    ) -> Result<Backward> {
        let l = self.layout.layers[i];
        let input_dt = if i == 0 {
            Dt::F32.max_with(self.dt)
        } else {
            self.dt
        };
        let dw_shape = Shape {
            trans_a: false,
            trans_b: true,
            m: l.d_in,
            n: l.d_out,
            k: cap,
            a: input_dt,
            b: self.dt,
            d: Dt::F32,
        };
        // The bias gradient lands in the gradient buffer, whose address the trainer
        // passes at run time: plan with a placeholder and patch below.
        let dw = if l.d_out <= SMALL_N {
            *partials = (*partials).max(cap.div_ceil(chunk_rows(cap)) * l.d_out * (l.d_in + 1));
            None
        } else {
            let mut dw = match Gemm::plan(lt, dw_shape, Epilogue::BgradB(0))? {
                Some(g) => (g, true),
                None => (Gemm::plan_plain(lt, dw_shape)?, false),
            };
            dw.0.tune(lt, gpu)?;
            Some(dw)
        };
        let dx_shape = Shape {
            trans_a: false,
            trans_b: false,
            m: l.d_in,
            n: cap,
            k: l.d_out,
            a: self.dt,
            b: self.dt,
            d: self.dt,
        };
        let drelu = match (i, self.fwd.get(i.wrapping_sub(1))) {
            (
                1..,
                Some(Forward {
                    post: Post::FusedAux,
                    ..
                }),
            ) => Gemm::plan(
                lt,
                dx_shape,
                Epilogue::DRelu {
                    aux: self.aux[i - 1].ptr,
                    ld: self.aux_ld[i - 1],
                },
            )?,
            _ => None,
        };
        let dx_drelu = drelu.is_some();
        let mut dx = match (i, drelu) {
            (0, _) => None,
            (_, Some(g)) => Some(g),
            (_, None) => Some(Gemm::plan_plain(lt, dx_shape)?),
        };
        if let Some(g) = dx.as_mut() {
            g.tune(lt, gpu)?;
        }
        Ok(Backward { dx_drelu, dw, dx })
    }

    /// Replaces the parameters with `flat` (model order), refreshing the bf16 copy; waits for
    /// the GPU. The streams must be idle.
    pub(crate) fn load_params(&self, gpu: &Gpu, flat: &[f32]) -> Result<()> {
        self.w.write(&self.layout.to_device(flat))?;
        if let Some(w16) = &self.w16 {
            let n = self.layout.device_len;
            launch(
                gpu.cu_stream(),
                gpu.kernels.get("to_bf16")?,
                grid_for(n),
                &[Arg::Ptr(self.w.ptr), Arg::Ptr(w16.ptr), Arg::I64(n as i64)],
            )?;
        }
        gpu.sync()
    }

    /// Values per row of output (classes, or 1 for regression).
    pub(crate) fn output_dim(&self) -> usize {
        self.layout.layers.last().map_or(1, |l| l.d_out)
    }

    /// Enqueues softmax over the first `rows` rows of the outputs when they are class scores
    /// (more than one output per row).
    pub(crate) fn softmax(&self, gpu: &Gpu, stream: CUstream, rows: usize) -> Result<()> {
        let k = self.output_dim();
        if k < 2 {
            return Ok(());
        }
        launch(
            stream,
            gpu.kernels.get("softmax_rows")?,
            grid_exact(rows),
            &[
                Arg::Ptr(self.out.ptr),
                Arg::I32(rows as i32),
                Arg::I32(k as i32),
            ],
        )
    }

    /// Pointer to layer `l`'s weight as the products read it.
    fn weight(&self, l: &LayerGeom) -> CUdeviceptr {
        match &self.w16 {
            Some(w16) => w16.at(l.w * 2),
            None => self.w.at(l.w * 4),
        }
    }

    /// Enqueues the forward pass of the batch at `x` (f32, `[capacity, d_in]`) into `out`.
    pub(crate) fn forward(
        &self,
        gpu: &Gpu,
        lt: &Lt,
        stream: CUstream,
        x: CUdeviceptr,
    ) -> Result<()> {
        self.forward_marked(gpu, lt, stream, x, &mut |_| Ok(()))
    }

    /// [`Net::forward`], calling `mark` after the input conversion and each layer.
    pub(crate) fn forward_marked(
        &self,
        gpu: &Gpu,
        lt: &Lt,
        stream: CUstream,
        x: CUdeviceptr,
        mark: &mut dyn FnMut(std::fmt::Arguments<'_>) -> Result<()>,
    ) -> Result<()> {
        let k = &gpu.kernels;
        let cap = self.capacity;
        let first = self.layout.layers[0];
        let input = match &self.x16 {
            Some(x16) => {
                let n = cap * first.d_in;
                launch(
                    stream,
                    k.get("to_bf16")?,
                    grid_for(n),
                    &[Arg::Ptr(x), Arg::Ptr(x16.ptr), Arg::I64(n as i64)],
                )?;
                mark(format_args!("forward_input_to_bf16"))?;
                x16.ptr
            }
            None => x,
        };
        let n_layers = self.layout.layers.len();
        let mut a = input;
        for (i, (l, f)) in self.layout.layers.iter().zip(&self.fwd).enumerate() {
            let w = self.weight(l);
            if i + 1 == n_layers {
                f.gemm.run(lt, stream, w, a, self.out.ptr)?;
                if matches!(f.post, Post::BiasAct) {
                    // Identity activation: bias only, in place.
                    let bias = self.w.at(l.b * 4);
                    launch(
                        stream,
                        k.get("bias_act_f32")?,
                        grid_for(cap * l.d_out),
                        &[
                            Arg::Ptr(self.out.ptr),
                            Arg::Ptr(bias),
                            Arg::Ptr(self.out.ptr),
                            Arg::I64(cap as i64),
                            Arg::I32(l.d_out as i32),
                            Arg::I32(-1),
                            Arg::I32(1),
                        ],
                    )?;
                }
            } else {
                let (z, h) = (self.z[i].ptr, self.h[i].ptr);
                match f.post {
                    Post::Fused | Post::FusedAux => f.gemm.run(lt, stream, w, a, h)?,
                    Post::Act | Post::BiasAct => {
                        f.gemm.run(lt, stream, w, a, z)?;
                        let add_bias = matches!(f.post, Post::BiasAct);
                        let name = self.kernel("bias_act");
                        launch(
                            stream,
                            k.get(&name)?,
                            grid_for(cap * l.d_out),
                            &[
                                Arg::Ptr(z),
                                Arg::Ptr(self.w.at(l.b * 4)),
                                Arg::Ptr(h),
                                Arg::I64(cap as i64),
                                Arg::I32(l.d_out as i32),
                                Arg::I32(self.act),
                                Arg::I32(i32::from(add_bias)),
                            ],
                        )?;
                    }
                }
                a = h;
            }
            mark(format_args!("forward_layer{i}"))?;
        }
        Ok(())
    }

    fn kernel(&self, base: &str) -> String {
        match self.dt {
            Dt::F32 => format!("{base}_f32"),
            Dt::Bf16 => format!("{base}_bf16"),
        }
    }
}

impl Dt {
    /// The type of the first layer's input as the products read it: the f32 input itself, or
    /// its bf16 conversion.
    fn max_with(self, dt: Dt) -> Dt {
        match (self, dt) {
            (Dt::F32, Dt::F32) => Dt::F32,
            _ => Dt::Bf16,
        }
    }
}
