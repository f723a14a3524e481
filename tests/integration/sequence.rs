//! A model over list columns, written as a user writes one: `seq_conv`, a 1-D convolution with a
//! masked max-pool over a `List<Float32>` of readings, plus a mean of embeddings over a
//! `List<Utf8>` of tags. It trains from a pipeline file on 2 workers (bit-identical replicas are
//! checked by the job), and the server answers `[N, L]` list tensors (shorter rows end in nulls)
//! with the in-process predictions.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Once, OnceLock};

use arrow::array::{
    Array, ArrayRef, Float32Array, Int64Array, ListBuilder, RecordBatch, StringBuilder,
};
use arrow::array::{Float32Builder, ListArray};
use millrace::ml::bundle::{ModelBundle, Predictor};
use millrace::ml::burn;
use millrace::ml::model::{FeatureLayout, Input, Inputs, Model, ModelShape};
use millrace::operators::serve::ServeOptions;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use burn::module::Module;
use burn::nn::conv::{Conv1d, Conv1dConfig};
use burn::nn::{Embedding, EmbeddingConfig, Initializer, Linear, LinearConfig, PaddingConfig1d};
use burn::tensor::Tensor;
use burn::tensor::activation::relu;
use burn::tensor::backend::Backend;

use crate::common::scratch;
use crate::quickstart::try_run_toml;
use crate::serve_harness::{Server, close, get, one_model, post_json, probabilities};

#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
struct SeqConvConfig {
    #[serde(default = "default_channels")]
    channels: usize,
    #[serde(default = "default_kernel")]
    kernel: usize,
    #[serde(default = "default_tag_dim")]
    tag_dim: usize,
}

fn default_channels() -> usize {
    8
}
fn default_kernel() -> usize {
    3
}
fn default_tag_dim() -> usize {
    4
}

#[derive(Module, Debug)]
struct SeqConvModule<B: Backend> {
    conv: Conv1d<B>,
    tags: Embedding<B>,
    head: Linear<B>,
}

struct SeqConv;

impl Model for SeqConv {
    type Config = SeqConvConfig;
    type Module<B: Backend> = SeqConvModule<B>;

    fn inputs(_: &SeqConvConfig, _: &FeatureLayout) -> Vec<Input> {
        vec![
            Input::Dense,
            Input::Sequence("readings".into()),
            Input::Sequence("tags".into()),
        ]
    }

    fn validate(config: &SeqConvConfig, _: &ModelShape) -> millrace::ml::Result<()> {
        if config.kernel.is_multiple_of(2) {
            return Err(millrace::ml::Error::config(
                "train.model.kernel",
                "must be odd (the convolution keeps the sequence length)",
            ));
        }
        Ok(())
    }

    fn init<B: Backend>(
        config: &SeqConvConfig,
        shape: &ModelShape,
        device: &B::Device,
    ) -> SeqConvModule<B> {
        let tags = shape
            .layout
            .sequence_input("tags")
            .and_then(|s| s.cardinality)
            .unwrap_or(1);
        SeqConvModule {
            conv: Conv1dConfig::new(1, config.channels, config.kernel)
                .with_padding(PaddingConfig1d::Same)
                .init(device),
            tags: EmbeddingConfig::new(tags, config.tag_dim)
                .with_initializer(Initializer::Normal {
                    mean: 0.0,
                    std: 0.1,
                })
                .init(device),
            head: LinearConfig::new(
                config.channels + config.tag_dim + shape.layout.dense,
                shape.output_dim(),
            )
            .init(device),
        }
    }

    fn forward<B: Backend>(
        net: &SeqConvModule<B>,
        inputs: &Inputs<B>,
    ) -> millrace::ml::Result<Tensor<B, 2>> {
        let readings = inputs.sequence("readings")?;
        let [rows, len] = readings.values.dims();
        let h = relu(
            net.conv
                .forward(readings.values.clone().reshape([rows, 1, len])),
        );
        let channels = h.dims()[1];
        // Max over the positions that hold a reading; padding is pushed far below zero.
        let padding = readings
            .mask
            .clone()
            .reshape([rows, 1, len])
            .sub_scalar(1.0)
            .mul_scalar(1e4);
        let pooled = (h + padding)
            .max_dim(2)
            .reshape([rows, channels])
            .clamp_min(0.0);
        let tags = inputs.sequence("tags")?;
        let tag_mean = tags.masked_mean(net.tags.forward(tags.codes()));
        Ok(net
            .head
            .forward(Tensor::cat(vec![pooled, tag_mean, inputs.dense()?], 1)))
    }
}

fn register() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| millrace::ml::registry::register_model::<SeqConv>("seq_conv").unwrap());
}

