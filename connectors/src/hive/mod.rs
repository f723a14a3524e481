//! Hive-style partition directories (`region=eu/day=2024-01-01/part-….parquet`), named, parsed and
//! typed the way Spark does it, so datasets move between Spark and millrace unchanged.
//!
//! - Writing: [`format_value`] turns a row's partition value into text, [`partition_path`] escapes
//!   it into `key=value/…` ([`escape_path_name`]), nulls and empty strings becoming
//!   [`HIVE_DEFAULT_PARTITION`].
//! - Reading: [`parse_segment`] splits one directory name back into key and value
//!   ([`unescape_path_name`]), [`infer_type`] or [`parse_type_name`] pick the column's type, and
//!   [`constant_array`] materialises the value as a column of a batch read from that directory.

use std::iter::repeat_n;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, LargeStringArray, PrimitiveArray, StringArray,
    StringViewArray, new_null_array,
};
use arrow::datatypes::{
    ArrowPrimitiveType, ArrowTimestampType, DataType, Date32Type, Date64Type, Float32Type,
    Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, TimeUnit, TimestampMicrosecondType,
    TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType, UInt8Type, UInt16Type,
    UInt32Type, UInt64Type,
};
use arrow::temporal_conversions::{as_datetime, date32_to_datetime, date64_to_datetime};
use chrono::{Datelike, NaiveDate, NaiveDateTime, Timelike};

/// The directory value Hive and Spark write for a null (or empty string) partition value.
pub const HIVE_DEFAULT_PARTITION: &str = "__HIVE_DEFAULT_PARTITION__";

/// Days from 0001-01-01 (chrono's day 1) to 1970-01-01 (Arrow's day 0).
const DAYS_FROM_CE_TO_EPOCH: i32 = 719_163;

/// The characters Spark's `ExternalCatalogUtils.escapePathName` replaces by `%XX`.
fn needs_escape(c: char) -> bool {
    matches!(
        c,
        '\u{01}'
            ..='\u{1F}'
                | '"'
                | '#'
                | '%'
                | '\''
                | '*'
                | '/'
                | ':'
                | '='
                | '?'
                | '\\'
                | '\u{7F}'
                | '{'
                | '['
                | ']'
                | '^'
    )
}

/// Escapes a partition key or value for use in a directory name, like Spark's
/// `ExternalCatalogUtils.escapePathName`: the characters 0x01..=0x1F, `"`, `#`, `%`, `'`, `*`, `/`,
/// `:`, `=`, `?`, `\`, 0x7F, `{`, `[`, `]` and `^` become `%XX` (uppercase hex); everything else,
/// non-ASCII included, is kept.
pub fn escape_path_name(s: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if needs_escape(c) {
            // Every escaped character is ASCII, so it is one byte.
            let b = c as u32 as u8;
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0F)]));
        } else {
            out.push(c);
        }
    }
    out
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The byte a `%XX` at the start of `bytes` stands for, if it is one.
fn escaped_byte(bytes: &[u8]) -> Option<u8> {
    match bytes {
        [b'%', hi, lo, ..] => Some((hex_value(*hi)? << 4) | hex_value(*lo)?),
        _ => None,
    }
}

/// The inverse of [`escape_path_name`]: every `%XX` (hex digits of either case) is decoded; a `%`
/// not followed by two hex digits is kept as is.
///
/// Decoded bytes that form UTF-8 (`%C3%A9`, as URL encoders write `é`) become that character;
/// otherwise each `%XX` becomes the character with that code point, as Spark decodes it.
pub fn unescape_path_name(s: &str) -> String {
    if !s.contains('%') {
        return s.to_owned();
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(rest) = bytes.get(i..).filter(|r| !r.is_empty()) {
        match escaped_byte(rest) {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(rest[0]);
                i += 1;
            }
        }
    }
    match String::from_utf8(out) {
        Ok(decoded) => decoded,
        Err(_) => {
            // Not UTF-8 once decoded: one character per `%XX`, like Spark.
            let mut out = String::with_capacity(s.len());
            let mut i = 0;
            while let Some(rest) = s.get(i..).filter(|r| !r.is_empty()) {
                match escaped_byte(rest.as_bytes()) {
                    Some(b) => {
                        out.push(char::from(b));
                        i += 3;
                    }
                    None => {
                        let c = rest.chars().next().unwrap_or('%');
                        out.push(c);
                        i += c.len_utf8();
                    }
                }
            }
            out
        }
    }
}

/// Splits one directory name `key=value` into the unescaped key and value; the value is `None`
/// when it is [`HIVE_DEFAULT_PARTITION`] (a null). `None` when there is no `=` or the key is empty
/// (the directory is not a partition directory).
pub fn parse_segment(segment: &str) -> Option<(String, Option<String>)> {
    let (key, value) = segment.split_once('=')?;
    if key.is_empty() {
        return None;
    }
    let value = (value != HIVE_DEFAULT_PARTITION).then(|| unescape_path_name(value));
    Some((unescape_path_name(key), value))
}

