//! The `[stream]` section of a pipeline: a Kafka topic in, a model trained online, versions
//! published and checkpoints committed as it goes.
//!
//! ```toml
//! [stream]
//! bootstrap_servers = "127.0.0.1:9092"
//! topic = "tabular"
//! format = "json"                       # json | avro | raw
//! schema = { f0 = "float32", cat = "string", label = "int8", ts = "timestamp" }
//! dead_letter_topic = "tabular-dlq"
//! warmup_records = 5000                  # fit the preprocessing on the first records
//! publish_every_steps = 20
//! checkpoint_dir = "checkpoints/tabular"
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::{Field, Schema, SchemaRef};
use millrace_connectors::avro::AvroFraming;
use millrace_connectors::kafka::{KafkaOptions, StartFrom};
use serde::{Deserialize, Serialize};

use crate::spec::{ColumnType, DurationText, Setting, Written};
use crate::streaming::window::{AggFn, Aggregate, LatePolicy, WindowSpec};
use crate::{Error, Result};

/// A streaming job: where the records come from and how often the model is published and
/// checkpointed.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StreamSpec {
    /// Kafka bootstrap servers, `host:port[,host:port]`.
    pub bootstrap_servers: String,
    /// The topic to train on.
    pub topic: String,
    /// Consumer group whose committed offsets record what the checkpoints hold (default:
    /// `millrace-<pipeline name>`).
    #[serde(default)]
    pub group_id: Option<String>,
    /// Where to start without a checkpoint: `committed` (the group's offsets, else the earliest;
    /// default), `earliest`, `latest`, or `timestamp:<epoch ms>`.
    #[serde(default = "default_start")]
    pub start: StartFrom,
    /// Message encoding: `json` (default), `avro` or `raw`.
    #[serde(default)]
    pub format: MessageEncoding,
    /// Column name → type, for `json` (`float32`, `float64`, `int8`…`int64`, `uint8`…`uint64`,
    /// `bool`, `string`, `binary`, `timestamp` (ms, UTC), `timestamp_us`, `date`). Append `?`
    /// for a nullable column (`"float32?"`); columns are non-nullable otherwise.
    #[serde(default)]
    pub schema: BTreeMap<String, ColumnType>,
    /// Column order of `schema` (default: sorted by name).
    #[serde(default)]
    pub columns: Vec<String>,
    /// `avro`: the writer schema (`.avsc` JSON), inline…
    #[serde(default)]
    pub avro_schema: Option<String>,
    /// …or from a file.
    #[serde(default)]
    pub avro_schema_file: Option<PathBuf>,
    /// `avro`: `confluent` (magic byte + schema id before each datum; default) or `raw`.
    #[serde(default = "default_avro_framing")]
    pub avro_framing: AvroFraming,
    /// Kafka metadata columns to add: any of `key`, `timestamp`, `partition`, `offset` (named
    /// `_key`, `_timestamp`, `_partition`, `_offset`). `timestamp`, `partition` and `offset`
    /// also put `"timestamp"`, `"partition"` and `"offset"` fields into each prediction sent to
    /// `predictions_topic`, so it joins back to its record.
    #[serde(default)]
    pub metadata_columns: Vec<String>,
    /// Undecodable or invalid messages go here, with the error and origin in headers. Without
    /// it they are only counted and written to dead_letters.jsonl.
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
    /// librdkafka properties passed through (security.protocol, sasl.*, ssl.*…).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// Most records a worker takes into one training step.
    #[serde(default = "default_max_batch_records")]
    pub max_batch_records: usize,
    /// How long a worker waits for records before it steps with what it has (ms).
    #[serde(default = "default_poll_timeout_ms")]
    pub poll_timeout_ms: u64,
    /// Fit the preprocessing on the first this many records (over all workers), then freeze it.
    /// Ignored when `[ingest]` names a dataset to fit on.
    #[serde(default = "default_warmup_records")]
    pub warmup_records: u64,
    /// Publish a model version every this many steps (0: only by time)…
    #[serde(default = "default_publish_every_steps")]
    pub publish_every_steps: u64,
    /// …or every this many seconds (0: only by steps).
    #[serde(default = "default_publish_every_s")]
    pub publish_every_s: f64,
    /// Where checkpoints are written: a directory that outlives runs or an object store URL
    /// (`s3://bucket/checkpoints/tabular`, with `[storage]`); default `checkpoints/<pipeline name>`.
    #[serde(default)]
    pub checkpoint_dir: Option<PathBuf>,
    /// Checkpoint (and commit offsets) every this many steps (0: only by time)…
    #[serde(default = "default_checkpoint_every_steps")]
    pub checkpoint_every_steps: u64,
    /// …or every this many seconds (0: only by steps).
    #[serde(default = "default_checkpoint_every_s")]
    pub checkpoint_every_s: f64,
    /// Complete checkpoints kept.
    #[serde(default = "default_keep_checkpoints")]
    pub keep_checkpoints: usize,
    /// Prequential (test-then-train) metrics cover about the last this many records.
    #[serde(default = "default_prequential_window")]
    pub prequential_window: u64,
    /// Also send each prequential metrics line to this topic (JSON).
    #[serde(default)]
    pub metrics_topic: Option<String>,
    /// Send each record's prediction (made before training on it) to this topic (JSON), keyed
    /// like the record (its key bytes, whatever the preprocess SQL selects), with the record's
    /// partition and offset when `metadata_columns` lists them.
    #[serde(default)]
    pub predictions_topic: Option<String>,
    /// Event-time column (a timestamp, or int64 epoch ms) for watermarks and windows.
    #[serde(default)]
    pub event_time: Option<String>,
    /// Bounded out-of-orderness of event time: the watermark trails the newest event by this
    /// (e.g. `"2s"`).
    #[serde(default = "DurationText::zero")]
    pub max_out_of_orderness: DurationText,
    /// A partition with no record for this long is idle: it no longer holds the watermark back
    /// (each partition's watermark is its newest event time minus `max_out_of_orderness`; the
    /// job's is the minimum over the partitions that are not idle) until it gets a record again.
    /// Default `"30s"`; `"0s"` never marks a partition idle (a silent partition then holds the
    /// watermark, and the windows, back for good).
    #[serde(
        default = "default_idle_timeout",
        skip_serializing_if = "is_default_idle_timeout"
    )]
    pub idle_timeout: DurationText,
    /// Watermark alignment (e.g. `"10s"`): a partition whose watermark runs more than this ahead
    /// of the job's is paused until the job's catches up, so that a backlog read unevenly does
    /// not pile up records waiting for the watermark (windows, `[features]`). `"0s"` never
    /// pauses; unset: `"10s"` with `[features]`, else never.
    #[serde(default)]
    pub watermark_alignment: Option<DurationText>,
    /// Records behind the watermark: `dead_letter` (default) or `drop` (counted either way).
    #[serde(default)]
    pub late: LatePolicy,
    /// Event-time window aggregates over the records (needs `event_time`).
    #[serde(default)]
    pub window: Option<StreamWindowSpec>,
}

