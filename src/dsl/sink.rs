//! The DSL's sinks: rows written to a Parquet dataset or a Kafka topic from a point of the graph.

use millrace_operators::spec::{KafkaTopicSpec, SinkPoint, SinkSpec};

/// A sink (`[[sink]]` in a pipeline file). [`Pipeline::sink`](super::Pipeline::sink) takes its
/// rows where it is placed: after ingest when no `.sql(…)` or step came before it, after the
/// preprocess otherwise; [`Sink::after`] says so explicitly.
#[derive(Clone, Debug)]
pub struct Sink {
    pub(super) spec: SinkSpec,
    pub(super) placed: bool,
}

impl Sink {
    fn new(name: &str, parquet: Option<String>, kafka: Option<KafkaTopicSpec>) -> Self {
        Sink {
            spec: SinkSpec {
                name: name.to_owned(),
                after: SinkPoint::default(),
                parquet,
                kafka,
                columns: Vec::new(),
                partition_by: Vec::new(),
            },
            placed: false,
        }
    }

    /// Rows as a Parquet dataset at `url` (a local path, `file://`, `s3://…`), laid out as Spark
    /// writes one (part files, `_SUCCESS`).
    pub fn parquet(name: &str, url: impl Into<String>) -> Self {
        Self::new(name, Some(url.into()), None)
    }

    /// Rows as JSON messages on Kafka `topic` (it must exist).
    pub fn kafka(name: &str, bootstrap_servers: &str, topic: &str) -> Self {
        let kafka = KafkaTopicSpec {
            bootstrap_servers: bootstrap_servers.to_owned(),
            topic: topic.to_owned(),
            key: None,
            properties: Default::default(),
        };
        Self::new(name, None, Some(kafka))
    }

    /// Where its rows come from, whatever its place in the chain.
    pub fn after(mut self, point: SinkPoint) -> Self {
        self.spec.after = point;
        self.placed = true;
        self
    }

    /// Only these columns, in this order.
    pub fn columns<S: Into<String>>(mut self, columns: impl IntoIterator<Item = S>) -> Self {
        self.spec.columns = columns.into_iter().map(Into::into).collect();
        self
    }

    /// Parquet: partition the dataset by these columns (Hive layout, like Spark's `partitionBy`).
    pub fn partition_by<S: Into<String>>(mut self, columns: impl IntoIterator<Item = S>) -> Self {
        self.spec.partition_by = columns.into_iter().map(Into::into).collect();
        self
    }

    /// Kafka: key each message by this column's value.
    pub fn key(mut self, column: &str) -> Self {
        if let Some(k) = &mut self.spec.kafka {
            k.key = Some(column.to_owned());
        }
        self
    }
}
