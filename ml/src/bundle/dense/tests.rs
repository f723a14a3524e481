//! Tests of the parent module.
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{ArrayRef, Float64Array, Int64Array};
use arrow::record_batch::RecordBatch;

use super::*;
use crate::bundle::{BundleMeta, Predictor};
use crate::model::{MlpConfig, ModelSpec};
use crate::preprocess::{FeatureSpec, FitState, LabelKind};
use crate::rng::Rng;

/// A bundle over `dim` numeric features with deterministic weights, scaled up so hidden
/// units reach the non-linear parts of every activation.
fn bundle(spec: ModelSpec, task: Task, dim: usize, seed: u64) -> ModelBundle {
    let names: Vec<String> = (0..dim).map(|i| format!("f{i}")).collect();
    let mut rng = Rng::new(seed);
    let mut columns: Vec<(String, ArrayRef)> = names
        .iter()
        .map(|n| {
            let v: Vec<f64> = (0..50).map(|_| rng.normal_f64()).collect();
            (n.clone(), Arc::new(Float64Array::from(v)) as ArrayRef)
        })
        .collect();
    let (label, kind): (ArrayRef, _) = match task {
        Task::Classification { num_classes } => (
            Arc::new(Int64Array::from_iter_values(
                (0..50).map(|i| (i % num_classes) as i64),
            )),
            LabelKind::Classification,
        ),
        Task::Regression => (
            Arc::new(Float64Array::from_iter_values((0..50).map(f64::from))),
            LabelKind::Regression,
        ),
    };
    columns.push(("y".into(), label));
    let batch = RecordBatch::try_from_iter(columns).unwrap();
    let features = FeatureSpec {
        standardize: names,
        label: "y".into(),
        ..FeatureSpec::default()
    };
    let mut st = FitState::new(&features, kind);
    st.update(&batch).unwrap();
    let preprocess = st.finish().unwrap();
    assert_eq!(preprocess.input_dim(), dim);
    let weights = MlpConfig::from_spec(&spec, &task, dim)
        .with_seed(seed)
        .initial_params()
        .iter()
        .map(|w| w * 3.0)
        .collect();
    let bundle = ModelBundle {
        model: (&spec).into(),
        task,
        preprocess,
        weights,
        meta: BundleMeta::default(),
    };
    bundle.validate().unwrap();
    bundle
}

fn inputs(rows: usize, dim: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..rows * dim)
        .map(|_| 2.0 * rng.normal_f64() as f32)
        .collect()
}

/// Asserts `a` and `b` agree within 1e-5 relative, plus 1e-6 absolute: a regression output
/// near 0 is a sum of O(1) terms, and burn sums them in another order.
fn assert_close(a: &[f32], b: &[f32], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let tol = 1e-5 * x.abs().max(y.abs()) + 1e-6;
        assert!((x - y).abs() <= tol, "{what}: value {i}: {x} vs {y}");
    }
}

/// DensePredictor == Predictor on 1, 5 and 100 random rows, also through `predict_into`
/// with one scratch reused across sizes.
fn check(spec: ModelSpec, task: Task, dim: usize) {
    let what = format!("{:?} {:?} {task:?}", spec.kind, spec.activation);
    let bundle = bundle(spec, task, dim, 7);
    let burn = Predictor::new(&bundle).unwrap();
    let dense = DensePredictor::new(&bundle).unwrap();
    assert_eq!(dense.input_dim(), dim);
    assert_eq!(dense.output_dim(), task.output_dim());
    assert_eq!(dense.task(), &task);
    let mut scratch = DenseScratch::default();
    let mut out = vec![9.0; 3];
    for (rows, seed) in [(1, 1), (5, 2), (100, 3), (5, 4), (1, 5)] {
        let x = inputs(rows, dim, seed);
        let expected = burn.predict(&x, rows).unwrap();
        let got = dense.predict(&x, rows).unwrap();
        assert_eq!(got.len(), rows * task.output_dim());
        assert_close(&got, &expected, &format!("{what}, {rows} rows"));
        dense
            .predict_into(&x, rows, &mut scratch, &mut out)
            .unwrap();
        assert_eq!(out, got, "{what}: predict_into, {rows} rows");
        if let Task::Classification { num_classes } = task {
            for row in got.chunks(num_classes) {
                assert!(
                    (row.iter().sum::<f32>() - 1.0).abs() < 1e-5,
                    "{what}: {row:?}"
                );
            }
        }
    }
    // The outputs are not trivially constant.
    let x = inputs(2, dim, 6);
    let got = dense.predict(&x, 2).unwrap();
    let k = task.output_dim();
    assert_ne!(got[..k], got[k..], "{what}");
}

const BINARY: Task = Task::Classification { num_classes: 2 };
const THREE: Task = Task::Classification { num_classes: 3 };

#[test]
fn mlp_matches_predictor_for_every_activation() {
    for activation in [
        Activation::Relu,
        Activation::Tanh,
        Activation::Gelu,
        Activation::Sigmoid,
    ] {
        check(ModelSpec::mlp([16, 9], activation), BINARY, 5);
        check(ModelSpec::mlp([8], activation), THREE, 3);
        check(ModelSpec::mlp([13, 7, 4], activation), Task::Regression, 11);
    }
}

#[test]
fn benchmark_shape_matches_predictor() {
    check(ModelSpec::mlp([64, 64], Activation::Relu), BINARY, 24);
}

