//! A fixed-rate (open-loop) HTTP/1.1 GET load generator: requests fall due at a fixed rate
//! whatever the server answers, and each latency counts from when its request was due, not from
//! when it was sent, so a server that stalls shows every request it delayed in the tail (no
//! coordinated omission; wrk2's way of measuring, which wrk's closed loop is not).
//!
//! One thread (a current-thread tokio runtime), `connections` keep-alive connections; request `i`
//! is due at `start + i / rate` on connection `i % connections`. The runtime's timer ticks in
//! milliseconds, so each connection sleeps until a millisecond before its next request is due
//! and yields until it is: the generator keeps one core busy, as wrk does.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What a fixed-rate run measured.
#[derive(Clone, Debug)]
pub struct OpenLoopStats {
    /// The rate asked for.
    pub target_per_s: f64,
    /// Answers per second over the run.
    pub achieved_per_s: f64,
    /// Requests answered.
    pub requests: u64,
    /// Median latency from due to answered (ms).
    pub p50_ms: f64,
    /// 99th percentile (ms).
    pub p99_ms: f64,
    /// 99.9th percentile (ms).
    pub p999_ms: f64,
    /// The largest (ms).
    pub max_ms: f64,
    /// Answers that were not 200.
    pub non_200: u64,
}

/// Sends `GET path(i)` to `addr` at `rate` requests per second over `connections` connections
/// for `seconds`, and measures each latency from when the request was due.
pub fn run_open_loop(
    addr: SocketAddr,
    path: impl Fn(u64) -> String + Clone + Send + 'static,
    rate: f64,
    connections: usize,
    seconds: f64,
) -> anyhow::Result<OpenLoopStats> {
    if rate <= 0.0 || connections == 0 {
        bail!("an open-loop run needs a positive rate and at least one connection");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let total = (rate * seconds) as u64;
    let (latencies, non_200) = runtime.block_on(async move {
        let start = Instant::now() + Duration::from_millis(50);
        let mut tasks = Vec::with_capacity(connections);
        for c in 0..connections {
            let path = path.clone();
            let stream = TcpStream::connect(addr)
                .await
                .with_context(|| format!("connecting to {addr}"))?;
            stream.set_nodelay(true)?;
            tasks.push(tokio::spawn(connection(
                stream,
                (c as u64, connections as u64, total),
                (start, interval),
                path,
            )));
        }
        let mut latencies = Vec::with_capacity(total as usize);
        let mut non_200 = 0;
        for task in tasks {
            let (mine, bad) = task.await??;
            latencies.extend(mine);
            non_200 += bad;
        }
        anyhow::Ok((latencies, non_200))
    })?;
    let elapsed = seconds.max(1e-9);
    let mut sorted = latencies;
    sorted.sort_unstable();
    let at = |q: f64| -> f64 {
        let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len().max(1)) - 1;
        sorted.get(i).map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
    };
    Ok(OpenLoopStats {
        target_per_s: rate,
        achieved_per_s: sorted.len() as f64 / elapsed,
        requests: sorted.len() as u64,
        p50_ms: at(0.50),
        p99_ms: at(0.99),
        p999_ms: at(0.999),
        max_ms: sorted.last().map_or(f64::NAN, |d| d.as_secs_f64() * 1e3),
        non_200,
    })
}

/// One connection's share: requests `c`, `c + n`, `c + 2n`, … below `total`, each sent when due
/// (or at once when the previous answer came late) and timed from when it was due.
async fn connection(
    mut stream: TcpStream,
    (c, n, total): (u64, u64, u64),
    (start, interval): (Instant, Duration),
    path: impl Fn(u64) -> String,
) -> anyhow::Result<(Vec<Duration>, u64)> {
    let mut latencies = Vec::with_capacity((total / n + 1) as usize);
    let mut non_200 = 0;
    let mut buf = Vec::with_capacity(4096);
    let mut i = c;
    while i < total {
        let due = start + interval.mul_f64(i as f64);
        if let Some(early) = due.checked_duration_since(Instant::now())
            && early > Duration::from_millis(1)
        {
            tokio::time::sleep(early - Duration::from_millis(1)).await;
        }
        while Instant::now() < due {
            tokio::task::yield_now().await;
        }
        let request = format!("GET {} HTTP/1.1\r\nHost: bench\r\n\r\n", path(i));
        stream.write_all(request.as_bytes()).await?;
        if read_response(&mut stream, &mut buf).await? != 200 {
            non_200 += 1;
        }
        latencies.push(due.elapsed());
        i += n;
    }
    Ok((latencies, non_200))
}

/// Reads one response (headers and a `Content-Length` body) and returns its status.
async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<u16> {
    loop {
        if let Some(end) = find(buf, b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end])?;
            let status: u16 = head
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .with_context(|| format!("no status in {head:?}"))?;
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .context("a response without Content-Length")?;
            let whole = end + 4 + length;
            while buf.len() < whole {
                read_more(stream, buf).await?;
            }
            buf.drain(..whole);
            return Ok(status);
        }
        read_more(stream, buf).await?;
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<()> {
    let mut chunk = [0u8; 4096];
    let n = stream.read(&mut chunk).await?;
    if n == 0 {
        bail!("the server closed the connection");
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

impl OpenLoopStats {
    /// The stats as the JSON object a benchmark line holds.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "target_per_s": self.target_per_s,
            "achieved_per_s": self.achieved_per_s,
            "requests": self.requests,
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "p999_ms": self.p999_ms,
            "max_ms": self.max_ms,
            "non_200": self.non_200,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A server that answers at once, but stalls every connection for 60 ms at its 200th
    /// request: the requests that fell due during the stall count it, not just the few in flight.
    #[test]
    fn a_stall_shows_in_every_request_that_fell_due_during_it() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let served = Arc::new(AtomicU64::new(0));
        let stall = Arc::new(Mutex::new(()));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let (served, stall) = (Arc::clone(&served), Arc::clone(&stall));
                std::thread::spawn(move || {
                    let mut stream = stream.unwrap();
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    loop {
                        while find(&buf, b"\r\n\r\n").is_none() {
                            match stream.read(&mut chunk) {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        let end = find(&buf, b"\r\n\r\n").unwrap();
                        buf.drain(..end + 4);
                        if served.fetch_add(1, Ordering::SeqCst) == 200 {
                            let _held = stall.lock().unwrap();
                            std::thread::sleep(Duration::from_millis(60));
                        }
                        drop(stall.lock().unwrap());
                        let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                        if stream.write_all(answer).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let stats = run_open_loop(addr, |i| format!("/x/{i}"), 2_000.0, 4, 0.5).unwrap();
        assert_eq!((stats.requests, stats.non_200), (1_000, 0));
        // 60 ms at 2,000/s: about 120 requests were due during the stall; wrk's closed loop
        // would have timed only the 4 in flight as slow.
        assert!(stats.p99_ms >= 20.0, "{stats:?}");
        assert!(stats.max_ms >= 50.0, "{stats:?}");
        assert!(stats.p50_ms < 20.0, "{stats:?}");
    }
}
