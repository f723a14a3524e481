//! The serve_load benchmark: `millrace serve` in a second process under wrk load (1 wrk thread, 32
//! keep-alive connections), one run per scenario, then one JSON line.
//!
//!     cargo build --release -p millrace -p millrace-benchmarks --bin millrace --bin serve_load
//!     ./target/release/serve_load [--model DIR] [--duration S] [--scenarios v2_single,v1_single] [--assert]
//!
//! The model is `--model DIR`, else `data/bench/serve_model`, trained once by `etl_to_train.toml`
//! (the MLP of the etl_to_train benchmark) when missing. Request rows are real rows of the
//! benchmark holdout (`data/bench/holdout`, or a small generated sample when it is absent), sent as
//! the model's raw input columns (`model.json` → `meta.extra.input_schema`). Scenarios:
//!
//! - `v2_single`: `POST /v2/models/{name}/infer`, one row as KServe v2 named input tensors, shape [1];
//! - `v1_single`: `POST /v1/predict` with `{"instances": [{…one row…}]}`;
//! - `v2_batch64`: the v2 body with 64 rows, shape [64];
//! - `arrow_batch64`: `POST /v2/models/{name}/infer`, a 64-row Arrow IPC stream
//!   (`Content-Type: application/vnd.apache.arrow.stream`);
//! - `grpc_single`: KServe v2 gRPC `ModelInfer` (the server's `--grpc-addr`), one row as raw
//!   little-endian tensors, from an in-process tonic load generator (`grpc.rs`; `ghz` is not in
//!   the package registries) with the same number of connections, one thread.
//!
//! Run it from the repository root (data paths are relative, as in etl_to_train). The server is the
//! `millrace` binary next to this one: rebuild both after changing the server.
//!
//! wrk (`apt-get install -y wrk`) posts each body from a file through `serve_load/post.lua`.
//! `errors` counts non-2xx answers and socket errors; `rows_per_s` counts rows of 2xx answers only,
//! so a scenario the server does not answer shows its errors instead of failing the run. When the
//! server exports `millrace_serve_batch_rows` (or `millrace_serve_batches_rows`) on `GET /metrics`,
//! each scenario reports the mean rows per model call it saw (`server_batch_rows_mean`, sum/count).
//!
//! wrk and the server share the machine's cores: the numbers are for both on one box.
//! `--assert` fails (exit 1) unless v2_single (and v1_single, when run) reaches the README's goal:
//! ≥ 50,000 req/s with p99 ≤ 1.2 ms and no errors.

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod grpc;
mod server;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use anyhow::{Context, bail};
use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use serde_json::{Map, Value, json};

use millrace_benchmarks::bodies::{arrow_stream, sample_rows, v1_body, v2_body};
use millrace_benchmarks::wrk::{run_wrk, write_script, wrk_missing};
use server::{Server, batch_mean, http, server_exe};

const BATCH_ROWS: usize = 64;
const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

#[derive(Clone, Copy, Debug, PartialEq)]
enum Scenario {
    V2Single,
    V1Single,
    V2Batch64,
    ArrowBatch64,
    GrpcSingle,
}

