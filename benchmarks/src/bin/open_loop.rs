//! A fixed-rate HTTP GET load generator (see `millrace_benchmarks::open_loop`): requests due at
//! `--rate` per second over `--connections` keep-alive connections for `--seconds`, each timed
//! from when it was due. Prints one JSON line.
//!
//!     ./target/release/open_loop --addr 127.0.0.1:8080 --path /v2/health/live [--rate 50000] [--connections 32] [--seconds 10]
//!
//! Use it to see what the machine itself adds to a latency tail: the same load against a server
//! that does next to nothing (`millrace serve`'s health endpoint) and against the one measured.

use anyhow::Context;
use millrace_benchmarks::open_loop::run_open_loop;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let addr: std::net::SocketAddr = arg(&args, "--addr")
        .context("--addr HOST:PORT is required")?
        .parse()?;
    let path = arg(&args, "--path").unwrap_or_else(|| "/".into());
    let rate: f64 = arg(&args, "--rate").map_or(Ok(50_000.0), |v| v.parse())?;
    let connections: usize = arg(&args, "--connections").map_or(Ok(32), |v| v.parse())?;
    let seconds: f64 = arg(&args, "--seconds").map_or(Ok(10.0), |v| v.parse())?;
    let stats = run_open_loop(addr, move |_| path.clone(), rate, connections, seconds)?;
    let mut line = stats.to_json();
    line["benchmark"] = "open_loop".into();
    line["addr"] = addr.to_string().into();
    line["connections"] = connections.into();
    println!("{line}");
    Ok(())
}
