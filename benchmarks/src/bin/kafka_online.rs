//! The kafka_online benchmark: benchmark rows (shared TABULAR.md) as JSON events in a
//! 4-partition topic, consumed, preprocessed and trained online by 2 workers while the model is
//! served. Prints one JSON line.
//!
//!     scripts/kafka-broker.sh start 9092
//!     cargo run --release -p millrace-benchmarks --bin kafka_online -- [--bootstrap 127.0.0.1:9092] [--events 1000000] [--assert]
//!
//! Two phases:
//! - `backlog`: all events are produced first, then the job trains through them (`--max-records`):
//!   events/s is the job's throughput: every event the job read over the seconds its workers spent
//!   reading and training, from their first poll (the warm-up window that fits the preprocessing
//!   included) to their last step. `wall_s` and `phases` add the planning before and the writing
//!   after (the job's clock starts when the benchmark calls it).
//! - `live`: the job runs first and the events are produced at a fixed rate (`--rate`, default
//!   100,000/s) while it trains: freshness is the time from an event's produce timestamp to the
//!   first served model version that includes it (p50/p99).
//!
//! `--assert` fails (exit 1) unless backlog ≥ 300,000 events/s and live freshness p99 ≤ 1 s.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::bail;
use millrace::connectors::kafka::{KafkaOptions, create_topic};
use millrace::operators::streaming::StreamSummary;
use millrace_benchmarks::kafka::{arg, check_broker, produce, run_job_file, stamp};
use serde_json::json;

const PIPELINE: &str = r#"
name = "kafka_online"

[stream]
bootstrap_servers = "BOOTSTRAP"
topic = "TOPIC"
format = "json"
columns = ["f0", "f1", "f2", "f3", "f4", "f5", "f6", "f7", "f8", "f9", "f10", "f11", "f12", "f13", "f14", "f15", "cat", "ts", "label"]
schema = { f0 = "float32", f1 = "float32", f2 = "float32", f3 = "float32?", f4 = "float32", f5 = "float32", f6 = "float32", f7 = "float32", f8 = "float32", f9 = "float32", f10 = "float32", f11 = "float32", f12 = "float32", f13 = "float32", f14 = "float32", f15 = "float32", cat = "string", ts = "timestamp_us", label = "int8" }
warmup_records = 5000
max_batch_records = 4096
poll_timeout_ms = 5
publish_every_steps = 0
publish_every_s = 0.1
checkpoint_every_s = 5.0
checkpoint_dir = "CHECKPOINTS"
prequential_window = 50000

[preprocess]
standardize = ["f0", "f1", "f2", "f3", "f4", "f5", "f6", "f7", "f8", "f9", "f10", "f11", "f12", "f13", "f14", "f15"]
one_hot = ["cat"]
nulls = "mean"
label = "label"

[train]
model = { kind = "mlp", hidden = [64, 64], activation = "relu" }
optimizer = { kind = "adam" }
lr = 0.002
seed = 42
log_every = 50

[serve]
addr = "127.0.0.1:0"
"#;

/// The benchmark rows: generated once into data/bench/stream_rows.
fn rows(events: u64) -> anyhow::Result<PathBuf> {
    let dir = PathBuf::from(format!("data/bench/stream_rows_{events}"));
    if !dir.join("part-00000.parquet").exists() {
        millrace::data::generate_tabular(&dir, events, 4, 11, false)?;
    }
    Ok(dir)
}

fn run_job(
    bootstrap: &str,
    topic: &str,
    scratch: &Path,
    max_records: u64,
) -> anyhow::Result<StreamSummary> {
    let text = PIPELINE
        .replace("BOOTSTRAP", bootstrap)
        .replace("TOPIC", topic)
        .replace("CHECKPOINTS", &scratch.join(topic).display().to_string());
    run_job_file(
        &text,
        "kafka_online.toml",
        &scratch.join(format!("{topic}-run")),
        max_records,
    )
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let bootstrap = arg(&args, "--bootstrap").unwrap_or_else(|| "127.0.0.1:9092".into());
    let events: u64 = arg(&args, "--events").map_or(Ok(1_000_000), |v| v.parse())?;
    let rate: f64 = arg(&args, "--rate").map_or(Ok(100_000.0), |v| v.parse())?;
    let live_events: u64 = arg(&args, "--live-events").map_or(Ok(300_000), |v| v.parse())?;
    let check = args.iter().any(|a| a == "--assert");
    let options = KafkaOptions::new(&bootstrap);
    check_broker(&options, &bootstrap)?;
    let scratch =
        std::env::temp_dir().join(format!("millrace-kafka-online-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let stamp = stamp();

    // Backlog: everything produced first.
    let backlog_rows = rows(events)?;
    let backlog_topic = format!("kafka-online-backlog-{stamp}");
    create_topic(&options, &backlog_topic, 4, Duration::from_secs(30))?;
    let (sent, produce_s) = produce(&options, &backlog_topic, &backlog_rows, None)?;
    eprintln!("kafka_online: produced {sent} events in {produce_s:.1}s");
    let backlog = run_job(&bootstrap, &backlog_topic, &scratch, sent)?;
    eprintln!("kafka_online: backlog {:.0} events/s", backlog.rows_per_s);

    // Live: produced at a fixed rate while the job trains.
    let live_rows = rows(live_events)?;
    let live_topic = format!("kafka-online-live-{stamp}");
    create_topic(&options, &live_topic, 4, Duration::from_secs(30))?;
    let job = {
        let (bootstrap, topic, scratch) = (bootstrap.clone(), live_topic.clone(), scratch.clone());
        std::thread::spawn(move || run_job(&bootstrap, &topic, &scratch, live_events))
    };
    std::thread::sleep(Duration::from_secs(2));
    let (live_sent, live_s) = produce(&options, &live_topic, &live_rows, Some(rate))?;
    let live = job
        .join()
        .map_err(|_| anyhow::anyhow!("the live job panicked"))??;
    let _ = std::fs::remove_dir_all(&scratch);

    let line = json!({
        "benchmark": "kafka_online",
        "workers": 2,
        "partitions": 4,
        "cores": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "backlog": {
            "events": backlog.rows_read,
            "produce_events_per_s": sent as f64 / produce_s,
            "trained": backlog.rows_trained,
            "events_per_s": backlog.rows_per_s,
            "wall_s": backlog.wall_s,
            "phases": backlog.phases,
            "model_versions": backlog.model_versions,
            "prequential": backlog.prequential,
            "checkpoint_ms_mean": backlog.checkpoint_ms_mean,
            "checkpoint_bytes": backlog.checkpoint_bytes,
        },
        "live": {
            "events": live_sent,
            "rate_target": rate,
            "rate_produced": live_sent as f64 / live_s,
            "trained": live.rows_trained,
            "model_versions": live.model_versions,
            "wall_s": live.wall_s,
            "phases": live.phases,
            "freshness_ms_p50": live.freshness_ms_p50,
            "freshness_ms_p99": live.freshness_ms_p99,
            "prequential": live.prequential,
        },
    });
    println!("{line}");
    if check {
        if backlog.rows_per_s < 300_000.0 {
            bail!("backlog {:.0} events/s < 300,000", backlog.rows_per_s);
        }
        match live.freshness_ms_p99 {
            Some(p99) if p99 <= 1000.0 => {}
            other => bail!("live freshness p99 {other:?} ms > 1000"),
        }
    }
    Ok(())
}