const SCENARIOS: [Scenario; 5] = [
    Scenario::V2Single,
    Scenario::V1Single,
    Scenario::V2Batch64,
    Scenario::ArrowBatch64,
    Scenario::GrpcSingle,
];

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::V2Single => "v2_single",
            Scenario::V1Single => "v1_single",
            Scenario::V2Batch64 => "v2_batch64",
            Scenario::ArrowBatch64 => "arrow_batch64",
            Scenario::GrpcSingle => "grpc_single",
        }
    }

    fn rows(self) -> usize {
        match self {
            Scenario::V2Single | Scenario::V1Single | Scenario::GrpcSingle => 1,
            Scenario::V2Batch64 | Scenario::ArrowBatch64 => BATCH_ROWS,
        }
    }

    fn path(self, model: &str) -> String {
        match self {
            Scenario::V1Single => "/v1/predict".into(),
            _ => format!("/v2/models/{model}/infer"),
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Scenario::ArrowBatch64 => ARROW_STREAM,
            _ => "application/json",
        }
    }

    /// The request body for `rows` (already `self.rows()` long).
    fn body(self, rows: &RecordBatch) -> anyhow::Result<Vec<u8>> {
        Ok(match self {
            Scenario::V1Single => serde_json::to_vec(&v1_body(rows)?)?,
            Scenario::V2Single | Scenario::V2Batch64 | Scenario::GrpcSingle => {
                serde_json::to_vec(&v2_body(rows)?)?
            }
            Scenario::ArrowBatch64 => arrow_stream(rows)?,
        })
    }
}

struct Args {
    model: Option<PathBuf>,
    duration_s: u64,
    connections: u32,
    scenarios: Vec<Scenario>,
    server_args: Vec<String>,
    assert: bool,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut out = Args {
        model: None,
        duration_s: 20,
        connections: 32,
        scenarios: SCENARIOS.to_vec(),
        server_args: Vec::new(),
        assert: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--model" => out.model = Some(args.next().context("--model needs a directory")?.into()),
            "--duration" => {
                out.duration_s = args.next().context("--duration needs seconds")?.parse()?
            }
            "--connections" => {
                out.connections = args
                    .next()
                    .context("--connections needs a number")?
                    .parse()?
            }
            "--scenarios" => {
                let list = args.next().context("--scenarios needs a list")?;
                out.scenarios = list
                    .split(',')
                    .map(|name| {
                        SCENARIOS
                            .into_iter()
                            .find(|s| s.name() == name.trim())
                            .with_context(|| {
                                let known: Vec<_> = SCENARIOS.iter().map(|s| s.name()).collect();
                                format!("unknown scenario '{name}' (known: {})", known.join(", "))
                            })
                    })
                    .collect::<anyhow::Result<_>>()?;
            }
            "--server-arg" => out
                .server_args
                .push(args.next().context("--server-arg needs a value")?),
            "--assert" => out.assert = true,
            other => bail!(
                "unknown argument '{other}' (use --model DIR, --duration S, --connections N, \
                 --scenarios a,b, --server-arg ARG, --assert)"
            ),
        }
    }
    if out.duration_s == 0 || out.connections == 0 {
        bail!("--duration and --connections must be at least 1");
    }
    Ok(out)
}

/// `--model`, else the benchmark model (trained by etl_to_train.toml if it is not there yet).
fn model_dir(args: &Args) -> anyhow::Result<PathBuf> {
    match &args.model {
        Some(dir) => Ok(dir.clone()),
        None => millrace_benchmarks::bench_model(),
    }
}

/// The model's name and raw input schema, from `model.json`.
fn model_info(dir: &Path) -> anyhow::Result<(String, SchemaRef)> {
    let path = dir.join("model.json");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "cannot read {} (is --model a model directory?)",
            path.display()
        )
    })?;
    let json: Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON", path.display()))?;
    let name = json["meta"]["name"]
        .as_str()
        .with_context(|| format!("{}: no meta.name", path.display()))?
        .to_string();
    let fields = json["meta"]["extra"]["input_schema"]
        .as_array()
        .with_context(|| format!("{}: no meta.extra.input_schema list", path.display()))?;
    let mut out = Vec::with_capacity(fields.len());
    for f in fields {
        let name = f["name"]
            .as_str()
            .context("input_schema field without a name")?;
        let type_name = f["type"]
            .as_str()
            .with_context(|| format!("input_schema field '{name}' has no type"))?;
        let data_type: DataType = type_name
            .parse()
            .with_context(|| format!("input_schema field '{name}': unknown type '{type_name}'"))?;
        out.push(Field::new(
            name,
            data_type,
            f["nullable"].as_bool().unwrap_or(true),
        ));
    }
    Ok((name, Arc::new(Schema::new(out))))
}

