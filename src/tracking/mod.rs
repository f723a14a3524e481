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

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use millrace_operators::streaming::OnPublish;

use millrace_operators::spec::PipelineSpec;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use client::{CallError, Metric, Mlflow, RunInfo};

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

/// Where versions that could not be recorded while the job ran wait for the end (or for
/// `millrace track push`), in the run directory.
const PENDING: &str = "tracking-pending";

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
        let hook_sender = Mutex::new(sender.clone());
        self.live = Some(Live { sender, thread });
        let run_dir = self.run_dir.clone();
        Ok(Some(Arc::new(move |dir: &Path| {
            let Ok(rel) = dir.strip_prefix(&run_dir) else {
                return;
            };
            let files = read_files(dir);
            let rel = rel.to_string_lossy().into_owned();
            if let Ok(sender) = hook_sender.lock() {
                let _ = sender.send(Published::Version(rel, files));
            }
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
        let metrics = run_metrics(&lines);
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

/// Every key of the pipeline file as an MLflow parameter: `section.key` → its value (strings
/// bare, everything else as TOML writes it).
fn params(text: &str) -> Vec<(String, String)> {
    fn walk(prefix: &str, value: &toml::Value, out: &mut Vec<(String, String)>) {
        match value {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, v, out);
                }
            }
            toml::Value::String(s) => out.push((prefix.to_owned(), s.clone())),
            other => out.push((prefix.to_owned(), other.to_string())),
        }
    }
    let mut out = Vec::new();
    if let Ok(doc) = toml::from_str::<toml::Table>(text) {
        walk("", &toml::Value::Table(doc), &mut out);
    }
    out
}

fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn metrics_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// A line's numeric fields but `step` as metric points at the line's step, keyed
/// `<prefix><field>`.
fn points(line: &Value, prefix: &str, skip: &[&str], at: i64, out: &mut Vec<Metric>) {
    let step = line["step"].as_i64().unwrap_or(0);
    for (field, value) in line.as_object().into_iter().flatten() {
        if field == "step" || skip.contains(&field.as_str()) {
            continue;
        }
        if let Some(x) = value.as_f64().filter(|x| x.is_finite()) {
            out.push(Metric {
                key: format!("{prefix}{field}"),
                value: x,
                step,
                timestamp: at,
            });
        }
    }
}

/// The run's own lines of `metrics.jsonl` (all but a tune run's trial lines): `train/loss`,
/// `eval/accuracy`, … at each line's step.
fn run_metrics(lines: &[Value]) -> Vec<Metric> {
    let at = now_ms();
    let mut out = Vec::new();
    for line in lines {
        let kind = line["kind"].as_str().unwrap_or("metric");
        if kind != "trial" {
            points(line, &format!("{kind}/"), &[], at, &mut out);
        }
    }
    out
}

/// A tune trial's lines of `metrics.jsonl`: its metric, loss and evaluation at each report.
fn trial_metrics(lines: &[Value], trial: &str) -> Vec<Metric> {
    let at = now_ms();
    let mut out = Vec::new();
    for line in lines
        .iter()
        .filter(|l| l["kind"] == "trial" && l["trial"] == trial)
    {
        points(line, "", &[], at, &mut out);
    }
    out
}

/// The run directory's files to upload, with their artifact paths: the pipeline, the summary,
/// the curves, a tune run's log and plot (the models go with their registration).
fn artifacts(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    for name in [
        "pipeline.toml",
        "summary.json",
        "curves.png",
        "curves.svg",
        "tune.jsonl",
        "tune.png",
        "tune.svg",
    ] {
        if dir.join(name).is_file() {
            out.push((dir.join(name), name.to_owned()));
        }
    }
    out
}

/// The model bundles as (artifact folder, local folder), in the order they were made: each
/// version a streaming job published (`models/<v>`, `branches/<name>/models/<v>`; on disk, or
/// waiting in `tracking-pending/`), then `model` (the final one; a tune run's best).
fn models(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut versions: BTreeMap<(String, u64), PathBuf> = BTreeMap::new();
    let mut scan = |root: &Path| {
        let mut folders = vec![("models".to_owned(), root.join("models"))];
        for b in std::fs::read_dir(root.join("branches"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = b.file_name().to_string_lossy().into_owned();
            folders.push((format!("branches/{name}/models"), b.path().join("models")));
        }
        for (prefix, folder) in folders {
            for e in std::fs::read_dir(&folder).into_iter().flatten().flatten() {
                let v = e.file_name().to_string_lossy().parse::<u64>();
                if let (Ok(v), true) = (v, e.path().join("model.json").is_file()) {
                    versions.entry((prefix.clone(), v)).or_insert(e.path());
                }
            }
        }
    };
    scan(dir);
    scan(&dir.join(PENDING));
    let mut out: Vec<(String, PathBuf)> = versions
        .into_iter()
        .map(|((prefix, v), local)| (format!("{prefix}/{v}"), local))
        .collect();
    for local in [dir.join("model"), dir.join("best/model")] {
        if local.join("model.json").is_file() {
            out.push(("model".to_owned(), local));
            break;
        }
    }
    out
}

/// The files of a folder (not recursive), by name.
fn read_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_file())
        .filter_map(|e| {
            Some((
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).ok()?,
            ))
        })
        .collect();
    files.sort_by(|a, b| a.0.cmp(&b.0));
    files
}