/// One directory name `key=value`, both sides escaped; a null or empty value is
/// [`HIVE_DEFAULT_PARTITION`].
pub(crate) fn partition_segment(key: &str, value: Option<&str>) -> String {
    let value = match value {
        Some(v) if !v.is_empty() => escape_path_name(v),
        _ => HIVE_DEFAULT_PARTITION.to_owned(),
    };
    format!("{}={value}", escape_path_name(key))
}

/// The relative directory `k=v/k2=v2` for the given `(column, value)` pairs, in order, escaping
/// both sides; nulls and empty strings become [`HIVE_DEFAULT_PARTITION`], as Spark writes them.
pub fn partition_path(values: &[(String, Option<String>)]) -> String {
    values
        .iter()
        .map(|(key, value)| partition_segment(key, value.as_deref()))
        .collect::<Vec<_>>()
        .join("/")
}

/// `YYYY-MM-DD`, strictly (no sign, no extra digits, a real calendar date).
fn parse_date(value: &str) -> Option<NaiveDate> {
    let b = value.as_bytes();
    let shape = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if !shape {
        return None;
    }
    NaiveDate::parse_from_str(value, "%Y-%m-%d").ok()
}

/// `YYYY-MM-DD HH:MM:SS[.fffffffff]` (or with `T` between date and time).
fn parse_timestamp(value: &str) -> Option<NaiveDateTime> {
    let date = parse_date(value.get(..10)?)?;
    let rest = value.get(10..)?;
    let time = rest.strip_prefix(' ').or_else(|| rest.strip_prefix('T'))?;
    let time = chrono::NaiveTime::parse_from_str(time, "%H:%M:%S%.f").ok()?;
    Some(date.and_time(time))
}

/// Spark's partition type inference over one column's values (nulls ignored): `Int32` if all
/// parse as `i32`, else `Int64` if all parse as `i64`, else `Float64` if all parse as finite `f64`
/// (text such as `NaN` or `inf` does not count), else `Date32` if all are valid `YYYY-MM-DD` dates,
/// else `Utf8`. All nulls (or no values) give `Utf8`.
pub fn infer_type<'a>(values: impl IntoIterator<Item = Option<&'a str>>) -> DataType {
    let values: Vec<&str> = values.into_iter().flatten().collect();
    if values.is_empty() {
        DataType::Utf8
    } else if values.iter().all(|v| v.parse::<i32>().is_ok()) {
        DataType::Int32
    } else if values.iter().all(|v| v.parse::<i64>().is_ok()) {
        DataType::Int64
    } else if values
        .iter()
        .all(|v| v.parse::<f64>().is_ok_and(f64::is_finite))
    {
        DataType::Float64
    } else if values.iter().all(|v| parse_date(v).is_some()) {
        DataType::Date32
    } else {
        DataType::Utf8
    }
}

/// A partition column type declared by name in a pipeline file: `int`/`integer`, `bigint`/`long`,
/// `double`, `date`, `string`, `boolean` (case-insensitive). `None` for anything else.
pub fn parse_type_name(name: &str) -> Option<DataType> {
    match name.trim().to_ascii_lowercase().as_str() {
        "int" | "integer" => Some(DataType::Int32),
        "bigint" | "long" => Some(DataType::Int64),
        "double" => Some(DataType::Float64),
        "date" => Some(DataType::Date32),
        "string" => Some(DataType::Utf8),
        "boolean" => Some(DataType::Boolean),
        _ => None,
    }
}

/// The type's name in messages: Spark's SQL name where there is one.
fn type_name(data_type: &DataType) -> String {
    match data_type {
        DataType::Int8 => "tinyint".into(),
        DataType::Int16 => "smallint".into(),
        DataType::Int32 => "int".into(),
        DataType::Int64 => "bigint".into(),
        DataType::Float32 => "float".into(),
        DataType::Float64 => "double".into(),
        DataType::Boolean => "boolean".into(),
        DataType::Date32 | DataType::Date64 => "date".into(),
        DataType::Timestamp(_, _) => "timestamp".into(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "string".into(),
        other => other.to_string(),
    }
}

/// Whether a column of this type can be a partition column ([`format_value`] and
/// [`constant_array`] handle it).
pub(crate) fn is_supported_type(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64
            | DataType::Float32
            | DataType::Float64
            | DataType::Boolean
            | DataType::Date32
            | DataType::Date64
            | DataType::Timestamp(_, _)
            | DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
    )
}

