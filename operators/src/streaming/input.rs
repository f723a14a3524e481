//! A worker's input: its Kafka partitions, the decoder, the preprocess SQL and the dead-letter
//! output, turning each poll into rows ready to encode.

use std::time::Duration;

use arrow::array::{Array, BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use millrace_connectors::kafka::{KafkaProducer, KafkaSource, RecordDecoder, send_dead_letter};
use millrace_engine::{DeadLetter, row_to_json};

use super::worker::now_ms;
use crate::preprocess::CompiledSql;
use crate::sink::SinkWriter;
use crate::spec::SinkPoint;
use crate::{Error, Result};

/// Records taken from the source but not trained yet (the warm-up window).
pub(super) struct Pending {
    pub(super) batches: Vec<Prepared>,
}

/// Where each row of a [`Prepared`] batch came from, row by row: its Kafka partition and offset,
/// and its key (kept only when the job sends predictions, which are keyed like their records).
#[derive(Clone, Debug, Default)]
pub(crate) struct Origins {
    pub(crate) partition: Vec<i32>,
    pub(crate) offset: Vec<i64>,
    pub(crate) key: Option<Vec<Option<Vec<u8>>>>,
}

impl Origins {
    /// The origins of rows `rows`.
    fn take(&self, rows: &[usize]) -> Origins {
        Origins {
            partition: rows
                .iter()
                .filter_map(|&i| self.partition.get(i).copied())
                .collect(),
            offset: rows
                .iter()
                .filter_map(|&i| self.offset.get(i).copied())
                .collect(),
            key: self
                .key
                .as_ref()
                .map(|k| rows.iter().filter_map(|&i| k.get(i).cloned()).collect()),
        }
    }

    /// `topic T partition P offset O` of row `row`.
    pub(crate) fn describe(&self, topic: &str, row: usize) -> String {
        match (self.partition.get(row), self.offset.get(row)) {
            (Some(p), Some(o)) => format!("topic {topic} partition {p} offset {o}"),
            _ => format!("topic {topic}"),
        }
    }
}

/// The decoded records of one poll, after SQL, with their produce timestamps and origins (all
/// row by row).
#[derive(Clone)]
pub(crate) struct Prepared {
    pub(crate) batch: RecordBatch,
    pub(crate) produced_ms: Vec<i64>,
    pub(crate) origins: Origins,
}

impl Prepared {
    /// `parts` as one batch (`None` when there is none).
    pub(crate) fn concat(mut parts: Vec<Prepared>) -> Result<Option<Prepared>> {
        if parts.len() <= 1 {
            return Ok(parts.pop());
        }
        let schema = parts[0].batch.schema();
        let batch = arrow::compute::concat_batches(&schema, parts.iter().map(|p| &p.batch))?;
        let mut origins = Origins {
            key: parts[0].origins.key.as_ref().map(|_| Vec::new()),
            ..Origins::default()
        };
        let mut produced_ms = Vec::with_capacity(batch.num_rows());
        for part in parts {
            produced_ms.extend(part.produced_ms);
            origins.partition.extend(part.origins.partition);
            origins.offset.extend(part.origins.offset);
            if let (Some(all), Some(keys)) = (origins.key.as_mut(), part.origins.key) {
                all.extend(keys);
            }
        }
        Ok(Some(Prepared {
            batch,
            produced_ms,
            origins,
        }))
    }

    /// The rows where `keep` is true.
    pub(crate) fn filter(&self, keep: &BooleanArray) -> Result<Prepared> {
        let rows: Vec<usize> = (0..keep.len())
            .filter(|&i| keep.is_valid(i) && keep.value(i))
            .collect();
        Ok(Prepared {
            batch: filter_record_batch(&self.batch, keep)?,
            produced_ms: rows
                .iter()
                .filter_map(|&i| self.produced_ms.get(i).copied())
                .collect(),
            origins: self.origins.take(&rows),
        })
    }
}

/// The worker's connection to its partitions and everything that turns messages into rows.
pub(super) struct Input {
    pub(super) source: KafkaSource,
    pub(super) decoder: RecordDecoder,
    pub(super) sql: CompiledSql,
    pub(super) dlq: Option<(KafkaProducer, String)>,
    pub(super) topic: String,
    pub(super) dead: Vec<DeadLetter>,
    /// Keep each record's key (for keyed predictions).
    pub(super) keep_keys: bool,
    /// The `[[sink]]`s: Kafka topics written from the records or the preprocessed rows.
    pub(super) sinks: Vec<SinkWriter>,
}

impl Input {
    /// Polls up to `max` messages; returns the prepared rows and how many messages were read,
    /// dead-lettered.
    pub(super) fn poll(
        &mut self,
        max: usize,
        timeout: Duration,
    ) -> Result<(Option<Prepared>, u64, u64)> {
        if max == 0 {
            std::thread::sleep(timeout.min(Duration::from_millis(5)));
            return Ok((None, 0, 0));
        }
        let messages = self.source.poll(max, timeout)?;
        let read = messages.len() as u64;
        if messages.is_empty() {
            return Ok((None, 0, 0));
        }
        let decoded = self.decoder.decode(&self.topic, &messages);
        let mut dead = decoded.dead.len() as u64;
        for letter in &decoded.dead {
            self.dead_letter(letter, "stream/decode")?;
        }
        let batch = decoded.batch;
        if batch.num_rows() == 0 {
            return Ok((None, read, dead));
        }
        self.write_sinks(SinkPoint::Ingest, &batch);
        match self.sql.apply_tracked(&batch) {
            Ok((out, rows)) => {
                self.write_sinks(SinkPoint::Preprocess, &out);
                // Each output row's message: the decoded row it came from, then its message.
                let now = now_ms();
                let message = |j: usize| {
                    let row = if rows.is_valid(j) {
                        rows.value(j) as usize
                    } else {
                        0
                    };
                    decoded
                        .messages
                        .get(row)
                        .and_then(|&m| messages.get(m as usize))
                };
                let mut prepared = Prepared {
                    batch: out,
                    produced_ms: Vec::with_capacity(rows.len()),
                    origins: Origins {
                        partition: Vec::with_capacity(rows.len()),
                        offset: Vec::with_capacity(rows.len()),
                        key: self.keep_keys.then(|| Vec::with_capacity(rows.len())),
                    },
                };
                for j in 0..rows.len() {
                    let m = message(j).ok_or_else(|| {
                        Error::Internal(format!("SQL output row {j} has no source message"))
                    })?;
                    prepared.produced_ms.push(m.timestamp_ms.unwrap_or(now));
                    prepared.origins.partition.push(m.partition);
                    prepared.origins.offset.push(m.offset);
                    if let Some(keys) = &mut prepared.origins.key {
                        keys.push(m.key.clone());
                    }
                }
                Ok((Some(prepared), read, dead))
            }
            Err(reason) => {
                // The SQL failed on the batch as a whole: every record of it is dead-lettered.
                dead += batch.num_rows() as u64;
                self.dead.push(DeadLetter {
                    operator: "stream/sql".into(),
                    reason,
                    origin: Some(format!("topic {}", self.topic)),
                    record: row_to_json(&batch, 0),
                    rows: batch.num_rows() as u64,
                });
                Ok((None, read, dead))
            }
        }
    }

    pub(super) fn write_sinks(&mut self, point: SinkPoint, batch: &RecordBatch) {
        for sink in self.sinks.iter_mut().filter(|s| s.point() == point) {
            sink.write(batch);
        }
    }

    pub(super) fn dead_letter(
        &mut self,
        letter: &millrace_connectors::kafka::RejectedMessage,
        operator: &str,
    ) -> Result<()> {
        if let Some((producer, topic)) = &self.dlq {
            send_dead_letter(producer, topic, letter)?;
        }
        self.dead.push(DeadLetter {
            operator: operator.into(),
            reason: letter.error.clone(),
            origin: Some(format!(
                "topic {} partition {} offset {}",
                letter.topic, letter.partition, letter.offset
            )),
            record: letter
                .payload
                .as_ref()
                .map(|p| String::from_utf8_lossy(p).into_owned()),
            rows: 1,
        });
        Ok(())
    }
}
