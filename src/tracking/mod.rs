//! Recording runs in MLflow (`[tracking]`).
//!
//! A run's MLflow run is created before any work (a server that cannot be used is an error
//! then), with every pipeline key as a parameter. When the run has written its directory, the
//! record is completed from it: `metrics.jsonl` as metric histories (same step numbers), the
//! model, curves, summary and pipeline as artifacts, the model as a registered model version
//! (every published version of a streaming job), a tune run's trials as child runs. If the
//! server goes away meanwhile, each request is tried again with a growing wait; then what is
//! left is spooled in `tracking.json` of the run directory, and `millrace track push RUN_DIR`
//! finishes it later, logging nothing twice.

mod client;
mod files;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use millrace_operators::streaming::OnPublish;

use millrace_operators::spec::PipelineSpec;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use client::{CallError, Metric, Mlflow, RunInfo};

use self::files::{
    PENDING, artifacts, best_metrics, metrics_lines, models, params, plain, read_files,
    record_version, run_metrics, trial_metrics,
};

use crate::{Error, Result};

/// The spool file, in the run directory.
const SPOOL: &str = "tracking.json";

/// What has been recorded of a run so far (the spool).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Record {
    uri: String,
    tries: u32,
    backoff_ms: u64,
    run: RunInfo,
    /// The registered model, or none.
    model_name: Option<String>,
    metrics_logged: usize,
    uploaded: Vec<String>,
    registered: Vec<String>,
    /// Tune trials' child runs, by trial.
    children: BTreeMap<String, Child>,
    /// `FINISHED` or `FAILED` once the run is ended.
    ended: Option<String>,
}

/// A tune trial's child run.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Child {
    run: RunInfo,
    params_logged: bool,
    metrics_logged: usize,
    ended: bool,
}

/// A run being recorded.
pub struct Tracker {
    client: Mlflow,
    record: Record,
    run_dir: PathBuf,
    live: Option<Live>,
}

/// The thread that records a streaming job's versions as they are published.
struct Live {
    sender: mpsc::Sender<Published>,
    thread: std::thread::JoinHandle<Vec<String>>,
}

