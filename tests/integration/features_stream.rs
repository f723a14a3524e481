//! `[features]` in a streaming job, against the real broker: a Delta dimension table joined on the
//! user and per-user aggregates, with a new table version (rows changed, deleted, added) between
//! a stopped run and its resume. Every record's features, as the `after = "features"` sink wrote
//! them, equal a plain recomputation from the events and the two table versions, as of the
//! record's event time: the records before the version's commit time see the old rows.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use millrace::connectors::kafka::{KafkaOptions, KafkaProducer, create_topic};
use millrace::run::run_stream;
use parquet::arrow::ArrowWriter;
use serde_json::{Value, json};

use super::common::kill_when;
use super::features_lookups::check_lookups;
use super::services::{free_port, kafka};
use super::streaming::{config, parse, scratch, unique};
use super::watermarks::read_all;

/// Event `i` happens at `T0 + 10 i` ms; the table's version 1 is committed at `T1`, half-way.
pub(super) const T0: i64 = 1_700_000_000_000;
pub(super) const EVENTS: i64 = 4_000;
pub(super) const T1: i64 = T0 + EVENTS / 2 * 10;
pub(super) const USERS: i64 = 30;

pub(super) struct Event {
    pub(super) user: i64,
    pub(super) ts: i64,
    pub(super) amount: f64,
    pub(super) label: i64,
}

pub(super) fn events() -> Vec<Event> {
    (0..EVENTS)
        .map(|i| Event {
            user: (i * 7 + i / 13) % USERS,
            ts: T0 + i * 10,
            // Quarters: every sum is exact in any order, so the comparison is exact.
            amount: (i % 17) as f64 * 0.25,
            label: i64::from((i % 17) > 8),
        })
        .collect()
}

/// Version 0: users 0..25; version 1: users 0..10 re-scored, 20..25 deleted, 27 added.
pub(super) fn table(version: u8) -> BTreeMap<i64, (f64, String)> {
    let mut rows: BTreeMap<i64, (f64, String)> = (0..25)
        .map(|u| (u, (u as f64, format!("t{}", u % 3))))
        .collect();
    if version == 1 {
        for u in 0..10 {
            rows.insert(u, (100.0 + u as f64, format!("t{}", u % 3)));
        }
        for u in 20..25 {
            rows.remove(&u);
        }
        rows.insert(27, (27.0, "t9".into()));
    }
    rows
}

/// Writes `rows` as the Parquet file `name` under `dir`; its size.
fn write_part(dir: &Path, name: &str, rows: &[(i64, (f64, String))]) -> u64 {
    let schema = Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Int64, false),
        Field::new("score", DataType::Float64, true),
        Field::new("tier", DataType::Utf8, true),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.1.0))),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.1.1.clone()),
            )),
        ],
    )
    .unwrap();
    let path = dir.join(name);
    let mut writer = ArrowWriter::try_new(File::create(&path).unwrap(), schema, None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    std::fs::metadata(path).unwrap().len()
}

/// Commits `version` of the Delta table at `dir`: its rows in two files (users below 12, the
/// rest), replacing the previous version's files; committed at `at` (epoch ms).
fn commit(dir: &Path, version: u8, at: i64) {
    let rows: Vec<(i64, (f64, String))> = table(version).into_iter().collect();
    let (low, high): (Vec<_>, Vec<_>) = rows.into_iter().partition(|r| r.0 < 12);
    commit_parts(dir, version, at, &low, &high);
}

