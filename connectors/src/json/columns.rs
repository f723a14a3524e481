//! Growable, truncatable column buffers shared by the row decoders (JSON and Avro).
//!
//! A [`Column`] keeps plain `Vec`s (values, offsets, validity) so that a half-decoded row can be cut
//! away with [`Column::truncate`]; [`Column::finish`] turns the buffers into an Arrow array of exactly
//! the field's type and leaves the column empty and reusable.

use std::fmt;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryArray, BooleanArray, Date32Array, Float32Array, Float64Array, Int8Array,
    Int16Array, Int32Array, Int64Array, LargeStringArray, StringArray, StringViewBuilder,
    TimestampMicrosecondArray, TimestampMillisecondArray, TimestampNanosecondArray,
    TimestampSecondArray, UInt8Array, UInt16Array, UInt32Array, UInt64Array,
};
use arrow::buffer::{Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow::datatypes::{DataType, Field, TimeUnit};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};

/// Days from 0001-01-01 (chrono's "day 1 of the common era" is 1) to 1970-01-01.
const UNIX_EPOCH_DAYS_FROM_CE: i32 = 719_163;

/// The column types the row codecs support, with what they need of the Arrow type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Boolean,
    Int8,
    Int16,
    Int32,
    Int64,
    UInt8,
    UInt16,
    UInt32,
    UInt64,
    Float32,
    Float64,
    Utf8,
    LargeUtf8,
    Utf8View,
    Binary,
    /// Any time zone: values are instants since the Unix epoch in the unit.
    Timestamp(TimeUnit),
    Date32,
}

/// The supported Arrow types, for error messages.
pub(crate) const SUPPORTED: &str = "Boolean, Int8/16/32/64, UInt8/16/32/64, Float32/64, Utf8, \
    LargeUtf8, Utf8View, Binary, Timestamp (any unit and time zone), Date32";

impl Kind {
    /// The kind of an Arrow type, `None` when the codecs do not support it.
    pub(crate) fn of(data_type: &DataType) -> Option<Kind> {
        Some(match data_type {
            DataType::Boolean => Kind::Boolean,
            DataType::Int8 => Kind::Int8,
            DataType::Int16 => Kind::Int16,
            DataType::Int32 => Kind::Int32,
            DataType::Int64 => Kind::Int64,
            DataType::UInt8 => Kind::UInt8,
            DataType::UInt16 => Kind::UInt16,
            DataType::UInt32 => Kind::UInt32,
            DataType::UInt64 => Kind::UInt64,
            DataType::Float32 => Kind::Float32,
            DataType::Float64 => Kind::Float64,
            DataType::Utf8 => Kind::Utf8,
            DataType::LargeUtf8 => Kind::LargeUtf8,
            DataType::Utf8View => Kind::Utf8View,
            DataType::Binary => Kind::Binary,
            DataType::Timestamp(unit, _) => Kind::Timestamp(*unit),
            DataType::Date32 => Kind::Date32,
            _ => return None,
        })
    }

    /// What a JSON value for this kind should be, e.g. "a number".
    pub(crate) fn expected(self) -> &'static str {
        match self {
            Kind::Boolean => "a boolean",
            Kind::Int8
            | Kind::Int16
            | Kind::Int32
            | Kind::Int64
            | Kind::UInt8
            | Kind::UInt16
            | Kind::UInt32
            | Kind::UInt64 => "an integer",
            Kind::Float32 | Kind::Float64 => "a number",
            Kind::Utf8 | Kind::LargeUtf8 | Kind::Utf8View | Kind::Binary => "a string",
            Kind::Timestamp(TimeUnit::Second) => {
                "a timestamp (integer seconds since 1970-01-01 or an RFC 3339 string)"
            }
            Kind::Timestamp(TimeUnit::Millisecond) => {
                "a timestamp (integer milliseconds since 1970-01-01 or an RFC 3339 string)"
            }
            Kind::Timestamp(TimeUnit::Microsecond) => {
                "a timestamp (integer microseconds since 1970-01-01 or an RFC 3339 string)"
            }
            Kind::Timestamp(TimeUnit::Nanosecond) => {
                "a timestamp (integer nanoseconds since 1970-01-01 or an RFC 3339 string)"
            }
            Kind::Date32 => "a date (integer days since 1970-01-01 or \"YYYY-MM-DD\")",
        }
    }

    /// The inclusive integer range of an integer-valued kind.
    fn int_range(self) -> Option<(i128, i128)> {
        Some(match self {
            Kind::Int8 => (i8::MIN.into(), i8::MAX.into()),
            Kind::Int16 => (i16::MIN.into(), i16::MAX.into()),
            Kind::Int32 | Kind::Date32 => (i32::MIN.into(), i32::MAX.into()),
            Kind::Int64 | Kind::Timestamp(_) => (i64::MIN.into(), i64::MAX.into()),
            Kind::UInt8 => (0, u8::MAX.into()),
            Kind::UInt16 => (0, u16::MAX.into()),
            Kind::UInt32 => (0, u32::MAX.into()),
            Kind::UInt64 => (0, u64::MAX.into()),
            _ => return None,
        })
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Kind::Timestamp(unit) => write!(f, "Timestamp({unit:?})"),
            other => write!(f, "{other:?}"),
        }
    }
}

