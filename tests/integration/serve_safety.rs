//! Serving that refuses to be unsafe by accident: HTTPS with a real client (`curl`, certificates
//! made by `openssl`), auth over TLS, plain HTTP refused on the TLS port, and `millrace serve`
//! refusing a non-loopback address without a token.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use millrace::operators::serve::ServeOptions;
use millrace::operators::serve::tls::TlsFiles;
use serde_json::{Value, json};

use crate::common::scratch;
use crate::serve_harness::{Server, fixture, one_model};

/// A self-signed certificate for localhost / 127.0.0.1 and its key, written by `openssl req`.
pub fn self_signed(dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
    let cert = dir.join(format!("{stem}.crt"));
    let key = dir.join(format!("{stem}.key"));
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .arg("ec_paramgen_curve:prime256v1")
        .args(["-nodes", "-days", "2", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        // A leaf, not a CA (rustls refuses a CA certificate as a server's own).
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("the openssl command (apt-get install openssl)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

/// `curl` with `args`: (HTTP status, body), or the curl exit code when no answer came.
fn curl(args: &[&str]) -> Result<(u16, String), (i32, String)> {
    let out = Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "20"])
        .args(["--write-out", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("the curl command (apt-get install curl)");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        return Err((
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).to_string(),
        ));
    }
    let (body, code) = stdout.rsplit_once('\n').unwrap();
    Ok((code.trim().parse().unwrap(), body.to_string()))
}

fn check_predictions(body: &str, rows: usize) {
    let f = fixture();
    let body: Value = serde_json::from_str(body).unwrap();
    let predictions = body["predictions"].as_array().unwrap();
    assert_eq!(predictions.len(), rows);
    for (i, p) in predictions.iter().enumerate() {
        let probs: Vec<f64> = p["probabilities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        for (a, b) in probs.iter().zip(&f.expected[i * 2..i * 2 + 2]) {
            let (a, b) = (*a as f32, *b);
            assert!(
                (a - b).abs() <= 1e-5 * a.abs().max(1e-6),
                "row {i}: {a} vs {b}"
            );
        }
    }
}

/// Sends a plain-HTTP request to `addr`; what came back before the server closed (or timed out).
fn plain_http(addr: SocketAddr) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let _ = stream.write_all(
        format!("GET /v2/health/ready HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    );
    let mut back = Vec::new();
    let _ = stream.read_to_end(&mut back);
    back
}

#[test]
fn https_with_a_real_client_and_auth_over_tls() {
    let f = fixture();
    let dir = scratch("tls-serve");
    let (cert, key) = self_signed(&dir, "server");
    let options = ServeOptions {
        auth_token: Some("tls-s3cret".into()),
        tls: Some(TlsFiles::new(&cert, &key)),
        ..ServeOptions::default()
    };
    let server = Server::start(one_model("tabular", &f.model_dir, &options), options);
    let port = server.addr.port();
    let url = |path: &str| format!("https://localhost:{port}{path}");
    let ca = cert.to_str().unwrap();
    let body = json!({"instances": &f.rows[..5]}).to_string();
    let predict = |extra: &[&str]| {
        let mut args = vec!["--cacert", ca, "-H", "Content-Type: application/json"];
        args.extend_from_slice(extra);
        let u = url("/v1/predict");
        args.extend_from_slice(&["--data-binary", &body, &u]);
        curl(&args)
    };

    // With the token: predictions equal to the in-process ones, over HTTPS.
    let (status, answer) = predict(&["-H", "Authorization: Bearer tls-s3cret"]).unwrap();
    assert_eq!(status, 200, "{answer}");
    check_predictions(&answer, 5);
    // HTTP/2 is not offered (ALPN http/1.1), so curl's default negotiation lands on HTTP/1.1.
    let (status, _) = curl(&["--cacert", ca, "--http2", &url("/v2/health/live")]).unwrap();
    assert_eq!(status, 200);

    // Auth is still enforced over TLS; health checks stay open.
    let (status, answer) = predict(&[]).unwrap();
    assert_eq!(status, 401, "{answer}");
    assert!(answer.contains("bearer token"), "{answer}");
    let (status, _) = predict(&["-H", "Authorization: Bearer tls-s3cre"]).unwrap();
    assert_eq!(status, 401);
    let (status, ready) = curl(&["--cacert", ca, &url("/v2/health/ready")]).unwrap();
    assert_eq!((status, ready.as_str()), (200, r#"{"ready":true}"#));

    // A client that does not trust the certificate gets no answer (curl exit 60: peer cert).
    let (code, message) = curl(&[&url("/v2/health/ready")]).unwrap_err();
    assert_eq!(code, 60, "{message}");

    // Plain HTTP to the TLS port: no HTTP answer, from a raw socket or from curl.
    let back = plain_http(server.addr);
    assert!(
        !back.starts_with(b"HTTP/"),
        "{}",
        String::from_utf8_lossy(&back)
    );
    let http_url = format!("http://127.0.0.1:{port}/v2/health/ready");
    assert!(curl(&[&http_url]).is_err());

    // The server still answers after the bad clients.
    let (status, answer) = predict(&["-H", "Authorization: Bearer tls-s3cret"]).unwrap();
    assert_eq!(status, 200, "{answer}");
    drop(server);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_library_refuses_an_open_public_server_and_bad_tls_files_before_binding() {
    let f = fixture();
    let options = ServeOptions::default();
    let registry = one_model("tabular", &f.model_dir, &options);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let start = |addr: &str, options: ServeOptions| {
        runtime.block_on(millrace::operators::serve::serve_until(
            registry.clone(),
            addr.parse().unwrap(),
            options,
            |_| panic!("must not start"),
            async {},
        ))
    };
    let e = start("0.0.0.0:0", ServeOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("0.0.0.0:0") && e.contains("--allow-unauthenticated"),
        "{e}"
    );
    let dir = scratch("tls-bad");
    let missing = dir.join("nope.crt");
    let options = ServeOptions {
        tls: Some(TlsFiles::new(&missing, dir.join("nope.key"))),
        ..ServeOptions::default()
    };
    let e = start("127.0.0.1:0", options).unwrap_err().to_string();
    assert!(e.contains("nope.crt"), "{e}");
    // The gRPC address follows the same rule as the HTTP one.
    let options = ServeOptions {
        grpc_addr: Some("0.0.0.0:0".parse().unwrap()),
        ..ServeOptions::default()
    };
    let e = start("127.0.0.1:0", options).unwrap_err().to_string();
    assert!(
        e.contains("0.0.0.0:0") && e.contains("--allow-unauthenticated"),
        "{e}"
    );
}

/// Starts `millrace serve` with `args`; waits for its first line on stderr that says it serves
/// (then kills it) or for it to exit. Returns (served, stderr so far).
fn millrace_serve(args: &[&str]) -> (bool, String) {
    let f = fixture();
    let mut child = Command::new(env!("CARGO_BIN_EXE_millrace"))
        .arg("serve")
        .arg("--model")
        .arg(&f.model_dir)
        .args(["--no-watch", "--infer-threads", "1", "--io-threads", "1"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    let mut line = String::new();
    let served = loop {
        line.clear();
        if stderr.read_line(&mut line).unwrap_or(0) == 0 {
            break false;
        }
        seen.push_str(&line);
        if line.starts_with("serving ") {
            break true;
        }
    };
    if served {
        let _ = child.kill();
    }
    let status = child.wait().unwrap();
    if !served {
        let mut rest = String::new();
        let _ = stderr.read_to_string(&mut rest);
        seen.push_str(&rest);
        assert!(!status.success(), "exited 0 without serving: {seen}");
    }
    (served, seen)
}

#[test]
fn millrace_serve_refuses_a_public_address_without_a_token() {
    let dir = scratch("serve-cli");
    let (served, err) = millrace_serve(&["--addr", "0.0.0.0:0"]);
    assert!(!served, "{err}");
    assert!(
        err.contains("refusing to serve: 0.0.0.0:0 is reachable from other machines"),
        "{err}"
    );
    for fix in [
        "--auth-token-file FILE",
        "--addr 127.0.0.1:0",
        "--allow-unauthenticated",
    ] {
        assert!(err.contains(fix), "{fix} not in: {err}");
    }
    // Explicitly open: it serves.
    let (served, err) = millrace_serve(&["--addr", "0.0.0.0:0", "--allow-unauthenticated"]);
    assert!(served, "{err}");
    assert!(err.contains(" on http://0.0.0.0:"), "{err}");
    // With a token and TLS: it serves HTTPS.
    let (cert, key) = self_signed(&dir, "cli");
    let token = dir.join("token");
    std::fs::write(&token, "t0ken\n").unwrap();
    let (served, err) = millrace_serve(&[
        "--addr",
        "0.0.0.0:0",
        "--auth-token-file",
        token.to_str().unwrap(),
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    assert!(served, "{err}");
    assert!(err.contains("on https://0.0.0.0:"), "{err}");
    // The default address is loopback, token or not (port 8080 may be taken on a test machine:
    // then the error names the address it tried).
    let (served, err) = millrace_serve(&["--auth-token-file", token.to_str().unwrap()]);
    assert!(
        (served && err.contains("on http://127.0.0.1:8080"))
            || (!served && err.contains("cannot listen on 127.0.0.1:8080")),
        "{err}"
    );
    // A bad key file is named before anything binds.
    let (served, err) = millrace_serve(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        token.to_str().unwrap(),
    ]);
    assert!(!served, "{err}");
    assert!(
        err.contains("--tls-cert/--tls-key")
            && err.contains("token")
            && err.contains("no PEM private key"),
        "{err}"
    );
    // --tls-cert without --tls-key is a usage error.
    let (served, err) = millrace_serve(&["--tls-cert", cert.to_str().unwrap()]);
    assert!(!served && err.contains("--tls-key"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
