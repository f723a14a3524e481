//! `[features]` at scale, against the real broker: 1M events over 10k keys (set
//! `MILLRACE_FEATURES_SCALE_EVENTS` for another count), a 100k-row Delta table that gets a new
//! version half-way (10 % of its rows changed, 1 % deleted, 500 added) and 1-hour per-key
//! aggregates, written as `[features] sql`. The job stops half-way (a checkpoint that drains the
//! view), the new version is committed, and the job resumes. Every row the `after = "features"`
//! sink wrote, exactly once over both runs, equals a batch recomputation by DataFusion over the
//! same events and the table's two versions joined as of each event's time (0 differing rows).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::prelude::SessionContext;
use millrace::connectors::kafka::{KafkaOptions, KafkaProducer};
use millrace::run::run_stream;
use serde::Deserialize;

use super::features_stream::{assert_trained, commit_parts, features_job, setup};
use super::services::kafka;
use super::streaming::{config, parse};
use super::watermarks::reader;

const T0: i64 = 1_700_000_000_000;
/// 1M events 36 ms apart: ten hours, each key seen every 360 s (ten times an hour).
const STEP_MS: i64 = 36;
const KEYS: i64 = 10_000;
const TABLE_ROWS: i64 = 100_000;

fn events_wanted() -> i64 {
    std::env::var("MILLRACE_FEATURES_SCALE_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

/// Event `i`: key `(i · 7919 mod 10k) · 10` (10k keys spread over the table), its time, an
/// amount in quarters (every sum is exact in any order) and a label.
fn event(i: i64) -> (i64, i64, f64, i64) {
    let amount = (i % 17) as f64 * 0.25;
    (
        (i * 7919 % KEYS) * 10,
        T0 + i * STEP_MS,
        amount,
        i64::from(i % 17 > 8),
    )
}

fn mix(k: i64) -> u64 {
    let mut z = (k as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The table's row for `k` at `version`: version 1 deletes 1 % of the rows and changes 10 %, and
/// adds keys 100,000..100,500.
fn row(k: i64, version: u8) -> Option<(f64, String)> {
    let base = ((k % 1000) as f64 * 0.5, format!("t{}", k % 7));
    match (version, mix(k) % 100) {
        (0, _) if k < TABLE_ROWS => Some(base),
        (0, _) => None,
        (_, _) if k >= TABLE_ROWS + 500 => None,
        (_, _) if k >= TABLE_ROWS => Some((-1.0, "new".into())),
        (_, 1) => None,
        (_, h) if h % 10 == 0 => Some((1000.0 + base.0, "t9".into())),
        _ => Some(base),
    }
}

fn rows(version: u8) -> Vec<(i64, (f64, String))> {
    (0..TABLE_ROWS + 500)
        .filter_map(|k| row(k, version).map(|r| (k, r)))
        .collect()
}

fn commit(dir: &std::path::Path, version: u8, at: i64) {
    let all = rows(version);
    let (low, high) = all.split_at(all.len() / 2);
    commit_parts(dir, version, at, low, high);
}

const VIEW: &str = "SELECT events.*, score, tier,
       COUNT(*) OVER last_hour AS n_1h,
       SUM(amount) OVER last_hour AS spend_1h,
       AVG(amount) OVER last_hour AS avg_1h,
       MAX(amount) OVER (PARTITION BY user_id ORDER BY ts) AS max_all
FROM events LEFT JOIN users USING (user_id)
WINDOW last_hour AS (PARTITION BY user_id ORDER BY ts
                     RANGE BETWEEN 3599999 PRECEDING AND CURRENT ROW)";

/// The same features in one batch query: the aggregates over the events, then the table's
/// versions joined as of each event's time (`valid_from <= ts < valid_to`).
const REFERENCE: &str = "WITH f AS (
  SELECT user_id, ts,
         COUNT(*) OVER last_hour AS n_1h,
         SUM(amount) OVER last_hour AS spend_1h,
         AVG(amount) OVER last_hour AS avg_1h,
         MAX(amount) OVER (PARTITION BY user_id ORDER BY ts) AS max_all
  FROM events
  WINDOW last_hour AS (PARTITION BY user_id ORDER BY ts
                       RANGE BETWEEN 3599999 PRECEDING AND CURRENT ROW))
SELECT f.*, h.score, h.tier
FROM f LEFT JOIN history h
  ON f.user_id = h.user_id AND f.ts >= h.valid_from AND f.ts < h.valid_to";

/// The features job, on 10,000-record batches with 1 s out of order.
fn pipeline(broker: &str, topic: &str, out: &str, dir: &std::path::Path) -> String {
    let features = format!(
        "[features]\nsql = \"\"\"\n{VIEW}\n\"\"\"\n\n[features.table]\nname = \"users\"\npath = \"{}\"\nrefresh = \"100ms\"",
        dir.join("users").display()
    );
    let numeric = ["score", "n_1h", "spend_1h", "avg_1h"];
    let checkpoints = dir.join("ckpt");
    let text = features_job(
        "features-scale",
        (broker, topic, out),
        &checkpoints,
        &features,
        &numeric,
    );
    let tuned = (text.replace(
        "max_out_of_orderness = \"50ms\"",
        "max_out_of_orderness = \"1s\"",
    ))
    .replace("warmup_records = 100", "warmup_records = 1000")
    .replace("max_batch_records = 150", "max_batch_records = 10000")
    .replace("checkpoint_every_steps = 5", "checkpoint_every_steps = 20");
    assert!(tuned.contains("max_batch_records = 10000") && tuned.contains("\"1s\""));
    tuned
}

/// A row as the sink wrote it (or as the reference made it).
#[derive(Debug, Deserialize, PartialEq)]
struct Features {
    user_id: i64,
    score: Option<f64>,
    tier: Option<String>,
    n_1h: i64,
    spend_1h: Option<f64>,
    avg_1h: Option<f64>,
    max_all: Option<f64>,
}

fn send(broker: &str, topic: &str, n: i64) {
    let producer = KafkaProducer::new(&KafkaOptions::new(broker), true).unwrap();
    for i in 0..n {
        let (user, ts, amount, label) = event(i);
        let payload =
            format!(r#"{{"user_id":{user},"ts":{ts},"amount":{amount},"label":{label}}}"#);
        producer
            .send(
                topic,
                Some(user.to_string().as_bytes()),
                payload.as_bytes(),
                &[],
            )
            .unwrap();
    }
    producer.flush(Duration::from_secs(120)).unwrap();
}

/// The sink's rows by event time; a row written twice fails.
fn written(broker: &str, topic: &str, n: usize) -> HashMap<i64, Features> {
    let mut source = reader(broker, topic);
    let mut out = HashMap::with_capacity(n);
    let started = Instant::now();
    let mut quiet = 0;
    while (out.len() < n || quiet < 2) && started.elapsed() < Duration::from_secs(600) {
        let batch = source.poll(50_000, Duration::from_millis(200)).unwrap();
        quiet = if batch.is_empty() { quiet + 1 } else { 0 };
        for m in batch {
            let payload = m.payload.as_deref().unwrap();
            let ts: serde_json::Value = serde_json::from_slice(payload).unwrap();
            let ts = ts["ts"].as_i64().unwrap();
            let row: Features = serde_json::from_slice(payload).unwrap();
            assert!(
                out.insert(ts, row).is_none(),
                "the event at {ts} was written twice"
            );
        }
    }
    out
}

/// DataFusion's features for the first `n` events, by event time, with version 1 of the table
/// valid from `t1`.
fn reference(n: i64, t1: i64) -> HashMap<i64, Features> {
    let events: Vec<_> = (0..n).map(event).collect();
    let batch = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("user_id", DataType::Int64, false),
            Field::new("ts", DataType::Int64, false),
            Field::new("amount", DataType::Float64, false),
        ])),
        vec![
            Arc::new(Int64Array::from_iter_values(events.iter().map(|e| e.0))),
            Arc::new(Int64Array::from_iter_values(events.iter().map(|e| e.1))),
            Arc::new(Float64Array::from_iter_values(events.iter().map(|e| e.2))),
        ],
    )
    .unwrap();
    // Each version's rows, valid until the next version changes or deletes them.
    let mut history: Vec<(i64, f64, String, i64, i64)> = Vec::new();
    for k in 0..TABLE_ROWS + 500 {
        let (old, new) = (row(k, 0), row(k, 1));
        match (&old, &new) {
            (Some(a), Some(b)) if a == b => history.push((k, a.0, a.1.clone(), i64::MIN, i64::MAX)),
            _ => {
                if let Some(a) = old {
                    history.push((k, a.0, a.1, i64::MIN, t1));
                }
                if let Some(b) = new {
                    history.push((k, b.0, b.1, t1, i64::MAX));
                }
            }
        }
    }
    let history = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("user_id", DataType::Int64, false),
            Field::new("score", DataType::Float64, false),
            Field::new("tier", DataType::Utf8, false),
            Field::new("valid_from", DataType::Int64, false),
            Field::new("valid_to", DataType::Int64, false),
        ])),
        vec![
            Arc::new(Int64Array::from_iter_values(history.iter().map(|h| h.0))),
            Arc::new(Float64Array::from_iter_values(history.iter().map(|h| h.1))),
            Arc::new(StringArray::from_iter_values(
                history.iter().map(|h| h.2.clone()),
            )),
            Arc::new(Int64Array::from_iter_values(history.iter().map(|h| h.3))),
            Arc::new(Int64Array::from_iter_values(history.iter().map(|h| h.4))),
        ],
    )
    .unwrap();
    let ctx = SessionContext::new();
    ctx.register_batch("events", batch).unwrap();
    ctx.register_batch("history", history).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let batches = runtime
        .block_on(async { ctx.sql(REFERENCE).await?.collect().await })
        .unwrap();
    let mut out = HashMap::with_capacity(n as usize);
    for b in &batches {
        let int = |name: &str| {
            b.column_by_name(name)
                .unwrap()
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .clone()
        };
        let float = |name: &str| {
            b.column_by_name(name)
                .unwrap()
                .as_any()
                .downcast_ref::<Float64Array>()
                .unwrap()
                .clone()
        };
        let (user, ts, count) = (int("user_id"), int("ts"), int("n_1h"));
        let (spend, avg, max, score) = (
            float("spend_1h"),
            float("avg_1h"),
            float("max_all"),
            float("score"),
        );
        let tier = b
            .column_by_name("tier")
            .unwrap()
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        let opt = |a: &Float64Array, i: usize| a.is_valid(i).then(|| a.value(i));
        for i in 0..b.num_rows() {
            let features = Features {
                user_id: user.value(i),
                score: opt(&score, i),
                tier: tier.is_valid(i).then(|| tier.value(i).to_string()),
                n_1h: count.value(i),
                spend_1h: opt(&spend, i),
                avg_1h: opt(&avg, i),
                max_all: opt(&max, i),
            };
            assert!(out.insert(ts.value(i), features).is_none());
        }
    }
    out
}

