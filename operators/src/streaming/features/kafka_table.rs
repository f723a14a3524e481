//! `[features.table] kafka`: a compacted Kafka topic as the dimension table. A message's key is
//! a row's key, its JSON value the row, and a null value (a tombstone) deletes the row; each
//! change is a difference in the view (the key's previous row out, the new one in) at the
//! message's timestamp, so a record sees the row as it stood at the record's event time.
//!
//! Worker 0 reads every partition: at the start up to the end the topic had then, and then
//! whatever arrived before each step. While a partition of the topic has messages it has not
//! read, the job's watermark waits at the newest table time read, so no record is released
//! ahead of a change of the table that is already written. A change whose timestamp the
//! watermark has passed takes effect at the watermark (the view cannot change its past). Its
//! rows and read positions are part of every checkpoint.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use millrace_connectors::kafka::{
    KafkaOptions, KafkaSource, MessageFormat, MetadataColumns, RawMessage, RecordDecoder, StartFrom,
};
use millrace_engine::DeadLetter;
use millrace_engine::features::{FeatureView, Row, Value};
use serde::{Deserialize, Serialize};

use crate::spec::{FeaturesSpec, KafkaTableSpec};
use crate::{Error, Result};

/// What a checkpoint keeps of a Kafka table: where its reading stands and each key's row.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct KafkaTableState {
    /// The next offset to read, per partition.
    pub positions: BTreeMap<i32, i64>,
    /// Each key's current row.
    pub rows: Vec<(Value, Row)>,
    /// The newest message time read (epoch ms).
    pub newest_ms: Option<i64>,
}

/// Worker 0's reader of the table's topic.
pub(crate) struct KafkaTable {
    source: KafkaSource,
    decoder: RecordDecoder,
    topic: String,
    /// The value columns that become features, in the view's order.
    columns: Vec<String>,
    integer_keys: bool,
    current: HashMap<Value, Row>,
    newest_ms: Option<i64>,
}

/// How long the start may take to read the topic to its end.
const LOAD_TIMEOUT: Duration = Duration::from_secs(300);

impl KafkaTable {
    /// The table's schema: the key column (`key_name`; int64 or utf8 like the records' key),
    /// then the value's columns, every one nullable.
    pub(crate) fn schema(
        spec: &FeaturesSpec,
        key_name: &str,
        integer_keys: bool,
    ) -> Result<SchemaRef> {
        let values = value_fields(spec)?;
        if values.iter().any(|f| f.name() == key_name) {
            return Err(Error::config(
                "features.table.schema",
                format!(
                    "`{key_name}` is the message key's column: leave it out of the values' schema, or name the key otherwise (features.table.key)"
                ),
            ));
        }
        let key_type = if integer_keys {
            DataType::Int64
        } else {
            DataType::Utf8
        };
        let fields = std::iter::once(Field::new(key_name, key_type, false)).chain(values);
        Ok(Arc::new(Schema::new(fields.collect::<Vec<_>>())))
    }

    /// Opens the topic (all its partitions) where `resume` left it, or at its start.
    pub(crate) fn open(
        spec: &FeaturesSpec,
        kafka: &KafkaTableSpec,
        integer_keys: bool,
        resume: Option<&KafkaTableState>,
    ) -> Result<Self> {
        let table = spec
            .table
            .as_ref()
            .ok_or_else(|| Error::Internal("no [features.table]".into()))?;
        let options = KafkaOptions {
            bootstrap_servers: kafka.bootstrap_servers.clone(),
            properties: kafka.properties.clone(),
        };
        let group = format!("millrace-table-{}", kafka.topic);
        let positions = resume.map(|r| &r.positions);
        let source = KafkaSource::open(
            &options,
            &kafka.topic,
            &group,
            0,
            1,
            StartFrom::Earliest,
            positions,
        )
        .map_err(|e| {
            Error::config(
                "features.table.kafka",
                format!("cannot read the table topic `{}`: {e}", kafka.topic),
            )
        })?;
        let decoder = RecordDecoder::new(
            MessageFormat::Json {
                schema: Arc::new(Schema::new(value_fields(spec)?)),
            },
            MetadataColumns::default(),
        )
        .map_err(|e| Error::config("features.table.schema", e.to_string()))?;
        Ok(KafkaTable {
            source,
            decoder,
            topic: kafka.topic.clone(),
            columns: table.columns.clone(),
            integer_keys,
            current: resume.map_or_else(HashMap::new, |r| r.rows.iter().cloned().collect()),
            newest_ms: resume.and_then(|r| r.newest_ms),
        })
    }

    /// The start: every message up to the end the topic has now, into `view`.
    pub(crate) fn load(
        &mut self,
        view: &mut FeatureView,
        dead: &mut Vec<DeadLetter>,
    ) -> Result<()> {
        let ends = self.source.high_watermarks()?;
        let started = Instant::now();
        loop {
            let positions = self.source.positions();
            let behind = (ends.iter()).any(|(p, end)| positions.get(p).is_some_and(|at| at < end));
            if !behind || self.source.at_end() {
                return Ok(());
            }
            if started.elapsed() > LOAD_TIMEOUT {
                return Err(Error::config(
                    "features.table.kafka",
                    format!(
                        "the table topic `{}` was not read to its end ({ends:?}) in {} s (read up to {positions:?}); is the broker reachable?",
                        self.topic,
                        LOAD_TIMEOUT.as_secs()
                    ),
                ));
            }
            let messages = self.source.poll(50_000, Duration::from_millis(200))?;
            self.apply(&messages, view, dead)?;
        }
    }

