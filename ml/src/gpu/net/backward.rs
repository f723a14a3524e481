//! The loss and the backward pass of a [`Net`]: output gradient, weight and bias gradients,
//! input gradients through the activations.

use cudarc::driver::result;
use cudarc::driver::sys::{CUdeviceptr, CUstream};

use super::{Net, Post, TrainBufs, chunk_rows};
use crate::error::Result;
use crate::gpu::gemm::Lt;
use crate::gpu::runtime::{Arg, DevBuf, Gpu, cuda, grid_exact, grid_for, launch};
use crate::model::Task;
use crate::trainer::Loss;

impl Net {
    /// Enqueues the loss of the outputs against targets `y` (i64 classes or f32 values) under
    /// `ctl`: its sum is added to `loss_acc` (f64) and the output gradient written.
    pub(crate) fn loss(
        &self,
        gpu: &Gpu,
        stream: CUstream,
        y: CUdeviceptr,
        ctl: CUdeviceptr,
        loss_acc: CUdeviceptr,
        loss: LossKind,
    ) -> Result<()> {
        let t = self.train_bufs()?;
        let cap = self.capacity;
        let k = &gpu.kernels;
        // SAFETY: `loss_acc` holds one f64.
        cuda("clearing the loss", unsafe {
            result::memset_d8_async(loss_acc, 0, 8, stream)
        })?;
        // Both loss kernels take the same arguments; the last is the class count, or whether
        // the error is absolute.
        let (kernel, last) = match loss {
            LossKind::CrossEntropy { classes } => ("loss_ce", classes as i32),
            LossKind::Squared => ("loss_reg", 0),
            LossKind::Absolute => ("loss_reg", 1),
        };
        launch(
            stream,
            k.get(&self.kernel(kernel))?,
            grid_exact(cap),
            &[
                Arg::Ptr(self.out.ptr),
                Arg::Ptr(y),
                Arg::Ptr(ctl),
                Arg::Ptr(t.dout.ptr),
                Arg::Ptr(loss_acc),
                Arg::I32(cap as i32),
                Arg::I32(last),
            ],
        )
    }

    fn train_bufs(&self) -> Result<&TrainBufs> {
        self.train.as_ref().ok_or_else(|| {
            crate::error::Error::Internal("GPU net built without training buffers".into())
        })
    }

    /// Enqueues the backward pass from the output gradient, writing the flat gradient (device
    /// order, f32) at `grads`. `x` is the batch's input, as given to [`Net::forward`].
    pub(crate) fn backward(
        &self,
        gpu: &Gpu,
        lt: &Lt,
        stream: CUstream,
        x: CUdeviceptr,
        grads: &DevBuf,
    ) -> Result<()> {
        self.backward_marked(gpu, lt, stream, x, grads, &mut |_| Ok(()))
    }

    /// [`Net::backward`], calling `mark` after each product and kernel (to time them).
    pub(crate) fn backward_marked(
        &self,
        gpu: &Gpu,
        lt: &Lt,
        stream: CUstream,
        x: CUdeviceptr,
        grads: &DevBuf,
        mark: &mut dyn FnMut(std::fmt::Arguments<'_>) -> Result<()>,
    ) -> Result<()> {
        let t = self.train_bufs()?;
        let k = &gpu.kernels;
        let cap = self.capacity;
        let input = self.x16.as_ref().map_or(x, |b| b.ptr);
        let mut dz = t.dout.ptr;
        for i in (0..self.layout.layers.len()).rev() {
            let l = self.layout.layers[i];
            let b = &t.bwd[i];
            let a = if i == 0 { input } else { self.h[i - 1].ptr };
            match &b.dw {
                Some((dw, true)) => {
                    dw.run_with_bias(lt, stream, a, dz, grads.at(l.w * 4), grads.at(l.b * 4))?;
                    mark(format_args!("layer{i}_dw_bgrad_fused"))?;
                }
                Some((dw, false)) => {
                    dw.run(lt, stream, a, dz, grads.at(l.w * 4))?;
                    launch(
                        stream,
                        k.get(&self.kernel("bias_grad"))?,
                        grid_exact(l.d_out),
                        &[
                            Arg::Ptr(dz),
                            Arg::Ptr(grads.at(l.b * 4)),
                            Arg::I32(cap as i32),
                            Arg::I32(l.d_out as i32),
                        ],
                    )?;
                    mark(format_args!("layer{i}_dw_then_bias_kernel"))?;
                }
                None => {
                    let rows = chunk_rows(cap);
                    let chunks = cap.div_ceil(rows);
                    let xblocks = (l.d_in + 1).div_ceil(256);
                    launch(
                        stream,
                        k.get(&self.kernel("dw_small"))?,
                        (xblocks * chunks) as u32,
                        &[
                            Arg::Ptr(a),
                            Arg::Ptr(dz),
                            Arg::Ptr(t.partials.ptr),
                            Arg::I32(cap as i32),
                            Arg::I32(l.d_in as i32),
                            Arg::I32(l.d_out as i32),
                            Arg::I32(rows as i32),
                        ],
                    )?;
                    launch(
                        stream,
                        k.get("dw_small_reduce")?,
                        grid_for(l.d_out * (l.d_in + 1)),
                        &[
                            Arg::Ptr(t.partials.ptr),
                            Arg::Ptr(grads.at(l.w * 4)),
                            Arg::Ptr(grads.at(l.b * 4)),
                            Arg::I32(chunks as i32),
                            Arg::I32(l.d_in as i32),
                            Arg::I32(l.d_out as i32),
                        ],
                    )?;
                    mark(format_args!("layer{i}_dw_small_kernel"))?;
                }
            }
            if let Some(dx) = &b.dx {
                let dh = t.dh[i - 1].ptr;
                dx.run(lt, stream, self.weight(&l), dz, dh)?;
                if b.dx_drelu {
                    // The product applied the ReLU derivative itself.
                    mark(format_args!("layer{i}_dx_drelu_fused"))?;
                    dz = dh;
                    continue;
                }
                mark(format_args!("layer{i}_dx"))?;
                // With ReLU fused into the product, `z` was never written: the derivative only
                // needs `h` then.
                let z = match self.fwd[i - 1].post {
                    Post::Fused | Post::FusedAux => self.h[i - 1].ptr,
                    _ => self.z[i - 1].ptr,
                };
                let n = cap * l.d_in;
                launch(
                    stream,
                    k.get(&self.kernel("act_back"))?,
                    grid_for(n),
                    &[
                        Arg::Ptr(dh),
                        Arg::Ptr(z),
                        Arg::Ptr(self.h[i - 1].ptr),
                        Arg::I64(n as i64),
                        Arg::I32(self.act),
                    ],
                )?;
                mark(format_args!("layer{}_act_back", i - 1))?;
                dz = dh;
            }
        }
        Ok(())
    }
}

/// The loss the output gradient is taken of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LossKind {
    CrossEntropy { classes: usize },
    Squared,
    Absolute,
}

impl LossKind {
    /// The kernel's view of `loss` on `task` (classification is always cross-entropy).
    pub(crate) fn new(task: &Task, loss: Loss) -> Self {
        match (task, loss) {
            (Task::Classification { num_classes }, _) => LossKind::CrossEntropy {
                classes: *num_classes,
            },
            (Task::Regression, Loss::Mae) => LossKind::Absolute,
            (Task::Regression, _) => LossKind::Squared,
        }
    }
}