/// Commits `version` of the Delta table at `dir` as two files of rows (`low`, `high`), replacing
/// the previous version's two; committed at `at` (epoch ms).
pub(super) fn commit_parts(
    dir: &Path,
    version: u8,
    at: i64,
    low: &[(i64, (f64, String))],
    high: &[(i64, (f64, String))],
) {
    let mut actions = vec![json!({"commitInfo": {"timestamp": at, "operation": "WRITE"}})];
    if version == 0 {
        let schema = json!({"type": "struct", "fields": [
            {"name": "user_id", "type": "long", "nullable": false, "metadata": {}},
            {"name": "score", "type": "double", "nullable": true, "metadata": {}},
            {"name": "tier", "type": "string", "nullable": true, "metadata": {}},
        ]});
        actions.push(json!({"protocol": {"minReaderVersion": 1, "minWriterVersion": 2}}));
        actions.push(json!({"metaData": {"id": "features-test", "format": {"provider": "parquet", "options": {}},
            "schemaString": schema.to_string(), "partitionColumns": [], "configuration": {}, "createdTime": at}}));
    } else {
        for part in ["low", "high"] {
            let path = format!("part-{part}-v{}.parquet", version - 1);
            actions.push(
                json!({"remove": {"path": path, "deletionTimestamp": at, "dataChange": true}}),
            );
        }
    }
    for (part, rows) in [("low", low), ("high", high)] {
        let path = format!("part-{part}-v{version}.parquet");
        let size = write_part(dir, &path, rows);
        actions.push(
            json!({"add": {"path": path, "partitionValues": {}, "size": size,
            "modificationTime": at, "dataChange": true}}),
        );
    }
    let log = dir.join("_delta_log");
    std::fs::create_dir_all(&log).unwrap();
    let text: Vec<String> = actions.iter().map(Value::to_string).collect();
    std::fs::write(
        log.join(format!("{version:020}.json")),
        text.join("\n") + "\n",
    )
    .unwrap();
}

/// What the sink must hold for event `e`: the table as of its time, and the aggregates over its
/// user's events up to it (the last second of them for the windowed ones).
fn expected(all: &[Event], e: &Event) -> BTreeMap<&'static str, Value> {
    expected_in(all, e, u8::from(e.ts >= T1))
}

/// [`expected`] with the table at `version` throughout.
pub(super) fn expected_in(all: &[Event], e: &Event, version: u8) -> BTreeMap<&'static str, Value> {
    let row = table(version).get(&e.user).cloned();
    let mine = || all.iter().filter(|o| o.user == e.user && o.ts <= e.ts);
    let window: Vec<f64> = mine()
        .filter(|o| o.ts > e.ts - 1000)
        .map(|o| o.amount)
        .collect();
    let spend: f64 = mine().map(|o| o.amount).sum();
    BTreeMap::from([
        ("score", row.as_ref().map_or(Value::Null, |r| json!(r.0))),
        ("tier", row.map_or(Value::Null, |r| json!(r.1))),
        ("n_1s", json!(window.len())),
        ("spend", json!(spend)),
        (
            "avg_1s",
            json!(window.iter().sum::<f64>() / window.len() as f64),
        ),
        (
            "max_1s",
            json!(window.iter().cloned().fold(f64::MIN, f64::max)),
        ),
    ])
}

pub(super) fn send(broker: &str, topic: &str, events: &[Event]) {
    let producer = KafkaProducer::new(&KafkaOptions::new(broker), true).unwrap();
    for e in events {
        let payload = json!({"user_id": e.user, "ts": e.ts, "amount": e.amount, "label": e.label});
        producer
            .send(
                topic,
                Some(e.user.to_string().as_bytes()),
                payload.to_string().as_bytes(),
                &[],
            )
            .unwrap();
    }
    producer.flush(Duration::from_secs(60)).unwrap();
}

/// A streaming job over the test's records (`user_id`, `ts`, `amount`, `label`) named `name`,
/// with the `[features]` section `features`, its rows written after the features to `out`, and
/// a logistic model trained on `amount` and the `numeric` features (`tier` one-hot).
pub(super) fn features_job(
    name: &str,
    (broker, topic, out): (&str, &str, &str),
    checkpoints: &Path,
    features: &str,
    numeric: &[&str],
) -> String {
    let numeric: Vec<String> = std::iter::once("amount")
        .chain(numeric.iter().copied())
        .map(|c| format!("\"{c}\""))
        .collect();
    format!(
        r#"
name = "{name}"

[stream]
bootstrap_servers = "{broker}"
topic = "{topic}"
group_id = "{topic}-group"
columns = ["user_id", "ts", "amount", "label"]
schema = {{ user_id = "int64", ts = "int64", amount = "float64", label = "int64" }}
event_time = "ts"
max_out_of_orderness = "50ms"
warmup_records = 100
max_batch_records = 150
poll_timeout_ms = 10
publish_every_steps = 10
checkpoint_every_steps = 5
checkpoint_every_s = 0
checkpoint_dir = "{checkpoints}"

{features}

[[sink]]
name = "rows"
after = "features"
kafka = {{ bootstrap_servers = "{broker}", topic = "{out}" }}

[preprocess]
numeric = [{numeric}]
one_hot = ["tier"]
nulls = "zero"
label = "label"

[train]
task = "classification"
model = {{ kind = "logistic" }}
"#,
        checkpoints = checkpoints.display(),
        numeric = numeric.join(", "),
    )
}

