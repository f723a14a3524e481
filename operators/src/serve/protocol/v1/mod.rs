//! Raw JSON instances → an Arrow batch of the model's input schema, with errors naming the instance
//! and the field.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Date32Array, Float32Array, Float64Array, Int64Array, RecordBatch,
    StringArray, UInt64Array,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde_json::Value;

pub(crate) mod fast;

/// Describes the schema as JSON (`[{"name", "type", "nullable"}]`) for the model bundle.
pub fn schema_to_json(schema: &Schema) -> Value {
    Value::Array(
        schema
            .fields()
            .iter()
            .map(|f| serde_json::json!({"name": f.name(), "type": f.data_type().to_string(), "nullable": f.is_nullable()}))
            .collect(),
    )
}

/// Reads a schema written by [`schema_to_json`].
pub fn schema_from_json(value: &Value) -> Result<SchemaRef, String> {
    let fields = value
        .as_array()
        .ok_or("input_schema must be a list of fields")?;
    let mut out = Vec::with_capacity(fields.len());
    for f in fields {
        let name = f["name"]
            .as_str()
            .ok_or("input_schema field without a name")?;
        let type_name = f["type"]
            .as_str()
            .ok_or_else(|| format!("input_schema field '{name}' has no type"))?;
        let data_type: DataType = type_name
            .parse()
            .map_err(|e| format!("input_schema field '{name}': unknown type '{type_name}': {e}"))?;
        out.push(Field::new(
            name,
            data_type,
            f["nullable"].as_bool().unwrap_or(true),
        ));
    }
    Ok(Arc::new(Schema::new(out)))
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// JSON numbers (or nulls) as an FP32 array; `wrong(i, value, expected)` words the error for a
/// value that is not a number.
pub(crate) fn f32_array(
    values: &[&Value],
    wrong: impl Fn(usize, &Value, &str) -> String,
) -> Result<ArrayRef, String> {
    let mut out: Vec<Option<f32>> = Vec::with_capacity(values.len());
    for (i, v) in values.iter().enumerate() {
        out.push(match v {
            Value::Null => None,
            Value::Number(n) => {
                let x = n.as_f64().ok_or_else(|| wrong(i, v, "a number"))?;
                // Past f32's range the cast gives an infinity: refused, as the fast path does.
                if (x as f32).is_infinite() {
                    return Err(wrong(i, v, "a number within Float32's range"));
                }
                Some(x as f32)
            }
            other => return Err(wrong(i, other, "a number")),
        });
    }
    Ok(Arc::new(Float32Array::from(out)))
}

/// A JSON number as an exact integer: integers as they are, floats when integral (`2.0`), as
/// the fast path reads them; `None` for a fraction.
fn exact_int(n: &serde_json::Number) -> Option<i128> {
    n.as_i64()
        .map(i128::from)
        .or_else(|| n.as_u64().map(i128::from))
        .or_else(|| {
            // 2^127: every integral f64 below it in magnitude converts to i128 exactly.
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 1.7e38)
                .map(|f| f as i128)
        })
}

/// The inclusive range of an integer type.
fn int_range(dt: &DataType) -> (i128, i128) {
    match dt {
        DataType::Int8 => (i8::MIN.into(), i8::MAX.into()),
        DataType::Int16 => (i16::MIN.into(), i16::MAX.into()),
        DataType::Int32 => (i32::MIN.into(), i32::MAX.into()),
        DataType::UInt8 => (0, u8::MAX.into()),
        DataType::UInt16 => (0, u16::MAX.into()),
        DataType::UInt32 => (0, u32::MAX.into()),
        DataType::UInt64 => (0, u64::MAX.into()),
        _ => (i64::MIN.into(), i64::MAX.into()),
    }
}

