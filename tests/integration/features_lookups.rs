//! The features a running job serves, against a recomputation: single and batch lookups as of
//! the time each answer gives, and `/v1/predict` and KServe v2 requests that leave the features
//! out and get them filled in from the view.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use super::features_stream::{Event, T0, T1, USERS, table};
use super::serve_harness::{close, get, post_json, probabilities};

/// What a lookup of `user` as of `at` (inclusive) must return.
fn expected_at(all: &[Event], user: i64, at: i64) -> BTreeMap<&'static str, Value> {
    let row = table(u8::from(at >= T1)).get(&user).cloned();
    let mine = || all.iter().filter(|o| o.user == user && o.ts <= at);
    let window: Vec<f64> = mine()
        .filter(|o| o.ts > at - 1000)
        .map(|o| o.amount)
        .collect();
    let spend: Vec<f64> = mine().map(|o| o.amount).collect();
    let or_null = |v: Option<f64>| v.map_or(Value::Null, |v| json!(v));
    BTreeMap::from([
        ("score", row.as_ref().map_or(Value::Null, |r| json!(r.0))),
        ("tier", row.map_or(Value::Null, |r| json!(r.1))),
        ("n_1s", json!(window.len())),
        (
            "spend",
            or_null((!spend.is_empty()).then(|| spend.iter().sum())),
        ),
        (
            "avg_1s",
            or_null((!window.is_empty()).then(|| window.iter().sum::<f64>() / window.len() as f64)),
        ),
        ("max_1s", or_null(window.iter().cloned().reduce(f64::max))),
    ])
}

/// Once the job has read everything (the served features' time stops moving), every user's
/// lookup equals a recomputation as of that time; a bad key is a 400, an unknown view a 404.
pub(super) fn check_lookups(addr: std::net::SocketAddr, all: &[Event]) {
    let lookup = |user: &str| -> (u16, Value) {
        let reply = get(addr, &format!("/v1/features/features/{user}"));
        (
            reply.status,
            serde_json::from_slice(&reply.body).unwrap_or(Value::Null),
        )
    };
    let started = std::time::Instant::now();
    // Settled: the same time in three polls in a row (a loaded machine can pause the job for
    // longer than one poll's interval).
    let (mut last, mut same) = (-1, 0);
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the served features never settled"
        );
        std::thread::sleep(Duration::from_millis(300));
        if std::net::TcpStream::connect(addr).is_err() {
            continue;
        }
        let at = lookup("0").1["as_of_ms"].as_i64().unwrap_or(-1);
        same = if at == last { same + 1 } else { 0 };
        last = at;
        if at > T1 && same == 2 {
            break;
        }
    }
    // A user's features equal the recomputation's as of the time the reply says (`last` or, when
    // the view moved on after settling, later).
    let check = |user: i64, features: &Value, at: i64| {
        assert!(at >= last, "the served time went back from {last} to {at}");
        for (name, value) in &expected_at(all, user, at) {
            let got = &features[*name];
            let same = match (got.as_f64(), value.as_f64()) {
                (Some(x), Some(y)) => x == y,
                _ => got == value,
            };
            assert!(
                same,
                "user {user} {name}: got {got}, want {value} as of {at}"
            );
        }
    };
    for user in 0..USERS {
        let (status, reply) = lookup(&user.to_string());
        assert_eq!(status, 200, "{reply}");
        let at = reply["as_of_ms"].as_i64().expect("as_of_ms");
        check(user, &reply["features"], at);
    }
    // The batch form: every user at once, one snapshot, the same features; bad keys are 400s.
    let users: Vec<Value> = (0..USERS).map(|u| json!(u)).collect();
    let reply = post_json(addr, "/v1/features/features", &json!({"keys": users}));
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let batch: Value = serde_json::from_slice(&reply.body).unwrap();
    let at = batch["as_of_ms"].as_i64().expect("as_of_ms");
    let rows = batch["rows"].as_array().unwrap();
    assert_eq!(rows.len(), USERS as usize);
    // Against the recomputation, not a second single lookup: the view may have moved on since.
    for (user, row) in (0..USERS).zip(rows) {
        assert_eq!(row["key"], json!(user));
        check(user, &row["features"], at);
    }
    for (body, want) in [
        (json!({"keys": [1, "u7"]}), "keys[1]"),
        (json!({"keys": [1, [2]]}), "keys[1] is [2]"),
        (json!({"key": 1}), "a list of keys"),
    ] {
        let reply = post_json(addr, "/v1/features/features", &body);
        let text = String::from_utf8_lossy(&reply.body).to_string();
        assert_eq!(reply.status, 400, "{text}");
        assert!(text.contains(want), "{body}: {text}");
    }
    // /v1/predict fills in the features a request leaves out: the same answer as a request that
    // carries the looked-up values, another one for other values. (The resumed job publishes its
    // first model version every `publish_every_steps`: the view may settle before.)
    while get(addr, "/v2/models/features").status != 200 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no model served"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Each answer with the model version that gave it.
    let predict = |instance: &Value| -> (String, Value) {
        let reply = post_json(addr, "/v1/predict", &json!({"instances": [instance]}));
        let body: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
        assert_eq!(reply.status, 200, "{body}");
        let probabilities = body["predictions"][0]["probabilities"].clone();
        (body["version"].to_string(), probabilities)
    };
    let fields = json!({"user_id": 3, "ts": T0 + 50_000, "amount": 1.5, "label": 0});
    // The job may publish a new version (or move the view) between two requests: the answers are
    // compared when one version gave them all and the features did not change meanwhile.
    for attempt in 1.. {
        assert!(
            attempt <= 50,
            "the model or the features changed in every attempt"
        );
        let features = lookup("3").1["features"].clone();
        let mut given = fields.clone();
        for (name, value) in features.as_object().unwrap() {
            given[name] = value.clone();
        }
        let mut other = given.clone();
        other["spend"] = json!(features["spend"].as_f64().unwrap() + 1000.0);
        let (version, filled) = predict(&fields);
        let answers = [predict(&given), predict(&other)];
        let (v2_version, v2_filled) = v2_fill(addr, &fields, &features);
        let same = answers.iter().all(|(v, _)| *v == version)
            && v2_version == version.trim_matches('"')
            && lookup("3").1["features"] == features;
        if !same {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        assert!(filled.is_array(), "{filled}");
        assert_eq!(filled, answers[0].1);
        assert_ne!(filled, answers[1].1);
        let want: Vec<f32> = (filled.as_array().unwrap().iter())
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(v2_filled.len(), want.len());
        for (g, w) in v2_filled.iter().zip(&want) {
            assert!(close(*g, *w), "v2 {g}, v1 {w}");
        }
        break;
    }
    let (status, reply) = lookup("u7");
    assert_eq!(status, 400, "{reply}");
    let reply = get(addr, "/v1/features/nope/1");
    assert_eq!(reply.status, 404);
    assert!(String::from_utf8_lossy(&reply.body).contains("served: features"));
}

