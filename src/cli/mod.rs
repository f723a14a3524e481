//! The `millrace` command line: run pipelines, serve models, generate datasets. The `millrace`
//! binary is [`App`](crate::App) with the built-in models; a user's binary is the same CLI with
//! its own models and losses registered.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use crate::operators::serve::access::{exposure_refused, is_loopback, read_token_file};
use crate::operators::serve::tls::TlsFiles;
use crate::operators::serve::{BatcherOptions, ModelRegistry, ServeOptions, serve};
use anyhow::Context;
use clap::{Parser, Subcommand};

mod commands;
mod predict;
mod ui;

/// millrace: a dataflow engine for AI applications.
#[derive(Parser)]
#[command(name = "millrace", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline file: ingest → preprocess → train → evaluate (→ serve); one process of a
    /// cluster with --processes/--process-id/--hosts.
    Run(commands::RunArgs),
    /// Run a pipeline's [tune] section: trials drawn from a search space over [train] keys
    /// train side by side on the data read once; ASHA or the median rule stops weak ones early;
    /// the best trial's model is best/model (as `run` does with the same file).
    Tune(commands::RunArgs),
    /// Check a pipeline file without running it: parse it, read the schemas it needs (a dataset
    /// the pipeline generates is made first, as run does), plan its SQL and its features, check the
    /// model; print what it will train on.
    Check(commands::CheckArgs),
    /// Start every process of a cluster on this machine (loopback ports) and supervise them:
    /// if one fails, the others are stopped, and with --restarts all are restarted with --resume.
    Cluster(commands::ClusterRunArgs),
    /// Score a dataset with a trained model: its SQL, fitted encoding and forward pass over
    /// every row (as the server answers a request), into Parquet part files with _SUCCESS; rows
    /// it cannot score go to OUTPUT/_dead_letters/ with the reason.
    Predict(predict::PredictArgs),
    /// Serve the dashboard (a web UI at /ui) over run directories: runs, their training curves,
    /// operators, dead letters, checkpoints, trials and versions.
    Ui(ui::UiArgs),
    /// Serve models over HTTP: the Open Inference Protocol (KServe v2), /v1/predict, /metrics.
    Serve(ServeArgs),
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
    /// Send a Parquet dataset's rows to a Kafka topic as JSON records (to feed a streaming
    /// pipeline, e.g. with the rows of `millrace gen tabular`).
    Produce {
        /// The dataset: a Parquet file or directory.
        path: PathBuf,
        /// Kafka bootstrap servers.
        #[arg(long, default_value = "127.0.0.1:9092")]
        bootstrap_servers: String,
        /// The topic.
        #[arg(long)]
        topic: String,
        /// Create the topic with this many partitions first (an existing topic is kept).
        #[arg(long)]
        partitions: Option<i32>,
        /// Use this column's value as the message key.
        #[arg(long)]
        key: Option<String>,
        /// Send at most this many records.
        #[arg(long)]
        limit: Option<u64>,
    },
    /// Generate a dataset.
    Gen {
        #[command(subcommand)]
        dataset: GenCommand,
    },
    /// MLflow tracking of runs ([tracking] in the pipeline).
    Track {
        #[command(subcommand)]
        action: TrackCommand,
    },
}