#[test]
fn a_million_events_with_a_table_version_mid_run_equal_datafusion() {
    let Some(broker) = kafka() else { return };
    let n = events_wanted();
    let started = Instant::now();
    let (dir, topic, out, table_dir) = setup(broker, "features-scale");
    std::fs::remove_dir_all(&table_dir).unwrap();
    std::fs::create_dir_all(&table_dir).unwrap();
    commit(&table_dir, 0, T0 - 60_000);
    send(broker, &topic, n);
    let produced = started.elapsed();
    let text = pipeline(broker, &topic, &out, &dir);

    // First run: half the events, then a stop (its checkpoint drains the view).
    let half = n / 2;
    let mut first = config(2, &dir.join("run"));
    first.max_records = Some(half as u64);
    let (stopped, _) = run_stream(parse(&text), None, first).unwrap();
    assert_eq!(stopped.rows_trained, half as u64, "{stopped:?}");

    // Version 1 arrives while the job is down, committed at a time the first run did not reach:
    // its two workers read half the events each from their own partition, and the partitions
    // hold the keys unevenly, so one read past the middle (a record it saw before the version
    // existed keeps the old row). The resumed job moves to it at that time.
    let t1 = event(half + n / 20).1;
    commit(&table_dir, 1, t1);
    let mut second = config(2, &dir.join("run"));
    second.idle_timeout = Some(Duration::from_secs(8));
    let (summary, _) = run_stream(parse(&text), None, second).unwrap();
    assert!(summary.resumed_from_step.is_some());
    assert_trained(&summary, n as u64);
    let ran = started.elapsed();

    let got = written(broker, &out, n as usize);
    let want = reference(n, t1);
    let mut differing: Vec<String> = Vec::new();
    for (ts, w) in &want {
        match got.get(ts) {
            None => differing.push(format!("event at {ts}: no row")),
            Some(g) if g != w => differing.push(format!("event at {ts}: got {g:?} want {w:?}")),
            Some(_) => {}
        }
    }
    assert_eq!(got.len(), want.len(), "rows written vs events");
    assert!(
        differing.is_empty(),
        "{} of {n} rows differ, first: {:?}",
        differing.len(),
        &differing[..differing.len().min(3)]
    );
    // Not vacuous: the new version changed what later events saw, and deleted keys went null.
    let changed = (want.iter())
        .filter(|(ts, w)| **ts >= t1 && w.score.is_some_and(|s| s >= 1000.0))
        .count();
    let deleted = (want.iter())
        .filter(|(ts, w)| **ts >= t1 && w.score.is_none())
        .count();
    assert!(
        changed > 0 && deleted > 0,
        "{changed} changed, {deleted} deleted"
    );
    eprintln!(
        "features scale: {n} events, produced in {:.1} s, both runs done at {:.1} s, compared at {:.1} s ({changed} rows saw a changed table row, {deleted} a deleted one)",
        produced.as_secs_f64(),
        ran.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}
