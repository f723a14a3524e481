//! Streaming pipelines against a real Kafka-protocol broker (tansu, started by the test setup):
//! two workers over four partitions, dead letters, exactly-once across `kill -9`, and the served
//! model version advancing while requests flow.
//!
//! Exactly-once is checked with a model whose parameters count the records it trained on: a
//! linear regression of a target far above its output, trained with the absolute error summed
//! over the batch and SGD at learning rate 1 — every record adds exactly 1 to the bias.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use millrace::connectors::kafka::{
    KafkaOptions, KafkaProducer, KafkaSource, StartFrom, create_topic,
};
use millrace::engine::ClusterConfig;
use millrace::ml::bundle::ModelBundle;
use millrace::run::{StreamRunConfig, run_stream};

use super::serve_harness::{get, post_json};
use super::services::{free_port, kafka};

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(unique(name));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Generates `rows` tabular rows and sends them to a new `partitions`-partition topic.
fn fill_topic(broker: &str, topic: &str, partitions: i32, rows: u64, dir: &Path) {
    let data = dir.join("rows");
    millrace::data::generate_tabular(&data, rows, 1, 3, false).unwrap();
    let options = KafkaOptions::new(broker);
    let sent =
        millrace::produce::produce(&data, &options, topic, Some(partitions), None, None).unwrap();
    assert_eq!(sent.records, rows);
}

/// The counting pipeline: every trained record adds exactly 1 to the bias.
fn counting_pipeline(broker: &str, topic: &str, checkpoints: &Path, extra: &str) -> String {
    format!(
        r#"
name = "counting"

[stream]
bootstrap_servers = "{broker}"
topic = "{topic}"
group_id = "{topic}-group"
columns = ["f0", "f3", "cat", "ts", "label"]
schema = {{ f0 = "float32", f3 = "float32?", cat = "string", ts = "timestamp_us", label = "int8" }}
warmup_records = 200
max_batch_records = 97
poll_timeout_ms = 10
publish_every_steps = 5
publish_every_s = 0
checkpoint_every_steps = 4
checkpoint_every_s = 0
checkpoint_dir = "{checkpoints}"
{extra}

[preprocess]
sql = "SELECT 0.0 AS zero, 1000000.0 AS y FROM input"
numeric = ["zero"]
label = "y"

[train]
task = "regression"
model = {{ kind = "linear" }}
optimizer = {{ kind = "sgd" }}
loss = "mae"
reduction = "sum"
lr = 1.0
"#,
        checkpoints = checkpoints.display()
    )
}

fn bias(model_dir: &Path) -> f32 {
    let bundle = ModelBundle::load(model_dir).unwrap();
    *bundle.weights.last().unwrap()
}

/// Asserts that the counting model at `model_dir` trained on exactly `records` records: its bias
/// moved from the initial value by `records` (each step adds a whole number; f32 rounding of the
/// sum stays far below the 1 that a lost or repeated record would add).
fn assert_counted(model_dir: &Path, records: u64) {
    use millrace::ml::trainer::{Loss, Trainer};
    let bundle = ModelBundle::load(model_dir).unwrap();
    let fresh = Trainer::<millrace::ml::backend::CpuAutodiff>::new(
        &bundle.spec,
        &millrace::ml::optim::OptimizerSpec::Sgd {
            momentum: 0.0,
            weight_decay: 0.0,
            nesterov: false,
        },
        Loss::Mae,
        &bundle.task,
        1,
        42, // the pipeline's train.seed (the default)
        &Default::default(),
    )
    .unwrap();
    let initial = *fresh.parameters().last().unwrap();
    let counted = f64::from(bias(model_dir)) - f64::from(initial);
    assert!(
        (counted - records as f64).abs() < 0.25,
        "the bias counted {counted} records, expected {records}"
    );
}

fn config(workers: usize, run_dir: &Path) -> StreamRunConfig {
    StreamRunConfig {
        cluster: ClusterConfig::local(workers),
        run_dir: Some(run_dir.to_path_buf()),
        stop: Arc::new(AtomicBool::new(false)),
        max_records: None,
        idle_timeout: Some(Duration::from_secs(2)),
    }
}

