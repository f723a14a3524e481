//! What a streaming job sends back to Kafka besides dead letters: each record's prediction made
//! before training on it (`predictions_topic`), and the prequential metrics (`metrics_topic`).

use std::time::Duration;

use arrow::array::{Array, Int32Array, Int64Array, RecordBatch, StringArray};
use millrace_connectors::kafka::{KafkaOptions, KafkaProducer};
use serde_json::{Value, json};

use super::prequential::PrequentialMetrics;
use super::spec::StreamSpec;
use crate::Result;

/// Producers for the optional output topics (one per worker).
pub(crate) struct Outputs {
    producer: Option<KafkaProducer>,
    predictions: Option<String>,
    metrics: Option<String>,
    class_names: Option<Vec<String>>,
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
            sent: Vec::new(),
        })
    }

    /// Sends one prediction per accepted row of `batch` (`predictions` has `width` values per
    /// row), keyed like the record when it had a key.
    pub(crate) fn predictions(
        &mut self,
        batch: &RecordBatch,
        accepted: &[u32],
        predictions: &[f32],
        width: usize,
        version: u64,
    ) -> Result<()> {
        let (Some(producer), Some(topic)) = (&self.producer, &self.predictions) else {
            return Ok(());
        };
        let keys = batch
            .column_by_name("_key")
            .and_then(|c| c.as_any().downcast_ref::<StringArray>());
        let partitions = batch
            .column_by_name("_partition")
            .and_then(|c| c.as_any().downcast_ref::<Int32Array>());
        let offsets = batch
            .column_by_name("_offset")
            .and_then(|c| c.as_any().downcast_ref::<Int64Array>());
        for (i, &row) in accepted.iter().enumerate() {
            let row = row as usize;
            let values = &predictions[i * width..(i + 1) * width];
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
            if let Some(p) = partitions.filter(|p| !p.is_null(row)) {
                out["partition"] = json!(p.value(row));
            }
            if let Some(o) = offsets.filter(|o| !o.is_null(row)) {
                out["offset"] = json!(o.value(row));
            }
            let key = keys
                .filter(|k| !k.is_null(row))
                .map(|k| k.value(row).as_bytes());
            self.sent.clear();
            serde_json::to_writer(&mut self.sent, &out)
                .map_err(|e| crate::Error::Internal(e.to_string()))?;
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
            serde_json::to_value(m).map_err(|e| crate::Error::Internal(e.to_string()))?;
        line["step"] = json!(step);
        line["model_version"] = json!(version);
        line["at"] = json!(chrono::Utc::now().to_rfc3339());
        let bytes = serde_json::to_vec(&line).map_err(|e| crate::Error::Internal(e.to_string()))?;
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
