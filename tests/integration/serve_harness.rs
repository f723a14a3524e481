//! Test harness of the model server: a raw HTTP/1.1 client, a trained model with in-process
//! predictions to compare against, and a server that drains when dropped.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, mpsc};
use std::time::Duration;

use arrow::array::RecordBatch;
use millrace::connectors::parquet::{ParquetDataset, ScanOptions};
use millrace::ml::bundle::{ModelBundle, Predictor};
use millrace::operators::preprocess::{SqlPlan, SqlRunner};
use millrace::operators::serve::{Bound, ModelRegistry, ServeOptions, serve_with};
use serde_json::{Value, json};

use crate::common::{pipeline_toml, scratch, tabular};
use crate::quickstart::run_toml;

/// A response: status, lower-cased headers, body.
pub struct Reply {
    pub status: u16,
    pub headers: String,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&self.body).into()))
    }
}

/// One HTTP/1.1 request on a fresh connection.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let mut stream = TcpStream::connect(addr).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
    {
        head.push_str("Content-Type: application/json\r\n");
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&response[..split]).to_ascii_lowercase();
    let status: u16 = head[9..12].parse().unwrap();
    let mut rest = response[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        let mut out = Vec::new();
        let mut at = 0;
        loop {
            let line_end = at + rest[at..].windows(2).position(|w| w == b"\r\n").unwrap();
            let size =
                usize::from_str_radix(std::str::from_utf8(&rest[at..line_end]).unwrap().trim(), 16)
                    .unwrap();
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[line_end + 2..line_end + 2 + size]);
            at = line_end + 2 + size + 2;
        }
        rest = out;
    }
    Reply {
        status,
        headers: head,
        body: rest,
    }
}

pub fn post_json(addr: SocketAddr, path: &str, body: &Value) -> Reply {
    request(addr, "POST", path, &[], body.to_string().as_bytes())
}

pub fn get(addr: SocketAddr, path: &str) -> Reply {
    request(addr, "GET", path, &[], b"")
}

/// A trained model and raw rows with their in-process predictions.
pub struct Fixture {
    pub model_dir: PathBuf,
    pub rows: Vec<Value>,
    pub raw: RecordBatch,
    pub expected: Vec<f32>,
}

/// Trains the tabular model once and predicts 200 holdout rows in process.
pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let (train, holdout) = tabular();
        let dir = scratch("serving");
        run_toml(&pipeline_toml(train, holdout, 1), 1, &dir);
        let model_dir = dir.join("run/model");
        let (raw, rows, expected) = predict_in_process(&model_dir, holdout);
        Fixture {
            model_dir,
            rows,
            raw,
            expected,
        }
    })
}

/// The first holdout rows the model's SQL keeps, as a batch and as JSON records, with the
/// bundle's in-process predictions.
pub fn predict_in_process(model_dir: &Path, holdout: &Path) -> (RecordBatch, Vec<Value>, Vec<f32>) {
    let bundle = ModelBundle::load(model_dir).unwrap();
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
    // Keep rows the SQL keeps (f3 not null), as the server refuses filtered rows.
    let f3 = raw.column(raw.schema().index_of("f3").unwrap()).clone();
    let keep = arrow::compute::is_not_null(&f3).unwrap();
    let raw = arrow::compute::filter_record_batch(&raw, &keep).unwrap();
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
    let mut writer = arrow::json::ArrayWriter::new(Vec::new());
    writer.write(&raw).unwrap();
    writer.finish().unwrap();
    let rows: Vec<Value> = serde_json::from_slice(&writer.into_inner()).unwrap();
    assert_eq!(rows.len(), features.rows);
    (raw, rows, expected)
}

/// A running server; stops (gracefully) when dropped.
pub struct Server {
    pub addr: SocketAddr,
    /// The gRPC address, when the options asked for one.
    pub grpc: Option<SocketAddr>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: Option<mpsc::Receiver<millrace::operators::Result<()>>>,
}

