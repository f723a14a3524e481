//! Avro schemas: parsing them, and mapping a flat record schema onto Arrow columns.

use std::path::Path;
use std::sync::Arc;

use apache_avro::Schema as AvroSchema;
use apache_avro::schema::{RecordSchema, UnionSchema};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::json::columns::Kind;
use crate::{Error, Result};

/// Parses an Avro schema from its JSON text. Fails with [`Error::InvalidOption`] saying what the
/// Avro parser rejected.
pub fn parse_schema(text: &str) -> Result<AvroSchema> {
    AvroSchema::parse_str(text).map_err(|e| Error::InvalidOption {
        option: "Avro schema",
        reason: format!("cannot parse the Avro schema: {e}; fix the schema's JSON"),
    })
}

/// Reads and parses an Avro schema file (`.avsc`). Fails with [`Error::Io`] when the file cannot
/// be read, and [`Error::InvalidOption`] naming the file when it does not parse.
pub fn load_schema(path: &Path) -> Result<AvroSchema> {
    let text =
        std::fs::read_to_string(path).map_err(|e| Error::io(path, "read Avro schema file", e))?;
    AvroSchema::parse_str(&text).map_err(|e| Error::InvalidOption {
        option: "Avro schema file",
        reason: format!(
            "cannot parse the Avro schema in `{}`: {e}; fix the schema's JSON",
            path.display()
        ),
    })
}

/// The Arrow schema of records of a flat Avro record schema: one field per Avro field, in order.
///
/// boolean → Boolean, int → Int32, long → Int64, float → Float32, double → Float64, string →
/// Utf8, bytes → Binary, enum → Utf8 (the symbol), date → Date32, timestamp-millis / -micros /
/// -nanos → Timestamp(ms / µs / ns, "UTC"), local-timestamp-millis / -micros / -nanos →
/// Timestamp(ms / µs / ns) without a time zone; `["null", T]` and `[T, "null"]` → a nullable T
/// (other fields are not nullable). Anything else (nested records, arrays, maps, fixed, other
/// unions, decimals, ...) fails with [`Error::InvalidOption`] naming the field.
pub fn arrow_schema(avro: &AvroSchema) -> Result<SchemaRef> {
    let fields: Vec<Field> = plan(avro)?
        .iter()
        .map(|f| Field::new(&f.name, f.ty.data_type(), f.null_index.is_some()))
        .collect();
    Ok(Arc::new(Schema::new(fields)))
}

/// The Avro types a field can have (under its optional null union).
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum AvroType {
    Boolean,
    Int,
    Long,
    Float,
    Double,
    String,
    Bytes,
    /// The symbols, in index order.
    Enum(Vec<String>),
    Date,
    /// A long counting `unit`s since the Unix epoch; `utc` for timestamp-*, not for
    /// local-timestamp-*.
    Timestamp {
        unit: TimeUnit,
        utc: bool,
    },
}

impl AvroType {
    /// The Arrow type the decoder builds.
    pub(crate) fn data_type(&self) -> DataType {
        match self {
            AvroType::Boolean => DataType::Boolean,
            AvroType::Int => DataType::Int32,
            AvroType::Long => DataType::Int64,
            AvroType::Float => DataType::Float32,
            AvroType::Double => DataType::Float64,
            AvroType::String | AvroType::Enum(_) => DataType::Utf8,
            AvroType::Bytes => DataType::Binary,
            AvroType::Date => DataType::Date32,
            AvroType::Timestamp { unit, utc } => {
                DataType::Timestamp(*unit, utc.then(|| Arc::from("UTC")))
            }
        }
    }

    /// Whether the encoder can write an Arrow column of `kind` as this type.
    pub(crate) fn accepts(&self, kind: Kind) -> bool {
        use Kind::*;
        match self {
            AvroType::Boolean => kind == Boolean,
            AvroType::Int => matches!(kind, Int8 | Int16 | Int32 | UInt8 | UInt16),
            AvroType::Long => matches!(
                kind,
                Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 | UInt64
            ),
            AvroType::Float => kind == Float32,
            AvroType::Double => matches!(kind, Float32 | Float64),
            AvroType::String | AvroType::Enum(_) => matches!(kind, Utf8 | LargeUtf8 | Utf8View),
            AvroType::Bytes => matches!(kind, Binary | Utf8 | LargeUtf8 | Utf8View),
            AvroType::Date => kind == Date32,
            AvroType::Timestamp { .. } => matches!(kind, Timestamp(_)),
        }
    }

    /// The type's name in Avro terms, for messages.
    pub(crate) fn avro_name(&self) -> &'static str {
        match self {
            AvroType::Boolean => "boolean",
            AvroType::Int => "int",
            AvroType::Long => "long",
            AvroType::Float => "float",
            AvroType::Double => "double",
            AvroType::String => "string",
            AvroType::Bytes => "bytes",
            AvroType::Enum(_) => "enum",
            AvroType::Date => "int (date)",
            AvroType::Timestamp { .. } => "long (timestamp)",
        }
    }
}

/// One field of the top-level record, as the codecs read and write it.
#[derive(Clone, Debug)]
pub(crate) struct AvroField {
    pub(crate) name: String,
    pub(crate) ty: AvroType,
    /// For `["null", T]` (0) and `[T, "null"]` (1): the union index of null; the value's is the
    /// other one.
    pub(crate) null_index: Option<i64>,
}

