//! `[tracking]` against a real MLflow server (`mlflow==3.17.2` from PyPI, SQLite backend, local
//! artifacts), checked through its REST API: a batch run, a tune run (trials as child runs), a
//! streaming run (every published version registered), a server that is down at the start (an
//! error before work) and one that goes away before the end (spooled, then `track push`).

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{pipeline_toml, scratch, succeed, tabular};
use crate::quickstart::try_run_toml;
use crate::serve_harness::{get, post_json};
use crate::services::{MlflowServer, free_port, kafka, mlflow};

fn addr(endpoint: &str) -> SocketAddr {
    endpoint.trim_start_matches("http://").parse().unwrap()
}

fn api(endpoint: &str, path: &str) -> Value {
    let reply = get(addr(endpoint), path);
    assert_eq!(
        reply.status,
        200,
        "GET {path}: {}",
        String::from_utf8_lossy(&reply.body)
    );
    reply.json()
}

fn search(endpoint: &str, body: Value) -> Value {
    let reply = post_json(addr(endpoint), "/api/2.0/mlflow/runs/search", &body);
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    reply.json()
}

fn jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The MLflow run id a run directory was recorded as.
fn run_id(run_dir: &Path) -> String {
    let spool: Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("tracking.json")).unwrap())
            .unwrap();
    spool["run"]["run_id"].as_str().unwrap().to_owned()
}

/// `(step, value)` of every point of `key` in `run`.
fn history(endpoint: &str, run: &str, key: &str) -> Vec<(i64, f64)> {
    let v = api(
        endpoint,
        &format!(
            "/api/2.0/mlflow/metrics/get-history?run_id={run}&metric_key={}",
            key.replace('/', "%2F")
        ),
    );
    let mut points: Vec<(i64, f64)> = v["metrics"]
        .as_array()
        .map(|m| {
            m.iter()
                .map(|p| (p["step"].as_i64().unwrap(), p["value"].as_f64().unwrap()))
                .collect()
        })
        .unwrap_or_default();
    points.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
    points
}

/// Every numeric field of the run's `metrics.jsonl` lines of `kind` equals its MLflow history.
fn assert_histories(endpoint: &str, run: &str, lines: &[Value], kind: &str) -> usize {
    let lines: Vec<&Value> = lines.iter().filter(|l| l["kind"] == kind).collect();
    assert!(!lines.is_empty(), "no {kind} lines");
    let mut checked = 0;
    for field in lines[0].as_object().unwrap().keys() {
        if field == "step" || !lines[0][field].is_number() {
            continue;
        }
        let mut want: Vec<(i64, f64)> = lines
            .iter()
            .filter_map(|l| Some((l["step"].as_i64()?, l[field].as_f64()?)))
            .collect();
        want.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
        assert_eq!(
            history(endpoint, run, &format!("{kind}/{field}")),
            want,
            "{kind}/{field}"
        );
        checked += 1;
    }
    checked
}

