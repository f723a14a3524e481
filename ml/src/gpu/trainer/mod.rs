//! [`GpuTrainer`]: a model replica on one GPU, speaking the same flat vectors as the CPU
//! [`Trainer`](crate::trainer::Trainer).
//!
//! A step is forward, loss, backward and the optimiser: about a dozen launches, captured once into
//! a CUDA graph per input slot and replayed. Batches go through two slots of page-locked memory:
//! while the GPU runs step `k`, the caller assembles batch `k + 1`, which is copied on a second
//! stream; [`GpuTrainer::step`] returns the loss of the step before (the GPU is never waited for
//! while it has work) and [`GpuTrainer::flush`] the last one.

use cudarc::driver::sys::{self as dsys, CUstream};

use super::gemm::Lt;
use super::graph::{Graph, run_cached};
use super::net::{LossKind, Net};
use super::runtime::{Arg, DevBuf, Event, Gpu, Pinned, cuda, grid_for, launch};
use super::{GpuOptions, Precision};
use crate::error::{Error, Result};
use crate::model::{MlpConfig, ModelSpec, Task};
use crate::optim::OptimizerSpec;
use crate::trainer::{Loss, TargetsRef, check_features, check_targets, replica_config};

mod state;

/// One input slot: device buffers for a batch and the pinned memory it is staged in.
struct Slot {
    x: DevBuf,
    y: DevBuf,
    ctl: DevBuf,
    x_host: Pinned<f32>,
    y_host: Pinned<u64>,
    ctl_host: Pinned<u32>,
    copied: Event,
    done: Event,
    /// The gradient-only pass and the fused step (with the optimiser), captured on first use;
    /// indexed by `opt as usize`.
    graphs: [Option<Graph>; 2],
}

/// A model replica with its optimiser on one NVIDIA GPU.
pub struct GpuTrainer {
    slots: Vec<Slot>,
    net: Net,
    lt: Lt,
    gpu: Gpu,
    config: MlpConfig,
    task: Task,
    loss: Loss,
    optimizer: OptimizerSpec,
    grads: DevBuf,
    /// Adam's moments, or SGD's velocity in `m` (momentum only).
    m: Option<DevBuf>,
    v: Option<DevBuf>,
    steps_dev: DevBuf,
    coef: DevBuf,
    loss_acc: DevBuf,
    loss_host: Pinned<f64>,
    apply_ctl: DevBuf,
    steps: u64,
    next_slot: usize,
    pending: Option<usize>,
    use_graphs: bool,
    precision: Precision,
    ordinal: usize,
}

impl std::fmt::Debug for GpuTrainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuTrainer")
            .field("gpu", &self.gpu.name)
            .field("config", &self.config)
            .field("precision", &self.precision)
            .field("capacity", &self.net.capacity)
            .field("steps", &self.steps)
            .finish_non_exhaustive()
    }
}

fn ctl_words(rows: usize, scale: f32, lr: f32) -> [u32; 4] {
    [rows as u32, scale.to_bits(), lr.to_bits(), 0]
}

impl GpuTrainer {
    /// A replica like [`Trainer::new`](crate::trainer::Trainer::new) (same arguments, same
    /// initial parameters) on the GPU `options` names.
    pub fn new(
        model: &ModelSpec,
        optimizer: &OptimizerSpec,
        loss: Loss,
        task: &Task,
        input_dim: usize,
        seed: u64,
        options: &GpuOptions,
    ) -> Result<Self> {
        let config = replica_config(model, optimizer, loss, task, input_dim, seed)?;
        let (gpu, lt, dt) = super::open(options)?;
        let net = Net::new(&gpu, &lt, &config, dt, 64, true)?;
        let n = net.layout.device_len;
        let (m, v) = match optimizer {
            OptimizerSpec::Adam { .. } => (
                Some(DevBuf::zeroed(&gpu, n * 4)?),
                Some(DevBuf::zeroed(&gpu, n * 4)?),
            ),
            OptimizerSpec::Sgd { momentum, .. } if *momentum > 0.0 => {
                (Some(DevBuf::zeroed(&gpu, n * 4)?), None)
            }
            OptimizerSpec::Sgd { .. } => (None, None),
        };
        let mut trainer = Self {
            slots: Vec::new(),
            grads: DevBuf::zeroed(&gpu, n * 4)?,
            m,
            v,
            steps_dev: DevBuf::zeroed(&gpu, 8)?,
            coef: DevBuf::zeroed(&gpu, 8)?,
            loss_acc: DevBuf::zeroed(&gpu, 16)?,
            loss_host: Pinned::new(&gpu, 2)?,
            apply_ctl: DevBuf::zeroed(&gpu, 16)?,
            net,
            lt,
            config,
            task: *task,
            loss,
            optimizer: optimizer.clone(),
            steps: 0,
            next_slot: 0,
            pending: None,
            use_graphs: options.graphs,
            precision: options.precision,
            ordinal: options.ordinal,
            gpu,
        };
        trainer.slots = trainer.make_slots(64)?;
        let initial = trainer.config.initial_params();
        trainer.set_parameters(&initial)?;
        tracing::info!(gpu = %trainer.gpu.name, sm = format!("{}.{}", trainer.gpu.cc.0, trainer.gpu.cc.1), precision = ?options.precision, "training on the GPU");
        Ok(trainer)
    }

