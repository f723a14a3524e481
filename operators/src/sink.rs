//! Sink nodes (`[[sink]]`): one worker's writer of the rows at a point of the graph to a Parquet
//! dataset or a Kafka topic.
//!
//! A Parquet sink is one Spark-style write: every worker writes its own part files (its task
//! number in their names), and once every worker has finished, [`publish`] writes `_SUCCESS`. A
//! Kafka sink writes one JSON message per row through an idempotent producer and is flushed before
//! every checkpoint of a stream is written and when the worker's input ends, so a crash loses no
//! row a checkpoint counts as done (the rows after it are written again: at least once). The first
//! failure stops the sink's writing and fails the job with the sink's name; rows are never
//! silently dropped.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::Schema;
use millrace_connectors::kafka::{KafkaOptions, KafkaSink, SinkFormat};
use millrace_connectors::parquet::{
    DatasetWriter, DatasetWriterOptions, WriterOptions, write_success,
};
use millrace_connectors::storage::{StorageLocation, StorageOptions};

use crate::spec::{SinkPoint, SinkSpec};
use crate::{Error, Result};

/// What a sink writes to, opened at its first batch.
enum Target {
    /// Not opened yet: no rows so far.
    Closed,
    /// Finished: writes nothing more.
    Finished,
    Parquet(Box<DatasetWriter>),
    Kafka(Box<KafkaSink>),
}

/// One worker's writer of one `[[sink]]`.
pub struct SinkWriter {
    spec: SinkSpec,
    storage: StorageOptions,
    compression: millrace_connectors::parquet::Compression,
    task: usize,
    job_id: String,
    target: Target,
    rows: u64,
    error: Option<String>,
}

impl SinkWriter {
    /// A writer for `spec` on the worker whose global index is `task`; `job_id` is shared by
    /// every worker of the run (the part files' names).
    pub fn new(
        spec: &SinkSpec,
        storage: &StorageOptions,
        compression: millrace_connectors::parquet::Compression,
        task: usize,
        job_id: &str,
    ) -> Self {
        SinkWriter {
            spec: spec.clone(),
            storage: storage.clone(),
            compression,
            task,
            job_id: job_id.to_owned(),
            target: Target::Closed,
            rows: 0,
            error: None,
        }
    }

    /// The operator name: `sink/<name>`.
    pub fn operator(&self) -> String {
        format!("sink/{}", self.spec.name)
    }

    /// Where in the graph it takes its rows.
    pub fn point(&self) -> SinkPoint {
        self.spec.after
    }

    /// Writes `batch` (its chosen columns). After a failure it writes nothing more; the failure
    /// is reported by [`finish`](Self::finish).
    pub fn write(&mut self, batch: &RecordBatch) {
        if self.error.is_some() || batch.num_rows() == 0 || matches!(self.target, Target::Finished)
        {
            return;
        }
        if let Err(e) = self.try_write(batch) {
            self.error = Some(e.to_string());
        }
    }

    fn try_write(&mut self, batch: &RecordBatch) -> Result<()> {
        let batch = match self.spec.needs() {
            None => batch.clone(),
            Some(columns) => {
                let indices = columns
                    .iter()
                    .map(|c| batch.schema().index_of(c))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                batch.project(&indices)?
            }
        };
        if matches!(self.target, Target::Closed) {
            self.target = self.open(batch.schema_ref())?;
        }
        match &mut self.target {
            Target::Parquet(writer) => writer.write(&batch)?,
            Target::Kafka(sink) => {
                sink.write(&batch)?;
            }
            Target::Closed | Target::Finished => {}
        }
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    fn open(&self, schema: &Arc<Schema>) -> Result<Target> {
        if let Some(url) = &self.spec.parquet {
            let location = StorageLocation::parse(url, &self.storage)?;
            let options = DatasetWriterOptions {
                partition_by: self.spec.partition_by.clone(),
                file: WriterOptions {
                    compression: self.compression,
                    ..WriterOptions::default()
                },
                max_rows_per_file: 0,
                task: self.task,
                job_id: self.job_id.clone(),
                max_open_files: 64,
            };
            let writer = DatasetWriter::new(
                Arc::clone(&location.store),
                location.root.clone(),
                location.url.clone(),
                Arc::clone(schema),
                options,
            )?;
            return Ok(Target::Parquet(Box::new(writer)));
        }
        let kafka = (self.spec.kafka.as_ref())
            .ok_or_else(|| Error::Internal(format!("sink '{}' has no target", self.spec.name)))?;
        let mut options = KafkaOptions::new(&kafka.bootstrap_servers);
        for (k, v) in &kafka.properties {
            options = options.with_property(k, v);
        }
        let sink = KafkaSink::new(
            &options,
            &kafka.topic,
            SinkFormat::Json,
            schema,
            kafka.key.as_deref(),
        )?;
        Ok(Target::Kafka(Box::new(sink)))
    }

    /// Waits until every row written so far is durable in its target (a Kafka sink's messages
    /// acknowledged), so that a checkpoint taken after it covers them. A Parquet sink's files are
    /// completed only by [`finish`](Self::finish).
    pub fn flush(&mut self) -> Result<()> {
        if let Some(why) = &self.error {
            return Err(self.failed(why));
        }
        if let Target::Kafka(sink) = &self.target
            && let Err(e) = sink.flush(std::time::Duration::from_secs(60))
        {
            let why = e.to_string();
            self.error = Some(why.clone());
            return Err(self.failed(&why));
        }
        Ok(())
    }

    /// Completes the worker's part: closes its Parquet files or waits until every Kafka message
    /// is delivered. Returns the rows written, or the sink's first failure, naming it. A
    /// finished writer writes nothing more.
    pub fn finish(&mut self) -> Result<u64> {
        let finished = match std::mem::replace(&mut self.target, Target::Finished) {
            Target::Parquet(writer) => writer.finish().map(|_| ()).map_err(Error::from),
            Target::Kafka(sink) => {
                (sink.flush(std::time::Duration::from_secs(60))).map_err(Error::from)
            }
            Target::Closed | Target::Finished => Ok(()),
        };
        match (self.error.take(), finished) {
            (Some(why), _) => Err(self.failed(&why)),
            (None, Err(e)) => Err(self.failed(&e.to_string())),
            (None, Ok(())) => Ok(self.rows),
        }
    }

    fn failed(&self, why: &str) -> Error {
        let target = match (&self.spec.parquet, &self.spec.kafka) {
            (Some(url), _) => format!("Parquet dataset `{url}`"),
            (_, Some(k)) => format!("Kafka topic '{}' on {}", k.topic, k.bootstrap_servers),
            _ => "nothing".into(),
        };
        Error::config(
            "sink",
            format!(
                "sink '{}' could not write to {target}: {why}",
                self.spec.name
            ),
        )
    }
}

/// Publishes the Parquet sinks once every worker has finished its part: `_SUCCESS` in each.
pub fn publish(sinks: &[SinkSpec], storage: &StorageOptions) -> Result<()> {
    for url in sinks.iter().filter_map(|s| s.parquet.as_ref()) {
        let location = StorageLocation::parse(url, storage)?;
        write_success(location.store.as_ref(), &location.root, &location.url)?;
        tracing::info!(url = %location.url, "sink published (_SUCCESS written)");
    }
    Ok(())
}
