//! What the Kafka benchmarks share: arguments, the broker check, and producing benchmark rows.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::Context;
use millrace::connectors::kafka::{KafkaOptions, KafkaSink, SinkFormat};
use millrace::connectors::parquet::{ParquetDataset, ScanOptions};
use millrace::engine::ClusterConfig;
use millrace::operators::streaming::StreamSummary;
use millrace::run::{StreamRunConfig, run_stream};

/// The value after `name` in `args`.
pub fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// Fails with what to do when no broker answers at `bootstrap`.
pub fn check_broker(options: &KafkaOptions, bootstrap: &str) -> anyhow::Result<()> {
    millrace::connectors::kafka::partitions(options, "__probe_missing", Duration::from_secs(5))
        .or_else(|e| match e {
            millrace::connectors::Error::KafkaMissingTopic { .. } => Ok(Vec::new()),
            other => Err(other),
        })
        .with_context(|| {
            format!(
                "no Kafka broker at {bootstrap}: start one with scripts/kafka-broker.sh start 9092"
            )
        })?;
    Ok(())
}

/// Produces the rows of `dir` to `topic`; with `rate`, paced to that many events per second.
pub fn produce(
    options: &KafkaOptions,
    topic: &str,
    dir: &Path,
    rate: Option<f64>,
) -> anyhow::Result<(u64, f64)> {
    let dataset = ParquetDataset::open_path(dir)?;
    let mut sink = KafkaSink::new(options, topic, SinkFormat::Json, &dataset.schema(), None)?;
    let scan = ScanOptions {
        projection: None,
        batch_size: 1000,
    };
    let started = Instant::now();
    let mut sent = 0u64;
    for unit in dataset.plan(1).into_iter().flatten() {
        for item in dataset.read_unit(&unit, &scan)? {
            let (_, batch) = item?;
            if let Some(rate) = rate {
                let due = Duration::from_secs_f64(sent as f64 / rate);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
            sent += sink.write(&batch)? as u64;
        }
    }
    sink.flush(Duration::from_secs(300))?;
    Ok((sent, started.elapsed().as_secs_f64()))
}

/// Milliseconds since the epoch: a suffix that makes topic names unique.
pub fn stamp() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// Runs the streaming pipeline `text` (named `file` in errors) on 2 local workers until
/// `max_records` were read (or 20 s without a record), writing its run to `run_dir`.
pub fn run_job_file(
    text: &str,
    file: &str,
    run_dir: &Path,
    max_records: u64,
) -> anyhow::Result<StreamSummary> {
    let spec = millrace::pipeline_file::parse(text, Path::new(file))?;
    let (summary, _) = run_stream(
        spec,
        None,
        StreamRunConfig {
            cluster: ClusterConfig::local(2),
            run_dir: Some(run_dir.to_path_buf()),
            stop: Arc::new(AtomicBool::new(false)),
            max_records: Some(max_records),
            idle_timeout: Some(Duration::from_secs(20)),
            started: None,
        },
    )?;
    Ok(summary)
}
