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

pub(super) fn register() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| millrace::ml::registry::register_model::<SeqConv>("seq_conv").unwrap());
}

/// Deterministic rows: `readings` (4..=20 values, N(0,1) noise; half the rows hold a "burst" of
/// two adjacent high values somewhere), `tags` (1..=4 of six words; "alert" in a quarter of the
/// rows), `x` (noise) and `label` = burst or alert, with 3 % of labels flipped. Row 17 of every
/// 1,000 has a null `readings` list (dead-lettered).
pub(super) fn rows(n: usize, seed: u64) -> RecordBatch {
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

pub(super) const SEQUENCES: &str =
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
    crate::sequence_clients::tritonclient_sends_list_tensors(&server, &bundle, &holdout);
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
