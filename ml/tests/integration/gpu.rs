//! The GPU replica against the CPU one, on the same inputs (`--features cuda`).
//!
//! Without a usable GPU these tests check the error and skip loudly; with
//! `MILLRACE_REQUIRE_GPU=1` (set by the GPU check script) a missing GPU fails them.

use millrace_ml::backend::{CpuAutodiff, cpu_device};
use millrace_ml::bundle::DensePredictor;
use millrace_ml::gpu::{GpuPredictor, GpuTrainer};
use millrace_ml::model::{Activation, ModelKind, ModelSpec, Task};
use millrace_ml::optim::OptimizerSpec;
use millrace_ml::rng::Rng;
use millrace_ml::trainer::{Loss, TargetsRef, Trainer};
use millrace_ml::{Device, GpuOptions, Precision};

use super::common::{uniform, xor_labels};

/// Whether a GPU is usable; otherwise says why, loudly, and the test returns early.
fn gpu_or_skip(test: &str) -> bool {
    match Device::Cuda(0).check("train.device") {
        Ok(()) => true,
        Err(e) => {
            let message = e.to_string();
            assert!(
                message.contains("libcuda") || message.contains("GPU") || message.contains("CUDA"),
                "the no-GPU error should say what is missing: {message}"
            );
            if std::env::var("MILLRACE_REQUIRE_GPU").is_ok_and(|v| v == "1") {
                panic!("MILLRACE_REQUIRE_GPU=1 but no GPU is usable: {message}");
            }
            eprintln!("\n*** SKIPPING GPU test {test}: {message} ***\n");
            false
        }
    }
}

fn options(precision: Precision, cache: &std::path::Path) -> GpuOptions {
    GpuOptions {
        precision,
        kernel_cache: Some(cache.to_path_buf()),
        ..GpuOptions::default()
    }
}

fn cache_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("millrace-gpu-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Largest |a - b| / (|b| + floor) over the two vectors.
fn rel_err(a: &[f32], b: &[f32], floor: f32) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / (y.abs() + floor))
        .fold(0.0, f32::max)
}

/// ‖a - b‖ / ‖b‖ (Euclidean): robust where single values sit near a kink (ReLU at 0, |e| at 0)
/// or where Adam turns a rounding-sized gradient into a step of size `lr`.
fn rel_norm(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let diff: f64 = a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum();
    let base: f64 = b.iter().map(|y| f64::from(*y).powi(2)).sum();
    (diff / base.max(1e-30)).sqrt()
}

struct Case {
    name: &'static str,
    model: ModelSpec,
    task: Task,
    loss: Loss,
    optimizer: OptimizerSpec,
    dim: usize,
}

fn cases() -> Vec<Case> {
    let sgd = OptimizerSpec::Sgd {
        momentum: 0.9,
        weight_decay: 1e-3,
        nesterov: true,
    };
    vec![
        Case {
            name: "mlp-relu-ce-adam",
            model: ModelSpec::mlp([32, 16], Activation::Relu),
            task: Task::Classification { num_classes: 3 },
            loss: Loss::CrossEntropy,
            optimizer: OptimizerSpec::default(),
            dim: 24,
        },
        Case {
            name: "mlp-tanh-mse-sgd",
            model: ModelSpec::mlp([16], Activation::Tanh),
            task: Task::Regression,
            loss: Loss::Mse,
            optimizer: sgd.clone(),
            dim: 7,
        },
        Case {
            name: "mlp-gelu-mae-adam",
            model: ModelSpec::mlp([20], Activation::Gelu),
            task: Task::Regression,
            loss: Loss::Mae,
            optimizer: OptimizerSpec::Adam {
                beta1: 0.9,
                beta2: 0.99,
                epsilon: 1e-6,
                weight_decay: 1e-2,
            },
            dim: 5,
        },
        Case {
            name: "mlp-sigmoid-ce-sgd",
            model: ModelSpec::mlp([12], Activation::Sigmoid),
            task: Task::Classification { num_classes: 2 },
            loss: Loss::CrossEntropy,
            optimizer: sgd,
            dim: 3,
        },
        Case {
            name: "logistic",
            model: ModelSpec::new(ModelKind::Logistic),
            task: Task::Classification { num_classes: 2 },
            loss: Loss::CrossEntropy,
            optimizer: OptimizerSpec::default(),
            dim: 9,
        },
        Case {
            name: "linear-plain-sgd",
            model: ModelSpec::new(ModelKind::Linear),
            task: Task::Regression,
            loss: Loss::Mse,
            optimizer: OptimizerSpec::Sgd {
                momentum: 0.0,
                weight_decay: 0.0,
                nesterov: false,
            },
            dim: 4,
        },
    ]
}

