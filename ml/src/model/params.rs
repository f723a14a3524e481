//! Any burn module's float parameters as one flat vector, and back.
//!
//! The order is the module's own visiting order (its fields in declaration order, depth first),
//! which `#[derive(Module)]` fixes at compile time: the same module type always flattens the same
//! way, on every backend and thread. Each parameter is flattened row-major. Integer and boolean
//! tensors (buffers, not trained) are left out.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};

use super::read_f32;
use crate::error::{Error, Result};

/// A float parameter's dotted path (e.g. `tower.layers.0.weight`) and shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamShape {
    /// Field names from the module's root, joined by dots.
    pub path: String,
    /// Dimensions.
    pub shape: Vec<usize>,
}

impl ParamShape {
    /// Number of values.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Tracks the dotted path while a visitor or mapper walks a module.
#[derive(Default)]
struct Path(Vec<String>);

impl Path {
    fn enter(&mut self, name: &str) {
        self.0.push(name.to_owned());
    }
    fn exit(&mut self) {
        self.0.pop();
    }
    fn joined(&self) -> String {
        self.0.join(".")
    }
}

struct Shapes {
    path: Path,
    out: Vec<ParamShape>,
}

impl<B: Backend> ModuleVisitor<B> for Shapes {
    fn enter_module(&mut self, name: &str, _container: &str) {
        self.path.enter(name);
    }
    fn exit_module(&mut self, _name: &str, _container: &str) {
        self.path.exit();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.out.push(ParamShape {
            path: self.path.joined(),
            shape: param.shape().dims::<D>().to_vec(),
        });
    }
}

/// The float parameters of `module`, in flat order, with their paths and shapes.
pub fn param_shapes<B: Backend, M: Module<B>>(module: &M) -> Vec<ParamShape> {
    let mut visitor = Shapes {
        path: Path::default(),
        out: Vec::new(),
    };
    module.visit(&mut visitor);
    visitor.out
}

struct Collect<B: Backend> {
    parts: Vec<Tensor<B, 1>>,
}

impl<B: Backend> ModuleVisitor<B> for Collect<B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.parts.push(param.val().reshape([-1]));
    }
}

/// The float parameters of `module`, flat (one read from the device).
pub fn to_flat<B: Backend, M: Module<B>>(module: &M) -> Result<Vec<f32>> {
    let mut visitor = Collect { parts: Vec::new() };
    module.visit(&mut visitor);
    if visitor.parts.is_empty() {
        return Ok(Vec::new());
    }
    read_f32(Tensor::cat(visitor.parts, 0))
}

struct Grads<'a, B: AutodiffBackend> {
    grads: &'a B::Gradients,
    parts: Vec<Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Grads<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let numel = param.shape().num_elements();
        let device = param.device();
        self.parts.push(match param.grad(self.grads) {
            Some(g) => g.reshape([numel]),
            // A parameter the loss does not reach (e.g. an embedding row never looked up is
            // still reached; a whole unused layer is not): its gradient is zero.
            None => Tensor::zeros([numel], &device),
        });
    }
}

/// The gradient of every float parameter of `module` from `grads`, flat, in parameter order.
pub fn flat_grads<B: AutodiffBackend, M: Module<B>>(
    module: &M,
    grads: &B::Gradients,
) -> Result<Vec<f32>> {
    let mut visitor = Grads::<B> {
        grads,
        parts: Vec::new(),
    };
    module.visit(&mut visitor);
    if visitor.parts.is_empty() {
        return Ok(Vec::new());
    }
    read_f32(Tensor::cat(visitor.parts, 0))
}

struct Load<'a> {
    rest: &'a [f32],
}

impl<B: Backend> ModuleMapper<B> for Load<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, old, mapper): (ParamId, _, _) = param.consume();
        let dims = old.shape().dims::<D>();
        let numel: usize = dims.iter().product();
        let take = numel.min(self.rest.len());
        let (values, rest) = self.rest.split_at(take);
        self.rest = rest;
        if take < numel {
            // Too short: keep the old values; `load_flat` reports the mismatch.
            return Param::from_mapped_value(id, old, mapper);
        }
        let device = old.device();
        let require_grad = old.is_require_grad();
        let mut tensor = Tensor::<B, D>::from_data(TensorData::new(values.to_vec(), dims), &device);
        if require_grad {
            tensor = tensor.require_grad();
        }
        Param::from_mapped_value(id, tensor, mapper)
    }
}

/// `module` with its float parameters replaced by `params` (flat order), keeping parameter ids.
/// A vector of the wrong length is an [`Error::Input`] naming both lengths.
pub fn load_flat<B: Backend, M: Module<B>>(module: M, params: &[f32]) -> Result<M> {
    let expected: usize = param_shapes::<B, M>(&module)
        .iter()
        .map(ParamShape::numel)
        .sum();
    if params.len() != expected {
        return Err(Error::Input(format!(
            "parameter vector has {} values but the model has {expected}",
            params.len()
        )));
    }
    Ok(module.map(&mut Load { rest: params }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Cpu, cpu_device};
    use crate::model::MlpConfig;

    #[test]
    fn flattens_in_the_mlp_order() {
        let cfg = MlpConfig::new(3, 2).with_hidden([4]).with_seed(5);
        let mlp = cfg.init::<Cpu>(&cpu_device());
        // The built-in MLP's documented order is the module's visiting order.
        assert_eq!(to_flat(&mlp).unwrap(), mlp.to_flat().unwrap());
        let shapes = param_shapes::<Cpu, _>(&mlp);
        let paths: Vec<&str> = shapes.iter().map(|s| s.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "layers.0.weight",
                "layers.0.bias",
                "layers.1.weight",
                "layers.1.bias"
            ]
        );
        assert_eq!(shapes[0].shape, vec![3, 4]);
        let new: Vec<f32> = (0..cfg.num_params()).map(|i| i as f32).collect();
        let loaded = load_flat(mlp.clone(), &new).unwrap();
        assert_eq!(to_flat(&loaded).unwrap(), new);
        let err = load_flat(mlp, &new[1..]).unwrap_err().to_string();
        assert!(err.contains(&format!("{}", new.len())), "{err}");
    }
}
