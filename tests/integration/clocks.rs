//! The run's clock: `wall_s` runs from when the user started waiting (before planning) to the last
//! file written (summary.json), and the phases in summary.json add up to it.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant, SystemTime};

use millrace::engine::ClusterConfig;
use millrace::operators::batch_job::{NoProgress, Summary};
use millrace::run::{RunConfig, StreamRunConfig, plan, run_planned, run_stream};
use serde_json::Value;

use super::common::{pipeline_toml, scratch, tabular};
use super::services::kafka;
use super::streaming::{counting_pipeline, fill_topic, unique};

/// Every file under `dir` but `except`, with its modification time.
fn files(dir: &Path, except: &Path, out: &mut Vec<(std::path::PathBuf, SystemTime)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, except, out);
        } else if path != except {
            let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
            out.push((path, modified));
        }
    }
}

/// summary.json is the newest file of `run`, and every other file was written within `wall_s` of
/// `clock_start` (file times are at most a clock tick behind, never ahead).
fn assert_summary_is_the_last_file(run: &Path, clock_start: SystemTime, wall_s: f64) {
    let summary = run.join("summary.json");
    let summary_time = std::fs::metadata(&summary).unwrap().modified().unwrap();
    let mut others = Vec::new();
    files(run, &summary, &mut others);
    assert!(others.len() >= 3, "the run wrote files: {others:?}");
    for (path, modified) in others {
        assert!(
            modified <= summary_time,
            "{} was written after summary.json",
            path.display()
        );
        let at = modified
            .duration_since(clock_start)
            .unwrap_or(Duration::ZERO)
            .as_secs_f64();
        assert!(
            at <= wall_s,
            "{} was written {at} s after the clock started, past wall_s = {wall_s}",
            path.display()
        );
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * a.abs().max(b.abs()).max(1.0)
}

#[test]
fn batch_wall_time_covers_planning_and_writing_and_the_phases_add_up() {
    let (train, holdout) = tabular();
    let dir = scratch("clock-batch");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("pipeline.toml");
    std::fs::write(&path, pipeline_toml(train, holdout, 2)).unwrap();

    let clock_start = SystemTime::now();
    let started = Instant::now();
    let (spec, text) = millrace::pipeline_file::load(&path, &[]).unwrap();
    let planned = plan(spec, Some((&path, &text))).unwrap();
    let planning_s = started.elapsed().as_secs_f64();
    let config = RunConfig {
        cluster: ClusterConfig::local(2),
        run_dir: Some(dir.join("run")),
        progress: Arc::new(NoProgress),
        resume: false,
        started: Some(started),
    };
    let (s, run): (Summary, _) = run_planned(planned, Some(&text), config).unwrap();
    let outside_s = started.elapsed().as_secs_f64();

    let p = &s.phases;
    let named = [
        ("plan_s", p.plan_s),
        ("ingest_s", p.ingest_s),
        ("fit_s", p.fit_s),
        ("encode_s", p.encode_s),
        ("train_s", p.train_s),
        ("evaluate_s", p.evaluate_s),
        ("write_s", p.write_s),
    ];
    for (name, value) in named {
        assert!(value.is_finite() && value >= 0.0, "{name} = {value}");
    }
    // Phases that do work take time; the sum is the wall time.
    for (name, value) in [
        ("ingest_s", p.ingest_s),
        ("train_s", p.train_s),
        ("evaluate_s", p.evaluate_s),
        ("write_s", p.write_s),
    ] {
        assert!(value > 0.0, "{name} = {value}");
    }
    assert!(close(p.total_s(), s.wall_s), "{p:?} vs wall_s {}", s.wall_s);
    // The clock covers the planning done before the run, and stops before the call returns.
    assert!(
        p.plan_s >= planning_s,
        "plan phase {} s < planning {planning_s} s",
        p.plan_s
    );
    assert!(s.wall_s <= outside_s, "{} > {outside_s}", s.wall_s);
    assert!(close(s.ingest_s, p.ingest_s + p.fit_s + p.encode_s));
    assert!(close(s.e2e_rows_per_s, s.rows_read as f64 / s.wall_s));
    assert_eq!(s.rows_read, 60_000);
    // ... and the writing: curves, model, metrics, dead letters come before summary.json.
    assert!(run.join("curves.svg").exists() && run.join("model").exists());
    assert_summary_is_the_last_file(&run, clock_start, s.wall_s);

    // summary.json holds the completed times.
    let written: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    assert_eq!(written["wall_s"].as_f64(), Some(s.wall_s));
    for (name, value) in named {
        assert_eq!(written["phases"][name].as_f64(), Some(value), "{name}");
    }
}

#[test]
fn streaming_wall_time_covers_planning_and_writing_and_the_phases_add_up() {
    let Some(broker) = kafka() else { return };
    let topic = unique("clock-stream");
    let dir = scratch("clock-stream");
    fill_topic(broker, &topic, 2, 1_000, &dir);
    let text = counting_pipeline(broker, &topic, &dir.join("checkpoints"), "");

    let clock_start = SystemTime::now();
    let started = Instant::now();
    let spec = millrace::pipeline_file::parse(&text, Path::new("clock.toml")).unwrap();
    let config = StreamRunConfig {
        cluster: ClusterConfig::local(2),
        run_dir: Some(dir.join("run")),
        stop: Arc::new(AtomicBool::new(false)),
        max_records: Some(1_000),
        idle_timeout: Some(Duration::from_secs(10)),
        started: Some(started),
    };
    let (s, run) = run_stream(spec, None, config).unwrap();
    let outside_s = started.elapsed().as_secs_f64();

    assert_eq!(s.rows_read, 1_000);
    let p = &s.phases;
    for (name, value) in [
        ("plan_s", p.plan_s),
        ("run_s", p.run_s),
        ("write_s", p.write_s),
    ] {
        assert!(value.is_finite() && value > 0.0, "{name} = {value}");
    }
    assert!(
        close(p.plan_s + p.run_s + p.write_s, s.wall_s),
        "{p:?} vs {}",
        s.wall_s
    );
    assert!(s.wall_s <= outside_s);
    // events/s counts every record read over a clock inside the workers' run.
    assert!(
        s.rows_per_s * p.run_s >= 1_000.0 * (1.0 - 1e-9),
        "{} records/s over a {} s run",
        s.rows_per_s,
        p.run_s
    );
    assert_summary_is_the_last_file(&run, clock_start, s.wall_s);
}