fn pipeline(broker: &str, topic: &str, out: &str, table: &Path, checkpoints: &Path) -> String {
    let features = format!(
        r#"[features]
key = "user_id"

[features.table]
path = "{table}"
columns = ["score", "tier"]
refresh = "100ms"

[[features.aggregate]]
name = "n_1s"
kind = "count"
window = "1s"

[[features.aggregate]]
name = "spend"
kind = "sum"
column = "amount"

[[features.aggregate]]
name = "avg_1s"
kind = "mean"
column = "amount"
window = "1s"

[[features.aggregate]]
name = "max_1s"
kind = "max"
column = "amount"
window = "1s""#,
        table = table.display()
    );
    let numeric = ["score", "n_1s", "spend", "avg_1s"];
    features_job(
        "features",
        (broker, topic, out),
        checkpoints,
        &features,
        &numeric,
    )
}

/// A scratch folder named `name`, a 2-partition input topic and a 1-partition output topic, and
/// the table's version 0 committed before the first event: (folder, input, output, table).
pub(super) fn setup(
    broker: &str,
    name: &str,
) -> (std::path::PathBuf, String, String, std::path::PathBuf) {
    let dir = scratch(name);
    let (topic, out) = (
        unique(&format!("{name}-in")),
        unique(&format!("{name}-out")),
    );
    let options = KafkaOptions::new(broker);
    create_topic(&options, &topic, 2, Duration::from_secs(30)).unwrap();
    create_topic(&options, &out, 1, Duration::from_secs(30)).unwrap();
    let table_dir = dir.join("users");
    std::fs::create_dir_all(&table_dir).unwrap();
    commit(&table_dir, 0, T0 - 60_000);
    (dir, topic, out, table_dir)
}

#[test]
fn stream_features_equal_a_recomputation_across_a_table_version_and_a_resume() {
    let Some(broker) = kafka() else { return };
    let (dir, topic, out, table_dir) = setup(broker, "features");
    let all = events();
    let half = (EVENTS / 2) as usize;
    let text = pipeline(broker, &topic, &out, &table_dir, &dir.join("ckpt"));

    // First run: the first half of the events, then a stop that drains the view.
    send(broker, &topic, &all[..half]);
    let mut first = config(2, &dir.join("run"));
    first.max_records = Some(half as u64);
    let (stopped, _) = run_stream(parse(&text), None, first).unwrap();
    assert_trained(&stopped, half as u64);

    // Version 1, committed at T1, arrives while the job is down; the resumed job moves to it.
    commit(&table_dir, 1, T1);
    send(broker, &topic, &all[half..]);
    // It serves the view's current features while it runs.
    let port = free_port();
    let served = format!("{text}\n[serve]\naddr = \"127.0.0.1:{port}\"\n");
    let mut second = config(2, &dir.join("run"));
    second.idle_timeout = Some(Duration::from_secs(8));
    let job = std::thread::spawn(move || run_stream(parse(&served), None, second));
    check_lookups(format!("127.0.0.1:{port}").parse().unwrap(), &all);
    let (summary, _) = job.join().unwrap().unwrap();
    assert!(summary.resumed_from_step.is_some());
    assert_trained(&summary, EVENTS as u64);

    let got = sink_rows(broker, &out);
    assert_eq!(
        got.len(),
        EVENTS as usize,
        "every record once, across the resume"
    );
    assert_rows(&all, &got, |e| expected(&all, e));
    // The version changed what the records saw, on both sides of its commit time.
    let score = |ts: i64| got[&ts]["score"].clone();
    let user0: Vec<&Event> = all.iter().filter(|e| e.user == 0).collect();
    assert!(
        user0
            .iter()
            .any(|e| e.ts < T1 && score(e.ts).as_f64() == Some(0.0))
    );
    assert!(
        user0
            .iter()
            .any(|e| e.ts >= T1 && score(e.ts).as_f64() == Some(100.0))
    );
}

