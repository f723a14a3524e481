//! [`KafkaSink`]: the rows of `RecordBatch`es as Kafka messages, one per row, JSON or Avro, keyed
//! by a column.

use std::fmt::{self, Display};
use std::io::Write;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use apache_avro::Schema as AvroSchema;
use arrow::array::{
    Array, ArrowPrimitiveType, AsArray, BinaryArray, LargeBinaryArray, LargeStringArray,
    PrimitiveArray, StringArray, StringViewArray,
};
use arrow::datatypes::{
    DataType, Int8Type, Int16Type, Int32Type, Int64Type, Schema, UInt8Type, UInt16Type, UInt32Type,
    UInt64Type,
};
use arrow::record_batch::RecordBatch;

use super::options::KafkaOptions;
use super::producer::KafkaProducer;
use crate::avro::{AvroFraming, AvroRowEncoder};
use crate::json::JsonRowEncoder;
use crate::{Error, Result};

/// How a [`KafkaSink`] writes each row.
#[derive(Clone, Debug)]
pub enum SinkFormat {
    /// One JSON object per row, every column, keys in schema order (see [`JsonRowEncoder`]).
    Json,
    /// One Avro datum of a flat record schema per row, each field from the column of its name
    /// (see [`AvroRowEncoder`]); with [`AvroFraming::Confluent`], the schema id written is 0.
    Avro {
        /// The record schema to write.
        schema: AvroSchema,
        /// Raw datum, or the Confluent wire format.
        framing: AvroFraming,
    },
}

/// The encoder of one format.
#[derive(Debug)]
enum Encoder {
    Json(JsonRowEncoder),
    Avro(Box<AvroRowEncoder>),
}

impl Encoder {
    fn encode_row(&self, batch: &RecordBatch, row: usize, out: &mut Vec<u8>) -> Result<()> {
        match self {
            Encoder::Json(encoder) => encoder.encode_row(batch, row, out),
            Encoder::Avro(encoder) => encoder.encode_row(batch, row, out),
        }
    }
}

/// The key column: its index, name and type.
#[derive(Debug)]
struct KeyColumn {
    index: usize,
    name: String,
    data_type: DataType,
}

/// Writes every row of the batches it is given as one message on one topic, through an
/// idempotent [`KafkaProducer`] (no duplicates from retries, per-partition order kept).
///
/// With a key column, each row's value there is the message key, so rows of equal keys land in
/// the same partition, in order: strings (Utf8, LargeUtf8, Utf8View) as their UTF-8 bytes, Binary
/// and LargeBinary as they are, integers as decimal text (`-42`); a null means no key. Without one,
/// messages have no key and librdkafka spreads them.
///
/// [`write`](Self::write) encodes a whole batch before queueing any of it, so a row that cannot
/// be encoded fails the call with nothing queued. Delivery is asynchronous: call
/// [`flush`](Self::flush) (at each checkpoint) to know that every queued message was delivered.
pub struct KafkaSink {
    producer: KafkaProducer,
    topic: String,
    encoder: Encoder,
    key: Option<KeyColumn>,
    /// Every encoded payload of the batch being written, one after the other.
    payloads: Vec<u8>,
    /// Every key of the batch being written, one after the other.
    keys: Vec<u8>,
    /// Per row: its payload's range in `payloads` and its key's in `keys` (`None`: no key).
    rows: Vec<(Range<usize>, Option<Range<usize>>)>,
}

