//! `[[sink]]`: where rows go besides training: a Parquet dataset (local or object store, laid out
//! as Spark writes one) or a Kafka topic (one JSON message per row), taken at a point of the graph.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// A point of the graph a sink takes its rows from.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SinkPoint {
    /// The records as read, before the steps and the SQL.
    Ingest,
    /// The rows the preprocess makes (after `steps_before_sql`, `sql` and `steps_after_sql`),
    /// before the encoding: the training rows.
    #[default]
    Preprocess,
    /// The rows with their `[features]` columns, as they are trained (streaming jobs with
    /// `[features]`).
    Features,
}

impl SinkPoint {
    /// Its name in the pipeline file.
    pub fn name(self) -> &'static str {
        match self {
            SinkPoint::Ingest => "ingest",
            SinkPoint::Preprocess => "preprocess",
            SinkPoint::Features => "features",
        }
    }
}

/// A Kafka topic a sink writes.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KafkaTopicSpec {
    /// `host:port[,host:port…]`.
    pub bootstrap_servers: String,
    /// The topic (it must exist).
    pub topic: String,
    /// A column whose value keys each message (a string, binary or integer column).
    #[serde(default)]
    pub key: Option<String>,
    /// librdkafka properties, passed through (security settings and the like).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

/// One `[[sink]]`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SinkSpec {
    /// Its name (the operator is `sink/<name>`).
    pub name: String,
    /// Where its rows come from: `"preprocess"` (default) or `"ingest"`.
    #[serde(default)]
    pub after: SinkPoint,
    /// A Parquet dataset URL (a local path, `file://`, `s3://…`): every worker writes its own
    /// part files, then `_SUCCESS` is written; `output.mode` says what to do with existing data.
    #[serde(default)]
    pub parquet: Option<String>,
    /// A Kafka topic, one JSON message per row.
    #[serde(default)]
    pub kafka: Option<KafkaTopicSpec>,
    /// The columns written, in order (empty: all).
    #[serde(default)]
    pub columns: Vec<String>,
    /// Parquet only: Hive-partition the dataset by these columns, as Spark's `partitionBy`.
    #[serde(default)]
    pub partition_by: Vec<String>,
}

impl SinkSpec {
    /// Checks what can be checked without data: a valid name, exactly one target, and the
    /// options of that target. `i` is the sink's index, for errors.
    pub fn validate(&self, i: usize) -> Result<()> {
        let valid = !self.name.is_empty()
            && (self.name.chars()).all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid {
            return Err(Error::config(
                "sink.name",
                format!(
                    "sink {i} has name '{}': use letters, digits, _ and -",
                    self.name
                ),
            ));
        }
        let name = &self.name;
        match (&self.parquet, &self.kafka) {
            (Some(_), Some(_)) | (None, None) => Err(Error::config(
                "sink",
                format!(
                    "sink '{name}' needs exactly one of `parquet = \"URL\"` or `kafka = {{ bootstrap_servers, topic }}`"
                ),
            )),
            (None, Some(k)) if !self.partition_by.is_empty() => Err(Error::config(
                "sink.partition_by",
                format!(
                    "sink '{name}' writes Kafka topic '{}': partition_by is for Parquet sinks",
                    k.topic
                ),
            )),
            (None, Some(k)) if k.topic.is_empty() || k.bootstrap_servers.is_empty() => {
                Err(Error::config(
                    "sink.kafka",
                    format!("sink '{name}' needs a topic and bootstrap_servers"),
                ))
            }
            _ => Ok(()),
        }
    }

    /// The columns it needs from its point's schema (`None`: all).
    pub fn needs(&self) -> Option<Vec<String>> {
        if self.columns.is_empty() {
            return None;
        }
        let mut all = self.columns.clone();
        for c in self
            .partition_by
            .iter()
            .chain(self.kafka.iter().flat_map(|k| &k.key))
        {
            if !all.contains(c) {
                all.push(c.clone());
            }
        }
        Some(all)
    }
}
