//! Streaming pipelines against a real Kafka-protocol broker, the parts beyond training: event-time
//! windows, a drifting stream, fitting on a dataset first, Avro records. Helpers are shared with
//! `streaming.rs`.

use std::time::Duration;

use millrace::connectors::kafka::{KafkaOptions, create_topic};
use millrace::ml::bundle::ModelBundle;
use millrace::run::run_stream;

use super::services::kafka;
use super::streaming::{
    assert_counted, config, counting_pipeline, fill_topic, parse, scratch, unique,
};

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
