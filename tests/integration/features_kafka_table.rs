//! `[features.table] kafka`: a compacted topic as the dimension table, against the real broker.
//! The topic holds each user's row (keyed by user id), later re-scores, tombstones that delete
//! rows and a new user, each with its own timestamp; some are written before the job starts,
//! some while it is stopped between two runs. Every record's row, as the `after = "features"`
//! sink wrote it, has the table as it stood at the record's event time (replaying the topic's
//! messages up to it) and the aggregates over its user's records; the table's bad messages are
//! dead letters.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use millrace::connectors::kafka::{KafkaOptions, KafkaProducer, create_topic};
use millrace::run::run_stream;
use serde_json::{Value, json};

use super::features_stream::{
    EVENTS, Event, T0, assert_rows, assert_trained, events, features_job, send, setup, sink_rows,
};
use super::services::kafka;
use super::streaming::{config, parse, unique};

/// A table message: (timestamp, user, the row or a tombstone).
type Change = (i64, i64, Option<(f64, &'static str)>);

/// Written before the first run: every user 0..25, then users 0..10 re-scored at event 500.
fn before() -> Vec<Change> {
    let tiers = ["t0", "t1", "t2"];
    let mut changes: Vec<Change> = (0..25)
        .map(|u| (T0 - 60_000, u, Some((u as f64, tiers[u as usize % 3]))))
        .collect();
    changes.extend((0..10).map(|u| (T0 + 5_000, u, Some((100.0 + u as f64, "t9")))));
    changes
}

/// Written while the job is stopped, for event 3,000 on (after the first run's watermark):
/// users 20..25 deleted, user 27 added, user 1 re-scored again.
fn between() -> Vec<Change> {
    let at = T0 + 30_000;
    let mut changes: Vec<Change> = (20..25).map(|u| (at, u, None)).collect();
    changes.push((at, 27, Some((27.0, "t7"))));
    changes.push((at, 1, Some((-1.0, "t8"))));
    changes
}

fn publish(broker: &str, topic: &str, changes: &[Change]) {
    let producer = KafkaProducer::new(&KafkaOptions::new(broker), true).unwrap();
    for (ts, user, row) in changes {
        let payload = row.map(|(score, tier)| json!({"score": score, "tier": tier}).to_string());
        producer
            .send_record(
                topic,
                Some(user.to_string().as_bytes()),
                payload.as_deref().map(str::as_bytes),
                &[],
                Some(*ts),
            )
            .unwrap();
    }
    producer.flush(Duration::from_secs(60)).unwrap();
}

/// What the sink must hold for `e`: the table replayed up to its time, its user's records in
/// its last second, and all of them so far.
fn expected(all: &[Event], changes: &[Change], e: &Event) -> BTreeMap<&'static str, Value> {
    let mut row = None;
    for (ts, user, r) in changes {
        if *user == e.user && *ts <= e.ts {
            row = *r;
        }
    }
    let mine = || all.iter().filter(|o| o.user == e.user && o.ts <= e.ts);
    let spend: f64 = mine().map(|o| o.amount).sum();
    BTreeMap::from([
        ("score", row.map_or(Value::Null, |r| json!(r.0))),
        ("tier", row.map_or(Value::Null, |r| json!(r.1))),
        ("n_1s", json!(mine().filter(|o| o.ts > e.ts - 1000).count())),
        ("spend", json!(spend)),
    ])
}

fn pipeline(broker: &str, topic: &str, out: &str, table: &str, dir: &Path) -> String {
    let features = format!(
        r#"[features]
sql = """
SELECT score, tier,
       COUNT(*) OVER (PARTITION BY user_id ORDER BY ts
                      RANGE BETWEEN 999 PRECEDING AND CURRENT ROW) AS n_1s,
       SUM(amount) OVER (PARTITION BY user_id ORDER BY ts) AS spend
FROM events LEFT JOIN users USING (user_id)
"""

[features.table]
name = "users"
key = "user_id"
kafka = {{ bootstrap_servers = "{broker}", topic = "{table}" }}
schema = {{ score = "float64", tier = "string" }}"#
    );
    let numeric = ["score", "n_1s", "spend"];
    let checkpoints = dir.join("ckpt");
    features_job(
        "features-kafka-table",
        (broker, topic, out),
        &checkpoints,
        &features,
        &numeric,
    )
}

#[test]
fn a_compacted_topic_is_a_table_as_of_each_record() {
    let Some(broker) = kafka() else { return };
    let (dir, topic, out, _) = setup(broker, "features-kafka-table");
    let table = unique("features-kafka-table-users");
    create_topic(
        &KafkaOptions::new(broker),
        &table,
        2,
        Duration::from_secs(30),
    )
    .unwrap();
    let all = events();
    let half = (EVENTS / 2) as usize;
    let text = pipeline(broker, &topic, &out, &table, &dir);

    publish(broker, &table, &before());
    // Two messages the table cannot take: a key that is not an integer, a value that is not JSON.
    let producer = KafkaProducer::new(&KafkaOptions::new(broker), true).unwrap();
    producer
        .send(&table, Some(b"abc"), b"{\"score\": 1.0}", &[])
        .unwrap();
    producer.send(&table, Some(b"3"), b"not json", &[]).unwrap();
    producer.flush(Duration::from_secs(30)).unwrap();
    send(broker, &topic, &all[..half]);
    let mut first = config(2, &dir.join("run"));
    first.max_records = Some(half as u64);
    let (stopped, _) = run_stream(parse(&text), None, first).unwrap();
    assert_trained(&stopped, half as u64);
    let dead = std::fs::read_to_string(dir.join("run").join("dead_letters.jsonl")).unwrap();
    let dead: Vec<Value> = dead
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(dead.len(), 2, "{dead:?}");
    assert!(
        dead.iter()
            .all(|d| d["operator"] == "stream/features/table"),
        "{dead:?}"
    );
    assert!(
        dead.iter().any(|d| d["reason"]
            .as_str()
            .unwrap()
            .contains("`abc` is not an integer")),
        "{dead:?}"
    );

    // While the job is down: deletions, a new user and a re-score, then the rest of the events.
    publish(broker, &table, &between());
    send(broker, &topic, &all[half..]);
    let mut second = config(2, &dir.join("run"));
    second.idle_timeout = Some(Duration::from_secs(6));
    let (summary, _) = run_stream(parse(&text), None, second).unwrap();
    assert!(summary.resumed_from_step.is_some());
    assert_trained(&summary, EVENTS as u64);

    let got = sink_rows(broker, &out);
    assert_eq!(got.len(), EVENTS as usize);
    let changes: Vec<Change> = before().into_iter().chain(between()).collect();
    assert_rows(&all, &got, |e| expected(&all, &changes, e));
    // Each kind of change showed: a re-score, a deletion, an addition.
    let score = |user: i64, from: i64, to: i64| -> Vec<Value> {
        let mut seen: Vec<Value> = (all.iter())
            .filter(|e| e.user == user && e.ts >= from && e.ts < to)
            .map(|e| got[&e.ts]["score"].clone())
            .collect();
        seen.dedup();
        seen
    };
    assert_eq!(score(1, T0, T0 + 5_000), [json!(1.0)]);
    assert_eq!(score(1, T0 + 5_000, T0 + 30_000), [json!(101.0)]);
    assert_eq!(score(1, T0 + 30_000, i64::MAX), [json!(-1.0)]);
    assert_eq!(score(21, T0 + 30_000, i64::MAX), [Value::Null]);
    assert_eq!(score(27, T0, T0 + 30_000), [Value::Null]);
    assert_eq!(score(27, T0 + 30_000, i64::MAX), [json!(27.0)]);
}
