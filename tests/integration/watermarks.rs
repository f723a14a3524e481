//! Event-time watermarks per Kafka partition, and predictions that join back to their records,
//! against a real Kafka-protocol broker.
//!
//! The records are written here (keyed, with event times 100 ms apart) and read back with the
//! source, so every assertion is against what the broker really holds: partitions and offsets.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use arrow::datatypes::DataType;
use millrace::connectors::kafka::{
    KafkaOptions, KafkaProducer, KafkaSource, RawMessage, StartFrom, create_topic,
};
use millrace::run::run_stream;

use super::services::kafka;
use super::streaming::{
    assert_counted, config, counting_pipeline, fill_topic, parse, scratch, unique,
};

/// Event time of record `i` (epoch ms): 100 ms apart from a whole minute.
const T0_MS: i64 = 1_700_000_040_000;

fn event_ms(i: u64) -> i64 {
    T0_MS + i as i64 * 100
}

/// The JSON of record `i` for the counting pipeline's schema (`ts` in microseconds).
fn payload(i: u64, ts_ms: i64) -> String {
    format!(
        r#"{{"f0": {}, "f3": null, "cat": "c{}", "ts": {}, "label": {}}}"#,
        (i % 10) as f32 / 10.0,
        i % 8,
        ts_ms * 1000,
        i % 2
    )
}

/// Sends `rows` in-order records to a new topic of `partitions`, record `i` keyed `key(i)`.
fn send_rows(
    broker: &str,
    topic: &str,
    partitions: i32,
    rows: u64,
    key: impl Fn(u64) -> String,
) -> KafkaProducer {
    let options = KafkaOptions::new(broker);
    create_topic(&options, topic, partitions, Duration::from_secs(30)).unwrap();
    let producer = KafkaProducer::new(&options, true).unwrap();
    for i in 0..rows {
        let k = key(i);
        producer
            .send(
                topic,
                Some(k.as_bytes()),
                payload(i, event_ms(i)).as_bytes(),
                &[],
            )
            .unwrap();
    }
    producer.flush(Duration::from_secs(60)).unwrap();
    producer
}

/// A reader of every partition of `topic`, from the start.
pub(super) fn reader(broker: &str, topic: &str) -> KafkaSource {
    let options = KafkaOptions::new(broker);
    KafkaSource::open(
        &options,
        topic,
        &unique("reader"),
        0,
        1,
        StartFrom::Earliest,
        None,
    )
    .unwrap()
}

/// Every message of `topic` (all partitions), read until `count` arrived (or 3 minutes passed:
/// the whole suite on 2 cores, MLflow servers included, once kept a reader from 4,000 messages
/// for over a minute).
pub(super) fn read_all(broker: &str, topic: &str, count: usize) -> Vec<RawMessage> {
    let mut source = reader(broker, topic);
    let mut out = Vec::new();
    let started = Instant::now();
    while out.len() < count && started.elapsed() < Duration::from_secs(180) {
        out.extend(source.poll(10_000, Duration::from_millis(200)).unwrap());
    }
    // Nothing more than that.
    out.extend(source.poll(10_000, Duration::from_millis(500)).unwrap());
    out
}

/// The counting pipeline with the event time `ts` passed through its SQL.
fn event_time_pipeline(broker: &str, topic: &str, checkpoints: &Path, extra: &str) -> String {
    counting_pipeline(broker, topic, checkpoints, extra).replace(
        "SELECT 0.0 AS zero, 1000000.0 AS y FROM input",
        "SELECT 0.0 AS zero, 1000000.0 AS y, ts FROM input",
    )
}

fn metric(run_dir: &Path, name: &str) -> f64 {
    let text = std::fs::read_to_string(run_dir.join("metrics.prom")).unwrap();
    text.lines()
        .find(|l| l.starts_with(name) && !l.starts_with('#'))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in metrics.prom:\n{text}"))
}

