//! Trainer: determinism, learning, and the data-parallel gradient invariant.

use millrace_ml::backend::{CpuAutodiff, cpu_device};
use millrace_ml::model::{Activation, ModelKind, ModelSpec, Task};
use millrace_ml::optim::OptimizerSpec;
use millrace_ml::trainer::{Loss, TargetsRef, Trainer};

use crate::common::{accuracy, uniform, xor_labels};

const BINARY: Task = Task::Classification { num_classes: 2 };

fn mlp_trainer(seed: u64, optimizer: &OptimizerSpec) -> Trainer<CpuAutodiff> {
    let spec = ModelSpec::mlp([16, 16], Activation::Relu);
    Trainer::new(
        &spec,
        optimizer,
        Loss::CrossEntropy,
        &BINARY,
        4,
        seed,
        &cpu_device(),
    )
    .unwrap()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|f| f.to_bits()).collect()
}

/// Runs `steps` gradient+apply steps on a fixed problem; returns the final parameters.
fn run(trainer: &mut Trainer<CpuAutodiff>, steps: usize) -> Vec<f32> {
    let x = uniform(64, 4, 5);
    let y = xor_labels(&x, 4);
    for _ in 0..steps {
        let (_, g) = trainer
            .gradients(&x, TargetsRef::Classes(&y), 64, 1.0 / 64.0)
            .unwrap();
        trainer.apply(&g, 0.05).unwrap();
    }
    trainer.parameters()
}

#[test]
fn same_arguments_same_parameters() {
    let a = mlp_trainer(11, &OptimizerSpec::default());
    let b = mlp_trainer(11, &OptimizerSpec::default());
    assert_eq!(a.num_params(), 4 * 16 + 16 + 16 * 16 + 16 + 16 * 2 + 2);
    assert_eq!(bits(&a.parameters()), bits(&b.parameters()));
    assert_eq!(a.parameters(), a.to_bundle_weights());
    let c = mlp_trainer(12, &OptimizerSpec::default());
    assert_ne!(a.parameters(), c.parameters());
}

#[test]
fn replicas_stay_identical_through_training() {
    for optimizer in [
        OptimizerSpec::default(),
        OptimizerSpec::Sgd {
            momentum: 0.9,
            weight_decay: 1e-4,
            nesterov: true,
        },
    ] {
        let mut a = mlp_trainer(3, &optimizer);
        let mut b = mlp_trainer(3, &optimizer);
        let pa = run(&mut a, 20);
        let pb = run(&mut b, 20);
        assert_eq!(bits(&pa), bits(&pb), "{optimizer:?}");
        assert_ne!(
            pa,
            mlp_trainer(3, &optimizer).parameters(),
            "training changed nothing"
        );
    }
}

