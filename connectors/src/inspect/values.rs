//! Rendering values to JSON in the formats Spark's own readback uses.

use super::*;

/// A float as JSON: a number, or "NaN", "Infinity", "-Infinity" (JSON has none of them).
pub(super) fn float_json(v: f64) -> Value {
    match serde_json::Number::from_f64(v) {
        Some(n) => Value::Number(n),
        None if v.is_nan() => Value::from("NaN"),
        None if v > 0.0 => Value::from("Infinity"),
        None => Value::from("-Infinity"),
    }
}

/// An unscaled decimal with exactly `scale` fraction digits: `(-5, 2)` → `"-0.05"`.
pub(super) fn format_decimal(value: i256, scale: i8) -> String {
    let text = value.to_string();
    let (sign, digits) = match text.strip_prefix('-') {
        Some(digits) => ("-", digits),
        None => ("", text.as_str()),
    };
    if scale <= 0 {
        let zeros = if digits == "0" {
            0
        } else {
            usize::from(scale.unsigned_abs())
        };
        return format!("{sign}{digits}{}", "0".repeat(zeros));
    }
    let scale = usize::from(scale.unsigned_abs());
    let digits = format!("{digits:0>width$}", width = scale + 1);
    let (int, frac) = digits.split_at(digits.len() - scale);
    format!("{sign}{int}.{frac}")
}

/// Raw date or timestamp ticks as text.
pub(super) fn format_temporal(kind: Temporal, raw: i64) -> String {
    let formatted = match kind {
        Temporal::Date32 | Temporal::Date64 => {
            let days = if kind == Temporal::Date64 {
                raw.div_euclid(86_400_000)
            } else {
                raw
            };
            i32::try_from(days)
                .ok()
                .and_then(NaiveDate::from_epoch_days)
                .map(|d| d.format("%Y-%m-%d").to_string())
        }
        Temporal::Timestamp(unit, tz) => {
            let micros = match unit {
                TimeUnit::Second => raw.checked_mul(1_000_000),
                TimeUnit::Millisecond => raw.checked_mul(1_000),
                TimeUnit::Microsecond => Some(raw),
                TimeUnit::Nanosecond => Some(raw.div_euclid(1_000)),
            };
            micros.and_then(DateTime::from_timestamp_micros).map(|t| {
                let text = t.naive_utc().format("%Y-%m-%dT%H:%M:%S%.6f").to_string();
                if tz { text + "Z" } else { text }
            })
        }
    };
    formatted.unwrap_or_else(|| format!("{raw} ({kind:?} ticks since 1970-01-01, out of range)"))
}

