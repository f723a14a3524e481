//! Tests against a real Kafka-protocol broker: set `MILLRACE_KAFKA=127.0.0.1:PORT` (start one with
//! `scripts/kafka-broker.sh start PORT`). Without it the broker tests print SKIPPED and pass, except
//! under CI (`CI` set to anything but empty, `0` or `false`), where they fail.

mod admin;
mod decoding;
mod fuzz;
mod hold;
mod producer;
mod records;
mod sink;
mod source;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use super::*;

pub(super) const BASE_TS: i64 = 1_700_000_000_000;
pub(super) const TIMEOUT: Duration = Duration::from_secs(30);

/// The broker to test against, or `None` (after a loud notice) when there is none.
pub(super) fn broker() -> Option<KafkaOptions> {
    match std::env::var("MILLRACE_KAFKA") {
        Ok(address) if !address.trim().is_empty() => Some(KafkaOptions::new(address)),
        _ => {
            let message = "SKIPPED: no Kafka broker (set MILLRACE_KAFKA=127.0.0.1:PORT, start one \
                           with scripts/kafka-broker.sh start PORT)";
            if crate::env::in_ci() {
                panic!("{message}; CI requires a broker");
            }
            eprintln!("\n*** {message} ***\n");
            None
        }
    }
}

/// A name no other test (or earlier run against the same broker) uses.
pub(super) fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{nanos}-{n}", std::process::id())
}

pub(super) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A topic holding `n` messages: message `i` has key `key-i`, value `value-i`, timestamp
/// `BASE_TS + i`, and sits in partition `i % partitions` at offset `i / partitions`.
pub(super) fn fixture(options: &KafkaOptions, prefix: &str, partitions: i32, n: usize) -> String {
    let topic = unique(prefix);
    create_topic(options, &topic, partitions, TIMEOUT).unwrap();
    produce_range(options, &topic, partitions, 0..n);
    topic
}

pub(super) fn produce_range(
    options: &KafkaOptions,
    topic: &str,
    partitions: i32,
    range: std::ops::Range<usize>,
) {
    let producer: BaseProducer = options
        .client_config()
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .unwrap();
    for i in range {
        let key = format!("key-{i}");
        let value = format!("value-{i}");
        let mut record = BaseRecord::to(topic)
            .partition(i as i32 % partitions)
            .key(&key)
            .payload(&value)
            .timestamp(BASE_TS + i as i64);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    record = back;
                    producer.poll(Duration::from_millis(10));
                }
            }
        }
    }
    producer.flush(TIMEOUT).unwrap();
}

/// Polls until every assigned partition is at its end.
pub(super) fn read_to_end(source: &mut KafkaSource) -> Vec<RawMessage> {
    let deadline = Instant::now() + TIMEOUT;
    let mut out = Vec::new();
    while !source.at_end() {
        assert!(Instant::now() < deadline, "no end after {TIMEOUT:?}");
        out.extend(source.poll(1000, Duration::from_millis(500)).unwrap());
    }
    out
}

/// Checks `message` against what [`fixture`] wrote, returning its index.
pub(super) fn check_fixture_message(message: &RawMessage, partitions: i32) -> usize {
    let key = String::from_utf8(message.key.clone().unwrap()).unwrap();
    let i: usize = key.strip_prefix("key-").unwrap().parse().unwrap();
    assert_eq!(
        message.payload.as_deref(),
        Some(format!("value-{i}").as_bytes())
    );
    assert_eq!(message.partition, i as i32 % partitions, "message {i}");
    assert_eq!(
        message.offset,
        (i / partitions as usize) as i64,
        "message {i}"
    );
    assert_eq!(
        message.timestamp_ms,
        Some(BASE_TS + i as i64),
        "message {i}"
    );
    i
}
