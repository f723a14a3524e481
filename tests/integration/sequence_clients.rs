//! The sequence model's list columns through clients millrace did not write: JSON records with
//! list columns on a real Kafka topic (trained online), and tritonclient sending `[N, L]` list
//! tensors over HTTP (binary and JSON) and gRPC.

use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, Float32Array, Float32Builder, ListArray, ListBuilder, RecordBatch,
    StringBuilder,
};
use millrace::ml::bundle::{ModelBundle, Predictor};
use serde_json::{Value, json};

use crate::common::scratch;
use crate::sequence::{SEQUENCES, register, rows};
use crate::serve_harness::Server;

/// The same rows as JSON records on a Kafka topic: list columns declared `list<float32>` and
/// `list<string>` in `[stream] schema` train the user model online; a null list and a bad
/// element are dead letters naming what was wrong.
#[test]
fn list_columns_stream_from_kafka_json_into_the_sequence_model() {
    use millrace::connectors::kafka::{KafkaOptions, KafkaProducer};
    let Some(broker) = crate::services::kafka() else {
        return;
    };
    register();
    let dir = scratch("sequence-stream");
    let topic = crate::streaming::unique("sequence");
    let options = KafkaOptions::new(broker);
    millrace::connectors::kafka::create_topic(
        &options,
        &topic,
        2,
        std::time::Duration::from_secs(30),
    )
    .unwrap();
    let batch = rows(6_000, 3);
    let mut writer = arrow::json::LineDelimitedWriter::new(Vec::new());
    writer.write(&batch).unwrap();
    writer.finish().unwrap();
    let lines = writer.into_inner();
    let producer = KafkaProducer::new(&options, true).unwrap();
    let mut sent = 0;
    for line in lines.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        producer.send(&topic, None, line, &[]).unwrap();
        sent += 1;
    }
    let bad = br#"{"readings": [0.5, "high"], "tags": ["red"], "x": 0.1, "label": 1}"#;
    producer.send(&topic, None, bad, &[]).unwrap();
    producer.flush(std::time::Duration::from_secs(60)).unwrap();
    assert_eq!(sent, 6_000);

    let text = format!(
        r#"name = "sequence-stream"

[stream]
bootstrap_servers = "{broker}"
topic = "{topic}"
group_id = "{topic}-group"
columns = ["readings", "tags", "x", "label"]
schema = {{ readings = "list<float32>?", tags = "list<string>", x = "float32", label = "int64" }}
warmup_records = 500
max_batch_records = 16
prequential_window = 2000
checkpoint_dir = "{ckpt}"
poll_timeout_ms = 10
publish_every_steps = 5

[preprocess]
standardize = ["x"]
sequence = {SEQUENCES}
label = "label"

[train]
model = {{ kind = "seq_conv", channels = 8 }}
optimizer = {{ kind = "adam" }}
lr = 0.02
"#,
        ckpt = dir.join("ckpt").display()
    );
    let (summary, run_dir) = millrace::run::run_stream(
        crate::streaming::parse(&text),
        None,
        crate::streaming::config(2, &dir.join("run")),
    )
    .unwrap();
    // Rows 17, 1017, …, 5017 have a null `readings` list; and the bad message.
    assert_eq!(summary.rows_read, 6_001, "{summary:?}");
    assert_eq!(summary.rows_dead_lettered, 7, "{summary:?}");
    assert_eq!(summary.rows_trained, 5_994, "{summary:?}");
    let dead = std::fs::read_to_string(run_dir.join("dead_letters.jsonl")).unwrap();
    assert!(
        dead.contains(
            r#"field \"readings\" element 1: expected a number, found a string \"high\""#
        ),
        "{dead}"
    );
    assert_eq!(dead.matches("null list").count(), 6, "{dead}");
    // Test-then-train accuracy over the last 2,000 records, well above guessing the common
    // class (~0.6).
    let accuracy = serde_json::to_value(summary.prequential.as_ref().unwrap()).unwrap();
    let accuracy = accuracy["accuracy"].as_f64().unwrap();
    assert!(accuracy > 0.75, "prequential accuracy {accuracy}");
}

