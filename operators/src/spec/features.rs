//! `[features]`: a streaming job's incremental features, joined onto each record as of its event
//! time before the record is encoded and trained on.
//!
//! ```toml
//! [features]
//! key = "user_id"                  # the records' entity column (after the preprocess SQL)
//!
//! [features.table]                 # a dimension table: Parquet, Spark output or Delta
//! path = "s3://warehouse/users"
//! columns = ["age", "tier"]        # its columns that become features
//! refresh = "10s"                  # look for a new Delta version this often
//!
//! [[features.aggregate]]           # per-key aggregates over event time
//! name = "spend_1h"
//! kind = "sum"                     # count, sum, mean, min, max, last, count_distinct
//! column = "amount"                # its input (not for count)
//! window = "1h"                    # omit for all time
//! ```
//!
//! Or the same in SQL (see [`crate::streaming::features::sql`]), planned by DataFusion against
//! the preprocessed records (`events`) and the table (`[features.table] name`):
//!
//! ```toml
//! [features]
//! sql = """
//! SELECT age, tier, SUM(amount) OVER last_hour AS spend_1h
//! FROM events LEFT JOIN users USING (user_id)
//! WINDOW last_hour AS (PARTITION BY user_id ORDER BY event_time
//!                      RANGE BETWEEN INTERVAL '1 hour' PRECEDING AND CURRENT ROW)
//! """
//! [features.table]
//! name = "users"
//! path = "s3://warehouse/users"
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use millrace_engine::features::{AggKind, Aggregate, FeatureSpec};
use serde::{Deserialize, Serialize};

use super::{ColumnType, DurationText};
use crate::{Error, Result};

/// `[features]`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FeaturesSpec {
    /// The view's name: `GET /v1/features/{name}/{key}` serves its current features.
    #[serde(default = "default_view_name")]
    pub name: String,
    /// The records' key column: the table's rows and the aggregates are per value of it (from
    /// the SQL, with `sql`).
    #[serde(default)]
    pub key: String,
    /// The dimension table joined on the key.
    #[serde(default)]
    pub table: Option<FeatureTableSpec>,
    /// Per-key aggregates (`[[features.aggregate]]`).
    #[serde(default, rename = "aggregate")]
    pub aggregates: Vec<FeatureAggregateSpec>,
    /// The view as one SQL query over `events` (the preprocessed records) and the table; it
    /// takes the place of `key`, `[[features.aggregate]]` and the table's `key`, `columns` and
    /// `join`.
    #[serde(default)]
    pub sql: Option<String>,
}

/// How the table is joined: `left` keeps an event whose key has no table row (its table
/// columns null), `inner` drops it.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TableJoin {
    /// `LEFT JOIN`.
    #[default]
    Left,
    /// `JOIN`.
    Inner,
}

/// `[features.table]`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FeatureTableSpec {
    /// The table's name in `[features] sql`.
    #[serde(default)]
    pub name: Option<String>,
    /// A Parquet file or directory, Spark output or a Delta table, local or an object store URL.
    #[serde(default)]
    pub path: String,
    /// Instead of `path`: a compacted Kafka topic (see [`KafkaTableSpec`]).
    #[serde(default)]
    pub kafka: Option<KafkaTableSpec>,
    /// With `kafka`: the columns of each message's JSON value and their types (as `[stream]
    /// schema`; a field that is missing is null).
    #[serde(default)]
    pub schema: BTreeMap<String, ColumnType>,
    /// The table's key column (default: `features.key`).
    #[serde(default)]
    pub key: Option<String>,
    /// The table columns that become features, in this order.
    #[serde(default)]
    pub columns: Vec<String>,
    /// `left` (the default) or `inner`.
    #[serde(default)]
    pub join: TableJoin,
    /// How often to look for a new Delta version (e.g. "10s"); without it the table is read once.
    #[serde(default)]
    pub refresh: Option<DurationText>,
}

/// `[features.table] kafka`: a compacted topic read as a table. A message's key (UTF-8; an
/// integer when the records' key is) is the row's key, its JSON value the row, and a null value (a
/// tombstone) deletes the row; each change takes effect at the message's timestamp.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KafkaTableSpec {
    /// Kafka bootstrap servers, `host:port[,host:port]`.
    pub bootstrap_servers: String,
    /// The topic.
    pub topic: String,
    /// librdkafka properties passed through (security.protocol, sasl.*, ssl.*…).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

/// One `[[features.aggregate]]`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FeatureAggregateSpec {
    /// The feature's column name.
    pub name: String,
    /// count, sum, mean (avg), min, max, last or count_distinct.
    pub kind: AggKind,
    /// The record column it aggregates (not for `count`).
    #[serde(default)]
    pub column: Option<String>,
    /// Event-time window (e.g. "1h"); omitted: over all events so far.
    #[serde(default)]
    pub window: Option<DurationText>,
}

fn default_view_name() -> String {
    "features".into()
}