#[test]
fn logistic_and_linear_match_predictor() {
    use crate::model::ModelKind;
    check(ModelSpec::new(ModelKind::Logistic), BINARY, 4);
    check(ModelSpec::new(ModelKind::Logistic), THREE, 9);
    check(ModelSpec::new(ModelKind::Linear), Task::Regression, 6);
    check(ModelSpec::new(ModelKind::Linear), Task::Regression, 1);
}

#[test]
fn linear_regression_is_the_dot_product() {
    use crate::model::ModelKind;
    let mut b = bundle(ModelSpec::new(ModelKind::Linear), Task::Regression, 3, 1);
    b.weights = vec![1.0, -2.0, 0.5, 0.25];
    let dense = DensePredictor::new(&b).unwrap();
    let got = dense.predict(&[1.0, 1.0, 2.0, 0.0, 0.0, 0.0], 2).unwrap();
    assert_eq!(got, vec![1.0 - 2.0 + 1.0 + 0.25, 0.25]);
}

#[test]
fn wrong_length_is_an_input_error() {
    let b = bundle(ModelSpec::mlp([4], Activation::Relu), BINARY, 3, 2);
    let dense = DensePredictor::new(&b).unwrap();
    for (len, rows) in [(5, 2), (7, 2), (3, 0), (0, 1)] {
        let err = dense.predict(&vec![0.0; len], rows).unwrap_err();
        assert!(matches!(err, Error::Input(_)), "{err:?}");
        assert!(err.to_string().contains(&format!("{len} values")), "{err}");
    }
    assert_eq!(dense.predict(&[], 0).unwrap(), Vec::<f32>::new());
    let mut out = vec![1.0];
    dense
        .predict_into(&[], 0, &mut DenseScratch::default(), &mut out)
        .unwrap();
    assert!(out.is_empty());
}

#[test]
fn rejects_inconsistent_bundles() {
    let mut b = bundle(ModelSpec::mlp([4], Activation::Relu), BINARY, 3, 3);
    b.weights.pop();
    assert!(matches!(DensePredictor::new(&b), Err(Error::Input(_))));
}

#[test]
fn predict_into_stops_allocating() {
    let b = bundle(ModelSpec::mlp([64, 64], Activation::Gelu), THREE, 24, 4);
    let dense = DensePredictor::new(&b).unwrap();
    let x = inputs(64, 24, 9);
    let mut scratch = DenseScratch::default();
    let mut out = Vec::new();
    dense.predict_into(&x, 64, &mut scratch, &mut out).unwrap();
    let first = out.clone();
    let pointers = |s: &DenseScratch, o: &Vec<f32>| {
        [
            s.even.as_ptr(),
            s.odd.as_ptr(),
            s.block.as_ptr(),
            o.as_ptr(),
        ]
    };
    let before = pointers(&scratch, &out);
    for rows in [64, 1, 17, 64] {
        dense
            .predict_into(&x[..rows * 24], rows, &mut scratch, &mut out)
            .unwrap();
        assert_eq!(out[..], first[..rows * 3]);
        assert_eq!(pointers(&scratch, &out), before, "{rows} rows reallocated");
    }
}

#[test]
fn erf_matches_reference_values() {
    // Abramowitz & Stegun table 7.1 and symmetry.
    for (x, e) in [
        (0.0, 0.0),
        (0.1, 0.1124629160),
        (0.5, 0.5204998778),
        (1.0, 0.8427007929),
        (1.2, 0.9103139782),
        (2.0, 0.9953222650),
        (3.0, 0.9999779095),
        (7.0, 1.0),
    ] {
        assert!((erf(x) - e).abs() < 1e-9, "erf({x}) = {}", erf(x));
        assert!((erf(-x) + e).abs() < 1e-9, "erf(-{x})");
    }
    assert_eq!(erf(f64::INFINITY), 1.0);
    assert!(erf(f64::NAN).is_nan());
}

/// Latency of the benchmark MLP (24 → 64 → 64 → 2, relu), dense vs burn. Run with
/// `cargo test --release -p millrace-ml --lib dense::tests::timing -- --ignored --nocapture`.
#[test]
#[ignore = "timing, prints only"]
fn timing() {
    let b = bundle(ModelSpec::mlp([64, 64], Activation::Relu), BINARY, 24, 5);
    let dense = DensePredictor::new(&b).unwrap();
    let burn = Predictor::new(&b).unwrap();
    let mut scratch = DenseScratch::default();
    let mut out = Vec::new();
    for rows in [1, 8, 64] {
        let x = inputs(rows, 24, 1);
        let iters = 200_000 / rows;
        let start = Instant::now();
        for _ in 0..iters {
            dense
                .predict_into(std::hint::black_box(&x), rows, &mut scratch, &mut out)
                .unwrap();
        }
        let dense_us = start.elapsed().as_secs_f64() * 1e6 / iters as f64;
        let iters = (iters / 20).max(10);
        let start = Instant::now();
        for _ in 0..iters {
            std::hint::black_box(burn.predict(&x, rows).unwrap());
        }
        let burn_us = start.elapsed().as_secs_f64() * 1e6 / iters as f64;
        println!("{rows:>3} rows: dense {dense_us:8.2} us, burn Predictor {burn_us:8.2} us");
    }
}