fn parse(text: &str) -> millrace::operators::spec::PipelineSpec {
    millrace::pipeline_file::parse(text, Path::new("test.toml")).unwrap()
}

#[test]
fn two_workers_train_every_record_once_and_dead_letter_bad_messages() {
    let Some(broker) = kafka() else { return };
    let dir = scratch("stream-two-workers");
    let topic = unique("two-workers");
    fill_topic(broker, &topic, 4, 3000, &dir);
    // Three bad messages: not JSON, a string where a number belongs, no label.
    let options = KafkaOptions::new(broker);
    let producer = KafkaProducer::new(&options, true).unwrap();
    for bad in [
        &b"not json"[..],
        br#"{"f0": "abc", "cat": "a", "ts": 0, "label": 1}"#,
        br#"{"f0": 1.0, "cat": "a", "ts": 0}"#,
    ] {
        producer.send(&topic, None, bad, &[]).unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    let dlq = format!("{topic}-dlq");
    create_topic(&options, &dlq, 1, Duration::from_secs(30)).unwrap();

    let text = counting_pipeline(
        broker,
        &topic,
        &dir.join("checkpoints"),
        &format!("dead_letter_topic = \"{dlq}\""),
    );
    let (summary, run_dir) = run_stream(parse(&text), None, config(2, &dir.join("run"))).unwrap();
    assert_eq!(summary.workers, 2);
    assert_eq!(summary.rows_read, 3003);
    assert_eq!(summary.rows_dead_lettered, 3);
    assert_eq!(summary.rows_trained, 3000);
    assert!(summary.model_versions >= 2, "{summary:?}");
    assert!(summary.checkpoints >= 2, "{summary:?}");
    // The bias counted every record exactly once, over both workers.
    assert_counted(&run_dir.join("model"), 3000);

    // The dead letters, with their origin in headers.
    let mut source = KafkaSource::open(
        &options,
        &dlq,
        &unique("reader"),
        0,
        1,
        StartFrom::Earliest,
        None,
    )
    .unwrap();
    let mut letters = Vec::new();
    let started = Instant::now();
    while letters.len() < 3 && started.elapsed() < Duration::from_secs(30) {
        letters.extend(source.poll(10, Duration::from_millis(200)).unwrap());
    }
    assert_eq!(letters.len(), 3);
    let payloads: Vec<String> = letters
        .iter()
        .map(|m| String::from_utf8_lossy(m.payload.as_deref().unwrap_or_default()).into_owned())
        .collect();
    assert!(payloads.contains(&"not json".to_string()), "{payloads:?}");
    let dead = std::fs::read_to_string(run_dir.join("dead_letters.jsonl")).unwrap();
    assert_eq!(dead.lines().count(), 3);
    assert!(dead.contains(r#"field \"f0\""#), "{dead}");
    assert!(dead.contains("label"), "{dead}");
}

#[test]
fn a_killed_job_resumes_from_its_checkpoint_without_losing_or_repeating_a_record() {
    let Some(broker) = kafka() else { return };
    let dir = scratch("stream-kill");
    let topic = unique("kill");
    let rows = 12_000;
    fill_topic(broker, &topic, 4, rows, &dir);
    let checkpoints = dir.join("checkpoints");
    let pipeline = dir.join("counting.toml");
    std::fs::write(
        &pipeline,
        counting_pipeline(broker, &topic, &checkpoints, "max_batch_records = 50"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let text = std::fs::read_to_string(&pipeline).unwrap();
    // `max_batch_records` appears twice in that file: keep the smaller one only.
    std::fs::write(&pipeline, text.replace("max_batch_records = 97\n", "")).unwrap();
    let run = |run_dir: &Path| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_millrace"));
        command
            .arg("run")
            .arg(&pipeline)
            .args(["--workers", "2", "--idle-timeout-s", "2", "--run-dir"])
            .arg(run_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        command
    };
    // First run: killed (SIGKILL, no chance to clean up) once two checkpoints exist.
    let mut first = run(&dir.join("run1")).spawn().unwrap();
    let started = Instant::now();
    loop {
        let complete = std::fs::read_dir(&checkpoints)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with("ckpt-"))
                    .count()
            })
            .unwrap_or(0);
        if complete >= 2 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no checkpoint written in time"
        );
        assert!(
            first.try_wait().unwrap().is_none(),
            "the job ended too early"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    first.kill().unwrap();
    first.wait().unwrap();
    // Second run: resumes from the last complete checkpoint and reads to the end.
    let status = run(&dir.join("run2")).status().unwrap();
    assert!(status.success());
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("run2/summary.json")).unwrap())
            .unwrap();
    assert!(summary["resumed_from_step"].as_u64().is_some(), "{summary}");
    assert_eq!(summary["rows_read"], rows);
    assert_eq!(summary["rows_trained"], rows);
    // Every record trained exactly once across the kill: the bias is the record count.
    assert_counted(&dir.join("run2/model"), rows);
    // And Kafka holds the final offsets as committed (a fresh group member resumes at the end).
    let options = KafkaOptions::new(broker);
    let mut after = KafkaSource::open(
        &options,
        &topic,
        &format!("{topic}-group"),
        0,
        1,
        StartFrom::Committed,
        None,
    )
    .unwrap();
    assert!(
        after
            .poll(100, Duration::from_millis(500))
            .unwrap()
            .is_empty(),
        "records after the committed offsets"
    );
}

fn wait_finished<T>(job: &std::thread::JoinHandle<T>) -> bool {
    let started = Instant::now();
    while !job.is_finished() && started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(10));
    }
    job.is_finished()
}