/// `[stream.window]`: tumbling or sliding event-time windows, closed on the watermark, their
/// aggregates written to `windows.jsonl` in the run directory and optionally to a topic.
///
/// ```toml
/// [stream.window]
/// size = "1m"
/// slide = "10s"                      # sliding; leave out for tumbling windows
/// key = "cat"                        # one result per key and window
/// aggregates = ["count", "mean(f0)", "max(f1) as peak"]
/// topic = "tabular-windows"
/// ```
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StreamWindowSpec {
    /// Window length (`"500ms"`, `"10s"`, `"5m"`, `"1h"`).
    pub size: DurationText,
    /// Sliding step; tumbling windows when absent.
    #[serde(default)]
    pub slide: Option<DurationText>,
    /// Group-by column (string or integer).
    #[serde(default)]
    pub key: Option<String>,
    /// `count`, `count(col)`, `sum(col)`, `mean(col)`, `min(col)`, `max(col)`, each optionally
    /// `… as name` (default names: `count`, `sum_col`, …).
    pub aggregates: Vec<Written<Aggregate>>,
    /// Also send each window's result to this topic (JSON).
    #[serde(default)]
    pub topic: Option<String>,
}

impl StreamWindowSpec {
    /// The window operator's spec over `time_column`.
    pub fn window_spec(
        &self,
        time_column: &str,
        lateness: Duration,
        late: LatePolicy,
    ) -> Result<WindowSpec> {
        let size = self.size.get();
        let slide = self.slide.as_ref().map(DurationText::get);
        let aggregates: Vec<Aggregate> =
            self.aggregates.iter().map(|a| a.value().clone()).collect();
        if aggregates.is_empty() {
            return Err(Error::config(
                "stream.window.aggregates",
                "name at least one aggregate, e.g. [\"count\", \"mean(f0)\"]",
            ));
        }
        Ok(WindowSpec {
            time_column: time_column.to_string(),
            size,
            slide,
            allowed_lateness: lateness,
            key: self.key.clone(),
            aggregates,
            late,
        })
    }

