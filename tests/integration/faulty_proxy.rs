//! A TCP proxy in front of a real server that answers the first `failures` requests with HTTP 500
//! (closing the connection), then forwards everything: transient server errors, for retry tests.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A running proxy.
pub struct FaultyProxy {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// Requests answered with 500 so far.
    pub failed: Arc<AtomicUsize>,
    /// Connections forwarded to the real server so far.
    pub forwarded: Arc<AtomicUsize>,
}

/// Starts a proxy to `upstream` (`127.0.0.1:PORT`) on its own thread.
pub fn start(upstream: String, failures: usize) -> FaultyProxy {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let failed = Arc::new(AtomicUsize::new(0));
    let forwarded = Arc::new(AtomicUsize::new(0));
    let (f, w) = (Arc::clone(&failed), Arc::clone(&forwarded));
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    continue;
                };
                let (f, w, upstream) = (Arc::clone(&f), Arc::clone(&w), upstream.clone());
                tokio::spawn(async move {
                    if f.fetch_add(1, Ordering::SeqCst) < failures {
                        // Read the request head, answer 500, close.
                        let mut head = Vec::new();
                        let mut buf = [0u8; 4096];
                        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65_536 {
                            match client.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => head.extend_from_slice(&buf[..n]),
                            }
                        }
                        let _ = client
                            .write_all(
                                b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                            )
                            .await;
                        let _ = client.shutdown().await;
                        return;
                    }
                    f.fetch_sub(1, Ordering::SeqCst);
                    w.fetch_add(1, Ordering::SeqCst);
                    if let Ok(mut server) = TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
    });
    FaultyProxy {
        endpoint,
        failed,
        forwarded,
    }
}
