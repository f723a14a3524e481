//! The s3_scan benchmark: the 2M-row benchmark dataset (shared TABULAR.md, generated into
//! data/bench/train by etl_to_train.toml) read from a local S3-compatible server with 1 and 2
//! workers, next to the same read from local disk; then the ETL→train run from S3 against the
//! same run from disk. Prints one JSON line.
//!
//!     scripts/s3-server.sh start 9000
//!     cargo run --release -p millrace-benchmarks --bin s3_scan -- [--endpoint http://127.0.0.1:9000] [--assert]
//!
//! `--assert` fails (exit 1) when ETL→train from S3 is more than 10% slower end to end than from disk.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use millrace::connectors::parquet::{DatasetOptions, ParquetDataset, ScanOptions};
use millrace::connectors::storage::StorageOptions;
use millrace::engine::ClusterConfig;
use millrace::operators::batch_job::{NoProgress, Summary};
use millrace::run::{RunConfig, plan, run_planned};
use serde_json::{Value, json};

/// Reads every row and column with `workers` threads; returns (seconds, rows).
fn scan(dataset: &ParquetDataset, workers: usize) -> anyhow::Result<(f64, u64)> {
    let started = Instant::now();
    let rows: anyhow::Result<Vec<u64>> = std::thread::scope(|scope| {
        let handles: Vec<_> = dataset
            .plan(workers)
            .into_iter()
            .map(|units| {
                scope.spawn(move || -> anyhow::Result<u64> {
                    let mut rows = 0;
                    for unit in &units {
                        for item in dataset.read_unit(unit, &ScanOptions::default())? {
                            rows += item?.1.num_rows() as u64;
                        }
                    }
                    Ok(rows)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| anyhow::anyhow!("scan thread panicked"))?
            })
            .collect()
    });
    Ok((started.elapsed().as_secs_f64(), rows?.iter().sum()))
}

/// The best of `runs` scans (the first warms the page cache or the server).
fn best_scan(dataset: &ParquetDataset, workers: usize, runs: usize) -> anyhow::Result<Value> {
    let mut best = f64::INFINITY;
    let mut rows = 0;
    for _ in 0..runs {
        let (s, r) = scan(dataset, workers)?;
        best = best.min(s);
        rows = r;
    }
    Ok(json!({
        "workers": workers,
        "rows": rows,
        "seconds": (best * 1000.0).round() / 1000.0,
        "rows_per_s": (rows as f64 / best).round(),
        "mb_per_s": ((dataset.num_bytes() as f64 / 1e6 / best) * 10.0).round() / 10.0,
    }))
}

/// The etl_to_train run on `ingest` and `holdout`; its clock starts here, so listing the dataset
/// and reading its footers (on S3: requests) count.
fn etl_to_train(ingest: &str, holdout: &str, storage: &StorageOptions) -> anyhow::Result<Summary> {
    let started = Instant::now();
    let pipeline = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/etl_to_train.toml"));
    let (mut spec, text) = millrace::pipeline_file::load(&pipeline, &[])?;
    spec.ingest.path = ingest.into();
    spec.ingest.generate = None;
    spec.evaluate.path = Some(holdout.into());
    spec.evaluate.generate = None;
    spec.storage = storage.clone();
    let planned = plan(spec, Some((&pipeline, &text)))?;
    let run_dir = std::env::temp_dir().join(format!("millrace-bench-s3-{}", std::process::id()));
    let config = RunConfig {
        cluster: ClusterConfig::local(2),
        run_dir: Some(run_dir.clone()),
        progress: Arc::new(NoProgress),
        resume: false,
        started: Some(started),
    };
    let (summary, _) = run_planned(planned, Some(&text), config)?;
    std::fs::remove_dir_all(&run_dir).ok();
    Ok(summary)
}

fn main() -> anyhow::Result<()> {
    let mut endpoint = std::env::var("MILLRACE_S3_ENDPOINT")
        .unwrap_or_else(|_| "http://127.0.0.1:9000".to_string());
    let mut assert = false;
    let mut runs = 3;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--endpoint" => endpoint = args.next().context("--endpoint needs a URL")?,
            "--runs" => runs = args.next().context("--runs needs a number")?.parse()?,
            "--assert" => assert = true,
            other => bail!("unknown argument '{other}' (use --endpoint URL, --runs N, --assert)"),
        }
    }
    // The benchmark dataset, generated as etl_to_train.toml describes it.
    let pipeline = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/etl_to_train.toml"));
    let (spec, _) = millrace::pipeline_file::load(&pipeline, &[])?;
    millrace::data::prepare(&spec)?;
    let train = spec.ingest.path.to_string_lossy().to_string();
    let holdout = spec
        .evaluate
        .path
        .as_ref()
        .context("etl_to_train.toml has no holdout")?
        .to_string_lossy()
        .to_string();

    let storage = millrace_benchmarks::s3_bench_bucket(&endpoint)?;
    let started = Instant::now();
    let uploaded = millrace::inspect::copy(&train, "s3://bench/train", &storage)?;
    let upload_s = started.elapsed().as_secs_f64();
    millrace::inspect::copy(&holdout, "s3://bench/holdout", &storage)?;

    let local = ParquetDataset::open(&train)?;
    let started = Instant::now();
    let remote = ParquetDataset::open_with(
        "s3://bench/train",
        &DatasetOptions {
            storage: storage.clone(),
            ..DatasetOptions::default()
        },
    )?;
    let open_s = started.elapsed().as_secs_f64();

    let mut scans = Vec::new();
    for workers in [1, 2] {
        scans.push(json!({
            "local": best_scan(&local, workers, runs)?,
            "s3": best_scan(&remote, workers, runs)?,
        }));
    }
    let from_disk = etl_to_train(&train, &holdout, &storage)?;
    let from_s3 = etl_to_train("s3://bench/train", "s3://bench/holdout", &storage)?;
    let loss = 1.0 - from_s3.e2e_rows_per_s / from_disk.e2e_rows_per_s;
    let line = json!({
        "benchmark": "s3_scan",
        "server": "moto (in memory, loopback)",
        "dataset_mb": (local.num_bytes() as f64 / 1e6 * 10.0).round() / 10.0,
        "files": local.files().len(),
        "row_groups": local.num_row_groups(),
        "upload_mb_per_s": ((uploaded.bytes as f64 / 1e6 / upload_s) * 10.0).round() / 10.0,
        "s3_open_s": (open_s * 1000.0).round() / 1000.0,
        "scan": scans,
        "etl_to_train": {
            "local_e2e_rows_per_s": from_disk.e2e_rows_per_s.round(),
            "s3_e2e_rows_per_s": from_s3.e2e_rows_per_s.round(),
            "local_ingest_s": from_disk.ingest_s,
            "s3_ingest_s": from_s3.ingest_s,
            "local_wall_s": from_disk.wall_s,
            "s3_wall_s": from_s3.wall_s,
            "local_phases": from_disk.phases,
            "s3_phases": from_s3.phases,
            "s3_loss": (loss * 1000.0).round() / 1000.0,
            "same_model": from_disk.parameter_checksum == from_s3.parameter_checksum,
        },
    });
    println!("{line}");
    if assert {
        if loss > 0.10 {
            bail!(
                "ETL→train from S3 is {:.1}% slower than from disk (goal: at most 10%)",
                loss * 100.0
            );
        }
        if from_disk.parameter_checksum != from_s3.parameter_checksum {
            bail!("the model trained from S3 differs from the one trained from disk");
        }
    }
    Ok(())
}
