//! `[features] sql` in a streaming job, against the real broker: the view written as one SQL
//! query (window functions over the records left-joined with a Delta table). Every row the
//! `after = "features"` sink wrote equals what DataFusion gives running the same query over the
//! same records and table in one batch, and the hand recomputation of the `[features]` test.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::prelude::SessionContext;
use millrace::run::run_stream;
use serde_json::Value;

use super::features_stream::{
    EVENTS, Event, assert_rows, assert_trained, events, expected_in, features_job, send, setup,
    sink_rows, table,
};
use super::services::kafka;
use super::streaming::{config, parse};

/// The view: the table's columns and six aggregates, three of them over the last second
/// (`[t - 999, t]` in ms, the `[features]` test's `window = "1s"`). A user's event 170 ms
/// earlier is common here (2,759 of the 4,000 events have one), so `n_170ms` checks that the
/// frame's start is inclusive, as in SQL.
const VIEW: &str = "SELECT events.*, score, tier,
       COUNT(*) OVER last_second AS n_1s,
       SUM(amount) OVER (PARTITION BY user_id ORDER BY ts) AS spend,
       AVG(amount) OVER last_second AS avg_1s,
       MAX(amount) OVER last_second AS max_1s,
       COUNT(DISTINCT label) OVER (PARTITION BY user_id ORDER BY ts) AS labels,
       COUNT(*) OVER (PARTITION BY user_id ORDER BY ts
                      RANGE BETWEEN 170 PRECEDING AND CURRENT ROW) AS n_170ms
FROM events LEFT JOIN users USING (user_id)
WINDOW last_second AS (PARTITION BY user_id ORDER BY ts
                       RANGE BETWEEN 999 PRECEDING AND CURRENT ROW)";

fn pipeline(broker: &str, topic: &str, out: &str, table: &Path, checkpoints: &Path) -> String {
    let features = format!(
        "[features]\nsql = \"\"\"\n{VIEW}\n\"\"\"\n\n[features.table]\nname = \"users\"\npath = \"{}\"",
        table.display()
    );
    let numeric = ["score", "n_1s", "spend", "avg_1s", "labels"];
    features_job(
        "features-sql",
        (broker, topic, out),
        checkpoints,
        &features,
        &numeric,
    )
}

/// DataFusion's answer to `sql` over `all` and the table's version 0, by event time.
fn datafusion_rows(sql: &str, all: &[Event]) -> BTreeMap<i64, Value> {
    let ctx = SessionContext::new();
    let events = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("user_id", DataType::Int64, false),
            Field::new("ts", DataType::Int64, false),
            Field::new("amount", DataType::Float64, false),
            Field::new("label", DataType::Int64, false),
        ])),
        vec![
            Arc::new(Int64Array::from_iter_values(all.iter().map(|e| e.user))),
            Arc::new(Int64Array::from_iter_values(all.iter().map(|e| e.ts))),
            Arc::new(Float64Array::from_iter_values(all.iter().map(|e| e.amount))),
            Arc::new(Int64Array::from_iter_values(all.iter().map(|e| e.label))),
        ],
    )
    .unwrap();
    let rows = table(0);
    let users = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("user_id", DataType::Int64, false),
            Field::new("score", DataType::Float64, true),
            Field::new("tier", DataType::Utf8, true),
        ])),
        vec![
            Arc::new(Int64Array::from_iter_values(rows.keys().copied())),
            Arc::new(Float64Array::from_iter_values(rows.values().map(|r| r.0))),
            Arc::new(StringArray::from_iter_values(
                rows.values().map(|r| r.1.clone()),
            )),
        ],
    )
    .unwrap();
    ctx.register_batch("events", events).unwrap();
    ctx.register_batch("users", users).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let batches = runtime
        .block_on(async { ctx.sql(sql).await?.collect().await })
        .unwrap();
    let mut out = BTreeMap::new();
    for batch in &batches {
        for i in 0..batch.num_rows() {
            let row: Value =
                serde_json::from_str(&millrace::engine::row_to_json(batch, i).unwrap()).unwrap();
            out.insert(row["ts"].as_i64().unwrap(), row);
        }
    }
    out
}

