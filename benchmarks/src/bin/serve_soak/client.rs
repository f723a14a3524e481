//! The load: keep-alive HTTP/1.1 connections on loopback, each a thread sending a mix of good
//! predictions (v1 and v2), requests for an unknown model and bad bodies until a deadline, and
//! checking every answer.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::expect::{Expected, Verdict};

/// What a request is, and so which answers are intended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `POST /v1/predict`, one real row: 200 with the answering version's prediction.
    V1Predict,
    /// `POST /v2/models/NAME/infer`, one real row as v2 tensors: the same.
    V2Infer,
    /// `POST /v2/models/no-such-model/infer`: 404.
    UnknownModel,
    /// A body that is not JSON, lacks a field, or has a value of the wrong type: 400.
    BadBody,
}

/// The request kinds, in the order of [`Stats::requests`].
pub const KINDS: [Kind; 4] = [
    Kind::V1Predict,
    Kind::V2Infer,
    Kind::UnknownModel,
    Kind::BadBody,
];

impl Kind {
    /// The name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Kind::V1Predict => "v1_predict",
            Kind::V2Infer => "v2_infer",
            Kind::UnknownModel => "unknown_model",
            Kind::BadBody => "bad_body",
        }
    }

    /// The status this kind is meant to get (503, load shedding, is always allowed).
    fn intended(self) -> u16 {
        match self {
            Kind::V1Predict | Kind::V2Infer => 200,
            Kind::UnknownModel => 404,
            Kind::BadBody => 400,
        }
    }
}

/// Latencies in a fixed number of buckets (about 3 % wide), so a long run keeps constant memory.
#[derive(Clone)]
pub struct Histogram {
    counts: Vec<u64>,
}

const SUB_BUCKETS: u32 = 32;

impl Histogram {
    fn new() -> Self {
        Histogram {
            counts: vec![0; (64 * SUB_BUCKETS) as usize],
        }
    }

    fn bucket(micros: u64) -> usize {
        if micros < u64::from(SUB_BUCKETS) {
            return micros as usize;
        }
        let power = 63 - micros.leading_zeros();
        let shift = power + 1 - SUB_BUCKETS.trailing_zeros() - 1;
        let sub = (micros >> shift) as u32 - SUB_BUCKETS;
        ((power - SUB_BUCKETS.trailing_zeros() + 1) * SUB_BUCKETS + sub) as usize
    }

    /// The upper end of `bucket`, in microseconds.
    fn upper(bucket: usize) -> u64 {
        let bucket = bucket as u32;
        if bucket < SUB_BUCKETS {
            return u64::from(bucket);
        }
        let group = bucket / SUB_BUCKETS;
        let sub = bucket % SUB_BUCKETS;
        let shift = group - 1;
        (u64::from(SUB_BUCKETS + sub + 1) << shift) - 1
    }

    fn record(&mut self, latency: Duration) {
        let micros = latency.as_micros().min(u128::from(u64::MAX >> 8)) as u64;
        let b = Self::bucket(micros).min(self.counts.len() - 1);
        self.counts[b] += 1;
    }

    fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
    }

    /// The latency at quantile `q` in milliseconds (None when empty).
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let total: u64 = self.counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (b, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(Self::upper(b) as f64 / 1000.0);
            }
        }
        None
    }
}

/// What one connection (or all, merged) saw.
#[derive(Clone)]
pub struct Stats {
    /// Requests sent, per kind (in [`KINDS`] order).
    pub requests: [u64; 4],
    /// Answers with the intended status, per kind.
    pub intended: [u64; 4],
    /// 503 answers (load shedding, a version closing under a request).
    pub shed: u64,
    /// 200 answers whose predictions are not those of the version that answered.
    pub wrong: u64,
    /// Answers with a status other than the intended one or 503.
    pub unexpected_status: u64,
    /// Connects, writes or reads that failed, and connections closed mid-answer.
    pub connection_errors: u64,
    /// Good answers per model (A, B) that answered them.
    pub by_model: [u64; 2],
    /// Latency of the 200 answers to good requests.
    pub latency: Histogram,
    /// The first few problems, for the report.
    pub samples: Vec<String>,
}

