//! The serve_soak benchmark: the model server under steady load for a long time, with its model
//! hot-swapped every second, then one JSON line.
//!
//!     cargo build --release -p millrace-benchmarks --bin serve_soak
//!     ./target/release/serve_soak [--duration-s 600] [--connections 16] [--assert]
//!
//! Two small MLPs (A and B: same data, other seeds and learning rates, so their predictions
//! differ on every sample row) are trained once into `--scratch` (default `target/serve_soak`).
//! The server runs in this process on a loopback port (`serve_until`, the code `millrace serve`
//! runs, with the same allocator), serving A as its first version; a thread then publishes B, A,
//! B, … once a second, so versions alternate and the version number says which model it is.
//! `--connections` threads each hold a keep-alive HTTP/1.1 connection and send, until the
//! deadline, a mix: 40 % `/v1/predict` and 40 % v2 `infer` of one real row (each 200 answer is
//! checked against the in-process prediction of the version it names), 10 % requests for an
//! unknown model (intended: 404) and 10 % bad bodies (not JSON, a missing field, a wrong type;
//! intended: 400). 503 (load shedding) is allowed for any request.
//!
//! Reported: requests by kind, answers with the intended status, 503s, wrong answers, unexpected
//! statuses, connection errors (failed connects, writes or reads, connections closed mid-answer),
//! answers per model, p50/p99 of the good requests' 200 answers, and the process's RSS after the
//! warm-up (`--warmup-s`, default a tenth of the run, at most 30 s) and at the end. The RSS is
//! the whole process's: server and load threads, whose own state is fixed-size (bounded
//! latency histograms, reused buffers). `--assert` fails (exit 1) on any wrong answer,
//! unexpected status, connection error or failed swap, on RSS growth of 5 % or more, or when
//! either model never answered.

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod client;
mod expect;
mod models;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use millrace::operators::serve::{
    BatcherOptions, ModelRegistry, ServeOptions, configure_runtime, serve_until,
};
use serde_json::{Value, json};

use client::{KINDS, Stats, run_connection};
use expect::Expected;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The served model's name.
const MODEL: &str = "soak";
/// Sample rows the requests are drawn from.
const ROWS: usize = 256;
/// RSS growth (percent) at which `--assert` fails.
const MAX_GROWTH_PCT: f64 = 5.0;

struct Args {
    duration_s: u64,
    warmup_s: Option<u64>,
    connections: usize,
    io_threads: usize,
    infer_threads: usize,
    scratch: PathBuf,
    assert: bool,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut out = Args {
        duration_s: 600,
        warmup_s: None,
        connections: 16,
        io_threads: 2,
        infer_threads: 1,
        scratch: PathBuf::from("target/serve_soak"),
        assert: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--duration-s" => out.duration_s = number(&mut args, "--duration-s")?,
            "--warmup-s" => out.warmup_s = Some(number(&mut args, "--warmup-s")?),
            "--connections" => out.connections = number(&mut args, "--connections")? as usize,
            "--io-threads" => out.io_threads = number(&mut args, "--io-threads")? as usize,
            "--infer-threads" => out.infer_threads = number(&mut args, "--infer-threads")? as usize,
            "--scratch" => out.scratch = args.next().context("--scratch needs a directory")?.into(),
            "--assert" => out.assert = true,
            other => bail!(
                "unknown argument '{other}' (use --duration-s S, --warmup-s S, --connections N, \
                 --io-threads N, --infer-threads N, --scratch DIR, --assert)"
            ),
        }
    }
    if out.duration_s < 3 || out.connections == 0 || out.io_threads == 0 || out.infer_threads == 0 {
        bail!("--duration-s must be at least 3, and the connection and thread counts at least 1");
    }
    Ok(out)
}

/// The next argument, a whole number, for the flag `name`.
fn number(args: &mut impl Iterator<Item = String>, name: &str) -> anyhow::Result<u64> {
    let text = args
        .next()
        .with_context(|| format!("{name} needs a number"))?;
    text.parse()
        .with_context(|| format!("{name}: '{text}' is not a whole number"))
}

