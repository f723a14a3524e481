//! The scaling benchmark: the etl_to_train workload (`benchmarks/etl_to_train.toml`) on 1 worker
//! thread, 2 threads in one process, and 2 processes × 1 thread over timely's TCP networking on
//! loopback, plus the cost of checkpointing. Runs the release `millrace` binary built next to
//! this one and prints one JSON line.
//!
//!     cargo build --release -p millrace -p millrace-benchmarks --bin millrace --bin scaling
//!     ./target/release/scaling [--set k=v]…
//!
//! Per configuration: rows/s end to end and in the training loop, optimiser steps, milliseconds
//! per step, and the milliseconds worker 0 waited per step for the other workers' gradients
//! (the synchronisation cost: one summed message per worker per step). The checkpoint run adds
//! `[checkpoint] every_steps = 100` to the 2-thread run and reports ms and bytes per checkpoint.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use serde_json::{Value, json};

fn main() -> anyhow::Result<()> {
    let mut overrides = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--set" => overrides.push(args.next().context("--set needs key=value")?),
            other => bail!("unknown argument '{other}' (use --set key=value)"),
        }
    }
    let exe = std::env::current_exe()?.with_file_name("millrace");
    if !exe.exists() {
        bail!(
            "{} is missing: cargo build --release -p millrace --bin millrace",
            exe.display()
        );
    }
    let pipeline = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/etl_to_train.toml"));
    // Generate the data once, before any timing.
    let (spec, _) = millrace::pipeline_file::load(&pipeline, &overrides)?;
    millrace::data::prepare(&spec)?;
    let scratch =
        std::env::temp_dir().join(format!("millrace-bench-scaling-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let with_checkpoints = scratch.join("etl_to_train_ckpt.toml");
    std::fs::write(
        &with_checkpoints,
        format!(
            "{}\n[checkpoint]\ndir = \"{}\"\nevery_steps = 100\nkeep = 3\n",
            std::fs::read_to_string(&pipeline)?,
            scratch.join("checkpoints").display()
        ),
    )?;

    let runs: [(&str, &Path, Vec<&str>); 4] = [
        ("1_thread", &pipeline, vec!["run", "--workers", "1"]),
        ("2_threads", &pipeline, vec!["run", "--workers", "2"]),
        (
            "2_processes_x_1_thread",
            &pipeline,
            vec!["cluster", "--processes", "2", "--workers", "1"],
        ),
        (
            "2_threads_checkpoint_every_100_steps",
            &with_checkpoints,
            vec!["run", "--workers", "2"],
        ),
    ];
    let mut results = serde_json::Map::new();
    for (name, file, args) in runs {
        let run_dir = scratch.join(name);
        let mut command = Command::new(&exe);
        command
            .arg(args[0])
            .arg(file)
            .args(&args[1..])
            .arg("--run-dir")
            .arg(&run_dir)
            .env("RUST_LOG", "warn");
        if args[0] == "run" {
            command.arg("--no-serve");
        }
        for o in &overrides {
            command.args(["--set", o]);
        }
        eprintln!("scaling: {name}");
        let out = command.output()?;
        if !out.status.success() {
            bail!("{name} failed:\n{}", String::from_utf8_lossy(&out.stderr));
        }
        let s: Value =
            serde_json::from_str(&std::fs::read_to_string(run_dir.join("summary.json"))?)?;
        let steps = s["steps"].as_f64().unwrap_or(0.0).max(1.0);
        let train_s = s["train_s"].as_f64().unwrap_or(0.0);
        let mut line = json!({
            "workers": s["workers"],
            "processes": s["processes"],
            "e2e_rows_per_s": s["e2e_rows_per_s"].as_f64().unwrap_or(0.0).round(),
            "train_rows_per_s": s["train_rows_per_s"].as_f64().unwrap_or(0.0).round(),
            "wall_s": s["wall_s"],
            "phases": s["phases"],
            "train_s": s["train_s"],
            "steps": s["steps"],
            "ms_per_step": train_s * 1e3 / steps,
            "sync_ms_per_step": s["sync_ms_per_step"],
            "holdout_accuracy": s["eval"]["accuracy"],
            "parameter_checksum": s["parameter_checksum"],
        });
        if s["checkpoints"]["written"].as_u64().unwrap_or(0) > 0 {
            line["checkpoints_written"] = s["checkpoints"]["written"].clone();
            line["checkpoint_ms"] = s["checkpoints"]["mean_ms"].clone();
            line["checkpoint_mb"] =
                json!(s["checkpoints"]["last_bytes"].as_f64().unwrap_or(0.0) / 1e6);
        }
        results.insert(name.to_string(), line);
    }
    let step = |name: &str| results[name]["ms_per_step"].as_f64().unwrap_or(f64::NAN);
    let line = json!({
        "benchmark": "scaling",
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "runs": results,
        // What the processes pay over threads for the same split of the work, per step.
        "process_overhead_ms_per_step": step("2_processes_x_1_thread") - step("2_threads"),
    });
    println!("{line}");
    std::fs::remove_dir_all(&scratch).ok();
    Ok(())
}