fn timestamp_value(v: &Value, unit: &TimeUnit) -> Option<i64> {
    match v {
        Value::Number(n) => exact_int(n).and_then(|x| i64::try_from(x).ok()),
        Value::String(s) => {
            let parsed = chrono::DateTime::parse_from_rfc3339(s)
                .map(|d| d.naive_utc())
                .or_else(|_| chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f"))
                .or_else(|_| chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f"))
                .ok()?
                .and_utc();
            match unit {
                TimeUnit::Second => Some(parsed.timestamp()),
                TimeUnit::Millisecond => Some(parsed.timestamp_millis()),
                TimeUnit::Microsecond => Some(parsed.timestamp_micros()),
                TimeUnit::Nanosecond => parsed.timestamp_nanos_opt(),
            }
        }
        _ => None,
    }
}

/// Days since 1970-01-01 of a `"YYYY-MM-DD"` string or an integer.
fn date_value(v: &Value) -> Option<i32> {
    match v {
        Value::Number(n) => exact_int(n).and_then(|x| i32::try_from(x).ok()),
        Value::String(s) => {
            let date = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
            let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1)?;
            i32::try_from(date.signed_duration_since(epoch).num_days()).ok()
        }
        _ => None,
    }
}

/// Builds a batch of `schema` from JSON objects. Missing or null values are nulls where the field is
/// nullable; a non-nullable field that is missing, or a value of the wrong type, is an error that
/// names the instance and the field. Fields not in the schema are ignored.
pub fn instances_to_batch(instances: &[Value], schema: &SchemaRef) -> Result<RecordBatch, String> {
    for (i, inst) in instances.iter().enumerate() {
        if !inst.is_object() {
            return Err(format!(
                "instances[{i}] must be an object of field values, got {}",
                kind(inst)
            ));
        }
    }
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        let name = field.name();
        let values: Vec<&Value> = instances
            .iter()
            .map(|inst| inst.get(name).unwrap_or(&Value::Null))
            .collect();
        if !field.is_nullable()
            && let Some(i) = values.iter().position(|v| v.is_null())
        {
            return Err(format!(
                "instances[{i}]: missing required field '{name}' ({})",
                field.data_type()
            ));
        }
        let dt = field.data_type();
        let at = |i: usize| format!("instances[{i}].{name}");
        let array = json_column(&values, dt, name, &at)?;
        columns.push(array);
    }
    // A model whose preprocessing reads no input column still answers one row per instance.
    RecordBatch::try_new_with_options(
        Arc::clone(schema),
        columns,
        &arrow::array::RecordBatchOptions::new().with_row_count(Some(instances.len())),
    )
    .map_err(|e| e.to_string())
}

/// The values of one field (`at(i)` names value `i` in errors) as an array of type `dt`.
fn json_column(
    values: &[&Value],
    dt: &DataType,
    name: &str,
    at: &dyn Fn(usize) -> String,
) -> Result<ArrayRef, String> {
    let wrong = |i: usize, v: &Value, expected: &str| {
        format!("{}: expected {expected} ({dt}), got {}", at(i), kind(v))
    };
    // FP32 (the usual feature type) and strings are built as they are, without a cast.
    Ok(if *dt == DataType::Float32 {
        f32_array(values, wrong)?
    } else if dt.is_integer() {
        int_column(values, dt, name, at)?
    } else if dt.is_floating() || dt.is_numeric() {
        let mut out = Vec::with_capacity(values.len());
        for (i, v) in values.iter().enumerate() {
            out.push(match v {
                Value::Null => None,
                Value::Number(n) => Some(n.as_f64().ok_or_else(|| wrong(i, v, "a number"))?),
                other => return Err(wrong(i, other, "a number")),
            });
        }
        cast(&Float64Array::from(out), dt).map_err(|e| format!("field '{name}': {e}"))?
    } else if matches!(
        dt,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Dictionary(_, _)
    ) {
        let mut out: Vec<Option<&str>> = Vec::with_capacity(values.len());
        for (i, v) in values.iter().enumerate() {
            out.push(match v {
                Value::Null => None,
                Value::String(s) => Some(s.as_str()),
                other => return Err(wrong(i, other, "a string")),
            });
        }
        let strings = StringArray::from(out);
        if *dt == DataType::Utf8 {
            Arc::new(strings)
        } else {
            cast(&strings, dt).map_err(|e| format!("field '{name}': {e}"))?
        }
    } else if matches!(dt, DataType::Boolean) {
        let mut out = Vec::with_capacity(values.len());
        for (i, v) in values.iter().enumerate() {
            out.push(match v {
                Value::Null => None,
                Value::Bool(b) => Some(*b),
                other => return Err(wrong(i, other, "a boolean")),
            });
        }
        Arc::new(BooleanArray::from(out))
    } else if let DataType::Timestamp(unit, _) = dt {
        let mut out = Vec::with_capacity(values.len());
        for (i, v) in values.iter().enumerate() {
            out.push(match v {
                Value::Null => None,
                other => Some(
                    timestamp_value(other, unit)
                        .ok_or_else(|| wrong(i, other, "an RFC 3339 time or an integer"))?,
                ),
            });
        }
        cast(&Int64Array::from(out), dt).map_err(|e| format!("field '{name}': {e}"))?
    } else if matches!(dt, DataType::Date32 | DataType::Date64) {
        // "YYYY-MM-DD" or integer days since 1970-01-01, as the fast path reads them; a
        // string that is not a date is an error, not a null.
        let mut out: Vec<Option<i32>> = Vec::with_capacity(values.len());
        for (i, v) in values.iter().enumerate() {
            out.push(match v {
                Value::Null => None,
                other => Some(date_value(other).ok_or_else(|| {
                    wrong(
                        i,
                        other,
                        "a date (\"YYYY-MM-DD\" or integer days since 1970-01-01)",
                    )
                })?),
            });
        }
        cast(&Date32Array::from(out), dt).map_err(|e| format!("field '{name}': {e}"))?
    } else if let Some(item) = crate::serve::v2::list_item(dt) {
        list_array(values, item, dt, name, at)?
    } else {
        return Err(format!(
            "field '{name}' has type {dt}, which requests cannot provide yet"
        ));
    })
}

