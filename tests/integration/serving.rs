//! The production server: Open Inference Protocol conformance, Arrow bodies, dynamic batching
//! under concurrency, hot swap under load, limits, auth and graceful shutdown.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, mpsc};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use millrace::connectors::parquet::{ParquetDataset, ScanOptions};
use millrace::ml::bundle::{ModelBundle, Predictor};
use millrace::operators::preprocess::{SqlPlan, SqlRunner};
use millrace::operators::serve::{BatcherOptions, ModelRegistry, ServeOptions, serve_until};
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
            let result = rt.block_on(serve_until(
                registry,
                "127.0.0.1:0".parse().unwrap(),
                options,
                move |addr| addr_tx.send(addr).unwrap(),
                async move {
                    let _ = stop_rx.await;
                },
            ));
            let _ = done_tx.send(result);
        });
        Server {
            addr: addr_rx.recv_timeout(Duration::from_secs(30)).unwrap(),
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

fn one_model(name: &str, dir: &Path, options: &ServeOptions) -> Arc<ModelRegistry> {
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
fn model_inputs() -> &'static Vec<String> {
    static INPUTS: OnceLock<Vec<String>> = OnceLock::new();
    INPUTS.get_or_init(|| {
        let bundle = ModelBundle::load(&fixture().model_dir).unwrap();
        let schema =
            millrace::operators::serve::schema_from_json(&bundle.meta.extra["input_schema"])
                .unwrap();
        schema.fields().iter().map(|f| f.name().clone()).collect()
    })
}

fn close(a: f32, b: f32) -> bool {
    (a - b).abs() <= 1e-5 * a.abs().max(b.abs()).max(1e-6)
}

fn probabilities(body: &Value) -> Vec<f32> {
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

#[test]
fn open_inference_protocol_endpoints_conform() {
    let f = fixture();
    let options = ServeOptions::default();
    let server = Server::start(one_model("tabular", &f.model_dir, &options), options);
    let addr = server.addr;

    assert_eq!(get(addr, "/v2/health/live").json(), json!({"live": true}));
    assert_eq!(get(addr, "/v2/health/ready").json(), json!({"ready": true}));
    assert_eq!(get(addr, "/v2").json()["name"], "millrace");
    let meta = get(addr, "/v2/models/tabular");
    assert_eq!(meta.status, 200);
    let meta = meta.json();
    assert_eq!(meta["name"], "tabular");
    assert_eq!(meta["versions"], json!(["1"]));
    let inputs = meta["inputs"].as_array().unwrap();
    assert!(
        inputs
            .iter()
            .any(|i| i["name"] == "f0" && i["datatype"] == "FP32"),
        "{meta}"
    );
    assert!(
        inputs
            .iter()
            .any(|i| i["name"] == "cat" && i["datatype"] == "BYTES"),
        "{meta}"
    );
    assert_eq!(get(addr, "/v2/models/tabular/versions/1").status, 200);
    assert_eq!(get(addr, "/v2/models/tabular/ready").json()["ready"], true);

    // Unknown things are named.
    let r = get(addr, "/v2/models/nope");
    assert_eq!(r.status, 404);
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("served models: tabular")
    );
    let r = get(addr, "/v2/models/tabular/versions/9");
    assert_eq!(r.status, 404);
    assert!(r.json()["error"].as_str().unwrap().contains("no version 9"));
    assert_eq!(get(addr, "/v2/models/tabular/versions/x").status, 400);
    assert_eq!(get(addr, "/nowhere").status, 404);

    // Inference by named tensors equals in-process prediction.
    let n = 20;
    let r = post_json(addr, "/v2/models/tabular/infer", &v2_request(&f.raw, 0..n));
    assert_eq!(r.status, 200, "{}", r.json());
    let body = r.json();
    assert_eq!(body["model_name"], "tabular");
    assert_eq!(body["model_version"], "1");
    assert_eq!(body["id"], "req-1");
    let got = probabilities(&body);
    assert_eq!(got.len(), n * 2);
    for (i, (a, b)) in got.iter().zip(&f.expected[..n * 2]).enumerate() {
        assert!(close(*a, *b), "value {i}: served {a}, in process {b}");
    }
    let r = post_json(
        addr,
        "/v2/models/tabular/versions/1/infer",
        &v2_request(&f.raw, 0..1),
    );
    assert_eq!(r.status, 200);

    // Bad requests: a 400 that names the problem.
    let mut missing = v2_request(&f.raw, 0..2);
    missing["inputs"]
        .as_array_mut()
        .unwrap()
        .retain(|i| i["name"] != "f7");
    let r = post_json(addr, "/v2/models/tabular/infer", &missing);
    assert_eq!(r.status, 400);
    assert!(
        r.json()["error"].as_str().unwrap().contains("f7"),
        "{}",
        r.json()
    );
    let mut wrong_shape = v2_request(&f.raw, 0..2);
    wrong_shape["inputs"][0]["shape"] = json!([3]);
    let r = post_json(addr, "/v2/models/tabular/infer", &wrong_shape);
    assert_eq!(r.status, 400, "{}", r.json());
    let r = request(addr, "POST", "/v2/models/tabular/infer", &[], b"{nope");
    assert_eq!(r.status, 400);

    // /v1 stays.
    let r = post_json(addr, "/v1/predict", &json!({"instances": f.rows[..3]}));
    assert_eq!(r.status, 200, "{}", r.json());
    assert_eq!(r.json()["predictions"].as_array().unwrap().len(), 3);
    let r = post_json(
        addr,
        "/v1/models/tabular/predict",
        &json!({"instances": f.rows[..1]}),
    );
    assert_eq!(r.status, 200);

    // Arrow IPC in, Arrow IPC out.
    let mut body = Vec::new();
    {
        let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut body, &f.raw.schema()).unwrap();
        w.write(&f.raw.slice(0, 64)).unwrap();
        w.finish().unwrap();
    }
    let r = request(
        addr,
        "POST",
        "/v2/models/tabular/infer",
        &[("Content-Type", "application/vnd.apache.arrow.stream")],
        &body,
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.headers.contains("application/vnd.apache.arrow.stream"));
    let mut reader = arrow::ipc::reader::StreamReader::try_new(&r.body[..], None).unwrap();
    let out = reader.next().unwrap().unwrap();
    assert_eq!(out.num_rows(), 64);
    let probs = out
        .column_by_name("probabilities")
        .unwrap()
        .as_any()
        .downcast_ref::<arrow::array::FixedSizeListArray>()
        .unwrap()
        .values()
        .as_any()
        .downcast_ref::<arrow::array::Float32Array>()
        .unwrap()
        .values()
        .to_vec();
    for (a, b) in probs.iter().zip(&f.expected[..128]) {
        assert!(close(*a, *b));
    }

    // Metrics count what happened.
    let metrics = String::from_utf8(get(addr, "/metrics").body).unwrap();
    assert!(
        metrics.contains("millrace_serve_requests_total"),
        "{metrics}"
    );
    assert!(
        metrics.contains("millrace_serve_model_version{model=\"tabular\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("code=\"404\""), "{metrics}");
    assert!(metrics.contains("millrace_serve_request_duration_seconds_bucket"));
    assert!(metrics.contains("millrace_serve_batch_rows_count{model=\"tabular\"}"));
}

