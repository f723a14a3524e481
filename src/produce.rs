//! `millrace produce`: replays a Parquet dataset (e.g. the tabular benchmark rows, or Spark
//! output) into a Kafka topic as JSON records, for trying and testing streaming pipelines.

use std::path::Path;
use std::time::{Duration, Instant};

use millrace_connectors::kafka::{KafkaOptions, KafkaSink, SinkFormat, create_topic};
use millrace_connectors::parquet::{ParquetDataset, ScanOptions};

use crate::Result;

/// What [`produce`] did.
#[derive(Clone, Debug)]
pub struct Produced {
    /// Records sent and acknowledged.
    pub records: u64,
    /// Seconds from the first send to the last acknowledgement.
    pub seconds: f64,
}

/// Sends the rows of the dataset at `path` (at most `limit`) to `topic` as JSON, keyed by
/// `key_column` when given; creates the topic with `partitions` partitions first when asked.
pub fn produce(
    path: &Path,
    options: &KafkaOptions,
    topic: &str,
    partitions: Option<i32>,
    key_column: Option<&str>,
    limit: Option<u64>,
) -> Result<Produced> {
    let dataset = ParquetDataset::open_path(path)?;
    if let Some(n) = partitions {
        create_topic(options, topic, n, Duration::from_secs(30))?;
    }
    let schema = dataset.schema();
    let mut sink = KafkaSink::new(options, topic, SinkFormat::Json, &schema, key_column)?;
    let started = Instant::now();
    let mut sent = 0u64;
    let scan = ScanOptions {
        projection: None,
        batch_size: 8192,
    };
    'units: for unit in dataset.plan(1).into_iter().flatten() {
        for item in dataset.read_unit(&unit, &scan)? {
            let (_, batch) = item?;
            let take = match limit {
                Some(limit) => (limit - sent).min(batch.num_rows() as u64) as usize,
                None => batch.num_rows(),
            };
            sent += sink.write(&batch.slice(0, take))? as u64;
            if limit.is_some_and(|l| sent >= l) {
                break 'units;
            }
        }
    }
    sink.flush(Duration::from_secs(120))?;
    Ok(Produced {
        records: sent,
        seconds: started.elapsed().as_secs_f64(),
    })
}