/// Why a value was not taken.
#[derive(Debug)]
pub(crate) enum Reject {
    /// The value has the wrong type; the caller says what it found.
    Type,
    /// The value has the right type but cannot be stored; the message says why.
    Value(String),
}

#[derive(Debug)]
enum Values {
    Bool(Vec<bool>),
    I8(Vec<i8>),
    I16(Vec<i16>),
    /// Int32 and Date32.
    I32(Vec<i32>),
    /// Int64 and Timestamp.
    I64(Vec<i64>),
    U8(Vec<u8>),
    U16(Vec<u16>),
    U32(Vec<u32>),
    U64(Vec<u64>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    /// Utf8, LargeUtf8, Utf8View and Binary: `offsets` has one more entry than there are rows.
    Bytes {
        offsets: Vec<usize>,
        data: Vec<u8>,
    },
}

/// One column being built, row by row.
#[derive(Debug)]
pub(crate) struct Column {
    kind: Kind,
    nullable: bool,
    values: Values,
    /// One entry per row when `nullable`, empty otherwise.
    valid: Vec<bool>,
}

impl Column {
    /// An empty column.
    pub(crate) fn new(kind: Kind, nullable: bool) -> Self {
        Column {
            kind,
            nullable,
            values: Self::empty_values(kind, 0),
            valid: Vec::new(),
        }
    }

    fn empty_values(kind: Kind, capacity: usize) -> Values {
        match kind {
            Kind::Boolean => Values::Bool(Vec::with_capacity(capacity)),
            Kind::Int8 => Values::I8(Vec::with_capacity(capacity)),
            Kind::Int16 => Values::I16(Vec::with_capacity(capacity)),
            Kind::Int32 | Kind::Date32 => Values::I32(Vec::with_capacity(capacity)),
            Kind::Int64 | Kind::Timestamp(_) => Values::I64(Vec::with_capacity(capacity)),
            Kind::UInt8 => Values::U8(Vec::with_capacity(capacity)),
            Kind::UInt16 => Values::U16(Vec::with_capacity(capacity)),
            Kind::UInt32 => Values::U32(Vec::with_capacity(capacity)),
            Kind::UInt64 => Values::U64(Vec::with_capacity(capacity)),
            Kind::Float32 => Values::F32(Vec::with_capacity(capacity)),
            Kind::Float64 => Values::F64(Vec::with_capacity(capacity)),
            Kind::Utf8 | Kind::LargeUtf8 | Kind::Utf8View | Kind::Binary => {
                let mut offsets = Vec::with_capacity(capacity + 1);
                offsets.push(0);
                Values::Bytes {
                    offsets,
                    data: Vec::new(),
                }
            }
        }
    }

    /// The column's kind.
    pub(crate) fn kind(&self) -> Kind {
        self.kind
    }

    /// The number of rows.
    pub(crate) fn len(&self) -> usize {
        match &self.values {
            Values::Bool(v) => v.len(),
            Values::I8(v) => v.len(),
            Values::I16(v) => v.len(),
            Values::I32(v) => v.len(),
            Values::I64(v) => v.len(),
            Values::U8(v) => v.len(),
            Values::U16(v) => v.len(),
            Values::U32(v) => v.len(),
            Values::U64(v) => v.len(),
            Values::F32(v) => v.len(),
            Values::F64(v) => v.len(),
            Values::Bytes { offsets, .. } => offsets.len() - 1,
        }
    }

