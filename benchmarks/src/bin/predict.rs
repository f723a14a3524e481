//! The predict benchmark: the 2M-row benchmark dataset (shared TABULAR.md, generated into
//! data/bench/train by etl_to_train.toml) scored by the benchmark MLP (data/bench/serve_model),
//! end to end as `millrace predict` runs it (open the model and the dataset, read, SQL, encoding,
//! forward pass, write Parquet with `ts` and `cat` carried, `_SUCCESS`), on 1 and 2 workers from
//! and to local disk; with `--endpoint`, also from and to an S3-compatible server. Prints one
//! JSON line.
//!
//!     cargo run --release -p millrace-benchmarks --bin predict -- [--runs 3] [--endpoint http://127.0.0.1:9000] [--assert]
//!
//! `--assert` fails (exit 1) when 2 workers from local disk score fewer than 1,000,000 rows/s.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use millrace::connectors::storage::StorageOptions;
use millrace::operators::batch_job::NoProgress;
use millrace::operators::predict::{PredictPlan, PredictSpec, PredictSummary, run};
use millrace::operators::spec::OutputMode;
use serde_json::{Value, json};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const GOAL_ROWS_PER_S: f64 = 1_000_000.0;

/// One scoring run; the clock starts before the plan (the model and the footers are read).
fn score(
    model: &Path,
    input: &str,
    output: &str,
    workers: usize,
    storage: &StorageOptions,
) -> anyhow::Result<PredictSummary> {
    let started = Instant::now();
    let mut spec = PredictSpec::new(model, input, output);
    spec.workers = workers;
    spec.columns = vec!["ts".into(), "cat".into()];
    spec.mode = OutputMode::Overwrite;
    spec.storage = storage.clone();
    let plan = PredictPlan::new(spec)?;
    Ok(run(plan, Arc::new(NoProgress), started)?)
}

/// `runs` runs: the best and the median rows/s, and the rows written.
fn measure(
    model: &Path,
    input: &str,
    output: &str,
    workers: usize,
    runs: usize,
    storage: &StorageOptions,
) -> anyhow::Result<Value> {
    let mut rates = Vec::new();
    let mut last = None;
    for _ in 0..runs {
        let summary = score(model, input, output, workers, storage)?;
        rates.push(summary.rows_per_second);
        last = Some(summary);
    }
    let last = last.context("--runs must be at least 1")?;
    rates.sort_by(f64::total_cmp);
    Ok(json!({
        "workers": workers,
        "rows": last.rows_read,
        "written": last.rows_written,
        "dead_letter_rows": last.dead_letter_rows,
        "files": last.files,
        "rows_per_s_best": rates.last().copied().unwrap_or(0.0).round(),
        "rows_per_s_median": rates[rates.len() / 2].round(),
        "runs": runs,
    }))
}

fn main() -> anyhow::Result<()> {
    let mut endpoint = None;
    let mut assert = false;
    let mut runs = 3;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--endpoint" => endpoint = Some(args.next().context("--endpoint needs a URL")?),
            "--runs" => runs = args.next().context("--runs needs a number")?.parse()?,
            "--assert" => assert = true,
            other => bail!("unknown argument '{other}' (use --endpoint URL, --runs N, --assert)"),
        }
    }
    let pipeline = millrace_benchmarks::etl_to_train_toml();
    let (spec, _) = millrace::pipeline_file::load(&pipeline, &[])?;
    millrace::data::prepare(&spec)?;
    let train = spec.ingest.path.to_string_lossy().to_string();
    let model = millrace_benchmarks::bench_model()?;
    let out = PathBuf::from("target/bench-predict");
    let local_out = out.join("predictions").to_string_lossy().to_string();
    let local = StorageOptions::default();

    let one = measure(&model, &train, &local_out, 1, runs, &local)?;
    let two = measure(&model, &train, &local_out, 2, runs, &local)?;
    let s3 = match &endpoint {
        Some(endpoint) => {
            let storage = millrace_benchmarks::s3_bench_bucket(endpoint)?;
            millrace::inspect::copy(&train, "s3://bench/train", &storage)?;
            measure(
                &model,
                "s3://bench/train",
                "s3://bench/predictions",
                2,
                runs,
                &storage,
            )?
        }
        None => Value::Null,
    };
    std::fs::remove_dir_all(&out).ok();
    let rate = two["rows_per_s_median"].as_f64().unwrap_or(0.0);
    let line = json!({
        "benchmark": "predict",
        "model": model.display().to_string(),
        "input": train,
        "carried": ["ts", "cat"],
        "local_1_worker": one,
        "local_2_workers": two,
        "s3_2_workers": s3,
        "goal_rows_per_s": GOAL_ROWS_PER_S,
        "goal_met": rate >= GOAL_ROWS_PER_S,
    });
    println!("{line}");
    if assert && rate < GOAL_ROWS_PER_S {
        bail!("2 workers scored {rate:.0} rows/s, under the goal of {GOAL_ROWS_PER_S:.0}");
    }
    Ok(())
}