fn unsupported(data_type: &DataType) -> String {
    format!(
        "partition columns of type {data_type} are not supported; use an integer, floating point, \
         boolean, date, timestamp or string column"
    )
}

/// `rows` copies of `value` parsed as `T`.
fn repeated<T: ArrowPrimitiveType>(value: Option<T::Native>, rows: usize) -> Option<ArrayRef> {
    Some(Arc::new(PrimitiveArray::<T>::from_value(value?, rows)))
}

/// `rows` copies of a timestamp, in the time zone `tz`.
fn repeated_timestamp<T: ArrowTimestampType>(
    value: Option<i64>,
    rows: usize,
    tz: &Option<Arc<str>>,
) -> Option<ArrayRef> {
    let array = PrimitiveArray::<T>::from_value(value?, rows).with_timezone_opt(tz.clone());
    Some(Arc::new(array))
}

/// A constant column of `rows` copies of `value` parsed as `data_type` (all nulls when `value` is
/// `None`), for the partition columns of a batch read from a partition directory.
///
/// Dates are `YYYY-MM-DD`, timestamps `YYYY-MM-DD HH:MM:SS[.f…]` (taken as UTC when the type has a
/// time zone), booleans `true`/`false` in any case. Errors with a message such as
/// ``cannot parse `2024-13-01` as date`` when the value does not parse, or naming the type when
/// it cannot be a partition column.
pub fn constant_array(
    data_type: &DataType,
    value: Option<&str>,
    rows: usize,
) -> Result<ArrayRef, String> {
    if !is_supported_type(data_type) {
        return Err(unsupported(data_type));
    }
    let Some(value) = value else {
        return Ok(new_null_array(data_type, rows));
    };
    let array: Option<ArrayRef> = match data_type {
        DataType::Int8 => repeated::<Int8Type>(value.parse().ok(), rows),
        DataType::Int16 => repeated::<Int16Type>(value.parse().ok(), rows),
        DataType::Int32 => repeated::<Int32Type>(value.parse().ok(), rows),
        DataType::Int64 => repeated::<Int64Type>(value.parse().ok(), rows),
        DataType::UInt8 => repeated::<UInt8Type>(value.parse().ok(), rows),
        DataType::UInt16 => repeated::<UInt16Type>(value.parse().ok(), rows),
        DataType::UInt32 => repeated::<UInt32Type>(value.parse().ok(), rows),
        DataType::UInt64 => repeated::<UInt64Type>(value.parse().ok(), rows),
        DataType::Float32 => repeated::<Float32Type>(value.parse().ok(), rows),
        DataType::Float64 => repeated::<Float64Type>(value.parse().ok(), rows),
        DataType::Boolean => {
            let b = if value.eq_ignore_ascii_case("true") {
                Some(true)
            } else if value.eq_ignore_ascii_case("false") {
                Some(false)
            } else {
                None
            };
            b.map(|b| Arc::new(BooleanArray::from(vec![b; rows])) as ArrayRef)
        }
        DataType::Date32 => {
            let days = parse_date(value).map(|d| d.num_days_from_ce() - DAYS_FROM_CE_TO_EPOCH);
            repeated::<Date32Type>(days, rows)
        }
        DataType::Date64 => {
            let millis = parse_date(value)
                .map(|d| i64::from(d.num_days_from_ce() - DAYS_FROM_CE_TO_EPOCH) * 86_400_000);
            repeated::<Date64Type>(millis, rows)
        }
        DataType::Timestamp(unit, tz) => {
            let t = parse_timestamp(value).map(|t| t.and_utc());
            match unit {
                TimeUnit::Second => {
                    repeated_timestamp::<TimestampSecondType>(t.map(|t| t.timestamp()), rows, tz)
                }
                TimeUnit::Millisecond => repeated_timestamp::<TimestampMillisecondType>(
                    t.map(|t| t.timestamp_millis()),
                    rows,
                    tz,
                ),
                TimeUnit::Microsecond => repeated_timestamp::<TimestampMicrosecondType>(
                    t.map(|t| t.timestamp_micros()),
                    rows,
                    tz,
                ),
                TimeUnit::Nanosecond => repeated_timestamp::<TimestampNanosecondType>(
                    t.and_then(|t| t.timestamp_nanos_opt()),
                    rows,
                    tz,
                ),
            }
        }
        DataType::Utf8 => Some(Arc::new(StringArray::from_iter_values(repeat_n(
            value, rows,
        )))),
        DataType::LargeUtf8 => Some(Arc::new(LargeStringArray::from_iter_values(repeat_n(
            value, rows,
        )))),
        DataType::Utf8View => Some(Arc::new(StringViewArray::from_iter_values(repeat_n(
            value, rows,
        )))),
        other => return Err(unsupported(other)),
    };
    array.ok_or_else(|| format!("cannot parse `{value}` as {}", type_name(data_type)))
}

