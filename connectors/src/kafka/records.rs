//! [`RecordDecoder`]: polled Kafka messages into one `RecordBatch` of good rows plus the dead
//! letters of the bad ones, with the messages' key, timestamp, partition and offset as optional
//! metadata columns.

use std::sync::Arc;

use apache_avro::Schema as AvroSchema;
use arrow::array::{
    ArrayRef, BinaryBuilder, Int32Array, Int64Array, StringBuilder, TimestampMillisecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::{RecordBatch, RecordBatchOptions};

use super::producer::RejectedMessage;
use super::source::RawMessage;
use crate::avro::{AvroFraming, AvroRowDecoder};
use crate::json::{JsonRowDecoder, RecordError};
use crate::{Error, Result};

/// Name of the metadata column holding the message key (Utf8, nullable).
pub const KEY_COLUMN: &str = "_key";
/// Name of the metadata column holding the message timestamp (Timestamp(ms, "UTC"), nullable).
pub const TIMESTAMP_COLUMN: &str = "_timestamp";
/// Name of the metadata column holding the partition the message was read from (Int32).
pub const PARTITION_COLUMN: &str = "_partition";
/// Name of the metadata column holding the message offset in its partition (Int64).
pub const OFFSET_COLUMN: &str = "_offset";
/// Name of the one payload column of [`MessageFormat::Raw`] (Binary, nullable).
pub const RAW_VALUE_COLUMN: &str = "value";

/// The dead-letter reason of a message with a null value, for [`MessageFormat::Json`] and
/// [`MessageFormat::Avro`].
pub const TOMBSTONE_ERROR: &str = "message has no payload (tombstone)";

/// What the value of each message holds.
#[derive(Clone, Debug)]
pub enum MessageFormat {
    /// One JSON object per message, decoded into `schema`'s columns (see
    /// [`JsonRowDecoder`]).
    Json {
        /// The columns to decode.
        schema: SchemaRef,
    },
    /// One Avro datum of a flat record schema per message (see [`AvroRowDecoder`]); the columns
    /// are [`crate::avro::arrow_schema`]'s.
    Avro {
        /// The writer's record schema.
        schema: AvroSchema,
        /// Raw datum, or the Confluent wire format.
        framing: AvroFraming,
    },
    /// The value bytes as they are, in one nullable Binary column named `value`
    /// ([`RAW_VALUE_COLUMN`]); a tombstone is a null value, not a dead letter.
    Raw,
}

/// Which message metadata to append, after the payload columns, in this order and under these
/// fixed names: `_key` ([`KEY_COLUMN`]: Utf8, nullable; bytes that are not UTF-8 are replaced by
/// U+FFFD), `_timestamp` ([`TIMESTAMP_COLUMN`]: Timestamp(ms, "UTC"), nullable),
/// `_partition` ([`PARTITION_COLUMN`]: Int32) and `_offset` ([`OFFSET_COLUMN`]: Int64).
///
/// The default appends none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MetadataColumns {
    /// Append `_key`.
    pub key: bool,
    /// Append `_timestamp`.
    pub timestamp: bool,
    /// Append `_partition`.
    pub partition: bool,
    /// Append `_offset`.
    pub offset: bool,
}

impl MetadataColumns {
    /// No metadata column.
    pub const NONE: MetadataColumns = MetadataColumns {
        key: false,
        timestamp: false,
        partition: false,
        offset: false,
    };
    /// Every metadata column.
    pub const ALL: MetadataColumns = MetadataColumns {
        key: true,
        timestamp: true,
        partition: true,
        offset: true,
    };

    /// The fields these columns add, in output order.
    fn fields(self) -> Vec<Field> {
        let mut fields = Vec::with_capacity(4);
        if self.key {
            fields.push(Field::new(KEY_COLUMN, DataType::Utf8, true));
        }
        if self.timestamp {
            let utc = DataType::Timestamp(TimeUnit::Millisecond, Some(Arc::from("UTC")));
            fields.push(Field::new(TIMESTAMP_COLUMN, utc, true));
        }
        if self.partition {
            fields.push(Field::new(PARTITION_COLUMN, DataType::Int32, false));
        }
        if self.offset {
            fields.push(Field::new(OFFSET_COLUMN, DataType::Int64, false));
        }
        fields
    }
}

/// What [`RecordDecoder::decode`] made of a list of messages.
#[derive(Clone, Debug)]
pub struct Decoded {
    /// The good rows, in message order, of [`RecordDecoder::schema`].
    pub batch: RecordBatch,
    /// For each row of `batch`, the index of the message it was decoded from (so a caller can
    /// find its partition, offset and key after later steps drop or reorder columns).
    pub messages: Vec<u32>,
    /// The bad messages, in message order, each with its topic, partition, offset, key, payload
    /// and why it was rejected.
    pub dead: Vec<RejectedMessage>,
}

