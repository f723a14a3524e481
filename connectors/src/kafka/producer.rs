//! A producer for sinks and dead letters that never drops a message silently.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::message::{DeliveryResult, Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;

use super::options::{KafkaOptions, TracingContext};
use crate::{Error, Result};

/// The first delivery failure, kept for [`KafkaProducer::flush`].
#[derive(Debug)]
struct Failure {
    topic: String,
    partition: i32,
    reason: String,
}

/// Counts deliveries and keeps the first failure.
#[derive(Default)]
struct DeliveryTracker {
    delivered: AtomicU64,
    failed: AtomicU64,
    first_failure: Mutex<Option<Failure>>,
}

impl ClientContext for DeliveryTracker {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        TracingContext.log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        TracingContext.error(error, reason);
    }
}

impl ProducerContext for DeliveryTracker {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((error, message)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                let mut first = match self.first_failure.lock() {
                    Ok(guard) => guard,
                    Err(poisoned) => poisoned.into_inner(),
                };
                if first.is_none() {
                    *first = Some(Failure {
                        topic: message.topic().to_string(),
                        partition: message.partition(),
                        reason: error.to_string(),
                    });
                }
            }
        }
    }
}

/// A Kafka producer for sinks and dead letters.
///
/// [`send`](Self::send) queues a message, waiting (never dropping) while librdkafka's local queue
/// is full; [`flush`](Self::flush) waits for every queued message and fails if any message, since
/// the producer was created, was not delivered. Safe to share between threads.
pub struct KafkaProducer {
    producer: BaseProducer<DeliveryTracker>,
    bootstrap: String,
}

impl KafkaProducer {
    /// A producer for `options`' cluster.
    ///
    /// With `idempotent`, `enable.idempotence = true` and `acks = all`: the broker drops the
    /// duplicates librdkafka's retries would otherwise write, and keeps per-partition order.
    /// Without it, `acks = all` too (properties may override). Defaults, which properties
    /// override: `linger.ms = 5`, `compression.type = lz4`, `client.id = millrace-producer`.
    pub fn new(options: &KafkaOptions, idempotent: bool) -> Result<Self> {
        options.check_bootstrap()?;
        let mut config = rdkafka::ClientConfig::new();
        for (key, value) in [
            ("linger.ms", "5"),
            ("compression.type", "lz4"),
            ("acks", "all"),
            ("client.id", "millrace-producer"),
        ] {
            config.set(key, value);
        }
        options.apply(&mut config);
        if idempotent {
            config.set("enable.idempotence", "true");
            config.set("acks", "all");
        }
        let producer: BaseProducer<DeliveryTracker> = config
            .create_with_context(DeliveryTracker::default())
            .map_err(|e| options.create_error("producer", e))?;
        Ok(KafkaProducer {
            producer,
            bootstrap: options.bootstrap_servers.clone(),
        })
    }

    /// Queues one message for `topic` (partitioned by `key`'s hash, or spread when there is no
    /// key). Blocks, serving delivery reports, while the local queue is full (backpressure).
    /// Delivery happens later: call [`flush`](Self::flush) to know it happened.
    pub fn send(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: &[(&str, &[u8])],
    ) -> Result<()> {
        self.send_record(topic, key, Some(payload), headers, None)
    }

