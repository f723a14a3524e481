//! `millrace run` (one process, or one process of a cluster) and `millrace cluster` (every
//! process of a cluster on this machine).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cluster::{Launch, launch, resolve_hosts, resolve_process_id};
use crate::engine::ClusterConfig;
use crate::operators::serve::{ModelRegistry, ServeOptions};
use crate::progress::CliProgress;
use crate::run::{RunConfig, plan, run_planned};

use super::{cores, located, serve_blocking};

/// Where this process is in a cluster.
#[derive(clap::Args, Clone, Debug)]
pub struct ClusterArgs {
    /// Processes in the cluster, each running --workers threads.
    #[arg(long, default_value_t = 1)]
    processes: usize,
    /// This process's index (0..processes), or `auto`: the ordinal of a Kubernetes pod's host
    /// name (StatefulSet) or JOB_COMPLETION_INDEX (Indexed Job).
    #[arg(long, default_value = "0")]
    process_id: String,
    /// Every process's host:port, in process order: a file with one per line, or a pattern
    /// with {i} (e.g. 'millrace-{i}.millrace-workers:2101').
    #[arg(long)]
    hosts: Option<String>,
    /// Seconds to wait for every process to connect before giving up.
    #[arg(long, default_value_t = 120.0)]
    connect_timeout_s: f64,
}

impl ClusterArgs {
    fn config(&self, workers: usize) -> anyhow::Result<ClusterConfig> {
        let mut config = ClusterConfig::local(workers);
        if !self.connect_timeout_s.is_finite() || self.connect_timeout_s <= 0.0 {
            anyhow::bail!(
                "--connect-timeout-s must be a number of seconds > 0, got {}",
                self.connect_timeout_s
            );
        }
        config.connect_timeout = Duration::from_secs_f64(self.connect_timeout_s);
        config.processes = self.processes;
        if self.processes > 1 {
            let hosts = self.hosts.as_deref().ok_or_else(|| {
                anyhow::anyhow!(
                    "--processes {} needs --hosts: a file of host:port lines or a pattern with {{i}}",
                    self.processes
                )
            })?;
            config.hosts = resolve_hosts(hosts, self.processes)?;
            config.process_id =
                resolve_process_id(&self.process_id, self.processes, &|k| std::env::var(k).ok())?;
        }
        config.validate()?;
        Ok(config)
    }
}

/// `millrace run`.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The pipeline file (TOML).
    pipeline: PathBuf,
    /// Worker threads (per process).
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
    /// Continue from the latest complete checkpoint of the pipeline's [checkpoint] store (start
    /// from the beginning when there is none), on any number of workers and processes.
    #[arg(long)]
    resume: bool,
    /// Serve the dashboard (a web UI at /ui) of this run and the runs beside it on this address
    /// while the job runs, e.g. 127.0.0.1:8090. Without it the dashboard listens on a free
    /// loopback port (its address is printed); a streaming job with [serve] shows it on its
    /// server instead.
    #[arg(long, value_name = "ADDR", conflicts_with = "no_ui")]
    ui: Option<std::net::SocketAddr>,
    /// Do not serve the dashboard while the job runs.
    #[arg(long)]
    no_ui: bool,
    /// Streaming: stop after reading this many records (a backfill, a test).
    #[arg(long)]
    max_records: Option<u64>,
    /// Streaming: stop once no record arrived for this many seconds.
    #[arg(long)]
    idle_timeout_s: Option<f64>,
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// `millrace check`.
#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// The pipeline file (TOML).
    pipeline: PathBuf,
    /// Override a pipeline key: --set train.lr=0.01 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
}