/// A float as Java's `Double.toString` would show it where it matters for reading back: always
/// with a `.` or exponent (so it is not taken for an integer), `NaN`, `Infinity`, `-Infinity`.
fn format_float(value: f64, text: String) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value.is_infinite() {
        if value > 0.0 { "Infinity" } else { "-Infinity" }.into()
    } else {
        text
    }
}

/// `YYYY-MM-DD HH:MM:SS`, plus the fraction of a second without trailing zeros when there is one
/// (as Spark casts a timestamp to a string).
fn format_timestamp(t: NaiveDateTime) -> String {
    let mut text = t.format("%Y-%m-%d %H:%M:%S").to_string();
    let nanos = t.nanosecond() % 1_000_000_000;
    if nanos != 0 {
        let fraction = format!("{nanos:09}");
        text.push('.');
        text.push_str(fraction.trim_end_matches('0'));
    }
    text
}

/// The value at `row` as Spark puts it in a partition directory name (before escaping): integers
/// and floats as text (floats always with a `.` or exponent), dates `YYYY-MM-DD`, timestamps
/// `YYYY-MM-DD HH:MM:SS[.ffffff]` (the stored instant, UTC for zoned types, fraction without
/// trailing zeros), booleans `true`/`false`, strings as they are. `None` for a null or an empty
/// string (both go to [`HIVE_DEFAULT_PARTITION`]). Errors for a type that cannot be a partition
/// column (naming it) or a row out of range.
pub fn format_value(array: &dyn Array, row: usize) -> Result<Option<String>, String> {
    let data_type = array.data_type();
    if !is_supported_type(data_type) {
        return Err(unsupported(data_type));
    }
    if row >= array.len() {
        return Err(format!(
            "row {row} is out of range for a column of {} rows",
            array.len()
        ));
    }
    if array.is_null(row) {
        return Ok(None);
    }
    let bad_date = || format!("{data_type} value at row {row} is out of the calendar's range");
    let text = match data_type {
        DataType::Int8 => array.as_primitive::<Int8Type>().value(row).to_string(),
        DataType::Int16 => array.as_primitive::<Int16Type>().value(row).to_string(),
        DataType::Int32 => array.as_primitive::<Int32Type>().value(row).to_string(),
        DataType::Int64 => array.as_primitive::<Int64Type>().value(row).to_string(),
        DataType::UInt8 => array.as_primitive::<UInt8Type>().value(row).to_string(),
        DataType::UInt16 => array.as_primitive::<UInt16Type>().value(row).to_string(),
        DataType::UInt32 => array.as_primitive::<UInt32Type>().value(row).to_string(),
        DataType::UInt64 => array.as_primitive::<UInt64Type>().value(row).to_string(),
        DataType::Float32 => {
            let v = array.as_primitive::<Float32Type>().value(row);
            format_float(f64::from(v), format!("{v:?}"))
        }
        DataType::Float64 => {
            let v = array.as_primitive::<Float64Type>().value(row);
            format_float(v, format!("{v:?}"))
        }
        DataType::Boolean => array.as_boolean().value(row).to_string(),
        DataType::Date32 => {
            let v = array.as_primitive::<Date32Type>().value(row);
            let t = date32_to_datetime(v).ok_or_else(bad_date)?;
            t.format("%Y-%m-%d").to_string()
        }
        DataType::Date64 => {
            let v = array.as_primitive::<Date64Type>().value(row);
            let t = date64_to_datetime(v).ok_or_else(bad_date)?;
            t.format("%Y-%m-%d").to_string()
        }
        DataType::Timestamp(unit, _) => {
            let t = match unit {
                TimeUnit::Second => as_datetime::<TimestampSecondType>(
                    array.as_primitive::<TimestampSecondType>().value(row),
                ),
                TimeUnit::Millisecond => as_datetime::<TimestampMillisecondType>(
                    array.as_primitive::<TimestampMillisecondType>().value(row),
                ),
                TimeUnit::Microsecond => as_datetime::<TimestampMicrosecondType>(
                    array.as_primitive::<TimestampMicrosecondType>().value(row),
                ),
                TimeUnit::Nanosecond => as_datetime::<TimestampNanosecondType>(
                    array.as_primitive::<TimestampNanosecondType>().value(row),
                ),
            };
            format_timestamp(t.ok_or_else(bad_date)?)
        }
        DataType::Utf8 => array.as_string::<i32>().value(row).to_owned(),
        DataType::LargeUtf8 => array.as_string::<i64>().value(row).to_owned(),
        DataType::Utf8View => array.as_string_view().value(row).to_owned(),
        other => return Err(unsupported(other)),
    };
    Ok((!text.is_empty()).then_some(text))
}

#[cfg(test)]
mod tests;
