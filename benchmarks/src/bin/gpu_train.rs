//! The gpu_train benchmark (`--features cuda`): training-step throughput on the GPU with the
//! batch already on the device, the start-up cost with a cold and a warm kernel cache, the
//! host-fed step rate, GPU serving, and the end-to-end ETL→train run on the GPU. One JSON line
//! per measurement.
//!
//!     cargo run --release -p millrace-benchmarks --features cuda --bin gpu_train -- \
//!         [--only NAME]… [--start] [--e2e cuda|cpu [--workers N] [--serve-clients C]]
//!         [--seconds S] [--assert]
//!
//! Configurations (Adam, as PyTorch's reference numbers on an H100 of this workplace):
//! `small512` (24→64→64→2, batch 512, f32), `small8192` (same, batch 8,192), `large_bf16`
//! (1024→4096→4096→10, batch 8,192, bf16 products), `host512` (small512 fed from host memory
//! through the pinned double buffer), `serve` (GPU forward passes of 64-row batches).
//! `--e2e DEVICE` runs the etl_to_train pipeline on that device; with `--serve-clients C` its
//! model is then served in-process on the same device (dynamic batching, bundled SQL and
//! encoding) to C concurrent callers of one-row requests.
//! `--assert` fails unless small512 reaches 1M samples/s and large_bf16 540 TFLOP/s
//! (`tflops_6nb`).
//!
//! Two TFLOP/s per configuration, both FLOPs per step divided by the seconds per step:
//! - `tflops_6nb`: 6 · params · batch, the usual convention (forward 2·N·P, backward 4·N·P),
//!   params counting weights and biases. It counts an input gradient for the first layer, which
//!   training never computes (the input needs no gradient), and the bias work.
//! - `tflops_computed`: the matrix products a step computes, for layers of in_i × out_i weights:
//!   2·N·Σ_i in_i·out_i (forward) + 2·N·Σ_i in_i·out_i (weight gradients) + 2·N·Σ_{i≥2}
//!   in_i·out_i (input gradients, every layer but the first). For 1024→4096→4096→10 this is
//!   0.933 of 6·params·batch.

#![cfg_attr(test, allow(clippy::unwrap_used))]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use millrace::ml::gpu::{GpuPredictor, GpuTrainer};
use millrace::ml::model::{Activation, ModelSpec, Task};
use millrace::ml::optim::OptimizerSpec;
use millrace::ml::rng::Rng;
use millrace::ml::trainer::{Loss, TargetsRef};
use millrace::ml::{GpuOptions, Precision};
use millrace_benchmarks::bodies::sample_rows;
use millrace_benchmarks::{etl_to_train_toml, holdout_accuracy, run_pipeline};
use serde_json::json;

struct Config {
    name: &'static str,
    dims: (usize, Vec<usize>, usize),
    batch: usize,
    precision: Precision,
}

fn configs() -> Vec<Config> {
    vec![
        Config {
            name: "small512",
            dims: (24, vec![64, 64], 2),
            batch: 512,
            precision: Precision::F32,
        },
        Config {
            name: "small8192",
            dims: (24, vec![64, 64], 2),
            batch: 8192,
            precision: Precision::F32,
        },
        Config {
            name: "small512_bf16",
            dims: (24, vec![64, 64], 2),
            batch: 512,
            precision: Precision::Bf16,
        },
        Config {
            name: "large_bf16",
            dims: (1024, vec![4096, 4096], 10),
            batch: 8192,
            precision: Precision::Bf16,
        },
    ]
}

/// FLOPs of the matrix products of one training step of an MLP `d_in → hidden… → k` on `batch`
/// rows: forward and weight gradient of every layer, input gradient of every layer but the first.
fn computed_flops((d_in, hidden, k): &(usize, Vec<usize>, usize), batch: usize) -> f64 {
    let widths: Vec<usize> = std::iter::once(*d_in)
        .chain(hidden.iter().copied())
        .chain(std::iter::once(*k))
        .collect();
    let products: Vec<f64> = widths
        .windows(2)
        .map(|w| w[0] as f64 * w[1] as f64)
        .collect();
    let all: f64 = products.iter().sum();
    let but_first: f64 = products.iter().skip(1).sum();
    2.0 * batch as f64 * (2.0 * all + but_first)
}

