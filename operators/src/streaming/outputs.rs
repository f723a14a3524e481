//! What a streaming job sends back to Kafka besides dead letters: each record's prediction made
//! before training on it (`predictions_topic`), and the prequential metrics (`metrics_topic`).

use std::time::Duration;

use millrace_connectors::kafka::{KafkaOptions, KafkaProducer, MetadataColumns};
use serde_json::{Value, json};

use super::input::Prepared;
use super::prequential::PrequentialMetrics;
use super::spec::StreamSpec;
use crate::{Error, Result};

/// Producers for the optional output topics (one per worker).
pub(crate) struct Outputs {
    producer: Option<KafkaProducer>,
    predictions: Option<String>,
    metrics: Option<String>,
    class_names: Option<Vec<String>>,
    /// The record metadata a prediction carries (`stream.metadata_columns`).
    metadata: MetadataColumns,
    sent: Vec<u8>,
}

impl Outputs {
    pub(crate) fn new(
        stream: &StreamSpec,
        options: &KafkaOptions,
        class_names: Option<Vec<String>>,
        worker: usize,
    ) -> Result<Self> {
        let predictions = stream.predictions_topic.clone();
        // Metrics are the same on every worker: worker 0 sends them.
        let metrics = stream.metrics_topic.clone().filter(|_| worker == 0);
        let producer = if predictions.is_some() || metrics.is_some() {
            Some(KafkaProducer::new(options, true)?)
        } else {
            None
        };
        Ok(Outputs {
            producer,
            predictions,
            metrics,
            class_names,
            metadata: MetadataColumns {
                key: false,
                timestamp: stream.metadata_columns.iter().any(|c| c == "timestamp"),
                partition: stream.metadata_columns.iter().any(|c| c == "partition"),
                offset: stream.metadata_columns.iter().any(|c| c == "offset"),
            },
            sent: Vec::new(),
        })
    }

    /// Sends one prediction per accepted row of `prepared` (`predictions` has `width` values
    /// per row), keyed like its record (the same key bytes; none for a record without a key),
    /// with the record's `partition`, `offset` and `timestamp` when `metadata_columns` asks for
    /// them, so that every prediction joins back to its record.
    pub(crate) fn predictions(
        &mut self,
        prepared: &Prepared,
        accepted: &[u32],
        predictions: &[f32],
        width: usize,
        version: u64,
    ) -> Result<()> {
        let (Some(producer), Some(topic)) = (&self.producer, &self.predictions) else {
            return Ok(());
        };
        let origins = &prepared.origins;
        for (i, &row) in accepted.iter().enumerate() {
            let row = row as usize;
            let values = predictions
                .get(i * width..(i + 1) * width)
                .ok_or_else(|| Error::Internal(format!("no prediction for accepted row {i}")))?;
            let mut out = if width == 1 {
                json!({"value": values[0]})
            } else {
                let best = crate::serve::argmax(values);
                let class = match &self.class_names {
                    Some(names) => json!(names.get(best)),
                    None => json!(best),
                };
                json!({"class": class, "probabilities": values})
            };
            out["model_version"] = json!(version);
            if self.metadata.partition
                && let Some(p) = origins.partition.get(row)
            {
                out["partition"] = json!(p);
            }
            if self.metadata.offset
                && let Some(o) = origins.offset.get(row)
            {
                out["offset"] = json!(o);
            }
            if self.metadata.timestamp
                && let Some(t) = prepared.produced_ms.get(row)
            {
                out["timestamp"] = json!(t);
            }
            let key = origins
                .key
                .as_ref()
                .and_then(|keys| keys.get(row))
                .and_then(Option::as_deref);
            self.sent.clear();
            serde_json::to_writer(&mut self.sent, &out)
                .map_err(|e| Error::Internal(e.to_string()))?;
            producer.send(topic, key, &self.sent, &[])?;
        }
        Ok(())
    }

    /// Sends the prequential metrics after `step` (worker 0 only).
    pub(crate) fn metrics(
        &mut self,
        step: u64,
        version: u64,
        metrics: Option<&PrequentialMetrics>,
    ) -> Result<()> {
        let (Some(producer), Some(topic), Some(m)) = (&self.producer, &self.metrics, metrics)
        else {
            return Ok(());
        };
        let mut line: Value =
            serde_json::to_value(m).map_err(|e| Error::Internal(e.to_string()))?;
        line["step"] = json!(step);
        line["model_version"] = json!(version);
        line["at"] = json!(chrono::Utc::now().to_rfc3339());
        let bytes = serde_json::to_vec(&line).map_err(|e| Error::Internal(e.to_string()))?;
        producer.send(topic, None, &bytes, &[])?;
        Ok(())
    }

    /// Waits until everything sent was delivered.
    pub(crate) fn flush(&self) -> Result<()> {
        if let Some(producer) = &self.producer {
            producer.flush(Duration::from_secs(60))?;
        }
        Ok(())
    }
}