    /// The input columns the windows read (key and aggregated columns).
    pub fn columns(&self) -> Vec<String> {
        let mut out: Vec<String> = self.key.iter().cloned().collect();
        for aggregate in &self.aggregates {
            if let Some(c) = &aggregate.value().column
                && !out.contains(c)
            {
                out.push(c.clone());
            }
        }
        out
    }
}

/// `count`, `fn(col)` and `… as name`.
impl Setting for Aggregate {
    fn parse_setting(text: &str) -> Result<Self> {
        parse_aggregate(text)
    }
}

/// Parses `count`, `fn(col)` and `… as name`.
fn parse_aggregate(text: &str) -> Result<Aggregate> {
    let bad = || {
        Error::config(
            "stream.window.aggregates",
            format!(
                "cannot read '{text}'; write count, count(col), sum(col), mean(col), min(col) or max(col), optionally followed by `as name`"
            ),
        )
    };
    let (expr, alias) = match text.split_once(" as ") {
        Some((e, a)) => (e.trim(), Some(a.trim().to_string())),
        None => (text.trim(), None),
    };
    let (function, column) = match expr.split_once('(') {
        None if expr == "count" => (AggFn::Count, None),
        None => return Err(bad()),
        Some((name, rest)) => {
            let column = rest.strip_suffix(')').ok_or_else(bad)?.trim().to_string();
            if column.is_empty() {
                return Err(bad());
            }
            let function = match name.trim() {
                "count" => AggFn::Count,
                "sum" => AggFn::Sum,
                "mean" | "avg" => AggFn::Mean,
                "min" => AggFn::Min,
                "max" => AggFn::Max,
                _ => return Err(bad()),
            };
            (function, Some(column))
        }
    };
    let default_name = match (&column, function) {
        (None, _) => "count".to_string(),
        (Some(c), f) => format!("{}_{c}", format!("{f:?}").to_lowercase()),
    };
    Ok(Aggregate {
        column,
        function,
        name: alias.unwrap_or(default_name),
    })
}

fn default_start() -> StartFrom {
    StartFrom::Committed
}
fn default_avro_framing() -> AvroFraming {
    AvroFraming::Confluent
}

/// How the messages of a `[stream]` topic are encoded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageEncoding {
    /// JSON objects, decoded with the declared `schema`.
    #[default]
    Json,
    /// Avro datums of `avro_schema`, framed as `avro_framing` says.
    Avro,
    /// The message bytes as they are (a `value` column).
    Raw,
}
fn default_max_batch_records() -> usize {
    4096
}
fn default_poll_timeout_ms() -> u64 {
    20
}
fn default_warmup_records() -> u64 {
    2000
}
fn default_publish_every_steps() -> u64 {
    50
}
fn default_publish_every_s() -> f64 {
    0.5
}
fn default_checkpoint_every_steps() -> u64 {
    0
}
fn default_checkpoint_every_s() -> f64 {
    5.0
}
fn default_keep_checkpoints() -> usize {
    3
}
fn default_prequential_window() -> u64 {
    10_000
}
fn default_idle_timeout() -> DurationText {
    Written::new("30s", Duration::from_secs(30))
}
fn is_default_idle_timeout(d: &DurationText) -> bool {
    d.get() == default_idle_timeout().get()
}

impl StreamSpec {
    /// The client options for the brokers.
    pub fn kafka_options(&self) -> KafkaOptions {
        KafkaOptions {
            bootstrap_servers: self.bootstrap_servers.clone(),
            properties: self.properties.clone(),
        }
    }

