//! Column types in `schema` tables (`[stream] schema`, `[features.table] schema`):
//! `"float32"`, `"string?"` (nullable), `"list<float32>"`, parsed with the file so that an unknown
//! type is an error with its line and column.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, TimeUnit};

use super::written::{Setting, Written};
use crate::{Error, Result};

/// The type names a schema accepts, for error messages.
const TYPE_NAMES: &str = "float32, float64, int8…int64, uint8…uint64, bool, string, binary, timestamp, timestamp_us, date, or list<one of those>, e.g. list<float32>; end with ? for a nullable column";

/// A column's declared Arrow type and whether it may be null (`?` at the end).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Declared {
    data_type: DataType,
    nullable: bool,
}

/// A column type as written in a `schema` table.
pub type ColumnType = Written<Declared>;

impl Setting for Declared {
    fn parse_setting(text: &str) -> Result<Self> {
        let (name, nullable) = match text.trim().strip_suffix('?') {
            Some(t) => (t, true),
            None => (text.trim(), false),
        };
        let data_type = parse_type(name).ok_or_else(|| {
            Error::config("schema", format!("unknown type '{name}'; use {TYPE_NAMES}"))
        })?;
        Ok(Declared {
            data_type,
            nullable,
        })
    }
}

impl Written<Declared> {
    /// The Arrow type.
    pub fn data_type(&self) -> &DataType {
        &self.value().data_type
    }

    /// Whether the type was written with a `?`.
    pub fn nullable(&self) -> bool {
        self.value().nullable
    }
}

/// The Arrow type of a `[stream] schema` type name; `None` when unknown. `list<T>` is a list of
/// `T` (any type name but a list) whose elements may be null, e.g. `list<float32>`.
pub fn parse_type(name: &str) -> Option<DataType> {
    let name = name.trim().to_ascii_lowercase();
    if let Some(item) = name.strip_prefix("list<").and_then(|r| r.strip_suffix('>')) {
        let item = parse_type(item)?;
        if matches!(item, DataType::List(_)) {
            return None;
        }
        return Some(DataType::List(Arc::new(Field::new("item", item, true))));
    }
    Some(match name.as_str() {
        "float32" | "float" | "f32" => DataType::Float32,
        "float64" | "double" | "f64" => DataType::Float64,
        "int8" => DataType::Int8,
        "int16" => DataType::Int16,
        "int32" | "int" => DataType::Int32,
        "int64" | "long" => DataType::Int64,
        "uint8" => DataType::UInt8,
        "uint16" => DataType::UInt16,
        "uint32" => DataType::UInt32,
        "uint64" => DataType::UInt64,
        "bool" | "boolean" => DataType::Boolean,
        "string" | "utf8" => DataType::Utf8,
        "binary" | "bytes" => DataType::Binary,
        "timestamp" | "timestamp_ms" => {
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
        }
        "timestamp_us" => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        "date" => DataType::Date32,
        _ => return None,
    })
}