/// `millrace check`: plans the pipeline as `run` would, reads no record, and prints the columns
/// the preprocess makes, the features a streaming job joins on (its `[features]` as planned, SQL
/// included) and what the model trains on.
pub fn check(args: CheckArgs) -> anyhow::Result<()> {
    let (spec, text) = crate::pipeline_file::load(&args.pipeline, &args.overrides)?;
    spec.validate()
        .map_err(|e| anyhow::anyhow!("{}", located(&args.pipeline, &text, e)))?;
    let source = Some((args.pipeline.as_path(), text.as_str()));
    let columns = |schema: &arrow::datatypes::Schema| -> String {
        let fields = schema.fields().iter();
        let named: Vec<String> = fields
            .map(|f| format!("{} {}", f.name(), f.data_type()))
            .collect();
        named.join(", ")
    };
    let (kind, sql_schema, features, label) = if spec.stream.is_some() {
        let plan = crate::run::plan_stream(spec, source)?;
        if let Some(view) = &plan.feature_view {
            let f = &view.spec;
            println!(
                "features `{}`, per `{}` as of `{}`: {}",
                f.name,
                f.key,
                view.time_column,
                view.view.describe()
            );
            if let Some(table) = &f.table {
                let from = match &table.kafka {
                    Some(k) => format!("topic `{}`", k.topic),
                    None => format!("`{}`", table.path),
                };
                println!(
                    "  table {from}, key `{}`, {:?} join",
                    f.table_key().unwrap_or(&f.key),
                    table.join
                );
            }
            let fields: Vec<String> = (view.fields.iter())
                .map(|f| format!("{} {}", f.name(), f.data_type()))
                .collect();
            println!("  adds: {}", fields.join(", "));
        }
        let kind = format!("streaming job on topic `{}`", plan.stream.topic);
        (
            kind,
            plan.sql.output_schema.clone(),
            plan.features.clone(),
            plan.label_kind,
        )
    } else {
        // As `run` does: a dataset the pipeline generates is made on first use.
        crate::data::prepare(&spec)?;
        let plan = crate::run::plan(spec, source)?;
        if let Some(tune) = &plan.spec.tune {
            print_trials(tune, &plan.spec.train)?;
        }
        let kind = format!("batch job over `{}`", plan.dataset.url());
        (
            kind,
            plan.sql.output_schema.clone(),
            plan.features.clone(),
            plan.label_kind,
        )
    };
    println!("preprocess makes: {}", columns(&sql_schema));
    println!(
        "the model trains on: {} (label: {label:?})",
        features.feature_columns().join(", ")
    );
    println!("{}: ok, a {kind}", args.pipeline.display());
    Ok(())
}

/// The trials a `[tune]` section draws (each checked against the preprocessing by the plan).
fn print_trials(
    tune: &millrace_operators::tune::TuneSpec,
    train: &millrace_operators::spec::TrainSpec,
) -> anyhow::Result<()> {
    let trials = tune.trials(train)?;
    println!(
        "tune: {} trials ({:?} search, {} side by side), {:?} {}, scheduler {:?}",
        trials.len(),
        tune.search,
        tune.concurrency(trials.len()),
        tune.mode,
        tune.metric,
        tune.scheduler
    );
    for t in &trials {
        let values: Vec<String> = t.config.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("  {}: {}", t.name, values.join(", "));
    }
    Ok(())
}

/// `millrace cluster`.
#[derive(clap::Args, Debug)]
pub struct ClusterRunArgs {
    /// The pipeline file (TOML).
    pipeline: PathBuf,
    /// Processes to start.
    #[arg(long, default_value_t = 2)]
    processes: usize,
    /// Worker threads per process.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Run directory shared by the processes (default: runs/<name>-<timestamp>).
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// Override a pipeline key (repeatable), passed to every process.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Continue the first start from the latest checkpoint too.
    #[arg(long)]
    resume: bool,
    /// Restart every process with --resume this many times when one fails.
    #[arg(long, default_value_t = 0)]
    restarts: u32,
}

/// `millrace tune`: `run` for a pipeline with a `[tune]` section (an error without one).
pub fn tune(args: RunArgs, started: Instant) -> anyhow::Result<()> {
    let (spec, _) = crate::pipeline_file::load(&args.pipeline, &args.overrides)?;
    if spec.tune.is_none() {
        anyhow::bail!(
            "{} has no [tune] section: add one (metric, mode and a space over [train] keys, see \
             the README) or run it with `millrace run`",
            args.pipeline.display()
        );
    }
    run(args, started)
}