    /// The consumer group (`group_id`, else `millrace-<pipeline>`).
    pub fn group(&self, pipeline: &str) -> String {
        self.group_id
            .clone()
            .unwrap_or_else(|| format!("millrace-{pipeline}"))
    }

    /// The declared JSON schema, in `columns` order (or sorted by name).
    pub fn json_schema(&self) -> Result<SchemaRef> {
        if self.schema.is_empty() {
            return Err(Error::config(
                "stream.schema",
                "format = \"json\" needs the message schema: schema = { f0 = \"float32\", label = \"int8\", … }",
            ));
        }
        let order: Vec<String> = if self.columns.is_empty() {
            self.schema.keys().cloned().collect()
        } else {
            if let Some(c) = self.columns.iter().find(|c| !self.schema.contains_key(*c)) {
                return Err(Error::config(
                    "stream.columns",
                    format!("'{c}' is not in stream.schema"),
                ));
            }
            if let Some(c) = self.schema.keys().find(|c| !self.columns.contains(c)) {
                return Err(Error::config(
                    "stream.columns",
                    format!("schema column '{c}' is missing from stream.columns"),
                ));
            }
            self.columns.clone()
        };
        let mut fields = Vec::with_capacity(order.len());
        for name in order {
            let declared = &self.schema[&name];
            fields.push(Field::new(
                name,
                declared.data_type().clone(),
                declared.nullable(),
            ));
        }
        Ok(Arc::new(Schema::new(fields)))
    }

    /// Checks every value that needs no broker; errors name the key.
    pub fn validate(&self) -> Result<()> {
        if self.bootstrap_servers.trim().is_empty() {
            return Err(Error::config(
                "stream.bootstrap_servers",
                "must name at least one broker, e.g. 127.0.0.1:9092",
            ));
        }
        if self.topic.trim().is_empty() {
            return Err(Error::config(
                "stream.topic",
                "must name the topic to train on",
            ));
        }
        match self.format {
            MessageEncoding::Json => {
                self.json_schema()?;
            }
            MessageEncoding::Avro => {
                if self.avro_schema.is_some() == self.avro_schema_file.is_some() {
                    return Err(Error::config(
                        "stream.avro_schema",
                        "format = \"avro\" needs exactly one of avro_schema (inline JSON) or avro_schema_file",
                    ));
                }
            }
            MessageEncoding::Raw => {}
        }
        if let Some(m) = self
            .metadata_columns
            .iter()
            .find(|m| !matches!(m.as_str(), "key" | "timestamp" | "partition" | "offset"))
        {
            return Err(Error::config(
                "stream.metadata_columns",
                format!("unknown metadata column '{m}'; use key, timestamp, partition or offset"),
            ));
        }
        if self.max_batch_records == 0 {
            return Err(Error::config(
                "stream.max_batch_records",
                "must be at least 1",
            ));
        }
        for (key, v) in [
            ("stream.publish_every_s", self.publish_every_s),
            ("stream.checkpoint_every_s", self.checkpoint_every_s),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(Error::config(key, format!("must be >= 0 seconds, got {v}")));
            }
        }
        if self.publish_every_steps == 0 && self.publish_every_s == 0.0 {
            return Err(Error::config(
                "stream.publish_every_steps",
                "publish_every_steps and publish_every_s are both 0: no model version would ever be published",
            ));
        }
        if self.keep_checkpoints == 0 {
            return Err(Error::config(
                "stream.keep_checkpoints",
                "must be at least 1",
            ));
        }
        if self.prequential_window == 0 {
            return Err(Error::config(
                "stream.prequential_window",
                "must be at least 1",
            ));
        }
        if self.watermark_alignment.is_some() && self.event_time.is_none() {
            return Err(Error::config(
                "stream.watermark_alignment",
                "aligns event time: set stream.event_time, or remove it",
            ));
        }
        if let Some(w) = &self.window {
            if self.event_time.is_none() {
                return Err(Error::config(
                    "stream.window",
                    "windows need stream.event_time: the column whose time they group by",
                ));
            }
            w.window_spec("", Duration::ZERO, self.late)?;
        }
        self.kafka_options()
            .validate()
            .map_err(|e| Error::config("stream.properties", e.to_string()))?;
        Ok(())
    }
}