/// The run trained `n` records, none dead-lettered or late.
pub(super) fn assert_trained(summary: &millrace::operators::streaming::StreamSummary, n: u64) {
    assert_eq!(
        (
            summary.rows_trained,
            summary.rows_dead_lettered,
            summary.rows_late
        ),
        (n, 0, 0),
        "{summary:?}"
    );
}

/// The rows the features sink wrote to `out`, by event time; a row written twice fails.
pub(super) fn sink_rows(broker: &str, out: &str) -> BTreeMap<i64, Value> {
    let mut got = BTreeMap::new();
    for m in read_all(broker, out, EVENTS as usize) {
        let row: Value = serde_json::from_slice(m.payload.as_deref().unwrap()).unwrap();
        let ts = row["ts"].as_i64().unwrap();
        assert!(got.insert(ts, row).is_none(), "event at {ts} twice");
    }
    got
}

/// Every event's row in `got` (by event time) has the user and the features `want` gives.
pub(super) fn assert_rows(
    all: &[Event],
    got: &BTreeMap<i64, Value>,
    want: impl Fn(&Event) -> BTreeMap<&'static str, Value>,
) {
    let same = |a: &Value, b: &Value| match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    };
    let mut differing = Vec::new();
    for e in all {
        let Some(row) = got.get(&e.ts) else {
            differing.push(format!("event at {} (user {}): no row", e.ts, e.user));
            continue;
        };
        assert_eq!(row["user_id"].as_i64(), Some(e.user));
        let bad: Vec<String> = (want(e).iter())
            .filter(|(name, value)| !same(row.get(**name).unwrap_or(&Value::Null), value))
            .map(|(name, value)| format!("{name}: got {} want {value}", row[*name]))
            .collect();
        if !bad.is_empty() {
            differing.push(format!(
                "event at {} (user {}): {}",
                e.ts,
                e.user,
                bad.join(", ")
            ));
        }
    }
    assert!(
        differing.is_empty(),
        "{} of {EVENTS} rows differ, first: {:?}",
        differing.len(),
        &differing[..differing.len().min(5)]
    );
}

/// `kill -9` mid-stream, then a restart: the job resumes from its last checkpoint (the view's
/// windows, all-time sums and waiting records included) and every record is trained once. The
/// features sink, keyed by the record (its event time, unique here), is an upsert topic: it may
/// repeat the rows written after that checkpoint, each equal to its first copy, and read as a
/// table (each key's last message) it holds exactly one row per record, the one a recomputation
/// gives.
#[test]
fn a_killed_features_job_resumes_with_the_same_features() {
    let Some(broker) = kafka() else { return };
    let (dir, topic, out, table_dir) = setup(broker, "features-kill");
    let all = events();
    send(broker, &topic, &all);
    let checkpoints = dir.join("ckpt");
    let text = pipeline(broker, &topic, &out, &table_dir, &checkpoints)
        .replace("max_batch_records = 150", "max_batch_records = 40")
        .replace(
            &format!("topic = \"{out}\" }}"),
            &format!("topic = \"{out}\", key = \"ts\" }}"),
        );
    assert!(text.contains("key = \"ts\""));
    let pipeline_file = dir.join("features.toml");
    std::fs::write(&pipeline_file, text).unwrap();
    let run = |run_dir: &str| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_millrace"));
        command
            .arg("run")
            .arg(&pipeline_file)
            .args(["--workers", "2", "--idle-timeout-s", "3", "--run-dir"])
            .arg(dir.join(run_dir))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        command
    };
    let mut first = run("run1").spawn().unwrap();
    // Killed a few steps after its third checkpoint, so that it has written rows the checkpoint
    // does not count.
    let mut third: Option<std::time::Instant> = None;
    kill_when(
        &mut first,
        Duration::from_secs(120),
        "three checkpoints written",
        || {
            let written = std::fs::read_dir(&checkpoints)
                .map(|d| {
                    (d.flatten())
                        .filter(|e| e.file_name().to_string_lossy().starts_with("ckpt-"))
                        .count()
                })
                .unwrap_or(0);
            if written >= 3 {
                third.get_or_insert_with(std::time::Instant::now);
            }
            third.is_some_and(|t| t.elapsed() >= Duration::from_millis(40))
        },
    );
    let before = read_all(broker, &out, 1).len();
    assert!(before < EVENTS as usize, "the job ended before the kill");
    let status = run("run2").status().unwrap();
    assert!(status.success());
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("run2/summary.json")).unwrap())
            .unwrap();
    assert!(summary["resumed_from_step"].as_u64().is_some(), "{summary}");
    assert_eq!(summary["rows_trained"], EVENTS, "{summary}");
    assert_eq!(summary["rows_late"], 0, "{summary}");
    assert_eq!(summary["rows_dead_lettered"], 0, "{summary}");

    let messages = read_all(broker, &out, EVENTS as usize);
    // The topic as a table: each key's last message (one partition: in the order written).
    let mut got: BTreeMap<i64, Value> = BTreeMap::new();
    for m in &messages {
        let key: i64 = String::from_utf8(m.key.clone().unwrap())
            .unwrap()
            .parse()
            .unwrap();
        let row: Value = serde_json::from_slice(m.payload.as_deref().unwrap()).unwrap();
        assert_eq!(row["ts"].as_i64(), Some(key));
        if let Some(earlier) = got.insert(key, row.clone()) {
            assert_eq!(earlier, row, "event at {key} written twice, differently");
        }
    }
    assert_eq!(got.len(), EVENTS as usize, "every record's row");
    assert_rows(&all, &got, |e| expected_in(&all, e, 0));
}