fn round(x: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (x * scale).round() / scale
}

/// Runs one scenario: a probe request (its error, if any, goes into the report), then wrk.
fn run_scenario(
    args: &Args,
    server: &Server,
    script: &Path,
    scenario: Scenario,
    model: &str,
    body_file: &Path,
) -> anyhow::Result<Value> {
    if scenario == Scenario::GrpcSingle {
        let body: Value = serde_json::from_slice(&std::fs::read(body_file)?)?;
        let request = grpc::infer_request(model, &body)?;
        let before = server.batch_rows();
        let mut out = grpc::run(
            server.grpc,
            request,
            args.connections,
            std::time::Duration::from_secs(args.duration_s),
        )?;
        out["server_batch_rows_mean"] = json!(batch_mean(&before, &server.batch_rows()));
        return Ok(out);
    }
    let path = scenario.path(model);
    let body = std::fs::read(body_file)?;
    let (status, answer) = http(server.addr, "POST", &path, scenario.content_type(), &body)
        .with_context(|| format!("{}: the probe request failed", scenario.name()))?;
    if !(200..300).contains(&status) {
        eprintln!(
            "serve_load: {} ({path}) answers {status}: {answer:.300}; measuring anyway",
            scenario.name()
        );
    }
    let before = server.batch_rows();
    let url = format!("http://{}{path}", server.addr);
    let stats = run_wrk(
        script,
        args.connections,
        args.duration_s,
        &url,
        body_file,
        scenario.content_type(),
    )?;
    let after = server.batch_rows();
    let ok = stats.requests.saturating_sub(stats.non_2xx);
    let ok_share = if stats.requests == 0 {
        0.0
    } else {
        ok as f64 / stats.requests as f64
    };
    let mut out = json!({
        "rows_per_request": scenario.rows(),
        "requests": stats.requests,
        "req_per_s": round(stats.req_per_s, 0),
        "rows_per_s": round(stats.req_per_s * ok_share * scenario.rows() as f64, 0),
        "p50_ms": stats.p50_ms.map(|v| round(v, 3)),
        "p99_ms": stats.p99_ms.map(|v| round(v, 3)),
        "errors": stats.non_2xx + stats.socket_errors,
        "non_2xx": stats.non_2xx,
        "socket_errors": stats.socket_errors,
        "server_batch_rows_mean": batch_mean(&before, &after),
    });
    if !(200..300).contains(&status) {
        let excerpt: String = answer.chars().take(300).collect();
        out["probe"] = json!({"status": status, "answer": excerpt});
    }
    Ok(out)
}

fn run(args: &Args, scratch: &Path) -> anyhow::Result<Value> {
    let model_dir = model_dir(args)?;
    let (model, schema) = model_info(&model_dir)?;
    let rows = sample_rows(&schema, BATCH_ROWS, scratch)?;
    let mut bodies = Vec::new();
    for &scenario in &args.scenarios {
        let file = scratch.join(format!("{}.body", scenario.name()));
        std::fs::write(&file, scenario.body(&rows.slice(0, scenario.rows()))?)?;
        bodies.push((scenario, file));
    }
    let script = write_script(scratch)?;
    let server = Server::start(&model_dir, &args.server_args, scratch)?;
    let mut scenarios = Map::new();
    for (scenario, file) in &bodies {
        eprintln!("serve_load: {} for {} s", scenario.name(), args.duration_s);
        let result = run_scenario(args, &server, &script, *scenario, &model, file)?;
        scenarios.insert(scenario.name().into(), result);
    }
    let threads = server.threads();
    let batch_rows = batch_mean(&[None; 2], &server.batch_rows());
    Ok(json!({
        "benchmark": "serve_load",
        "model": model,
        "connections": args.connections,
        "duration_s": args.duration_s,
        "wrk_threads": 1,
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "scenarios": scenarios,
        "server_threads": threads,
        "server_batch_rows_mean": batch_rows,
    }))
}

