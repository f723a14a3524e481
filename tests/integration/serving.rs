//! The production server: Open Inference Protocol conformance, Arrow bodies, dynamic batching
//! under concurrency, hot swap under load, limits, auth and graceful shutdown.

use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use millrace::ml::bundle::ModelBundle;
use millrace::operators::serve::{BatcherOptions, ModelRegistry, ServeOptions};
use serde_json::json;

use crate::common::{scratch, tabular};
use crate::serve_harness::{
    Server, close, fixture, get, one_model, post_json, predict_in_process, probabilities, request,
    v2_request,
};

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
