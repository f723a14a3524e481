//! Sinks anywhere: `[[sink]]` writes the records as read or the preprocessed rows to a Parquet
//! dataset (Spark's layout, `_SUCCESS`, read back here) or a Kafka topic (consumed back), from a
//! batch job and from a streaming job, without changing what is trained; bad sinks are errors
//! before any work.

use std::time::Duration;

use arrow::array::{Array, StringArray};
use millrace::connectors::kafka::{KafkaOptions, create_topic};
use millrace::connectors::parquet::{ParquetDataset, ScanOptions};
use millrace::dsl::Sink;
use millrace::operators::spec::SinkPoint;
use millrace::prelude::*;
use millrace::run::run_stream;

use crate::common::{pipeline_toml, scratch, tabular};
use crate::quickstart::try_run_toml;
use crate::services::kafka;
use crate::streaming::{config, counting_pipeline, fill_topic, parse, unique};
use crate::watermarks::read_all;

/// Every row of the dataset at `path` (read with millrace's reader, which reads Spark's layout).
fn read_dataset(path: &std::path::Path) -> Vec<arrow::array::RecordBatch> {
    let dataset = ParquetDataset::open_path(path).unwrap();
    let mut out = Vec::new();
    for unit in dataset.plan(1).remove(0) {
        let options = ScanOptions {
            projection: None,
            batch_size: 65_536,
        };
        for item in dataset.read_unit(&unit, &options).unwrap() {
            out.push(item.unwrap().1);
        }
    }
    out
}

fn rows(batches: &[arrow::array::RecordBatch]) -> u64 {
    batches.iter().map(|b| b.num_rows() as u64).sum()
}

/// Training rows of the tabular dataset: those whose f3 is not null.
fn kept_rows(path: &std::path::Path) -> (u64, u64) {
    let all = read_dataset(path);
    let kept = all
        .iter()
        .map(|b| (b.num_rows() - b.column_by_name("f3").unwrap().null_count()) as u64)
        .sum();
    (rows(&all), kept)
}

#[test]
fn parquet_sinks_after_ingest_and_after_the_preprocess_leave_training_unchanged() {
    let (train, holdout) = tabular();
    let dir = scratch("sinks-parquet");
    let features = dir.join("features");
    let raw = dir.join("raw");
    let plain = try_run_toml(&pipeline_toml(train, holdout, 1), 2, &dir.join("plain")).unwrap();
    let text = format!(
        r#"{}
[[sink]]
name = "features"
parquet = "{}"
columns = ["f0", "f1", "label"]
partition_by = ["cat"]

[[sink]]
name = "raw"
after = "ingest"
parquet = "{}"
"#,
        pipeline_toml(train, holdout, 1),
        features.display(),
        raw.display()
    );
    let summary = try_run_toml(&text, 2, &dir.join("sinks")).unwrap();
    // Training saw the same rows in the same split: the same model, bit for bit.
    assert_eq!(summary.parameter_checksum, plain.parameter_checksum);

    let (all, kept) = kept_rows(train);
    assert!(features.join("_SUCCESS").exists() && raw.join("_SUCCESS").exists());
    let written = read_dataset(&features);
    assert_eq!(rows(&written), kept, "every preprocessed row, once");
    // The columns asked for, plus `cat` from the partition directories.
    let schema = written[0].schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, ["f0", "f1", "label", "cat"]);
    let cat = written[0]
        .column_by_name("cat")
        .unwrap()
        .as_any()
        .downcast_ref::<StringArray>()
        .map(|c| c.value(0).to_string())
        .unwrap_or_default();
    assert!(cat.starts_with('c'), "{cat}");
    // Two workers wrote their own part files.
    let parts = std::fs::read_dir(features.join(format!("cat={cat}")))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "parquet")
        })
        .count();
    assert_eq!(parts, 2);
    // The raw records: every row read, every column of the dataset.
    let raw_rows = read_dataset(&raw);
    assert_eq!(rows(&raw_rows), all);
    assert_eq!(summary.rows_read, all);
    assert_eq!(
        raw_rows[0].num_columns(),
        ParquetDataset::open_path(train)
            .unwrap()
            .schema()
            .fields()
            .len()
    );
    // The sink operators are metered like every other.
    let op = |name: &str| {
        summary
            .operators
            .iter()
            .find(|o| o.operator == name)
            .map(|o| o.rows_in)
    };
    assert_eq!(op("sink/features"), Some(kept));
    assert_eq!(op("sink/raw"), Some(all));
    // A second run into the same place is refused (output.mode = "error")...
    let err = try_run_toml(&text, 1, &dir.join("again")).unwrap_err();
    assert!(err.contains("already holds data"), "{err}");
}