    /// Cuts the column back to `rows` rows (no-op when it is not longer).
    pub(crate) fn truncate(&mut self, rows: usize) {
        match &mut self.values {
            Values::Bool(v) => v.truncate(rows),
            Values::I8(v) => v.truncate(rows),
            Values::I16(v) => v.truncate(rows),
            Values::I32(v) => v.truncate(rows),
            Values::I64(v) => v.truncate(rows),
            Values::U8(v) => v.truncate(rows),
            Values::U16(v) => v.truncate(rows),
            Values::U32(v) => v.truncate(rows),
            Values::U64(v) => v.truncate(rows),
            Values::F32(v) => v.truncate(rows),
            Values::F64(v) => v.truncate(rows),
            Values::Bytes { offsets, data } => {
                if let Some(&end) = offsets.get(rows) {
                    offsets.truncate(rows + 1);
                    data.truncate(end);
                }
            }
        }
        self.valid.truncate(rows);
    }

    #[inline]
    fn mark_valid(&mut self) {
        if self.nullable {
            self.valid.push(true);
        }
    }

    /// Appends a null; rejected when the column is not nullable.
    pub(crate) fn push_null(&mut self) -> Result<(), Reject> {
        if !self.nullable {
            return Err(Reject::Value(
                "null is not allowed: the field is not nullable".into(),
            ));
        }
        match &mut self.values {
            Values::Bool(v) => v.push(false),
            Values::I8(v) => v.push(0),
            Values::I16(v) => v.push(0),
            Values::I32(v) => v.push(0),
            Values::I64(v) => v.push(0),
            Values::U8(v) => v.push(0),
            Values::U16(v) => v.push(0),
            Values::U32(v) => v.push(0),
            Values::U64(v) => v.push(0),
            Values::F32(v) => v.push(0.0),
            Values::F64(v) => v.push(0.0),
            Values::Bytes { offsets, data } => offsets.push(data.len()),
        }
        self.valid.push(false);
        Ok(())
    }

    /// Appends a boolean (Boolean columns only).
    #[inline]
    pub(crate) fn push_bool(&mut self, value: bool) -> Result<(), Reject> {
        match &mut self.values {
            Values::Bool(v) => v.push(value),
            _ => return Err(Reject::Type),
        }
        self.mark_valid();
        Ok(())
    }

    /// Appends an integer: integer columns (range-checked), float columns, timestamps (in the
    /// column's unit) and dates (days since 1970-01-01).
    #[inline]
    pub(crate) fn push_i64(&mut self, value: i64) -> Result<(), Reject> {
        match &mut self.values {
            Values::I64(v) => v.push(value),
            Values::F64(v) => v.push(value as f64),
            Values::F32(v) => v.push(value as f32),
            Values::Bool(_) | Values::Bytes { .. } => return Err(Reject::Type),
            _ => return self.push_i128(i128::from(value)),
        }
        self.mark_valid();
        Ok(())
    }

    /// Appends a non-negative integer; see [`Column::push_i64`].
    #[inline]
    pub(crate) fn push_u64(&mut self, value: u64) -> Result<(), Reject> {
        match &mut self.values {
            Values::U64(v) => v.push(value),
            Values::F64(v) => v.push(value as f64),
            Values::F32(v) => v.push(value as f32),
            Values::Bool(_) | Values::Bytes { .. } => return Err(Reject::Type),
            _ => return self.push_i128(i128::from(value)),
        }
        self.mark_valid();
        Ok(())
    }

    fn push_i128(&mut self, value: i128) -> Result<(), Reject> {
        let Some((min, max)) = self.kind.int_range() else {
            return Err(Reject::Type);
        };
        if value < min || value > max {
            return Err(Reject::Value(format!(
                "{value} is out of range for {} ({min} to {max})",
                self.kind
            )));
        }
        // In range, checked above: the casts below are exact.
        match &mut self.values {
            Values::I8(v) => v.push(value as i8),
            Values::I16(v) => v.push(value as i16),
            Values::I32(v) => v.push(value as i32),
            Values::I64(v) => v.push(value as i64),
            Values::U8(v) => v.push(value as u8),
            Values::U16(v) => v.push(value as u16),
            Values::U32(v) => v.push(value as u32),
            Values::U64(v) => v.push(value as u64),
            _ => return Err(Reject::Type),
        }
        self.mark_valid();
        Ok(())
    }

    /// Appends a floating-point number: float columns, and integer-valued columns when the number
    /// is integral (2.0 → 2).
    #[inline]
    pub(crate) fn push_f64(&mut self, value: f64) -> Result<(), Reject> {
        match &mut self.values {
            Values::F64(v) => v.push(value),
            Values::F32(v) => {
                let narrow = value as f32;
                if narrow.is_infinite() && value.is_finite() {
                    return Err(Reject::Value(format!(
                        "{value} is out of range for Float32"
                    )));
                }
                v.push(narrow);
            }
            Values::Bool(_) | Values::Bytes { .. } => return Err(Reject::Type),
            _ => {
                // 2^127: every integral f64 below it in magnitude converts to i128 exactly.
                if value.fract() != 0.0 || !value.is_finite() || value.abs() >= 1.7e38 {
                    return Err(Reject::Value(format!(
                        "{value} is not an integer, and {} needs one",
                        self.kind
                    )));
                }
                return self.push_i128(value as i128);
            }
        }
        self.mark_valid();
        Ok(())
    }

