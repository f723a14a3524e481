//! Trainer unit tests.

use std::time::Instant;

use super::{Loss, Reduction, TargetsRef, Trainer};
use crate::backend::{CpuAutodiff, cpu_device};
use crate::model::{Activation, ModelKind, ModelSpec, Task};
use crate::optim::OptimizerSpec;
use crate::rng::Rng;

/// Times 200 `gradients` + `apply` steps of the 24→64→64→2 MLP with Adam at batch 4096.
///
/// `cargo test -p millrace-ml --release --lib -- --ignored --nocapture train_step_timing`
#[test]
#[ignore = "timing; run in release with --nocapture"]
fn train_step_timing() {
    const BATCH: usize = 4096;
    const DIM: usize = 24;
    const STEPS: usize = 200;
    let mut rng = Rng::new(1);
    let x: Vec<f32> = (0..BATCH * DIM)
        .map(|_| rng.uniform_f32(-1.0, 1.0))
        .collect();
    let y: Vec<i64> = (0..BATCH).map(|i| i64::from(x[i * DIM] > 0.0)).collect();
    let task = Task::Classification { num_classes: 2 };
    let spec = ModelSpec::mlp([64, 64], Activation::Relu);
    let mut t = Trainer::<CpuAutodiff>::new(
        &spec,
        &OptimizerSpec::default(),
        Loss::CrossEntropy,
        &task,
        DIM,
        0,
        &cpu_device(),
    )
    .unwrap();
    let step = |t: &mut Trainer<CpuAutodiff>| {
        let started = Instant::now();
        let (_, g) = t
            .gradients(&x, TargetsRef::Classes(&y), BATCH, 1.0 / BATCH as f32)
            .unwrap();
        let grad_s = started.elapsed().as_secs_f64();
        let started = Instant::now();
        t.apply(&g, 1e-3).unwrap();
        (grad_s, started.elapsed().as_secs_f64())
    };
    for _ in 0..20 {
        step(&mut t);
    }
    let started = Instant::now();
    let (mut grad_s, mut apply_s) = (0.0, 0.0);
    for _ in 0..STEPS {
        let (g, a) = step(&mut t);
        grad_s += g;
        apply_s += a;
    }
    let total = started.elapsed().as_secs_f64();
    println!(
        "train_step_timing: {STEPS} steps batch {BATCH}: total {total:.3}s, \
         {:.3} ms/step (gradients {:.3} ms, apply {:.3} ms), {:.0} samples/s",
        total * 1e3 / STEPS as f64,
        grad_s * 1e3 / STEPS as f64,
        apply_s * 1e3 / STEPS as f64,
        (STEPS * BATCH) as f64 / total
    );
    assert!(t.parameters().iter().all(|p| p.is_finite()));
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|f| f.to_bits()).collect()
}

/// Linear regression on 3 features with `loss`, SGD without momentum or decay.
fn linear(loss: Loss, optimizer: &OptimizerSpec, seed: u64) -> Trainer<CpuAutodiff> {
    Trainer::new(
        &ModelSpec::new(ModelKind::Linear),
        optimizer,
        loss,
        &Task::Regression,
        3,
        seed,
        &cpu_device(),
    )
    .unwrap()
}

fn plain_sgd() -> OptimizerSpec {
    OptimizerSpec::Sgd {
        momentum: 0.0,
        weight_decay: 0.0,
        nesterov: false,
    }
}