#[test]
fn concurrent_callers_each_get_their_own_answers_from_shared_batches() {
    let f = fixture();
    let options = ServeOptions {
        batching: BatcherOptions {
            max_batch_rows: 64,
            max_wait: Duration::from_millis(2),
            ..BatcherOptions::default()
        },
        ..ServeOptions::default()
    };
    let server = Server::start(one_model("tabular", &f.model_dir, &options), options);
    let addr = server.addr;
    let threads = 32;
    let per_thread = 10;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            std::thread::spawn(move || {
                let f = fixture();
                for k in 0..per_thread {
                    let row = (t * per_thread + k) % f.rows.len();
                    let r = post_json(
                        addr,
                        "/v2/models/tabular/infer",
                        &v2_request(&f.raw, row..row + 1),
                    );
                    assert_eq!(r.status, 200, "{}", r.json());
                    let got = probabilities(&r.json());
                    let want = &f.expected[row * 2..row * 2 + 2];
                    assert!(
                        close(got[0], want[0]) && close(got[1], want[1]),
                        "row {row}: got {got:?}, want {want:?}"
                    );
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let metrics = String::from_utf8(get(addr, "/metrics").body).unwrap();
    let count: u64 = metrics
        .lines()
        .find(|l| l.starts_with("millrace_serve_batch_rows_count{model=\"tabular\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    let total = (threads * per_thread) as u64;
    assert!(
        count < total,
        "{total} requests in {count} forward passes: nothing was batched"
    );
}

/// A second version of the model: the same bundle with scaled weights (different predictions).
fn variant(bundle: &ModelBundle, version: u64) -> ModelBundle {
    let mut b = bundle.clone();
    for w in &mut b.weights {
        *w *= 0.5;
    }
    b.meta.version = version;
    b
}

#[test]
fn hot_swap_under_load_never_fails_or_mixes_versions() {
    let f = fixture();
    let repo = scratch("hot-swap").join("tabular");
    std::fs::create_dir_all(&repo).unwrap();
    let v1 = ModelBundle::load(&f.model_dir).unwrap();
    v1.save(&repo.join("1")).unwrap();
    let v2 = variant(&v1, 2);
    let want_v2 = {
        let dir = scratch("hot-swap-v2");
        v2.save(&dir.join("m")).unwrap();
        let (_, _, expected) = predict_in_process(&dir.join("m"), &tabular().1);
        expected
    };
    let options = ServeOptions {
        watch_interval: Some(Duration::from_millis(100)),
        ..ServeOptions::default()
    };
    let registry = ModelRegistry::new(options.batching.clone());
    registry.load_repository(repo.parent().unwrap()).unwrap();
    let server = Server::start(registry, options);
    let addr = server.addr;

    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|t| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let f = fixture();
                let mut seen = Vec::new();
                let mut k = 0;
                while !stop.load(Ordering::SeqCst) {
                    let row = (t * 7 + k) % 20;
                    k += 1;
                    let r = post_json(
                        addr,
                        "/v2/models/tabular/infer",
                        &v2_request(&f.raw, row..row + 1),
                    );
                    assert_eq!(
                        r.status,
                        200,
                        "request failed during the swap: {}",
                        r.json()
                    );
                    let body = r.json();
                    let version = body["model_version"].as_str().unwrap().to_string();
                    seen.push((Instant::now(), version, row, probabilities(&body)));
                }
                seen
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // A new version lands the way a training job writes it: complete, then renamed into place.
    let staged = repo.join(".staging");
    v2.save(&staged).unwrap();
    let swapped_at = Instant::now();
    std::fs::rename(&staged, repo.join("2")).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::SeqCst);
    let mut first_v2: Option<Instant> = None;
    let mut counts = (0, 0);
    for client in clients {
        for (at, version, row, got) in client.join().unwrap() {
            let want = match version.as_str() {
                "1" => {
                    counts.0 += 1;
                    &f.expected[row * 2..row * 2 + 2]
                }
                "2" => {
                    counts.1 += 1;
                    first_v2 = Some(first_v2.map_or(at, |t| t.min(at)));
                    &want_v2[row * 2..row * 2 + 2]
                }
                other => panic!("unexpected version {other}"),
            };
            assert!(
                close(got[0], want[0]) && close(got[1], want[1]),
                "version {version} row {row}: got {got:?}, want {want:?} (a mix of versions?)"
            );
        }
    }
    assert!(counts.0 > 0 && counts.1 > 0, "{counts:?}");
    let visible_after = first_v2.unwrap().saturating_duration_since(swapped_at);
    assert!(
        visible_after < Duration::from_secs(1),
        "new version visible after {visible_after:?}"
    );
    assert_eq!(
        get(addr, "/v2/models/tabular").json()["versions"],
        json!(["1", "2"])
    );
}

#[test]
fn limits_auth_and_timeouts_answer_with_the_right_status() {
    let f = fixture();
    let token_dir = scratch("auth");
    let options = ServeOptions {
        auth_token: Some("s3cret".into()),
        max_rows: 4,
        max_body_bytes: 64 * 1024,
        ..ServeOptions::default()
    };
    let server = Server::start(one_model("tabular", &f.model_dir, &options), options);
    let addr = server.addr;
    let body = v2_request(&f.raw, 0..1).to_string();
    let infer = |headers: &[(&str, &str)], body: &[u8]| {
        request(addr, "POST", "/v2/models/tabular/infer", headers, body)
    };
    let r = infer(&[], body.as_bytes());
    assert_eq!(r.status, 401);
    assert!(r.headers.contains("www-authenticate: bearer"));
    assert_eq!(
        infer(&[("Authorization", "Bearer wrong")], body.as_bytes()).status,
        401
    );
    assert_eq!(
        infer(&[("Authorization", "Bearer s3cret")], body.as_bytes()).status,
        200
    );
    assert_eq!(
        get(addr, "/v2/health/ready").status,
        200,
        "health checks need no token"
    );
    assert_eq!(get(addr, "/metrics").status, 401);
    let auth = [("Authorization", "Bearer s3cret")];
    let five = v2_request(&f.raw, 0..5).to_string();
    let r = infer(&auth, five.as_bytes());
    assert_eq!(r.status, 413);
    assert!(r.json()["error"].as_str().unwrap().contains("limit is 4"));
    let huge = vec![b' '; 100 * 1024];
    assert_eq!(infer(&auth, &huge).status, 413);
    drop(server);
    drop(token_dir);

    // Overload: 503 with Retry-After rather than an unbounded queue.
    let options = ServeOptions {
        max_concurrent: 0,
        ..ServeOptions::default()
    };
    let server = Server::start(one_model("tabular", &f.model_dir, &options), options);
    let r = post_json(
        server.addr,
        "/v2/models/tabular/infer",
        &v2_request(&f.raw, 0..1),
    );
    assert_eq!(r.status, 503);
    assert!(r.headers.contains("retry-after: 1"));
    drop(server);

    // Timeout: 504.
    let options = ServeOptions {
        request_timeout: Duration::from_nanos(1),
        batching: BatcherOptions {
            max_wait: Duration::from_millis(50),
            ..BatcherOptions::default()
        },
        ..ServeOptions::default()
    };
    let server = Server::start(one_model("tabular", &f.model_dir, &options), options);
    let r = post_json(
        server.addr,
        "/v2/models/tabular/infer",
        &v2_request(&f.raw, 0..1),
    );
    assert_eq!(r.status, 504, "{}", r.json());
}

#[test]
fn shutdown_drains_requests_in_flight() {
    let f = fixture();
    let options = ServeOptions {
        batching: BatcherOptions {
            // Requests wait in the batcher long enough for the shutdown to overtake them.
            max_wait: Duration::from_millis(400),
            max_batch_rows: 1024,
            ..BatcherOptions::default()
        },
        ..ServeOptions::default()
    };
    let mut server = Server::start(one_model("tabular", &f.model_dir, &options), options);
    let addr = server.addr;
    let in_flight: Vec<_> = (0..8)
        .map(|i| {
            std::thread::spawn(move || {
                let f = fixture();
                post_json(
                    addr,
                    "/v2/models/tabular/infer",
                    &v2_request(&f.raw, i..i + 1),
                )
                .status
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    server.shutdown().unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    for h in in_flight {
        assert_eq!(
            h.join().unwrap(),
            200,
            "an in-flight request was dropped by the shutdown"
        );
    }
    assert!(
        TcpStream::connect(addr).is_err(),
        "still accepting after shutdown"
    );
}

#[test]
fn several_models_and_publishing_a_new_version() {
    let f = fixture();
    let options = ServeOptions::default();
    let registry = ModelRegistry::new(options.batching.clone());
    registry.load_dir(Some("a"), &f.model_dir).unwrap();
    registry.load_dir(Some("b"), &f.model_dir).unwrap();
    let err = registry
        .load_dir(Some("a"), &f.model_dir)
        .unwrap_err()
        .to_string();
    assert!(err.contains("two models are named 'a'"), "{err}");
    let server = Server::start(Arc::clone(&registry), options);
    let addr = server.addr;
    for name in ["a", "b"] {
        let r = post_json(
            addr,
            &format!("/v2/models/{name}/infer"),
            &v2_request(&f.raw, 0..1),
        );
        assert_eq!(r.status, 200);
    }
    let r = post_json(addr, "/v1/predict", &json!({"instances": f.rows[..1]}));
    assert_eq!(r.status, 400, "ambiguous without a model name");
    assert!(r.json()["error"].as_str().unwrap().contains("a, b"));
    let r = post_json(
        addr,
        "/v1/predict",
        &json!({"model": "b", "instances": f.rows[..1]}),
    );
    assert_eq!(r.status, 200);

    // A pipeline pushes a new version in process.
    let bundle = ModelBundle::load(&f.model_dir).unwrap();
    let version = registry.publish("b", variant(&bundle, 1)).unwrap();
    assert_eq!(
        version, 2,
        "a version not newer than the served one gets the next number"
    );
    let r = post_json(addr, "/v2/models/b/infer", &v2_request(&f.raw, 0..1));
    assert_eq!(r.json()["model_version"], "2");
    let r = post_json(
        addr,
        "/v2/models/b/versions/1/infer",
        &v2_request(&f.raw, 0..1),
    );
    assert_eq!(r.json()["model_version"], "1");
    let got = probabilities(&r.json());
    assert!(close(got[0], f.expected[0]));
}