/// Deterministic rows: `readings` (4..=20 values, N(0,1) noise; half the rows hold a "burst" of
/// two adjacent high values somewhere), `tags` (1..=4 of six words; "alert" in a quarter of the
/// rows), `x` (noise) and `label` = burst or alert, with 3 % of labels flipped. Row 17 of every
/// 1,000 has a null `readings` list (dead-lettered).
fn rows(n: usize, seed: u64) -> RecordBatch {
    let mut state = seed;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 11) as f64) / ((1u64 << 53) as f64)
    };
    let words = ["red", "green", "blue", "gold", "grey", "alert"];
    let mut readings = ListBuilder::new(Float32Builder::new());
    let mut tags = ListBuilder::new(StringBuilder::new());
    let (mut x, mut label) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for row in 0..n {
        let len = 4 + (next() * 17.0) as usize;
        let burst = next() < 0.5;
        let at = (next() * (len - 1) as f64) as usize;
        for i in 0..len {
            let v = if burst && (i == at || i == at + 1) {
                3.0 + 0.3 * normal(&mut next)
            } else {
                normal(&mut next)
            };
            readings.values().append_value(v as f32);
        }
        readings.append(row % 1000 != 17);
        let alert = next() < 0.25;
        let count = 1 + (next() * 4.0) as usize;
        let alert_at = (next() * count as f64) as usize;
        for i in 0..count {
            let word = if alert && i == alert_at {
                "alert"
            } else {
                words[(next() * 5.0) as usize]
            };
            tags.values().append_value(word);
        }
        tags.append(true);
        x.push(normal(&mut next) as f32);
        let y = burst || alert;
        label.push(i64::from(y != (next() < 0.03)));
    }
    RecordBatch::try_from_iter([
        ("readings", Arc::new(readings.finish()) as ArrayRef),
        ("tags", Arc::new(tags.finish()) as ArrayRef),
        ("x", Arc::new(Float32Array::from(x)) as ArrayRef),
        ("label", Arc::new(Int64Array::from(label)) as ArrayRef),
    ])
    .unwrap()
}

fn write_parquet(path: &Path, batch: &RecordBatch) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    writer.write(batch).unwrap();
    writer.close().unwrap();
}

/// A standard normal draw from two uniform ones (Box–Muller).
fn normal(u: &mut impl FnMut() -> f64) -> f64 {
    let (a, b) = (u().max(1e-12), u());
    (-2.0 * a.ln()).sqrt() * (std::f64::consts::TAU * b).cos()
}

/// The train and holdout files, written once per test run.
fn data() -> &'static (PathBuf, PathBuf) {
    static DATA: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    DATA.get_or_init(|| {
        let dir = scratch("sequence-data");
        let (train, holdout) = (dir.join("train.parquet"), dir.join("holdout.parquet"));
        write_parquet(&train, &rows(6_000, 1));
        write_parquet(&holdout, &rows(2_000, 2));
        (train, holdout)
    })
}

fn pipeline(sequence: &str) -> String {
    let (train, holdout) = data();
    format!(
        r#"name = "sequence"

[ingest]
path = "{}"
batch_rows = 2048

[preprocess]
standardize = ["x"]
sequence = {sequence}
label = "label"

[train]
model = {{ kind = "seq_conv", channels = 8 }}
optimizer = {{ kind = "adam" }}
lr = 0.02
batch_size = 64
epochs = 2
seed = 7

[evaluate]
path = "{}"
"#,
        train.display(),
        holdout.display()
    )
}

const SEQUENCES: &str =
    r#"[{ column = "readings", max_len = 16 }, { column = "tags", max_len = 4 }]"#;

/// `[N, L]` tensor data of a list column, rows ending in nulls.
fn padded(list: &ListArray, rows: std::ops::Range<usize>, len: usize) -> Vec<Value> {
    let mut out = Vec::with_capacity(rows.len() * len);
    for r in rows {
        let row = list.value(r);
        for i in 0..len {
            out.push(if i < row.len() {
                millrace::connectors::inspect::json_value(row.as_ref(), i)
            } else {
                Value::Null
            });
        }
    }
    out
}