/// The process's resident set size in bytes (Linux `/proc/self/status`).
fn rss_bytes() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")
        .context("cannot read /proc/self/status (the soak measures RSS on Linux)")?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .context("no VmRSS in /proc/self/status")?;
    Ok(kb * 1024)
}

/// The model server on its own runtime thread; stops when `stop` is sent.
struct Server {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<millrace::operators::Result<()>>>,
}

impl Server {
    fn start(registry: Arc<ModelRegistry>, io_threads: usize) -> anyhow::Result<Server> {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(io_threads).enable_all();
        let runtime = configure_runtime(&mut builder).build()?;
        let options = ServeOptions {
            watch_interval: None,
            ..ServeOptions::default()
        };
        let thread = std::thread::spawn(move || {
            runtime.block_on(serve_until(
                registry,
                SocketAddr::from(([127, 0, 0, 1], 0)),
                options,
                move |addr| {
                    let _ = addr_tx.send(addr);
                },
                async {
                    let _ = stop_rx.await;
                },
            ))
        });
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(30))
            .context("the server did not start")?;
        Ok(Server {
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            match thread.join() {
                Ok(result) => result?,
                Err(_) => bail!("the server thread panicked"),
            }
        }
        Ok(())
    }
}

/// Publishes B, A, B, … once a second until `deadline`; returns (swaps, failed swaps, notes).
fn swap_models(
    registry: &ModelRegistry,
    bundles: &[millrace::ml::bundle::ModelBundle; 2],
    first_version: u64,
    deadline: Instant,
) -> (u64, u64, Vec<String>) {
    let (mut swaps, mut failed, mut notes) = (0u64, 0u64, Vec::new());
    let mut next = first_version + 1;
    let mut at = Instant::now() + Duration::from_secs(1);
    while at < deadline {
        std::thread::sleep(at.saturating_duration_since(Instant::now()));
        let model = ((next - first_version) % 2) as usize;
        match registry.publish(MODEL, bundles[model].clone()) {
            Ok(v) if v == next => swaps += 1,
            Ok(v) => {
                failed += 1;
                notes.push(format!("published as version {v}, expected {next}"));
                break;
            }
            Err(e) => {
                failed += 1;
                notes.push(format!("publish failed: {e}"));
            }
        }
        next += 1;
        at += Duration::from_secs(1);
    }
    (swaps, failed, notes)
}

/// RSS after the warm-up, at the end (both under load) and the peak, sampled once a second.
struct Rss {
    start: u64,
    end: u64,
    peak: u64,
}

fn watch_rss(warmup_end: Instant, deadline: Instant) -> anyhow::Result<Rss> {
    std::thread::sleep(warmup_end.saturating_duration_since(Instant::now()));
    let start = rss_bytes()?;
    let (mut end, mut peak) = (start, start);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left <= Duration::from_millis(300) {
            break;
        }
        std::thread::sleep(
            left.saturating_sub(Duration::from_millis(250))
                .min(Duration::from_secs(1)),
        );
        end = rss_bytes()?;
        peak = peak.max(end);
    }
    Ok(Rss { start, end, peak })
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    std::fs::create_dir_all(&args.scratch)?;
    let bundles = models::two_models(&args.scratch)?;
    let registry = ModelRegistry::new(BatcherOptions {
        threads: args.infer_threads,
        ..BatcherOptions::default()
    });
    let first_version = registry.publish(MODEL, bundles[0].clone())?;
    let schema = registry
        .get(MODEL, None)
        .context("the first version is not served")?
        .input_schema()
        .clone();
    let rows = millrace_benchmarks::bodies::sample_rows(&schema, ROWS, &args.scratch)?;
    let expected = Expected::new(
        expect::predict_in_process(&bundles[0], &rows)?,
        expect::predict_in_process(&bundles[1], &rows)?,
        first_version,
    )?;
    let bodies = models::bodies(&rows, MODEL)?;
    let mut server = Server::start(Arc::clone(&registry), args.io_threads)?;
    let addr = server.addr;

    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.duration_s);
    let warmup = args.warmup_s.unwrap_or((args.duration_s / 10).clamp(1, 30));
    let warmup_end = started + Duration::from_secs(warmup.min(args.duration_s / 2));
    let done = AtomicU64::new(0);
    let (parts, swapped, rss) = std::thread::scope(|s| {
        let clients: Vec<_> = (0..args.connections)
            .map(|i| {
                let (bodies, expected, done) = (&bodies, &expected, &done);
                s.spawn(move || {
                    let stats = run_connection(i, addr, bodies, expected, deadline);
                    done.fetch_add(1, Ordering::Relaxed);
                    stats
                })
            })
            .collect();
        let swapper = s.spawn(|| swap_models(&registry, &bundles, first_version, deadline));
        let rss = watch_rss(warmup_end, deadline);
        let parts: Vec<Stats> = clients
            .into_iter()
            .map(|c| {
                c.join()
                    .unwrap_or_else(|_| panic!("a load thread panicked"))
            })
            .collect();
        let swapped = swapper
            .join()
            .unwrap_or_else(|_| panic!("the swap thread panicked"));
        (parts, swapped, rss)
    });
    let elapsed = started.elapsed().as_secs_f64();
    server.stop()?;
    registry.close();
    let rss = rss?;
    let stats = Stats::merged(&parts);
    report(&args, &stats, swapped, &rss, &expected, elapsed)
}