impl fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaSink")
            .field("topic", &self.topic)
            .field("encoder", &self.encoder)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl KafkaSink {
    /// A sink writing batches of `input_schema` to `topic` as `format`, keyed by `key_column`'s
    /// values when given. Does not connect: the topic must exist when messages are delivered.
    ///
    /// Fails with [`Error::InvalidOption`] when the topic is empty, the key column is not in the
    /// schema (naming it and the columns there are) or of another type than a string, binary or
    /// integer, or when the encoder rejects the schema (an unsupported column type; an Avro field
    /// with no column of its name, or of a type it cannot be written as); and when the producer
    /// cannot be created (a property librdkafka rejects).
    pub fn new(
        options: &KafkaOptions,
        topic: &str,
        format: SinkFormat,
        input_schema: &Schema,
        key_column: Option<&str>,
    ) -> Result<Self> {
        if topic.is_empty() {
            return Err(Error::InvalidOption {
                option: "KafkaSink topic",
                reason: "it is empty".into(),
            });
        }
        let key = key_column
            .map(|name| key_of(input_schema, name))
            .transpose()?;
        let encoder =
            match format {
                SinkFormat::Json => Encoder::Json(JsonRowEncoder::new(input_schema)?),
                SinkFormat::Avro { schema, framing } => Encoder::Avro(Box::new(
                    AvroRowEncoder::new(schema, input_schema, framing)?,
                )),
            };
        let producer = KafkaProducer::new(options, true)?;
        Ok(KafkaSink {
            producer,
            topic: topic.to_owned(),
            encoder,
            key,
            payloads: Vec::new(),
            keys: Vec::new(),
            rows: Vec::new(),
        })
    }

    /// The topic this sink writes to.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Queues one message per row of `batch`, in row order, and returns how many. Fails with
    /// [`Error::BatchSchema`] when the batch's columns are not of the sink's input schema or a
    /// row cannot be encoded (naming the row and column; nothing of the batch is queued then),
    /// and with [`Error::Kafka`] when librdkafka refuses a message (messages of the batch before
    /// it stay queued). Blocks while librdkafka's local queue is full.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<usize> {
        self.encode(batch)?;
        for (payload, key) in &self.rows {
            let key = key.clone().map(|range| &self.keys[range]);
            self.producer
                .send(&self.topic, key, &self.payloads[payload.clone()], &[])?;
        }
        Ok(self.rows.len())
    }

    /// Waits up to `timeout` until every queued message is delivered; fails when one is still
    /// pending or any message since the sink was created was not delivered (see
    /// [`KafkaProducer::flush`]).
    pub fn flush(&self, timeout: Duration) -> Result<()> {
        self.producer.flush(timeout)
    }

    /// How many messages the brokers acknowledged so far (as of the last `write` or `flush`).
    pub fn delivered(&self) -> u64 {
        self.producer.delivered()
    }

    /// Encodes every row's payload and key into the sink's buffers.
    fn encode(&mut self, batch: &RecordBatch) -> Result<()> {
        self.payloads.clear();
        self.keys.clear();
        self.rows.clear();
        let keys = match &self.key {
            Some(key) => Some(KeyReader::new(batch, key)?),
            None => None,
        };
        for row in 0..batch.num_rows() {
            let start = self.payloads.len();
            self.encoder
                .encode_row(batch, row, &mut self.payloads)
                .map_err(|e| self.name_topic(e))?;
            let payload = start..self.payloads.len();
            let key = match &keys {
                Some(reader) => {
                    let start = self.keys.len();
                    let written = reader.write(row, &mut self.keys);
                    written.then_some(start..self.keys.len())
                }
                None => None,
            };
            self.rows.push((payload, key));
        }
        Ok(())
    }

    /// `error` from an encoder, naming the sink's topic.
    fn name_topic(&self, error: Error) -> Error {
        match error {
            Error::BatchSchema { path, detail } => Error::BatchSchema {
                path: PathBuf::from(format!("Kafka topic {} ({})", self.topic, path.display())),
                detail,
            },
            other => other,
        }
    }
}

/// The key column `name` of `schema`, or why it cannot be one.
fn key_of(schema: &Schema, name: &str) -> Result<KeyColumn> {
    let invalid = |reason: String| Error::InvalidOption {
        option: "KafkaSink key_column",
        reason,
    };
    let index = schema.index_of(name).map_err(|_| {
        let columns: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        invalid(format!(
            "column {name:?} is not in the input schema (columns: {}); name an existing column \
             or write without a key",
            columns.join(", ")
        ))
    })?;
    let data_type = schema.field(index).data_type().clone();
    if !(is_key_string(&data_type) || data_type.is_integer()) {
        return Err(invalid(format!(
            "column {name:?} is {data_type}; a key column must be a string, binary or integer \
             column: cast it upstream"
        )));
    }
    Ok(KeyColumn {
        index,
        name: name.to_owned(),
        data_type,
    })
}

fn is_key_string(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Binary
            | DataType::LargeBinary
    )
}

/// Writes an integer column's values as decimal text.
trait DecimalKeys {
    /// Appends row `row`'s value to `out`; `false` (nothing written) for a null.
    fn write_decimal(&self, row: usize, out: &mut Vec<u8>) -> bool;
}

