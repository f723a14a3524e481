//! A [`GpuTrainer`]'s state in and out: gradients and updates exchanged with other replicas,
//! parameters, optimiser state, predictions, and a timed step.

use super::{GpuTrainer, ctl_words};
use crate::error::Result;
use crate::gpu::runtime::{DevBuf, TimingEvent};
use crate::optim::{FlatOptimizer, OptimizerKind, OptimizerSpec, OptimizerState};
use crate::trainer::{TargetsRef, check_features, check_flat_len};

impl GpuTrainer {
    /// Times the parts of one step on the batch already on the device (launched one by one,
    /// between events): milliseconds of the forward pass, the loss, each product and kernel of
    /// the backward pass, and the optimiser.
    pub fn profile_step(&mut self) -> Result<Vec<(String, f64)>> {
        self.gpu.bind()?;
        self.flush_loss()?;
        let s = 1 - self.next_slot;
        let stream = self.gpu.cu_stream();
        let slot = &self.slots[s];
        let mut marks: Vec<(String, TimingEvent)> = Vec::new();
        let mut mark = |name: std::fmt::Arguments<'_>| -> Result<()> {
            let e = TimingEvent::new()?;
            e.record(stream)?;
            marks.push((name.to_string(), e));
            Ok(())
        };
        mark(format_args!("start"))?;
        self.net
            .forward_marked(&self.gpu, &self.lt, stream, slot.x.ptr, &mut mark)?;
        self.net.loss(
            &self.gpu,
            stream,
            slot.y.ptr,
            slot.ctl.ptr,
            self.loss_acc.at(s * 8),
            super::LossKind::new(&self.task, self.loss),
        )?;
        mark(format_args!("loss"))?;
        self.net.backward_marked(
            &self.gpu,
            &self.lt,
            stream,
            slot.x.ptr,
            &self.grads,
            &mut mark,
        )?;
        self.enqueue_optimizer(stream, slot.ctl.ptr)?;
        mark(format_args!("optimizer"))?;
        self.steps += 1;
        self.gpu.sync()?;
        let mut out = Vec::new();
        for pair in marks.windows(2) {
            out.push((pair[1].0.clone(), f64::from(pair[1].1.since(&pair[0].1)?)));
        }
        Ok(out)
    }

    /// Forward and backward pass on `rows` rows, returning the unscaled loss sum and the flat
    /// gradient (model order), as [`Trainer::gradients`](crate::trainer::Trainer::gradients).
    pub fn gradients(
        &mut self,
        x: &[f32],
        y: TargetsRef<'_>,
        rows: usize,
        loss_scale: f32,
    ) -> Result<(f64, Vec<f32>)> {
        self.check(x, y, rows)?;
        if rows == 0 {
            return Ok((0.0, vec![0.0; self.num_params()]));
        }
        let s = self.submit(x, y, rows, loss_scale, 0.0, false)?;
        self.gpu.sync()?;
        Ok((self.loss_host.as_slice()[s], self.read_device(&self.grads)?))
    }

    /// Applies a flat (already summed) gradient with the optimiser at `lr`.
    pub fn apply(&mut self, grads: &[f32], lr: f64) -> Result<()> {
        check_flat_len("gradient", grads, self.num_params())?;
        self.gpu.bind()?;
        self.gpu.sync()?;
        self.grads.write(&self.net.layout.to_device(grads))?;
        self.apply_ctl.write(&ctl_words(0, 0.0, lr as f32))?;
        self.enqueue_optimizer(self.gpu.cu_stream(), self.apply_ctl.ptr)?;
        self.steps += 1;
        self.gpu.sync()
    }

    fn read_device(&self, buf: &DevBuf) -> Result<Vec<f32>> {
        let mut device = vec![0f32; self.net.layout.device_len];
        buf.read_into(0, &mut device)?;
        Ok(self.net.layout.to_flat(&device))
    }

    /// The parameters, flat (model order).
    pub fn try_parameters(&self) -> Result<Vec<f32>> {
        self.gpu.bind()?;
        self.gpu.sync()?;
        self.read_device(&self.net.w)
    }

    /// Replaces the parameters; the optimiser state is kept.
    pub fn set_parameters(&mut self, params: &[f32]) -> Result<()> {
        check_flat_len("parameter vector", params, self.num_params())?;
        self.gpu.bind()?;
        self.gpu.sync()?;
        self.net.load_params(&self.gpu, params)
    }

    /// The optimiser's state, in model order (as [`Trainer::optimizer_state`](crate::trainer::Trainer::optimizer_state)).
    pub fn optimizer_state(&self) -> Result<OptimizerState> {
        self.gpu.bind()?;
        self.gpu.sync()?;
        let read = |b: &Option<DevBuf>| b.as_ref().map_or(Ok(Vec::new()), |b| self.read_device(b));
        Ok(match self.optimizer {
            OptimizerSpec::Adam { .. } => OptimizerState {
                kind: OptimizerKind::Adam,
                steps: self.steps,
                velocity: Vec::new(),
                moment1: read(&self.m)?,
                moment2: read(&self.v)?,
            },
            OptimizerSpec::Sgd { .. } => OptimizerState {
                kind: OptimizerKind::Sgd,
                steps: self.steps,
                velocity: read(&self.m)?,
                moment1: Vec::new(),
                moment2: Vec::new(),
            },
        })
    }

    /// Continues from a checkpointed optimiser state (validated as the CPU optimiser does).
    pub fn restore_optimizer(&mut self, state: OptimizerState) -> Result<()> {
        let state = FlatOptimizer::restore(&self.optimizer, self.num_params(), state)?.state();
        self.gpu.bind()?;
        self.gpu.sync()?;
        let layout = &self.net.layout;
        let (a, b) = match state.kind {
            OptimizerKind::Adam => (state.moment1, state.moment2),
            OptimizerKind::Sgd => (state.velocity, Vec::new()),
        };
        for (buf, values) in [(&self.m, a), (&self.v, b)] {
            if let Some(buf) = buf {
                let values = if values.is_empty() {
                    vec![0.0; layout.num_params]
                } else {
                    values
                };
                buf.write(&layout.to_device(&values))?;
            }
        }
        self.steps_dev.write(&[state.steps])?;
        self.steps = state.steps;
        Ok(())
    }

    /// Predictions for `rows` rows, as [`Trainer::predict`](crate::trainer::Trainer::predict):
    /// softmax probabilities for classification, one value per row for regression.
    ///
    /// A step still in flight finishes first; its loss stays for [`GpuTrainer::flush`].
    pub fn predict(&self, x: &[f32], rows: usize) -> Result<Vec<f32>> {
        check_features(x, rows, self.config.input_dim)?;
        self.gpu.bind()?;
        self.gpu.sync()?;
        crate::gpu::predict::forward_chunks(
            &self.gpu,
            &self.lt,
            &self.net,
            &self.slots[0].x,
            x,
            rows,
        )
    }
}