#[test]
fn mae_with_sum_reduction_moves_the_bias_one_per_row() {
    let mut t = linear(Loss::Mae, &plain_sgd(), 3);
    assert_eq!(t.loss(), Loss::Mae);
    // Start from zero so the bias (the last parameter) counts the rows exactly.
    t.set_parameters(&[0.0; 4]).unwrap();
    let mut rng = Rng::new(8);
    let mut total = 0u64;
    for (step, rows) in [1usize, 3, 7, 16, 33].into_iter().enumerate() {
        let x: Vec<f32> = (0..rows * 3).map(|_| rng.uniform_f32(-1.0, 1.0)).collect();
        // Far above any output: d|o - y|/do = sign(o - y) = -1 for every row.
        let y = vec![1e6f32; rows];
        let (loss, g) = t
            .gradients(
                &x,
                TargetsRef::Values(&y),
                rows,
                Reduction::Sum.scale(rows as u64),
            )
            .unwrap();
        assert!(loss > 0.9e6 * rows as f64, "{loss}");
        assert_eq!(g[3], -(rows as f32), "bias gradient at step {step}");
        t.apply(&g, 1.0).unwrap();
        total += rows as u64;
        assert_eq!(t.parameters()[3], total as f32, "bias after step {step}");
    }
    assert_eq!(total, 60);
    assert_eq!(t.steps(), 5);
    assert_eq!(t.parameters()[3], 60.0);
}

#[test]
fn mae_gradient_is_the_sign_of_the_error() {
    let mut t = linear(Loss::Mae, &plain_sgd(), 0);
    // Output = bias = 2 for every row.
    t.set_parameters(&[0.0, 0.0, 0.0, 2.0]).unwrap();
    let x = [0.5f32, -1.0, 0.25, 1.0, 1.0, 1.0, -0.5, 0.0, 2.0];
    let y = [5.0f32, 2.0, -1.0]; // errors -3, 0, +3
    let (loss, g) = t.gradients(&x, TargetsRef::Values(&y), 3, 1.0).unwrap();
    assert_eq!(loss, 6.0);
    // d/dw = Σ sign(o - y) x = -x_row0 + 0 * x_row1 + x_row2; d/db = -1 + 0 + 1.
    assert_eq!(g, vec![-1.0, 1.0, 1.75, 0.0]);
    // Mean reduction halves nothing here but scales by 1/3.
    let (_, g) = t
        .gradients(&x, TargetsRef::Values(&y), 3, Reduction::Mean.scale(3))
        .unwrap();
    assert_eq!(g[0], -1.0 / 3.0);
    // The same data with squared error: 2 (o - y) x.
    let mut mse = linear(Loss::Mse, &plain_sgd(), 0);
    mse.set_parameters(&[0.0, 0.0, 0.0, 2.0]).unwrap();
    let (loss, g) = mse.gradients(&x, TargetsRef::Values(&y), 3, 1.0).unwrap();
    assert_eq!(loss, 18.0);
    assert_eq!(g, vec![-6.0, 6.0, 10.5, 0.0]);
}