/// Inputs and targets of `rows` rows for `case`.
fn data(case: &Case, rows: usize, seed: u64) -> (Vec<f32>, Vec<i64>, Vec<f32>) {
    let x = uniform(rows, case.dim, seed);
    let classes = match case.task {
        Task::Classification { num_classes } => x
            .chunks(case.dim)
            .map(|r| {
                ((r[0] * 3.0 + r[r.len() - 1]).abs() * num_classes as f32) as i64
                    % num_classes as i64
            })
            .collect(),
        Task::Regression => Vec::new(),
    };
    let mut rng = Rng::new(seed + 1);
    let values = x
        .chunks(case.dim)
        .map(|r| r.iter().sum::<f32>() * 2.0 + rng.uniform_f32(-0.1, 0.1))
        .collect();
    (x, classes, values)
}

fn targets<'a>(case: &Case, classes: &'a [i64], values: &'a [f32]) -> TargetsRef<'a> {
    match case.task {
        Task::Classification { .. } => TargetsRef::Classes(classes),
        Task::Regression => TargetsRef::Values(values),
    }
}

fn cpu(case: &Case) -> Trainer<CpuAutodiff> {
    Trainer::new(
        &case.model,
        &case.optimizer,
        case.loss,
        &case.task,
        case.dim,
        11,
        &cpu_device(),
    )
    .unwrap()
}

fn gpu(case: &Case, seed: u64, opts: &GpuOptions) -> GpuTrainer {
    GpuTrainer::new(
        &case.model,
        &case.optimizer,
        case.loss,
        &case.task,
        case.dim,
        seed,
        opts,
    )
    .unwrap()
}

#[test]
fn f32_gradients_steps_and_predictions_match_the_cpu() {
    if !gpu_or_skip("f32_gradients_steps_and_predictions_match_the_cpu") {
        return;
    }
    let cache = cache_dir("f32");
    for case in cases() {
        let mut c = cpu(&case);
        let mut g = gpu(&case, 11, &options(Precision::F32, &cache));
        assert_eq!(
            g.try_parameters().unwrap(),
            c.parameters(),
            "{}: initial parameters",
            case.name
        );
        // Batch sizes vary as content-hash batches do, and grow past the first capacity.
        for (step, rows) in [40usize, 37, 64, 300, 5, 1000, 64, 64]
            .into_iter()
            .enumerate()
        {
            let (x, cl, v) = data(&case, rows, step as u64);
            let y = targets(&case, &cl, &v);
            let scale = 1.0 / rows as f32;
            let (lc, gc) = c.gradients(&x, y, rows, scale).unwrap();
            let (lg, gg) = g.gradients(&x, y, rows, scale).unwrap();
            assert!(
                (lc - lg).abs() <= 1e-4 * lc.abs().max(1.0),
                "{} step {step}: loss cpu {lc} gpu {lg}",
                case.name
            );
            let e = rel_norm(&gg, &gc);
            assert!(
                e < 1e-4,
                "{} step {step}: gradient relative error {e}",
                case.name
            );
            c.apply(&gc, 0.01).unwrap();
            g.apply(&gc, 0.01).unwrap();
            let e = rel_norm(&g.try_parameters().unwrap(), &c.parameters());
            assert!(
                e < 1e-5,
                "{} step {step}: parameters differ by {e}",
                case.name
            );
        }
        let (x, _, _) = data(&case, 333, 99);
        let e = rel_norm(&g.predict(&x, 333).unwrap(), &c.predict(&x, 333).unwrap());
        assert!(e < 1e-5, "{}: predictions differ by {e}", case.name);
        // Optimiser state in model order, as the CPU keeps it.
        let (sc, sg) = (c.optimizer_state(), g.optimizer_state().unwrap());
        assert_eq!(sc.steps, sg.steps);
        assert_eq!(sc.kind, sg.kind);
        for (a, b) in [
            (&sg.moment1, &sc.moment1),
            (&sg.moment2, &sc.moment2),
            (&sg.velocity, &sc.velocity),
        ] {
            assert!(
                b.is_empty() || rel_norm(a, b) < 1e-3,
                "{}: optimiser state",
                case.name
            );
            assert_eq!(a.len(), b.len(), "{}: optimiser state length", case.name);
        }
    }
    assert!(
        std::fs::read_dir(&cache).unwrap().any(|e| e
            .unwrap()
            .path()
            .extension()
            .is_some_and(|x| x == "ptx")),
        "compiled kernels are cached in the directory asked for"
    );
}