impl<T: ArrowPrimitiveType> DecimalKeys for PrimitiveArray<T>
where
    T::Native: Display,
{
    fn write_decimal(&self, row: usize, out: &mut Vec<u8>) -> bool {
        if self.is_null(row) {
            return false;
        }
        // Writing to a Vec cannot fail.
        let _ = write!(out, "{}", self.value(row));
        true
    }
}

/// The key column of one batch, downcast once.
enum KeyReader<'a> {
    Utf8(&'a StringArray),
    LargeUtf8(&'a LargeStringArray),
    Utf8View(&'a StringViewArray),
    Binary(&'a BinaryArray),
    LargeBinary(&'a LargeBinaryArray),
    Integer(&'a dyn DecimalKeys),
}

impl<'a> KeyReader<'a> {
    fn new(batch: &'a RecordBatch, key: &KeyColumn) -> Result<Self> {
        let mismatch = |found: &DataType| Error::BatchSchema {
            path: PathBuf::from("Kafka sink"),
            detail: format!(
                "key column {:?} (column {}) is {found}, the sink was built for {}",
                key.name, key.index, key.data_type
            ),
        };
        let Some(array) = batch.columns().get(key.index) else {
            return Err(Error::BatchSchema {
                path: PathBuf::from("Kafka sink"),
                detail: format!(
                    "the batch has {} columns, so no key column {:?} (column {})",
                    batch.num_columns(),
                    key.name,
                    key.index
                ),
            });
        };
        let array = array.as_ref();
        if array.data_type() != &key.data_type {
            return Err(mismatch(array.data_type()));
        }
        let reader = match array.data_type() {
            DataType::Utf8 => array.as_string_opt().map(KeyReader::Utf8),
            DataType::LargeUtf8 => array.as_string_opt().map(KeyReader::LargeUtf8),
            DataType::Utf8View => array.as_string_view_opt().map(KeyReader::Utf8View),
            DataType::Binary => array.as_binary_opt().map(KeyReader::Binary),
            DataType::LargeBinary => array.as_binary_opt().map(KeyReader::LargeBinary),
            DataType::Int8 => integers::<Int8Type>(array),
            DataType::Int16 => integers::<Int16Type>(array),
            DataType::Int32 => integers::<Int32Type>(array),
            DataType::Int64 => integers::<Int64Type>(array),
            DataType::UInt8 => integers::<UInt8Type>(array),
            DataType::UInt16 => integers::<UInt16Type>(array),
            DataType::UInt32 => integers::<UInt32Type>(array),
            DataType::UInt64 => integers::<UInt64Type>(array),
            _ => None,
        };
        reader.ok_or_else(|| mismatch(array.data_type()))
    }

    /// Appends row `row`'s key to `out`; `false` (nothing written) for a null.
    #[inline]
    fn write(&self, row: usize, out: &mut Vec<u8>) -> bool {
        let valid = match self {
            KeyReader::Utf8(a) => a.is_valid(row),
            KeyReader::LargeUtf8(a) => a.is_valid(row),
            KeyReader::Utf8View(a) => a.is_valid(row),
            KeyReader::Binary(a) => a.is_valid(row),
            KeyReader::LargeBinary(a) => a.is_valid(row),
            KeyReader::Integer(a) => return a.write_decimal(row, out),
        };
        if !valid {
            return false;
        }
        match self {
            KeyReader::Utf8(a) => out.extend_from_slice(a.value(row).as_bytes()),
            KeyReader::LargeUtf8(a) => out.extend_from_slice(a.value(row).as_bytes()),
            KeyReader::Utf8View(a) => out.extend_from_slice(a.value(row).as_bytes()),
            KeyReader::Binary(a) => out.extend_from_slice(a.value(row)),
            KeyReader::LargeBinary(a) => out.extend_from_slice(a.value(row)),
            KeyReader::Integer(_) => {}
        }
        true
    }
}

/// An integer column as a key reader.
fn integers<T: ArrowPrimitiveType>(array: &dyn Array) -> Option<KeyReader<'_>>
where
    T::Native: Display,
{
    array
        .as_primitive_opt::<T>()
        .map(|a| KeyReader::Integer(a as &dyn DecimalKeys))
}
