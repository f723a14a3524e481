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
    /// Show a dataset's schema (partition columns included), row count, and per column the null
    /// count, min, max and sum: a Parquet file or directory, Spark output, a Delta table, an S3 prefix.
    Inspect {
        /// A path or URL (s3://bucket/prefix, gs://…, az://…, file://…).
        url: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Threads reading the data.
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// auto (Delta when _delta_log/ exists), parquet or delta.
        #[arg(long, default_value = "auto")]
        format: String,
        /// Partition filter, e.g. "region = 'eu'" (repeatable).
        #[arg(long = "filter")]
        filters: Vec<String>,
        /// Delta table version to read.
        #[arg(long)]
        delta_version: Option<i64>,
        #[command(flatten)]
        storage: StorageArgs,
    },
    /// Copy every object under one path or URL to another (e.g. local Spark output to S3).
    Cp {
        /// Source path or URL.
        src: String,
        /// Destination path or URL.
        dst: String,
        #[command(flatten)]
        storage: StorageArgs,
    },
    /// Generate a dataset.
    Gen {
        #[command(subcommand)]
        dataset: GenCommand,
    },
}

/// Object store settings on the command line (the AWS_* environment and profiles also apply).
#[derive(clap::Args)]
struct StorageArgs {
    /// S3-compatible endpoint, e.g. http://127.0.0.1:9000 (path-style requests).
    #[arg(long)]
    endpoint: Option<String>,
    /// Region.
    #[arg(long)]
    region: Option<String>,
    /// AWS profile of ~/.aws/config and ~/.aws/credentials.
    #[arg(long)]
    profile: Option<String>,
}

impl StorageArgs {
    fn options(&self) -> millrace::connectors::storage::StorageOptions {
        millrace::connectors::storage::StorageOptions {
            endpoint: self.endpoint.clone(),
            region: self.region.clone(),
            profile: self.profile.clone(),
            ..Default::default()
        }
    }
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
        Command::Inspect {
            url,
            json,
            workers,
            format,
            filters,
            delta_version,
            storage,
        } => {
            use millrace::connectors::parquet::{DatasetFormat, DatasetOptions, PartitionFilter};
            let format = match format.as_str() {
                "auto" => DatasetFormat::Auto,
                "parquet" => DatasetFormat::Parquet,
                "delta" => DatasetFormat::Delta,
                other => anyhow::bail!("unknown --format '{other}'; use auto, parquet or delta"),
            };
            let partition_filters = filters
                .iter()
                .map(|f| PartitionFilter::parse(f).map_err(|m| anyhow::anyhow!("--filter: {m}")))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let options = DatasetOptions {
                storage: storage.options(),
                format,
                partition_filters,
                delta_version,
                ..DatasetOptions::default()
            };
            let progress = !json && std::io::IsTerminal::is_terminal(&std::io::stderr());
            let report = millrace::inspect::inspect(&url, &options, workers, progress)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.render_text());
            }
            Ok(())
        }
        Command::Cp { src, dst, storage } => {
            let started = std::time::Instant::now();
            let report = millrace::inspect::copy(&src, &dst, &storage.options())?;
            println!(
                "copied {} objects, {:.1} MB, from {src} to {dst} in {:.1}s",
                report.objects,
                report.bytes as f64 / 1e6,
                started.elapsed().as_secs_f64()
            );
            Ok(())
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
