//! [`AvroRowEncoder`]: the rows of a batch as Avro binary records, one message each.

use std::path::PathBuf;

use apache_avro::Schema as AvroSchema;
use arrow::datatypes::{Schema, TimeUnit};
use arrow::record_batch::RecordBatch;

use super::AvroFraming;
use super::binary::{write_bytes, write_long};
use super::schema::{AvroField, AvroType, plan};
use crate::json::cells::{Cell, ColumnReader};
use crate::json::columns::Kind;
use crate::{Error, Result};

/// What the encoder's errors name as the "file" of [`Error::BatchSchema`].
const ENCODER: &str = "Avro row encoder";

/// Writes rows of batches as Avro binary records of a flat record schema, one message per row,
/// raw or with the Confluent header (magic byte 0, then the 4-byte big-endian schema id: 0 unless
/// set with [`AvroRowEncoder::with_schema_id`]).
///
/// Each Avro field is written from the Arrow column of the same name (Arrow columns the Avro
/// schema does not name are ignored). Allowed pairs: boolean ← Boolean; int ← Int8/16/32,
/// UInt8/16; long ← any integer (UInt64 values must fit); float ← Float32; double ← Float32/64;
/// string ← Utf8/LargeUtf8/Utf8View; bytes ← Binary or a string column; enum ← a string column
/// whose values are symbols; date ← Date32; timestamp-* and local-timestamp-* ← Timestamp of any
/// unit (converted; a finer unit is truncated toward −∞). A null goes to the null branch of a
/// nullable union; a null for a field that is not nullable is an error for that row.
#[derive(Debug, Clone)]
pub struct AvroRowEncoder {
    avro: AvroSchema,
    framing: AvroFraming,
    schema_id: u32,
    /// The Avro fields and, for each, the index of its Arrow column.
    fields: Vec<(AvroField, usize)>,
    /// The Arrow schema's column names and kinds (`None`: a type the codecs do not support, which
    /// no Avro field uses).
    names: Vec<String>,
    kinds: Vec<Option<Kind>>,
}

impl AvroRowEncoder {
    /// An encoder writing batches of `arrow` as records of `avro` (a flat record schema). Fails
    /// with [`Error::InvalidOption`] naming the first Avro field that is not flat, not in `arrow`,
    /// or of a type its Arrow column cannot be written as.
    pub fn new(avro: AvroSchema, arrow: &Schema, framing: AvroFraming) -> Result<Self> {
        let names: Vec<String> = arrow.fields().iter().map(|f| f.name().clone()).collect();
        let kinds: Vec<Option<Kind>> = arrow
            .fields()
            .iter()
            .map(|f| Kind::of(f.data_type()))
            .collect();
        let mut fields = Vec::new();
        for field in plan(&avro)? {
            let Ok(index) = arrow.index_of(&field.name) else {
                return Err(mismatch(format!(
                    "field {:?} of the Avro schema is not a column of the Arrow schema \
                     (columns: {}); add or rename the column",
                    field.name,
                    names.join(", ")
                )));
            };
            let data_type = arrow.field(index).data_type();
            if !kinds[index].is_some_and(|kind| field.ty.accepts(kind)) {
                return Err(mismatch(format!(
                    "field {:?}: the Avro type is {} but the Arrow column is {data_type}; cast \
                     the column or change the Avro schema",
                    field.name,
                    field.ty.avro_name()
                )));
            }
            fields.push((field, index));
        }
        Ok(AvroRowEncoder {
            avro,
            framing,
            schema_id: 0,
            fields,
            names,
            kinds,
        })
    }

    /// Sets the schema id written in the Confluent header (ignored for [`AvroFraming::Raw`]).
    pub fn with_schema_id(mut self, id: u32) -> Self {
        self.schema_id = id;
        self
    }

    /// The Avro schema the records are written with.
    pub fn avro_schema(&self) -> &AvroSchema {
        &self.avro
    }

    /// Appends row `row` of `batch` to `out` as one message (header included). Fails with
    /// [`Error::BatchSchema`] when the batch does not have the Arrow schema's column types, `row`
    /// is out of bounds, or a value cannot be written (a null for a field that is not nullable, a
    /// string that is not an enum symbol, a UInt64 above `i64::MAX`); `out` is then as it was.
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

    /// Every row of `batch` as one message each; see [`AvroRowEncoder::encode_row`].
    pub fn encode_batch(&self, batch: &RecordBatch) -> Result<Vec<Vec<u8>>> {
        let readers = self.readers(batch)?;
        (0..batch.num_rows())
            .map(|row| {
                let mut out = Vec::with_capacity(8 * self.fields.len() + 5);
                self.write_row(&readers, row, &mut out)?;
                Ok(out)
            })
            .collect()
    }