#[test]
fn a_convolution_over_a_list_column_trains_on_two_workers_and_serves() {
    register();
    let dir = scratch("sequence-conv");
    let summary = try_run_toml(&pipeline(SEQUENCES), 2, &dir).unwrap();
    // Row 17 of every 1,000 has a null list: 6 in training, 2 in the holdout.
    assert_eq!(summary.rows_dead_lettered, 8, "{summary:?}");
    let eval = serde_json::to_value(summary.eval.as_ref().unwrap()).unwrap();
    let accuracy = eval["accuracy"].as_f64().unwrap();
    let holdout = rows(2_000, 2);
    let labels = holdout
        .column_by_name("label")
        .unwrap()
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap();
    let ones = labels.values().iter().filter(|&&y| y == 1).count() as f64 / 2000.0;
    eprintln!(
        "seq_conv holdout accuracy {accuracy:.4}, positives {ones:.4}, train {:.1} s",
        summary.train_s
    );
    // About 61 % of the rows are positive; 3 % of labels are flipped. 0.951 when written.
    assert!(
        accuracy > 0.9 && accuracy > ones + 0.25,
        "accuracy {accuracy}, positives {ones}"
    );

    let model_dir = dir.join("run/model");
    let bundle = ModelBundle::load(&model_dir).unwrap();
    assert_eq!(bundle.model.kind, "seq_conv");
    let layout = FeatureLayout::of(&bundle.preprocess).unwrap();
    assert_eq!(layout.dense, 1);
    let tags = layout.sequence_input("tags").unwrap();
    // Six words plus "unseen".
    assert_eq!(
        (tags.offset, tags.max_len, tags.cardinality),
        (18, 4, Some(7))
    );

    // In process: the first 40 holdout rows (row 17's null list is dead-lettered).
    let raw = holdout.slice(0, 40);
    let features = bundle.preprocess.transform(&raw, false).unwrap();
    assert_eq!(features.rows, 39);
    let expected = Predictor::new(&bundle)
        .unwrap()
        .predict(&features.x, features.rows)
        .unwrap();

    let options = ServeOptions {
        grpc_addr: Some("127.0.0.1:0".parse().unwrap()),
        ..ServeOptions::default()
    };
    let server = Server::start(one_model("seq", &model_dir, &options), options);
    tritonclient_sends_list_tensors(&server, &bundle, &holdout);
    let meta = get(server.addr, "/v2/models/seq").json();
    let inputs = meta["inputs"].as_array().unwrap();
    let readings_meta = inputs.iter().find(|i| i["name"] == "readings").unwrap();
    assert_eq!(readings_meta["shape"], json!([-1, -1]), "{meta}");
    assert_eq!(readings_meta["datatype"], "FP32");

    // Rows 0..17 and 18..40 (row 17 would be refused: its list is null).
    let list = |name: &str| {
        raw.column_by_name(name)
            .unwrap()
            .as_any()
            .downcast_ref::<ListArray>()
            .unwrap()
            .clone()
    };
    let (readings, tag_lists) = (list("readings"), list("tags"));
    let x = raw.column_by_name("x").unwrap();
    let mut served = Vec::new();
    for range in [0..17, 18..40] {
        let n = range.len();
        let xs: Vec<Value> = range
            .clone()
            .map(|r| millrace::connectors::inspect::json_value(x.as_ref(), r))
            .collect();
        let request = json!({"inputs": [
            {"name": "readings", "shape": [n, 20], "datatype": "FP32",
             "data": padded(&readings, range.clone(), 20)},
            {"name": "tags", "shape": [n, 4], "datatype": "BYTES",
             "data": padded(&tag_lists, range.clone(), 4)},
            {"name": "x", "shape": [n], "datatype": "FP32", "data": xs},
        ]});
        let reply = post_json(server.addr, "/v2/models/seq/infer", &request);
        assert_eq!(
            reply.status,
            200,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
        served.extend(probabilities(&reply.json()));
    }
    assert_eq!(served.len(), expected.len());
    for (g, w) in served.iter().zip(&expected) {
        assert!(close(*g, *w), "served {g}, in process {w}");
    }

    // A null reading inside a row is refused by the preprocessing (nulls = dead_letter): a 400
    // naming the column and the element.
    let request = json!({"inputs": [
        {"name": "readings", "shape": [1, 3], "datatype": "FP32", "data": [[0.5, null, 1.0]]},
        {"name": "tags", "shape": [1, 1], "datatype": "BYTES", "data": [["red"]]},
        {"name": "x", "shape": [1], "datatype": "FP32", "data": [0.0]},
    ]});
    let reply = post_json(server.addr, "/v2/models/seq/infer", &request);
    let body = String::from_utf8_lossy(&reply.body).to_string();
    assert!(
        reply.status == 400 && body.contains("readings") && body.contains("element 1"),
        "{} {body}",
        reply.status
    );
    // A list column sent as a flat tensor: the shape it needs is named.
    let request = json!({"inputs": [
        {"name": "readings", "shape": [1], "datatype": "FP32", "data": [0.5]},
        {"name": "tags", "shape": [1, 1], "datatype": "BYTES", "data": [["red"]]},
        {"name": "x", "shape": [1], "datatype": "FP32", "data": [0.0]},
    ]});
    let reply = post_json(server.addr, "/v2/models/seq/infer", &request);
    let body = String::from_utf8_lossy(&reply.body).to_string();
    assert!(
        reply.status == 400 && body.contains("[N, L]"),
        "{} {body}",
        reply.status
    );
}

#[test]
fn a_sequence_the_model_needs_but_the_preprocessing_lacks_is_an_error_before_work() {
    register();
    let text = pipeline(r#"[{ column = "readings", max_len = 16 }]"#);
    let dir = scratch("sequence-missing");
    let err = try_run_toml(&text, 1, &dir).unwrap_err();
    assert!(
        err.contains("`seq_conv`")
            && err.contains("sequence:tags")
            && err.contains("train.features.sequence"),
        "{err}"
    );
    assert!(!dir.join("run/metrics.jsonl").exists());
    // A sequence over a column that is not a list names the column and what it must be.
    let text = pipeline(r#"[{ column = "x", max_len = 4 }]"#).replace("standardize = [\"x\"]", "");
    let err = try_run_toml(&text, 1, &scratch("sequence-not-a-list")).unwrap_err();
    assert!(
        err.contains("preprocess.sequence") && err.contains("'x'") && err.contains("a list"),
        "{err}"
    );
}

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
fn tritonclient_sends_list_tensors(server: &Server, bundle: &ModelBundle, holdout: &RecordBatch) {
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
