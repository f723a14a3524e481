//! Running a planned streaming job: the model server (when `[serve]` is set) on its own tokio
//! runtime, the workers on timely, and at the end the run directory (summary.json,
//! metrics.jsonl, dead_letters.jsonl, model/, models/<version>/).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use millrace_engine::{ClusterConfig, DeadLetter, MetricsRegistry, execute};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::checkpoint::{Checkpoint, StreamCheckpoints};
use super::clock::{FinishedStream, StreamPhases};
use super::metrics::StreamMetrics;
use super::plan::StreamPlan;
use super::prequential::{PrequentialMetrics, PrequentialState};
use super::worker::run_worker;
use crate::batch_job::write_dead_letters;
use crate::serve::{BatcherOptions, ModelRegistry, ServeOptions, configure_runtime, serve_until};
use crate::{Error, Result};

/// How to run a streaming job.
#[derive(Clone)]
pub struct StreamOptions {
    /// Worker threads (and processes).
    pub cluster: ClusterConfig,
    /// Directory for summary.json, metrics.jsonl, dead_letters.jsonl, model/ and models/.
    pub run_dir: PathBuf,
    /// Set (e.g. on SIGTERM) to stop after the current step with a last checkpoint.
    pub stop: Arc<AtomicBool>,
    /// Stop once this many records were read (a backfill, a test).
    pub max_records: Option<u64>,
    /// Stop once no record arrived for this long.
    pub idle_timeout: Option<Duration>,
    /// Called with the model server's address once it listens (when `[serve]` is set).
    pub on_serving: Option<Arc<dyn Fn(std::net::SocketAddr) + Send + Sync>>,
    /// Called by worker 0 with each model version's directory (`models/<v>`, a branch's
    /// `branches/<name>/models/<v>`) once it is written; the directory may be pruned later.
    pub on_publish: Option<OnPublish>,
    /// When the user started waiting (the process start for `millrace run`): `wall_s` and the
    /// plan phase count from here.
    pub started: Instant,
}

/// A hook that hears each published model version's directory.
pub type OnPublish = Arc<dyn Fn(&std::path::Path) + Send + Sync>;

/// What a streaming run did (also written as summary.json).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StreamSummary {
    /// Pipeline name.
    pub name: String,
    /// The topic.
    pub topic: String,
    /// Total workers.
    pub workers: usize,
    /// Whether the run continued from a checkpoint, and its step.
    pub resumed_from_step: Option<u64>,
    /// Records read from Kafka since the job first started (good and bad).
    pub rows_read: u64,
    /// Records trained on since the job first started.
    pub rows_trained: u64,
    /// Records sent to the dead-letter output since the job first started.
    pub rows_dead_lettered: u64,
    /// Records behind the watermark since the job first started.
    pub rows_late: u64,
    /// The job's event-time watermark at the end (epoch ms): per partition its newest event
    /// time minus `max_out_of_orderness`, the minimum over partitions that were not idle;
    /// `None` without `event_time` or before every partition had one.
    pub watermark_ms: Option<i64>,
    /// Training steps since the job first started.
    pub steps: u64,
    /// Model versions published since the job first started (the last one's number).
    pub model_versions: u64,
    /// Prequential metrics over the last window.
    pub prequential: Option<PrequentialMetrics>,
    /// Seconds from the start of the run's clock (`StreamOptions::started`) until summary.json
    /// is written; the sum of `phases`.
    pub wall_s: f64,
    /// Where `wall_s` went.
    #[serde(default)]
    pub phases: StreamPhases,
    /// Records read in this run per second of the workers' reading and training: from their
    /// first poll (the warm-up included) to their last step.
    pub rows_per_s: f64,
    /// Time from a record's produce timestamp to the first served version that includes it.
    pub freshness_ms_p50: Option<f64>,
    /// The same, 99th percentile.
    pub freshness_ms_p99: Option<f64>,
    /// Checkpoints written in this run.
    pub checkpoints: u64,
    /// Mean milliseconds to write one checkpoint.
    pub checkpoint_ms_mean: Option<f64>,
    /// Size of the last checkpoint in bytes.
    pub checkpoint_bytes: Option<u64>,
    /// FNV-1a of the final parameters (equal on every worker).
    pub parameter_checksum: String,
    /// The final model.
    pub model_path: String,
    /// Each `[[branch]]`: its prequential metrics, final model and checksum.
    #[serde(default)]
    pub branches: Vec<StreamBranchSummary>,
}