    /// Appends a 32-bit float exactly (Float32 columns), or widened (Float64 columns).
    #[inline]
    pub(crate) fn push_f32(&mut self, value: f32) -> Result<(), Reject> {
        match &mut self.values {
            Values::F32(v) => v.push(value),
            _ => return self.push_f64(f64::from(value)),
        }
        self.mark_valid();
        Ok(())
    }

    /// Appends a string: string and binary columns take it as is (binary: its UTF-8 bytes),
    /// timestamp and date columns parse it.
    pub(crate) fn push_str(&mut self, value: &str) -> Result<(), Reject> {
        match self.kind {
            Kind::Utf8 | Kind::LargeUtf8 | Kind::Utf8View | Kind::Binary => {
                self.push_bytes(value.as_bytes())
            }
            Kind::Timestamp(unit) => {
                let instant = parse_timestamp(value).ok_or_else(|| {
                    Reject::Value(format!(
                        "cannot read {value:?} as a timestamp; write an RFC 3339 string such as \
                         \"2024-05-01T12:00:00Z\", \"YYYY-MM-DD HH:MM:SS[.f]\" (UTC) or an integer"
                    ))
                })?;
                let raw = match unit {
                    TimeUnit::Second => Some(instant.timestamp()),
                    TimeUnit::Millisecond => Some(instant.timestamp_millis()),
                    TimeUnit::Microsecond => Some(instant.timestamp_micros()),
                    TimeUnit::Nanosecond => instant.timestamp_nanos_opt(),
                };
                let raw = raw.ok_or_else(|| {
                    Reject::Value(format!(
                        "timestamp {value:?} is out of range for nanoseconds (years 1677 to 2262)"
                    ))
                })?;
                self.push_i64(raw)
            }
            Kind::Date32 => {
                let date = NaiveDate::parse_from_str(value, "%Y-%m-%d").map_err(|_| {
                    Reject::Value(format!(
                        "cannot read {value:?} as a date; write \"YYYY-MM-DD\" or integer days \
                         since 1970-01-01"
                    ))
                })?;
                self.push_i64(i64::from(date_to_days(date)))
            }
            _ => Err(Reject::Type),
        }
    }

    /// Appends raw bytes (string and binary columns; string columns only when they are UTF-8).
    pub(crate) fn push_bytes(&mut self, value: &[u8]) -> Result<(), Reject> {
        let kind = self.kind;
        let Values::Bytes { offsets, data } = &mut self.values else {
            return Err(Reject::Type);
        };
        if kind != Kind::Binary && std::str::from_utf8(value).is_err() {
            return Err(Reject::Value("the bytes are not valid UTF-8".into()));
        }
        let end = data.len() + value.len();
        if matches!(kind, Kind::Utf8 | Kind::Binary) && end > i32::MAX as usize {
            return Err(Reject::Value(format!(
                "the column would hold more than 2 GiB of data in one batch ({end} bytes); \
                 finish batches more often or declare it LargeUtf8"
            )));
        }
        data.extend_from_slice(value);
        offsets.push(end);
        self.mark_valid();
        Ok(())
    }