impl FeaturesSpec {
    /// The engine's view definition, checked: kinds, windows, names and inputs.
    pub fn view(&self) -> Result<FeatureSpec> {
        if self.key.is_empty() {
            return Err(Error::config(
                "features.key",
                "name the records' key column",
            ));
        }
        let table_columns = self
            .table
            .as_ref()
            .map(|t| t.columns.clone())
            .unwrap_or_default();
        let aggregates = (self.aggregates.iter().enumerate())
            .map(|(i, a)| {
                let at = |field: &str| format!("features.aggregate[{i}].{field}");
                let kind = a.kind;
                if kind != AggKind::Count && a.column.is_none() {
                    return Err(Error::config(
                        at("column"),
                        format!("a `{kind}` aggregate needs the column it aggregates"),
                    ));
                }
                let window_ms = a.window.as_ref().map(|w| w.get().as_millis() as u64);
                Ok(Aggregate {
                    name: a.name.clone(),
                    kind,
                    window_ms,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if let Some(table) = &self.table {
            table.check()?;
        }
        let inner_join = self.table.as_ref().map(|t| t.join) == Some(TableJoin::Inner);
        if inner_join && !aggregates.is_empty() {
            return Err(Error::config(
                "features.table.join",
                "an inner join with aggregates is not supported: SQL would aggregate only the joined events, the view aggregates every event of the key; use a left join",
            ));
        }
        let spec = FeatureSpec {
            table_columns,
            aggregates,
            inner_join,
        };
        spec.validate()
            .map_err(|e| Error::config("features", e.to_string()))?;
        if self.table.is_none() && spec.aggregates.is_empty() {
            return Err(Error::config(
                "features",
                "add a [features.table] or a [[features.aggregate]]",
            ));
        }
        Ok(spec)
    }

    /// The table's refresh interval, if it is to be watched for new versions.
    pub fn refresh(&self) -> Option<Duration> {
        self.table
            .as_ref()
            .and_then(|t| t.refresh.as_ref())
            .map(DurationText::get)
    }

    /// The table's key column (for a Kafka table, the name its message key goes by; default:
    /// the records' key column, or `key` for a Kafka table when neither is named).
    pub fn table_key(&self) -> Option<&str> {
        let table = self.table.as_ref()?;
        let key = table.key.as_deref().unwrap_or(&self.key);
        // With `sql` and no `key`, a Kafka table's message key goes by `key`.
        Some(if key.is_empty() && table.kafka.is_some() {
            "key"
        } else {
            key
        })
    }
}

impl FeatureTableSpec {
    /// One source, files or a topic, with the settings it takes.
    fn check(&self) -> Result<()> {
        match (&self.kafka, self.path.is_empty()) {
            (None, true) => Err(Error::config(
                "features.table.path",
                "give the table's path (Parquet, Spark output or Delta), or a compacted topic: kafka = { bootstrap_servers = \"…\", topic = \"…\" }",
            )),
            (Some(_), false) => Err(Error::config(
                "features.table.kafka",
                "a table is read from files (path) or from a topic (kafka), not both",
            )),
            (Some(_), true) if self.schema.is_empty() => Err(Error::config(
                "features.table.schema",
                "a Kafka table needs its values' schema: schema = { score = \"float64\", tier = \"string\" }",
            )),
            (Some(_), true) if self.refresh.is_some() => Err(Error::config(
                "features.table.refresh",
                "a Kafka table follows its topic as it is written; refresh is for a Delta table",
            )),
            (None, false) if !self.schema.is_empty() => Err(Error::config(
                "features.table.schema",
                "the schema of a table read from files comes from the files: leave schema out",
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(path: &str, kafka: bool, schema: &[(&str, &str)]) -> FeaturesSpec {
        FeaturesSpec {
            name: "features".into(),
            key: "user_id".into(),
            table: Some(FeatureTableSpec {
                path: path.into(),
                kafka: kafka.then(|| KafkaTableSpec {
                    bootstrap_servers: "127.0.0.1:9092".into(),
                    topic: "users".into(),
                    properties: BTreeMap::new(),
                }),
                schema: (schema.iter())
                    .map(|(k, v)| (k.to_string(), v.parse().unwrap()))
                    .collect(),
                columns: vec!["score".into()],
                ..Default::default()
            }),
            aggregates: Vec::new(),
            sql: None,
        }
    }

    #[test]
    fn a_table_is_files_or_a_topic_with_the_settings_each_takes() {
        let error = |spec: FeaturesSpec| spec.view().unwrap_err().to_string();
        assert!(table("/t", false, &[]).view().is_ok());
        assert!(table("", true, &[("score", "float64")]).view().is_ok());
        assert!(error(table("", false, &[])).contains("[features.table.path]"));
        assert!(error(table("/t", true, &[("score", "float64")])).contains("not both"));
        assert!(error(table("", true, &[])).contains("[features.table.schema] a Kafka table"));
        assert!(
            error(table("/t", false, &[("score", "float64")])).contains("comes from the files")
        );
        let mut refreshed = table("", true, &[("score", "float64")]);
        refreshed.table.as_mut().unwrap().refresh = Some("1s".parse().unwrap());
        assert!(error(refreshed).contains("[features.table.refresh]"));
    }

    #[test]
    fn a_kafka_tables_message_key_goes_by_key_unless_named() {
        let mut spec = table("", true, &[("score", "float64")]);
        assert_eq!(spec.table_key(), Some("user_id"));
        spec.key.clear(); // as with `sql`, before it is resolved
        assert_eq!(spec.table_key(), Some("key"));
        spec.table.as_mut().unwrap().key = Some("id".into());
        assert_eq!(spec.table_key(), Some("id"));
    }
}