/// tritonclient (HTTP binary, HTTP JSON, gRPC) with `[N, L]` list tensors: holdout rows whose
/// lists are full (16 readings, 4 tags; binary tensors carry no nulls), answered with the
/// in-process predictions of the same lists.
pub(super) fn tritonclient_sends_list_tensors(
    server: &Server,
    bundle: &ModelBundle,
    holdout: &RecordBatch,
) {
    let Some(python) = crate::serve_clients::py_clients() else {
        return;
    };
    let list = |name: &str| {
        holdout
            .column_by_name(name)
            .unwrap()
            .as_any()
            .downcast_ref::<ListArray>()
            .unwrap()
            .clone()
    };
    let (readings, tags) = (list("readings"), list("tags"));
    let x = holdout
        .column_by_name("x")
        .unwrap()
        .as_any()
        .downcast_ref::<Float32Array>()
        .unwrap()
        .clone();
    let rows: Vec<usize> = (0..holdout.num_rows())
        .filter(|&r| readings.is_valid(r) && readings.value_length(r) >= 16)
        .filter(|&r| tags.value_length(r) == 4)
        .take(20)
        .collect();
    assert_eq!(rows.len(), 20);
    // The last 16 readings (what the preprocessing keeps of a longer list) and the 4 tags.
    let mut reading_rows = Vec::new();
    let mut tag_rows = Vec::new();
    let mut readings_out = ListBuilder::new(Float32Builder::new());
    let mut tags_out = ListBuilder::new(StringBuilder::new());
    for &r in &rows {
        let values = readings.value(r);
        let values = values.as_any().downcast_ref::<Float32Array>().unwrap();
        let last: Vec<f32> = values.values()[values.len() - 16..].to_vec();
        readings_out.values().append_slice(&last);
        readings_out.append(true);
        reading_rows.push(last);
        let words = tags.value(r);
        let words = words
            .as_any()
            .downcast_ref::<arrow::array::StringArray>()
            .unwrap();
        let words: Vec<String> = words.iter().map(|w| w.unwrap().to_string()).collect();
        for w in &words {
            tags_out.values().append_value(w);
        }
        tags_out.append(true);
        tag_rows.push(words);
    }
    let xs: Vec<f32> = rows.iter().map(|&r| x.value(r)).collect();
    let batch = RecordBatch::try_from_iter([
        ("readings", Arc::new(readings_out.finish()) as ArrayRef),
        ("tags", Arc::new(tags_out.finish()) as ArrayRef),
        ("x", Arc::new(Float32Array::from(xs.clone())) as ArrayRef),
    ])
    .unwrap();
    let features = bundle.preprocess.transform(&batch, false).unwrap();
    assert_eq!(features.rows, 20);
    let expected = Predictor::new(bundle)
        .unwrap()
        .predict(&features.x, features.rows)
        .unwrap();
    let cases = json!({
        "http": server.addr.to_string(),
        "grpc": server.grpc.unwrap().to_string(),
        "model": "seq",
        "inputs": [
            {"name": "readings", "datatype": "FP32", "values": reading_rows},
            {"name": "tags", "datatype": "BYTES", "values": tag_rows},
            {"name": "x", "datatype": "FP32", "values": xs},
        ],
        "expected": expected,
        "classes": expected.len() / 20,
    });
    let dir = scratch("sequence-tritonclient");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("cases.json");
    std::fs::write(&path, cases.to_string()).unwrap();
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/integration/py/kserve_lists.py");
    let out = std::process::Command::new(python)
        .arg(&script)
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "tritonclient with list tensors failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(report["answers"], 3, "{report}");
    assert_eq!(
        report["values_compared"],
        json!(3 * expected.len()),
        "{report}"
    );
}