/// What one `[[branch]]` of a streaming run ended with.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StreamBranchSummary {
    /// The branch's name (its model's name in the server).
    pub name: String,
    /// Its prequential metrics over the last window.
    pub prequential: Option<PrequentialMetrics>,
    /// FNV-1a of its final parameters (equal on every worker).
    pub parameter_checksum: String,
    /// Its final model (`branches/<name>/model`).
    pub model_path: String,
}

/// One worker's end of a branch.
pub(crate) struct BranchOutcome {
    pub(crate) name: String,
    pub(crate) prequential: Option<PrequentialMetrics>,
    pub(crate) parameter_checksum: u64,
}

/// metrics.jsonl of a streaming run (worker 0 writes it).
#[derive(Clone)]
pub(crate) struct StepLog {
    out: Arc<Mutex<(BufWriter<File>, PathBuf)>>,
    every: u64,
    /// When the log was opened: each line's `elapsed_s` (for events/s between lines).
    started: Instant,
    /// Rows trained since then, over all steps (logged or not): each line's `rows_total`.
    rows_total: u64,
}

impl StepLog {
    fn create(path: PathBuf, every: u64) -> Result<Self> {
        let file = File::options()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        Ok(StepLog {
            out: Arc::new(Mutex::new((BufWriter::new(file), path))),
            every: every.max(1),
            started: Instant::now(),
            rows_total: 0,
        })
    }

    /// Logs a step: a train line every `log_every` steps, with the prequential metrics, and the
    /// freshness of the versions that went live since the last line (`fresh`: the p50 and max of
    /// every worker's new event-to-live delays) — on the train line, or on a `freshness` line of
    /// its own when no train line is due (a version goes live after the records it holds were
    /// trained).
    pub(crate) fn step(
        &mut self,
        step: u64,
        rows: u64,
        loss_sum: f64,
        prequential: &PrequentialState,
        classification: bool,
        fresh: Option<(f64, u32)>,
    ) -> Result<()> {
        self.rows_total += rows;
        let due = rows > 0 && step.is_multiple_of(self.every);
        if !due && fresh.is_none() {
            return Ok(());
        }
        let mut guard = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let (out, path) = &mut *guard;
        let mut line = if due {
            let elapsed_s = self.started.elapsed().as_secs_f64();
            json!({"kind": "train", "step": step, "rows": rows, "loss": loss_sum / rows as f64,
                "elapsed_s": elapsed_s, "rows_total": self.rows_total})
        } else {
            json!({"kind": "freshness", "step": step})
        };
        if let Some((p50, max)) = fresh {
            line["freshness_ms_p50"] = json!(p50);
            line["freshness_ms_max"] = json!(max);
        }
        writeln!(out, "{line}").map_err(|e| Error::io(path.clone(), e))?;
        if let Some(m) = prequential.metrics(classification).filter(|_| due) {
            let mut v = serde_json::to_value(&m).map_err(|e| Error::Internal(e.to_string()))?;
            v["kind"] = json!("eval");
            v["step"] = json!(step);
            v["prequential"] = json!(true);
            writeln!(out, "{v}").map_err(|e| Error::io(path.clone(), e))?;
        }
        out.flush().map_err(|e| Error::io(path.clone(), e))
    }
}

/// Shared by the workers of this process.
pub(crate) struct Shared {
    pub(crate) plan: Arc<StreamPlan>,
    pub(crate) resume: Option<Checkpoint>,
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) max_records: Option<u64>,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) registry: Option<Arc<ModelRegistry>>,
    pub(crate) on_publish: Option<OnPublish>,
    /// With `[features]` and `[serve]`: the store the views keep current for lookups.
    pub(crate) feature_store: Option<Arc<millrace_engine::features::FeatureStore>>,
    pub(crate) run_dir: PathBuf,
    pub(crate) log: Option<StepLog>,
    pub(crate) metrics: Arc<StreamMetrics>,
    /// Worker threads in each process (a worker's index in its process is `index % this`).
    pub(crate) workers_per_process: usize,
    store: StreamCheckpoints,
    checkpoint_stats: Mutex<(u64, f64, Option<u64>)>,
}