fn artifact_names(endpoint: &str, run: &str, path: &str) -> Vec<String> {
    let v = api(
        endpoint,
        &format!("/api/2.0/mlflow/artifacts/list?run_id={run}&path={path}"),
    );
    v["files"]
        .as_array()
        .map(|f| {
            f.iter()
                .map(|f| f["path"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn versions(endpoint: &str, model: &str) -> Vec<Value> {
    let v = api(
        endpoint,
        &format!("/api/2.0/mlflow/model-versions/search?filter=name%3D%27{model}%27"),
    );
    v["model_versions"].as_array().cloned().unwrap_or_default()
}

/// The record of a finished batch run: status, every pipeline key, metrics.jsonl, artifacts
/// (their bytes), one registered version.
fn assert_batch_recorded(endpoint: &str, run_dir: &Path, model: &str) {
    let run = run_id(run_dir);
    let got = api(endpoint, &format!("/api/2.0/mlflow/runs/get?run_id={run}"));
    assert_eq!(got["run"]["info"]["status"], "FINISHED", "{got}");
    let params: Vec<(String, String)> = got["run"]["data"]["params"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["key"].as_str().unwrap().into(),
                p["value"].as_str().unwrap().into(),
            )
        })
        .collect();
    for (key, value) in [
        ("name", "it"),
        ("train.lr", "0.002"),
        ("train.model.kind", "mlp"),
        ("train.model.hidden", "[64, 64]"),
        ("preprocess.label", "label"),
        ("ingest.batch_rows", "8192"),
    ] {
        assert!(
            params.contains(&(key.into(), value.into())),
            "{key} = {value} not among {params:?}"
        );
    }
    let lines = jsonl(&run_dir.join("metrics.jsonl"));
    assert!(assert_histories(endpoint, &run, &lines, "train") >= 2);
    assert!(assert_histories(endpoint, &run, &lines, "eval") >= 3);
    let root = artifact_names(endpoint, &run, "");
    for name in ["pipeline.toml", "summary.json", "curves.png", "model"] {
        assert!(root.contains(&name.to_owned()), "{name} not in {root:?}");
    }
    let model_files = artifact_names(endpoint, &run, "model");
    assert!(
        model_files.contains(&"model/weights.safetensors".to_owned()),
        "{model_files:?}"
    );
    let experiment = got["run"]["info"]["experiment_id"].as_str().unwrap();
    let served = get(
        addr(endpoint),
        &format!(
            "/api/2.0/mlflow-artifacts/artifacts/{experiment}/{run}/artifacts/model/weights.safetensors"
        ),
    );
    assert_eq!(served.status, 200);
    let local = run_dir.join(if run_dir.join("model").is_dir() {
        "model"
    } else {
        "best/model"
    });
    assert_eq!(
        served.body,
        std::fs::read(local.join("weights.safetensors")).unwrap()
    );
    let versions = versions(endpoint, model);
    assert_eq!(versions.len(), 1, "{versions:?}");
    assert_eq!(versions[0]["run_id"], run.as_str());
}

/// `millrace track push RUN_DIR`, which must succeed.
fn track_push(run_dir: &Path) {
    succeed(
        std::process::Command::new(env!("CARGO_BIN_EXE_millrace"))
            .args(["track", "push"])
            .arg(run_dir),
    );
}

fn tracking(endpoint: &str, experiment: &str, extra: &str) -> String {
    format!(
        "\n[tracking]\nuri = \"{endpoint}\"\nexperiment = \"{experiment}\"\nmodel_name = \"{experiment}-model\"\n{extra}"
    )
}

#[test]
fn batch_and_tune_runs_are_recorded_and_a_server_that_is_down_stops_the_run_before_work() {
    let Some(server) = mlflow("runs") else { return };
    let endpoint = &server.endpoint;
    let (train, holdout) = tabular();
    let base = pipeline_toml(train, holdout, 1);
    let dir = scratch("track-batch");
    try_run_toml(
        &format!("{base}{}", tracking(endpoint, "it-batch", "")),
        2,
        &dir,
    )
    .unwrap();
    assert_batch_recorded(endpoint, &dir.join("run"), "it-batch-model");

    // A tune run: the parent holds the pipeline, the trials are its child runs.
    let tune = "\n[tune]\nmetric = \"accuracy\"\nmode = \"max\"\nnum_trials = 3\nseed = 5\nscheduler = { kind = \"fifo\" }\n[tune.space]\n\"train.lr\" = { loguniform = [0.001, 0.01] }\n";
    let dir = scratch("track-tune");
    let text = format!(
        "{}{tune}{}",
        base.replace("hidden = [64, 64]", "hidden = [8]"),
        tracking(endpoint, "it-tune", "")
    );
    let summary = try_run_toml(&text, 2, &dir).unwrap();
    let run_dir = dir.join("run");
    let parent = run_id(&run_dir);
    let got = api(
        endpoint,
        &format!("/api/2.0/mlflow/runs/get?run_id={parent}"),
    );
    let experiment = got["run"]["info"]["experiment_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let children = search(
        endpoint,
        json!({"experiment_ids": [experiment], "filter": format!("tags.mlflow.parentRunId = '{parent}'")}),
    );
    let children = children["runs"].as_array().unwrap();
    let trials = &summary.tune.as_ref().unwrap().trials;
    assert_eq!(children.len(), trials.len());
    for trial in trials {
        let child = children
            .iter()
            .find(|c| c["info"]["run_name"] == trial.trial.as_str())
            .unwrap_or_else(|| panic!("no child run for {}", trial.trial));
        let id = child["info"]["run_id"].as_str().unwrap();
        let metric: Vec<f64> = history(endpoint, id, "metric")
            .iter()
            .map(|p| p.1)
            .collect();
        assert_eq!(metric, trial.history, "{}", trial.trial);
        let lr = child["data"]["params"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["key"] == "train.lr")
            .unwrap()["value"]
            .as_str()
            .unwrap()
            .parse::<f64>()
            .unwrap();
        assert_eq!(lr, trial.config["train.lr"].as_f64().unwrap());
    }
    assert_eq!(
        got["run"]["data"]["tags"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["key"] == "millrace.best_trial")
            .unwrap()["value"],
        summary.tune.as_ref().unwrap().best.as_str()
    );
    let best = trials
        .iter()
        .find(|t| t.trial == summary.tune.as_ref().unwrap().best)
        .unwrap();
    assert_eq!(
        history(endpoint, &parent, "best/accuracy"),
        vec![(0, best.metric)]
    );
    let root = artifact_names(endpoint, &parent, "");
    for name in ["tune.jsonl", "tune.png", "model"] {
        assert!(root.contains(&name.to_owned()), "{name} not in {root:?}");
    }
    assert_eq!(versions(endpoint, "it-tune-model").len(), 1);

    // Nobody listens there: an error before any work.
    let down = format!("http://127.0.0.1:{}", free_port());
    let dir = scratch("track-down");
    let err = try_run_toml(
        &format!(
            "{base}{}",
            tracking(&down, "x", "tries = 2\nbackoff_ms = 50")
        ),
        1,
        &dir,
    )
    .unwrap_err();
    assert!(
        err.contains("cannot record this run") && err.contains(&down),
        "{err}"
    );
    assert!(!dir.join("run/metrics.jsonl").exists());
}

#[test]
fn a_server_that_goes_away_before_the_end_gets_the_spooled_record_from_track_push() {
    let store = scratch("track-outage-store");
    let port = free_port();
    let Some(mut server) = MlflowServer::start(&store, port).or_else(|| mlflow("outage")) else {
        return;
    };
    let endpoint = server.endpoint.clone();
    let (train, holdout) = tabular();
    let dir = scratch("track-outage");
    let run_dir = dir.join("run");
    let text = format!(
        "{}{}",
        pipeline_toml(train, holdout, 2),
        tracking(&endpoint, "it-outage", "tries = 3\nbackoff_ms = 100")
    );
    let job = std::thread::spawn({
        let dir = dir.clone();
        move || try_run_toml(&text, 2, &dir)
    });
    // The run has started its MLflow run (the spool exists): take the server away.
    let started = Instant::now();
    while !run_dir.join("tracking.json").exists() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the run never started tracking"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    server.kill();
    job.join()
        .unwrap()
        .expect("the run itself succeeds without its tracking server");
    let spool: Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("tracking.json")).unwrap())
            .unwrap();
    assert!(spool["ended"].is_null(), "{spool}");

    // Back on the same store: `millrace track push` records the rest, nothing twice.
    let _server = MlflowServer::start(&store, port).unwrap();
    track_push(&run_dir);
    assert_batch_recorded(&endpoint, &run_dir, "it-outage-model");
    // A second push has nothing left to send.
    track_push(&run_dir);
    assert_batch_recorded(&endpoint, &run_dir, "it-outage-model");
}

#[test]
fn a_streaming_run_registers_every_version_it_publishes() {
    let Some(broker) = kafka() else { return };
    let Some(server) = mlflow("stream") else {
        return;
    };
    use crate::streaming::{config, counting_pipeline, fill_topic, parse, unique};
    let dir = crate::streaming::scratch("track-stream");
    let topic = unique("track-stream");
    fill_topic(broker, &topic, 2, 2000, &dir);
    // A version every step that trains, so that more than the three kept on disk are published.
    let text = format!(
        "{}{}",
        counting_pipeline(broker, &topic, &dir.join("checkpoints"), "")
            .replace("publish_every_steps = 5", "publish_every_steps = 1"),
        tracking(&server.endpoint, "it-stream", "")
    );
    let (summary, run_dir) =
        millrace::run::run_stream(parse(&text), None, config(2, &dir.join("run"))).unwrap();
    assert!(summary.model_versions >= 2, "{summary:?}");
    let run = run_id(&run_dir);
    // Only the newest versions stay on disk; every one was registered as it was published.
    let published = summary.model_versions as usize;
    assert!(std::fs::read_dir(run_dir.join("models")).unwrap().count() < published);
    let versions = versions(&server.endpoint, "it-stream-model");
    // Every published version, then the final model, in that order.
    assert_eq!(versions.len(), published + 1, "{versions:?}");
    let sources: Vec<String> = {
        let mut v = versions.clone();
        v.sort_by_key(|v| v["version"].as_str().unwrap().parse::<u64>().unwrap());
        v.iter()
            .map(|v| v["source"].as_str().unwrap().to_owned())
            .collect()
    };
    for (i, source) in sources[..published].iter().enumerate() {
        assert!(
            source.ends_with(&format!("/models/{}", i + 1)),
            "{sources:?}"
        );
    }
    assert!(sources[published].ends_with("/model"), "{sources:?}");
    assert!(versions.iter().all(|v| v["run_id"] == run.as_str()));
    let lines = jsonl(&run_dir.join("metrics.jsonl"));
    assert!(assert_histories(&server.endpoint, &run, &lines, "train") >= 2);
}

#[test]
fn a_streaming_run_whose_server_goes_away_registers_every_version_after_track_push() {
    let Some(broker) = kafka() else { return };
    let store = crate::streaming::scratch("track-stream-outage-store");
    let port = free_port();
    let Some(mut server) = MlflowServer::start(&store, port).or_else(|| mlflow("stream-outage"))
    else {
        return;
    };
    use crate::streaming::{config, counting_pipeline, fill_topic, parse, unique};
    let endpoint = server.endpoint.clone();
    let dir = crate::streaming::scratch("track-stream-outage");
    let topic = unique("track-stream-outage");
    fill_topic(broker, &topic, 2, 20_000, &dir);
    let text = format!(
        "{}{}",
        counting_pipeline(broker, &topic, &dir.join("checkpoints"), ""),
        tracking(&endpoint, "it-stream-outage", "tries = 2\nbackoff_ms = 50")
    );
    let run_dir = dir.join("run");
    let job = std::thread::spawn({
        let run_dir = run_dir.clone();
        move || millrace::run::run_stream(parse(&text), None, config(2, &run_dir))
    });
    // Two versions registered while the job runs: take the server away.
    let started = Instant::now();
    while versions(&endpoint, "it-stream-outage-model").len() < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no versions registered"
        );
        assert!(
            !job.is_finished(),
            "the job ended before two versions were registered"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    server.kill();
    let (summary, _) = job
        .join()
        .unwrap()
        .expect("the job runs on without its tracking server");
    let published = summary.model_versions as usize;
    let pending = run_dir.join("tracking-pending/models");
    assert!(
        std::fs::read_dir(&pending).is_ok_and(|d| d.count() > 0),
        "versions published while the server was away wait in {}",
        pending.display()
    );

    let _server = MlflowServer::start(&store, port).unwrap();
    track_push(&run_dir);
    let mut versions = versions(&endpoint, "it-stream-outage-model");
    versions.sort_by_key(|v| v["version"].as_str().unwrap().parse::<u64>().unwrap());
    let sources: Vec<&str> = versions
        .iter()
        .map(|v| v["source"].as_str().unwrap())
        .collect();
    // Every published version once, in order, then the final model.
    assert_eq!(sources.len(), published + 1, "{sources:?}");
    for (i, source) in sources[..published].iter().enumerate() {
        assert!(
            source.ends_with(&format!("/models/{}", i + 1)),
            "{sources:?}"
        );
    }
    assert!(sources[published].ends_with("/model"), "{sources:?}");
    assert!(!run_dir.join("tracking-pending").exists());
    let run = run_id(&run_dir);
    let got = api(&endpoint, &format!("/api/2.0/mlflow/runs/get?run_id={run}"));
    assert_eq!(got["run"]["info"]["status"], "FINISHED");
}
