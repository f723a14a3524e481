//! The multi-layer perceptron: `config → init(&device) → forward`, in the style of burn's `Linear`.
//!
//! Logistic and linear regression are the same module with no hidden layers.
//!
//! # Parameter order
//!
//! Flat parameter vectors ([`Mlp::to_flat`], [`MlpConfig::init_from_flat`], and the trainer's
//! gradients) list, layer by layer from the input side, the weight matrix `[d_input, d_output]`
//! row-major, then the bias `[d_output]`. This order is fixed and is the on-disk weight order.

use burn::module::{Module, Param, ParamId};
use burn::nn::Linear;
use burn::tensor::activation;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::spec::{Activation, ModelSpec, Task};
use crate::error::{Error, Result};
use crate::rng::Rng;

/// Configuration of an [`Mlp`]: layer widths, activation and initialisation seed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct MlpConfig {
    /// Number of input features.
    pub input_dim: usize,
    /// Hidden layer widths (empty: a single linear layer).
    pub hidden: Vec<usize>,
    /// Number of outputs (classes, or 1 for regression).
    pub output_dim: usize,
    /// Activation after each hidden layer.
    pub activation: Activation,
    /// Seed of the deterministic parameter initialisation (see [`crate::rng`]).
    pub seed: u64,
}

/// A multi-layer perceptron: `Linear → activation → … → Linear`, no activation on the output.
///
/// Outputs are logits for classification and values for regression.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    /// The linear layers, input side first.
    pub layers: Vec<Linear<B>>,
    /// Activation between layers.
    #[module(skip)]
    pub activation: Activation,
}

impl MlpConfig {
    /// A config with no hidden layers, ReLU activation and seed 0.
    pub fn new(input_dim: usize, output_dim: usize) -> Self {
        Self {
            input_dim,
            hidden: Vec::new(),
            output_dim,
            activation: Activation::Relu,
            seed: 0,
        }
    }

    /// The config a [`ModelSpec`] describes for `task` and `input_dim` features.
    pub fn from_spec(spec: &ModelSpec, task: &Task, input_dim: usize) -> Self {
        Self {
            input_dim,
            hidden: spec.hidden.clone(),
            output_dim: task.output_dim(),
            activation: spec.activation,
            seed: 0,
        }
    }

    /// Sets the hidden layer widths.
    pub fn with_hidden(mut self, hidden: impl Into<Vec<usize>>) -> Self {
        self.hidden = hidden.into();
        self
    }

    /// Sets the activation.
    pub fn with_activation(mut self, activation: Activation) -> Self {
        self.activation = activation;
        self
    }

    /// Sets the initialisation seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// `(d_input, d_output)` of each linear layer.
    pub fn layer_shapes(&self) -> Vec<(usize, usize)> {
        let mut dims = Vec::with_capacity(self.hidden.len() + 2);
        dims.push(self.input_dim);
        dims.extend_from_slice(&self.hidden);
        dims.push(self.output_dim);
        dims.windows(2).map(|w| (w[0], w[1])).collect()
    }

    /// Total number of parameters.
    pub fn num_params(&self) -> usize {
        self.layer_shapes().iter().map(|(i, o)| i * o + o).sum()
    }

    /// The initial parameters as a flat vector, drawn from [`Rng`] seeded with `seed`.
    ///
    /// The distribution is burn's `Linear` default (Kaiming uniform with gain `1/sqrt(3)`):
    /// weights and biases uniform in `[-1/sqrt(d_input), 1/sqrt(d_input))`.
    pub fn initial_params(&self) -> Vec<f32> {
        let mut rng = Rng::new(self.seed);
        let mut out = Vec::with_capacity(self.num_params());
        for (d_in, d_out) in self.layer_shapes() {
            let bound = (1.0 / (d_in.max(1) as f64).sqrt()) as f32;
            for _ in 0..(d_in * d_out + d_out) {
                out.push(rng.uniform_f32(-bound, bound));
            }
        }
        out
    }

    /// Initialises a module with deterministic parameters (see [`MlpConfig::initial_params`]).
    ///
    /// Does not touch burn's global RNG, so replicas built on different threads are identical.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Mlp<B> {
        let params = self.initial_params();
        let layers = self
            .layer_shapes()
            .into_iter()
            .zip(split_layers(&self.layer_shapes(), &params))
            .map(|((d_in, d_out), (w, b))| {
                let weight = Param::from_data(TensorData::new(w.to_vec(), [d_in, d_out]), device);
                let bias = Param::from_data(TensorData::new(b.to_vec(), [d_out]), device);
                Linear {
                    weight,
                    bias: Some(bias),
                }
            })
            .collect();
        Mlp {
            layers,
            activation: self.activation,
        }
    }

    /// Initialises a module from a flat parameter vector (the order documented on the module).
    pub fn init_from_flat<B: Backend>(&self, params: &[f32], device: &B::Device) -> Result<Mlp<B>> {
        self.init::<B>(device).load_flat(params)
    }
}

/// Splits a flat parameter slice into `(weight, bias)` slices per layer.
/// The caller guarantees `params.len()` matches `shapes`.
fn split_layers<'a>(
    shapes: &[(usize, usize)],
    mut params: &'a [f32],
) -> Vec<(&'a [f32], &'a [f32])> {
    let mut out = Vec::with_capacity(shapes.len());
    for &(d_in, d_out) in shapes {
        let (w, rest) = params.split_at((d_in * d_out).min(params.len()));
        let (b, rest) = rest.split_at(d_out.min(rest.len()));
        out.push((w, b));
        params = rest;
    }
    out
}