    fn make_slots(&self, cap: usize) -> Result<Vec<Slot>> {
        let d_in = self.config.input_dim;
        (0..2)
            .map(|_| {
                Ok(Slot {
                    x: DevBuf::zeroed(&self.gpu, cap * d_in * 4)?,
                    y: DevBuf::zeroed(&self.gpu, cap * 8)?,
                    ctl: DevBuf::zeroed(&self.gpu, 16)?,
                    x_host: Pinned::new(&self.gpu, cap * d_in)?,
                    y_host: Pinned::new(&self.gpu, cap)?,
                    ctl_host: Pinned::new(&self.gpu, 4)?,
                    copied: Event::new()?,
                    done: Event::new()?,
                    graphs: [None, None],
                })
            })
            .collect()
    }

    /// Number of parameters (length of the flat vectors).
    pub fn num_params(&self) -> usize {
        self.net.layout.num_params
    }

    /// The model's configuration.
    pub fn config(&self) -> &MlpConfig {
        &self.config
    }

    /// The task the model was built for.
    pub fn task(&self) -> &Task {
        &self.task
    }

    /// The loss the gradients are taken of.
    pub fn loss(&self) -> Loss {
        self.loss
    }

    /// Optimiser steps applied so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The GPU's ordinal (`cuda:N`).
    pub fn ordinal(&self) -> usize {
        self.ordinal
    }

    /// The GPU's name, as the driver reports it.
    pub fn device_name(&self) -> &str {
        &self.gpu.name
    }

    fn check(&self, x: &[f32], y: TargetsRef<'_>, rows: usize) -> Result<()> {
        check_features(x, rows, self.config.input_dim)?;
        check_targets(&self.task, y, rows)
    }

    /// Grows the batch buffers to hold `rows` (with a quarter to spare, as batch sizes vary).
    fn ensure_capacity(&mut self, rows: usize) -> Result<()> {
        if rows <= self.net.capacity {
            return Ok(());
        }
        self.gpu.sync()?;
        let cap = (rows + rows / 4).next_multiple_of(64);
        self.slots.clear();
        self.net.resize(&self.gpu, &self.lt, cap, true)?;
        self.slots = self.make_slots(cap)?;
        tracing::debug!(capacity = cap, "GPU batch buffers grown");
        Ok(())
    }

    /// Stages a batch into slot `s`'s pinned memory.
    fn stage(&mut self, s: usize, x: &[f32], y: TargetsRef<'_>, rows: usize, scale: f32, lr: f32) {
        let slot = &mut self.slots[s];
        slot.x_host.as_mut_slice()[..x.len()].copy_from_slice(x);
        let yh = slot.y_host.as_mut_slice();
        match y {
            TargetsRef::Classes(c) => {
                for (d, &v) in yh.iter_mut().zip(c) {
                    *d = v as u64;
                }
            }
            TargetsRef::Values(v) => {
                // f32 targets packed two per u64, in memory order.
                let words: &mut [u32] = bytemuck_u32(yh);
                for (d, &t) in words.iter_mut().zip(v) {
                    *d = t.to_bits();
                }
            }
        }
        slot.ctl_host
            .as_mut_slice()
            .copy_from_slice(&ctl_words(rows, scale, lr));
    }