    fn readers<'a>(&self, batch: &'a RecordBatch) -> Result<Vec<ColumnReader<'a>>> {
        let mismatch = |detail: String| Error::BatchSchema {
            path: PathBuf::from(ENCODER),
            detail,
        };
        if batch.num_columns() != self.kinds.len() {
            return Err(mismatch(format!(
                "the batch has {} columns, the encoder's Arrow schema {}",
                batch.num_columns(),
                self.kinds.len()
            )));
        }
        // Only the columns the Avro schema uses must be of a supported type (checked in `new`).
        self.fields
            .iter()
            .map(|(_, index)| {
                let array = batch.column(*index);
                let name = &self.names[*index];
                let kind = Kind::of(array.data_type());
                match (kind, self.kinds[*index]) {
                    (Some(kind), Some(expected)) if kind == expected => {}
                    (_, expected) => {
                        let expected =
                            expected.map_or("another type".to_owned(), |k| k.to_string());
                        return Err(mismatch(format!(
                            "column {name:?} is {}, the encoder was built for {expected}",
                            array.data_type()
                        )));
                    }
                }
                ColumnReader::new(array.as_ref())
                    .ok_or_else(|| mismatch(format!("column {name:?} has an unsupported type")))
            })
            .collect()
    }

    fn write_row(&self, readers: &[ColumnReader<'_>], row: usize, out: &mut Vec<u8>) -> Result<()> {
        if self.framing == AvroFraming::Confluent {
            out.push(0);
            out.extend_from_slice(&self.schema_id.to_be_bytes());
        }
        for ((field, _), reader) in self.fields.iter().zip(readers) {
            write_field(field, reader.get(row), out).map_err(|why| Error::BatchSchema {
                path: PathBuf::from(ENCODER),
                detail: format!("row {row}, column {:?}: {why}", field.name),
            })?;
        }
        Ok(())
    }
}

fn mismatch(reason: String) -> Error {
    Error::InvalidOption {
        option: "Avro schema",
        reason,
    }
}

fn write_field(
    field: &AvroField,
    cell: Cell<'_>,
    out: &mut Vec<u8>,
) -> std::result::Result<(), String> {
    match (field.null_index, cell) {
        (Some(null_index), Cell::Null) => {
            write_long(null_index, out);
            return Ok(());
        }
        (None, Cell::Null) => return Err("null, but the Avro field is not nullable".into()),
        (Some(null_index), _) => write_long(1 - null_index, out),
        (None, _) => {}
    }
    match (&field.ty, cell) {
        (AvroType::Boolean, Cell::Bool(v)) => out.push(u8::from(v)),
        (AvroType::Int | AvroType::Long, Cell::Int(v)) => write_long(v, out),
        (AvroType::Int | AvroType::Long, Cell::UInt(v)) => {
            let v = i64::try_from(v).map_err(|_| format!("{v} does not fit an Avro long"))?;
            write_long(v, out);
        }
        (AvroType::Float, Cell::F32(v)) => out.extend_from_slice(&v.to_le_bytes()),
        (AvroType::Double, Cell::F32(v)) => out.extend_from_slice(&f64::from(v).to_le_bytes()),
        (AvroType::Double, Cell::F64(v)) => out.extend_from_slice(&v.to_le_bytes()),
        (AvroType::String | AvroType::Bytes, Cell::Str(v)) => write_bytes(v.as_bytes(), out),
        (AvroType::Bytes, Cell::Bytes(v)) => write_bytes(v, out),
        (AvroType::Enum(symbols), Cell::Str(v)) => {
            let index = symbols.iter().position(|s| s == v).ok_or_else(|| {
                format!(
                    "{v:?} is not a symbol of the Avro enum ({})",
                    symbols.join(", ")
                )
            })?;
            write_long(index as i64, out);
        }
        (AvroType::Date, Cell::Date32(v)) => write_long(v.into(), out),
        (AvroType::Timestamp { unit, .. }, Cell::Timestamp(v, from)) => {
            let v = convert(v, from, *unit)
                .ok_or_else(|| format!("{v} {from:?}s do not fit an Avro long in {unit:?}s"))?;
            write_long(v, out);
        }
        (ty, cell) => {
            return Err(format!(
                "cannot write {cell:?} as Avro {} (a bug: the schemas were checked)",
                ty.avro_name()
            ));
        }
    }
    Ok(())
}

/// `value` in `from` units as `to` units (finer: exact or `None` on overflow; coarser: truncated
/// toward −∞).
fn convert(value: i64, from: TimeUnit, to: TimeUnit) -> Option<i64> {
    fn exponent(unit: TimeUnit) -> u32 {
        match unit {
            TimeUnit::Second => 0,
            TimeUnit::Millisecond => 3,
            TimeUnit::Microsecond => 6,
            TimeUnit::Nanosecond => 9,
        }
    }
    let (from, to) = (exponent(from), exponent(to));
    if to >= from {
        value.checked_mul(10_i64.pow(to - from))
    } else {
        Some(value.div_euclid(10_i64.pow(from - to)))
    }
}