#[test]
fn the_served_version_advances_while_requests_flow() {
    let Some(broker) = kafka() else { return };
    let dir = scratch("stream-serve");
    let topic = unique("serve");
    fill_topic(broker, &topic, 2, 20_000, &dir);
    let port = free_port();
    let text = format!(
        "{}\n[serve]\naddr = \"127.0.0.1:{port}\"\n",
        counting_pipeline(broker, &topic, &dir.join("checkpoints"), "")
    );
    let spec = parse(&text);
    let run_dir = dir.join("run");
    let job = std::thread::spawn(move || run_stream(spec, None, config(2, &run_dir)));
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let body = serde_json::json!({"instances": [{"f0": 1.0, "f3": 0.5, "cat": "a", "ts": "2024-01-01T00:00:00Z", "label": 1}]});
    let mut seen = Vec::new();
    let mut metrics_checked = false;
    let started = Instant::now();
    while !job.is_finished() && started.elapsed() < Duration::from_secs(120) {
        if std::net::TcpStream::connect(addr).is_err() {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        // The server stops with the job: a request cut off then ends the loop.
        let Ok(reply) =
            std::panic::catch_unwind(|| post_json(addr, "/v1/models/counting/predict", &body))
        else {
            assert!(
                wait_finished(&job),
                "a request failed while the job was running"
            );
            break;
        };
        let status = reply.status;
        let text = String::from_utf8_lossy(&reply.body).into_owned();
        if status == 404 && seen.is_empty() {
            // No version published yet.
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        assert_eq!(status, 200, "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        // The prediction is the bias: it grows with the records the served version trained on.
        let value = v["predictions"][0]["value"].as_f64().unwrap();
        seen.push(value);
        if seen.len() == 5 {
            // The job's own counters are on the same /metrics as the serving metrics.
            if let Ok(reply) = std::panic::catch_unwind(|| get(addr, "/metrics")) {
                let text = String::from_utf8_lossy(&reply.body).into_owned();
                assert!(
                    text.contains("millrace_stream_rows_trained_total{job=\"counting\"}"),
                    "{text}"
                );
                assert!(text.contains("millrace_stream_model_version"), "{text}");
                assert!(text.contains("millrace_serve_requests_total"), "{text}");
                metrics_checked = true;
            }
        }
    }
    let (summary, _) = job.join().unwrap().unwrap();
    assert!(seen.len() > 10, "only {} answers", seen.len());
    assert!(
        seen.windows(2).all(|w| w[0] <= w[1]),
        "a request saw an older version after a newer one"
    );
    let distinct = {
        let mut d = seen.clone();
        d.dedup();
        d.len()
    };
    assert!(
        distinct >= 3,
        "the served version advanced only {distinct} times"
    );
    assert_eq!(summary.rows_trained, 20_000);
    assert!(metrics_checked, "GET /metrics was not checked");
}

/// Milliseconds since the epoch of a `window_start`/`window_end` value in windows.jsonl.
fn epoch_ms(value: &serde_json::Value) -> i64 {
    if let Some(n) = value.as_i64() {
        return n;
    }
    let text = value.as_str().unwrap();
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|d| d.timestamp_millis())
        .or_else(|_| {
            chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
                .map(|d| d.and_utc().timestamp_millis())
        })
        .unwrap_or_else(|e| panic!("window time {text}: {e}"))
}

#[test]
fn event_time_windows_match_a_recomputation() {
    use arrow::array::{Array, Float32Array, StringArray, TimestampMicrosecondArray};
    use millrace::connectors::parquet::{ParquetDataset, ScanOptions};
    use std::collections::BTreeMap;

    let Some(broker) = kafka() else { return };
    let dir = scratch("stream-windows");
    let topic = unique("windows");
    fill_topic(broker, &topic, 4, 3000, &dir);
    let text = counting_pipeline(
        broker,
        &topic,
        &dir.join("checkpoints"),
        r#"event_time = "ts"
max_out_of_orderness = "10m"

[stream.window]
size = "30s"
slide = "10s"
key = "cat"
aggregates = ["count", "mean(f0)", "max(f1) as peak"]"#,
    )
    .replace(
        "SELECT 0.0 AS zero, 1000000.0 AS y FROM input",
        "SELECT f0, f1, cat, ts, 0.0 AS zero, 1000000.0 AS y FROM input",
    )
    .replace(
        r#"columns = ["f0", "f3", "cat", "ts", "label"]
schema = { f0 = "float32", f3 = "float32?", cat = "string", ts = "timestamp_us", label = "int8" }"#,
        r#"columns = ["f0", "f1", "cat", "ts"]
schema = { f0 = "float32", f1 = "float32", cat = "string", ts = "timestamp_us" }"#,
    );
    let (summary, run_dir) = run_stream(parse(&text), None, config(2, &dir.join("run"))).unwrap();
    assert_eq!(summary.rows_trained, 3000);
    assert_eq!(summary.rows_late, 0);

    // The recomputation: every (window, cat) from the produced rows.
    type Agg = (u64, f64, f64); // count, sum f0, max f1
    let mut expected: BTreeMap<(i64, String), Agg> = BTreeMap::new();
    let data = ParquetDataset::open_path(dir.join("rows")).unwrap();
    for unit in data.plan(1).into_iter().flatten() {
        for item in data.read_unit(&unit, &ScanOptions::default()).unwrap() {
            let (_, batch) = item.unwrap();
            let col = |n: &str| batch.column_by_name(n).unwrap().clone();
            let f0 = col("f0");
            let f0 = f0.as_any().downcast_ref::<Float32Array>().unwrap();
            let f1 = col("f1");
            let f1 = f1.as_any().downcast_ref::<Float32Array>().unwrap();
            let cat = col("cat");
            let cat = cat.as_any().downcast_ref::<StringArray>().unwrap();
            let ts = col("ts");
            let ts = ts
                .as_any()
                .downcast_ref::<TimestampMicrosecondArray>()
                .unwrap();
            for i in 0..batch.num_rows() {
                let t = ts.value(i).div_euclid(1000);
                let last_start = t.div_euclid(10_000) * 10_000;
                for k in 0..3 {
                    let start = last_start - k * 10_000;
                    let e = expected
                        .entry((start, cat.value(i).to_string()))
                        .or_insert((0, 0.0, f64::NEG_INFINITY));
                    e.0 += 1;
                    e.1 += f64::from(f0.value(i));
                    e.2 = e.2.max(f64::from(f1.value(i)));
                }
            }
        }
    }
    // The job read to the end of the input, so every window was emitted (flushed at the end).
    let text = std::fs::read_to_string(run_dir.join("windows.jsonl")).unwrap();
    let mut got: BTreeMap<(i64, String), Agg> = BTreeMap::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let start = epoch_ms(&v["window_start"]);
        assert_eq!(epoch_ms(&v["window_end"]) - start, 30_000, "{line}");
        let count = v["count"].as_u64().unwrap();
        let key = (start, v["cat"].as_str().unwrap().to_string());
        let previous = got.insert(
            key,
            (
                count,
                v["mean_f0"].as_f64().unwrap() * count as f64,
                v["peak"].as_f64().unwrap(),
            ),
        );
        assert!(previous.is_none(), "window written twice: {line}");
    }
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
    for (key, (count, sum, peak)) in &expected {
        let (c, s, p) = got[key];
        assert_eq!(c, *count, "{key:?}");
        assert!(
            (s - sum).abs() < 1e-3 * sum.abs().max(1.0),
            "{key:?}: {s} vs {sum}"
        );
        assert!((p - peak).abs() < 1e-6, "{key:?}: {p} vs {peak}");
    }
}

#[test]
fn prequential_accuracy_drops_at_a_drift_and_rises_again() {
    use arrow::array::{Array, TimestampMicrosecondArray};
    use millrace::connectors::parquet::{ParquetDataset, ScanOptions};

    let Some(broker) = kafka() else { return };
    let dir = scratch("stream-drift");
    let topic = unique("drift");
    // One partition read by one worker: the records arrive in time order, so the drift is sharp.
    fill_topic(broker, &topic, 1, 16_000, &dir);
    // Half-way through the rule flips: label → 1 − label.
    let data = ParquetDataset::open_path(dir.join("rows")).unwrap();
    let mut times = Vec::new();
    for unit in data.plan(1).into_iter().flatten() {
        for item in data.read_unit(&unit, &ScanOptions::default()).unwrap() {
            let (_, batch) = item.unwrap();
            let ts = batch.column_by_name("ts").unwrap().clone();
            let ts = ts
                .as_any()
                .downcast_ref::<TimestampMicrosecondArray>()
                .unwrap();
            times.extend((0..ts.len()).map(|i| ts.value(i)));
        }
    }
    times.sort_unstable();
    let middle = chrono::DateTime::from_timestamp_micros(times[times.len() / 2])
        .unwrap()
        .format("%Y-%m-%d %H:%M:%S%.6f");
    let text = format!(
        r#"
name = "drift"

[stream]
bootstrap_servers = "{broker}"
topic = "{topic}"
columns = ["f0", "f1", "f2", "f3", "f4", "f5", "f6", "f7", "f8", "f9", "f10", "f11", "f12", "f13", "f14", "f15", "cat", "ts", "label"]
schema = {{ f0 = "float32", f1 = "float32", f2 = "float32", f3 = "float32?", f4 = "float32", f5 = "float32", f6 = "float32", f7 = "float32", f8 = "float32", f9 = "float32", f10 = "float32", f11 = "float32", f12 = "float32", f13 = "float32", f14 = "float32", f15 = "float32", cat = "string", ts = "timestamp_us", label = "int8" }}
warmup_records = 500
max_batch_records = 100
publish_every_steps = 20
checkpoint_every_s = 0
checkpoint_every_steps = 1000
checkpoint_dir = "{checkpoints}"
prequential_window = 1000

[preprocess]
sql = "SELECT * EXCLUDE (label, ts), CAST(CASE WHEN ts < TIMESTAMP '{middle}' THEN label ELSE 1 - label END AS BIGINT) AS target FROM input"
standardize = ["f0", "f1", "f2", "f3", "f4", "f5", "f6", "f7", "f8", "f9", "f10", "f11", "f12", "f13", "f14", "f15"]
one_hot = ["cat"]
nulls = "mean"
label = "target"

[train]
model = {{ kind = "logistic" }}
optimizer = {{ kind = "adam" }}
lr = 0.05
log_every = 5
"#,
        checkpoints = dir.join("checkpoints").display()
    );
    let (summary, run_dir) = run_stream(parse(&text), None, config(1, &dir.join("run"))).unwrap();
    assert_eq!(summary.rows_trained, 16_000);
    // The prequential accuracy over the last 1,000 records, step by step.
    let curve: Vec<(u64, f64)> = std::fs::read_to_string(run_dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["prequential"] == true)
        .map(|v| (v["step"].as_u64().unwrap(), v["accuracy"].as_f64().unwrap()))
        .collect();
    let steps = curve.last().unwrap().0;
    let at = |fraction: f64| {
        let step = (steps as f64 * fraction) as u64;
        curve.iter().find(|(s, _)| *s >= step).unwrap().1
    };
    let before = at(0.45);
    let worst = curve
        .iter()
        .filter(|(s, _)| *s > steps / 2)
        .map(|(_, a)| *a)
        .fold(1.0, f64::min);
    let end = curve.last().unwrap().1;
    // A logistic model reaches about 0.69 on this (non-linear) rule.
    assert!(
        before > 0.6,
        "learned the first rule: {before}; curve {curve:?}"
    );
    assert!(
        worst < 0.5,
        "the drift shows: worst {worst}; curve {curve:?}"
    );
    assert!(
        end > before - 0.05 && end > worst + 0.15,
        "recovered: {before} → {worst} → {end}; curve {curve:?}"
    );
    let final_metrics = summary.prequential.unwrap();
    assert_eq!(final_metrics.accuracy, Some(end));
}

#[test]
fn the_preprocessing_can_be_fitted_on_a_dataset_before_the_stream_starts() {
    let Some(broker) = kafka() else { return };
    let dir = scratch("stream-fit-on");
    let topic = unique("fit-on");
    fill_topic(broker, &topic, 2, 1500, &dir);
    // A different dataset (e.g. yesterday's Spark output) to fit the statistics on.
    let batch = dir.join("batch");
    millrace::data::generate_tabular(&batch, 700, 1, 9, false).unwrap();
    let text = format!(
        "{}\n[ingest]\npath = \"{}\"\n",
        counting_pipeline(broker, &topic, &dir.join("checkpoints"), ""),
        batch.display()
    );
    let (summary, run_dir) = run_stream(parse(&text), None, config(2, &dir.join("run"))).unwrap();
    assert_eq!(summary.rows_trained, 1500);
    let bundle = ModelBundle::load(&run_dir.join("model")).unwrap();
    // Fitted on the dataset's 700 rows, not on the stream's first `warmup_records` (200).
    assert_eq!(bundle.preprocess.rows_fitted(), 700);
    assert_counted(&run_dir.join("model"), 1500);
}

#[test]
fn avro_records_train_like_json_ones() {
    use millrace::connectors::avro::{AvroFraming, parse_schema};
    use millrace::connectors::kafka::{KafkaSink, SinkFormat};
    use millrace::connectors::parquet::{ParquetDataset, ScanOptions};

    let Some(broker) = kafka() else { return };
    let dir = scratch("stream-avro");
    let topic = unique("avro");
    let options = KafkaOptions::new(broker);
    create_topic(&options, &topic, 2, Duration::from_secs(30)).unwrap();
    let rows = dir.join("rows");
    millrace::data::generate_tabular(&rows, 2000, 1, 5, false).unwrap();
    let schema_text = r#"{"type": "record", "name": "Row", "fields": [
        {"name": "f0", "type": "float"},
        {"name": "f3", "type": ["null", "float"]},
        {"name": "cat", "type": "string"},
        {"name": "label", "type": "int"}
    ]}"#;
    let data = ParquetDataset::open_path(&rows).unwrap();
    let mut sink = KafkaSink::new(
        &options,
        &topic,
        SinkFormat::Avro {
            schema: parse_schema(schema_text).unwrap(),
            framing: AvroFraming::Confluent,
        },
        &data.schema(),
        None,
    )
    .unwrap();
    for unit in data.plan(1).into_iter().flatten() {
        for item in data.read_unit(&unit, &ScanOptions::default()).unwrap() {
            sink.write(&item.unwrap().1).unwrap();
        }
    }
    sink.flush(Duration::from_secs(30)).unwrap();
    let text = counting_pipeline(broker, &topic, &dir.join("checkpoints"), "").replace(
        r#"columns = ["f0", "f3", "cat", "ts", "label"]
schema = { f0 = "float32", f3 = "float32?", cat = "string", ts = "timestamp_us", label = "int8" }"#,
        &format!(
            "format = \"avro\"\navro_framing = \"confluent\"\navro_schema = '''{schema_text}'''"
        ),
    );
    let (summary, run_dir) = run_stream(parse(&text), None, config(2, &dir.join("run"))).unwrap();
    assert_eq!(summary.rows_read, 2000);
    assert_eq!(summary.rows_trained, 2000);
    assert_counted(&run_dir.join("model"), 2000);
}