fn trainer(c: &Config, options: &GpuOptions) -> anyhow::Result<GpuTrainer> {
    let (d_in, hidden, k) = &c.dims;
    let model = ModelSpec::mlp(hidden.clone(), Activation::Relu);
    let task = Task::Classification { num_classes: *k };
    let options = GpuOptions {
        precision: c.precision,
        ..options.clone()
    };
    Ok(GpuTrainer::new(
        &model,
        &OptimizerSpec::default(),
        Loss::CrossEntropy,
        &task,
        *d_in,
        7,
        &options,
    )?)
}

fn batch(c: &Config, seed: u64) -> (Vec<f32>, Vec<i64>) {
    let mut rng = Rng::new(seed);
    let x: Vec<f32> = (0..c.batch * c.dims.0)
        .map(|_| rng.uniform_f32(-1.0, 1.0))
        .collect();
    let y = (0..c.batch)
        .map(|i| ((x[i * c.dims.0] + 1.0) * 0.5 * c.dims.2 as f32) as i64 % c.dims.2 as i64)
        .collect();
    (x, y)
}

/// Steps/s with the batch on the device: a warm-up, then replays for at least `seconds`.
fn device_resident(
    c: &Config,
    options: &GpuOptions,
    seconds: f64,
) -> anyhow::Result<serde_json::Value> {
    let mut t = trainer(c, options)?;
    let (x, y) = batch(c, 1);
    let scale = 1.0 / c.batch as f32;
    t.step(&x, TargetsRef::Classes(&y), c.batch, scale, 1e-3)?;
    t.flush()?;
    let first_loss = t.repeat_last_step(20)?;
    let mut steps = 0usize;
    let mut chunk = 50usize;
    let started = Instant::now();
    let mut loss = first_loss;
    while started.elapsed().as_secs_f64() < seconds {
        loss = t.repeat_last_step(chunk)?;
        steps += chunk;
        chunk = (chunk * 2).min(5000);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut phases = Vec::new();
    for _ in 0..5 {
        phases = t.profile_step()?;
    }
    let phases: serde_json::Map<String, serde_json::Value> = phases
        .into_iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    let per_step = elapsed / steps as f64;
    let params = t.num_params() as f64;
    let flops = 6.0 * params * c.batch as f64;
    let computed = computed_flops(&c.dims, c.batch);
    Ok(json!({
        "benchmark": "gpu_train",
        "config": c.name,
        "gpu": t.device_name(),
        "precision": format!("{:?}", c.precision).to_lowercase(),
        "batch": c.batch,
        "params": t.num_params(),
        "steps": steps,
        "ms_per_step": per_step * 1e3,
        "samples_per_s": (c.batch as f64 / per_step).round(),
        "tflops_6nb": flops / per_step / 1e12,
        "tflops_computed": computed / per_step / 1e12,
        "loss_first": first_loss / c.batch as f64,
        "loss_last": loss / c.batch as f64,
        "phases_ms_unfused_launches": phases,
    }))
}

/// Steps/s fed from host memory: each step's batch is copied from the host while the step
/// before runs (16 different batches in turn, as a data loader would hand them over).
fn host_fed(options: &GpuOptions, seconds: f64) -> anyhow::Result<serde_json::Value> {
    let c = &configs()[0];
    let mut t = trainer(c, options)?;
    let batches: Vec<_> = (0..16).map(|s| batch(c, s)).collect();
    let scale = 1.0 / c.batch as f32;
    let mut steps = 0usize;
    for (x, y) in &batches {
        t.step(x, TargetsRef::Classes(y), c.batch, scale, 1e-3)?;
    }
    t.flush()?;
    let started = Instant::now();
    while started.elapsed().as_secs_f64() < seconds {
        let (x, y) = &batches[steps % batches.len()];
        t.step(x, TargetsRef::Classes(y), c.batch, scale, 1e-3)?;
        steps += 1;
    }
    t.flush()?;
    let per_step = started.elapsed().as_secs_f64() / steps as f64;
    Ok(json!({
        "benchmark": "gpu_train",
        "config": "host512",
        "gpu": t.device_name(),
        "batch": c.batch,
        "steps": steps,
        "ms_per_step": per_step * 1e3,
        "samples_per_s": (c.batch as f64 / per_step).round(),
    }))
}

/// Time from process start to the end of the first training step (CUDA start-up, kernels from
/// the cache or NVRTC, cuBLASLt plans, graph capture).
fn start(options: &GpuOptions, process_start: Instant) -> anyhow::Result<serde_json::Value> {
    let dir = millrace::ml::gpu::kernel_cache_dir(options.kernel_cache.as_deref());
    let cached = std::fs::read_dir(&dir)
        .map(|d| d.count() > 0)
        .unwrap_or(false);
    let c = &configs()[0];
    let mut t = trainer(c, options)?;
    let (x, y) = batch(c, 1);
    t.step(
        &x,
        TargetsRef::Classes(&y),
        c.batch,
        1.0 / c.batch as f32,
        1e-3,
    )?;
    t.flush()?;
    Ok(json!({
        "benchmark": "gpu_train",
        "config": "start",
        "kernel_cache": dir,
        "cache_was_warm": cached,
        "start_to_first_step_s": process_start.elapsed().as_secs_f64(),
    }))
}

/// GPU forward passes of `rows`-row batches through a predictor of `c`'s model (the serving
/// path below the batcher: staging, copies, forward pass, softmax, copy back).
fn serve(
    c: &Config,
    rows: usize,
    options: &GpuOptions,
    seconds: f64,
) -> anyhow::Result<serde_json::Value> {
    let options = GpuOptions {
        precision: c.precision,
        ..options.clone()
    };
    let t = trainer(c, &options)?;
    let bundle = millrace::ml::ModelBundle {
        model: (&ModelSpec::mlp(c.dims.1.clone(), Activation::Relu)).into(),
        task: Task::Classification {
            num_classes: c.dims.2,
        },
        preprocess: identity_preprocess(c.dims.0)?,
        weights: t.try_parameters()?,
        meta: millrace::ml::BundleMeta {
            name: "bench".into(),
            version: 1,
            created_at: String::new(),
            transform_sql: None,
            extra: json!({}),
        },
    };
    drop(t);
    let p = GpuPredictor::new(&bundle, &options)?;
    let mut rng = Rng::new(3);
    let x: Vec<f32> = (0..rows * c.dims.0)
        .map(|_| rng.uniform_f32(-1.0, 1.0))
        .collect();
    p.predict(&x, rows)?;
    let started = Instant::now();
    let mut calls = 0usize;
    while started.elapsed().as_secs_f64() < seconds {
        p.predict(&x, rows)?;
        calls += 1;
    }
    let per_call = started.elapsed().as_secs_f64() / calls as f64;
    Ok(json!({
        "benchmark": "gpu_train",
        "config": format!("serve_{}_rows{rows}", c.name),
        "gpu": p.device_name(),
        "batches": calls,
        "us_per_batch": per_call * 1e6,
        "rows_per_s": (rows as f64 / per_call).round(),
    }))
}

/// A fitted preprocessor that passes `dim` float columns through (for a bundle built by hand).
fn identity_preprocess(dim: usize) -> anyhow::Result<millrace::ml::FittedPreprocessor> {
    use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch};
    let mut columns: Vec<(String, ArrayRef)> = (0..dim)
        .map(|i| {
            (
                format!("f{i}"),
                Arc::new(Float64Array::from(vec![0.0, 1.0])) as ArrayRef,
            )
        })
        .collect();
    columns.push((
        "y".into(),
        Arc::new(Int64Array::from(vec![0, 1])) as ArrayRef,
    ));
    let batch = RecordBatch::try_from_iter(columns)?;
    let spec = millrace::ml::FeatureSpec {
        numeric: (0..dim).map(|i| format!("f{i}")).collect(),
        label: "y".into(),
        ..Default::default()
    };
    let mut state = millrace::ml::FitState::new(&spec, millrace::ml::LabelKind::Classification);
    state.update(&batch)?;
    Ok(state.finish()?)
}