    /// Copies slot `s`'s staged batch to the device on the copy stream.
    fn upload(&self, s: usize, rows: usize) -> Result<()> {
        let slot = &self.slots[s];
        let copy = self.gpu.copy.cu_stream();
        let d_in = self.config.input_dim;
        async_htod(slot.x.ptr, &slot.x_host.as_slice()[..rows * d_in], copy)?;
        async_htod(slot.y.ptr, &slot.y_host.as_slice()[..rows], copy)?;
        async_htod(slot.ctl.ptr, slot.ctl_host.as_slice(), copy)?;
        slot.copied.record(copy)
    }

    /// Enqueues forward, loss and backward of slot `s` (and the optimiser when `opt`).
    fn enqueue(&self, s: usize, opt: bool) -> Result<()> {
        let stream = self.gpu.cu_stream();
        let slot = &self.slots[s];
        let acc = self.loss_acc.at(s * 8);
        self.net.forward(&self.gpu, &self.lt, stream, slot.x.ptr)?;
        self.net.loss(
            &self.gpu,
            stream,
            slot.y.ptr,
            slot.ctl.ptr,
            acc,
            LossKind::new(&self.task, self.loss),
        )?;
        self.net
            .backward(&self.gpu, &self.lt, stream, slot.x.ptr, &self.grads)?;
        // SAFETY: `loss_host` is pinned, holds two f64 and lives as long as the graphs; the host
        // reads entry `s` only after waiting for this slot's `done` event.
        cuda("reading the loss back", unsafe {
            dsys::cuMemcpyDtoHAsync_v2(
                self.loss_host.as_slice().as_ptr().add(s) as *mut std::ffi::c_void,
                acc,
                8,
                stream,
            )
            .result()
        })?;
        if opt {
            self.enqueue_optimizer(stream, slot.ctl.ptr)?;
        }
        Ok(())
    }

    fn enqueue_optimizer(&self, stream: CUstream, ctl: u64) -> Result<()> {
        let k = &self.gpu.kernels;
        let n = self.net.layout.device_len;
        let w16 = self.net.w16.as_ref().map_or(0, |b| b.ptr);
        let grid = grid_for(n);
        match self.optimizer {
            OptimizerSpec::Adam {
                beta1,
                beta2,
                epsilon,
                weight_decay,
            } => {
                let (m, v) = match (&self.m, &self.v) {
                    (Some(m), Some(v)) => (m.ptr, v.ptr),
                    _ => return Err(Error::Internal("Adam state missing on the GPU".into())),
                };
                launch(
                    stream,
                    k.get("opt_tick")?,
                    1,
                    &[
                        Arg::Ptr(self.steps_dev.ptr),
                        Arg::Ptr(self.coef.ptr),
                        Arg::F32(beta1 as f32),
                        Arg::F32(beta2 as f32),
                        Arg::F32(epsilon as f32),
                    ],
                )?;
                launch(
                    stream,
                    k.get("adam")?,
                    grid,
                    &[
                        Arg::Ptr(self.net.w.ptr),
                        Arg::Ptr(self.grads.ptr),
                        Arg::Ptr(m),
                        Arg::Ptr(v),
                        Arg::Ptr(w16),
                        Arg::I64(n as i64),
                        Arg::Ptr(ctl),
                        Arg::Ptr(self.coef.ptr),
                        Arg::F32(beta1 as f32),
                        Arg::F32(beta2 as f32),
                        Arg::F32(weight_decay as f32),
                    ],
                )
            }
            OptimizerSpec::Sgd {
                momentum,
                weight_decay,
                nesterov,
            } => {
                let vel = self.m.as_ref().map_or(0, |b| b.ptr);
                launch(
                    stream,
                    k.get("sgd")?,
                    grid,
                    &[
                        Arg::Ptr(self.net.w.ptr),
                        Arg::Ptr(self.grads.ptr),
                        Arg::Ptr(vel),
                        Arg::Ptr(w16),
                        Arg::I64(n as i64),
                        Arg::Ptr(ctl),
                        Arg::F32(momentum as f32),
                        Arg::I32(i32::from(nesterov)),
                        Arg::F32(weight_decay as f32),
                    ],
                )
            }
        }
    }

