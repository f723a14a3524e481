//! Feature values back to Arrow columns, and the types the features get.

use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Float64Array, Int64Array, StringArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use millrace_engine::features::{AggKind, FeatureSpec, Value};

use crate::{Error, Result};

/// True for the types a feature value holds ([`Value::from_array`]): no lists, structs or binary.
pub(crate) fn supported(data_type: &DataType) -> bool {
    data_type.is_integer()
        || data_type.is_floating()
        || matches!(
            data_type,
            DataType::Boolean
                | DataType::Utf8
                | DataType::LargeUtf8
                | DataType::Utf8View
                | DataType::Timestamp(..)
                | DataType::Date32
                | DataType::Date64
        )
}

/// The family a join key's type belongs to: keys of two families never match.
pub(crate) fn key_family(data_type: &DataType) -> &'static str {
    if data_type.is_integer() {
        "integer"
    } else if data_type.is_floating() {
        "float"
    } else if matches!(data_type, DataType::Boolean) {
        "boolean"
    } else {
        "string"
    }
}

/// An Arrow column of `data_type` from `values` (which [`Value::from_array`] made from that type).
pub(crate) fn column<'a>(
    values: impl Iterator<Item = &'a Value>,
    data_type: &DataType,
) -> Result<ArrayRef> {
    let wrong = |v: &Value| Error::Internal(format!("feature value {v:?} in a {data_type} column"));
    let array: ArrayRef = match data_type {
        DataType::Boolean => Arc::new(
            values
                .map(|v| match v {
                    Value::Null => Ok(None),
                    Value::Bool(b) => Ok(Some(*b)),
                    other => Err(wrong(other)),
                })
                .collect::<Result<BooleanArray>>()?,
        ),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Arc::new(
            values
                .map(|v| match v {
                    Value::Null => Ok(None),
                    Value::Str(s) => Ok(Some(s.as_str())),
                    other => Err(wrong(other)),
                })
                .collect::<Result<StringArray>>()?,
        ),
        t if t.is_floating() => Arc::new(
            values
                .map(|v| match v {
                    Value::Null => Ok(None),
                    v => v.as_f64().map(Some).ok_or_else(|| wrong(v)),
                })
                .collect::<Result<Float64Array>>()?,
        ),
        _ => Arc::new(
            values
                .map(|v| match v {
                    Value::Null => Ok(None),
                    Value::Int(i) => Ok(Some(*i)),
                    other => Err(wrong(other)),
                })
                .collect::<Result<Int64Array>>()?,
        ),
    };
    if array.data_type() == data_type {
        return Ok(array);
    }
    // Int64 → Date32 goes through Int32 (the raw day number).
    let array = match data_type {
        DataType::Date32 => cast(&array, &DataType::Int32)?,
        _ => array,
    };
    Ok(cast(&array, data_type)?)
}

/// The type of each feature, in [`FeatureSpec::feature_names`] order: a table column keeps its
/// type; counts are Int64, means Float64, a sum Int64 over integers and Float64 otherwise, and
/// min, max and last keep their input's type.
pub(crate) fn feature_fields(
    spec: &FeatureSpec,
    table: Option<&Schema>,
    records: &Schema,
    inputs: &[Option<String>],
) -> Result<Vec<Field>> {
    let mut fields = Vec::new();
    for name in &spec.table_columns {
        let field = table
            .and_then(|t| t.field_with_name(name).ok())
            .ok_or_else(|| {
                Error::config(
                    "features.table.columns",
                    format!("the table has no column `{name}`"),
                )
            })?;
        fields.push(Field::new(name, field.data_type().clone(), true));
    }
    for (a, input) in spec.aggregates.iter().zip(inputs) {
        let input_type = match input {
            Some(column) => Some(records.field_with_name(column).map(|f| f.data_type().clone()).map_err(|_| {
                Error::config(
                    "features.aggregate",
                    format!("aggregate `{}` reads column `{column}`, which the preprocess SQL does not produce", a.name),
                )
            })?),
            None => None,
        };
        let data_type = match (a.kind, input_type) {
            (AggKind::Count | AggKind::CountDistinct, _) => DataType::Int64,
            (AggKind::Mean, _) => DataType::Float64,
            (AggKind::Sum, Some(t)) if t.is_integer() => DataType::Int64,
            (AggKind::Sum, _) => DataType::Float64,
            (_, Some(t)) => t,
            (_, None) => DataType::Null,
        };
        fields.push(Field::new(&a.name, data_type, true));
    }
    Ok(fields)
}

/// `records` with the feature fields after its own.
pub(crate) fn with_features(records: &Schema, features: &[Field]) -> SchemaRef {
    let fields = records
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .chain(features.iter().cloned());
    Arc::new(Schema::new(fields.collect::<Vec<_>>()))
}