impl Stats {
    fn new() -> Self {
        Stats {
            requests: [0; 4],
            intended: [0; 4],
            shed: 0,
            wrong: 0,
            unexpected_status: 0,
            connection_errors: 0,
            by_model: [0; 2],
            latency: Histogram::new(),
            samples: Vec::new(),
        }
    }

    fn note(&mut self, problem: String) {
        if self.samples.len() < 5 {
            self.samples.push(problem);
        }
    }

    /// Everything in `parts`, added up.
    pub fn merged(parts: &[Stats]) -> Stats {
        let mut out = Stats::new();
        for p in parts {
            for i in 0..4 {
                out.requests[i] += p.requests[i];
                out.intended[i] += p.intended[i];
            }
            out.shed += p.shed;
            out.wrong += p.wrong;
            out.unexpected_status += p.unexpected_status;
            out.connection_errors += p.connection_errors;
            out.by_model[0] += p.by_model[0];
            out.by_model[1] += p.by_model[1];
            out.latency.merge(&p.latency);
            for s in &p.samples {
                out.note(s.clone());
            }
        }
        out
    }
}

/// A request ready to send.
struct Request {
    kind: Kind,
    row: usize,
    path: String,
    body: Vec<u8>,
}

/// The bodies every connection picks from.
pub struct Bodies {
    /// `/v1/predict` bodies, one per sample row.
    pub v1: Vec<Vec<u8>>,
    /// `/v2/models/NAME/infer` bodies, one per sample row.
    pub v2: Vec<Vec<u8>>,
    /// Bodies that must get a 400.
    pub bad: Vec<(String, Vec<u8>)>,
    /// The served model's name.
    pub model: String,
}

/// A small xorshift generator: each connection its own, seeded by its index.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn pick(rng: &mut Rng, bodies: &Bodies) -> Request {
    let roll = rng.next() % 100;
    let row = (rng.next() % bodies.v1.len() as u64) as usize;
    match roll {
        0..40 => Request {
            kind: Kind::V1Predict,
            row,
            path: "/v1/predict".into(),
            body: bodies.v1[row].clone(),
        },
        40..80 => Request {
            kind: Kind::V2Infer,
            row,
            path: format!("/v2/models/{}/infer", bodies.model),
            body: bodies.v2[row].clone(),
        },
        80..90 => Request {
            kind: Kind::UnknownModel,
            row,
            path: "/v2/models/no-such-model/infer".into(),
            body: bodies.v2[row].clone(),
        },
        _ => {
            let (path, body) = &bodies.bad[row % bodies.bad.len()];
            Request {
                kind: Kind::BadBody,
                row,
                path: path.clone(),
                body: body.clone(),
            }
        }
    }
}

/// One answer: status, whether the server will close the connection, body.
struct Answer {
    status: u16,
    close: bool,
    body: Vec<u8>,
}

fn exchange(
    conn: &mut BufReader<TcpStream>,
    addr: SocketAddr,
    r: &Request,
) -> std::io::Result<Answer> {
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        r.path,
        r.body.len()
    );
    let stream = conn.get_mut();
    stream.write_all(head.as_bytes())?;
    stream.write_all(&r.body)?;
    let mut line = String::new();
    if conn.read_line(&mut line)? == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the server closed the connection before answering",
        ));
    }
    let status: u16 = line
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP status line: {line:?}")))?;
    let (mut length, mut close) = (None, false);
    loop {
        line.clear();
        if conn.read_line(&mut line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the connection closed inside the headers",
            ));
        }
        let header = line.trim_end().to_ascii_lowercase();
        if header.is_empty() {
            break;
        }
        if let Some(v) = header.strip_prefix("content-length:") {
            length = v.trim().parse::<usize>().ok();
        } else if header == "connection: close" {
            close = true;
        }
    }
    let length = length.ok_or_else(|| std::io::Error::other("an answer without Content-Length"))?;
    let mut body = vec![0; length];
    conn.read_exact(&mut body)?;
    Ok(Answer {
        status,
        close,
        body,
    })
}

