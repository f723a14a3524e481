//! Kafka as a source of raw messages and a sink for results and dead letters, built on librdkafka
//! (through `rdkafka`) with its synchronous APIs, so each timely worker thread drives its own client
//! without an async runtime.
//!
//! Made for exactly-once streaming, Flink-style: partitions are assigned to workers
//! deterministically (partition `p` goes to worker `p % workers`), never by group rebalancing. The
//! consumer group id only names where offsets are committed. A checkpoint records
//! [`KafkaSource::positions`]; a restore passes them back as `resume` to [`KafkaSource::open`], and
//! [`KafkaSource::commit`] publishes them to the group once the checkpoint is durable, so that
//! other tools (lag monitors, [`StartFrom::Committed`]) see them.
//!
//! ```text
//!  partitions(options, topic) ──▶ [0, 1, 2, 3]
//!  worker w of n: KafkaSource::open(.., w, n, start, resume) ──▶ assigns p with p % n == w
//!      poll(max, timeout) ──▶ [RawMessage { partition, offset, timestamp_ms, key, payload }]
//!      positions() ──▶ {p: next offset} ──checkpoint──▶ commit(positions)
//!  engine ──▶ KafkaProducer::send(topic, key, payload, headers) ──▶ flush(timeout)
//!  bad record ──▶ send_dead_letter(producer, dlq_topic, RejectedMessage { .. })
//! ```
//!
//! Every client gets the same [`KafkaOptions`]: the bootstrap servers and librdkafka properties
//! passed through verbatim (`security.protocol`, `sasl.mechanism`, `ssl.ca.location`, ...). A
//! property librdkafka rejects fails when the client is created, naming the property.
//!
//! Broker notes (tansu, the Kafka-protocol broker used by the tests, see
//! `scripts/kafka-broker.sh`): its ListOffsets(latest) answer (the high watermark) is too low when
//! the last record batch holds more than one record, so [`StartFrom::Latest`] (and a
//! [`StartFrom::Timestamp`] after the last message) starts at the first record of the last batch
//! there, re-reading part of it. Its timestamp lookup answers too early offsets (mostly 0); the
//! source corrects that by dropping older messages itself (see [`StartFrom::Timestamp`]), at the
//! cost of reading them. It answers a fetch past the end with no data instead of
//! OFFSET_OUT_OF_RANGE, so [`Error::KafkaOffsetOutOfRange`](crate::Error::KafkaOffsetOutOfRange)
//! never fires there: the source waits for the offset to exist. Partition EOF, commits (from
//! these manually assigned consumers) and committed offsets are exact.

mod admin;
mod hold;
mod options;
mod producer;
mod records;
mod sink;
mod source;

#[cfg(test)]
mod tests;

pub use admin::{create_topic, partitions};
pub use options::{KafkaOptions, StartFrom};
pub use producer::{
    HEADER_ERROR, HEADER_SOURCE_OFFSET, HEADER_SOURCE_PARTITION, HEADER_SOURCE_TOPIC,
    KafkaProducer, RejectedMessage, send_dead_letter,
};
pub use records::{
    Decoded, KEY_COLUMN, MessageFormat, MetadataColumns, OFFSET_COLUMN, PARTITION_COLUMN,
    RAW_VALUE_COLUMN, RecordDecoder, TIMESTAMP_COLUMN, TOMBSTONE_ERROR,
};
pub use sink::{KafkaSink, SinkFormat};
pub use source::{KafkaSource, OPEN_TIMEOUT, RawMessage};