/// Uploads a model bundle's `files` as the artifact folder `path` of `run` and registers it as
/// a version of `name`, when there is one (a branch's versions, `branches/<b>/models/<v>`, as
/// `<name>-<b>`).
fn record_version(
    client: &Mlflow,
    run: &RunInfo,
    name: Option<&str>,
    path: &str,
    files: &[(String, Vec<u8>)],
) -> std::result::Result<(), CallError> {
    for (file, bytes) in files {
        client.upload(&run.artifact_uri, &format!("{path}/{file}"), bytes)?;
    }
    let Some(name) = name else {
        return Ok(());
    };
    let model = match path
        .strip_prefix("branches/")
        .and_then(|p| p.split('/').next())
    {
        Some(branch) => format!("{name}-{branch}"),
        None => name.to_owned(),
    };
    let source = format!("{}/{path}", run.artifact_uri);
    let version = client.register(&model, &source, &run.run_id)?;
    tracing::info!(model = %model, version = %version, source = %source, "registered");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pipeline_key_is_a_parameter() {
        let p = params(
            "name = \"q\"\n[train]\nlr = 0.01\nmodel = { kind = \"mlp\", hidden = [8, 4] }\n[tune.space]\n\"train.lr\" = { uniform = [0.1, 0.2] }\n",
        );
        let get = |k: &str| p.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
        assert_eq!(get("name"), Some("q"));
        assert_eq!(get("train.lr"), Some("0.01"));
        assert_eq!(get("train.model.kind"), Some("mlp"));
        assert_eq!(get("train.model.hidden"), Some("[8, 4]"));
        assert_eq!(get("tune.space.train.lr.uniform"), Some("[0.1, 0.2]"));
    }

    #[test]
    fn metrics_lines_become_points_at_their_steps() {
        let lines = vec![
            serde_json::json!({"kind": "train", "step": 50, "loss": 0.5, "rows": 100}),
            serde_json::json!({"kind": "eval", "step": 100, "epoch": 0, "accuracy": 0.9}),
            serde_json::json!({"kind": "trial", "trial": "trial-001", "step": 7, "metric": 0.8}),
        ];
        let m = run_metrics(&lines);
        let keys: Vec<(&str, i64, f64)> = m
            .iter()
            .map(|m| (m.key.as_str(), m.step, m.value))
            .collect();
        assert_eq!(
            keys,
            vec![
                ("train/loss", 50, 0.5),
                ("train/rows", 50, 100.0),
                ("eval/accuracy", 100, 0.9),
                ("eval/epoch", 100, 0.0)
            ]
        );
        let t = trial_metrics(&lines, "trial-001");
        assert_eq!(t.len(), 1);
        assert_eq!(
            (t[0].key.as_str(), t[0].step, t[0].value),
            ("metric", 7, 0.8)
        );
    }
}