#[test]
fn loss_must_fit_the_task() {
    let err = Trainer::<CpuAutodiff>::new(
        &ModelSpec::new(ModelKind::Linear),
        &plain_sgd(),
        Loss::CrossEntropy,
        &Task::Regression,
        3,
        0,
        &cpu_device(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("train.loss"), "{err}");
    let err = Trainer::<CpuAutodiff>::new(
        &ModelSpec::new(ModelKind::Logistic),
        &plain_sgd(),
        Loss::Mae,
        &Task::Classification { num_classes: 3 },
        3,
        0,
        &cpu_device(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("train.loss"), "{err}");
    assert!(err.to_string().contains("`mae`"), "{err}");
}

/// An MLP classifier trainer on 4 features.
fn mlp(optimizer: &OptimizerSpec, seed: u64) -> Trainer<CpuAutodiff> {
    Trainer::new(
        &ModelSpec::mlp([8, 8], Activation::Tanh),
        optimizer,
        Loss::CrossEntropy,
        &Task::Classification { num_classes: 3 },
        4,
        seed,
        &cpu_device(),
    )
    .unwrap()
}

fn train_steps(t: &mut Trainer<CpuAutodiff>, steps: usize) {
    let mut rng = Rng::new(21);
    let rows = 32;
    let x: Vec<f32> = (0..rows * 4).map(|_| rng.uniform_f32(-1.0, 1.0)).collect();
    let y: Vec<i64> = (0..rows)
        .map(|r| i64::from(x[r * 4] > 0.0) + i64::from(x[r * 4 + 1] > 0.5))
        .collect();
    for _ in 0..steps {
        let (_, g) = t
            .gradients(&x, TargetsRef::Classes(&y), rows, 1.0 / rows as f32)
            .unwrap();
        t.apply(&g, 0.05).unwrap();
    }
}

#[test]
fn checkpoint_restores_into_a_fresh_trainer_bit_identically() {
    for optimizer in [
        OptimizerSpec::default(),
        OptimizerSpec::Sgd {
            momentum: 0.9,
            weight_decay: 1e-3,
            nesterov: true,
        },
    ] {
        let mut straight = mlp(&optimizer, 1);
        train_steps(&mut straight, 6);

        let mut first = mlp(&optimizer, 1);
        train_steps(&mut first, 3);
        let params = first.parameters();
        let state = first.optimizer_state();
        assert_eq!(state.steps, 3);

        let mut resumed = mlp(&optimizer, 99);
        assert_ne!(bits(&resumed.parameters()), bits(&params));
        resumed.set_parameters(&params).unwrap();
        resumed.restore_optimizer(state).unwrap();
        assert_eq!(resumed.steps(), 3);
        train_steps(&mut resumed, 3);

        assert_eq!(resumed.steps(), 6);
        assert_eq!(
            bits(&straight.parameters()),
            bits(&resumed.parameters()),
            "{optimizer:?}"
        );
        assert_eq!(straight.optimizer_state(), resumed.optimizer_state());
        // Without the optimiser state, momentum restarts and training differs.
        let mut cold = mlp(&optimizer, 99);
        cold.set_parameters(&params).unwrap();
        train_steps(&mut cold, 3);
        assert_ne!(bits(&straight.parameters()), bits(&cold.parameters()));
    }
}

#[test]
fn restore_optimizer_rejects_a_mismatch_and_keeps_its_state() {
    let mut t = mlp(&OptimizerSpec::default(), 1);
    train_steps(&mut t, 2);
    let before = t.optimizer_state();
    let sgd = mlp(&plain_sgd(), 1).optimizer_state();
    let err = t.restore_optimizer(sgd).unwrap_err();
    assert!(err.to_string().contains("`sgd`"), "{err}");
    let small = linear(Loss::Mse, &OptimizerSpec::default(), 0).optimizer_state();
    let err = t.restore_optimizer(small).unwrap_err();
    assert!(err.to_string().contains("`moment1`"), "{err}");
    assert_eq!(t.optimizer_state(), before);
    assert_eq!(t.steps(), 2);
}

#[test]
fn cached_parameters_match_the_module() {
    use burn::module::AutodiffModule;
    let mut t = mlp(&OptimizerSpec::default(), 4);
    let module = |t: &mut Trainer<CpuAutodiff>| t.model().unwrap().valid().to_flat().unwrap();
    assert_eq!(bits(&t.parameters()), bits(&module(&mut t)));
    train_steps(&mut t, 2);
    assert_eq!(bits(&t.parameters()), bits(&module(&mut t)));
    assert_eq!(t.try_parameters().unwrap(), t.to_bundle_weights());
    let fresh = vec![0.25f32; t.num_params()];
    t.set_parameters(&fresh).unwrap();
    assert_eq!(t.parameters(), fresh);
    assert_eq!(bits(&module(&mut t)), bits(&fresh));
    // A wrong length changes nothing.
    assert!(t.set_parameters(&fresh[1..]).is_err());
    assert!(t.apply(&fresh[1..], 0.1).is_err());
    assert_eq!(t.parameters(), fresh);
    assert_eq!(bits(&module(&mut t)), bits(&fresh));
    assert_eq!(t.steps(), 2);
    // Predictions use the written-back module.
    let x = [0.1f32, 0.2, 0.3, 0.4];
    let p = t.predict(&x, 1).unwrap();
    assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6, "{p:?}");
}