fn connect(addr: SocketAddr) -> std::io::Result<BufReader<TcpStream>> {
    let stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.set_write_timeout(Some(Duration::from_secs(30)))?;
    Ok(BufReader::new(stream))
}

fn judge(stats: &mut Stats, r: &Request, answer: &Answer, expected: &Expected, took: Duration) {
    let k = KINDS.iter().position(|k| *k == r.kind).unwrap_or(0);
    if answer.status == r.kind.intended() {
        stats.intended[k] += 1;
    } else if answer.status == 503 {
        stats.shed += 1;
        return;
    } else {
        stats.unexpected_status += 1;
        stats.note(format!(
            "{} got {}: {}",
            r.kind.name(),
            answer.status,
            String::from_utf8_lossy(&answer.body)
        ));
        return;
    }
    if answer.status != 200 {
        return;
    }
    stats.latency.record(took);
    let verdict = match serde_json::from_slice::<Value>(&answer.body) {
        Ok(body) => match r.kind {
            Kind::V1Predict => expected.check_v1(&body, r.row),
            _ => expected.check_v2(&body, r.row),
        },
        Err(e) => Verdict::Wrong(format!("not JSON: {e}")),
    };
    match verdict {
        Verdict::Right(model) => stats.by_model[model] += 1,
        Verdict::Wrong(why) => {
            stats.wrong += 1;
            stats.note(format!(
                "wrong {} answer for row {}: {why}",
                r.kind.name(),
                r.row
            ));
        }
    }
}

/// Sends requests on one keep-alive connection until `deadline` (reconnecting when the server
/// closes it as HTTP allows, counting any other failure).
pub fn run_connection(
    index: usize,
    addr: SocketAddr,
    bodies: &Bodies,
    expected: &Expected,
    deadline: Instant,
) -> Stats {
    let mut stats = Stats::new();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ ((index as u64 + 1) * 0x1000_0001));
    let mut conn: Option<BufReader<TcpStream>> = None;
    while Instant::now() < deadline {
        let r = pick(&mut rng, bodies);
        let k = KINDS.iter().position(|k| *k == r.kind).unwrap_or(0);
        let mut c = match conn.take() {
            Some(c) => c,
            None => match connect(addr) {
                Ok(c) => c,
                Err(e) => {
                    stats.connection_errors += 1;
                    stats.note(format!("connect: {e}"));
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            },
        };
        stats.requests[k] += 1;
        let started = Instant::now();
        match exchange(&mut c, addr, &r) {
            Ok(answer) => {
                judge(&mut stats, &r, &answer, expected, started.elapsed());
                if !answer.close {
                    conn = Some(c);
                }
            }
            Err(e) => {
                stats.connection_errors += 1;
                stats.note(format!("{} request: {e}", r.kind.name()));
            }
        }
    }
    stats
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_monotonic_and_tight() {
        let mut last = 0;
        for micros in [
            0, 1, 31, 32, 33, 63, 64, 100, 1_000, 10_000, 123_456, 9_999_999,
        ] {
            let b = Histogram::bucket(micros);
            assert!(b >= last, "{micros}");
            last = b;
            let upper = Histogram::upper(b);
            assert!(upper >= micros, "{micros} > {upper}");
            assert!(
                upper as f64 <= micros as f64 * 1.04 + 1.0,
                "{micros}: {upper}"
            );
        }
        let mut h = Histogram::new();
        for ms in 1..=100 {
            h.record(Duration::from_millis(ms));
        }
        let p50 = h.quantile_ms(0.5).unwrap();
        let p99 = h.quantile_ms(0.99).unwrap();
        assert!((50.0..=52.0).contains(&p50), "{p50}");
        assert!((99.0..=103.0).contains(&p99), "{p99}");
    }
}