/// The single-row goal of benchmarks/README.md: requests per second, at most this p99.
const GOAL_REQ_PER_S: f64 = 50_000.0;
/// The p99 latency (ms) of the single-row goal.
const GOAL_P99_MS: f64 = 1.2;

/// What `--assert` requires: the single-row goal (≥ 50,000 req/s, p99 ≤ 1.2 ms, no errors) on
/// v2_single, and on v1_single when it ran. Empty when it passes.
fn failures(report: &Value) -> Vec<String> {
    let scenarios = &report["scenarios"];
    if scenarios["v2_single"].is_null() {
        return vec!["--assert needs the v2_single scenario".into()];
    }
    let mut out = Vec::new();
    for name in ["v2_single", "v1_single"] {
        let s = &scenarios[name];
        if s.is_null() {
            continue;
        }
        let req_per_s = s["req_per_s"].as_f64().unwrap_or(0.0);
        if req_per_s < GOAL_REQ_PER_S {
            out.push(format!(
                "{name} {req_per_s:.0} req/s is below the {GOAL_REQ_PER_S:.0} req/s goal"
            ));
        }
        match s["p99_ms"].as_f64() {
            Some(p99) if p99 <= GOAL_P99_MS => {}
            Some(p99) => out.push(format!(
                "{name} p99 {p99} ms is above the {GOAL_P99_MS} ms goal"
            )),
            None => out.push(format!("{name} has no p99 latency")),
        }
        let errors = s["errors"].as_u64().unwrap_or(u64::MAX);
        if errors != 0 {
            out.push(format!("{name} had {errors} errors"));
        }
    }
    out
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    // Fail fast, before training or starting anything.
    server_exe()?;
    if args.scenarios.iter().any(|s| *s != Scenario::GrpcSingle) {
        Command::new("wrk")
            .arg("--version")
            .output()
            .map_err(wrk_missing)?;
    }
    let scratch = std::env::temp_dir().join(format!("millrace-serve-load-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let report = run(&args, &scratch);
    std::fs::remove_dir_all(&scratch).ok();
    let report = report?;
    println!("{report}");
    if args.assert {
        let failed = failures(&report);
        if !failed.is_empty() {
            bail!("{}", failed.join("; "));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(v2: Value, v1: Option<Value>) -> Value {
        let mut scenarios = json!({ "v2_single": v2 });
        if let Some(v1) = v1 {
            scenarios["v1_single"] = v1;
        }
        json!({ "scenarios": scenarios })
    }

    #[test]
    fn assert_checks_the_readme_goal_on_both_single_row_scenarios() {
        let ok = json!({"req_per_s": 55_000.0, "p99_ms": 1.0, "errors": 0});
        assert!(failures(&report(ok.clone(), Some(ok.clone()))).is_empty());
        assert!(failures(&report(ok.clone(), None)).is_empty());
        let slow_tail = json!({"req_per_s": 55_000.0, "p99_ms": 1.3, "errors": 0});
        assert_eq!(
            failures(&report(slow_tail.clone(), None)),
            ["v2_single p99 1.3 ms is above the 1.2 ms goal"]
        );
        assert_eq!(
            failures(&report(ok.clone(), Some(slow_tail))),
            ["v1_single p99 1.3 ms is above the 1.2 ms goal"]
        );
        let bad = json!({"req_per_s": 40_000.0, "p99_ms": null, "errors": 3});
        assert_eq!(
            failures(&report(bad, None)),
            [
                "v2_single 40000 req/s is below the 50000 req/s goal",
                "v2_single has no p99 latency",
                "v2_single had 3 errors"
            ]
        );
        assert_eq!(
            failures(&json!({"scenarios": {"v1_single": ok}})),
            ["--assert needs the v2_single scenario"]
        );
    }
}
