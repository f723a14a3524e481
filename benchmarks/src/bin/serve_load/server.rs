//! The server under test: `millrace serve` as a child process, and the few plain HTTP requests
//! the harness makes itself (readiness, a probe per scenario, `/metrics`).

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::round;

/// One HTTP/1.0 request (the answer ends at EOF, never chunked): (status, body).
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let head = format!(
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: {content_type}\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("{method} {path}: not an HTTP answer: {text:.200}"))?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok((status, body.to_string()))
}

/// The server process; killed when dropped, so also on errors.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    /// The server's gRPC address (`--grpc-addr`).
    pub grpc: SocketAddr,
    log: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

pub fn server_exe() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?.with_file_name("millrace");
    if !exe.exists() {
        bail!(
            "the server binary {} is missing: build it with `cargo build --release --bin millrace`",
            exe.display()
        );
    }
    Ok(exe)
}

impl Server {
    pub fn start(model: &Path, extra: &[String], scratch: &Path) -> anyhow::Result<Server> {
        let exe = server_exe()?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let grpc_port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let grpc = SocketAddr::from(([127, 0, 0, 1], grpc_port));
        let log = scratch.join("server.log");
        let out = File::create(&log)?;
        let child = Command::new(&exe)
            .arg("serve")
            .arg("--model")
            .arg(model)
            .arg("--addr")
            .arg(addr.to_string())
            .arg("--grpc-addr")
            .arg(grpc.to_string())
            .args(extra)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("cannot start {}", exe.display()))?;
        let mut server = Server {
            child,
            addr,
            grpc,
            log,
        };
        server.wait_ready()?;
        Ok(server)
    }

    /// Waits for `GET /v2/health/ready` to answer 200, or `/healthz` where the former is 404.
    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "the server exited ({status}) before it was ready:\n{}",
                    self.log_tail()
                );
            }
            match http(self.addr, "GET", "/v2/health/ready", "text/plain", b"") {
                Ok((200, _)) => return Ok(()),
                Ok((404, _)) => {
                    if let Ok((200, _)) = http(self.addr, "GET", "/healthz", "text/plain", b"") {
                        return Ok(());
                    }
                }
                _ => {}
            }
            if Instant::now() > deadline {
                bail!("the server was not ready after 120 s:\n{}", self.log_tail());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let start = text.len().saturating_sub(2000);
        let start = (start..text.len())
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        format!("server log:\n{}", &text[start..])
    }

    /// The server's OS threads (Linux `/proc`).
    pub fn threads(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("Threads:"))
            .and_then(|n| n.trim().parse().ok())
    }

    /// [`BatchRows`] from `GET /metrics`.
    pub fn batch_rows(&self) -> BatchRows {
        match http(self.addr, "GET", "/metrics", "text/plain", b"") {
            Ok((200, text)) => batch_rows_metric(&text),
            _ => [None; 2],
        }
    }
}

/// The histograms of rows per model call, by the names the server has used for it; a scenario
/// reports the first that saw calls.
const BATCH_METRICS: [&str; 2] = ["millrace_serve_batch_rows", "millrace_serve_batches_rows"];

/// (sum, count) of each of [`BATCH_METRICS`], over all label sets; `None` where absent.
pub type BatchRows = [Option<(f64, f64)>; 2];

fn batch_rows_metric(text: &str) -> BatchRows {
    let mut sums = [None; 2];
    let mut counts = [None; 2];
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let rest = match line[name_end..].strip_prefix('{') {
            Some(labels) => labels.rsplit_once('}').map_or("", |(_, r)| r),
            None => &line[name_end..],
        };
        let Some(value) = rest
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        else {
            continue;
        };
        let name = &line[..name_end];
        for (i, metric) in BATCH_METRICS.iter().enumerate() {
            match name.strip_prefix(metric) {
                Some("_sum") => *sums[i].get_or_insert(0.0) += value,
                Some("_count") => *counts[i].get_or_insert(0.0) += value,
                _ => {}
            }
        }
    }
    [0, 1].map(|i| sums[i].zip(counts[i]))
}

/// Mean rows per model call between two scrapes, from the first metric that saw calls.
pub fn batch_mean(before: &BatchRows, after: &BatchRows) -> Option<f64> {
    before.iter().zip(after).find_map(|(before, after)| {
        let (sum0, count0) = before.unwrap_or((0.0, 0.0));
        let (sum1, count1) = (*after)?;
        let calls = count1 - count0;
        (calls > 0.0).then(|| round((sum1 - sum0) / calls, 2))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_batch_rows_metric() {
        let text = "# TYPE millrace_serve_batch_rows histogram
millrace_serve_batch_rows_bucket{le=\"8\"} 3
millrace_serve_batch_rows_sum{model=\"a\"} 40
millrace_serve_batch_rows_count{model=\"a\"} 4
millrace_serve_batch_rows_sum{model=\"b\"} 20 1700000000
millrace_serve_batch_rows_count{model=\"b\"} 1
";
        assert_eq!(batch_rows_metric(text), [Some((60.0, 5.0)), None]);
        assert_eq!(batch_rows_metric("other_metric 1"), [None, None]);
        let before = [Some((10.0, 2.0)), Some((0.0, 0.0))];
        assert_eq!(batch_mean(&before, &[Some((60.0, 5.0)), None]), Some(16.67));
        assert_eq!(batch_mean(&before, &before), None);
        // The newer name, when the older one is declared but sees no calls.
        let after = batch_rows_metric(
            "millrace_serve_batch_rows_sum 0\nmillrace_serve_batch_rows_count 0\n\
             millrace_serve_batches_rows_sum{model=\"m\"} 96\n\
             millrace_serve_batches_rows_count{model=\"m\"} 4\n",
        );
        assert_eq!(batch_mean(&[None; 2], &after), Some(24.0));
    }
}