    /// What arrived since the last call, without waiting.
    pub(crate) fn poll(
        &mut self,
        view: &mut FeatureView,
        dead: &mut Vec<DeadLetter>,
    ) -> Result<()> {
        let messages = self.source.poll(50_000, Duration::ZERO)?;
        self.apply(&messages, view, dead)
    }

    /// While a partition has messages not read yet: the newest table time read, which the job's
    /// watermark must not pass.
    pub(crate) fn hold(&self) -> Option<i64> {
        let lagging = (self.source.assignment().into_iter()).any(|p| self.source.has_unread(p));
        lagging.then(|| self.newest_ms.unwrap_or(0))
    }

    /// Where the reading stands and each key's row, for a checkpoint.
    pub(crate) fn state(&self) -> KafkaTableState {
        let mut rows: Vec<(Value, Row)> = (self.current.iter())
            .map(|(k, r)| (k.clone(), r.clone()))
            .collect();
        rows.sort();
        KafkaTableState {
            positions: self.source.positions(),
            rows,
            newest_ms: self.newest_ms,
        }
    }

    /// Each message in order: the key's previous row out and its new one in (none for a
    /// tombstone), at the message's time; a message without a usable key or value is a dead
    /// letter.
    fn apply(
        &mut self,
        messages: &[RawMessage],
        view: &mut FeatureView,
        dead: &mut Vec<DeadLetter>,
    ) -> Result<()> {
        if messages.is_empty() {
            return Ok(());
        }
        let with_value: Vec<RawMessage> = (messages.iter())
            .filter(|m| m.payload.is_some())
            .cloned()
            .collect();
        let decoded = self.decoder.decode(&self.topic, &with_value);
        let values = Value::rows(&decoded.batch, &self.columns)?;
        let mut rows: HashMap<(i32, i64), Row> = HashMap::with_capacity(values.len());
        for (row, m) in values.into_iter().zip(&decoded.messages) {
            let m = &with_value[*m as usize];
            rows.insert((m.partition, m.offset), row);
        }
        let mut bad: HashMap<(i32, i64), String> = (decoded.dead.iter())
            .map(|d| ((d.partition, d.offset), d.error.clone()))
            .collect();
        for m in messages {
            let at = (m.partition, m.offset);
            let key = self.key(m);
            let row = rows.remove(&at);
            let reason = match (&key, &m.payload, &row) {
                (Err(reason), _, _) => Some(reason.clone()),
                (Ok(_), Some(_), None) => Some(
                    bad.remove(&at)
                        .unwrap_or_else(|| "the value could not be decoded".into()),
                ),
                _ => None,
            };
            if let Some(reason) = reason {
                dead.push(DeadLetter {
                    operator: "stream/features/table".into(),
                    reason,
                    origin: Some(format!("{}[{}]@{}", self.topic, m.partition, m.offset)),
                    record: m
                        .payload
                        .as_ref()
                        .map(|p| String::from_utf8_lossy(p).into_owned()),
                    rows: 1,
                });
                continue;
            }
            let (Ok(key), time) = (key, m.timestamp_ms.unwrap_or(0)) else {
                continue;
            };
            self.newest_ms = Some(self.newest_ms.map_or(time, |n| n.max(time)));
            let time = u64::try_from(time).unwrap_or(0);
            if let Some(old) = self.current.remove(&key) {
                view.update_table(key.clone(), old, time, -1)?;
            }
            if let Some(row) = row {
                view.update_table(key.clone(), row.clone(), time, 1)?;
                self.current.insert(key, row);
            }
        }
        Ok(())
    }

    /// The row key a message names.
    fn key(&self, m: &RawMessage) -> std::result::Result<Value, String> {
        let Some(bytes) = &m.key else {
            return Err("a table message needs a key: the row it sets or deletes".into());
        };
        let text = std::str::from_utf8(bytes)
            .map_err(|_| "the message key is not UTF-8 text".to_string())?;
        if !self.integer_keys {
            return Ok(Value::Str(text.into()));
        }
        text.trim().parse().map(Value::Int).map_err(|_| {
            format!("the message key `{text}` is not an integer, as the records' key is")
        })
    }
}

/// The columns of the table's values, as `[features.table] schema` declares them, nullable.
fn value_fields(spec: &FeaturesSpec) -> Result<Vec<Field>> {
    let table = spec
        .table
        .as_ref()
        .ok_or_else(|| Error::Internal("no [features.table]".into()))?;
    Ok((table.schema.iter())
        .map(|(name, declared)| Field::new(name, declared.data_type().clone(), true))
        .collect())
}
