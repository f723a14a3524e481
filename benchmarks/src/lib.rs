//! What the benchmark binaries share: running the etl_to_train pipeline on this machine, and
//! request bodies made of real rows of the benchmark data.
#![cfg_attr(test, allow(clippy::unwrap_used))]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use millrace::connectors::storage::StorageOptions;
use millrace::engine::ClusterConfig;
use millrace::operators::batch_job::{NoProgress, Summary};
use millrace::run::{RunConfig, plan, run_planned};

pub mod bodies;
pub mod kafka;
pub mod open_loop;
pub mod wrk;

/// `benchmarks/etl_to_train.toml`: next to the sources when built here, else relative to the
/// working directory (a binary copied to another machine, run from a copy of the repository).
pub fn etl_to_train_toml() -> PathBuf {
    let here = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/etl_to_train.toml"));
    if here.exists() {
        here
    } else {
        PathBuf::from("benchmarks/etl_to_train.toml")
    }
}

/// Runs the pipeline file `pipeline` with `overrides` (`key=value`) on `workers` local workers,
/// generating its data first when the file says so, writing the run to `run_dir`. The run's
/// clock (`wall_s`, `phases`) starts at this call, as `millrace run`'s starts with its process:
/// reading the pipeline file and planning count (and generating the data, on a first run).
pub fn run_pipeline(
    pipeline: &Path,
    overrides: &[String],
    workers: usize,
    run_dir: &Path,
) -> anyhow::Result<Summary> {
    let started = Instant::now();
    let (spec, text) = millrace::pipeline_file::load(pipeline, overrides)?;
    millrace::data::prepare(&spec)?;
    let planned = plan(spec, Some((pipeline, &text)))?;
    let config = RunConfig {
        cluster: ClusterConfig::local(workers),
        run_dir: Some(run_dir.to_path_buf()),
        progress: Arc::new(NoProgress),
        resume: false,
        started: Some(started),
    };
    Ok(run_planned(planned, Some(&text), config)?.0)
}

/// The storage settings of the local S3 server at `endpoint` (scripts/s3-server.sh: moto, any
/// credentials), with the bucket `bench` created on it.
pub fn s3_bench_bucket(endpoint: &str) -> anyhow::Result<StorageOptions> {
    let status = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-X", "PUT"])
        .arg(format!("{endpoint}/bench"))
        .status()
        .context("curl is needed to create the bucket")?;
    if !status.success() {
        anyhow::bail!(
            "cannot reach the S3 server at {endpoint}: start it with scripts/s3-server.sh start"
        );
    }
    Ok(StorageOptions {
        endpoint: Some(endpoint.to_string()),
        region: Some("us-east-1".into()),
        access_key_id: Some("test".into()),
        secret_access_key: Some("test".into()),
        ..StorageOptions::default()
    })
}

/// The holdout accuracy a run's evaluation reported, if it has one.
pub fn holdout_accuracy(summary: &Summary) -> Option<f64> {
    summary
        .eval
        .as_ref()
        .and_then(|e| serde_json::to_value(e).ok())
        .and_then(|v| v["accuracy"].as_f64())
}

/// `data/bench/serve_model`: the benchmark MLP (24→64→64→2), trained by etl_to_train.toml on 2
/// workers into that directory on first use.
pub fn bench_model() -> anyhow::Result<PathBuf> {
    let dir = PathBuf::from("data/bench/serve_model");
    if !dir.join("model.json").exists() {
        train_bench_model(&dir)?;
    }
    Ok(dir)
}

fn train_bench_model(dest: &Path) -> anyhow::Result<()> {
    use anyhow::Context;
    let pipeline = etl_to_train_toml();
    eprintln!(
        "training the benchmark model ({}) into {}",
        pipeline.display(),
        dest.display()
    );
    let run_dir = dest.with_file_name(format!("serve_model.run-{}", std::process::id()));
    let moved = run_pipeline(&pipeline, &[], 2, &run_dir).and_then(|_| {
        std::fs::remove_dir_all(dest).ok();
        std::fs::rename(run_dir.join("model"), dest)
            .with_context(|| format!("cannot move the trained model to {}", dest.display()))
    });
    std::fs::remove_dir_all(&run_dir).ok();
    moved
}