/// The payload decoder of one format.
#[derive(Debug)]
enum Payload {
    Json(Box<JsonRowDecoder>),
    Avro(Box<AvroRowDecoder>),
    Raw,
}

/// Decodes polled [`RawMessage`]s into `RecordBatch`es of one schema: the payload's columns, then
/// the requested [`MetadataColumns`]. A message that does not decode is a [`RejectedMessage`] (with the
/// decoder's reason, e.g. `field "f3": expected a number, found a string "abc"`), never an error:
/// the stream goes on.
///
/// It is made to run on every micro-batch: per message it does no allocation beyond the payload
/// decoder's (metadata goes straight into column buffers; only dead letters copy their bytes).
///
/// ```
/// use std::sync::Arc;
/// use arrow::datatypes::{DataType, Field, Schema};
/// use millrace_connectors::kafka::{MessageFormat, MetadataColumns, RawMessage, RecordDecoder};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Float32, false)]));
/// let metadata = MetadataColumns { offset: true, ..MetadataColumns::NONE };
/// let mut decoder = RecordDecoder::new(MessageFormat::Json { schema }, metadata)?;
/// let message = |offset: i64, payload: &[u8]| RawMessage {
///     partition: 0,
///     offset,
///     timestamp_ms: None,
///     key: None,
///     payload: Some(payload.to_vec()),
/// };
/// let decoded = decoder.decode("t", &[message(7, br#"{"x": 1.5}"#), message(8, b"{")]);
/// assert_eq!(decoded.batch.num_rows(), 1);
/// assert_eq!(decoded.messages, vec![0]); // row 0 came from message 0
/// assert_eq!(decoded.batch.schema().field(1).name(), "_offset");
/// assert_eq!(decoded.dead[0].offset, 8);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct RecordDecoder {
    payload: Payload,
    metadata: MetadataColumns,
    schema: SchemaRef,
}

impl RecordDecoder {
    /// A decoder for messages of `format`, adding the `metadata` columns. Fails with
    /// [`Error::InvalidOption`] when the format's schema is not supported (as
    /// [`JsonRowDecoder::new`] and [`AvroRowDecoder::new`] do) or has a field named like one of
    /// the metadata columns asked for.
    pub fn new(format: MessageFormat, metadata: MetadataColumns) -> Result<Self> {
        let (payload, payload_schema) = match format {
            MessageFormat::Json { schema } => {
                let decoder = JsonRowDecoder::new(schema.clone())?;
                (Payload::Json(Box::new(decoder)), schema)
            }
            MessageFormat::Avro { schema, framing } => {
                let decoder = AvroRowDecoder::new(schema, framing)?;
                let schema = decoder.schema().clone();
                (Payload::Avro(Box::new(decoder)), schema)
            }
            MessageFormat::Raw => {
                let field = Field::new(RAW_VALUE_COLUMN, DataType::Binary, true);
                (Payload::Raw, Arc::new(Schema::new(vec![field])))
            }
        };
        let extra = metadata.fields();
        let clashes: Vec<&str> = extra
            .iter()
            .map(|f| f.name().as_str())
            .filter(|name| payload_schema.field_with_name(name).is_ok())
            .collect();
        if !clashes.is_empty() {
            return Err(Error::InvalidOption {
                option: "RecordDecoder metadata",
                reason: format!(
                    "the payload schema has a field named {}, like the metadata column it asks \
                     for; rename the payload field or do not ask for that metadata column",
                    clashes.join(" and ")
                ),
            });
        }
        let mut fields: Vec<Arc<Field>> = payload_schema.fields().iter().cloned().collect();
        fields.extend(extra.into_iter().map(Arc::new));
        let schema = Arc::new(Schema::new_with_metadata(
            fields,
            payload_schema.metadata().clone(),
        ));
        Ok(RecordDecoder {
            payload,
            metadata,
            schema,
        })
    }

    /// The schema of every [`Decoded::batch`]: the payload's columns, then the metadata columns.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// The metadata columns this decoder appends.
    pub fn metadata(&self) -> MetadataColumns {
        self.metadata
    }