/// Runs the counting pipeline with event time `ts` and `max_out_of_orderness = "1h"` on 2 workers
/// over the whole topic, and checks that each of its `rows` good rows trained and none was late
/// (summary, metrics.prom, dead letters, and the model's record count). Its final watermark:
/// none when a partition of the topic is empty (an empty partition holds the watermark back until
/// its `idle_timeout`, 30 s, which this short job does not reach).
fn assert_backlog_all_trained(broker: &str, topic: &str, rows: u64, dir: &Path) -> Option<i64> {
    let text = event_time_pipeline(
        broker,
        topic,
        &dir.join("checkpoints"),
        "event_time = \"ts\"\nmax_out_of_orderness = \"1h\"",
    );
    let (summary, run_dir) = run_stream(parse(&text), None, config(2, &dir.join("run"))).unwrap();
    assert_eq!(summary.rows_read, rows);
    assert_eq!(summary.rows_trained, rows, "{summary:?}");
    assert_eq!(summary.rows_late, 0, "{summary:?}");
    assert_eq!(summary.rows_dead_lettered, 0, "{summary:?}");
    assert_counted(&run_dir.join("model"), rows);
    assert_eq!(metric(&run_dir, "millrace_stream_rows_late_total"), 0.0);
    assert_eq!(
        metric(&run_dir, "millrace_stream_rows_trained_total"),
        rows as f64
    );
    let dead = std::fs::read_to_string(run_dir.join("dead_letters.jsonl")).unwrap_or_default();
    assert_eq!(dead.lines().count(), 0, "{dead}");
    let ends = reader(broker, topic).high_watermarks().unwrap();
    if ends.values().any(|end| *end == 0) {
        assert_eq!(summary.watermark_ms, None, "an empty partition: {ends:?}");
        return None;
    }
    assert_eq!(
        summary.watermark_ms.map(|w| w as f64),
        Some(metric(&run_dir, "millrace_stream_watermark_ms"))
    );
    Some(summary.watermark_ms.expect("a watermark"))
}

/// The issue's backlog: a 4-partition topic of 50,000 in-order rows, event times 100 ms apart,
/// `max_out_of_orderness = "1h"`, 2 workers from the start. Partitions are consumed at
/// different speeds, but each is in order: no good row is late. (With the watermark of the newest
/// event per worker, the `produce` topic below lost 13,151 of its rows as late.)
#[test]
fn a_backlog_of_in_order_partitions_trains_every_row_and_none_is_late() {
    let Some(broker) = kafka() else { return };
    let rows = 50_000;
    // As `millrace produce` writes it (no key: the producer fills one partition at a time, and on
    // a loaded machine, with few large batches, it may leave one empty).
    let dir = scratch("wm-backlog-produce");
    let topic = unique("wm-backlog-produce");
    fill_topic(broker, &topic, 4, rows, &dir);
    assert_backlog_all_trained(broker, &topic, rows, &dir);

    // Keyed: every partition holds about a quarter of the rows, in order.
    let dir = scratch("wm-backlog-keyed");
    let topic = unique("wm-backlog-keyed");
    send_rows(broker, &topic, 4, rows, |i| format!("r{i}"));
    let watermark = assert_backlog_all_trained(broker, &topic, rows, &dir).expect("a watermark");
    // The slowest partition's newest event time minus 1h: its newest is among the last rows.
    let newest = event_ms(rows - 1);
    assert!(watermark <= newest - 3_600_000, "{watermark}");
    assert!(watermark >= newest - 3_600_000 - 60_000, "{watermark}");
}

/// A job slower than its backlog, with a short `idle_timeout`: the consumer delivers one
/// partition's fetched records for longer than the timeout while the others wait in the broker.
/// Those others still hold unread records, so they are not idle, and none of their in-order rows
/// is late. (Taking them as idle made 75,543 of 1M backlog records late in features_online.)
#[test]
fn partitions_with_unread_records_are_not_idle_however_slow_the_job() {
    let Some(broker) = kafka() else { return };
    let rows = 20_000;
    let dir = scratch("wm-unread");
    let topic = unique("wm-unread");
    send_rows(broker, &topic, 4, rows, |i| format!("r{i}"));
    let text = event_time_pipeline(
        broker,
        &topic,
        &dir.join("checkpoints"),
        "event_time = \"ts\"\nmax_out_of_orderness = \"1s\"\nidle_timeout = \"50ms\"",
    );
    let (summary, run_dir) = run_stream(parse(&text), None, config(2, &dir.join("run"))).unwrap();
    assert_eq!(summary.rows_read, rows);
    assert_eq!(summary.rows_late, 0, "{summary:?}");
    assert_eq!(summary.rows_trained, rows, "{summary:?}");
    assert_counted(&run_dir.join("model"), rows);
}

