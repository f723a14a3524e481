//! The served model answers exactly what in-process prediction gives, and names bad input.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;

use millrace::connectors::parquet::{ParquetDataset, ScanOptions};
use millrace::ml::bundle::{ModelBundle, Predictor};
use millrace::operators::preprocess::{SqlPlan, SqlRunner};
use millrace::operators::serve::{ModelRegistry, ServeOptions, serve};
use serde_json::{Value, json};

use crate::common::{pipeline_toml, scratch, tabular};
use crate::quickstart::run_toml;

/// One HTTP/1.1 request on a fresh connection; returns (status, body).
fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, Value) {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status: u16 = response[9..12].parse().unwrap();
    let (head, rest) = response.split_once("\r\n\r\n").unwrap();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        // Decode chunked encoding.
        let mut out = String::new();
        let mut rest = rest;
        loop {
            let (size, tail) = rest.split_once("\r\n").unwrap();
            let size = usize::from_str_radix(size.trim(), 16).unwrap();
            if size == 0 {
                break;
            }
            out.push_str(&tail[..size]);
            rest = &tail[size + 2..];
        }
        out
    } else {
        rest.to_string()
    };
    (
        status,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

#[test]
fn served_predictions_equal_in_process_predictions() {
    let (train, holdout) = tabular();
    let dir = scratch("serve");
    run_toml(&pipeline_toml(train, holdout, 1), 1, &dir);
    let model_dir = dir.join("run/model");

    // In process: the holdout's first rows through the bundled SQL, encoding and predictor.
    let bundle = ModelBundle::load(&model_dir).unwrap();
    let dataset = ParquetDataset::open_path(holdout).unwrap();
    let unit = dataset.plan(1).remove(0).remove(0);
    let (_, raw) = dataset
        .read_unit(
            &unit,
            &ScanOptions {
                projection: None,
                batch_size: 300,
            },
        )
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    let raw = raw.slice(0, 200);
    let sql = SqlPlan::plan(
        bundle.meta.transform_sql.as_deref(),
        &raw.schema(),
        &bundle.preprocess.required_columns(false),
    )
    .unwrap();
    let prepared = SqlRunner::new(sql).unwrap().apply(raw.clone()).unwrap();
    let features = bundle.preprocess.transform(&prepared, false).unwrap();
    let expected = Predictor::new(&bundle)
        .unwrap()
        .predict(&features.x, features.rows)
        .unwrap();

    // The same raw rows as JSON instances (those the SQL keeps: f3 not null).
    let mut writer = arrow::json::ArrayWriter::new(Vec::new());
    writer.write(&raw).unwrap();
    writer.finish().unwrap();
    let rows: Vec<Value> = serde_json::from_slice(&writer.into_inner()).unwrap();
    let kept: Vec<Value> = rows.into_iter().filter(|r| !r["f3"].is_null()).collect();
    assert_eq!(kept.len(), features.rows);

    let (tx, rx) = mpsc::channel();
    let registry = ModelRegistry::new(ServeOptions::default().batching);
    registry.load_dir(None, &model_dir).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(serve(
            registry,
            "127.0.0.1:0".parse().unwrap(),
            ServeOptions::default(),
            move |addr| {
                tx.send(addr).unwrap();
            },
        ))
        .unwrap();
    });
    let addr = rx.recv().unwrap();

    let (status, health) = http(addr, "GET", "/healthz", "");
    assert_eq!(status, 200);
    assert_eq!(health["status"], "ok");

    let (status, body) = http(
        addr,
        "POST",
        "/v1/predict",
        &json!({"instances": kept}).to_string(),
    );
    assert_eq!(status, 200, "{body}");
    let predictions = body["predictions"].as_array().unwrap();
    assert_eq!(predictions.len(), features.rows);
    for (i, p) in predictions.iter().enumerate() {
        let probs: Vec<f32> = p["probabilities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        // The server's plain-Rust forward pass agrees with burn's to float rounding.
        for (a, b) in probs.iter().zip(&expected[i * 2..i * 2 + 2]) {
            assert!(
                (a - b).abs() <= 1e-5 * a.abs().max(1e-6),
                "row {i}: {a} vs {b}"
            );
        }
        let class = if probs[1] > probs[0] { 1 } else { 0 };
        assert_eq!(p["class"], json!(class));
    }

    // Bad requests get a 400 that names the problem.
    let (status, body) = http(addr, "POST", "/v1/predict", "{not json");
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap().contains("not valid JSON"),
        "{body}"
    );
    let mut missing = kept[0].clone();
    missing.as_object_mut().unwrap().remove("f7");
    let (status, body) = http(
        addr,
        "POST",
        "/v1/predict",
        &json!({"instances": [kept[1], missing]}).to_string(),
    );
    assert_eq!(status, 400);
    assert_eq!(
        body["error"],
        "instances[1]: missing required field 'f7' (Float32)"
    );
    let mut wrong = kept[0].clone();
    wrong["cat"] = json!(3);
    let (status, body) = http(
        addr,
        "POST",
        "/v1/predict",
        &json!({"instances": [wrong]}).to_string(),
    );
    assert_eq!(status, 400);
    assert_eq!(
        body["error"],
        "instances[0].cat: expected a string (Utf8), got a number"
    );
    let (status, body) = http(addr, "POST", "/v1/predict", "{\"rows\": []}");
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap().contains("\"instances\""),
        "{body}"
    );
}