#[derive(clap::Subcommand)]
enum TrackCommand {
    /// Send what a run directory's tracking spool (tracking.json) has not recorded yet: after
    /// the tracking server was away at the end of the run. Nothing is logged twice.
    Push {
        /// The run directory.
        run_dir: PathBuf,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// A model: DIR (a run's model/, or numbered version directories), or NAME=DIR. Repeatable.
    #[arg(long = "model", value_name = "[NAME=]DIR")]
    models: Vec<String>,
    /// A model repository: every subdirectory is a model named after it.
    #[arg(long)]
    model_repository: Option<PathBuf>,
    /// Address to listen on. Only this machine can reach the default; a non-loopback address
    /// (e.g. 0.0.0.0:8080) needs --auth-token-file, or --allow-unauthenticated to serve it open.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// The dashboard at /ui also shows these runs (a directory of run directories, e.g. runs/).
    #[arg(long)]
    runs: Option<PathBuf>,
    /// Also serve the KServe v2 gRPC protocol (`inference.GRPCInferenceService`) here, e.g.
    /// 127.0.0.1:8081; same models, limits, token and metrics as HTTP.
    #[arg(long)]
    grpc_addr: Option<SocketAddr>,
    /// Require `Authorization: Bearer <token>`, the token read from this file.
    #[arg(long)]
    auth_token_file: Option<PathBuf>,
    /// Serve a non-loopback --addr without --auth-token-file (refused otherwise): anyone who can
    /// reach the address can use the models.
    #[arg(long)]
    allow_unauthenticated: bool,
    /// Serve HTTPS (and gRPC over TLS with --grpc-addr) with this PEM certificate chain (needs --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Most rows per request (413 beyond).
    #[arg(long, default_value_t = 10_000)]
    max_rows: usize,
    /// Largest request body in bytes (413 beyond).
    #[arg(long, default_value_t = 16 * 1024 * 1024)]
    max_body_bytes: usize,
    /// Requests in flight at once (503 + Retry-After beyond).
    #[arg(long, default_value_t = 4096)]
    max_concurrent: usize,
    /// Seconds before a request is answered 504.
    #[arg(long, default_value_t = 30.0)]
    timeout_s: f64,
    /// Dynamic batching: most rows per forward pass.
    #[arg(long, default_value_t = 64)]
    max_batch_rows: usize,
    /// Dynamic batching: longest wait for more requests, in microseconds (0: take what is queued
    /// when the inference thread is free, which batches under load without adding latency).
    #[arg(long, default_value_t = 0)]
    max_wait_us: u64,
    /// Rows queued per model before 503 + Retry-After.
    #[arg(long, default_value_t = 8192)]
    max_queue_rows: usize,
    /// Inference threads per model version (default: half the cores, at least 1).
    #[arg(long)]
    infer_threads: Option<usize>,
    /// Threads of the HTTP runtime (default: the cores the inference threads leave, at least 1,
    /// so the server uses one thread per core in all).
    #[arg(long)]
    io_threads: Option<usize>,
    /// Log every request (tracing target crate::access).
    #[arg(long)]
    access_log: bool,
    /// Do not watch the model directories for new versions.
    #[arg(long)]
    no_watch: bool,
    /// Where the forward pass runs: cpu, cuda or cuda:N (a GPU needs a build with
    /// `--features cuda`).
    #[arg(long, default_value = "cpu")]
    device: crate::ml::Device,
    /// Precision of a GPU's matrix products: f32 or bf16 (bf16 needs a GPU).
    #[arg(long, default_value = "f32", value_parser = parse_precision)]
    precision: crate::ml::Precision,
    /// Where compiled GPU kernels are cached (default: $MILLRACE_KERNEL_CACHE, else
    /// ~/.cache/millrace/kernels).
    #[arg(long)]
    kernel_cache: Option<std::path::PathBuf>,
}

fn parse_precision(text: &str) -> Result<crate::ml::Precision, String> {
    match text {
        "f32" => Ok(crate::ml::Precision::F32),
        "bf16" => Ok(crate::ml::Precision::Bf16),
        other => Err(format!("unknown precision `{other}`: use f32 or bf16")),
    }
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
    fn options(&self) -> crate::connectors::storage::StorageOptions {
        crate::connectors::storage::StorageOptions {
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
        /// Add an `entity` column naming one of this many entities, each with its own effect on
        /// the label (for embedding models); 0: none. Use the same number for train and holdout.
        #[arg(long, default_value_t = 0)]
        entities: u64,
    },
}

/// Parses the command line and runs it: the body of [`App::main`](crate::App::main).
pub(crate) fn main() -> ExitCode {
    // The clock of `millrace run` (wall_s, the plan phase): the user has been waiting since now.
    let started = std::time::Instant::now();
    // A second App in one process (tests) keeps the first subscriber.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    match run(Cli::parse(), started) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn serve_blocking(
    registry: Arc<ModelRegistry>,
    addr: SocketAddr,
    options: ServeOptions,
    io_threads: usize,
) -> anyhow::Result<()> {
    let authenticated = options.auth_token.is_some();
    let scheme = if options.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(io_threads.max(1)).enable_all();
    let runtime = crate::operators::serve::configure_runtime(&mut builder)
        .build()
        .context("cannot start the tokio runtime")?;
    let names = registry.names();
    runtime.block_on(serve(registry, addr, options, |bound| {
        let local = bound.http;
        eprintln!(
            "serving {} on {scheme}://{local} (POST /v2/models/NAME/infer, /v1/predict; GET /v2/models/NAME, /metrics); Ctrl-C or SIGTERM drains and stops",
            names.join(", ")
        );
        if let Some(grpc) = bound.grpc {
            eprintln!("serving gRPC (inference.GRPCInferenceService) on {grpc}");
        }
        if !authenticated {
            eprintln!("no --auth-token-file: requests are not authenticated");
        }
        if authenticated && scheme == "http" && !is_loopback(&local) {
            eprintln!("warning: the bearer token travels in clear text over plain HTTP; serve HTTPS with --tls-cert and --tls-key");
        }
        if is_loopback(&local) {
            eprintln!("bound to a loopback address: only this machine can connect (use --addr 0.0.0.0:PORT to listen on all interfaces)");
        }
    }))?;
    Ok(())
}

/// Checks the flags that decide who can reach the server, before any model is loaded.
fn serve_options(args: &ServeArgs) -> anyhow::Result<ServeOptions> {
    let auth_token = match &args.auth_token_file {
        Some(path) => Some(read_token_file(path).context("--auth-token-file")?),
        None => None,
    };
    if let Some(why) =
        exposure_refused(&args.addr, auth_token.is_some(), args.allow_unauthenticated)
    {
        anyhow::bail!(
            "refusing to serve: {why}.\n\
             Do one of:\n  \
             --auth-token-file FILE     require `Authorization: Bearer <token>` (the token in FILE)\n  \
             --addr 127.0.0.1:{port}    listen on this machine only\n  \
             --allow-unauthenticated    serve it open on purpose",
            port = args.addr.port()
        );
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let files = TlsFiles::new(cert, key);
            files.acceptor().context("--tls-cert/--tls-key")?;
            Some(files)
        }
        _ => None,
    };
    anyhow::ensure!(args.timeout_s > 0.0, "--timeout-s must be positive");
    anyhow::ensure!(
        args.max_batch_rows > 0,
        "--max-batch-rows must be at least 1"
    );
    Ok(ServeOptions {
        max_rows: args.max_rows,
        max_body_bytes: args.max_body_bytes,
        max_concurrent: args.max_concurrent,
        request_timeout: std::time::Duration::from_secs_f64(args.timeout_s),
        auth_token,
        allow_unauthenticated: args.allow_unauthenticated,
        tls,
        access_log: args.access_log,
        batching: BatcherOptions {
            max_batch_rows: args.max_batch_rows,
            max_wait: std::time::Duration::from_micros(args.max_wait_us),
            max_queue_rows: args.max_queue_rows,
            threads: args.infer_threads.unwrap_or((cores() / 2).max(1)),
        },
        watch_interval: (!args.no_watch).then(|| std::time::Duration::from_millis(500)),
        grpc_addr: args.grpc_addr,
        ui_runs: args
            .runs
            .as_ref()
            .map(crate::operators::ui::RunsSource::new),
    })
}

fn load_models(args: &ServeArgs, options: &ServeOptions) -> anyhow::Result<Arc<ModelRegistry>> {
    let device = crate::operators::serve::ForwardDevice {
        device: args.device,
        precision: args.precision,
        kernel_cache: args.kernel_cache.clone(),
    };
    // Before any model is loaded: a clear error for a GPU this build or machine lacks.
    device
        .check("serve")
        .map_err(|e| anyhow::anyhow!("--device {}: {e}", args.device))?;
    let registry = ModelRegistry::on_device(options.batching.clone(), device);
    if let Some(repo) = &args.model_repository {
        registry.load_repository(repo)?;
    }
    for model in &args.models {
        let (name, dir) = match model.split_once('=') {
            Some((name, dir)) if !name.is_empty() => (Some(name), dir),
            _ => (None, model.as_str()),
        };
        registry
            .load_dir(name, std::path::Path::new(dir))
            .with_context(|| format!("cannot load the model in {dir}"))?;
    }
    anyhow::ensure!(
        !registry.names().is_empty(),
        "no model to serve: give --model DIR (repeatable) or --model-repository DIR"
    );
    Ok(registry)
}

/// Runs the command `cli` names; `started` is when the process started.
fn run(cli: Cli, started: std::time::Instant) -> anyhow::Result<()> {
    match cli.command {
        Command::Run(args) => commands::run(args, started),
        Command::Tune(args) => commands::tune(args, started),
        Command::Check(args) => commands::check(args),
        Command::Predict(args) => predict::predict(args, started),
        Command::Ui(args) => ui::ui(args),
        Command::Cluster(args) => commands::cluster(args),
        Command::Serve(args) => {
            let options = serve_options(&args)?;
            let registry = load_models(&args, &options)?;
            let io = args
                .io_threads
                .unwrap_or_else(|| cores().saturating_sub(options.batching.threads).max(1));
            serve_blocking(registry, args.addr, options, io)
        }
        Command::Produce {
            path,
            bootstrap_servers,
            topic,
            partitions,
            key,
            limit,
        } => {
            let options = crate::connectors::kafka::KafkaOptions::new(bootstrap_servers);
            let done = crate::produce::produce(
                &path,
                &options,
                &topic,
                partitions,
                key.as_deref(),
                limit,
            )?;
            println!(
                "sent {} records to {topic} in {:.1}s ({:.0} records/s)",
                done.records,
                done.seconds,
                done.records as f64 / done.seconds.max(1e-9)
            );
            Ok(())
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
            use crate::connectors::parquet::{DatasetFormat, DatasetOptions, PartitionFilter};
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
            let report = crate::inspect::inspect(&url, &options, workers, progress)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.render_text());
            }
            Ok(())
        }
        Command::Cp { src, dst, storage } => {
            let started = std::time::Instant::now();
            let report = crate::inspect::copy(&src, &dst, &storage.options())?;
            println!(
                "copied {} objects, {:.1} MB, from {src} to {dst} in {:.1}s",
                report.objects,
                report.bytes as f64 / 1e6,
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Command::Track {
            action: TrackCommand::Push { run_dir },
        } => {
            let run = crate::tracking::Tracker::push_spooled(&run_dir)?;
            println!("recorded {} in MLflow (run {run})", run_dir.display());
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
                    entities,
                },
        } => {
            let started = std::time::Instant::now();
            let report = crate::data::generate_tabular_with_entities(
                &out, rows, files, seed, holdout, entities,
            )?;
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

fn located(path: &std::path::Path, text: &str, e: crate::operators::Error) -> String {
    crate::pipeline_file::locate_error(path, text, &e)
}