impl Server {
    pub fn start(registry: Arc<ModelRegistry>, options: ServeOptions) -> Server {
        let (addr_tx, addr_rx) = mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (done_tx, done_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            let result = rt.block_on(serve_with(
                registry,
                "127.0.0.1:0".parse().unwrap(),
                options,
                move |bound: Bound| addr_tx.send(bound).unwrap(),
                async move {
                    let _ = stop_rx.await;
                },
            ));
            let _ = done_tx.send(result);
        });
        let bound = addr_rx.recv_timeout(Duration::from_secs(30)).unwrap();
        Server {
            addr: bound.http,
            grpc: bound.grpc,
            stop: Some(stop_tx),
            done: Some(done_rx),
        }
    }

    /// Asks the server to stop and waits until it has drained.
    pub fn shutdown(&mut self) -> millrace::operators::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.done.take() {
            Some(done) => done.recv_timeout(Duration::from_secs(30)).unwrap(),
            None => Ok(()),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

pub fn one_model(name: &str, dir: &Path, options: &ServeOptions) -> Arc<ModelRegistry> {
    let registry = ModelRegistry::new(options.batching.clone());
    registry.load_dir(Some(name), dir).unwrap();
    registry
}

/// The v2 request for `rows` (one input tensor per raw column the model reads).
pub fn v2_request(raw: &RecordBatch, range: std::ops::Range<usize>) -> Value {
    let model_inputs = model_inputs();
    let rows = raw.slice(range.start, range.len());
    let mut inputs = Vec::new();
    for (i, field) in rows.schema().fields().iter().enumerate() {
        if !model_inputs.contains(field.name()) {
            continue;
        }
        let datatype = millrace::operators::serve::v2::datatype_of(field.data_type()).unwrap();
        let values: Vec<Value> = (0..rows.num_rows())
            .map(|r| millrace::connectors::inspect::json_value(rows.column(i).as_ref(), r))
            .collect();
        inputs.push(json!({"name": field.name(), "shape": [rows.num_rows()], "datatype": datatype, "data": values}));
    }
    json!({"id": "req-1", "inputs": inputs})
}

/// The raw columns the fixture model reads (its bundled input schema).
pub fn model_inputs() -> &'static Vec<String> {
    static INPUTS: OnceLock<Vec<String>> = OnceLock::new();
    INPUTS.get_or_init(|| {
        let bundle = ModelBundle::load(&fixture().model_dir).unwrap();
        let schema =
            millrace::operators::serve::schema_from_json(&bundle.meta.extra["input_schema"])
                .unwrap();
        schema.fields().iter().map(|f| f.name().clone()).collect()
    })
}

pub fn close(a: f32, b: f32) -> bool {
    (a - b).abs() <= 1e-5 * a.abs().max(b.abs()).max(1e-6)
}

pub fn probabilities(body: &Value) -> Vec<f32> {
    let outputs = body["outputs"].as_array().unwrap();
    let p = outputs
        .iter()
        .find(|o| o["name"] == "probabilities")
        .unwrap();
    p["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect()
}

/// Serves the bundle in `model_dir` as `name` and checks that `/v2/models/NAME/infer` on the
/// first 50 rows of `holdout` (raw, as a client sends them) answers the in-process
/// probabilities.
pub fn assert_v2_answers_in_process(name: &str, model_dir: &Path, holdout: &Path) {
    let (raw, _, expected) = predict_in_process(model_dir, holdout);
    let options = ServeOptions::default();
    let server = Server::start(one_model(name, model_dir, &options), options);
    let reply = post_json(
        server.addr,
        &format!("/v2/models/{name}/infer"),
        &v2_request(&raw, 0..50),
    );
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let got = probabilities(&reply.json());
    assert_eq!(got.len(), 100);
    for (g, w) in got.iter().zip(&expected) {
        assert!(close(*g, *w), "served {g}, in process {w}");
    }
}
