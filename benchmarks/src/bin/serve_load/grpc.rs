//! The `grpc_single` scenario: a small load generator on tonic's client (`ghz` is not in the
//! package registries). `connections` HTTP/2 connections, each sending one-row ModelInfer calls
//! (inputs in `raw_input_contents`) back to back for the duration; latencies of every answered
//! call give p50/p99.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use millrace::operators::serve::grpc::proto::ModelInferRequest;
use millrace::operators::serve::grpc::proto::grpc_inference_service_client::GrpcInferenceServiceClient;
use millrace::operators::serve::grpc::proto::model_infer_request::InferInputTensor;
use serde_json::{Value, json};

use super::round;

/// The one-row v2 JSON body (`{"inputs": [{name, shape, datatype, data}]}`) as a ModelInfer
/// request with raw little-endian tensors.
pub fn infer_request(model: &str, v2_body: &Value) -> anyhow::Result<ModelInferRequest> {
    let mut request = ModelInferRequest {
        model_name: model.to_owned(),
        ..Default::default()
    };
    let inputs = v2_body["inputs"]
        .as_array()
        .context("the v2 body has no inputs")?;
    for input in inputs {
        let name = input["name"].as_str().context("an input without a name")?;
        let datatype = input["datatype"]
            .as_str()
            .context("an input without a datatype")?;
        let data = input["data"].as_array().context("an input without data")?;
        let mut raw = Vec::new();
        for v in data {
            let bad = || format!("input '{name}': {v} cannot be sent as {datatype} (null?)");
            match datatype {
                "FP32" => raw.extend((v.as_f64().with_context(bad)? as f32).to_le_bytes()),
                "FP64" => raw.extend(v.as_f64().with_context(bad)?.to_le_bytes()),
                "INT64" => raw.extend(v.as_i64().with_context(bad)?.to_le_bytes()),
                "INT32" => raw.extend(i32::try_from(v.as_i64().with_context(bad)?)?.to_le_bytes()),
                "BOOL" => raw.push(u8::from(v.as_bool().with_context(bad)?)),
                "BYTES" => {
                    let s = v.as_str().with_context(bad)?;
                    raw.extend(u32::try_from(s.len())?.to_le_bytes());
                    raw.extend(s.as_bytes());
                }
                other => bail!("input '{name}': datatype {other} is not supported by grpc_single"),
            }
        }
        request.inputs.push(InferInputTensor {
            name: name.to_owned(),
            datatype: datatype.to_owned(),
            shape: vec![i64::try_from(data.len())?],
            ..Default::default()
        });
        request.raw_input_contents.push(raw);
    }
    Ok(request)
}

/// What one connection saw.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    errors: u64,
    first_error: Option<String>,
}

async fn connection(
    addr: SocketAddr,
    request: ModelInferRequest,
    until: Instant,
) -> anyhow::Result<Tally> {
    let mut client = GrpcInferenceServiceClient::connect(format!("http://{addr}"))
        .await
        .with_context(|| format!("cannot connect to the gRPC server at {addr}"))?;
    let mut tally = Tally::default();
    while Instant::now() < until {
        let started = Instant::now();
        match client.model_infer(request.clone()).await {
            Ok(_) => tally
                .latencies_us
                .push(u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX)),
            Err(status) => {
                tally.errors += 1;
                tally
                    .first_error
                    .get_or_insert_with(|| format!("{:?}: {}", status.code(), status.message()));
            }
        }
    }
    Ok(tally)
}

fn percentile_ms(sorted_us: &[u32], q: f64) -> Option<f64> {
    if sorted_us.is_empty() {
        return None;
    }
    let i = ((sorted_us.len() as f64 * q).ceil() as usize).clamp(1, sorted_us.len()) - 1;
    Some(round(f64::from(sorted_us[i]) / 1000.0, 3))
}

/// Runs the load for `duration` over `connections` connections: the scenario's JSON result.
pub fn run(
    addr: SocketAddr,
    request: ModelInferRequest,
    connections: u32,
    duration: Duration,
) -> anyhow::Result<Value> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let started = Instant::now();
    let until = started + duration;
    let tallies = runtime.block_on(async {
        let tasks: Vec<_> = (0..connections)
            .map(|_| tokio::spawn(connection(addr, request.clone(), until)))
            .collect();
        let mut out = Vec::with_capacity(tasks.len());
        for t in tasks {
            out.push(t.await.context("a load task panicked")??);
        }
        anyhow::Ok(out)
    })?;
    let elapsed = started.elapsed().as_secs_f64();
    let mut latencies: Vec<u32> = tallies
        .iter()
        .flat_map(|t| t.latencies_us.iter().copied())
        .collect();
    latencies.sort_unstable();
    let errors: u64 = tallies.iter().map(|t| t.errors).sum();
    let ok = latencies.len() as f64;
    let mut out = json!({
        "rows_per_request": 1,
        "requests": latencies.len() as u64 + errors,
        "req_per_s": round((ok + errors as f64) / elapsed, 0),
        "rows_per_s": round(ok / elapsed, 0),
        "p50_ms": percentile_ms(&latencies, 0.50),
        "p99_ms": percentile_ms(&latencies, 0.99),
        "errors": errors,
        "load_generator": "tonic (in process, 1 thread)",
    });
    if let Some(e) = tallies.iter().find_map(|t| t.first_error.clone()) {
        out["first_error"] = json!(e);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_body_to_raw_tensors() {
        let body = json!({"inputs": [
            {"name": "x", "shape": [1], "datatype": "FP32", "data": [1.5]},
            {"name": "c", "shape": [1], "datatype": "BYTES", "data": ["ab"]},
        ]});
        let r = infer_request("m", &body).unwrap();
        assert_eq!(r.model_name, "m");
        assert_eq!(r.inputs[1].shape, vec![1]);
        assert_eq!(r.raw_input_contents[0], 1.5f32.to_le_bytes().to_vec());
        assert_eq!(r.raw_input_contents[1], vec![2, 0, 0, 0, b'a', b'b']);
        let null =
            json!({"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [null]}]});
        assert!(
            infer_request("m", &null)
                .unwrap_err()
                .to_string()
                .contains("input 'x'")
        );
    }

    #[test]
    fn percentiles() {
        let v: Vec<u32> = (1..=100).map(|i| i * 1000).collect();
        assert_eq!(percentile_ms(&v, 0.5), Some(50.0));
        assert_eq!(percentile_ms(&v, 0.99), Some(99.0));
        assert_eq!(percentile_ms(&[], 0.99), None);
    }
}