/// Watermark alignment on the most uneven backlog there is (each partition a different quarter
/// of the time range): partitions far ahead are paused and resumed many times, and still every
/// row is trained once and none is late (a pause neither loses nor repeats a record, and the job
/// never waits on a paused partition).
#[test]
fn aligned_partitions_pause_and_resume_without_losing_a_row() {
    let Some(broker) = kafka() else { return };
    let rows = 20_000;
    let dir = scratch("wm-aligned");
    let topic = unique("wm-aligned");
    fill_topic(broker, &topic, 4, rows, &dir);
    let text = event_time_pipeline(
        broker,
        &topic,
        &dir.join("checkpoints"),
        "event_time = \"ts\"\nmax_out_of_orderness = \"1s\"\nidle_timeout = \"500ms\"\nwatermark_alignment = \"2s\"",
    );
    let (summary, run_dir) = run_stream(parse(&text), None, config(2, &dir.join("run"))).unwrap();
    assert_eq!(summary.rows_read, rows);
    assert_eq!(summary.rows_late, 0, "{summary:?}");
    assert_eq!(summary.rows_trained, rows, "{summary:?}");
    assert_counted(&run_dir.join("model"), rows);
    // Without an event time to align, the setting is refused before work.
    let bad = text.replace("event_time = \"ts\"\n", "");
    let err = match millrace::pipeline_file::parse(&bad, Path::new("bad.toml")) {
        Err(e) => e.to_string(),
        Ok(spec) => (millrace::operators::streaming::StreamPlan::new(spec).map(|_| ()))
            .unwrap_err()
            .to_string(),
    };
    assert!(err.contains("watermark_alignment"), "{err}");
}