#[test]
fn fused_steps_with_and_without_graphs_follow_the_cpu() {
    if !gpu_or_skip("fused_steps_with_and_without_graphs_follow_the_cpu") {
        return;
    }
    let cache = cache_dir("fused");
    for case in cases() {
        let mut c = cpu(&case);
        let mut with_graphs = gpu(&case, 11, &options(Precision::F32, &cache));
        let plain_options = GpuOptions {
            graphs: false,
            ..options(Precision::F32, &cache)
        };
        let mut plain = gpu(&case, 11, &plain_options);
        let mut cpu_losses = Vec::new();
        let mut gpu_losses = Vec::new();
        let mut plain_losses = Vec::new();
        for step in 0..30u64 {
            let rows = 200 + (step as usize * 37) % 90;
            let (x, cl, v) = data(&case, rows, 1000 + step);
            let y = targets(&case, &cl, &v);
            let scale = 1.0 / rows as f32;
            let (l, grads) = c.gradients(&x, y, rows, scale).unwrap();
            c.apply(&grads, 0.01).unwrap();
            cpu_losses.push(l);
            gpu_losses.extend(with_graphs.step(&x, y, rows, scale, 0.01).unwrap());
            plain_losses.extend(plain.step(&x, y, rows, scale, 0.01).unwrap());
        }
        gpu_losses.extend(with_graphs.flush().unwrap());
        plain_losses.extend(plain.flush().unwrap());
        assert_eq!(gpu_losses.len(), 30, "{}: one loss per step", case.name);
        assert_eq!(with_graphs.steps(), 30);
        for (i, (a, b)) in gpu_losses.iter().zip(&cpu_losses).enumerate() {
            assert!(
                (a - b).abs() <= 1e-3 * b.abs().max(1.0),
                "{} step {i}: loss gpu {a} cpu {b}",
                case.name
            );
        }
        let pg = with_graphs.try_parameters().unwrap();
        let e = rel_norm(&pg, &c.parameters());
        assert!(
            e < 1e-3,
            "{}: parameters after 30 fused steps differ by {e}",
            case.name
        );
        // The graph replays exactly the launches it captured.
        assert_eq!(
            pg,
            plain.try_parameters().unwrap(),
            "{}: graphs change nothing",
            case.name
        );
        for (a, b) in gpu_losses.iter().zip(&plain_losses) {
            assert!(
                (a - b).abs() <= 1e-9 * b.abs().max(1.0),
                "{}: graph losses {a} vs {b}",
                case.name
            );
        }
    }
}

#[test]
fn a_checkpointed_gpu_replica_continues_exactly() {
    if !gpu_or_skip("a_checkpointed_gpu_replica_continues_exactly") {
        return;
    }
    let cache = cache_dir("ckpt");
    let case = &cases()[0];
    let mut a = gpu(case, 11, &options(Precision::F32, &cache));
    let batches: Vec<_> = (0..12u64).map(|s| data(case, 256, 500 + s)).collect();
    let run = |t: &mut GpuTrainer, range: std::ops::Range<usize>| {
        for (x, cl, v) in &batches[range] {
            t.step(x, targets(case, cl, v), 256, 1.0 / 256.0, 0.01)
                .unwrap();
        }
        t.flush().unwrap();
    };
    run(&mut a, 0..6);
    let params = a.try_parameters().unwrap();
    let state = a.optimizer_state().unwrap();
    run(&mut a, 6..12);
    // A fresh replica (another seed) restored from the checkpoint.
    let mut b = gpu(case, 999, &options(Precision::F32, &cache));
    b.set_parameters(&params).unwrap();
    b.restore_optimizer(state).unwrap();
    run(&mut b, 6..12);
    assert_eq!(a.try_parameters().unwrap(), b.try_parameters().unwrap());
    assert_eq!(a.steps(), b.steps());
}