fn mb(bytes: u64) -> f64 {
    (bytes as f64 / 1e6 * 10.0).round() / 10.0
}

fn report(
    args: &Args,
    stats: &Stats,
    (swaps, failed_swaps, swap_notes): (u64, u64, Vec<String>),
    rss: &Rss,
    expected: &Expected,
    elapsed: f64,
) -> anyhow::Result<()> {
    let by_kind = |counts: &[u64; 4]| -> Value {
        KINDS
            .iter()
            .zip(counts)
            .map(|(k, n)| (k.name().to_string(), json!(n)))
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    let total: u64 = stats.requests.iter().sum();
    let growth = (rss.end as f64 - rss.start as f64) / rss.start.max(1) as f64 * 100.0;
    let mut failures = Vec::new();
    if stats.wrong > 0 {
        failures.push(format!("{} wrong answers", stats.wrong));
    }
    if stats.unexpected_status > 0 {
        failures.push(format!("{} unexpected statuses", stats.unexpected_status));
    }
    if stats.connection_errors > 0 {
        failures.push(format!("{} connection errors", stats.connection_errors));
    }
    if failed_swaps > 0 {
        failures.push(format!("{failed_swaps} failed swaps"));
    }
    if growth >= MAX_GROWTH_PCT {
        failures.push(format!("RSS grew {growth:.1} % (limit {MAX_GROWTH_PCT} %)"));
    }
    if stats.by_model.contains(&0) {
        failures.push("one of the two model versions never answered".into());
    }
    let line = json!({
        "benchmark": "serve_soak",
        "duration_s": (elapsed * 10.0).round() / 10.0,
        "connections": args.connections,
        "io_threads": args.io_threads,
        "infer_threads": args.infer_threads,
        "swaps": swaps,
        "failed_swaps": failed_swaps,
        "requests": by_kind(&stats.requests),
        "requests_total": total,
        "requests_per_s": (total as f64 / elapsed).round(),
        "intended_status": by_kind(&stats.intended),
        "shed_503": stats.shed,
        "wrong_answers": stats.wrong,
        "unexpected_status": stats.unexpected_status,
        "connection_errors": stats.connection_errors,
        "answers_by_model": {"a": stats.by_model[0], "b": stats.by_model[1]},
        "min_gap_between_models": expected.gap(),
        "p50_ms": stats.latency.quantile_ms(0.5),
        "p99_ms": stats.latency.quantile_ms(0.99),
        "rss_start_mb": mb(rss.start),
        "rss_end_mb": mb(rss.end),
        "rss_peak_mb": mb(rss.peak),
        "rss_growth_pct": (growth * 100.0).round() / 100.0,
        "problems": stats.samples.iter().chain(&swap_notes).collect::<Vec<_>>(),
        "pass": failures.is_empty(),
    });
    println!("{line}");
    if args.assert && !failures.is_empty() {
        eprintln!("serve_soak: {}", failures.join("; "));
        std::process::exit(1);
    }
    Ok(())
}