/// One record far behind the others (a copy of the first, 200 s older than the newest, with
/// `max_out_of_orderness = "1m"`) is late: dead-lettered with its reason and origin.
#[test]
fn a_genuinely_late_record_is_dead_lettered_as_late() {
    let Some(broker) = kafka() else { return };
    let dir = scratch("wm-late");
    let topic = unique("wm-late");
    let rows = 2_000;
    let producer = send_rows(broker, &topic, 1, rows, |i| format!("r{i}"));
    producer
        .send(
            &topic,
            Some(b"late"),
            payload(0, event_ms(0)).as_bytes(),
            &[],
        )
        .unwrap();
    producer.flush(Duration::from_secs(30)).unwrap();
    let text = event_time_pipeline(
        broker,
        &topic,
        &dir.join("checkpoints"),
        "event_time = \"ts\"\nmax_out_of_orderness = \"1m\"",
    );
    let (summary, run_dir) = run_stream(parse(&text), None, config(1, &dir.join("run"))).unwrap();
    assert_eq!(summary.rows_read, rows + 1);
    assert_eq!(summary.rows_late, 1, "{summary:?}");
    assert_eq!(summary.rows_trained, rows, "{summary:?}");
    assert_counted(&run_dir.join("model"), rows);
    assert_eq!(metric(&run_dir, "millrace_stream_rows_late_total"), 1.0);
    let dead = std::fs::read_to_string(run_dir.join("dead_letters.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = dead
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{dead}");
    let letter = &lines[0];
    assert_eq!(letter["operator"], "stream/late", "{letter}");
    let reason = letter["reason"].as_str().unwrap();
    assert!(
        reason.contains(&format!(
            "event time {} ms is behind the watermark",
            event_ms(0)
        )),
        "{reason}"
    );
    assert!(reason.contains("max_out_of_orderness = 1m"), "{reason}");
    assert_eq!(
        letter["origin"],
        format!("topic {topic} partition 0 offset {rows}"),
        "{letter}"
    );
}

/// A 2-partition topic whose records all went to one partition: with `idle_timeout = "1s"`
/// the empty partition is idle after a second, the watermark follows the other one and
/// windows close while the job runs; with idleness off, the empty partition holds it back.
#[test]
fn an_idle_partition_stops_holding_the_watermark_back() {
    let Some(broker) = kafka() else { return };
    let dir = scratch("wm-idle");
    let topic = unique("wm-idle");
    let rows = 600; // 60 s of event time: windows of 10 s
    send_rows(broker, &topic, 2, rows, |_| "one key, one partition".into());
    let stream = |idle: &str| {
        format!(
            "event_time = \"ts\"\nmax_out_of_orderness = \"1s\"\nidle_timeout = \"{idle}\"\n\
             [stream.window]\nsize = \"10s\"\naggregates = [\"count\"]"
        )
    };
    let text = event_time_pipeline(broker, &topic, &dir.join("ck-idle"), &stream("1s"));
    let mut run = config(1, &dir.join("run-idle"));
    run.idle_timeout = None;
    let stop = Arc::clone(&run.stop);
    let windows = dir.join("run-idle/windows.jsonl");
    let job = std::thread::spawn(move || run_stream(parse(&text), None, run));
    // Windows close while the job runs (a stop by signal does not flush open windows).
    let started = Instant::now();
    let closed = |path: &Path| {
        std::fs::read_to_string(path)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    while closed(&windows) < 5 && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    let (summary, _) = job.join().unwrap().unwrap();
    assert_eq!(summary.rows_trained, rows);
    assert_eq!(summary.rows_late, 0);
    // Newest event 59.9 s after T0, minus 1 s: the windows up to T0 + 50 s closed, not the last.
    assert_eq!(summary.watermark_ms, Some(event_ms(rows - 1) - 1_000));
    let lines = std::fs::read_to_string(&windows).unwrap();
    let counts: Vec<u64> = lines
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["count"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(counts, vec![100; 5], "{lines}");

    // Idleness off: the empty partition never has an event time, so there is no watermark.
    let text = event_time_pipeline(broker, &topic, &dir.join("ck-never"), &stream("0s"))
        .replace(&format!("{topic}-group"), &format!("{topic}-never"));
    let (summary, _) = run_stream(parse(&text), None, config(1, &dir.join("run-never"))).unwrap();
    assert_eq!(summary.rows_trained, rows);
    assert_eq!(summary.watermark_ms, None);
}

/// Consumes the predictions and joins each to its record by partition and offset: the key must
/// be the record's; every expected record has exactly one prediction, and there is no other.
fn assert_joined(
    broker: &str,
    records: &[RawMessage],
    predictions_topic: &str,
    expected: impl Fn(&RawMessage) -> bool,
) {
    let by_position: BTreeMap<(i32, i64), &RawMessage> = records
        .iter()
        .map(|m| ((m.partition, m.offset), m))
        .collect();
    let wanted: BTreeSet<(i32, i64)> = records
        .iter()
        .filter(|m| expected(m))
        .map(|m| (m.partition, m.offset))
        .collect();
    let predictions = read_all(broker, predictions_topic, wanted.len());
    let mut joined = BTreeSet::new();
    for p in &predictions {
        let body: serde_json::Value =
            serde_json::from_slice(p.payload.as_deref().unwrap()).unwrap();
        let position = (
            body["partition"].as_i64().unwrap() as i32,
            body["offset"].as_i64().unwrap(),
        );
        let record = by_position
            .get(&position)
            .unwrap_or_else(|| panic!("a prediction for no record: {body}"));
        assert_eq!(p.key, record.key, "{body}");
        assert!(body["value"].is_number(), "{body}");
        assert!(joined.insert(position), "two predictions for {position:?}");
    }
    let missing: Vec<_> = wanted.difference(&joined).take(5).collect();
    let extra: Vec<_> = joined.difference(&wanted).take(5).collect();
    assert!(
        missing.is_empty(),
        "records without a prediction: {missing:?}…"
    );
    assert!(
        extra.is_empty(),
        "predictions of records filtered out: {extra:?}…"
    );
    assert_eq!(joined.len(), wanted.len());
}

/// Predictions are keyed like their records and carry partition and offset, with a `SELECT *`
/// preprocess and with one that selects other columns and filters rows.
#[test]
fn every_prediction_joins_back_to_its_record() {
    let Some(broker) = kafka() else { return };
    let dir = scratch("wm-predictions");
    let topic = unique("wm-predictions");
    let rows = 3_000;
    send_rows(broker, &topic, 3, rows, |i| format!("key-{i}"));
    let records = read_all(broker, &topic, rows as usize);
    assert_eq!(records.len(), rows as usize);
    let options = KafkaOptions::new(broker);
    for (name, sql, filtered) in [
        (
            "star",
            "SELECT *, 0.0 AS zero, 1000000.0 AS y FROM input",
            false,
        ),
        (
            "filtered",
            "SELECT 0.0 AS zero, 1000000.0 AS y FROM input WHERE f0 >= 0.45",
            true,
        ),
    ] {
        let predictions = format!("{topic}-{name}");
        create_topic(&options, &predictions, 2, Duration::from_secs(30)).unwrap();
        let text = counting_pipeline(
            broker,
            &topic,
            &dir.join(format!("ck-{name}")),
            &format!(
                "predictions_topic = \"{predictions}\"\n\
                 metadata_columns = [\"key\", \"partition\", \"offset\"]"
            ),
        )
        .replace("SELECT 0.0 AS zero, 1000000.0 AS y FROM input", sql)
        .replace(&format!("{topic}-group"), &format!("{topic}-{name}"));
        let (summary, _) = run_stream(
            parse(&text),
            None,
            config(2, &dir.join(format!("run-{name}"))),
        )
        .unwrap();
        let f0 = |m: &RawMessage| {
            let body: serde_json::Value =
                serde_json::from_slice(m.payload.as_deref().unwrap()).unwrap();
            body["f0"].as_f64().unwrap()
        };
        let expected = |m: &RawMessage| !filtered || f0(m) >= 0.45;
        let trained = records.iter().filter(|m| expected(m)).count() as u64;
        assert_eq!(summary.rows_trained, trained, "{name}: {summary:?}");
        assert_joined(broker, &records, &predictions, expected);
    }
}

/// `idle_timeout` is a duration parsed with the file: a bad one names its line and column.
#[test]
fn a_bad_idle_timeout_names_its_line() {
    let text = counting_pipeline(
        "127.0.0.1:9",
        "t",
        Path::new("ck"),
        "event_time = \"ts\"\nidle_timeout = \"soon\"",
    );
    let line = 1 + text
        .lines()
        .position(|l| l.starts_with("idle_timeout"))
        .unwrap();
    let err = millrace::pipeline_file::parse(&text, Path::new("p.toml"))
        .unwrap_err()
        .to_string();
    assert!(err.contains(&format!("p.toml:{line}:")), "{err}");
    assert!(err.contains("'soon' is not a duration"), "{err}");
    let ok = parse(&text.replace("\"soon\"", "\"250ms\""));
    let idle = ok.stream.unwrap().idle_timeout;
    assert_eq!(idle.get(), Duration::from_millis(250));
    assert_eq!(idle.as_str(), "250ms", "kept as written");
}

/// Every duration and column type of `[stream]` is parsed with the file: a bad one names its
/// line, and a good one keeps its text (a late record's reason quotes it as written).
#[test]
fn bad_stream_durations_and_types_name_their_line() {
    let text = counting_pipeline("127.0.0.1:9", "t", Path::new("ck"), "")
        .replace("label = \"int8\"", "label = \"int9\"");
    let line = 1 + text.lines().position(|l| l.starts_with("schema")).unwrap();
    let err = millrace::pipeline_file::parse(&text, Path::new("p.toml"))
        .unwrap_err()
        .to_string();
    assert!(err.contains(&format!("p.toml:{line}:")), "{err}");
    assert!(err.contains("unknown type 'int9'"), "{err}");
    let stream = parse(&text.replace("int9", "int8")).stream.unwrap();
    assert_eq!(stream.schema["f3"].data_type(), &DataType::Float32);
    assert!(stream.schema["f3"].nullable() && !stream.schema["f0"].nullable());
    let text = counting_pipeline(
        "127.0.0.1:9",
        "t",
        Path::new("ck"),
        "event_time = \"ts\"\nwindow = { size = \"1m\", aggregates = [\"count\", \"median(f0)\"] }",
    );
    let line = 1 + text.lines().position(|l| l.starts_with("window")).unwrap();
    let err = millrace::pipeline_file::parse(&text, Path::new("p.toml"))
        .unwrap_err()
        .to_string();
    assert!(err.contains(&format!("p.toml:{line}:")), "{err}");
    assert!(err.contains("cannot read 'median(f0)'"), "{err}");
    let window = parse(&text.replace("median(f0)", "mean(f0) as m"))
        .stream
        .unwrap()
        .window
        .unwrap();
    assert_eq!(window.aggregates[1].as_str(), "mean(f0) as m");
    assert_eq!(window.aggregates[1].value().name, "m");
    assert_eq!(window.columns(), vec!["f0".to_string()]);

    for (extra, key) in [
        ("max_out_of_orderness = \"soon\"", "max_out_of_orderness"),
        ("watermark_alignment = \"soon\"", "watermark_alignment"),
        (
            "window = { size = \"soon\", aggregates = [\"count\"] }",
            "window",
        ),
        (
            "window = { size = \"1m\", slide = \"soon\", aggregates = [\"count\"] }",
            "window",
        ),
    ] {
        let text = counting_pipeline(
            "127.0.0.1:9",
            "t",
            Path::new("ck"),
            &format!("event_time = \"ts\"\n{extra}"),
        );
        let line = 1 + text.lines().position(|l| l.starts_with(key)).unwrap();
        let err = millrace::pipeline_file::parse(&text, Path::new("p.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(&format!("p.toml:{line}:")), "{key}: {err}");
        assert!(err.contains("'soon' is not a duration"), "{key}: {err}");
    }
    let text = counting_pipeline(
        "127.0.0.1:9",
        "t",
        Path::new("ck"),
        "event_time = \"ts\"\nmax_out_of_orderness = \"90s\"\nwatermark_alignment = \"1500ms\"\n\
         window = { size = \"1m\", slide = \"10s\", aggregates = [\"count\"] }",
    );
    let stream = parse(&text).stream.unwrap();
    assert_eq!(stream.max_out_of_orderness.get(), Duration::from_secs(90));
    assert_eq!(stream.max_out_of_orderness.to_string(), "90s");
    let alignment = stream.watermark_alignment.unwrap();
    assert_eq!(alignment.get(), Duration::from_millis(1500));
    let window = stream.window.unwrap();
    assert_eq!(window.size.get(), Duration::from_secs(60));
    assert_eq!(window.slide.unwrap().get(), Duration::from_secs(10));
}

/// The watermark is part of every checkpoint: a job resumed on another number of workers (2,
/// then 3) carries on from it, so a record behind it is late after the restart too.
#[test]
fn the_watermark_survives_a_restart_on_another_worker_count() {
    let Some(broker) = kafka() else { return };
    let dir = scratch("wm-resume");
    let topic = unique("wm-resume");
    let rows = 2_000;
    let producer = send_rows(broker, &topic, 4, rows, |i| format!("r{i}"));
    let text = event_time_pipeline(
        broker,
        &topic,
        &dir.join("checkpoints"),
        "event_time = \"ts\"\nmax_out_of_orderness = \"10s\"",
    );
    let (first, _) = run_stream(parse(&text), None, config(2, &dir.join("run1"))).unwrap();
    assert_eq!((first.rows_trained, first.rows_late), (rows, 0));
    let watermark = first.watermark_ms.expect("a watermark");
    assert!(watermark > event_ms(0) + 10_000, "{watermark}");

    // One record older than the watermark, then resume on 3 workers.
    producer
        .send(
            &topic,
            Some(b"old"),
            payload(0, event_ms(0)).as_bytes(),
            &[],
        )
        .unwrap();
    producer.flush(Duration::from_secs(30)).unwrap();
    let (second, run_dir) = run_stream(parse(&text), None, config(3, &dir.join("run2"))).unwrap();
    assert!(second.resumed_from_step.is_some(), "{second:?}");
    assert_eq!(second.workers, 3);
    assert_eq!(second.rows_read, rows + 1);
    assert_eq!(second.rows_trained, rows);
    assert_eq!(second.rows_late, 1, "{second:?}");
    assert_eq!(second.watermark_ms, Some(watermark));
    assert_counted(&run_dir.join("model"), rows);
    let dead = std::fs::read_to_string(run_dir.join("dead_letters.jsonl")).unwrap();
    assert!(dead.contains("stream/late"), "{dead}");
    assert!(
        dead.contains(&format!("behind the watermark {watermark} ms")),
        "{dead}"
    );
}
