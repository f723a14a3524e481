//! `/v1/predict`: raw records in, the bundled preprocessing applied by the server, predictions equal
//! to in-process ones, and bad input named (instance and field).

use serde_json::{Value, json};

use crate::serve_harness::{Server, fixture, post_json, request};

fn http(addr: std::net::SocketAddr, method: &str, path: &str, body: &str) -> (u16, Value) {
    let reply = request(addr, method, path, &[], body.as_bytes());
    (reply.status, reply.json())
}

#[test]
fn served_predictions_equal_in_process_predictions() {
    let f = fixture();
    let options = millrace::operators::serve::ServeOptions::default();
    let registry = millrace::operators::serve::ModelRegistry::new(options.batching.clone());
    registry.load_dir(None, &f.model_dir).unwrap();
    let server = Server::start(registry, options);
    let addr = server.addr;
    let kept = &f.rows;
    let expected = &f.expected;

    let (status, health) = http(addr, "GET", "/healthz", "");
    assert_eq!(status, 200);
    assert_eq!(health["status"], "ok");

    let reply = post_json(addr, "/v1/predict", &json!({"instances": kept}));
    assert_eq!(reply.status, 200);
    let body = reply.json();
    let predictions = body["predictions"].as_array().unwrap();
    assert_eq!(predictions.len(), kept.len());
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