/// The JSON rendering of one value, in the formats of this module's table (also used by tests to
/// compare rows). Null (and a row past the end) is JSON null; structs are objects, lists arrays,
/// maps objects with their keys as text; binary is lowercase hex; dictionaries are unpacked; other
/// types are strings in Arrow's display format.
pub fn json_value(array: &dyn Array, row: usize) -> Value {
    if row >= array.len() || array.is_null(row) {
        return Value::Null;
    }
    use DataType as D;
    use TimeUnit as U;
    match array.data_type() {
        D::Null => Value::Null,
        D::Int8 => array.as_primitive::<Int8Type>().value(row).into(),
        D::Int16 => array.as_primitive::<Int16Type>().value(row).into(),
        D::Int32 => array.as_primitive::<Int32Type>().value(row).into(),
        D::Int64 => array.as_primitive::<Int64Type>().value(row).into(),
        D::UInt8 => array.as_primitive::<UInt8Type>().value(row).into(),
        D::UInt16 => array.as_primitive::<UInt16Type>().value(row).into(),
        D::UInt32 => array.as_primitive::<UInt32Type>().value(row).into(),
        D::UInt64 => array.as_primitive::<UInt64Type>().value(row).into(),
        D::Float16 => float_json(array.as_primitive::<Float16Type>().value(row).into()),
        D::Float32 => float_json(array.as_primitive::<Float32Type>().value(row).into()),
        D::Float64 => float_json(array.as_primitive::<Float64Type>().value(row)),
        D::Decimal32(_, s) => {
            format_decimal(array.as_primitive::<Decimal32Type>().value(row).widen(), *s).into()
        }
        D::Decimal64(_, s) => {
            format_decimal(array.as_primitive::<Decimal64Type>().value(row).widen(), *s).into()
        }
        D::Decimal128(_, s) => format_decimal(
            array.as_primitive::<Decimal128Type>().value(row).widen(),
            *s,
        )
        .into(),
        D::Decimal256(_, s) => {
            format_decimal(array.as_primitive::<Decimal256Type>().value(row), *s).into()
        }
        D::Boolean => array.as_boolean().value(row).into(),
        D::Utf8 => array.as_string::<i32>().value(row).into(),
        D::LargeUtf8 => array.as_string::<i64>().value(row).into(),
        D::Utf8View => array.as_string_view().value(row).into(),
        D::Binary => hex(array.as_binary::<i32>().value(row)),
        D::LargeBinary => hex(array.as_binary::<i64>().value(row)),
        D::BinaryView => hex(array.as_binary_view().value(row)),
        D::FixedSizeBinary(_) => hex(array.as_fixed_size_binary().value(row)),
        D::Date32 => {
            let days = array.as_primitive::<Date32Type>().value(row);
            format_temporal(Temporal::Date32, days.into()).into()
        }
        D::Date64 => format_temporal(
            Temporal::Date64,
            array.as_primitive::<Date64Type>().value(row),
        )
        .into(),
        D::Timestamp(unit, tz) => {
            let raw = match unit {
                U::Second => array.as_primitive::<TimestampSecondType>().value(row),
                U::Millisecond => array.as_primitive::<TimestampMillisecondType>().value(row),
                U::Microsecond => array.as_primitive::<TimestampMicrosecondType>().value(row),
                U::Nanosecond => array.as_primitive::<TimestampNanosecondType>().value(row),
            };
            format_temporal(Temporal::Timestamp(*unit, tz.is_some()), raw).into()
        }
        D::Struct(fields) => {
            let array = array.as_struct();
            let object = fields
                .iter()
                .zip(array.columns())
                .map(|(field, column)| (field.name().clone(), json_value(column.as_ref(), row)))
                .collect();
            Value::Object(object)
        }
        D::List(_) => json_list(array.as_list::<i32>().value(row).as_ref()),
        D::LargeList(_) => json_list(array.as_list::<i64>().value(row).as_ref()),
        D::FixedSizeList(..) => json_list(array.as_fixed_size_list().value(row).as_ref()),
        D::Map(..) => {
            let entries = array.as_map().value(row);
            let (keys, values) = (entries.column(0), entries.column(1));
            let object = (0..entries.len())
                .map(|i| {
                    let key = match json_value(keys.as_ref(), i) {
                        Value::String(key) => key,
                        key => key.to_string(),
                    };
                    (key, json_value(values.as_ref(), i))
                })
                .collect();
            Value::Object(object)
        }
        D::Dictionary(keys, _) => {
            let key = match keys.as_ref() {
                D::Int8 => array.as_dictionary::<Int8Type>().key(row),
                D::Int16 => array.as_dictionary::<Int16Type>().key(row),
                D::Int32 => array.as_dictionary::<Int32Type>().key(row),
                D::Int64 => array.as_dictionary::<Int64Type>().key(row),
                D::UInt8 => array.as_dictionary::<UInt8Type>().key(row),
                D::UInt16 => array.as_dictionary::<UInt16Type>().key(row),
                D::UInt32 => array.as_dictionary::<UInt32Type>().key(row),
                D::UInt64 => array.as_dictionary::<UInt64Type>().key(row),
                _ => None,
            };
            match (key, array.as_any_dictionary_opt()) {
                (Some(key), Some(dictionary)) => json_value(dictionary.values().as_ref(), key),
                _ => Value::Null,
            }
        }
        _ => match ArrayFormatter::try_new(array, &FormatOptions::default()) {
            Ok(formatter) => formatter.value(row).to_string().into(),
            Err(e) => format!("<{}: {e}>", array.data_type()).into(),
        },
    }
}

pub(super) fn json_list(values: &dyn Array) -> Value {
    Value::Array((0..values.len()).map(|i| json_value(values, i)).collect())
}

pub(super) fn hex(bytes: &[u8]) -> Value {
    let mut text = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(text, "{b:02x}");
    }
    Value::String(text)
}

/// Spark-style type name of an Arrow type (as in [`ColumnStats::data_type`]). A dictionary is named
/// after its values, which is what Spark reads it as.
pub fn spark_type_name(data_type: &DataType) -> String {
    use DataType as D;
    match data_type {
        D::Int64 => "bigint".into(),
        D::Int32 => "int".into(),
        D::Int16 => "smallint".into(),
        D::Int8 => "tinyint".into(),
        D::Float32 => "float".into(),
        D::Float64 => "double".into(),
        D::Decimal32(p, s) | D::Decimal64(p, s) | D::Decimal128(p, s) | D::Decimal256(p, s) => {
            format!("decimal({p},{s})")
        }
        D::Utf8 | D::LargeUtf8 | D::Utf8View => "string".into(),
        D::Boolean => "boolean".into(),
        D::Date32 | D::Date64 => "date".into(),
        D::Timestamp(_, Some(_)) => "timestamp".into(),
        D::Timestamp(_, None) => "timestamp_ntz".into(),
        D::Binary | D::LargeBinary | D::BinaryView => "binary".into(),
        D::Dictionary(_, values) => spark_type_name(values),
        other => other.to_string(),
    }
}