    /// [`send`](Self::send) with a null value when `payload` is `None` (a tombstone: on a compacted
    /// topic, the key's deletion) and the message's timestamp set to `timestamp_ms` (epoch ms;
    /// `None`: the time of sending).
    pub fn send_record(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        headers: &[(&str, &[u8])],
        timestamp_ms: Option<i64>,
    ) -> Result<()> {
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic);
        if let Some(payload) = payload {
            record = record.payload(payload);
        }
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(ms) = timestamp_ms {
            record = record.timestamp(ms);
        }
        if !headers.is_empty() {
            let mut owned = OwnedHeaders::new_with_capacity(headers.len());
            for &(key, value) in headers {
                owned = owned.insert(Header {
                    key,
                    value: Some(value),
                });
            }
            record = record.headers(owned);
        }
        let mut waiting_since: Option<Instant> = None;
        loop {
            match self.producer.send(record) {
                Ok(()) => {
                    self.producer.poll(Duration::ZERO);
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    let since = *waiting_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > Duration::from_secs(30) {
                        tracing::warn!(
                            "Kafka producer to {}: local queue full for {:.0} s; is the broker \
                             reachable?",
                            self.bootstrap,
                            since.elapsed().as_secs_f64()
                        );
                        waiting_since = Some(Instant::now());
                    }
                    self.producer.poll(Duration::from_millis(10));
                }
                Err((source, _)) => {
                    return Err(Error::Kafka {
                        what: format!(
                            "queue a {}-byte message for topic `{topic}` on {}",
                            payload.map_or(0, <[u8]>::len),
                            self.bootstrap
                        ),
                        source,
                    });
                }
            }
        }
    }

    /// Waits up to `timeout` until every queued message is delivered or has failed; fails when a
    /// message is still pending, or when any message since the producer was created failed
    /// delivery (naming the first one's topic and partition; the failure stays reported).
    pub fn flush(&self, timeout: Duration) -> Result<()> {
        let flushed = self.producer.flush(timeout);
        // Delivery reports of the last messages may still sit in the queue.
        self.producer.poll(Duration::ZERO);
        self.check_failures()?;
        flushed.map_err(|source| Error::Kafka {
            what: format!(
                "deliver {} queued message(s) to {} within {:.1} s",
                self.producer.in_flight_count(),
                self.bootstrap,
                timeout.as_secs_f64()
            ),
            source,
        })
    }

    /// How many messages the brokers acknowledged so far (as of the last `send` or `flush`).
    pub fn delivered(&self) -> u64 {
        self.producer.context().delivered.load(Ordering::Relaxed)
    }

    fn check_failures(&self) -> Result<()> {
        let tracker = self.producer.context();
        let failed = tracker.failed.load(Ordering::Relaxed);
        if failed == 0 {
            return Ok(());
        }
        let first = match tracker.first_failure.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let (topic, partition, reason) = match &*first {
            Some(f) => (f.topic.clone(), f.partition, f.reason.clone()),
            None => (String::from("?"), -1, String::from("unknown")),
        };
        Err(Error::KafkaDelivery {
            target: format!(
                "topic `{topic}` partition {partition} on {}",
                self.bootstrap
            ),
            reason,
            failed,
        })
    }
}

/// A Kafka message that could not be decoded, as it was on the wire: where it came from, its
/// bytes and why. (A record rejected later in a pipeline is an engine `DeadLetter`; this is what
/// goes back to a dead-letter topic byte for byte.)
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RejectedMessage {
    /// The topic it was read from.
    pub topic: String,
    /// The partition it was read from.
    pub partition: i32,
    /// Its offset there.
    pub offset: i64,
    /// Its original key.
    pub key: Option<Vec<u8>>,
    /// Its original value.
    pub payload: Option<Vec<u8>>,
    /// Why it was rejected.
    pub error: String,
}

/// Header naming why a dead letter was rejected.
pub const HEADER_ERROR: &str = "millrace.error";
/// Header naming a dead letter's source topic.
pub const HEADER_SOURCE_TOPIC: &str = "millrace.source.topic";
/// Header naming a dead letter's source partition (decimal).
pub const HEADER_SOURCE_PARTITION: &str = "millrace.source.partition";
/// Header naming a dead letter's source offset (decimal).
pub const HEADER_SOURCE_OFFSET: &str = "millrace.source.offset";

/// Queues `letter` on `dlq_topic`: the original key and bytes (empty for a null value), with the
/// headers `millrace.error`, `millrace.source.topic`, `millrace.source.partition` and
/// `millrace.source.offset` (the last two as decimal strings). Delivery is confirmed by
/// [`KafkaProducer::flush`].
pub fn send_dead_letter(
    producer: &KafkaProducer,
    dlq_topic: &str,
    letter: &RejectedMessage,
) -> Result<()> {
    let partition = letter.partition.to_string();
    let offset = letter.offset.to_string();
    let headers: [(&str, &[u8]); 4] = [
        (HEADER_ERROR, letter.error.as_bytes()),
        (HEADER_SOURCE_TOPIC, letter.topic.as_bytes()),
        (HEADER_SOURCE_PARTITION, partition.as_bytes()),
        (HEADER_SOURCE_OFFSET, offset.as_bytes()),
    ];
    producer.send(
        dlq_topic,
        letter.key.as_deref(),
        letter.payload.as_deref().unwrap_or_default(),
        &headers,
    )
}