    /// Decodes `messages` (read from `topic`, which only the dead letters name): the good ones
    /// become the rows of [`Decoded::batch`], in order; each bad one (a payload the format
    /// rejects, or, except for [`MessageFormat::Raw`], a tombstone, whose reason is
    /// [`TOMBSTONE_ERROR`]) becomes a [`RejectedMessage`] in [`Decoded::dead`].
    pub fn decode(&mut self, topic: &str, messages: &[RawMessage]) -> Decoded {
        let mut meta = MetaBuilder::new(self.metadata, messages);
        let mut dead = Vec::new();
        let mut rows = Vec::with_capacity(messages.len());
        let payload_columns = match &mut self.payload {
            Payload::Json(decoder) => {
                decoder.clear();
                for (i, message) in messages.iter().enumerate() {
                    match push(message, |bytes| decoder.push(bytes)) {
                        Ok(()) => {
                            meta.push(message);
                            rows.push(i as u32);
                        }
                        Err(error) => dead.push(dead_letter(topic, message, error)),
                    }
                }
                decoder.finish().columns().to_vec()
            }
            Payload::Avro(decoder) => {
                decoder.clear();
                for (i, message) in messages.iter().enumerate() {
                    match push(message, |bytes| decoder.push(bytes)) {
                        Ok(()) => {
                            meta.push(message);
                            rows.push(i as u32);
                        }
                        Err(error) => dead.push(dead_letter(topic, message, error)),
                    }
                }
                decoder.finish().columns().to_vec()
            }
            Payload::Raw => {
                let bytes = messages
                    .iter()
                    .map(|m| m.payload.as_ref().map_or(0, Vec::len))
                    .sum();
                let mut values = BinaryBuilder::with_capacity(messages.len(), bytes);
                for (i, message) in messages.iter().enumerate() {
                    values.append_option(message.payload.as_deref());
                    meta.push(message);
                    rows.push(i as u32);
                }
                vec![Arc::new(values.finish()) as ArrayRef]
            }
        };
        let mut columns = payload_columns;
        let count = meta.rows;
        columns.extend(meta.finish());
        let options = RecordBatchOptions::new().with_row_count(Some(count));
        let batch = RecordBatch::try_new_with_options(self.schema.clone(), columns, &options)
            // Each column is built for its field's type and nullability, with `rows` rows.
            .expect("RecordDecoder columns match its schema by construction");
        Decoded {
            batch,
            messages: rows,
            dead,
        }
    }
}

/// Pushes `message`'s payload, a tombstone being an error.
#[inline]
fn push(
    message: &RawMessage,
    push: impl FnOnce(&[u8]) -> std::result::Result<(), RecordError>,
) -> std::result::Result<(), String> {
    match &message.payload {
        Some(bytes) => push(bytes).map_err(|e| e.0),
        None => Err(TOMBSTONE_ERROR.to_owned()),
    }
}

fn dead_letter(topic: &str, message: &RawMessage, error: String) -> RejectedMessage {
    RejectedMessage {
        topic: topic.to_owned(),
        partition: message.partition,
        offset: message.offset,
        key: message.key.clone(),
        payload: message.payload.clone(),
        error,
    }
}

/// The metadata columns of the good rows, built as the rows are accepted.
struct MetaBuilder {
    keys: Option<StringBuilder>,
    timestamps: Option<TimestampMillisecondBuilder>,
    partitions: Option<Vec<i32>>,
    offsets: Option<Vec<i64>>,
    rows: usize,
}

impl MetaBuilder {
    fn new(metadata: MetadataColumns, messages: &[RawMessage]) -> Self {
        let n = messages.len();
        let keys = metadata.key.then(|| {
            let bytes = messages
                .iter()
                .map(|m| m.key.as_ref().map_or(0, Vec::len))
                .sum();
            StringBuilder::with_capacity(n, bytes)
        });
        let timestamps = metadata
            .timestamp
            .then(|| TimestampMillisecondBuilder::with_capacity(n).with_timezone(Arc::from("UTC")));
        MetaBuilder {
            keys,
            timestamps,
            partitions: metadata.partition.then(|| Vec::with_capacity(n)),
            offsets: metadata.offset.then(|| Vec::with_capacity(n)),
            rows: 0,
        }
    }

    #[inline]
    fn push(&mut self, message: &RawMessage) {
        self.rows += 1;
        if let Some(keys) = &mut self.keys {
            match &message.key {
                Some(key) => keys.append_value(String::from_utf8_lossy(key)),
                None => keys.append_null(),
            }
        }
        if let Some(timestamps) = &mut self.timestamps {
            timestamps.append_option(message.timestamp_ms);
        }
        if let Some(partitions) = &mut self.partitions {
            partitions.push(message.partition);
        }
        if let Some(offsets) = &mut self.offsets {
            offsets.push(message.offset);
        }
    }

    /// The columns, in [`MetadataColumns`] order.
    fn finish(self) -> Vec<ArrayRef> {
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(4);
        if let Some(mut keys) = self.keys {
            columns.push(Arc::new(keys.finish()));
        }
        if let Some(mut timestamps) = self.timestamps {
            columns.push(Arc::new(timestamps.finish()));
        }
        if let Some(partitions) = self.partitions {
            columns.push(Arc::new(Int32Array::from(partitions)));
        }
        if let Some(offsets) = self.offsets {
            columns.push(Arc::new(Int64Array::from(offsets)));
        }
        columns
    }
}