impl Shared {
    /// Writes a checkpoint (worker 0), timing it.
    pub(crate) fn checkpoint(&self, checkpoint: &Checkpoint) -> Result<()> {
        let started = Instant::now();
        let (dir, bytes) = self.store.write(checkpoint)?;
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        let mut stats = self
            .checkpoint_stats
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        stats.0 += 1;
        stats.1 += ms;
        stats.2 = Some(bytes);
        self.metrics.checkpointed();
        tracing::debug!(url = %dir, bytes, ms, "checkpoint written");
        Ok(())
    }
}

/// What one worker reports at the end.
pub(crate) struct WorkerOutcome {
    pub(crate) dead: Vec<DeadLetter>,
    pub(crate) freshness_ms: Vec<u32>,
    pub(crate) rows_read: u64,
    pub(crate) rows_trained: u64,
    pub(crate) rows_dead_lettered: u64,
    pub(crate) rows_late: u64,
    pub(crate) watermark_ms: Option<i64>,
    pub(crate) steps: u64,
    pub(crate) model_versions: u64,
    pub(crate) prequential: Option<PrequentialMetrics>,
    pub(crate) train_s: f64,
    pub(crate) parameter_checksum: u64,
    pub(crate) branches: Vec<BranchOutcome>,
}

fn percentile(sorted: &[u32], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted.get(rank).map(|&v| f64::from(v))
}

/// Starts the model server on its own thread; returns the registry and a handle that stops it.
fn start_server(
    plan: &StreamPlan,
    run_dir: &std::path::Path,
    on_serving: Option<Arc<dyn Fn(std::net::SocketAddr) + Send + Sync>>,
) -> Result<Option<(Arc<ModelRegistry>, ServerHandle)>> {
    let Some(serve) = &plan.spec.serve else {
        return Ok(None);
    };
    let options = ServeOptions {
        watch_interval: None,
        batching: BatcherOptions::default(),
        ui_runs: Some(crate::ui::RunsSource::live(run_dir)),
        ..serve.options()?
    };
    let registry = ModelRegistry::on_device(options.batching.clone(), serve.forward());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let addr = serve.addr;
    let server_registry = Arc::clone(&registry);
    let thread = std::thread::Builder::new()
        .name("millrace-serve".into())
        .spawn(move || -> Result<()> {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(1).enable_all();
            let runtime = configure_runtime(&mut builder)
                .build()
                .map_err(|e| Error::Serve(format!("cannot start the server runtime: {e}")))?;
            let ready = ready_tx.clone();
            let result = runtime.block_on(serve_until(
                server_registry,
                addr,
                options,
                move |local| {
                    let _ = ready.send(Ok(local));
                },
                async {
                    let _ = stop_rx.await;
                },
            ));
            if let Err(e) = &result {
                let _ = ready_tx.send(Err(e.to_string()));
            }
            result
        })
        .map_err(|e| Error::Serve(format!("cannot start the server thread: {e}")))?;
    match ready_rx.recv_timeout(Duration::from_secs(30)) {
        Ok(Ok(local)) => {
            tracing::info!(addr = %local, "serving the model while it trains");
            if let Some(f) = on_serving {
                f(local);
            }
        }
        Ok(Err(message)) => return Err(Error::Serve(message)),
        Err(_) => return Err(Error::Serve("the model server did not start".into())),
    }
    Ok(Some((
        registry,
        ServerHandle {
            stop: Some(stop_tx),
            thread: Some(thread),
        },
    )))
}

/// With `[features]` and a server: the store the views keep current, served as the view's
/// features and filled into the model's `/v1/predict` requests (every key: with several processes, each
/// process's store gets every worker's updates).
fn serve_features(
    plan: &StreamPlan,
    registry: Option<&Arc<ModelRegistry>>,
) -> Option<Arc<millrace_engine::features::FeatureStore>> {
    let (view, registry) = (plan.feature_view.as_ref()?, registry?);
    let store = Arc::new(view.store());
    registry.add_features(&view.spec.name, Arc::clone(&store));
    let fill = crate::serve::FeatureFill::new(Arc::clone(&store), &view.spec.key);
    registry.add_feature_fill(&plan.spec.name, fill);
    Some(store)
}

