//! Running wrk (with `serve_load/post.lua`, or a script of its own) and reading its report.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// `serve_load/post.lua`, built in so that the binary runs from anywhere.
const POST_LUA: &str = include_str!("../serve_load/post.lua");

/// Writes the wrk script into `dir`; returns its path.
pub fn write_script(dir: &Path) -> anyhow::Result<PathBuf> {
    let path = dir.join("post.lua");
    std::fs::write(&path, POST_LUA).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// The error for a wrk that cannot be started, saying how to install it.
pub fn wrk_missing(e: std::io::Error) -> anyhow::Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        anyhow::anyhow!(
            "wrk is not installed: `apt-get install -y wrk` (Debian/Ubuntu), \
             or build it from https://github.com/wg/wrk"
        )
    } else {
        anyhow::anyhow!("cannot run wrk: {e}")
    }
}

/// What wrk reports.
#[derive(Debug, Default, PartialEq)]
pub struct WrkStats {
    /// Requests completed.
    pub requests: u64,
    /// Requests per second over the run.
    pub req_per_s: f64,
    /// Median latency.
    pub p50_ms: Option<f64>,
    /// 99th percentile latency.
    pub p99_ms: Option<f64>,
    /// Answers that were not 2xx.
    pub non_2xx: u64,
    /// Connect, read, write and timeout errors.
    pub socket_errors: u64,
}

/// One wrk run: 1 thread, `connections` keep-alive connections, POSTing `body` to `url`.
pub fn run_wrk(
    script: &Path,
    connections: u32,
    duration_s: u64,
    url: &str,
    body: &Path,
    content_type: &str,
) -> anyhow::Result<WrkStats> {
    let args = [body.as_os_str(), content_type.as_ref()];
    run_wrk_script(script, connections, duration_s, url, &args)
}

/// One wrk run: 1 thread, `connections` keep-alive connections, `script` (given `args`) making
/// the requests to `url`.
pub fn run_wrk_script(
    script: &Path,
    connections: u32,
    duration_s: u64,
    url: &str,
    args: &[&std::ffi::OsStr],
) -> anyhow::Result<WrkStats> {
    let out = Command::new("wrk")
        .arg("-t1")
        .arg(format!("-c{connections}"))
        .arg(format!("-d{duration_s}s"))
        .arg("--latency")
        .arg("-s")
        .arg(script)
        .arg(url)
        .arg("--")
        .args(args)
        .output()
        .map_err(wrk_missing)?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "wrk failed ({}):\n{text}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse_wrk(&text).with_context(|| format!("cannot read wrk's output:\n{text}"))
}

/// A wrk latency ("635.00us", "1.23ms", "2.00s", "1.00m") in milliseconds.
fn latency_ms(text: &str) -> Option<f64> {
    let (number, scale) = if let Some(n) = text.strip_suffix("us") {
        (n, 1e-3)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1e3)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 6e4)
    } else if let Some(n) = text.strip_suffix('h') {
        (n, 3.6e6)
    } else {
        return None;
    };
    number.parse::<f64>().ok().map(|n| n * scale)
}

fn parse_wrk(text: &str) -> anyhow::Result<WrkStats> {
    let mut stats = WrkStats::default();
    let mut req_per_s = None;
    let mut in_distribution = false;
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            req_per_s = Some(v.trim().parse()?);
        } else if line.starts_with("Latency Distribution") {
            in_distribution = true;
        } else if in_distribution && words.len() == 2 && words[0].ends_with('%') {
            match words[0] {
                "50%" => stats.p50_ms = latency_ms(words[1]),
                "99%" => stats.p99_ms = latency_ms(words[1]),
                _ => {}
            }
        } else if let Some(n) = line.strip_prefix("Non-2xx or 3xx responses:") {
            stats.non_2xx = n.trim().parse()?;
        } else if let Some(rest) = line.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 0"
            stats.socket_errors = rest
                .split(',')
                .filter_map(|part| part.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum();
        } else if words.get(1) == Some(&"requests") && words.get(2) == Some(&"in") {
            in_distribution = false;
            stats.requests = words[0].parse()?;
        }
    }
    stats.req_per_s = req_per_s.context("no \"Requests/sec:\" line")?;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRK: &str = "Running 3s test @ http://127.0.0.1:8080/v1/predict
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.51ms  410.22us   9.87ms   88.12%
    Req/Sec    21.40k     1.02k   23.01k    80.00%
  Latency Distribution
     50%  635.00us
     75%    1.62ms
     90%    1.90ms
     99%    2.50ms
  63905 requests in 3.00s, 9.75MB read
  Non-2xx or 3xx responses: 12
  Socket errors: connect 0, read 2, write 0, timeout 3
Requests/sec:  21290.72
Transfer/sec:      3.25MB
";

    #[test]
    fn reads_wrk_output() {
        let stats = parse_wrk(WRK).unwrap();
        assert_eq!(stats.requests, 63905);
        assert_eq!(stats.req_per_s, 21290.72);
        assert_eq!(stats.p50_ms, Some(0.635));
        assert_eq!(stats.p99_ms, Some(2.5));
        assert_eq!((stats.non_2xx, stats.socket_errors), (12, 5));
        assert!(parse_wrk("nothing").is_err());
    }

    #[test]
    fn reads_latency_units() {
        assert_eq!(latency_ms("2.00s"), Some(2000.0));
        assert_eq!(latency_ms("1.00m"), Some(60000.0));
        assert_eq!(latency_ms("7"), None);
    }
}