/// Integer values as a column of integer type `dt`: exact (no trip through f64) and
/// range-checked, a value the column cannot hold is an error naming it, never a wrapped or nulled
/// value.
fn int_column(
    values: &[&Value],
    dt: &DataType,
    name: &str,
    at: &dyn Fn(usize) -> String,
) -> Result<ArrayRef, String> {
    let wrong = |i: usize, v: &Value, expected: &str| {
        format!("{}: expected {expected} ({dt}), got {}", at(i), kind(v))
    };
    let (min, max) = int_range(dt);
    let mut out: Vec<Option<i128>> = Vec::with_capacity(values.len());
    for (i, v) in values.iter().enumerate() {
        out.push(match v {
            Value::Null => None,
            Value::Number(n) => {
                let x = exact_int(n)
                    .ok_or_else(|| format!("{}: expected an integer ({dt}), got {n}", at(i)))?;
                if x < min || x > max {
                    return Err(format!(
                        "{}: {x} is out of range for {dt} ({min} to {max})",
                        at(i)
                    ));
                }
                Some(x)
            }
            other => return Err(wrong(i, other, "an integer")),
        });
    }
    // In range, checked above: the conversions and the cast are exact.
    let array: ArrayRef = if min == 0 {
        Arc::new(
            out.iter()
                .map(|v| v.map(|x| x as u64))
                .collect::<UInt64Array>(),
        )
    } else {
        Arc::new(
            out.iter()
                .map(|v| v.map(|x| x as i64))
                .collect::<Int64Array>(),
        )
    };
    cast(&array, dt).map_err(|e| format!("field '{name}': {e}"))
}

/// JSON lists (or nulls) as a list column of type `dt`; element `k` of value `i` is named
/// `at(i)[k]` in errors.
fn list_array(
    values: &[&Value],
    item: &arrow::datatypes::FieldRef,
    dt: &DataType,
    name: &str,
    at: &dyn Fn(usize) -> String,
) -> Result<ArrayRef, String> {
    let mut elements: Vec<&Value> = Vec::new();
    let mut owners: Vec<(usize, usize)> = Vec::new();
    let mut lengths = Vec::with_capacity(values.len());
    let mut valid = Vec::with_capacity(values.len());
    for (i, v) in values.iter().enumerate() {
        match v {
            Value::Null => {
                lengths.push(0);
                valid.push(false);
            }
            Value::Array(items) => {
                owners.extend((0..items.len()).map(|k| (i, k)));
                elements.extend(items.iter());
                lengths.push(items.len());
                valid.push(true);
            }
            other => {
                return Err(format!(
                    "{}: expected a list ({dt}), got {}",
                    at(i),
                    kind(other)
                ));
            }
        }
    }
    let element_at = |e: usize| {
        let (i, k) = owners[e];
        format!("{}[{k}]", at(i))
    };
    if !item.is_nullable()
        && let Some(e) = elements.iter().position(|v| v.is_null())
    {
        return Err(format!(
            "{}: is null, but the list's elements are required",
            element_at(e)
        ));
    }
    let flat = json_column(&elements, item.data_type(), name, &element_at)?;
    let list = arrow::array::ListArray::try_new(
        Arc::clone(item),
        arrow::buffer::OffsetBuffer::<i32>::from_lengths(lengths),
        flat,
        Some(arrow::buffer::NullBuffer::from(valid)),
    )
    .map_err(|e| format!("field '{name}': {e}"))?;
    if matches!(dt, DataType::List(_)) {
        return Ok(Arc::new(list));
    }
    cast(&list, dt).map_err(|e| format!("field '{name}': {e}"))
}

