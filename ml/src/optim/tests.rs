//! Optimiser tests: config parsing, and [`FlatOptimizer`] against burn's own optimisers.

use burn::module::AutodiffModule;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{Adam, AdamConfig, GradientsParams, Optimizer, Sgd, SgdConfig};
use burn::tensor::{Tensor, TensorData};

use super::*;
use crate::backend::{Cpu, CpuAutodiff, cpu_device};
use crate::model::{Mlp, MlpConfig};
use crate::rng::Rng;

#[test]
fn parses_and_defaults() -> Result<(), serde_json::Error> {
    let spec: OptimizerSpec = serde_json::from_str(r#"{"kind":"adam"}"#)?;
    assert_eq!(spec, OptimizerSpec::default());
    let spec: OptimizerSpec =
        serde_json::from_str(r#"{"kind":"sgd","momentum":0.5,"nesterov":true}"#)?;
    assert_eq!(
        spec,
        OptimizerSpec::Sgd {
            momentum: 0.5,
            weight_decay: 0.0,
            nesterov: true
        }
    );
    assert!(serde_json::from_str::<OptimizerSpec>(r#"{"kind":"sgd","lr":0.1}"#).is_err());
    Ok(())
}

#[test]
fn validation_names_the_key() {
    let bad = OptimizerSpec::Sgd {
        momentum: 0.0,
        weight_decay: 0.0,
        nesterov: true,
    };
    let err = bad.validate().unwrap_err().to_string();
    assert!(err.contains("train.optimizer.nesterov"), "{err}");
    let bad = OptimizerSpec::Adam {
        beta1: 1.0,
        beta2: 0.999,
        epsilon: 1e-8,
        weight_decay: 0.0,
    };
    let err = bad.validate().unwrap_err().to_string();
    assert!(err.contains("train.optimizer.beta1"), "{err}");
}

fn sgd(momentum: f64, weight_decay: f64, nesterov: bool) -> OptimizerSpec {
    OptimizerSpec::Sgd {
        momentum,
        weight_decay,
        nesterov,
    }
}

fn adam(weight_decay: f64) -> OptimizerSpec {
    OptimizerSpec::Adam {
        beta1: 0.9,
        beta2: 0.999,
        epsilon: 1e-8,
        weight_decay,
    }
}

/// The small module the comparisons train: 3 → 4 → 2, 26 parameters.
fn small_config() -> MlpConfig {
    MlpConfig::new(3, 2).with_hidden([4]).with_seed(5)
}

/// Gradients for step `step`: random, of varying scale, some exactly zero.
fn gradients(n: usize, step: u64) -> Vec<f32> {
    let mut rng = Rng::new(100 + step);
    let scale = [1.0, 0.01, 3.0, 0.2][step as usize % 4];
    (0..n)
        .map(|i| {
            if i % 7 == 3 {
                0.0
            } else {
                rng.uniform_f32(-scale, scale)
            }
        })
        .collect()
}

fn lr_at(step: u64) -> f64 {
    [0.05, 0.1, 0.003][step as usize % 3]
}

/// A flat gradient as burn's per-parameter gradients (the way the trainer used to apply them).
fn burn_gradients(module: &Mlp<CpuAutodiff>, config: &MlpConfig, flat: &[f32]) -> GradientsParams {
    let flat =
        Tensor::<Cpu, 1>::from_data(TensorData::new(flat.to_vec(), [flat.len()]), &cpu_device());
    let mut params = GradientsParams::new();
    let mut offset = 0;
    for (layer, (d_in, d_out)) in module.layers.iter().zip(config.layer_shapes()) {
        let w = flat.clone().narrow(0, offset, d_in * d_out);
        params.register(layer.weight.id, w.reshape([d_in, d_out]));
        offset += d_in * d_out;
        if let Some(bias) = &layer.bias {
            params.register(bias.id, flat.clone().narrow(0, offset, d_out));
            offset += d_out;
        }
    }
    params
}

/// burn's optimiser, as the old `OptimizerSpec::build` configured it.
enum BurnOptimizer {
    Sgd(OptimizerAdaptor<Sgd<Cpu>, Mlp<CpuAutodiff>, CpuAutodiff>),
    Adam(OptimizerAdaptor<Adam, Mlp<CpuAutodiff>, CpuAutodiff>),
}

impl BurnOptimizer {
    fn step(
        &mut self,
        lr: f64,
        module: Mlp<CpuAutodiff>,
        grads: GradientsParams,
    ) -> Mlp<CpuAutodiff> {
        match self {
            Self::Sgd(o) => o.step(lr, module, grads),
            Self::Adam(o) => o.step(lr, module, grads),
        }
    }
}

fn burn_optimizer(spec: &OptimizerSpec) -> BurnOptimizer {
    let decay = |wd: f64| (wd > 0.0).then(|| WeightDecayConfig::new(wd as f32));
    match *spec {
        OptimizerSpec::Sgd {
            momentum,
            weight_decay,
            nesterov,
        } => {
            let momentum = (momentum > 0.0).then(|| {
                MomentumConfig::new()
                    .with_momentum(momentum)
                    .with_dampening(0.0)
                    .with_nesterov(nesterov)
            });
            BurnOptimizer::Sgd(
                SgdConfig::new()
                    .with_momentum(momentum)
                    .with_weight_decay(decay(weight_decay))
                    .init(),
            )
        }
        OptimizerSpec::Adam {
            beta1,
            beta2,
            epsilon,
            weight_decay,
        } => BurnOptimizer::Adam(
            AdamConfig::new()
                .with_beta_1(beta1 as f32)
                .with_beta_2(beta2 as f32)
                .with_epsilon(epsilon as f32)
                .with_weight_decay(decay(weight_decay))
                .init(),
        ),
    }
}

/// Largest relative difference (denominator at least 1e-6) between `a` and `b`.
fn max_rel_error(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(&x, &y)| f64::from((x - y).abs()) / f64::from(y.abs()).max(1e-6))
        .fold(0.0, f64::max)
}

#[test]
fn flat_optimizer_matches_burn() {
    let specs = [
        sgd(0.0, 0.0, false),
        sgd(0.9, 0.0, false),
        sgd(0.9, 0.0, true),
        sgd(0.0, 0.01, false),
        sgd(0.5, 0.05, true),
        adam(0.0),
        adam(0.01),
        OptimizerSpec::Adam {
            beta1: 0.5,
            beta2: 0.9,
            epsilon: 1e-3,
            weight_decay: 0.1,
        },
    ];
    for spec in specs {
        let config = small_config();
        let mut module = config.init::<CpuAutodiff>(&cpu_device());
        let mut burn_opt = burn_optimizer(&spec);
        let mut params = config.initial_params();
        let initial = params.clone();
        let mut opt = FlatOptimizer::new(&spec, params.len()).unwrap();
        for step in 0..10 {
            let g = gradients(params.len(), step);
            let grads = burn_gradients(&module, &config, &g);
            module = burn_opt.step(lr_at(step), module, grads);
            opt.step(&mut params, &g, lr_at(step)).unwrap();
            let expected = module.valid().to_flat().unwrap();
            let err = max_rel_error(&params, &expected);
            assert!(err < 1e-5, "{spec:?} step {step}: relative error {err}");
        }
        assert_eq!(opt.steps(), 10);
        assert!(
            max_rel_error(&params, &initial) > 1e-3,
            "{spec:?} did not move"
        );
    }
}

/// Runs 10 steps; with `restart_at`, saves the state there (through bincode) and continues in a
/// fresh optimiser.
fn run_with_restart(spec: &OptimizerSpec, restart_at: Option<u64>) -> (Vec<f32>, OptimizerState) {
    let mut params = small_config().initial_params();
    let n = params.len();
    let mut opt = FlatOptimizer::new(spec, n).unwrap();
    for step in 0..10 {
        if restart_at == Some(step) {
            let bytes = bincode::serialize(&opt.state()).unwrap();
            let state: OptimizerState = bincode::deserialize(&bytes).unwrap();
            assert_eq!(state, opt.state());
            opt = FlatOptimizer::restore(spec, n, state).unwrap();
        }
        opt.step(&mut params, &gradients(n, step), lr_at(step))
            .unwrap();
    }
    (params, opt.state())
}

#[test]
fn restored_state_continues_bit_identically() {
    for spec in [sgd(0.9, 0.01, true), sgd(0.0, 0.0, false), adam(0.01)] {
        let (straight, state) = run_with_restart(&spec, None);
        for restart in [1, 4, 9] {
            let (resumed, resumed_state) = run_with_restart(&spec, Some(restart));
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                bits(&straight),
                bits(&resumed),
                "{spec:?} restart at {restart}"
            );
            assert_eq!(state, resumed_state);
        }
        assert_eq!(state.steps, 10);
        assert_eq!(state.kind, spec.kind());
    }
}

#[test]
fn state_shape_and_format() -> Result<(), serde_json::Error> {
    let opt = FlatOptimizer::new(&sgd(0.9, 0.0, false), 3).unwrap();
    let state = opt.state();
    assert_eq!(state.velocity, vec![0.0; 3]);
    assert!(state.moment1.is_empty() && state.moment2.is_empty());
    let plain = FlatOptimizer::new(&sgd(0.0, 0.0, false), 3)
        .unwrap()
        .state();
    assert!(plain.velocity.is_empty());
    let adam_state = FlatOptimizer::new(&adam(0.0), 2).unwrap().state();
    assert_eq!(
        serde_json::to_string(&adam_state)?,
        r#"{"kind":"adam","steps":0,"velocity":[],"moment1":[0.0,0.0],"moment2":[0.0,0.0]}"#
    );
    let back: OptimizerState = serde_json::from_str(
        r#"{"kind":"adam","steps":0,"moment1":[0.0,0.0],"moment2":[0.0,0.0]}"#,
    )?;
    assert_eq!(back, adam_state);
    Ok(())
}

#[test]
fn restore_rejects_a_state_that_does_not_fit() {
    let adam_state = FlatOptimizer::new(&adam(0.0), 4).unwrap().state();
    let err = FlatOptimizer::restore(&sgd(0.9, 0.0, false), 4, adam_state.clone())
        .unwrap_err()
        .to_string();
    assert!(err.contains("`adam`") && err.contains("`sgd`"), "{err}");

    let err = FlatOptimizer::restore(&adam(0.0), 5, adam_state.clone())
        .unwrap_err()
        .to_string();
    assert!(err.contains("4 `moment1` values, expected 5"), "{err}");

    let mut short = adam_state;
    short.moment2.pop();
    let err = FlatOptimizer::restore(&adam(0.0), 4, short)
        .unwrap_err()
        .to_string();
    assert!(err.contains("3 `moment2` values, expected 4"), "{err}");

    // A momentum state into momentum-free SGD, and the other way round.
    let with_velocity = FlatOptimizer::new(&sgd(0.9, 0.0, false), 4)
        .unwrap()
        .state();
    let err = FlatOptimizer::restore(&sgd(0.0, 0.0, false), 4, with_velocity)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`velocity`") && err.contains("without momentum"),
        "{err}"
    );
    let without = FlatOptimizer::new(&sgd(0.0, 0.0, false), 4)
        .unwrap()
        .state();
    let err = FlatOptimizer::restore(&sgd(0.9, 0.0, false), 4, without)
        .unwrap_err()
        .to_string();
    assert!(err.contains("0 `velocity` values, expected 4"), "{err}");

    // An invalid spec is a config error, as from `validate`.
    let bad = sgd(1.5, 0.0, false);
    let state = FlatOptimizer::new(&sgd(0.9, 0.0, false), 4)
        .unwrap()
        .state();
    let err = FlatOptimizer::restore(&bad, 4, state)
        .unwrap_err()
        .to_string();
    assert!(err.contains("train.optimizer.momentum"), "{err}");
}

#[test]
fn step_rejects_wrong_lengths_and_changes_nothing() {
    let mut opt = FlatOptimizer::new(&adam(0.0), 3).unwrap();
    let mut params = [1.0f32, 2.0, 3.0];
    let err = opt.step(&mut params, &[0.1, 0.2], 0.1).unwrap_err();
    assert!(matches!(err, Error::Input(_)), "{err}");
    assert!(
        err.to_string().contains("gradient vector has 2 values"),
        "{err}"
    );
    let err = opt
        .step(&mut params[..2], &[0.1, 0.2, 0.3], 0.1)
        .unwrap_err();
    assert!(
        err.to_string().contains("parameter vector has 2 values"),
        "{err}"
    );
    assert_eq!(params, [1.0, 2.0, 3.0]);
    assert_eq!(opt.steps(), 0);
    assert_eq!(opt.state().moment1, vec![0.0; 3]);
}
