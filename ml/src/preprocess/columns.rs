//! Column access over Arrow arrays: lookup with clear errors, and fast typed visitors that
//! read numeric columns as `f64` and string columns (plain, large, view or dictionary) as `&str`.

use arrow::array::{Array, ArrayRef, ArrowPrimitiveType, AsArray, PrimitiveArray};
use arrow::datatypes::{
    DataType, Float16Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type,
    UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use arrow::record_batch::RecordBatch;

use crate::error::{Error, Result};

/// What a numeric feature column may be.
pub(crate) const NUMERIC: &str =
    "a numeric type (Int8..Int64, UInt8..UInt64, Float16/32/64, Boolean)";
/// What a categorical feature column may be.
pub(crate) const STRING: &str =
    "a string type (Utf8, LargeUtf8, Utf8View, or a Dictionary of them)";
/// What a classification label may be.
pub(crate) const CLASS_LABEL: &str = "an integer, Boolean or string type (class label)";

/// The column `name` of `batch`, or an error listing the columns present.
pub(crate) fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef> {
    batch
        .column_by_name(name)
        .ok_or_else(|| Error::MissingColumn {
            column: name.to_string(),
            available: batch
                .schema()
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// A column-type error for `column`.
pub(crate) fn type_error(column: &str, expected: &str, actual: &DataType) -> Error {
    Error::ColumnType {
        column: column.to_string(),
        expected: expected.to_string(),
        actual: actual.to_string(),
    }
}

/// True for types [`visit_f64`] reads.
pub(crate) fn is_numeric(dt: &DataType) -> bool {
    dt.is_integer()
        || matches!(
            dt,
            DataType::Float16 | DataType::Float32 | DataType::Float64 | DataType::Boolean
        )
}

/// True for types [`visit_str`] and [`map_str`] read.
pub(crate) fn is_string(dt: &DataType) -> bool {
    match dt {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => true,
        DataType::Dictionary(key, value) => {
            key.is_integer() && is_string(value) && !matches!(**value, DataType::Dictionary(..))
        }
        _ => false,
    }
}

#[inline]
fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

fn visit_primitive<T: ArrowPrimitiveType>(
    array: &PrimitiveArray<T>,
    f: &mut impl FnMut(usize, Option<f64>),
    to_f64: impl Fn(T::Native) -> f64,
) {
    let values = array.values();
    match array.nulls().filter(|n| n.null_count() > 0) {
        None => {
            for (i, v) in values.iter().enumerate() {
                f(i, finite(to_f64(*v)));
            }
        }
        Some(nulls) => {
            for (i, v) in values.iter().enumerate() {
                f(
                    i,
                    if nulls.is_valid(i) {
                        finite(to_f64(*v))
                    } else {
                        None
                    },
                );
            }
        }
    }
}

/// Calls `f(row, value)` for every row of a numeric column; `None` for null, NaN or ±infinity.
pub(crate) fn visit_f64(
    array: &dyn Array,
    column: &str,
    mut f: impl FnMut(usize, Option<f64>),
) -> Result<()> {
    macro_rules! prim {
        ($t:ty) => {
            prim!($t, |v| v as f64)
        };
        ($t:ty, $conv:expr) => {
            match array.as_primitive_opt::<$t>() {
                Some(a) => visit_primitive(a, &mut f, $conv),
                None => return Err(type_error(column, NUMERIC, array.data_type())),
            }
        };
    }
    match array.data_type() {
        DataType::Int8 => prim!(Int8Type),
        DataType::Int16 => prim!(Int16Type),
        DataType::Int32 => prim!(Int32Type),
        DataType::Int64 => prim!(Int64Type),
        DataType::UInt8 => prim!(UInt8Type),
        DataType::UInt16 => prim!(UInt16Type),
        DataType::UInt32 => prim!(UInt32Type),
        DataType::UInt64 => prim!(UInt64Type),
        DataType::Float16 => prim!(Float16Type, |v| v.to_f64()),
        DataType::Float32 => prim!(Float32Type),
        DataType::Float64 => prim!(Float64Type),
        DataType::Boolean => {
            let a = array.as_boolean();
            for i in 0..a.len() {
                f(i, a.is_valid(i).then(|| if a.value(i) { 1.0 } else { 0.0 }));
            }
        }
        other => return Err(type_error(column, NUMERIC, other)),
    }
    Ok(())
}

/// Calls `f(row, value)` for every row of an integer or Boolean column; `None` for null.
pub(crate) fn visit_i64(
    array: &dyn Array,
    column: &str,
    mut f: impl FnMut(usize, Option<i64>),
) -> Result<()> {
    fn ints<T>(array: &dyn Array, f: &mut impl FnMut(usize, Option<i64>)) -> bool
    where
        T: ArrowPrimitiveType,
        T::Native: TryInto<i64>,
    {
        let Some(a) = array.as_primitive_opt::<T>() else {
            return false;
        };
        for (i, v) in a.values().iter().enumerate() {
            // u64 values above i64::MAX saturate: they are out of any class range anyway.
            let v = (*v).try_into().unwrap_or(i64::MAX);
            f(i, a.is_valid(i).then_some(v));
        }
        true
    }
    let ok = match array.data_type() {
        DataType::Int8 => ints::<Int8Type>(array, &mut f),
        DataType::Int16 => ints::<Int16Type>(array, &mut f),
        DataType::Int32 => ints::<Int32Type>(array, &mut f),
        DataType::Int64 => ints::<Int64Type>(array, &mut f),
        DataType::UInt8 => ints::<UInt8Type>(array, &mut f),
        DataType::UInt16 => ints::<UInt16Type>(array, &mut f),
        DataType::UInt32 => ints::<UInt32Type>(array, &mut f),
        DataType::UInt64 => ints::<UInt64Type>(array, &mut f),
        DataType::Boolean => {
            let a = array.as_boolean();
            for i in 0..a.len() {
                f(i, a.is_valid(i).then(|| i64::from(a.value(i))));
            }
            true
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(type_error(column, CLASS_LABEL, array.data_type()))
    }
}

/// Calls `f(row, value)` for every row of a non-dictionary string column.
fn visit_plain_str<'a>(
    array: &'a dyn Array,
    column: &str,
    mut f: impl FnMut(usize, Option<&'a str>),
) -> Result<()> {
    let missing = || type_error(column, STRING, array.data_type());
    match array.data_type() {
        DataType::Utf8 => array
            .as_string_opt::<i32>()
            .ok_or_else(missing)?
            .iter()
            .enumerate()
            .for_each(|(i, s)| f(i, s)),
        DataType::LargeUtf8 => array
            .as_string_opt::<i64>()
            .ok_or_else(missing)?
            .iter()
            .enumerate()
            .for_each(|(i, s)| f(i, s)),
        DataType::Utf8View => array
            .as_string_view_opt()
            .ok_or_else(missing)?
            .iter()
            .enumerate()
            .for_each(|(i, s)| f(i, s)),
        _ => return Err(missing()),
    }
    Ok(())
}

/// The values of a dictionary column's dictionary, and each row's index into them
/// (`None` for null rows).
#[allow(clippy::type_complexity)]
fn dictionary_parts<'a>(
    array: &'a dyn Array,
    column: &str,
) -> Result<(Vec<Option<&'a str>>, Vec<Option<usize>>)> {
    if !is_string(array.data_type()) {
        return Err(type_error(column, STRING, array.data_type()));
    }
    let dict = array
        .as_any_dictionary_opt()
        .ok_or_else(|| type_error(column, STRING, array.data_type()))?;
    let values = dict.values();
    if values.is_empty() {
        return Ok((Vec::new(), vec![None; array.len()]));
    }
    let mut strings = Vec::with_capacity(values.len());
    visit_plain_str(values.as_ref(), column, |_, s| strings.push(s))?;
    let nulls = array.logical_nulls();
    let keys = dict
        .normalized_keys()
        .into_iter()
        .enumerate()
        .map(|(i, key)| nulls.as_ref().is_none_or(|n| n.is_valid(i)).then_some(key))
        .collect();
    Ok((strings, keys))
}

/// Calls `f(row, value)` for every row of a string column; `None` for null.
pub(crate) fn visit_str<'a>(
    array: &'a dyn Array,
    column: &str,
    mut f: impl FnMut(usize, Option<&'a str>),
) -> Result<()> {
    if let DataType::Dictionary(..) = array.data_type() {
        let (strings, keys) = dictionary_parts(array, column)?;
        for (i, key) in keys.into_iter().enumerate() {
            f(i, key.and_then(|k| strings.get(k).copied().flatten()));
        }
        return Ok(());
    }
    visit_plain_str(array, column, f)
}

/// Maps every row of a string column to a code: `map(value)` for values, `null` for nulls.
///
/// Dictionary columns call `map` once per dictionary entry, not once per row.
pub(crate) fn map_str(
    array: &dyn Array,
    column: &str,
    null: u32,
    mut map: impl FnMut(&str) -> u32,
) -> Result<Vec<u32>> {
    if let DataType::Dictionary(..) = array.data_type() {
        let (strings, keys) = dictionary_parts(array, column)?;
        let value_codes: Vec<u32> = strings
            .into_iter()
            .map(|s| s.map_or(null, &mut map))
            .collect();
        return Ok(keys
            .into_iter()
            .map(|k| k.and_then(|k| value_codes.get(k).copied()).unwrap_or(null))
            .collect());
    }
    let mut codes = Vec::with_capacity(array.len());
    visit_plain_str(array, column, |_, s| codes.push(s.map_or(null, &mut map)))?;
    Ok(codes)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{
        DictionaryArray, Float32Array, Int32Array, StringArray, StringViewArray, UInt8Array,
    };
    use arrow::datatypes::Int16Type as K;

    use super::*;

    #[test]
    fn numeric_nulls_and_nan() {
        let a = Float32Array::from(vec![Some(1.5), None, Some(f32::NAN), Some(f32::INFINITY)]);
        let mut seen = Vec::new();
        visit_f64(&a, "x", |i, v| seen.push((i, v))).unwrap();
        assert_eq!(seen, vec![(0, Some(1.5)), (1, None), (2, None), (3, None)]);
        let sliced = Int32Array::from(vec![1, 2, 3]).slice(1, 2);
        let mut vals = Vec::new();
        visit_f64(&sliced, "x", |_, v| vals.push(v)).unwrap();
        assert_eq!(vals, vec![Some(2.0), Some(3.0)]);
        let err = visit_f64(&StringArray::from(vec!["a"]), "x", |_, _| {}).unwrap_err();
        assert!(
            err.to_string()
                .contains("column `x` has type Utf8, expected a numeric"),
            "{err}"
        );
    }

    #[test]
    fn strings_of_every_layout() {
        let plain = StringArray::from(vec![Some("a"), None, Some("b")]);
        let view = StringViewArray::from(vec![Some("a"), None, Some("b")]);
        let dict: DictionaryArray<K> = vec![Some("a"), None, Some("b")].into_iter().collect();
        let expected = [Some("a"), None, Some("b")];
        for array in [Arc::new(plain) as ArrayRef, Arc::new(view), Arc::new(dict)] {
            let mut seen = Vec::new();
            visit_str(array.as_ref(), "c", |_, s| seen.push(s.map(str::to_string))).unwrap();
            assert_eq!(
                seen,
                expected
                    .iter()
                    .map(|s| s.map(str::to_string))
                    .collect::<Vec<_>>()
            );
            let codes = map_str(array.as_ref(), "c", 99, |s| if s == "a" { 1 } else { 2 }).unwrap();
            assert_eq!(codes, vec![1, 99, 2]);
        }
        assert!(map_str(&UInt8Array::from(vec![1u8]), "c", 0, |_| 0).is_err());
    }

    #[test]
    fn ints_for_labels() {
        let mut seen = Vec::new();
        visit_i64(&UInt8Array::from(vec![Some(3), None]), "y", |_, v| {
            seen.push(v)
        })
        .unwrap();
        assert_eq!(seen, vec![Some(3), None]);
        assert!(visit_i64(&Float32Array::from(vec![1.0]), "y", |_, _| {}).is_err());
    }
}