/// The general path of a `/v1/predict` body (parsed as JSON): its `"instances"` as a batch of
/// `schema`, or the 400 (no instances list, a bad instance) or 413 (more than `max_rows`
/// instances) that names the problem.
pub(crate) fn v1_request_to_batch(
    request: &Value,
    schema: &SchemaRef,
    max_rows: usize,
) -> Result<RecordBatch, crate::serve::RequestError> {
    let Some(instances) = request.get("instances").and_then(Value::as_array) else {
        return Err(crate::serve::RequestError::bad(
            "request must be a JSON object with an \"instances\" list of records",
        ));
    };
    if instances.len() > max_rows {
        return Err(crate::serve::RequestError::with_status(
            413,
            format!(
                "{} rows in one request; the limit is {max_rows} (split the request)",
                instances.len()
            ),
        ));
    }
    instances_to_batch(instances, schema).map_err(crate::serve::RequestError::bad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, Date32Array, Float32Array, Int64Array};
    use serde_json::json;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("f0", DataType::Float32, false),
            Field::new("f3", DataType::Float32, true),
            Field::new("cat", DataType::Utf8, false),
            Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), true),
        ]))
    }

    #[test]
    fn decodes_and_names_bad_fields() {
        let batch = instances_to_batch(
            &[
                json!({"f0": 1.5, "cat": "c1", "ts": "2024-01-01T00:00:01Z"}),
                json!({"f0": -2, "f3": 0.5, "cat": "c7", "extra": true}),
            ],
            &schema(),
        )
        .unwrap();
        assert_eq!(batch.num_rows(), 2);
        let f3 = batch
            .column(1)
            .as_any()
            .downcast_ref::<Float32Array>()
            .unwrap();
        assert!(f3.is_null(0));
        assert_eq!(f3.value(1), 0.5);
        let err = instances_to_batch(
            &[json!({"f0": 1.0, "cat": "c1"}), json!({"cat": "c2"})],
            &schema(),
        )
        .unwrap_err();
        assert_eq!(err, "instances[1]: missing required field 'f0' (Float32)");
        let err = instances_to_batch(&[json!({"f0": "x", "cat": "c1"})], &schema()).unwrap_err();
        assert_eq!(
            err,
            "instances[0].f0: expected a number (Float32), got a string"
        );
        let s = schema_from_json(&schema_to_json(&schema())).unwrap();
        assert_eq!(s.as_ref(), schema().as_ref());
    }

    #[test]
    fn lists_of_values_for_list_columns() {
        use arrow::array::AsArray;
        let item = |dt| Arc::new(Field::new("item", dt, true));
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("r", DataType::List(item(DataType::Float32)), true),
            Field::new("t", DataType::LargeList(item(DataType::Utf8)), true),
        ]));
        let batch = instances_to_batch(
            &[
                json!({"r": [1.5, 2, null], "t": ["a"]}),
                json!({"r": [], "t": null}),
                json!({"t": ["b", "c"]}),
            ],
            &schema,
        )
        .unwrap();
        let r = batch.column(0).as_list::<i32>();
        assert_eq!((r.value(0).len(), r.value(0).null_count()), (3, 1));
        assert_eq!(r.value(1).len(), 0);
        assert!(r.is_null(2) && !r.is_null(1));
        let t = batch.column(1).as_list::<i64>();
        assert!(t.is_null(1));
        assert_eq!(t.value(2).as_string::<i32>().value(1), "c");
        let err = instances_to_batch(&[json!({"r": [1.0, "x"]})], &schema).unwrap_err();
        assert_eq!(
            err,
            "instances[0].r[1]: expected a number (Float32), got a string"
        );
        let err = instances_to_batch(&[json!({"r": 1.0})], &schema).unwrap_err();
        assert!(err.contains("instances[0].r: expected a list"), "{err}");
    }

    #[test]
    fn values_read_as_the_fast_path_reads_them() {
        // Found by the /v1 fuzz test, where the fast path and this one disagreed.
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("i", DataType::Int64, true),
            Field::new("k", DataType::Int8, true),
            Field::new("d", DataType::Date32, true),
            Field::new("t", DataType::Timestamp(TimeUnit::Second, None), true),
            Field::new("x", DataType::Float32, true),
        ]));
        // Integers exactly (not through f64, which made 2^53 + 1 into 2^53), integral floats
        // too; dates as integer days; timestamps as integral floats.
        let batch = instances_to_batch(
            &[json!({"i": 9_007_199_254_740_993_i64, "k": -128, "d": 19_844, "t": 5.0})],
            &schema,
        )
        .unwrap();
        let i = batch
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        assert_eq!(i.value(0), 9_007_199_254_740_993);
        let d = batch
            .column(2)
            .as_any()
            .downcast_ref::<Date32Array>()
            .unwrap();
        assert_eq!(d.value(0), 19_844);
        let one = |v: Value| instances_to_batch(&[v], &schema).unwrap_err();
        // Out of range was a silent null (the cast's "safe" mode), as was a bad date string;
        // past Float32's range was an infinity.
        assert_eq!(
            one(json!({"k": 300})),
            "instances[0].k: 300 is out of range for Int8 (-128 to 127)"
        );
        assert_eq!(
            one(json!({"d": "2024-02-30"})),
            "instances[0].d: expected a date (\"YYYY-MM-DD\" or integer days since 1970-01-01) (Date32), got a string"
        );
        assert_eq!(
            one(json!({"x": 1e39})),
            "instances[0].x: expected a number within Float32's range (Float32), got a number"
        );
        assert_eq!(
            one(json!({"i": 1.5})),
            "instances[0].i: expected an integer (Int64), got 1.5"
        );
    }
}
