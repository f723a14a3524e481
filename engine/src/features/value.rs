//! One cell of a feature row: the values keys, table columns, event columns and aggregates take.
//!
//! Differential dataflow keeps its collections sorted and hashed, so a value needs a total order
//! and a hash that agree with equality: floats compare with [`f64::total_cmp`] and hash their bits
//! (`-0.0` and `0.0` are two values, as are two NaNs with different payloads).

use std::cmp::Ordering;
use std::hash::{Hash, Hasher};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{
    DataType, Date32Type, Date64Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type,
    Int64Type, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// A scalar cell. Integers of every width, timestamps (in their unit) and dates become
/// [`Value::Int`], floats [`Value::Float`], strings (`Utf8`, `LargeUtf8`, `Utf8View`) [`Value::Str`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Value {
    /// No value (a null cell, a key without a table row, an aggregate over no values).
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer of any width.
    Int(i64),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
    /// Bytes (a Kafka record key).
    Bytes(Vec<u8>),
}

impl Value {
    fn rank(&self) -> u8 {
        match self {
            Value::Null => 0,
            Value::Bool(_) => 1,
            Value::Int(_) => 2,
            Value::Float(_) => 3,
            Value::Str(_) => 4,
            Value::Bytes(_) => 5,
        }
    }

    /// The value as a number, for sums and means (`None` for nulls, booleans and strings).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            _ => None,
        }
    }

    /// True for [`Value::Null`].
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The cell of `column` at `row`, or an error naming the column when its type has no value here.
    pub fn from_array(column: &dyn Array, row: usize) -> Result<Value> {
        if column.is_null(row) {
            return Ok(Value::Null);
        }
        let int = |v: i64| Ok(Value::Int(v));
        match column.data_type() {
            DataType::Boolean => Ok(Value::Bool(column.as_boolean().value(row))),
            DataType::Int8 => int(column.as_primitive::<Int8Type>().value(row).into()),
            DataType::Int16 => int(column.as_primitive::<Int16Type>().value(row).into()),
            DataType::Int32 => int(column.as_primitive::<Int32Type>().value(row).into()),
            DataType::Int64 => int(column.as_primitive::<Int64Type>().value(row)),
            DataType::UInt8 => int(column.as_primitive::<UInt8Type>().value(row).into()),
            DataType::UInt16 => int(column.as_primitive::<UInt16Type>().value(row).into()),
            DataType::UInt32 => int(column.as_primitive::<UInt32Type>().value(row).into()),
            DataType::UInt64 => {
                let v = column.as_primitive::<UInt64Type>().value(row);
                i64::try_from(v).map(Value::Int).map_err(|_| {
                    Error::Features(format!("the UInt64 value {v} does not fit a feature value"))
                })
            }
            DataType::Float32 => Ok(Value::Float(
                column.as_primitive::<Float32Type>().value(row).into(),
            )),
            DataType::Float64 => Ok(Value::Float(
                column.as_primitive::<Float64Type>().value(row),
            )),
            DataType::Timestamp(unit, _) => int(timestamp(column, *unit, row)),
            DataType::Date32 => int(column.as_primitive::<Date32Type>().value(row).into()),
            DataType::Date64 => int(column.as_primitive::<Date64Type>().value(row)),
            DataType::Utf8 => Ok(Value::Str(column.as_string::<i32>().value(row).to_string())),
            DataType::LargeUtf8 => Ok(Value::Str(column.as_string::<i64>().value(row).to_string())),
            DataType::Utf8View => Ok(Value::Str(column.as_string_view().value(row).to_string())),
            other => Err(Error::Features(format!(
                "a feature value cannot be of type {other}: use integers, floats, booleans or strings"
            ))),
        }
    }

    /// Every row of the named `columns` of `batch`, as values.
    pub fn rows(batch: &RecordBatch, columns: &[String]) -> Result<Vec<Vec<Value>>> {
        let arrays = columns
            .iter()
            .map(|name| {
                batch.column_by_name(name).ok_or_else(|| {
                    let have: Vec<_> = batch
                        .schema()
                        .fields()
                        .iter()
                        .map(|f| f.name().clone())
                        .collect();
                    Error::Features(format!(
                        "no column `{name}` in the input (it has {})",
                        crate::list(&have)
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        (0..batch.num_rows())
            .map(|row| {
                arrays
                    .iter()
                    .zip(columns)
                    .map(|(array, name)| {
                        Value::from_array(array.as_ref(), row)
                            .map_err(|e| Error::Features(format!("column `{name}`: {e}")))
                    })
                    .collect()
            })
            .collect()
    }
}

/// The raw value of a timestamp cell, in the column's unit.
fn timestamp(column: &dyn Array, unit: TimeUnit, row: usize) -> i64 {
    match unit {
        TimeUnit::Second => column.as_primitive::<TimestampSecondType>().value(row),
        TimeUnit::Millisecond => column.as_primitive::<TimestampMillisecondType>().value(row),
        TimeUnit::Microsecond => column.as_primitive::<TimestampMicrosecondType>().value(row),
        TimeUnit::Nanosecond => column.as_primitive::<TimestampNanosecondType>().value(row),
    }
}

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Value {}

impl PartialOrd for Value {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Value {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Value::Bool(a), Value::Bool(b)) => a.cmp(b),
            (Value::Int(a), Value::Int(b)) => a.cmp(b),
            (Value::Float(a), Value::Float(b)) => a.total_cmp(b),
            (Value::Str(a), Value::Str(b)) => a.cmp(b),
            (Value::Bytes(a), Value::Bytes(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl Hash for Value {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.rank().hash(state);
        match self {
            Value::Null => {}
            Value::Bool(b) => b.hash(state),
            Value::Int(i) => i.hash(state),
            Value::Float(f) => f.to_bits().hash(state),
            Value::Str(s) => s.hash(state),
            Value::Bytes(b) => b.hash(state),
        }
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Str(v.to_string())
    }
}
