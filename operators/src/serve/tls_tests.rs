//! TLS files and the accept loop, with certificates made by the `openssl` command and a real
//! rustls client.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsConnector;

use super::*;

pub(crate) fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("millrace-tls-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A self-signed certificate for localhost / 127.0.0.1 and its key, written by `openssl req`.
pub(crate) fn self_signed(dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
    let cert = dir.join(format!("{stem}.crt"));
    let key = dir.join(format!("{stem}.key"));
    let status = Command::new("openssl")
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
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    (cert, key)
}

fn message(result: Result<TlsAcceptor>) -> String {
    match result {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_files_are_named() {
    let dir = scratch("bad");
    let (cert, key) = self_signed(&dir, "a");
    let (_, other_key) = self_signed(&dir, "b");
    assert!(acceptor(&cert, &key).is_ok());

    let missing = dir.join("missing.crt");
    let e = message(acceptor(&missing, &key));
    assert!(
        e.contains("missing.crt") && e.contains("cannot read the certificate"),
        "{e}"
    );
    let e = message(acceptor(&cert, &dir.join("missing.key")));
    assert!(
        e.contains("missing.key") && e.contains("cannot read the private key"),
        "{e}"
    );

    let garbage = dir.join("garbage.crt");
    std::fs::write(&garbage, "this is not a certificate\n").unwrap();
    let e = message(acceptor(&garbage, &key));
    assert!(
        e.contains("garbage.crt") && e.contains("no PEM certificate"),
        "{e}"
    );
    // The certificate file given as the key, and the key file as the certificate.
    let e = message(acceptor(&cert, &cert));
    assert!(
        e.contains("a.crt") && e.contains("no PEM private key"),
        "{e}"
    );
    let e = message(acceptor(&key, &key));
    assert!(
        e.contains("a.key") && e.contains("no PEM certificate"),
        "{e}"
    );
    // A well-formed key of another certificate.
    let e = message(acceptor(&cert, &other_key));
    assert!(
        e.contains("b.key") && e.contains("cannot serve the certificate") && e.contains("a.crt"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

fn client(cert: &Path) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(cert).unwrap();
    for c in CertificateDer::pem_slice_iter(&pem) {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// Echoes one line on each accepted connection.
async fn echo_server(mut connections: TlsIncoming) {
    while let Some((mut stream, _)) = connections.next_connection().await {
        tokio::spawn(async move {
            let mut buf = [0u8; 64];
            let n = stream.read(&mut buf).await.unwrap_or(0);
            let _ = stream.write_all(&buf[..n]).await;
            let _ = stream.shutdown().await;
        });
    }
}

async fn round_trip(connector: &TlsConnector, addr: std::net::SocketAddr, text: &str) -> String {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    tls.write_all(text.as_bytes()).await.unwrap();
    let mut back = String::new();
    tls.read_to_string(&mut back).await.unwrap();
    back
}

#[test]
fn stalled_and_broken_handshakes_do_not_block_others() {
    let dir = scratch("accept");
    let (cert, key) = self_signed(&dir, "srv");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let connections = incoming(
            listener,
            acceptor(&cert, &key).unwrap(),
            Duration::from_secs(30),
        );
        let addr = connections.local_addr();
        tokio::spawn(echo_server(connections));
        let connector = client(&cert);

        // Clients that connect and never send a ClientHello, and one that sends garbage.
        let mut stalled = Vec::new();
        for _ in 0..8 {
            stalled.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        let mut garbage = tokio::net::TcpStream::connect(addr).await.unwrap();
        garbage
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();

        // A real client still gets through at once, many times over, while those hang.
        let started = Instant::now();
        for i in 0..20 {
            let text = format!("hello {i}");
            assert_eq!(round_trip(&connector, addr, &text).await, text);
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "handshakes were held up: {:?}",
            started.elapsed()
        );
        // The garbage client's connection was closed by the server (the handshake failed).
        let mut rest = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(10), garbage.read_to_end(&mut rest))
            .await
            .expect("the server closes a connection whose handshake fails");
        assert!(n.is_err() || !rest.starts_with(b"HTTP/"), "{rest:?}");
        drop(stalled);
    });
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn handshakes_time_out_and_the_stream_yields_connections() {
    let dir = scratch("stream");
    let (cert, key) = self_signed(&dir, "srv");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut connections = incoming(
            listener,
            acceptor(&cert, &key).unwrap(),
            Duration::from_millis(200),
        );
        let addr = connections.local_addr();
        // A stalled client is dropped by the server once the handshake timeout passes.
        let mut stalled = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut buf = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(5), stalled.read_to_end(&mut buf))
            .await
            .expect("the server closes a stalled handshake after its timeout");
        assert_eq!(closed.unwrap_or(0), 0);

        // As a Stream (what a tonic accept loop takes): one connection per finished handshake.
        let connector = client(&cert);
        let dialer = tokio::spawn(async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let name = ServerName::try_from("localhost").unwrap();
            let mut tls = connector.connect(name, tcp).await.unwrap();
            tls.write_all(b"ping").await.unwrap();
            tls.flush().await.unwrap();
            let mut back = [0u8; 4];
            tls.read_exact(&mut back).await.unwrap();
            back
        });
        let mut server_side = connections.next().await.unwrap().unwrap();
        let mut got = [0u8; 4];
        server_side.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        server_side.write_all(b"pong").await.unwrap();
        server_side.flush().await.unwrap();
        assert_eq!(&dialer.await.unwrap(), b"pong");
        let (_, session) = server_side.get_ref();
        assert_eq!(session.alpn_protocol(), None);
    });
    std::fs::remove_dir_all(&dir).unwrap();
}
