//! [`JsonRowEncoder`]: the rows of a batch as JSON objects, one record each.

use std::path::PathBuf;

use arrow::array::{Array, ListArray};
use arrow::datatypes::{DataType, Schema, TimeUnit};
use arrow::record_batch::RecordBatch;
use chrono::{DateTime, Datelike, SecondsFormat, Utc};
use serde_json::ser::{CompactFormatter, Formatter};

use super::cells::{Cell, ColumnReader};
use super::columns::{Kind, SUPPORTED, days_to_date};
use crate::{Error, Result};

/// What the encoders' errors name as the "file" of [`Error::BatchSchema`].
const ENCODER: &str = "JSON row encoder";

/// Writes the rows of batches as JSON objects, one record per row, keys in schema order.
///
/// Values: numbers as JSON numbers (floats in their shortest form that reads back exactly; f32 as
/// f32's shortest form; NaN and ±infinity as `null`); strings as strings; Binary as a string (bytes
/// that are not UTF-8 replaced by U+FFFD); Timestamp as an RFC 3339 UTC string with `Z` and as many
/// fractional digits as the value needs (0, 3, 6 or 9); Date32 as `"YYYY-MM-DD"`; timestamps and
/// dates outside the years 0000–9999 as their integer value; nulls as `null`. What it writes,
/// [`super::JsonRowDecoder`] reads back to the same values.
///
/// ```
/// use std::sync::Arc;
/// use arrow::array::{Float32Array, StringArray};
/// use arrow::datatypes::{DataType, Field, Schema};
/// use arrow::record_batch::RecordBatch;
/// use millrace_connectors::json::JsonRowEncoder;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let schema = Arc::new(Schema::new(vec![
///     Field::new("x", DataType::Float32, true),
///     Field::new("label", DataType::Utf8, true),
/// ]));
/// let batch = RecordBatch::try_new(schema.clone(), vec![
///     Arc::new(Float32Array::from(vec![Some(0.1), None])),
///     Arc::new(StringArray::from(vec![Some("a\"b"), Some("c")])),
/// ])?;
/// let encoder = JsonRowEncoder::new(&schema)?;
/// let rows = encoder.encode_batch(&batch)?;
/// assert_eq!(rows[0], br#"{"x":0.1,"label":"a\"b"}"#);
/// assert_eq!(rows[1], br#"{"x":null,"label":"c"}"#);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct JsonRowEncoder {
    kinds: Vec<Shape>,
    names: Vec<String>,
    /// Per column: `{"name":` for the first, `,"name":` for the others.
    keys: Vec<Vec<u8>>,
}

impl JsonRowEncoder {
    /// An encoder for batches of `schema`. Fails with [`Error::InvalidOption`] naming each field
    /// whose type is not supported.
    pub fn new(schema: &Schema) -> Result<Self> {
        let mut kinds = Vec::with_capacity(schema.fields().len());
        let mut keys = Vec::with_capacity(schema.fields().len());
        let mut problems = Vec::new();
        for (i, field) in schema.fields().iter().enumerate() {
            match Shape::of(field.data_type()) {
                Some(shape) => kinds.push(shape),
                None => problems.push(format!(
                    "field {:?} has type {}, which JSON encoding does not support",
                    field.name(),
                    field.data_type()
                )),
            }
            let mut key = if i == 0 { b"{".to_vec() } else { b",".to_vec() };
            serde_json::to_writer(&mut key, field.name()).map_err(|e| {
                Error::Internal(format!("cannot write a JSON string to memory: {e}"))
            })?;
            key.push(b':');
            keys.push(key);
        }
        if !problems.is_empty() {
            return Err(Error::InvalidOption {
                option: "JsonRowEncoder schema",
                reason: format!(
                    "{}; supported types: {SUPPORTED}, and List of those; cast the column before the sink",
                    problems.join("; ")
                ),
            });
        }
        let names = schema.fields().iter().map(|f| f.name().clone()).collect();
        Ok(JsonRowEncoder { kinds, names, keys })
    }

    /// Appends row `row` of `batch` to `out` as one JSON object. Fails with
    /// [`Error::BatchSchema`] when the batch's columns are not of the encoder's schema's types or
    /// `row` is out of bounds; `out` is then as it was.
    pub fn encode_row(&self, batch: &RecordBatch, row: usize, out: &mut Vec<u8>) -> Result<()> {
        let readers = self.readers(batch)?;
        if row >= batch.num_rows() {
            return Err(Error::BatchSchema {
                path: PathBuf::from(ENCODER),
                detail: format!("row {row} asked of a batch of {} rows", batch.num_rows()),
            });
        }
        let start = out.len();
        self.write_row(&readers, row, out)
            .inspect_err(|_| out.truncate(start))
    }

    /// Every row of `batch` as one JSON object each; see [`JsonRowEncoder::encode_row`].
    pub fn encode_batch(&self, batch: &RecordBatch) -> Result<Vec<Vec<u8>>> {
        let readers = self.readers(batch)?;
        (0..batch.num_rows())
            .map(|row| {
                let mut out = Vec::with_capacity(16 * self.keys.len() + 2);
                self.write_row(&readers, row, &mut out)?;
                Ok(out)
            })
            .collect()
    }