#[test]
fn replicas_on_two_threads_at_once_are_identical() {
    let handles: Vec<_> = (0..2)
        .map(|_| {
            std::thread::spawn(|| {
                let mut t = mlp_trainer(99, &OptimizerSpec::default());
                let initial = t.parameters();
                (initial, run(&mut t, 30))
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(bits(&results[0].0), bits(&results[1].0));
    assert_eq!(bits(&results[0].1), bits(&results[1].1));
    // ...and equal to a replica trained on this thread.
    let mut local = mlp_trainer(99, &OptimizerSpec::default());
    assert_eq!(bits(&run(&mut local, 30)), bits(&results[0].1));
}

#[test]
fn gradients_of_halves_sum_to_the_whole() {
    let mut t = mlp_trainer(5, &OptimizerSpec::default());
    let rows = 100;
    let x = uniform(rows, 4, 8);
    let y = xor_labels(&x, 4);
    let (loss, whole) = t.gradients(&x, TargetsRef::Classes(&y), rows, 0.5).unwrap();
    let split = 37;
    let (l1, g1) = t
        .gradients(
            &x[..split * 4],
            TargetsRef::Classes(&y[..split]),
            split,
            0.5,
        )
        .unwrap();
    let (l2, g2) = t
        .gradients(
            &x[split * 4..],
            TargetsRef::Classes(&y[split..]),
            rows - split,
            0.5,
        )
        .unwrap();
    assert!(
        (loss - (l1 + l2)).abs() < 1e-6 * loss.abs(),
        "{loss} vs {}",
        l1 + l2
    );
    assert_eq!(whole.len(), t.num_params());
    for (i, (w, (a, b))) in whole.iter().zip(g1.iter().zip(&g2)).enumerate() {
        assert!((w - (a + b)).abs() <= 1e-5, "param {i}: {w} vs {}", a + b);
    }
    // The scale multiplies the gradient, not the reported loss.
    let (loss2, scaled) = t.gradients(&x, TargetsRef::Classes(&y), rows, 1.0).unwrap();
    assert_eq!(loss2, loss);
    for (s, w) in scaled.iter().zip(&whole) {
        assert!((s - 2.0 * w).abs() <= 1e-5);
    }
    // Loss at initialisation is about ln 2 per row.
    assert!(
        (loss / rows as f64 - 2f64.ln()).abs() < 0.3,
        "mean loss {}",
        loss / rows as f64
    );
}

#[test]
fn mlp_learns_xor() {
    let mut t = mlp_trainer(1, &OptimizerSpec::default());
    let rows = 512;
    let x = uniform(rows, 4, 21);
    let y = xor_labels(&x, 4);
    let mut first_loss = None;
    let mut last_loss = 0.0;
    for _ in 0..600 {
        let (loss, g) = t
            .gradients(&x, TargetsRef::Classes(&y), rows, 1.0 / rows as f32)
            .unwrap();
        first_loss.get_or_insert(loss);
        last_loss = loss;
        t.apply(&g, 0.01).unwrap();
    }
    let test_x = uniform(1000, 4, 22);
    let test_y = xor_labels(&test_x, 4);
    let probs = t.predict(&test_x, 1000).unwrap();
    assert_eq!(probs.len(), 2000);
    assert!(probs.chunks(2).all(|p| (p[0] + p[1] - 1.0).abs() < 1e-5));
    let acc = accuracy(&probs, 2, &test_y);
    assert!(
        acc > 0.9,
        "test accuracy {acc}, loss {first_loss:?} -> {last_loss}"
    );
}

#[test]
fn linear_regression_recovers_coefficients() {
    let spec = ModelSpec::new(ModelKind::Linear);
    let optimizer = OptimizerSpec::Sgd {
        momentum: 0.9,
        weight_decay: 0.0,
        nesterov: false,
    };
    let mut t = Trainer::<CpuAutodiff>::new(
        &spec,
        &optimizer,
        Loss::Mse,
        &Task::Regression,
        3,
        0,
        &cpu_device(),
    )
    .unwrap();
    let rows = 256;
    let x = uniform(rows, 3, 4);
    let coef = [2.0f32, -3.0, 0.5];
    let y: Vec<f32> = x
        .chunks(3)
        .map(|r| r[0] * coef[0] + r[1] * coef[1] + r[2] * coef[2] + 1.25)
        .collect();
    for _ in 0..500 {
        let (_, g) = t
            .gradients(&x, TargetsRef::Values(&y), rows, 1.0 / rows as f32)
            .unwrap();
        t.apply(&g, 0.1).unwrap();
    }
    // Parameter order: weight [3, 1] row-major, then bias [1].
    let p = t.parameters();
    assert_eq!(p.len(), 4);
    for (got, want) in p.iter().zip(coef.iter().chain([1.25f32].iter())) {
        assert!((got - want).abs() < 1e-3, "params {p:?}");
    }
    let pred = t.predict(&[1.0, 1.0, 1.0], 1).unwrap();
    assert!(
        (pred[0] - (2.0 - 3.0 + 0.5 + 1.25)).abs() < 1e-3,
        "{pred:?}"
    );
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let mut t = mlp_trainer(0, &OptimizerSpec::default());
    let x = uniform(2, 4, 0);
    assert!(
        t.gradients(&x, TargetsRef::Classes(&[0, 1]), 3, 1.0)
            .is_err()
    );
    assert!(t.gradients(&x, TargetsRef::Classes(&[0]), 2, 1.0).is_err());
    let err = t
        .gradients(&x, TargetsRef::Classes(&[0, 2]), 2, 1.0)
        .unwrap_err();
    assert!(err.to_string().contains("class 2 at row 1"), "{err}");
    assert!(
        t.gradients(&x, TargetsRef::Values(&[0.0, 1.0]), 2, 1.0)
            .is_err()
    );
    assert!(t.apply(&[0.0; 3], 0.1).is_err());
    assert!(t.predict(&x, 3).is_err());
    let (loss, g) = t.gradients(&[], TargetsRef::Classes(&[]), 0, 1.0).unwrap();
    assert_eq!((loss, g.len()), (0.0, t.num_params()));
    assert!(t.predict(&[], 0).unwrap().is_empty());
    let bad = ModelSpec::new(ModelKind::Mlp);
    let err = Trainer::<CpuAutodiff>::new(
        &bad,
        &OptimizerSpec::default(),
        Loss::CrossEntropy,
        &BINARY,
        4,
        0,
        &cpu_device(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("train.model.hidden"), "{err}");
}

#[test]
fn set_parameters_syncs_a_replica() {
    let mut a = mlp_trainer(1, &OptimizerSpec::default());
    let mut b = mlp_trainer(2, &OptimizerSpec::default());
    b.set_parameters(&a.parameters()).unwrap();
    assert_eq!(bits(&a.parameters()), bits(&b.parameters()));
    assert_eq!(bits(&run(&mut a, 5)), bits(&run(&mut b, 5)));
    assert!(b.set_parameters(&[1.0]).is_err());
    assert_eq!(b.parameters().len(), b.num_params());
}