/// The fields of a flat record schema, or an error naming the first field that is not flat.
pub(crate) fn plan(avro: &AvroSchema) -> Result<Vec<AvroField>> {
    let AvroSchema::Record(RecordSchema { fields, .. }) = avro else {
        return Err(unsupported(format!(
            "the top-level Avro schema must be a record, found {}",
            type_name(avro)
        )));
    };
    // Named enums defined by earlier fields, which later fields may refer to by name.
    let mut enums: Vec<(String, Vec<String>)> = Vec::new();
    let mut planned = Vec::with_capacity(fields.len());
    for field in fields {
        let (schema, null_index) = match &field.schema {
            AvroSchema::Union(union) => nullable(union).ok_or_else(|| {
                unsupported(format!(
                    "field {:?}: Avro type {} is not supported; only [\"null\", T] and \
                     [T, \"null\"] unions are: flatten it upstream",
                    field.name,
                    type_name(&field.schema)
                ))
            })?,
            other => (other, None),
        };
        let ty = match avro_type(schema, &enums) {
            Some(ty) => ty,
            None => {
                return Err(unsupported(format!(
                    "field {:?}: Avro type {} is not supported; flatten it upstream",
                    field.name,
                    type_name(schema)
                )));
            }
        };
        if let (AvroSchema::Enum(e), AvroType::Enum(symbols)) = (schema, &ty) {
            enums.push((e.name.fullname(None), symbols.clone()));
        }
        planned.push(AvroField {
            name: field.name.clone(),
            ty,
            null_index,
        });
    }
    Ok(planned)
}

fn unsupported(reason: String) -> Error {
    Error::InvalidOption {
        option: "Avro schema",
        reason,
    }
}

/// `["null", T]` → (T, Some(0)), `[T, "null"]` → (T, Some(1)); other unions → `None`.
fn nullable(union: &UnionSchema) -> Option<(&AvroSchema, Option<i64>)> {
    match union.variants() {
        [AvroSchema::Null, value] if !matches!(value, AvroSchema::Null) => Some((value, Some(0))),
        [value, AvroSchema::Null] if !matches!(value, AvroSchema::Null) => Some((value, Some(1))),
        _ => None,
    }
}

fn avro_type(schema: &AvroSchema, enums: &[(String, Vec<String>)]) -> Option<AvroType> {
    Some(match schema {
        AvroSchema::Boolean => AvroType::Boolean,
        AvroSchema::Int => AvroType::Int,
        AvroSchema::Long => AvroType::Long,
        AvroSchema::Float => AvroType::Float,
        AvroSchema::Double => AvroType::Double,
        AvroSchema::String => AvroType::String,
        AvroSchema::Bytes => AvroType::Bytes,
        AvroSchema::Enum(e) => AvroType::Enum(e.symbols.clone()),
        AvroSchema::Ref { name } => {
            let full = name.fullname(None);
            let (_, symbols) = enums.iter().find(|(n, _)| *n == full)?;
            AvroType::Enum(symbols.clone())
        }
        AvroSchema::Date => AvroType::Date,
        AvroSchema::TimestampMillis => timestamp(TimeUnit::Millisecond, true),
        AvroSchema::TimestampMicros => timestamp(TimeUnit::Microsecond, true),
        AvroSchema::TimestampNanos => timestamp(TimeUnit::Nanosecond, true),
        AvroSchema::LocalTimestampMillis => timestamp(TimeUnit::Millisecond, false),
        AvroSchema::LocalTimestampMicros => timestamp(TimeUnit::Microsecond, false),
        AvroSchema::LocalTimestampNanos => timestamp(TimeUnit::Nanosecond, false),
        _ => return None,
    })
}

fn timestamp(unit: TimeUnit, utc: bool) -> AvroType {
    AvroType::Timestamp { unit, utc }
}

/// A schema's type as a message names it: "array", "record", "union [int, string]", ...
fn type_name(schema: &AvroSchema) -> String {
    match schema {
        AvroSchema::Null => "null".into(),
        AvroSchema::Boolean => "boolean".into(),
        AvroSchema::Int => "int".into(),
        AvroSchema::Long => "long".into(),
        AvroSchema::Float => "float".into(),
        AvroSchema::Double => "double".into(),
        AvroSchema::Bytes => "bytes".into(),
        AvroSchema::String => "string".into(),
        AvroSchema::Array(_) => "array".into(),
        AvroSchema::Map(_) => "map".into(),
        AvroSchema::Union(union) => {
            let variants: Vec<String> = union.variants().iter().map(type_name).collect();
            format!("union [{}]", variants.join(", "))
        }
        AvroSchema::Record(r) => format!("record {}", r.name.fullname(None)),
        AvroSchema::Enum(e) => format!("enum {}", e.name.fullname(None)),
        AvroSchema::Fixed(f) => format!("fixed {}", f.name.fullname(None)),
        AvroSchema::Decimal(_) => "decimal".into(),
        AvroSchema::BigDecimal => "big-decimal".into(),
        AvroSchema::Uuid => "uuid".into(),
        AvroSchema::Date => "date".into(),
        AvroSchema::TimeMillis => "time-millis".into(),
        AvroSchema::TimeMicros => "time-micros".into(),
        AvroSchema::TimestampMillis => "timestamp-millis".into(),
        AvroSchema::TimestampMicros => "timestamp-micros".into(),
        AvroSchema::TimestampNanos => "timestamp-nanos".into(),
        AvroSchema::LocalTimestampMillis => "local-timestamp-millis".into(),
        AvroSchema::LocalTimestampMicros => "local-timestamp-micros".into(),
        AvroSchema::LocalTimestampNanos => "local-timestamp-nanos".into(),
        AvroSchema::Duration => "duration".into(),
        AvroSchema::Ref { name } => format!("named type {}", name.fullname(None)),
    }
}