/// The etl_to_train pipeline with `train.device = device`; the run directory (with `model/`)
/// is left for the caller.
fn e2e(device: &str, workers: usize) -> anyhow::Result<(serde_json::Value, PathBuf)> {
    let run_dir = std::env::temp_dir().join(format!(
        "millrace-bench-gpu-e2e-{device}-{}",
        std::process::id()
    ));
    let overrides = vec![format!("train.device={device}")];
    let s = run_pipeline(&etl_to_train_toml(), &overrides, workers, &run_dir)?;
    let accuracy = holdout_accuracy(&s);
    Ok((
        json!({
            "benchmark": "gpu_train",
            "config": "e2e_etl_to_train",
            "device": device,
            "workers": workers,
            "rows_trained": s.rows_trained,
            "e2e_rows_per_s": s.e2e_rows_per_s.round(),
            "train_rows_per_s": s.train_rows_per_s.round(),
            "ingest_s": s.ingest_s,
            "train_s": s.train_s,
            "wall_s": s.wall_s,
            "phases": s.phases,
            "holdout_accuracy": accuracy,
        }),
        run_dir,
    ))
}

/// The model of `run_dir` served in-process on `device` through the dynamic batcher and the
/// bundled preprocessing: `clients` concurrent callers, each sending one-row requests of real
/// holdout rows for `seconds`.
fn served(
    run_dir: &std::path::Path,
    device: &str,
    clients: usize,
    seconds: f64,
) -> anyhow::Result<serde_json::Value> {
    use millrace::operators::serve::{BatcherOptions, ForwardDevice, ServedModel};
    let bundle = millrace::ml::ModelBundle::load(&run_dir.join("model"))?;
    let forward = ForwardDevice {
        device: device.parse().map_err(anyhow::Error::msg)?,
        ..ForwardDevice::default()
    };
    // Two inference threads: on the GPU each has its own stream (GpuOptions::streams = 2), so
    // one batch is staged while the other runs.
    let batching = BatcherOptions {
        max_batch_rows: 256,
        threads: 2,
        ..BatcherOptions::default()
    };
    let model = Arc::new(ServedModel::on_device(
        bundle,
        "bench".into(),
        1,
        batching,
        &forward,
    )?);
    let rows = sample_rows(model.input_schema(), 256, run_dir)?;
    let requests: Vec<_> = (0..rows.num_rows()).map(|i| rows.slice(i, 1)).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()?;
    let before = model.batcher_stats();
    let started = Instant::now();
    let answered: usize = runtime.block_on(async {
        let mut tasks = Vec::new();
        for c in 0..clients {
            let model = model.clone();
            let requests = requests.clone();
            tasks.push(tokio::spawn(async move {
                let mut n = 0usize;
                while started.elapsed().as_secs_f64() < seconds {
                    let p = model
                        .predict_batch(requests[(c + n) % requests.len()].clone())
                        .await;
                    if p.is_ok_and(|p| p.rows == 1) {
                        n += 1;
                    }
                }
                n
            }));
        }
        let mut total = 0;
        for t in tasks {
            total += t.await.unwrap_or(0);
        }
        total
    });
    let elapsed = started.elapsed().as_secs_f64();
    let after = model.batcher_stats();
    let batches = (after.batches - before.batches).max(1);
    Ok(json!({
        "benchmark": "gpu_train",
        "config": "served_single_row",
        "device": device,
        "clients": clients,
        "requests_per_s": (answered as f64 / elapsed).round(),
        "mean_batch_rows": (after.batched_rows - before.batched_rows) as f64 / batches as f64,
    }))
}