    /// Runs slot `s`'s work (fused step when `opt`), as a graph when graphs work here.
    fn run_slot(&mut self, s: usize, opt: bool) -> Result<()> {
        let mut cache = self.slots[s].graphs[usize::from(opt)].take();
        let mut enabled = self.use_graphs;
        let ran = run_cached(&mut cache, &mut enabled, self.gpu.cu_stream(), || {
            self.enqueue(s, opt)
        });
        self.slots[s].graphs[usize::from(opt)] = cache;
        self.use_graphs = enabled;
        ran
    }

    /// One training step on `rows` rows: the gradient of `loss_scale * Σ loss`, then the
    /// optimiser at `lr`, all on the GPU. Returns the loss sum of the *previous* step (`None`
    /// for the first after a [`GpuTrainer::flush`]), so the caller can assemble the next batch
    /// while this one runs.
    pub fn step(
        &mut self,
        x: &[f32],
        y: TargetsRef<'_>,
        rows: usize,
        loss_scale: f32,
        lr: f64,
    ) -> Result<Option<f64>> {
        self.check(x, y, rows)?;
        // Slot `s` was last used two steps ago, which `flush_loss` below waited for.
        let s = self.submit(x, y, rows, loss_scale, lr as f32, true)?;
        self.slots[s].done.record(self.gpu.cu_stream())?;
        self.steps += 1;
        let previous = self.flush_loss()?;
        self.pending = Some(s);
        Ok(previous)
    }

    /// Stages and copies a checked batch into the next slot and enqueues its work after the
    /// copy (the fused step when `opt`, else forward and backward only); returns the slot.
    fn submit(
        &mut self,
        x: &[f32],
        y: TargetsRef<'_>,
        rows: usize,
        loss_scale: f32,
        lr: f32,
        opt: bool,
    ) -> Result<usize> {
        self.gpu.bind()?;
        self.ensure_capacity(rows)?;
        let s = self.next_slot;
        self.next_slot = 1 - s;
        self.stage(s, x, y, rows, loss_scale, lr);
        self.upload(s, rows)?;
        self.slots[s].copied.wait_on(self.gpu.cu_stream())?;
        self.run_slot(s, opt)?;
        Ok(s)
    }

    /// Waits for the step in flight and returns its loss sum (`None` when there is none).
    pub fn flush(&mut self) -> Result<Option<f64>> {
        self.gpu.bind()?;
        self.flush_loss()
    }

    fn flush_loss(&mut self) -> Result<Option<f64>> {
        let Some(p) = self.pending.take() else {
            return Ok(None);
        };
        self.slots[p].done.synchronize()?;
        Ok(Some(self.loss_host.as_slice()[p]))
    }

    /// Replays the last step `n` more times on the batch already on the device (throughput
    /// measurements: no copies, no host work), then waits and returns the last loss sum.
    pub fn repeat_last_step(&mut self, n: usize) -> Result<f64> {
        self.gpu.bind()?;
        let s = 1 - self.next_slot;
        let stream = self.gpu.cu_stream();
        for _ in 0..n {
            self.run_slot(s, true)?;
        }
        self.steps += n as u64;
        self.slots[s].done.record(stream)?;
        self.pending = Some(s);
        Ok(self.flush_loss()?.unwrap_or(f64::NAN))
    }
}

/// Views u64 storage as twice as many u32 words.
fn bytemuck_u32(words: &mut [u64]) -> &mut [u32] {
    // SAFETY: u64 storage is suitably aligned for u32 and holds exactly twice as many of them.
    unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr() as *mut u32, words.len() * 2) }
}

fn async_htod<T>(dst: u64, src: &[T], stream: CUstream) -> Result<()> {
    // SAFETY: `src` is pinned host memory owned by a slot, not written again before the slot's
    // `done` event has been waited for; `dst` holds at least as many bytes (same capacity).
    cuda("copying a batch to the GPU", unsafe {
        cudarc::driver::result::memcpy_htod_async(dst, src, stream)
    })
}

impl Drop for GpuTrainer {
    fn drop(&mut self) {
        // Nothing may still read the buffers when they are freed.
        if self.gpu.bind().is_ok() {
            let _ = self.gpu.sync();
            let _ = self.gpu.copy.synchronize();
        }
    }
}
