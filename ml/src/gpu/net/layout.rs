//! Where each parameter lives: the flat (model) order of [`MlpConfig`] and the device order.

use crate::model::{Activation, MlpConfig};

/// One linear layer's place in the flat parameter vector and on the device.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LayerGeom {
    pub(crate) d_in: usize,
    pub(crate) d_out: usize,
    /// Offsets (elements) of the weight and the bias in the flat (model) order.
    pub(crate) flat_w: usize,
    pub(crate) flat_b: usize,
    /// Offsets (elements) of the weight and the bias on the device: each starts on a multiple of
    /// [`ALIGN`] elements, as cuBLASLt's fast kernels want their operands aligned.
    pub(crate) w: usize,
    pub(crate) b: usize,
}

/// Alignment of each device parameter block, in elements (512 bytes in f32, 256 in bf16).
const ALIGN: usize = 128;

/// The flat parameter order of [`MlpConfig`] (weights `[d_in, d_out]`) and the device order
/// (weights `[d_out, d_in]`, blocks aligned, zeros between them); biases are the same in both.
#[derive(Clone, Debug)]
pub(crate) struct Layout {
    pub(crate) layers: Vec<LayerGeom>,
    /// Parameters of the model.
    pub(crate) num_params: usize,
    /// Length of the device vectors (parameters plus alignment gaps).
    pub(crate) device_len: usize,
}

impl Layout {
    pub(crate) fn new(config: &MlpConfig) -> Self {
        let mut layers = Vec::new();
        let mut flat = 0;
        let mut dev = 0;
        let up = |n: usize| n.div_ceil(ALIGN) * ALIGN;
        for (d_in, d_out) in config.layer_shapes() {
            let w = dev;
            let b = up(w + d_in * d_out);
            layers.push(LayerGeom {
                d_in,
                d_out,
                flat_w: flat,
                flat_b: flat + d_in * d_out,
                w,
                b,
            });
            flat += d_in * d_out + d_out;
            dev = up(b + d_out);
        }
        Self {
            layers,
            num_params: flat,
            device_len: dev,
        }
    }

    /// Flat (model) order to device order.
    pub(crate) fn to_device(&self, flat: &[f32]) -> Vec<f32> {
        let mut out = vec![0f32; self.device_len];
        for l in &self.layers {
            for i in 0..l.d_in {
                for o in 0..l.d_out {
                    out[l.w + o * l.d_in + i] = flat[l.flat_w + i * l.d_out + o];
                }
            }
            out[l.b..l.b + l.d_out].copy_from_slice(&flat[l.flat_b..l.flat_b + l.d_out]);
        }
        out
    }

    /// Device order back to flat (model) order.
    pub(crate) fn to_flat(&self, device: &[f32]) -> Vec<f32> {
        let mut out = vec![0f32; self.num_params];
        for l in &self.layers {
            for i in 0..l.d_in {
                for o in 0..l.d_out {
                    out[l.flat_w + i * l.d_out + o] = device[l.w + o * l.d_in + i];
                }
            }
            out[l.flat_b..l.flat_b + l.d_out].copy_from_slice(&device[l.b..l.b + l.d_out]);
        }
        out
    }
}

pub(crate) fn act_code(a: Activation) -> i32 {
    match a {
        Activation::Relu => 0,
        Activation::Tanh => 1,
        Activation::Gelu => 2,
        Activation::Sigmoid => 3,
    }
}