#[test]
fn bad_features_fail_before_work_naming_what_to_change() {
    let dir = scratch("features-config");
    let table_dir = dir.join("users");
    std::fs::create_dir_all(&table_dir).unwrap();
    commit(&table_dir, 0, T0);
    let good = pipeline("127.0.0.1:1", "t", "out", &table_dir, &dir.join("ckpt"));
    let plan =
        |text: &str| millrace::operators::streaming::StreamPlan::new(parse(text)).map(|_| ());
    plan(&good).unwrap();
    // Watermark alignment: 10 s by default with [features], as set otherwise, "0s" for none.
    let alignment = |text: &str| {
        millrace::operators::streaming::StreamPlan::new(parse(text))
            .unwrap()
            .alignment_ms
    };
    assert_eq!(alignment(&good), Some(10_000));
    let set = |span: &str| {
        good.replace(
            "event_time = \"ts\"\n",
            &format!("event_time = \"ts\"\nwatermark_alignment = \"{span}\"\n"),
        )
    };
    assert_eq!(alignment(&set("3s")), Some(3_000));
    assert_eq!(alignment(&set("0s")), None);
    // An aggregate kind is checked with the file, at its line and column.
    let median = good.replace(r#"kind = "max""#, r#"kind = "median""#);
    let error = millrace::pipeline_file::parse(&median, Path::new("features.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("features.toml:") && error.contains("unknown variant `median`"),
        "{error}"
    );
    assert!(error.contains("count_distinct"), "{error}");
    let cases = [
        (
            good.replace(r#"user_id = "int64""#, r#"user_id = "string""#),
            "the records' key `user_id` is Utf8 but the table's key `user_id` is Int64",
        ),
        (
            good.replace(
                r#"columns = ["score", "tier"]"#,
                r#"columns = ["score", "nope"]"#,
            ),
            "nope",
        ),
        (
            good.replace(r#"event_time = "ts""#, ""),
            "set [stream] event_time",
        ),
        (
            good.replace(&table_dir.display().to_string(), "/nonexistent/users"),
            "cannot read the table",
        ),
        (
            good.replace(r#"name = "n_1s""#, r#"name = "spend""#),
            "two features are named `spend`",
        ),
        (
            good.replace(
                r#"column = "amount"
window = "1s""#,
                r#"column = "nope"
window = "1s""#,
            ),
            "reads column `nope`",
        ),
        (
            good.replace(r#"window = "1s""#, r#"window = "0s""#),
            "window of 0 ms",
        ),
    ];
    for (text, wanted) in cases {
        let err = plan(&text).unwrap_err().to_string();
        assert!(err.contains(wanted), "wanted `{wanted}` in: {err}");
    }
}
