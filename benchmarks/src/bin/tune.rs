//! The tune benchmark: `benchmarks/tune.toml` (16 trials, learning rate × hidden layers, on the
//! etl_to_train workload, ASHA) against one plain etl_to_train run, run in turn on the same
//! machine; prints one JSON line.
//!
//!     cargo run --release -p millrace-benchmarks --bin tune -- [--workers N] [--pairs K] [--assert]
//!
//! `--assert` fails (exit 1) unless the tune run read the dataset once (2M rows, not 32M), stopped
//! at least half of the trials early, found a model with ≥ 0.905 holdout accuracy, and took at
//! most 4× the wall time of one run.

use std::path::PathBuf;

use anyhow::{Context, bail};
use millrace_benchmarks::{etl_to_train_toml, holdout_accuracy, run_pipeline};
use serde_json::json;

fn tune_toml() -> PathBuf {
    etl_to_train_toml().with_file_name("tune.toml")
}

fn main() -> anyhow::Result<()> {
    let mut workers = 2;
    let mut pairs = 1;
    let mut assert = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--workers" => workers = args.next().context("--workers needs a number")?.parse()?,
            "--pairs" => pairs = args.next().context("--pairs needs a number")?.parse()?,
            "--assert" => assert = true,
            other => bail!("unknown argument '{other}' (use --workers N, --pairs K, --assert)"),
        }
    }
    let scratch = std::env::temp_dir().join(format!("millrace-bench-tune-{}", std::process::id()));
    let (mut single_s, mut tune_s) = (Vec::new(), Vec::new());
    let mut last = None;
    for pair in 0..pairs {
        let single = run_pipeline(
            &etl_to_train_toml(),
            &[],
            workers,
            &scratch.join(format!("single-{pair}")),
        )?;
        single_s.push(single.wall_s);
        let tuned = run_pipeline(
            &tune_toml(),
            &[],
            workers,
            &scratch.join(format!("tune-{pair}")),
        )?;
        tune_s.push(tuned.wall_s);
        last = Some((single, tuned));
    }
    let (single, tuned) = last.context("--pairs must be at least 1")?;
    let tune = tuned
        .tune
        .as_ref()
        .context("the tune run has no tune summary")?;
    let best = holdout_accuracy(&tuned).unwrap_or(f64::NAN);
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let ratios: Vec<f64> = tune_s.iter().zip(&single_s).map(|(t, s)| t / s).collect();
    let ratio = median(&mut ratios.clone());
    let stopped = tune.stopped_early as f64 / tune.trials.len() as f64;
    let line = json!({
        "benchmark": "tune",
        "workers": workers,
        "pairs": pairs,
        "trials": tune.trials.len(),
        "rows_read": tuned.rows_read,
        "stopped_early": tune.stopped_early,
        "stopped_fraction": stopped,
        "reports": tune.reports,
        "epochs_trained": tune.epochs_trained,
        "best_trial": tune.best,
        "best_config": tune.trials.iter().find(|t| t.trial == tune.best).map(|t| &t.config),
        "best_holdout_accuracy": best,
        "single_holdout_accuracy": holdout_accuracy(&single).unwrap_or(f64::NAN),
        "tune_wall_s": tune_s,
        "single_wall_s": single_s,
        "wall_ratio_median": ratio,
        "tune_phases": tuned.phases,
    });
    println!("{line}");
    std::fs::remove_dir_all(&scratch).ok();
    if assert {
        if tuned.rows_read != single.rows_read {
            bail!(
                "the tune run read {} rows, one run reads {}",
                tuned.rows_read,
                single.rows_read
            );
        }
        if stopped < 0.5 {
            bail!(
                "{} of {} trials stopped early, below half",
                tune.stopped_early,
                tune.trials.len()
            );
        }
        if best < 0.905 {
            bail!("best holdout accuracy {best:.4} is below 0.905");
        }
        if ratio > 4.0 {
            bail!("the tune run took {ratio:.2}× one run's wall time, above 4×");
        }
    }
    Ok(())
}