#[test]
fn stream_features_from_sql_equal_datafusion_running_the_same_query() {
    let Some(broker) = kafka() else { return };
    let (dir, topic, out, table_dir) = setup(broker, "features-sql");
    let all = events();
    send(broker, &topic, &all);
    let mut run = config(2, &dir.join("run"));
    run.max_records = Some(EVENTS as u64);
    let text = pipeline(broker, &topic, &out, &table_dir, &dir.join("ckpt"));
    let (summary, _) = run_stream(parse(&text), None, run).unwrap();
    assert_trained(&summary, EVENTS as u64);

    let got = sink_rows(broker, &out);
    let want = datafusion_rows(VIEW, &all);
    assert_eq!(want.len(), EVENTS as usize);
    // Every feature column DataFusion makes, as the sink wrote it.
    assert_rows(&all, &got, |e| {
        let row = &want[&e.ts];
        [
            "score", "tier", "n_1s", "spend", "avg_1s", "max_1s", "labels", "n_170ms",
        ]
        .into_iter()
        .map(|name| (name, row.get(name).cloned().unwrap_or(Value::Null)))
        .collect()
    });
    // And the hand recomputation agrees with both (the columns it knows).
    assert_rows(&all, &got, |e| expected_in(&all, e, 0));
    // Not a vacuous comparison: users 25.. have no table row, and labels vary.
    let labels: Vec<i64> = (got.values())
        .filter_map(|r| r["labels"].as_i64())
        .collect();
    assert!(labels.contains(&1) && labels.contains(&2), "{labels:?}");
    assert!(got.values().any(|r| r["score"].is_null()));
}

#[test]
fn a_features_query_outside_the_subset_fails_before_work() {
    let Some(broker) = kafka() else { return };
    let (dir, topic, out, table_dir) = setup(broker, "features-sql-bad");
    let text = pipeline(broker, &topic, &out, &table_dir, &dir.join("ckpt")).replace(
        "FROM events LEFT JOIN users USING (user_id)",
        "FROM events LEFT JOIN users USING (user_id) WHERE amount > 1",
    );
    let started = std::time::Instant::now();
    let e = run_stream(parse(&text), None, config(2, &dir.join("run"))).unwrap_err();
    let message = e.to_string();
    assert!(
        message.contains("[features.sql] WHERE (or HAVING) is not in the streaming SQL subset"),
        "{message}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
}

/// `millrace check` plans a `[features] sql` job without a broker or a record: it prints the view
/// the query became, and a query outside the subset fails with its line in the file.
#[test]
fn millrace_check_prints_the_view_a_query_becomes() {
    let dir = super::common::scratch("features-sql-check");
    let table = dir.join("users");
    std::fs::create_dir_all(&table).unwrap();
    let rows: Vec<(i64, (f64, String))> = super::features_stream::table(0).into_iter().collect();
    let (low, high) = rows.split_at(rows.len() / 2);
    super::features_stream::commit_parts(&table, 0, 0, low, high);
    let check = |text: &str| {
        let file = dir.join("check.toml");
        std::fs::write(&file, text).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_millrace"))
            .arg("check")
            .arg(&file)
            .output()
            .unwrap();
        let all = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), all)
    };
    let text = pipeline("127.0.0.1:1", "events", "out", &table, &dir.join("ckpt"));
    let (ok, printed) = check(&text);
    assert!(ok, "{printed}");
    for want in [
        "features `features`, per `user_id` as of `ts`: score, tier;",
        "n_1s = count over 1000 ms",
        "spend = sum over all time",
        "n_170ms = count over 171 ms",
        "Left join",
        "adds: score Float64, tier Utf8, n_1s Int64",
        "ok, a streaming job on topic `events`",
    ] {
        assert!(printed.contains(want), "{want}: {printed}");
    }
    let bad = text.replace("ORDER BY ts\n", "ORDER BY amount\n");
    let (ok, printed) = check(&bad);
    assert!(!ok, "{printed}");
    let line = bad.lines().position(|l| l.starts_with("sql = ")).unwrap() + 1;
    assert!(
        printed.contains(&format!("check.toml:{line}:")),
        "{printed}"
    );
    assert!(printed.contains("the ORDER BY of `n_1s`"), "{printed}");
    // Said once, not once more as its own cause.
    assert_eq!(printed.matches("the ORDER BY of").count(), 1, "{printed}");
}
