//! A worker's input: its Kafka partitions, the decoder, the preprocess SQL and the dead-letter
//! output, turning each poll into rows ready to encode.

use std::time::Duration;

use arrow::array::{Array, RecordBatch, TimestampMillisecondArray};
use millrace_connectors::kafka::{KafkaProducer, KafkaSource, RecordDecoder, send_dead_letter};
use millrace_engine::{DeadLetter, row_to_json};

use super::worker::now_ms;
use crate::Result;
use crate::preprocess::CompiledSql;

/// Records taken from the source but not trained yet (the warm-up window).
pub(super) struct Pending {
    pub(super) batches: Vec<(RecordBatch, Vec<i64>)>,
}

/// The decoded records of one poll, after SQL, with their produce timestamps.
#[derive(Clone)]
pub(crate) struct Prepared {
    pub(crate) batch: RecordBatch,
    pub(crate) produced_ms: Vec<i64>,
}

/// The worker's connection to its partitions and everything that turns messages into rows.
pub(super) struct Input {
    pub(super) source: KafkaSource,
    pub(super) decoder: RecordDecoder,
    pub(super) sql: CompiledSql,
    pub(super) dlq: Option<(KafkaProducer, String)>,
    pub(super) topic: String,
    pub(super) dead: Vec<DeadLetter>,
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
        let produced_ms = produce_times(&batch);
        match self.sql.apply(&batch) {
            Ok(out) => Ok((
                Some(Prepared {
                    batch: out,
                    produced_ms,
                }),
                read,
                dead,
            )),
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

    pub(super) fn dead_letter(
        &mut self,
        letter: &millrace_connectors::kafka::DeadLetter,
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

/// The produce timestamps of the decoded rows (the `_timestamp` column; now when missing).
fn produce_times(batch: &RecordBatch) -> Vec<i64> {
    let now = now_ms();
    match batch
        .column_by_name("_timestamp")
        .and_then(|c| c.as_any().downcast_ref::<TimestampMillisecondArray>())
    {
        Some(ts) => (0..ts.len())
            .map(|i| if ts.is_null(i) { now } else { ts.value(i) })
            .collect(),
        None => vec![now; batch.num_rows()],
    }
}