    fn readers<'a>(&self, batch: &'a RecordBatch) -> Result<Vec<Reader<'a>>> {
        check_batch(batch, &self.names, &self.kinds, ENCODER)?;
        batch
            .columns()
            .iter()
            .zip(&self.names)
            .map(|(array, name)| {
                Reader::new(array.as_ref()).ok_or_else(|| Error::BatchSchema {
                    path: PathBuf::from(ENCODER),
                    detail: format!("column {name:?} has an unsupported type"),
                })
            })
            .collect()
    }

    fn write_row(&self, readers: &[Reader<'_>], row: usize, out: &mut Vec<u8>) -> Result<()> {
        for (key, reader) in self.keys.iter().zip(readers) {
            out.extend_from_slice(key);
            match reader {
                Reader::Value(cells) => write_cell(cells.get(row), out)?,
                Reader::List(list) => list.write(row, out)?,
            }
        }
        if self.keys.is_empty() {
            out.push(b'{');
        }
        out.push(b'}');
        Ok(())
    }
}

/// What a column holds: values of a kind, or lists of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    Value(Kind),
    List(Kind),
}

impl Shape {
    fn of(data_type: &DataType) -> Option<Shape> {
        match data_type {
            DataType::List(item) => Kind::of(item.data_type()).map(Shape::List),
            other => Kind::of(other).map(Shape::Value),
        }
    }
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Shape::Value(kind) => write!(f, "{kind}"),
            Shape::List(kind) => write!(f, "List({kind})"),
        }
    }
}

/// A typed view of one column: its cells, or its lists of cells (a JSON array per row).
enum Reader<'a> {
    Value(ColumnReader<'a>),
    List(ListReader<'a>),
}

struct ListReader<'a> {
    list: &'a ListArray,
    values: ColumnReader<'a>,
}

impl<'a> Reader<'a> {
    fn new(array: &'a dyn Array) -> Option<Self> {
        match array.as_any().downcast_ref::<ListArray>() {
            Some(list) => Some(Reader::List(ListReader {
                list,
                values: ColumnReader::new(list.values().as_ref())?,
            })),
            None => ColumnReader::new(array).map(Reader::Value),
        }
    }
}

impl ListReader<'_> {
    /// Row `row`'s list as a JSON array (null for a null list).
    fn write(&self, row: usize, out: &mut Vec<u8>) -> Result<()> {
        if self.list.is_null(row) {
            out.extend_from_slice(b"null");
            return Ok(());
        }
        let offsets = self.list.value_offsets();
        let (start, end) = (offsets[row] as usize, offsets[row + 1] as usize);
        out.push(b'[');
        for i in start..end {
            if i > start {
                out.push(b',');
            }
            write_cell(self.values.get(i), out)?;
        }
        out.push(b']');
        Ok(())
    }
}

/// Checks that `batch` has one column per name, of the expected kinds.
fn check_batch(
    batch: &RecordBatch,
    names: &[String],
    kinds: &[Shape],
    encoder: &str,
) -> Result<()> {
    if batch.num_columns() != kinds.len() {
        return Err(Error::BatchSchema {
            path: PathBuf::from(encoder),
            detail: format!(
                "the batch has {} columns, the encoder's schema {}",
                batch.num_columns(),
                kinds.len()
            ),
        });
    }
    for ((array, kind), name) in batch.columns().iter().zip(kinds).zip(names) {
        if Shape::of(array.data_type()) != Some(*kind) {
            return Err(Error::BatchSchema {
                path: PathBuf::from(encoder),
                detail: format!(
                    "column {name:?} is {}, the encoder was built for {kind}",
                    array.data_type()
                ),
            });
        }
    }
    Ok(())
}

fn write_cell(cell: Cell<'_>, out: &mut Vec<u8>) -> Result<()> {
    let mut f = CompactFormatter;
    let written = match cell {
        Cell::Null => f.write_null(out),
        Cell::Bool(v) => f.write_bool(out, v),
        Cell::Int(v) => f.write_i64(out, v),
        Cell::UInt(v) => f.write_u64(out, v),
        Cell::F32(v) if v.is_finite() => f.write_f32(out, v),
        Cell::F64(v) if v.is_finite() => f.write_f64(out, v),
        Cell::F32(_) | Cell::F64(_) => f.write_null(out),
        Cell::Str(v) => return write_str(v, out),
        Cell::Bytes(v) => return write_str(&String::from_utf8_lossy(v), out),
        Cell::Timestamp(v, unit) => match timestamp_text(v, unit) {
            Some(text) => return write_str(&text, out),
            None => f.write_i64(out, v),
        },
        Cell::Date32(v) => match days_to_date(v).filter(|d| (0..=9999).contains(&d.year())) {
            Some(date) => return write_str(&date.format("%Y-%m-%d").to_string(), out),
            None => f.write_i64(out, v.into()),
        },
    };
    written.map_err(|e| Error::Internal(format!("cannot write JSON to memory: {e}")))
}

fn write_str(text: &str, out: &mut Vec<u8>) -> Result<()> {
    serde_json::to_writer(out, text)
        .map_err(|e| Error::Internal(format!("cannot write a JSON string to memory: {e}")))
}

/// The RFC 3339 UTC text of a timestamp, `None` outside the years 0000–9999.
fn timestamp_text(value: i64, unit: TimeUnit) -> Option<String> {
    let instant = match unit {
        TimeUnit::Second => DateTime::<Utc>::from_timestamp(value, 0),
        TimeUnit::Millisecond => DateTime::<Utc>::from_timestamp_millis(value),
        TimeUnit::Microsecond => DateTime::<Utc>::from_timestamp_micros(value),
        TimeUnit::Nanosecond => Some(DateTime::<Utc>::from_timestamp_nanos(value)),
    }?;
    (0..=9999)
        .contains(&instant.year())
        .then(|| instant.to_rfc3339_opts(SecondsFormat::AutoSi, true))
}