fn main() -> anyhow::Result<()> {
    let process_start = Instant::now();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut only: Vec<String> = Vec::new();
    let (mut start_only, mut e2e_device, mut workers, mut seconds, mut assert) =
        (false, None, 1, 2.0, false);
    let mut options = GpuOptions::default();
    let mut serve_clients = 0usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--only" => only.push(args.next().context("--only needs a configuration name")?),
            "--start" => start_only = true,
            "--e2e" => e2e_device = Some(args.next().context("--e2e needs cuda or cpu")?),
            "--workers" => workers = args.next().context("--workers needs a number")?.parse()?,
            "--serve-clients" => {
                serve_clients = args
                    .next()
                    .context("--serve-clients needs a number")?
                    .parse()?
            }
            "--seconds" => seconds = args.next().context("--seconds needs a number")?.parse()?,
            "--kernel-cache" => {
                options.kernel_cache = Some(
                    args.next()
                        .context("--kernel-cache needs a directory")?
                        .into(),
                )
            }
            "--no-graphs" => options.graphs = false,
            "--assert" => assert = true,
            other => bail!(
                "unknown argument '{other}' (use --only NAME, --start, --e2e cuda|cpu, --workers N, --seconds S, --kernel-cache DIR, --no-graphs, --assert)"
            ),
        }
    }
    if start_only {
        println!("{}", start(&options, process_start)?);
        return Ok(());
    }
    if let Some(device) = e2e_device {
        let (line, run_dir) = e2e(&device, workers)?;
        println!("{line}");
        if serve_clients > 0 {
            println!("{}", served(&run_dir, &device, serve_clients, seconds)?);
        }
        std::fs::remove_dir_all(&run_dir).ok();
        return Ok(());
    }
    let wanted = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    let mut failures = Vec::new();
    for c in configs() {
        if !wanted(c.name) {
            continue;
        }
        let line = device_resident(&c, &options, seconds)?;
        println!("{line}");
        if assert {
            if c.name == "small512" && line["samples_per_s"].as_f64().unwrap_or(0.0) < 1e6 {
                failures.push(format!(
                    "small512: {} samples/s < 1M",
                    line["samples_per_s"]
                ));
            }
            if c.name == "large_bf16" && line["tflops_6nb"].as_f64().unwrap_or(0.0) < 540.0 {
                failures.push(format!(
                    "large_bf16: {:.0} TFLOP/s < 540",
                    line["tflops_6nb"].as_f64().unwrap_or(0.0)
                ));
            }
        }
    }
    if wanted("host512") {
        println!("{}", host_fed(&options, seconds)?);
    }
    if wanted("serve") {
        let all = configs();
        println!("{}", serve(&all[0], 64, &options, seconds)?);
        println!("{}", serve(&all[3], 1024, &options, seconds)?);
    }
    if !failures.is_empty() {
        bail!("below the goals: {}", failures.join("; "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn computed_flops_skip_the_first_layers_input_gradient() {
        // 1024→4096→4096→10: products of 4,194,304 + 16,777,216 + 40,960 weights.
        let large = (1024, vec![4096, 4096], 10);
        assert_eq!(computed_flops(&large, 8192), 964_085_940_224.0);
        let params = 21_012_480.0 + 4096.0 + 4096.0 + 10.0;
        let ratio = computed_flops(&large, 1) / (6.0 * params);
        assert!((ratio - 0.9331).abs() < 1e-4, "{ratio}");
        // 2 → 3 → 1: forward 2·(6 + 3), weight gradients 2·(6 + 3), input gradient 2·3.
        assert_eq!(computed_flops(&(2, vec![3], 1), 1), 42.0);
    }
}