impl<B: Backend> Mlp<B> {
    /// Applies the network: `[rows, d_input] → [rows, d_output]` (logits or values).
    pub fn forward(&self, input: Tensor<B, 2>) -> Tensor<B, 2> {
        let last = self.layers.len().saturating_sub(1);
        let mut x = input;
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(x);
            if i < last {
                x = apply_activation(self.activation, x);
            }
        }
        x
    }

    /// `(d_input, d_output)` of each layer.
    pub fn layer_shapes(&self) -> Vec<(usize, usize)> {
        self.layers
            .iter()
            .map(|l| {
                let [d_in, d_out] = l.weight.shape().dims();
                (d_in, d_out)
            })
            .collect()
    }

    /// Total number of parameters.
    pub fn param_count(&self) -> usize {
        self.layer_shapes().iter().map(|(i, o)| i * o + o).sum()
    }

    /// The parameters, flattened in the fixed order (one read from the device).
    ///
    /// On an autodiff backend call this on `valid()` so no graph nodes are recorded.
    pub fn to_flat(&self) -> Result<Vec<f32>> {
        let mut parts = Vec::with_capacity(self.layers.len() * 2);
        for layer in &self.layers {
            parts.push(layer.weight.val().reshape([-1]));
            if let Some(bias) = &layer.bias {
                parts.push(bias.val());
            }
        }
        if parts.is_empty() {
            return Ok(Vec::new());
        }
        read_f32(Tensor::cat(parts, 0))
    }

    /// Replaces the parameter values with `params` (fixed order), keeping parameter ids, so an
    /// optimiser's per-parameter state stays attached.
    pub fn load_flat(self, params: &[f32]) -> Result<Self> {
        let shapes = self.layer_shapes();
        let expected: usize = shapes.iter().map(|(i, o)| i * o + o).sum();
        if params.len() != expected {
            return Err(Error::Input(format!(
                "parameter vector has {} values but the model {:?} has {expected}",
                params.len(),
                shapes
            )));
        }
        let activation = self.activation;
        let layers = self
            .layers
            .into_iter()
            .zip(split_layers(&shapes, params))
            .zip(shapes.iter())
            .map(|((layer, (w, b)), &(d_in, d_out))| Linear {
                weight: replace_param(layer.weight, TensorData::new(w.to_vec(), [d_in, d_out])),
                bias: layer
                    .bias
                    .map(|bias| replace_param(bias, TensorData::new(b.to_vec(), [d_out]))),
            })
            .collect();
        Ok(Self { layers, activation })
    }
}

/// A parameter with the same id (and require-grad flag) holding new values.
fn replace_param<B: Backend, const D: usize>(
    param: Param<Tensor<B, D>>,
    data: TensorData,
) -> Param<Tensor<B, D>> {
    let (id, old, mapper): (ParamId, _, _) = param.consume();
    let device = old.device();
    let require_grad = old.is_require_grad();
    let mut tensor = Tensor::<B, D>::from_data(data, &device);
    if require_grad {
        tensor = tensor.require_grad();
    }
    Param::from_mapped_value(id, tensor, mapper)
}

/// Applies `activation` element-wise.
fn apply_activation<B: Backend, const D: usize>(
    activation: Activation,
    x: Tensor<B, D>,
) -> Tensor<B, D> {
    match activation {
        Activation::Relu => activation::relu(x),
        Activation::Tanh => activation::tanh(x),
        Activation::Gelu => activation::gelu(x),
        Activation::Sigmoid => activation::sigmoid(x),
    }
}

/// Reads a tensor back as `f32` values.
pub(crate) fn read_f32<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> Result<Vec<f32>> {
    let data = tensor
        .try_into_data()
        .map_err(|e| Error::Backend(format!("reading tensor data: {e:?}")))?;
    data.into_vec::<f32>()
        .map_err(|e| Error::Backend(format!("tensor data is not f32: {e:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Cpu, cpu_device};

    #[test]
    fn init_is_deterministic_and_bounded() {
        let cfg = MlpConfig::new(4, 2).with_hidden([3]).with_seed(9);
        let a = cfg.init::<Cpu>(&cpu_device()).to_flat().unwrap();
        let b = cfg.init::<Cpu>(&cpu_device()).to_flat().unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 4 * 3 + 3 + 3 * 2 + 2);
        assert_eq!(a, cfg.initial_params());
        // first layer bound 1/sqrt(4) = 0.5, second 1/sqrt(3)
        assert!(a[..15].iter().all(|v| v.abs() <= 0.5));
        assert!(a[15..].iter().all(|v| v.abs() <= 1.0 / 3f32.sqrt()));
        let c = cfg.clone().with_seed(10).initial_params();
        assert_ne!(a, c);
    }

    #[test]
    fn forward_matches_hand_computation() {
        // 2 inputs → 2 hidden (relu) → 1 output.
        let cfg = MlpConfig::new(2, 1).with_hidden([2]);
        let params = [
            1.0, -1.0, // w1 row 0 (input 0 → hidden 0, 1)
            2.0, 0.5, // w1 row 1
            0.0, 0.1, // b1
            1.0, 2.0,  // w2 (hidden 0, 1 → output)
            -0.5, // b2
        ];
        let mlp = cfg.init_from_flat::<Cpu>(&params, &cpu_device()).unwrap();
        let x =
            Tensor::<Cpu, 2>::from_data(TensorData::new(vec![1.0f32, 1.0], [1, 2]), &cpu_device());
        let y = read_f32(mlp.forward(x)).unwrap();
        // hidden = relu([1+2+0, -1+0.5+0.1]) = [3, 0]; out = 3*1 + 0*2 - 0.5
        assert_eq!(y, vec![2.5]);
        assert_eq!(mlp.to_flat().unwrap(), params.to_vec());
        assert!(mlp.load_flat(&params[1..]).is_err());
    }
}