/// A KServe v2 request may leave the feature inputs out as well: its answer (model version and
/// probabilities), to compare with `/v1/predict`'s; leaving out an input that is not a feature is
/// still a 400 naming it.
fn v2_fill(addr: std::net::SocketAddr, fields: &Value, features: &Value) -> (String, Vec<f32>) {
    let meta = get(addr, "/v2/models/features");
    assert_eq!(meta.status, 200);
    let meta: Value = serde_json::from_slice(&meta.body).unwrap();
    let all = meta["inputs"].as_array().unwrap();
    let features = features.as_object().unwrap();
    let inputs: Vec<Value> = all
        .iter()
        .filter(|i| !features.contains_key(i["name"].as_str().unwrap()))
        .map(|i| {
            let name = i["name"].as_str().unwrap();
            json!({"name": name, "datatype": i["datatype"], "shape": [1], "data": [fields[name]]})
        })
        .collect();
    assert!(
        inputs.len() < all.len(),
        "no feature input to leave out: {meta}"
    );
    let reply = post_json(
        addr,
        "/v2/models/features/infer",
        &json!({"inputs": inputs}),
    );
    let body = String::from_utf8_lossy(&reply.body).to_string();
    assert_eq!(reply.status, 200, "{body}");
    let answer = reply.json();
    let version = answer["model_version"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let without_amount: Vec<Value> = inputs
        .into_iter()
        .filter(|i| i["name"] != "amount")
        .collect();
    let reply = post_json(
        addr,
        "/v2/models/features/infer",
        &json!({"inputs": without_amount}),
    );
    let body = String::from_utf8_lossy(&reply.body).to_string();
    assert_eq!(reply.status, 400, "{body}");
    assert!(body.contains("missing input 'amount'"), "{body}");
    (version, probabilities(&answer))
}
