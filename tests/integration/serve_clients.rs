//! The KServe v2 clients people use, against the server: NVIDIA's tritonclient (PyPI, pinned,
//! installed by `scripts/py-clients.sh install`) over HTTP with binary tensors, HTTP with JSON and
//! gRPC, each answer checked value by value against in-process predictions; plus its errors.
//! Without the clients the test skips loudly, except under CI, where it fails.

use std::path::{Path, PathBuf};
use std::process::Command;

use millrace::connectors::env::in_ci;
use millrace::operators::serve::ServeOptions;
use serde_json::{Value, json};

use crate::common::scratch;
use crate::serve_harness::{Server, fixture, model_inputs, one_model, request};

/// The python of the clients' venv, or None (after a loud message) outside CI.
pub(super) fn py_clients() -> Option<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let python = std::env::var_os("MILLRACE_PY_CLIENTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".infra/py-clients/bin/python"));
    let ok = Command::new(&python)
        .args(["-c", "import tritonclient.http, tritonclient.grpc"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(python);
    }
    assert!(
        !in_ci(),
        "CI is set but tritonclient is missing: run scripts/py-clients.sh install"
    );
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        b"SKIPPED: tritonclient is not installed (scripts/py-clients.sh install); the KServe client tests did not run\n",
    );
    None
}

/// The fixture's first rows as v2 input tensors (name, datatype, values), none null.
fn input_tensors(rows: usize) -> Vec<Value> {
    let f = fixture();
    let raw = f.raw.slice(0, rows);
    let mut out = Vec::new();
    for (i, field) in raw.schema().fields().iter().enumerate() {
        if !model_inputs().contains(field.name()) {
            continue;
        }
        let datatype = millrace::operators::serve::v2::datatype_of(field.data_type()).unwrap();
        let values: Vec<Value> = (0..rows)
            .map(|r| millrace::connectors::inspect::json_value(raw.column(i).as_ref(), r))
            .collect();
        assert!(
            values.iter().all(|v| !v.is_null()),
            "column {} has nulls in the first {rows} rows: binary tensors cannot carry them",
            field.name()
        );
        out.push(json!({"name": field.name(), "datatype": datatype, "values": values}));
    }
    out
}

/// Runs tests/integration/py/kserve_clients.py against `server` (over TLS trusting `tls_ca`
/// when given) and returns its report after checking the answers and error statuses.
fn run_clients(python: &Path, server: &Server, tls_ca: Option<&Path>, dir: &Path) -> Value {
    let f = fixture();
    let grpc = server.grpc.expect("a gRPC address");
    let rows = 40;
    let classes = f.expected.len() / f.raw.num_rows();
    // Over TLS the client checks the certificate's name: the test certificate's is localhost.
    let host = |addr: std::net::SocketAddr| match tls_ca {
        Some(_) => format!("localhost:{}", addr.port()),
        None => addr.to_string(),
    };
    let mut cases = json!({
        "http": host(server.addr),
        "grpc": host(grpc),
        "model": "tabular",
        "token": "s3cret-token",
        "inputs": input_tensors(rows),
        "expected": &f.expected[..rows * classes],
        "classes": classes,
    });
    if let Some(ca) = tls_ca {
        cases["tls_ca"] = json!(ca);
    }
    let path = dir.join("cases.json");
    std::fs::write(&path, cases.to_string()).unwrap();
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/integration/py/kserve_clients.py");
    let out = Command::new(python)
        .arg(&script)
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "tritonclient checks failed:\n{stdout}\n{stderr}"
    );
    let report: Value = serde_json::from_str(stdout.trim()).unwrap();
    // Two binary HTTP answers ([N] and [N, 1]), one JSON, two gRPC: every value compared.
    assert_eq!(report["answers"], 5);
    assert_eq!(report["values_compared"], json!(5 * rows * classes));
    assert_eq!(report["failures"], json!([]));
    assert_eq!(
        report["errors"]["grpc unknown model"],
        "StatusCode.NOT_FOUND"
    );
    assert_eq!(
        report["errors"]["grpc bad tensor"],
        "StatusCode.INVALID_ARGUMENT"
    );
    assert_eq!(
        report["errors"]["grpc no token"],
        "StatusCode.UNAUTHENTICATED"
    );
    assert_eq!(report["errors"]["http unknown model"], "404");
    assert_eq!(report["errors"]["http bad tensor"], "400");
    report
}

#[test]
fn tritonclient_binary_json_and_grpc_match_in_process_predictions() {
    let Some(python) = py_clients() else {
        return;
    };
    let f = fixture();
    let options = ServeOptions {
        grpc_addr: Some("127.0.0.1:0".parse().unwrap()),
        auth_token: Some("s3cret-token".to_owned()),
        ..ServeOptions::default()
    };
    let server = Server::start(one_model("tabular", &f.model_dir, &options), options);
    run_clients(&python, &server, None, &scratch("serve-clients"));

    // gRPC shares the metrics with HTTP: one route per method.
    let metrics = request(
        server.addr,
        "GET",
        "/metrics",
        &[("Authorization", "Bearer s3cret-token")],
        b"",
    );
    let text = String::from_utf8_lossy(&metrics.body);
    let line = |route: &str, code: u16| {
        format!(
            "millrace_serve_requests_total{{route=\"{route}\",model=\"tabular\",code=\"{code}\"}} "
        )
    };
    let grpc_infer = "/inference.GRPCInferenceService/ModelInfer";
    let count = |prefix: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    };
    assert_eq!(count(&line(grpc_infer, 200)), 2, "{text}");
    assert_eq!(count(&line(grpc_infer, 400)), 1, "{text}");
    assert_eq!(count(&line(grpc_infer, 401)), 2, "{text}");
}

/// HTTPS and gRPC over TLS (HTTP/2 by ALPN) with one certificate: tritonclient verifies it
/// against the test CA and gets the same answers and error statuses as in clear text.
#[test]
fn tritonclient_over_tls_http_and_grpc() {
    let Some(python) = py_clients() else {
        return;
    };
    let f = fixture();
    let dir = scratch("serve-clients-tls");
    let (cert, key) = crate::serve_safety::self_signed(&dir, "server");
    let options = ServeOptions {
        grpc_addr: Some("127.0.0.1:0".parse().unwrap()),
        auth_token: Some("s3cret-token".to_owned()),
        tls: Some(millrace::operators::serve::tls::TlsFiles::new(&cert, &key)),
        ..ServeOptions::default()
    };
    let server = Server::start(one_model("tabular", &f.model_dir, &options), options);
    run_clients(&python, &server, Some(&cert), &dir);
    // No clear-text gRPC on the TLS port: a plain client gets no answer.
    let grpc = server.grpc.expect("a gRPC address");
    let out = Command::new(&python)
        .args(["-c", "import sys, tritonclient.grpc as g; c = g.InferenceServerClient(sys.argv[1]);\ntry:\n  c.is_server_live(client_timeout=5); print('live')\nexcept Exception as e: print('refused')"])
        .arg(grpc.to_string())
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "refused");
}
