//! The dense step against burn's autodiff: the same gradients and the same training, to float
//! rounding, for every activation, loss and task the built-in models have.

use super::{Loss, TargetsRef, Trainer};
use crate::backend::{CpuAutodiff, cpu_device};
use crate::model::{Activation, ModelKind, ModelSpec, Task};
use crate::optim::OptimizerSpec;
use crate::rng::Rng;

const DIM: usize = 5;
const ROWS: usize = 96;

struct Case {
    model: ModelSpec,
    task: Task,
    loss: Loss,
}

fn cases() -> Vec<Case> {
    let classes = Task::Classification { num_classes: 3 };
    let mut cases: Vec<Case> = [
        Activation::Relu,
        Activation::Tanh,
        Activation::Gelu,
        Activation::Sigmoid,
    ]
    .into_iter()
    .map(|a| Case {
        model: ModelSpec::mlp([16, 8], a),
        task: classes,
        loss: Loss::CrossEntropy,
    })
    .collect();
    for loss in [Loss::Mse, Loss::Mae] {
        cases.push(Case {
            model: ModelSpec::mlp([12], Activation::Relu),
            task: Task::Regression,
            loss,
        });
    }
    cases.push(Case {
        model: ModelSpec::new(ModelKind::Logistic),
        task: classes,
        loss: Loss::CrossEntropy,
    });
    cases.push(Case {
        model: ModelSpec::new(ModelKind::Linear),
        task: Task::Regression,
        loss: Loss::Mse,
    });
    cases
}

fn trainer(case: &Case, optimizer: &OptimizerSpec) -> Trainer<CpuAutodiff> {
    Trainer::new(
        &case.model,
        optimizer,
        case.loss,
        &case.task,
        DIM,
        7,
        &cpu_device(),
    )
    .unwrap()
}

/// A batch: features in [-2, 2), classes from the features, or a noisy linear target.
fn batch(seed: u64) -> (Vec<f32>, Vec<i64>, Vec<f32>) {
    let mut rng = Rng::new(seed);
    let x: Vec<f32> = (0..ROWS * DIM)
        .map(|_| rng.uniform_f32(-2.0, 2.0))
        .collect();
    let rows = x.chunks_exact(DIM);
    let classes = rows
        .clone()
        .map(|r| i64::from(r[0] > 0.0) + i64::from(r[1] > 0.5))
        .collect();
    let values = rows.map(|r| 3.0 * r[0] - r[2] + 0.5).collect();
    (x, classes, values)
}

fn targets<'a>(task: &Task, classes: &'a [i64], values: &'a [f32]) -> TargetsRef<'a> {
    match task {
        Task::Classification { .. } => TargetsRef::Classes(classes),
        Task::Regression => TargetsRef::Values(values),
    }
}

/// `|a - b| <= tol * max(1, |b|)` for every pair.
fn assert_close(what: &str, a: &[f32], b: &[f32], tol: f32) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= tol * y.abs().max(1.0),
            "{what}[{i}]: dense {x} vs burn {y}"
        );
    }
}

#[test]
fn dense_gradients_equal_burns() {
    let (x, classes, values) = batch(1);
    for case in cases() {
        let what = format!("{:?} {:?} {:?}", case.model, case.task, case.loss);
        let mut dense = trainer(&case, &OptimizerSpec::default());
        let mut burn = trainer(&case, &OptimizerSpec::default()).with_burn_gradients();
        let y = targets(&case.task, &classes, &values);
        let scale = 1.0 / ROWS as f32;
        let (dense_loss, dense_grads) = dense.gradients(&x, y, ROWS, scale).unwrap();
        let (burn_loss, burn_grads) = burn.gradients(&x, y, ROWS, scale).unwrap();
        assert!(
            (dense_loss - burn_loss).abs() <= 1e-5 * burn_loss.abs().max(1.0),
            "{what}: loss {dense_loss} vs {burn_loss}"
        );
        assert!(burn_grads.iter().any(|g| g.abs() > 1e-3), "{what}: flat");
        assert_close(&what, &dense_grads, &burn_grads, 1e-5);
        // Twice on the same batch: the same bits (buffers reused, nothing carried over).
        let (again_loss, again) = dense.gradients(&x, y, ROWS, scale).unwrap();
        assert_eq!(again_loss.to_bits(), dense_loss.to_bits(), "{what}");
        assert!(
            again
                .iter()
                .zip(&dense_grads)
                .all(|(a, b)| a.to_bits() == b.to_bits())
        );
        // A smaller batch after a larger one.
        let (_, small) = dense
            .gradients(&x[..3 * DIM], y.slice(0, 3), 3, 1.0)
            .unwrap();
        let (_, small_burn) = burn
            .gradients(&x[..3 * DIM], y.slice(0, 3), 3, 1.0)
            .unwrap();
        assert_close(&format!("{what}, 3 rows"), &small, &small_burn, 1e-5);
        // The same parameters predict the same, to rounding.
        let p = dense.predict(&x, ROWS).unwrap();
        assert_eq!(p.len(), burn.predict(&x, ROWS).unwrap().len());
        assert_close(
            &format!("{what}, predict"),
            &p,
            &burn.predict(&x, ROWS).unwrap(),
            1e-5,
        );
        assert!(dense.predict(&[], 0).unwrap().is_empty());
    }
}

#[test]
fn dense_training_follows_burns() {
    let adam = OptimizerSpec::default();
    for case in cases() {
        let what = format!("{:?} {:?} {:?}", case.model, case.task, case.loss);
        let mut dense = trainer(&case, &adam);
        let mut twin = trainer(&case, &adam);
        let mut burn = trainer(&case, &adam).with_burn_gradients();
        let (mut first, mut last) = (None, 0.0);
        for step in 0..60 {
            let (x, classes, values) = batch(100 + step % 6);
            let y = targets(&case.task, &classes, &values);
            let scale = 1.0 / ROWS as f32;
            let mut losses = [0.0f64; 3];
            for (t, loss) in [&mut dense, &mut twin, &mut burn]
                .into_iter()
                .zip(&mut losses)
            {
                let (l, g) = t.gradients(&x, y, ROWS, scale).unwrap();
                t.apply(&g, 1e-2).unwrap();
                *loss = l;
            }
            first.get_or_insert(losses[0]);
            last = losses[0];
            assert!(
                (losses[0] - losses[2]).abs() <= 1e-3 * losses[2].abs().max(1.0),
                "{what} step {step}: loss {} vs burn {}",
                losses[0],
                losses[2]
            );
        }
        assert!(last < first.unwrap(), "{what}: did not learn");
        // Two dense replicas fed the same batches: bit-identical.
        let (a, b) = (dense.parameters(), twin.parameters());
        assert!(
            a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
            "{what}"
        );
        assert_close(&what, &a, &burn.parameters(), 1e-3);
        // Predictions read the parameters the dense step trained.
        let (x, _, _) = batch(9);
        let p = dense.predict(&x, ROWS).unwrap();
        assert_close(&what, &p, &burn.predict(&x, ROWS).unwrap(), 1e-3);
        assert_eq!(dense.model().unwrap().to_flat().unwrap().len(), a.len());
    }
}