/// `millrace run`; `started` (the process start) starts the run's clock.
pub fn run(mut args: RunArgs, started: Instant) -> anyhow::Result<()> {
    let (mut spec, text) = crate::pipeline_file::load(&args.pipeline, &args.overrides)?;
    // Nothing is served with --no-serve, so [serve] (its device included) is not checked.
    if args.no_serve {
        spec.serve = None;
    }
    spec.validate()
        .map_err(|e| anyhow::anyhow!("{}", located(&args.pipeline, &text, e)))?;
    let cluster = args.cluster.config(args.workers)?;
    // One dashboard per job, on process 0; a streaming server already has one at /ui.
    let served_stream = spec.stream.is_some() && spec.serve.is_some();
    if cluster.process_id == 0 && !args.no_ui && (args.ui.is_some() || !served_stream) {
        // The run directory is chosen now, so the dashboard can show the run from its start.
        let run_dir =
            (args.run_dir.take()).unwrap_or_else(|| crate::run::default_run_dir(&spec.name));
        // An address asked for must work; the default one is a convenience.
        if let Err(e) = super::ui::spawn(&run_dir, args.ui.unwrap_or(super::ui::ANY_LOOPBACK)) {
            if args.ui.is_some() {
                return Err(e);
            }
            tracing::warn!("no dashboard for this run: {e:#}");
        }
        args.run_dir = Some(run_dir);
    }
    if spec.stream.is_some() {
        return run_streaming(spec, &args, &text, cluster, started);
    }
    if cluster.process_id == 0 {
        crate::data::prepare(&spec)?;
    }
    let serve_spec = spec.serve.clone();
    let planned = plan(spec, Some((&args.pipeline, &text)))?;
    let process_id = cluster.process_id;
    let config = RunConfig {
        cluster,
        run_dir: args.run_dir,
        progress: Arc::new(CliProgress::new()),
        resume: args.resume,
        started: Some(started),
    };
    let (summary, run_dir) = run_planned(planned, Some(&text), config)?;
    println!("run directory: {}", run_dir.display());
    if let Some(step) = summary.resumed_from_step {
        println!("resumed from the checkpoint at step {step}");
    }
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
    if let Some(tune) = &summary.tune {
        print!("{}", crate::tune::table(tune, &summary.model_path));
    }
    if let (Some(serve_spec), false, 0) = (serve_spec, args.no_serve, process_id) {
        let options = ServeOptions {
            ui_runs: Some(crate::operators::ui::RunsSource::live(&run_dir)),
            ..serve_spec.options()?
        };
        let registry = ModelRegistry::on_device(options.batching.clone(), serve_spec.forward());
        registry.load_dir(None, Path::new(&summary.model_path))?;
        let io = cores().saturating_sub(options.batching.threads).max(1);
        serve_blocking(registry, serve_spec.addr, options, io)?;
    }
    Ok(())
}

pub fn cluster(args: ClusterRunArgs) -> anyhow::Result<()> {
    let (spec, _) = crate::pipeline_file::load(&args.pipeline, &args.overrides)?;
    let run_dir = args
        .run_dir
        .unwrap_or_else(|| crate::run::default_run_dir(&spec.name));
    let exe = std::env::current_exe()?;
    let outcome = launch(&Launch {
        exe,
        pipeline: args.pipeline,
        processes: args.processes,
        workers: args.workers,
        run_dir: run_dir.clone(),
        overrides: args.overrides,
        resume: args.resume,
        restarts: args.restarts,
    })?;
    println!(
        "cluster of {} processes × {} workers finished after {} start(s); run directory: {}",
        args.processes,
        args.workers,
        outcome.starts,
        run_dir.display()
    );
    Ok(())
}

fn run_streaming(
    spec: crate::operators::spec::PipelineSpec,
    args: &RunArgs,
    text: &str,
    cluster: ClusterConfig,
    started: Instant,
) -> anyhow::Result<()> {
    if args.resume {
        eprintln!(
            "note: a streaming job always continues from its latest checkpoint; --resume changes nothing"
        );
    }
    let idle_timeout = match args.idle_timeout_s {
        Some(s) if s.is_finite() && s >= 0.0 => Some(std::time::Duration::from_secs_f64(s)),
        Some(s) => anyhow::bail!("--idle-timeout-s must be a number of seconds >= 0, got {s}"),
        None => None,
    };
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    std::thread::Builder::new()
        .name("millrace-signals".into())
        .spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                let ctrl_c = tokio::signal::ctrl_c();
                #[cfg(unix)]
                {
                    if let Ok(mut term) =
                        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    {
                        tokio::select! {
                            _ = ctrl_c => {},
                            _ = term.recv() => {},
                        }
                    } else {
                        let _ = ctrl_c.await;
                    }
                }
                #[cfg(not(unix))]
                let _ = ctrl_c.await;
            });
            eprintln!("stopping: finishing the current step and writing a last checkpoint");
            flag.store(true, std::sync::atomic::Ordering::Relaxed);
        })?;
    let config = crate::run::StreamRunConfig {
        cluster,
        run_dir: args.run_dir.clone(),
        stop,
        max_records: args.max_records,
        idle_timeout,
        started: Some(started),
    };
    let (summary, run_dir) = crate::run::run_stream(spec, Some((&args.pipeline, text)), config)?;
    println!("run directory: {}", run_dir.display());
    println!(
        "records read {} | trained {} | dead-lettered {} | late {} | model versions {} | {:.1}s | {:.0} records/s",
        summary.rows_read,
        summary.rows_trained,
        summary.rows_dead_lettered,
        summary.rows_late,
        summary.model_versions,
        summary.wall_s,
        summary.rows_per_s
    );
    if let Some(m) = &summary.prequential {
        println!("prequential: {}", serde_json::to_string(m)?);
    }
    Ok(())
}