    /// Drains the column into an array of `field`'s type (the column's kind must be that of
    /// `field`); the column is left empty.
    pub(crate) fn finish(&mut self, field: &Field) -> ArrayRef {
        let rows = self.len();
        let values = std::mem::replace(&mut self.values, Self::empty_values(self.kind, rows));
        let nulls = if self.nullable {
            let nulls = NullBuffer::from(std::mem::take(&mut self.valid));
            self.valid.reserve(rows);
            (nulls.null_count() > 0).then_some(nulls)
        } else {
            None
        };
        match (values, field.data_type()) {
            (Values::Bool(v), _) => Arc::new(BooleanArray::new(v.into(), nulls)),
            (Values::I8(v), _) => Arc::new(Int8Array::new(v.into(), nulls)),
            (Values::I16(v), _) => Arc::new(Int16Array::new(v.into(), nulls)),
            (Values::I32(v), DataType::Date32) => Arc::new(Date32Array::new(v.into(), nulls)),
            (Values::I32(v), _) => Arc::new(Int32Array::new(v.into(), nulls)),
            (Values::I64(v), DataType::Timestamp(unit, tz)) => {
                let v = ScalarBuffer::from(v);
                let tz = tz.clone();
                match unit {
                    TimeUnit::Second => {
                        Arc::new(TimestampSecondArray::new(v, nulls).with_timezone_opt(tz))
                    }
                    TimeUnit::Millisecond => {
                        Arc::new(TimestampMillisecondArray::new(v, nulls).with_timezone_opt(tz))
                    }
                    TimeUnit::Microsecond => {
                        Arc::new(TimestampMicrosecondArray::new(v, nulls).with_timezone_opt(tz))
                    }
                    TimeUnit::Nanosecond => {
                        Arc::new(TimestampNanosecondArray::new(v, nulls).with_timezone_opt(tz))
                    }
                }
            }
            (Values::I64(v), _) => Arc::new(Int64Array::new(v.into(), nulls)),
            (Values::U8(v), _) => Arc::new(UInt8Array::new(v.into(), nulls)),
            (Values::U16(v), _) => Arc::new(UInt16Array::new(v.into(), nulls)),
            (Values::U32(v), _) => Arc::new(UInt32Array::new(v.into(), nulls)),
            (Values::U64(v), _) => Arc::new(UInt64Array::new(v.into(), nulls)),
            (Values::F32(v), _) => Arc::new(Float32Array::new(v.into(), nulls)),
            (Values::F64(v), _) => Arc::new(Float64Array::new(v.into(), nulls)),
            (Values::Bytes { offsets, data }, data_type) => {
                bytes_array(data_type, &offsets, data, nulls)
            }
        }
    }
}

/// Builds a string or binary array from `offsets` (one more than rows) and `data`. The bytes of
/// string columns were checked to be UTF-8 when pushed, and Utf8/Binary data to fit `i32` offsets.
fn bytes_array(
    data_type: &DataType,
    offsets: &[usize],
    data: Vec<u8>,
    nulls: Option<NullBuffer>,
) -> ArrayRef {
    match data_type {
        DataType::LargeUtf8 => {
            let offsets: Vec<i64> = offsets.iter().map(|&o| o as i64).collect();
            let offsets = OffsetBuffer::new(offsets.into());
            Arc::new(LargeStringArray::new(
                offsets,
                Buffer::from_vec(data),
                nulls,
            ))
        }
        DataType::Utf8View => {
            let mut builder = StringViewBuilder::with_capacity(offsets.len() - 1);
            for (row, pair) in offsets.windows(2).enumerate() {
                if nulls.as_ref().is_some_and(|n| n.is_null(row)) {
                    builder.append_null();
                } else {
                    // Pushed as UTF-8 (checked in `push_bytes`), so this never falls back.
                    let text = std::str::from_utf8(&data[pair[0]..pair[1]]).unwrap_or_default();
                    builder.append_value(text);
                }
            }
            Arc::new(builder.finish())
        }
        DataType::Binary => {
            let offsets: Vec<i32> = offsets.iter().map(|&o| o as i32).collect();
            let offsets = OffsetBuffer::new(offsets.into());
            Arc::new(BinaryArray::new(offsets, Buffer::from_vec(data), nulls))
        }
        _ => {
            let offsets: Vec<i32> = offsets.iter().map(|&o| o as i32).collect();
            let offsets = OffsetBuffer::new(offsets.into());
            Arc::new(StringArray::new(offsets, Buffer::from_vec(data), nulls))
        }
    }
}

/// Reads an RFC 3339 timestamp (any offset), or `YYYY-MM-DD HH:MM:SS[.f]` /
/// `YYYY-MM-DDTHH:MM:SS[.f]` as UTC.
pub(crate) fn parse_timestamp(text: &str) -> Option<DateTime<Utc>> {
    if let Ok(instant) = DateTime::parse_from_rfc3339(text) {
        return Some(instant.with_timezone(&Utc));
    }
    ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(text, format).ok())
        .map(|naive| naive.and_utc())
}

/// Days since 1970-01-01.
pub(crate) fn date_to_days(date: NaiveDate) -> i32 {
    use chrono::Datelike;
    date.num_days_from_ce() - UNIX_EPOCH_DAYS_FROM_CE
}

/// The date `days` after 1970-01-01, `None` outside chrono's range.
pub(crate) fn days_to_date(days: i32) -> Option<NaiveDate> {
    NaiveDate::from_num_days_from_ce_opt(days.checked_add(UNIX_EPOCH_DAYS_FROM_CE)?)
}