#[test]
fn bad_sinks_are_errors_before_work() {
    let (train, holdout) = tabular();
    let base = pipeline_toml(train, holdout, 1);
    let dir = scratch("sinks-bad");
    for (sink, expected) in [
        (
            r#"name = "s"
parquet = "/tmp/x"
columns = ["nope"]"#,
            "sink 's' writes column 'nope', which is not there after preprocess",
        ),
        (
            r#"name = "s"
after = "ingest"
parquet = "/tmp/x"
columns = ["f0_log"]"#,
            "not there after ingest",
        ),
        (r#"name = "s""#, "needs exactly one of"),
        (
            r#"name = "s"
kafka = { bootstrap_servers = "127.0.0.1:1", topic = "t" }
partition_by = ["cat"]"#,
            "partition_by is for Parquet sinks",
        ),
        (
            r#"name = "s"
after = "the_end"
parquet = "/tmp/x""#,
            "unknown variant",
        ),
    ] {
        let text = format!("{base}\n[[sink]]\n{sink}\n");
        let err = try_run_toml(&text, 1, &dir).unwrap_err();
        assert!(err.contains(expected), "{sink}: {err}");
        assert!(!dir.join("run/metrics.jsonl").exists());
    }
    let text = format!(
        "{base}\n[[sink]]\nname = \"a\"\nparquet = \"/tmp/a\"\n\n[[sink]]\nname = \"a\"\nparquet = \"/tmp/b\"\n"
    );
    let err = try_run_toml(&text, 1, &dir).unwrap_err();
    assert!(err.contains("two sinks are called 'a'"), "{err}");
}

#[test]
fn the_dsl_places_sinks_where_they_are_called() {
    let (train, holdout) = tabular();
    let spec = Pipeline::new("it")
        .ingest_parquet(train)
        .sink(Sink::parquet("raw", "/tmp/raw"))
        .sql("SELECT * FROM input WHERE f3 IS NOT NULL")
        .sink(Sink::kafka("rows", "127.0.0.1:9092", "rows").key("cat"))
        .sink(Sink::parquet("early", "/tmp/early").after(SinkPoint::Ingest))
        .standardize(["f0"])
        .label("label")
        .train(Train::logistic())
        .evaluate_on(holdout)
        .build()
        .unwrap();
    let points: Vec<(&str, SinkPoint)> = spec
        .sink
        .iter()
        .map(|s| (s.name.as_str(), s.after))
        .collect();
    assert_eq!(
        points,
        [
            ("raw", SinkPoint::Ingest),
            ("rows", SinkPoint::Preprocess),
            ("early", SinkPoint::Ingest)
        ]
    );
    assert_eq!(
        spec.sink[1].kafka.as_ref().unwrap().key.as_deref(),
        Some("cat")
    );
}

#[test]
fn kafka_sinks_from_a_batch_job_and_from_a_stream() {
    let Some(broker) = kafka() else { return };
    let options = KafkaOptions::new(broker);
    // A batch job: the preprocessed rows as JSON messages keyed by `cat`.
    let (train, holdout) = tabular();
    let topic = unique("sink-batch");
    create_topic(&options, &topic, 2, Duration::from_secs(30)).unwrap();
    let text = format!(
        r#"{}
[[sink]]
name = "rows"
kafka = {{ bootstrap_servers = "{broker}", topic = "{topic}", key = "cat" }}
columns = ["f0", "label"]
"#,
        pipeline_toml(train, holdout, 1)
    );
    try_run_toml(&text, 2, &scratch("sinks-kafka-batch")).unwrap();
    let (_, kept) = kept_rows(train);
    let messages = read_all(broker, &topic, kept as usize);
    assert_eq!(messages.len() as u64, kept);
    let first: serde_json::Value =
        serde_json::from_slice(messages[0].payload.as_deref().unwrap()).unwrap();
    let keys: Vec<&str> = first
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    // The columns asked for and the key column (serde_json lists object keys sorted).
    assert_eq!(keys, ["cat", "f0", "label"]);
    assert_eq!(
        messages[0].key.as_deref(),
        Some(first["cat"].as_str().unwrap().as_bytes())
    );

    // A streaming job: every record as read goes to a topic, while the model trains on it.
    let dir = scratch("sinks-kafka-stream");
    let source = unique("sink-stream-in");
    fill_topic(broker, &source, 4, 1500, &dir);
    let out = unique("sink-stream-out");
    create_topic(&options, &out, 1, Duration::from_secs(30)).unwrap();
    let text = format!(
        r#"{}
[[sink]]
name = "copy"
after = "ingest"
kafka = {{ bootstrap_servers = "{broker}", topic = "{out}" }}
"#,
        counting_pipeline(broker, &source, &dir.join("ckpt"), "")
    );
    let (summary, _) = run_stream(parse(&text), None, config(2, &dir.join("run"))).unwrap();
    assert_eq!(summary.rows_trained, 1500);
    let copies = read_all(broker, &out, 1500);
    assert_eq!(copies.len(), 1500, "every record once (no restart here)");
    let record: serde_json::Value =
        serde_json::from_slice(copies[0].payload.as_deref().unwrap()).unwrap();
    assert!(
        record.get("f0").is_some() && record.get("label").is_some(),
        "{record}"
    );
    // A Parquet sink in a streaming job is refused, saying what to use.
    let text = text.replace(
        &format!("kafka = {{ bootstrap_servers = \"{broker}\", topic = \"{out}\" }}"),
        "parquet = \"/tmp/x\"",
    );
    let err = millrace::operators::streaming::StreamPlan::new(parse(&text))
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("a streaming job's sinks write Kafka topics"),
        "{err}"
    );
}
