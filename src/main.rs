//! The `millrace` command line: run pipelines, serve models, generate datasets.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use millrace::engine::ClusterConfig;
use millrace::operators::serve::{ServeOptions, ServedModel, serve};
use millrace::progress::CliProgress;
use millrace::run::{RunConfig, plan, run_planned};

/// millrace: a dataflow engine for AI applications.
#[derive(Parser)]
#[command(name = "millrace", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline file: ingest → preprocess → train → evaluate (→ serve).
    Run {
        /// The pipeline file (TOML).
        pipeline: PathBuf,
        /// Worker threads.
        #[arg(long, default_value_t = 1)]
        workers: usize,
        /// Run directory (default: runs/<name>-<timestamp>).
        #[arg(long)]
        run_dir: Option<PathBuf>,
        /// Override a pipeline key: --set train.lr=0.01 (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
        /// Do not serve the model even if the pipeline has a [serve] section.
        #[arg(long)]
        no_serve: bool,
    },
    /// Serve a trained model directory over HTTP.
    Serve {
        /// The model directory (a run's model/).
        #[arg(long)]
        model: PathBuf,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: SocketAddr,
        /// Most instances per request.
        #[arg(long, default_value_t = 10_000)]
        max_rows: usize,
    },
    /// Generate a dataset.
    Gen {
        #[command(subcommand)]
        dataset: GenCommand,
    },
}

#[derive(Subcommand)]
enum GenCommand {
    /// The synthetic tabular benchmark dataset (f0..f15, cat, ts, label).
    Tabular {
        /// Rows.
        #[arg(long, default_value_t = 2_000_000)]
        rows: u64,
        /// Parquet files.
        #[arg(long, default_value_t = 8)]
        files: usize,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// The holdout variant (timestamps from 2025-01-01).
        #[arg(long)]
        holdout: bool,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve_blocking(
    model: ServedModel,
    addr: SocketAddr,
    options: ServeOptions,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(serve(model, addr, options, |local| {
        eprintln!("serving on http://{local} (POST /v1/predict, GET /healthz); Ctrl-C stops");
        if local.ip().is_loopback() {
            eprintln!("bound to a loopback address: only this machine can connect (use --addr 0.0.0.0:PORT to listen on all interfaces)");
        }
    }))?;
    Ok(())
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run {
            pipeline,
            workers,
            run_dir,
            overrides,
            no_serve,
        } => {
            let (spec, text) = millrace::pipeline_file::load(&pipeline, &overrides)?;
            spec.validate()
                .map_err(|e| anyhow::anyhow!("{}", located(&pipeline, &text, e)))?;
            millrace::data::prepare(&spec)?;
            let serve_spec = spec.serve.clone();
            let planned = plan(spec, Some((&pipeline, &text)))?;
            let config = RunConfig {
                cluster: ClusterConfig::local(workers),
                run_dir,
                progress: Arc::new(CliProgress::new()),
            };
            let (summary, run_dir) = run_planned(planned, Some(&text), config)?;
            println!("run directory: {}", run_dir.display());
            println!(
                "rows read {} | trained {} | dead-lettered {} | {:.1}s | {:.0} rows/s end to end | {:.0} rows/s training",
                summary.rows_read,
                summary.rows_trained,
                summary.rows_dead_lettered,
                summary.wall_s,
                summary.e2e_rows_per_s,
                summary.train_rows_per_s
            );
            if let Some(eval) = &summary.eval {
                println!("eval: {}", serde_json::to_string(eval)?);
            }
            if let (Some(serve_spec), false) = (serve_spec, no_serve) {
                let model = ServedModel::load(&run_dir.join("model"))?;
                serve_blocking(
                    model,
                    serve_spec.addr,
                    ServeOptions {
                        max_rows: serve_spec.max_rows,
                        ..ServeOptions::default()
                    },
                )?;
            }
            Ok(())
        }
        Command::Serve {
            model,
            addr,
            max_rows,
        } => {
            let loaded = ServedModel::load(&model)
                .with_context(|| format!("cannot load the model in {}", model.display()))?;
            serve_blocking(
                loaded,
                addr,
                ServeOptions {
                    max_rows,
                    ..ServeOptions::default()
                },
            )
        }
        Command::Gen {
            dataset:
                GenCommand::Tabular {
                    rows,
                    files,
                    out,
                    seed,
                    holdout,
                },
        } => {
            let started = std::time::Instant::now();
            let report = millrace::data::generate_tabular(&out, rows, files, seed, holdout)?;
            println!(
                "wrote {} rows in {} files to {} in {:.1}s (label=1: {:.3}, f3 nulls: {})",
                report.rows,
                report.files.len(),
                out.display(),
                started.elapsed().as_secs_f64(),
                report.positives as f64 / report.rows.max(1) as f64,
                report.nulls_f3
            );
            Ok(())
        }
    }
}

fn located(path: &std::path::Path, text: &str, e: millrace::operators::Error) -> String {
    if let millrace::operators::Error::Config { key, .. } = &e
        && let Some((line, col)) = millrace::pipeline_file::locate_key(text, key)
    {
        return format!("{}:{line}:{col}: {e}", path.display());
    }
    e.to_string()
}