/// Stops the model server when dropped.
struct ServerHandle {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Runs `plan` until it stops (signal, `max_records`, idle timeout), writing the run directory.
pub fn run_stream(plan: StreamPlan, options: StreamOptions) -> Result<StreamSummary> {
    run_stream_without_summary(plan, options)?.write_summary()
}

/// Runs `plan` like [`run_stream`] and writes every file of the run directory but
/// summary.json, which the returned run writes (stopping the clock) once the caller has added
/// its own files.
pub fn run_stream_without_summary(
    plan: StreamPlan,
    options: StreamOptions,
) -> Result<FinishedStream> {
    std::fs::create_dir_all(&options.run_dir).map_err(|e| Error::io(&options.run_dir, e))?;
    let (store, resume) = open_checkpoints(&plan)?;
    let server = start_server(&plan, &options.run_dir, options.on_serving.clone())?;
    let log = if options.cluster.process_id == 0 {
        Some(StepLog::create(
            options.run_dir.join("metrics.jsonl"),
            plan.spec.train.log_every as u64,
        )?)
    } else {
        None
    };
    let resumed_from_step = resume.as_ref().map(|c| c.step);
    let stream_metrics = Arc::new(StreamMetrics::new(&plan.spec.name));
    if let Some((registry, _)) = &server {
        let source = Arc::clone(&stream_metrics);
        registry.add_metrics_source(Arc::new(move || source.render()));
    }
    let feature_store = serve_features(&plan, server.as_ref().map(|(r, _)| r));
    let shared = Arc::new(Shared {
        feature_store,
        plan: Arc::new(plan),
        resume,
        stop: Arc::clone(&options.stop),
        max_records: options.max_records,
        idle_timeout: options.idle_timeout,
        registry: server.as_ref().map(|(r, _)| Arc::clone(r)),
        on_publish: options.on_publish.clone(),
        run_dir: options.run_dir.clone(),
        log,
        metrics: Arc::clone(&stream_metrics),
        workers_per_process: options.cluster.workers.max(1),
        store,
        checkpoint_stats: Mutex::new((0, 0.0, None)),
    });
    let metrics = MetricsRegistry::new();
    let workers_started = Instant::now();
    let outcomes = {
        let shared = Arc::clone(&shared);
        execute(&options.cluster, metrics, move |worker, ctx| {
            run_worker(worker, &ctx, &shared)
        })?
    };
    let workers_done = Instant::now();
    drop(server);
    let plan = &shared.plan;
    let first = outcomes
        .first()
        .ok_or_else(|| Error::Internal("no worker ran in this process".into()))?;
    check_replicas(&outcomes)?;
    let prom = options.run_dir.join("metrics.prom");
    std::fs::write(&prom, shared.metrics.render()).map_err(|e| Error::io(&prom, e))?;
    let dead: Vec<&DeadLetter> = outcomes.iter().flat_map(|o| o.dead.iter()).collect();
    write_dead_letters(&options.run_dir.join("dead_letters.jsonl"), &dead)?;
    let (model_dir, branches) = keep_final_models(&options.run_dir, first)?;
    let mut freshness: Vec<u32> = outcomes
        .iter()
        .flat_map(|o| o.freshness_ms.iter().copied())
        .collect();
    freshness.sort_unstable();
    let (checkpoints, checkpoint_ms, checkpoint_bytes) = *shared
        .checkpoint_stats
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    // The times are completed when summary.json is written.
    let summary = StreamSummary {
        name: plan.spec.name.clone(),
        topic: plan.stream.topic.clone(),
        workers: options.cluster.total_workers(),
        resumed_from_step,
        rows_read: first.rows_read,
        rows_trained: first.rows_trained,
        rows_dead_lettered: first.rows_dead_lettered,
        rows_late: first.rows_late,
        watermark_ms: first.watermark_ms,
        steps: first.steps,
        model_versions: first.model_versions,
        prequential: first.prequential.clone(),
        wall_s: 0.0,
        phases: StreamPhases::default(),
        rows_per_s: first
            .rows_read
            .saturating_sub(shared.resume.as_ref().map_or(0, |c| c.rows_read))
            as f64
            / first.train_s.max(1e-9),
        freshness_ms_p50: percentile(&freshness, 0.5),
        freshness_ms_p99: percentile(&freshness, 0.99),
        checkpoints,
        checkpoint_ms_mean: (checkpoints > 0).then(|| checkpoint_ms / checkpoints as f64),
        checkpoint_bytes,
        parameter_checksum: format!("{:016x}", first.parameter_checksum),
        model_path: model_dir.display().to_string(),
        branches,
    };
    Ok(FinishedStream {
        summary,
        clock: options.started,
        workers_started,
        workers_done,
        path: options.run_dir.join("summary.json"),
    })
}

/// Fails unless every worker ended with the same parameters, for the model and each branch.
fn check_replicas(outcomes: &[WorkerOutcome]) -> Result<()> {
    let Some(first) = outcomes.first() else {
        return Ok(());
    };
    let branch_checksums = |o: &WorkerOutcome| -> Vec<u64> {
        o.branches.iter().map(|b| b.parameter_checksum).collect()
    };
    if outcomes.iter().any(|o| {
        o.parameter_checksum != first.parameter_checksum
            || branch_checksums(o) != branch_checksums(first)
    }) {
        return Err(Error::Internal(
            "model replicas diverged during streaming training".into(),
        ));
    }
    Ok(())
}

/// Copies the last published version of the model (`models/<n>` → `model`) and of each
/// branch; the model's directory and the branches' summaries.
fn keep_final_models(
    run_dir: &Path,
    first: &WorkerOutcome,
) -> Result<(PathBuf, Vec<StreamBranchSummary>)> {
    let version = first.model_versions.to_string();
    let latest = run_dir.join("models").join(&version);
    let model_dir = run_dir.join("model");
    if latest.exists() {
        copy_dir(&latest, &model_dir)?;
    }
    let mut branches = Vec::with_capacity(first.branches.len());
    for branch in &first.branches {
        let dir = run_dir.join("branches").join(&branch.name);
        let latest = dir.join("models").join(&version);
        let model_dir = dir.join("model");
        if latest.exists() {
            copy_dir(&latest, &model_dir)?;
        }
        branches.push(StreamBranchSummary {
            name: branch.name.clone(),
            prequential: branch.prequential.clone(),
            parameter_checksum: format!("{:016x}", branch.parameter_checksum),
            model_path: model_dir.display().to_string(),
        });
    }
    Ok((model_dir, branches))
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    if to.exists() {
        std::fs::remove_dir_all(to).map_err(|e| Error::io(to, e))?;
    }
    std::fs::create_dir_all(to).map_err(|e| Error::io(to, e))?;
    for entry in std::fs::read_dir(from).map_err(|e| Error::io(from, e))? {
        let entry = entry.map_err(|e| Error::io(from, e))?;
        let target = to.join(entry.file_name());
        std::fs::copy(entry.path(), &target).map_err(|e| Error::io(&target, e))?;
    }
    Ok(())
}

/// The job's checkpoint store and its newest checkpoint, refused when it belongs to another
/// pipeline or topic.
fn open_checkpoints(plan: &StreamPlan) -> Result<(StreamCheckpoints, Option<Checkpoint>)> {
    let store = StreamCheckpoints::open(
        &plan.checkpoint_dir.to_string_lossy(),
        &plan.spec.storage,
        plan.stream.keep_checkpoints,
    )?;
    let resume = store.latest()?;
    if let Some(c) = &resume {
        if c.pipeline != plan.spec.name || c.topic != plan.stream.topic {
            return Err(Error::Checkpoint(format!(
                "{} holds checkpoints of pipeline '{}' on topic '{}', not '{}' on '{}'; set stream.checkpoint_dir to another directory",
                store.url(),
                c.pipeline,
                c.topic,
                plan.spec.name,
                plan.stream.topic
            )));
        }
        tracing::info!(
            step = c.step,
            rows_trained = c.rows_trained,
            "resuming from a checkpoint"
        );
    }
    Ok((store, resume))
}
