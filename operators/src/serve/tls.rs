//! TLS for the model server's listeners: rustls on the `ring` provider.
//!
//! [`acceptor`] loads a PEM certificate chain and private key (failing, before anything binds,
//! with an error naming the file that is missing, not PEM, or does not match); [`incoming`] turns a
//! bound [`TcpListener`] into a stream of finished TLS connections. Each handshake runs in its own
//! task with a timeout, so a slow or broken client never holds up the others.
//!
//! [`TlsIncoming`] is both an [`axum::serve::Listener`] (the HTTP server) and a
//! [`futures::Stream`] of `io::Result<TlsStream<TcpStream>>`, the shape a tonic
//! `serve_with_incoming`-style accept loop takes (wrap the stream's items in a type implementing
//! tonic's `Connected` where it asks for one):
//!
//! ```no_run
//! # async fn sketch() -> millrace_operators::Result<()> {
//! use std::path::Path;
//! use millrace_operators::serve::tls;
//! let acceptor = tls::grpc_acceptor(Path::new("cert.pem"), Path::new("key.pem"))?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8081").await.unwrap();
//! let connections = tls::incoming(listener, acceptor, tls::HANDSHAKE_TIMEOUT);
//! // tonic::transport::Server::builder().add_service(…).serve_with_incoming(connections)
//! # drop(connections);
//! # Ok(())
//! # }
//! ```

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
pub use tokio_rustls::TlsAcceptor;
pub use tokio_rustls::server::TlsStream;

use crate::{Error, Result};

/// How long a client may take to finish its TLS handshake before its connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes in progress at once; further connections wait in the kernel's accept queue.
const MAX_HANDSHAKES: usize = 1024;

/// The certificate chain and private key files (PEM) of a TLS listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first (PEM `CERTIFICATE` blocks).
    pub cert: PathBuf,
    /// The private key of the leaf certificate (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl TlsFiles {
    /// The files `cert` and `key`.
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        TlsFiles {
            cert: cert.into(),
            key: key.into(),
        }
    }

    /// An acceptor for HTTP/1.1 (see [`acceptor`]).
    pub fn acceptor(&self) -> Result<TlsAcceptor> {
        acceptor(&self.cert, &self.key)
    }

    /// An acceptor for gRPC: HTTP/2 (see [`grpc_acceptor`]).
    pub fn grpc_acceptor(&self) -> Result<TlsAcceptor> {
        grpc_acceptor(&self.cert, &self.key)
    }
}

fn tls_error(file: &Path, message: impl Into<String>) -> Error {
    Error::Tls {
        file: file.to_path_buf(),
        message: message.into(),
    }
}

fn read(file: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(file).map_err(|e| tls_error(file, format!("cannot read the {what}: {e}")))
}

/// Reads the PEM certificate chain in `file`.
fn load_certs(file: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let pem = read(file, "certificate")?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| tls_error(file, format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(tls_error(
            file,
            "no PEM certificate in it (expected -----BEGIN CERTIFICATE----- blocks)",
        ));
    }
    Ok(certs)
}

/// Reads the PEM private key in `file`.
fn load_key(file: &Path) -> Result<PrivateKeyDer<'static>> {
    let pem = read(file, "private key")?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        tls_error(
            file,
            format!(
                "no PEM private key in it ({e}; expected a -----BEGIN PRIVATE KEY----- block, or an RSA/EC one)"
            ),
        )
    })
}

/// The rustls server configuration of `cert` and `key` (ring provider, TLS 1.2 and 1.3, no client
/// certificates, no ALPN). Errors name the file at fault; a key that does not belong to the
/// certificate is an error naming the key file.
pub fn server_config(cert: &Path, key: &Path) -> Result<ServerConfig> {
    let certs = load_certs(cert)?;
    let private_key = load_key(key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Internal(format!("rustls protocol versions: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, private_key)
        .map_err(|e| {
            tls_error(
                key,
                format!(
                    "this key cannot serve the certificate in {}: {e}",
                    cert.display()
                ),
            )
        })
}

/// An acceptor offering `protocols` by ALPN (e.g. `b"h2"`, `b"http/1.1"`).
pub fn acceptor_with_alpn(cert: &Path, key: &Path, protocols: &[&[u8]]) -> Result<TlsAcceptor> {
    let mut config = server_config(cert, key)?;
    config.alpn_protocols = protocols.iter().map(|p| p.to_vec()).collect();
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// An acceptor for the HTTP server (HTTP/1.1 by ALPN).
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor> {
    acceptor_with_alpn(cert, key, &[b"http/1.1"])
}

/// An acceptor for a gRPC server (HTTP/2 by ALPN, which gRPC clients require over TLS).
pub fn grpc_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor> {
    acceptor_with_alpn(cert, key, &[b"h2"])
}

/// TLS connections accepted on a listener: their handshakes finished, in the order they finished.
/// Dropping it stops accepting.
pub struct TlsIncoming {
    connections: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    accept_loop: JoinHandle<()>,
}

/// Accepts TCP connections on `listener` and runs each TLS handshake in its own task, dropping
/// the connections whose handshake fails or takes longer than `handshake_timeout`. Needs a
/// tokio runtime.
pub fn incoming(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    handshake_timeout: Duration,
) -> TlsIncoming {
    let local = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let (tx, rx) = mpsc::channel(MAX_HANDSHAKES);
    let accept_loop = tokio::spawn(accept_loop(listener, acceptor, handshake_timeout, tx));
    TlsIncoming {
        connections: rx,
        local,
        accept_loop,
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    handshake_timeout: Duration,
    tx: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let Ok(permit) = Arc::clone(&handshakes).acquire_owned().await else {
            return;
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = tx.closed() => return,
        };
        let (tcp, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                if !is_connection_error(&e) {
                    // E.g. too many open files: wait for some to close rather than spin.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    let _ = tx.send((stream, peer)).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

impl TlsIncoming {
    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The next connection whose handshake finished, with its peer's address.
    pub async fn next_connection(&mut self) -> Option<(TlsStream<TcpStream>, SocketAddr)> {
        self.connections.recv().await
    }
}

impl Drop for TlsIncoming {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

impl axum::serve::Listener for TlsIncoming {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.connections.recv().await {
            Some(connection) => connection,
            // The accept loop only ends when this receiver is dropped: nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}

impl futures::Stream for TlsIncoming {
    type Item = io::Result<TlsStream<TcpStream>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.connections
            .poll_recv(cx)
            .map(|next| next.map(|(stream, _)| Ok(stream)))
    }
}

#[cfg(test)]
#[path = "tls_tests.rs"]
pub(crate) mod tests;
