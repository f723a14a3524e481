//! A one-request HTTP/1.1 client for the examples (std only).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::Context;

/// One HTTP/1.1 request; (status, body).
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let code = response
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no HTTP status")?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((code, body))
}

/// The `probabilities` output of a v2 inference answer (JSON text), as numbers.
pub fn v2_probabilities(answer: &str) -> anyhow::Result<Vec<f64>> {
    let answer: serde_json::Value = serde_json::from_str(answer)?;
    Ok(answer["outputs"]
        .as_array()
        .and_then(|o| o.iter().find(|t| t["name"] == "probabilities"))
        .and_then(|t| t["data"].as_array())
        .context("no probabilities in the answer")?
        .iter()
        .filter_map(serde_json::Value::as_f64)
        .collect())
}

/// The largest absolute difference between served values and in-process predictions.
pub fn worst_difference(got: &[f64], want: &[f32]) -> f64 {
    got.iter()
        .zip(want)
        .map(|(g, w)| (g - f64::from(*w)).abs())
        .fold(0.0, f64::max)
}