#[test]
fn bf16_trains_to_the_cpu_accuracy() {
    if !gpu_or_skip("bf16_trains_to_the_cpu_accuracy") {
        return;
    }
    let cache = cache_dir("bf16");
    let model = ModelSpec::mlp([64, 64], Activation::Relu);
    let task = Task::Classification { num_classes: 2 };
    let x = uniform(4096, 24, 3);
    let y = xor_labels(&x, 24);
    let mut c = Trainer::<CpuAutodiff>::new(
        &model,
        &OptimizerSpec::default(),
        Loss::CrossEntropy,
        &task,
        24,
        5,
        &cpu_device(),
    )
    .unwrap();
    let mut g = GpuTrainer::new(
        &model,
        &OptimizerSpec::default(),
        Loss::CrossEntropy,
        &task,
        24,
        5,
        &options(Precision::Bf16, &cache),
    )
    .unwrap();
    for _ in 0..8 {
        for b in 0..8 {
            let (xs, ys) = (
                &x[b * 512 * 24..(b + 1) * 512 * 24],
                &y[b * 512..(b + 1) * 512],
            );
            let (_, grads) = c
                .gradients(xs, TargetsRef::Classes(ys), 512, 1.0 / 512.0)
                .unwrap();
            c.apply(&grads, 0.01).unwrap();
            g.step(xs, TargetsRef::Classes(ys), 512, 1.0 / 512.0, 0.01)
                .unwrap();
        }
    }
    g.flush().unwrap();
    let acc = |p: &[f32]| super::common::accuracy(p, 2, &y);
    let (ac, ag) = (
        acc(&c.predict(&x, 4096).unwrap()),
        acc(&g.predict(&x, 4096).unwrap()),
    );
    eprintln!("xor accuracy after 64 steps: cpu f32 {ac:.4}, gpu bf16 {ag:.4}");
    assert!(ac > 0.8, "the CPU learns XOR: {ac}");
    assert!((ac - ag).abs() < 0.03, "bf16 accuracy {ag} vs f32 {ac}");
    // Master weights stay f32; bf16 products move them along the same path, roughly.
    let e = rel_norm(&g.try_parameters().unwrap(), &c.parameters());
    assert!(e < 0.3, "bf16 parameters drifted from the f32 ones by {e}");
}

#[test]
fn gpu_serving_matches_the_cpu_predictor() {
    if !gpu_or_skip("gpu_serving_matches_the_cpu_predictor") {
        return;
    }
    let cache = cache_dir("serve");
    let (bundle, _) = super::bundle::trained();
    let cpu = DensePredictor::new(&bundle).unwrap();
    let gpu = GpuPredictor::new(&bundle, &options(Precision::F32, &cache)).unwrap();
    let bf16 = GpuPredictor::new(&bundle, &options(Precision::Bf16, &cache)).unwrap();
    assert_eq!(gpu.output_dim(), cpu.output_dim());
    let dim = cpu.input_dim();
    // Batch sizes as a dynamic batcher makes them, growing past the first capacity.
    for rows in [1usize, 7, 64, 256, 257, 1000, 3] {
        let x = uniform(rows, dim, rows as u64);
        let want = cpu.predict(&x, rows).unwrap();
        let got = gpu.predict(&x, rows).unwrap();
        assert_eq!(got.len(), want.len());
        let e = rel_err(&got, &want, 1e-3);
        assert!(e < 1e-4, "{rows} rows: f32 predictions differ by {e}");
        let e = rel_err(&bf16.predict(&x, rows).unwrap(), &want, 0.05);
        assert!(e < 0.1, "{rows} rows: bf16 predictions differ by {e}");
    }
    assert!(
        gpu.predict(&[1.0], 1)
            .unwrap_err()
            .to_string()
            .contains("expected 1 rows")
    );
}

#[test]
fn bad_targets_are_refused_before_the_gpu_sees_them() {
    if !gpu_or_skip("bad_targets_are_refused_before_the_gpu_sees_them") {
        return;
    }
    let case = &cases()[0];
    let mut g = gpu(case, 11, &options(Precision::F32, &cache_dir("bad")));
    let x = uniform(2, case.dim, 1);
    let err = g
        .step(&x, TargetsRef::Classes(&[0, 7]), 2, 1.0, 0.1)
        .unwrap_err();
    assert!(err.to_string().contains("class 7 at row 1"), "{err}");
    let err = g
        .gradients(&x[..5], TargetsRef::Classes(&[0, 1]), 2, 1.0)
        .unwrap_err();
    assert!(err.to_string().contains("expected 2 rows"), "{err}");
    assert_eq!(g.steps(), 0);
}