/// What the publishing hook sends that thread.
enum Published {
    /// A version's artifact folder (`models/<v>`) and its files.
    Version(String, Vec<(String, Vec<u8>)>),
    /// The run is over.
    Close,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Tracker {
    /// Creates the MLflow run of `spec`'s run in `run_dir` (whose `pipeline.toml` is written)
    /// and logs its parameters; `None` without `[tracking]`. Fails when the server cannot be
    /// used: nothing has run yet.
    pub fn start(spec: &PipelineSpec, run_dir: &Path) -> Result<Option<Tracker>> {
        let Some(t) = &spec.tracking else {
            return Ok(None);
        };
        let uri = t.resolved_uri().map_err(Error::Pipeline)?;
        let client = Mlflow::new(&uri, t.tries, Duration::from_millis(t.backoff_ms))?;
        let unusable = |e: CallError| {
            Error::Tracking(format!(
                "the tracking server {uri} cannot record this run: {}; start it, fix [tracking] \
                 uri (or MLFLOW_TRACKING_URI), or remove [tracking]",
                Error::from(e)
            ))
        };
        let experiment = t.experiment.clone().unwrap_or_else(|| spec.name.clone());
        let experiment = client.experiment(&experiment).map_err(unusable)?;
        let name = run_dir
            .file_name()
            .map_or_else(|| spec.name.clone(), |n| n.to_string_lossy().into_owned());
        let tags = vec![
            ("millrace.pipeline".to_owned(), spec.name.clone()),
            ("millrace.run_dir".to_owned(), run_dir.display().to_string()),
            ("mlflow.source.name".to_owned(), "millrace".to_owned()),
        ];
        let run = client
            .create_run(&experiment, &name, &tags, now_ms())
            .map_err(unusable)?;
        let text = std::fs::read_to_string(run_dir.join("pipeline.toml")).unwrap_or_default();
        client
            .log_params(&run.run_id, &params(&text))
            .map_err(unusable)?;
        let record = Record {
            uri,
            tries: t.tries,
            backoff_ms: t.backoff_ms,
            run,
            model_name: t
                .register
                .then(|| t.model_name.clone().unwrap_or_else(|| spec.name.clone())),
            metrics_logged: 0,
            uploaded: Vec::new(),
            registered: Vec::new(),
            children: BTreeMap::new(),
            ended: None,
        };
        let tracker = Tracker {
            client,
            record,
            run_dir: run_dir.to_path_buf(),
            live: None,
        };
        tracker.spool()?;
        tracing::info!(uri = %tracker.record.uri, run = %tracker.record.run.run_id, "tracking the run in MLflow");
        Ok(Some(tracker))
    }

    /// The MLflow run's id.
    pub fn run_id(&self) -> &str {
        &self.record.run.run_id
    }

    /// The hook for a streaming job's publisher: each version's files are read at once (its
    /// directory is pruned later) and a thread of its own uploads them and registers the
    /// version while the job trains; a version the server could not take waits in
    /// `tracking-pending/` for the end of the run. None when nothing is registered.
    pub fn on_publish(&mut self) -> Result<Option<OnPublish>> {
        let Some(name) = self.record.model_name.clone() else {
            return Ok(None);
        };
        let client = Mlflow::new(
            &self.record.uri,
            self.record.tries,
            Duration::from_millis(self.record.backoff_ms),
        )?;
        let (sender, receiver) = mpsc::channel::<Published>();
        let run = self.record.run.clone();
        let pending = self.run_dir.join(PENDING);
        let thread = std::thread::spawn(move || {
            let mut done = Vec::new();
            let mut away = false;
            while let Ok(Published::Version(path, files)) = receiver.recv() {
                let recorded =
                    !away && record_version(&client, &run, Some(&name), &path, &files).is_ok();
                if recorded {
                    done.push(path);
                    continue;
                }
                away = true;
                for (file, bytes) in &files {
                    let local = pending.join(&path).join(file);
                    let _ = std::fs::create_dir_all(local.parent().unwrap_or(&pending));
                    let _ = std::fs::write(&local, bytes);
                }
            }
            done
        });
        let hook_sender = sender.clone();
        self.live = Some(Live { sender, thread });
        let run_dir = self.run_dir.clone();
        Ok(Some(Arc::new(move |dir: &Path| {
            let Ok(rel) = dir.strip_prefix(&run_dir) else {
                return;
            };
            let files = read_files(dir);
            let rel = rel.to_string_lossy().into_owned();
            let _ = hook_sender.send(Published::Version(rel, files));
        })))
    }

    /// Completes the record once the run has written its directory (`ok`), or marks it failed.
    /// When the server is away after every try, the rest stays spooled for
    /// `millrace track push` and a warning says so; the run itself is not failed for it.
    pub fn finish(mut self, ok: bool) -> Result<()> {
        if let Some(live) = self.live.take() {
            let _ = live.sender.send(Published::Close);
            if let Ok(done) = live.thread.join() {
                self.record.registered.extend(done);
            }
        }
        if !ok {
            let _ = self
                .client
                .end_run(&self.record.run.run_id, "FAILED", now_ms());
            self.record.ended = Some("FAILED".into());
            return self.spool();
        }
        match self.push() {
            Ok(()) => self.spool(),
            Err(CallError::Unreachable(why)) => {
                self.spool()?;
                tracing::warn!(
                    "the tracking server went away ({why}); the rest of the record is spooled in \
                     {}: run `millrace track push {}` once it is back",
                    self.run_dir.join(SPOOL).display(),
                    self.run_dir.display()
                );
                eprintln!(
                    "warning: tracking server unreachable; run `millrace track push {}` later",
                    self.run_dir.display()
                );
                Ok(())
            }
            Err(e @ CallError::Refused(_)) => {
                self.spool()?;
                Err(Error::from(e))
            }
        }
    }

    /// Sends what the spool in `run_dir` has not recorded yet (`millrace track push`).
    pub fn push_spooled(run_dir: &Path) -> Result<String> {
        let path = run_dir.join(SPOOL);
        let text = std::fs::read_to_string(&path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        let record: Record = serde_json::from_str(&text)
            .map_err(|e| Error::Tracking(format!("{} does not read: {e}", path.display())))?;
        let client = Mlflow::new(
            &record.uri,
            record.tries,
            Duration::from_millis(record.backoff_ms),
        )?;
        let mut tracker = Tracker {
            client,
            record,
            run_dir: run_dir.to_path_buf(),
            live: None,
        };
        if tracker.record.ended.is_some() {
            return Ok(tracker.record.run.run_id.clone());
        }
        let pushed = tracker.push();
        tracker.spool()?;
        pushed.map_err(Error::from)?;
        Ok(tracker.record.run.run_id.clone())
    }

    fn spool(&self) -> Result<()> {
        let path = self.run_dir.join(SPOOL);
        let text = serde_json::to_string_pretty(&self.record)
            .map_err(|e| Error::Tracking(e.to_string()))?;
        std::fs::write(&path, text).map_err(|source| Error::Io { path, source })
    }

    /// Everything the run directory holds that is not recorded yet, in order; each step is
    /// noted in the record as it is done.
    fn push(&mut self) -> std::result::Result<(), CallError> {
        let dir = self.run_dir.clone();
        let lines = metrics_lines(&dir.join("metrics.jsonl"));
        let summary: Value = std::fs::read_to_string(dir.join("summary.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null);
        let run = self.record.run.run_id.clone();
        let mut metrics = run_metrics(&lines);
        if summary.get("tune").is_some_and(|t| t.is_object()) {
            // The parent of a tune run: the best trial's final evaluation.
            metrics.extend(best_metrics(&summary));
        }
        self.client
            .log_metrics(&run, &metrics, &mut self.record.metrics_logged)?;
        if let Some(tune) = summary.get("tune").filter(|t| t.is_object()) {
            self.push_trials(tune, &lines)?;
        }
        for (local, remote) in artifacts(&dir) {
            if self.record.uploaded.contains(&remote) {
                continue;
            }
            let bytes = std::fs::read(&local)
                .map_err(|e| CallError::Refused(format!("cannot read {}: {e}", local.display())))?;
            self.client
                .upload(&self.record.run.artifact_uri, &remote, &bytes)?;
            self.record.uploaded.push(remote);
        }
        let name = self.record.model_name.clone();
        for (model, local) in models(&dir) {
            if self.record.registered.contains(&model) {
                continue;
            }
            let files = read_files(&local);
            record_version(
                &self.client,
                &self.record.run,
                name.as_deref(),
                &model,
                &files,
            )?;
            self.record.registered.push(model);
        }
        let _ = std::fs::remove_dir_all(dir.join(PENDING));
        self.client.end_run(&run, "FINISHED", now_ms())?;
        self.record.ended = Some("FINISHED".into());
        Ok(())
    }

    /// Each tune trial as a child run: its values as parameters, its reports as metrics.
    fn push_trials(&mut self, tune: &Value, lines: &[Value]) -> std::result::Result<(), CallError> {
        let parent = self.record.run.clone();
        for trial in tune["trials"].as_array().into_iter().flatten() {
            let name = trial["trial"].as_str().unwrap_or("trial").to_owned();
            let child = match self.record.children.get(&name) {
                Some(c) => c.clone(),
                None => {
                    let tags = vec![
                        ("mlflow.parentRunId".to_owned(), parent.run_id.clone()),
                        ("millrace.trial".to_owned(), name.clone()),
                    ];
                    let run =
                        self.client
                            .create_run(&parent.experiment_id, &name, &tags, now_ms())?;
                    let c = Child {
                        run,
                        params_logged: false,
                        metrics_logged: 0,
                        ended: false,
                    };
                    self.record.children.insert(name.clone(), c.clone());
                    c
                }
            };
            if child.ended {
                continue;
            }
            let id = child.run.run_id.clone();
            if !child.params_logged {
                let params: Vec<(String, String)> = trial["config"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), plain(v)))
                    .collect();
                self.client.log_params(&id, &params)?;
                let status = trial["status"].as_str().unwrap_or("").to_owned();
                let mut tags = vec![("millrace.status".to_owned(), status)];
                if let Some(why) = trial["stop_reason"].as_str() {
                    tags.push(("millrace.stop_reason".to_owned(), why.to_owned()));
                }
                self.client.set_tags(&id, &tags)?;
                self.child(&name).params_logged = true;
            }
            let points = trial_metrics(lines, &name);
            let mut done = child.metrics_logged;
            let logged = self.client.log_metrics(&id, &points, &mut done);
            self.child(&name).metrics_logged = done;
            logged?;
            self.client.end_run(&id, "FINISHED", now_ms())?;
            self.child(&name).ended = true;
        }
        if let Some(best) = tune["best"].as_str() {
            self.client.set_tags(
                &parent.run_id,
                &[("millrace.best_trial".into(), best.into())],
            )?;
        }
        Ok(())
    }

    fn child(&mut self, name: &str) -> &mut Child {
        self.record
            .children
            .get_mut(name)
            .expect("a child run is recorded before it is used")
    }
}
