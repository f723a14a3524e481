//! Open Inference Protocol (KServe v2) REST bodies, and named input tensors → an Arrow batch of
//! the model's raw input schema.
//!
//! Each column of the input schema is one input tensor of shape `[N]` (or `[N, 1]`), so a request
//! carries N records column by column. Errors name the input, and the value index where one is at
//! fault, in the style of [`super::instances_to_batch`].

use std::collections::HashSet;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, RecordBatchOptions, StringArray,
    UInt64Array,
};
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::{DataType, Schema, SchemaRef};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The `platform` reported in [`ModelMetadata`].
pub const PLATFORM: &str = "millrace";

/// `POST /v2/models/{name}[/versions/{v}]/infer` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InferenceRequest {
    /// Request id, echoed in the response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Request parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Map<String, Value>>,
    /// Input tensors, one per input column.
    pub inputs: Vec<RequestInput>,
    /// Which outputs to return; all when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Vec<RequestOutput>>,
}

/// One input tensor of an [`InferenceRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestInput {
    /// Input (column) name.
    pub name: String,
    /// Tensor shape: `[N]` or `[N, 1]`.
    pub shape: Vec<i64>,
    /// v2 datatype (`FP32`, `INT64`, `BYTES`, …).
    pub datatype: String,
    /// Input parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Map<String, Value>>,
    /// The values, flat in row-major order (or nested one level).
    pub data: Value,
}

/// One requested output of an [`InferenceRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestOutput {
    /// Output name.
    pub name: String,
    /// Output parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Map<String, Value>>,
}

/// Answer to an [`InferenceRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InferenceResponse {
    /// Name of the model that answered.
    pub model_name: String,
    /// Version of the model that answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_version: Option<String>,
    /// The request's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Response parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Map<String, Value>>,
    /// Output tensors.
    pub outputs: Vec<ResponseOutput>,
}

/// One output tensor of an [`InferenceResponse`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseOutput {
    /// Output name.
    pub name: String,
    /// Tensor shape.
    pub shape: Vec<i64>,
    /// v2 datatype.
    pub datatype: String,
    /// The values, flat in row-major order.
    pub data: Value,
}

/// `GET /v2/models/{name}` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelMetadata {
    /// Model name.
    pub name: String,
    /// Versions available.
    pub versions: Vec<String>,
    /// Serving platform ([`PLATFORM`]).
    pub platform: String,
    /// Input tensors.
    pub inputs: Vec<TensorMetadata>,
    /// Output tensors.
    pub outputs: Vec<TensorMetadata>,
}

/// Name, datatype and shape of one tensor (`-1` for a variable dimension).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorMetadata {
    /// Tensor name.
    pub name: String,
    /// v2 datatype.
    pub datatype: String,
    /// Shape, `-1` where variable.
    pub shape: Vec<i64>,
}

/// v2 error body: `{"error": "…"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: String,
}

/// v2 datatype of an Arrow type: BOOL, INT8..INT64, UINT8..UINT64, FP16/FP32/FP64, BYTES
/// (Utf8/LargeUtf8/Utf8View/Binary/LargeBinary/BinaryView, and dictionaries of them); None for
/// others.
pub fn datatype_of(t: &DataType) -> Option<&'static str> {
    Some(match t {
        DataType::Boolean => "BOOL",
        DataType::Int8 => "INT8",
        DataType::Int16 => "INT16",
        DataType::Int32 => "INT32",
        DataType::Int64 => "INT64",
        DataType::UInt8 => "UINT8",
        DataType::UInt16 => "UINT16",
        DataType::UInt32 => "UINT32",
        DataType::UInt64 => "UINT64",
        DataType::Float16 => "FP16",
        DataType::Float32 => "FP32",
        DataType::Float64 => "FP64",
        DataType::Utf8
        | DataType::LargeUtf8
        | DataType::Utf8View
        | DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView => "BYTES",
        DataType::Dictionary(_, values) => return datatype_of(values),
        _ => return None,
    })
}

/// The datatype a client sends for a column: [`datatype_of`], else BYTES for dates and timestamps
/// (sent as strings) and FP64 for decimals.
fn input_datatype(t: &DataType) -> Option<&'static str> {
    datatype_of(t).or(match t {
        DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64 => Some("BYTES"),
        t if t.is_numeric() => Some("FP64"),
        _ => None,
    })
}

/// Model metadata for a raw input schema (each column one input of shape `[-1]`) and the outputs:
/// classification has `class` (INT64, or BYTES when `class_names`) of shape `[-1]` and
/// `probabilities` (FP32) of shape `[-1, num_classes]`; regression has `value` (FP32) of `[-1]`.
pub fn model_metadata(
    name: &str,
    versions: &[u64],
    input_schema: &Schema,
    num_classes: Option<usize>,
    class_names: bool,
) -> ModelMetadata {
    let tensor = |name: &str, datatype: &str, shape: Vec<i64>| TensorMetadata {
        name: name.to_owned(),
        datatype: datatype.to_owned(),
        shape,
    };
    let inputs = input_schema
        .fields()
        .iter()
        .map(|f| {
            let dt = input_datatype(f.data_type())
                .map(str::to_owned)
                .unwrap_or_else(|| f.data_type().to_string());
            tensor(f.name(), &dt, vec![-1])
        })
        .collect();
    let outputs = match num_classes {
        Some(k) => vec![
            tensor(
                "class",
                if class_names { "BYTES" } else { "INT64" },
                vec![-1],
            ),
            tensor(
                "probabilities",
                "FP32",
                vec![-1, i64::try_from(k).unwrap_or(i64::MAX)],
            ),
        ],
        None => vec![tensor("value", "FP32", vec![-1])],
    };
    ModelMetadata {
        name: name.to_owned(),
        versions: versions.iter().map(u64::to_string).collect(),
        platform: PLATFORM.to_owned(),
        inputs,
        outputs,
    }
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

fn quoted<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    let out: Vec<String> = names.into_iter().map(|n| format!("'{n}'")).collect();
    if out.is_empty() {
        "none".to_owned()
    } else {
        out.join(", ")
    }
}

fn shape_str(shape: &[i64]) -> String {
    let dims: Vec<String> = shape.iter().map(i64::to_string).collect();
    format!("[{}]", dims.join(", "))
}

/// What the values of a v2 datatype are in JSON.
#[derive(Clone, Copy)]
enum Wire {
    Bool,
    Int { min: i64, max: i64 },
    UInt { max: u64 },
    Float,
    Bytes,
}

const DATATYPES: &str =
    "BOOL, INT8, INT16, INT32, INT64, UINT8, UINT16, UINT32, UINT64, FP16, FP32, FP64, BYTES";

fn wire(datatype: &str) -> Option<Wire> {
    Some(match datatype {
        "BOOL" => Wire::Bool,
        "INT8" => Wire::Int {
            min: i8::MIN.into(),
            max: i8::MAX.into(),
        },
        "INT16" => Wire::Int {
            min: i16::MIN.into(),
            max: i16::MAX.into(),
        },
        "INT32" => Wire::Int {
            min: i32::MIN.into(),
            max: i32::MAX.into(),
        },
        "INT64" => Wire::Int {
            min: i64::MIN,
            max: i64::MAX,
        },
        "UINT8" => Wire::UInt {
            max: u8::MAX.into(),
        },
        "UINT16" => Wire::UInt {
            max: u16::MAX.into(),
        },
        "UINT32" => Wire::UInt {
            max: u32::MAX.into(),
        },
        "UINT64" => Wire::UInt { max: u64::MAX },
        "FP16" | "FP32" | "FP64" => Wire::Float,
        "BYTES" => Wire::Bytes,
        _ => return None,
    })
}

/// Whether values sent as `wire` may fill a column of type `column`.
fn accepts(column: &DataType, wire: Wire) -> bool {
    match wire {
        Wire::Bool => matches!(column, DataType::Boolean),
        Wire::Int { .. } | Wire::UInt { .. } => {
            column.is_numeric() || matches!(column, DataType::Timestamp(_, _))
        }
        Wire::Float => column.is_floating() || (column.is_numeric() && !column.is_integer()),
        Wire::Bytes => {
            matches!(
                column,
                DataType::Utf8
                    | DataType::LargeUtf8
                    | DataType::Utf8View
                    | DataType::Binary
                    | DataType::LargeBinary
                    | DataType::BinaryView
                    | DataType::Timestamp(_, _)
                    | DataType::Date32
                    | DataType::Date64
            ) || matches!(column, DataType::Dictionary(_, v) if datatype_of(v) == Some("BYTES"))
        }
    }
}

/// The values of `data`, flattened one level (`[[1], [2]]` → `[1, 2]`).
fn flatten<'a>(name: &str, data: &'a Value) -> Result<Vec<&'a Value>, String> {
    let items = data.as_array().ok_or_else(|| {
        format!(
            "input '{name}': data must be a list of values, got {}",
            kind(data)
        )
    })?;
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Value::Array(inner) => {
                for v in inner {
                    if v.is_array() {
                        return Err(format!(
                            "input '{name}': data is nested more than one level deep"
                        ));
                    }
                    out.push(v);
                }
            }
            v => out.push(v),
        }
    }
    Ok(out)
}

/// The rows an input's shape says it carries: `[N]` or `[N, 1]`.
fn rows_of(input: &RequestInput) -> Result<usize, String> {
    let name = &input.name;
    let n = match input.shape.as_slice() {
        [n] | [n, 1] => *n,
        other => {
            return Err(format!(
                "input '{name}': shape {} is not supported; each input is one column, so its shape must be [N] or [N, 1]",
                shape_str(other)
            ));
        }
    };
    usize::try_from(n).map_err(|_| {
        format!(
            "input '{name}': shape {} has a negative dimension",
            shape_str(&input.shape)
        )
    })
}

/// Named input tensors → a batch of `schema` (the model's raw input schema). Every column must be
/// given exactly once and nothing else; shapes are `[N]` or `[N, 1]` with the same N throughout;
/// the datatype must match the column or be castable to it (INT*/UINT* → integer and float
/// columns, FP* → float columns, BYTES → string, date and timestamp columns); JSON `null` is a
/// null where the column is nullable.
pub fn request_to_batch(req: &InferenceRequest, schema: &SchemaRef) -> Result<RecordBatch, String> {
    if req
        .parameters
        .as_ref()
        .is_some_and(|p| p.contains_key("binary_data_size"))
    {
        return Err(
            "binary tensor data (binary_data_size) is not supported; send values in 'data'"
                .to_owned(),
        );
    }
    let mut seen = HashSet::with_capacity(req.inputs.len());
    let mut unknown = Vec::new();
    for input in &req.inputs {
        if !seen.insert(input.name.as_str()) {
            return Err(format!("input '{}' is given more than once", input.name));
        }
        if schema.field_with_name(&input.name).is_err() {
            unknown.push(input.name.as_str());
        }
    }
    let expected = || quoted(schema.fields().iter().map(|f| f.name().as_str()));
    if !unknown.is_empty() {
        return Err(format!(
            "unknown input{} {}; the model's inputs are: {}",
            if unknown.len() == 1 { "" } else { "s" },
            quoted(unknown),
            expected()
        ));
    }
    let mut rows: Option<(usize, &str)> = None;
    for input in &req.inputs {
        let n = rows_of(input)?;
        match rows {
            Some((first, first_name)) if first != n => {
                return Err(format!(
                    "input '{}': shape {} says {n} rows, but input '{first_name}' has {first}",
                    input.name,
                    shape_str(&input.shape)
                ));
            }
            Some(_) => {}
            None => rows = Some((n, &input.name)),
        }
    }
    let rows = rows.map_or(0, |(n, _)| n);
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        let input = req
            .inputs
            .iter()
            .find(|i| i.name == *field.name())
            .ok_or_else(|| {
                format!(
                    "missing input '{}' ({}); given: {}",
                    field.name(),
                    input_datatype(field.data_type()).unwrap_or("unsupported"),
                    quoted(req.inputs.iter().map(|i| i.name.as_str()))
                )
            })?;
        columns.push(input_column(
            input,
            field.data_type(),
            field.is_nullable(),
            rows,
        )?);
    }
    RecordBatch::try_new_with_options(
        Arc::clone(schema),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(rows)),
    )
    .map_err(|e| e.to_string())
}

/// One input tensor → an array of the column's type.
fn input_column(
    input: &RequestInput,
    column: &DataType,
    nullable: bool,
    rows: usize,
) -> Result<ArrayRef, String> {
    let name = &input.name;
    if input
        .parameters
        .as_ref()
        .is_some_and(|p| p.contains_key("binary_data_size"))
    {
        return Err(format!(
            "input '{name}': binary tensor data (binary_data_size) is not supported; send values in 'data'"
        ));
    }
    let Some(expected) = input_datatype(column) else {
        return Err(format!(
            "input '{name}': column type {column} cannot be provided by requests yet"
        ));
    };
    let dt = input.datatype.as_str();
    let wire = wire(dt).ok_or_else(|| {
        format!("input '{name}': unknown datatype '{dt}'; expected one of {DATATYPES}")
    })?;
    if !accepts(column, wire) {
        return Err(format!(
            "input '{name}': datatype {dt} does not fit column type {column}; send {expected}"
        ));
    }
    let values = flatten(name, &input.data)?;
    if values.len() != rows {
        return Err(format!(
            "input '{name}': expected {rows} values for shape {}, got {}",
            shape_str(&input.shape),
            values.len()
        ));
    }
    if !nullable && let Some(i) = values.iter().position(|v| v.is_null()) {
        return Err(format!(
            "input '{name}': data[{i}] is null, but the input is required ({column})"
        ));
    }
    let wrong = |i: usize, v: &Value, expected: &str| {
        format!(
            "input '{name}': data[{i}]: expected {expected} for {dt}, got {}",
            kind(v)
        )
    };
    let array: ArrayRef = match wire {
        Wire::Bool => {
            let mut out = Vec::with_capacity(rows);
            for (i, v) in values.iter().enumerate() {
                out.push(match v {
                    Value::Null => None,
                    Value::Bool(b) => Some(*b),
                    other => return Err(wrong(i, other, "a boolean")),
                });
            }
            Arc::new(BooleanArray::from(out))
        }
        Wire::Int { min, max } => {
            let mut out = Vec::with_capacity(rows);
            for (i, v) in values.iter().enumerate() {
                out.push(match v {
                    Value::Null => None,
                    Value::Number(n) => {
                        let x = n
                            .as_i64()
                            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9.2e18).map(|f| f as i64))
                            .ok_or_else(|| {
                                format!("input '{name}': data[{i}]: expected an integer for {dt}, got {n}")
                            })?;
                        if x < min || x > max {
                            return Err(format!(
                                "input '{name}': data[{i}]: {x} is out of range for {dt}"
                            ));
                        }
                        Some(x)
                    }
                    other => return Err(wrong(i, other, "an integer")),
                });
            }
            Arc::new(Int64Array::from(out))
        }
        Wire::UInt { max } => {
            let mut out = Vec::with_capacity(rows);
            for (i, v) in values.iter().enumerate() {
                out.push(match v {
                    Value::Null => None,
                    Value::Number(n) => {
                        let x = n.as_u64().ok_or_else(|| {
                            format!("input '{name}': data[{i}]: expected an unsigned integer for {dt}, got {n}")
                        })?;
                        if x > max {
                            return Err(format!(
                                "input '{name}': data[{i}]: {x} is out of range for {dt}"
                            ));
                        }
                        Some(x)
                    }
                    other => return Err(wrong(i, other, "an unsigned integer")),
                });
            }
            Arc::new(UInt64Array::from(out))
        }
        Wire::Float => {
            let mut out = Vec::with_capacity(rows);
            for (i, v) in values.iter().enumerate() {
                out.push(match v {
                    Value::Null => None,
                    Value::Number(n) => Some(n.as_f64().ok_or_else(|| wrong(i, v, "a number"))?),
                    other => return Err(wrong(i, other, "a number")),
                });
            }
            Arc::new(Float64Array::from(out))
        }
        Wire::Bytes => {
            let mut out: Vec<Option<&str>> = Vec::with_capacity(rows);
            for (i, v) in values.iter().enumerate() {
                out.push(match v {
                    Value::Null => None,
                    Value::String(s) => Some(s.as_str()),
                    other => return Err(wrong(i, other, "a string")),
                });
            }
            Arc::new(StringArray::from(out))
        }
    };
    if array.data_type() == column {
        return Ok(array);
    }
    let strict = CastOptions {
        safe: false,
        ..Default::default()
    };
    cast_with_options(&array, column, &strict)
        .map_err(|e| format!("input '{name}': {dt} values do not fit column type {column}: {e}"))
}

/// Checks that `predictions` holds `rows` × width values (width = `num_classes`, or 1 for
/// regression) and returns the width.
pub(super) fn prediction_width(
    predictions: &[f32],
    rows: usize,
    num_classes: Option<usize>,
) -> Result<usize, String> {
    let width = num_classes.unwrap_or(1);
    if width == 0 {
        return Err("a classifier needs at least one class".to_owned());
    }
    if rows.checked_mul(width) != Some(predictions.len()) {
        return Err(format!(
            "the model returned {} values for {rows} rows of {width}",
            predictions.len()
        ));
    }
    Ok(width)
}

/// Index of the largest probability (the first on ties), as the v1 endpoint picks it.
pub(super) fn argmax(probabilities: &[f32]) -> usize {
    probabilities
        .iter()
        .enumerate()
        .fold((0usize, f32::NEG_INFINITY), |acc, (i, v)| {
            if *v > acc.1 { (i, *v) } else { acc }
        })
        .0
}

/// The name of class `index`, or an error when the model has fewer names.
pub(super) fn class_name(names: &[String], index: usize) -> Result<&str, String> {
    names.get(index).map(String::as_str).ok_or_else(|| {
        format!(
            "class {index} has no name: the model has {} class names",
            names.len()
        )
    })
}

/// An f32 as JSON with its shortest decimal form (`0.2`, not `0.20000000298023224`); null when not
/// finite.
fn f32_json(v: f32) -> Value {
    v.to_string()
        .parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map_or(Value::Null, Value::Number)
}

fn dim(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Response outputs from predictions, `rows` × width f32 values (probabilities, or one value per
/// row for regression): classification gives `class` (INT64 index, or BYTES name when
/// `class_names` is given) and `probabilities` (FP32 `[rows, num_classes]`); regression gives
/// `value` (FP32 `[rows]`). `requested` names pick which outputs are returned, in that order;
/// an unknown name is an error naming it.
pub fn response_outputs(
    predictions: &[f32],
    rows: usize,
    num_classes: Option<usize>,
    class_names: Option<&[String]>,
    requested: Option<&[RequestOutput]>,
) -> Result<Vec<ResponseOutput>, String> {
    let width = prediction_width(predictions, rows, num_classes)?;
    let available: &[&str] = if num_classes.is_some() {
        &["class", "probabilities"]
    } else {
        &["value"]
    };
    let mut names: Vec<&str> = Vec::new();
    match requested {
        Some(req) if !req.is_empty() => {
            for r in req {
                let name = available.iter().find(|a| **a == r.name).ok_or_else(|| {
                    format!(
                        "unknown output '{}'; the model's outputs are: {}",
                        r.name,
                        quoted(available.iter().copied())
                    )
                })?;
                if !names.contains(name) {
                    names.push(name);
                }
            }
        }
        _ => names.extend_from_slice(available),
    }
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let (datatype, shape, data) = match name {
            "class" => {
                let classes = predictions.chunks(width).map(argmax);
                match class_names {
                    Some(names) => (
                        "BYTES",
                        vec![dim(rows)],
                        classes
                            .map(|c| class_name(names, c).map(Value::from))
                            .collect::<Result<Vec<_>, _>>()?,
                    ),
                    None => ("INT64", vec![dim(rows)], classes.map(Value::from).collect()),
                }
            }
            "probabilities" => (
                "FP32",
                vec![dim(rows), dim(width)],
                predictions.iter().map(|v| f32_json(*v)).collect(),
            ),
            _ => (
                "FP32",
                vec![dim(rows)],
                predictions.iter().map(|v| f32_json(*v)).collect(),
            ),
        };
        out.push(ResponseOutput {
            name: name.to_owned(),
            shape,
            datatype: datatype.to_owned(),
            data: Value::Array(data),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Field, Float32Type, Int32Type, TimeUnit, TimestampMicrosecondType};
    use serde_json::json;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("f0", DataType::Float32, false),
            Field::new("f3", DataType::Float32, true),
            Field::new("n", DataType::Int32, true),
            Field::new("cat", DataType::Utf8, false),
        ]))
    }

    fn request(inputs: Value) -> InferenceRequest {
        serde_json::from_value(json!({ "id": "r1", "inputs": inputs })).unwrap()
    }

    fn good_inputs() -> Value {
        json!([
            {"name": "f0", "shape": [3], "datatype": "FP32", "data": [1.5, -2, 0.25]},
            {"name": "f3", "shape": [3, 1], "datatype": "FP64", "data": [[0.5], [null], [3]]},
            {"name": "n", "shape": [3], "datatype": "INT64", "data": [7, null, -1]},
            {"name": "cat", "shape": [3, 1], "datatype": "BYTES", "data": ["c1", "c7", "c1"]},
        ])
    }

    fn err(inputs: Value) -> String {
        request_to_batch(&request(inputs), &schema()).unwrap_err()
    }

    /// `good_inputs` with input `i` changed by `f`.
    fn with(i: usize, f: impl FnOnce(&mut Value)) -> Value {
        let mut v = good_inputs();
        f(&mut v[i]);
        v
    }

    #[test]
    fn request_becomes_a_batch() {
        let req = request(good_inputs());
        assert_eq!(req.id.as_deref(), Some("r1"));
        let batch = request_to_batch(&req, &schema()).unwrap();
        assert_eq!(batch.num_rows(), 3);
        assert_eq!(batch.schema(), schema());
        let f0 = batch.column(0).as_primitive::<Float32Type>();
        assert_eq!(f0.values().as_ref(), &[1.5, -2.0, 0.25]);
        let f3 = batch.column(1).as_primitive::<Float32Type>();
        assert_eq!(f3.value(0), 0.5);
        assert!(f3.is_null(1));
        assert_eq!(f3.value(2), 3.0);
        let n = batch.column(2).as_primitive::<Int32Type>();
        assert_eq!(n.value(0), 7);
        assert!(n.is_null(1));
        assert_eq!(n.value(2), -1);
        let cat = batch.column(3).as_string::<i32>();
        assert_eq!(
            cat.iter().collect::<Vec<_>>(),
            [Some("c1"), Some("c7"), Some("c1")]
        );
        // Input order does not matter; INT into a float column and UINT into an int column cast.
        let batch = request_to_batch(
            &request(json!([
                {"name": "cat", "shape": [1], "datatype": "BYTES", "data": ["x"]},
                {"name": "n", "shape": [1], "datatype": "UINT8", "data": [200]},
                {"name": "f3", "shape": [1], "datatype": "INT32", "data": [4]},
                {"name": "f0", "shape": [1], "datatype": "FP16", "data": [1]},
            ])),
            &schema(),
        )
        .unwrap();
        assert_eq!(batch.column(1).as_primitive::<Float32Type>().value(0), 4.0);
        assert_eq!(batch.column(2).as_primitive::<Int32Type>().value(0), 200);
    }

    #[test]
    fn timestamps_and_empty_requests() {
        let schema = Arc::new(Schema::new(vec![Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            true,
        )]));
        let batch = request_to_batch(
            &request(json!([{"name": "ts", "shape": [2], "datatype": "BYTES",
                "data": ["2024-01-01T00:00:01Z", null]}])),
            &schema,
        )
        .unwrap();
        let ts = batch.column(0).as_primitive::<TimestampMicrosecondType>();
        assert_eq!(ts.value(0), 1_704_067_201_000_000);
        assert!(ts.is_null(1));
        let batch = request_to_batch(
            &request(json!([{"name": "ts", "shape": [0], "datatype": "BYTES", "data": []}])),
            &schema,
        )
        .unwrap();
        assert_eq!(batch.num_rows(), 0);
    }

    #[test]
    fn names_what_is_wrong() {
        assert_eq!(
            err(with(1, |v| v["data"] = json!([0.5, 1, 2, 3]))),
            "input 'f3': expected 3 values for shape [3, 1], got 4"
        );
        let mut missing = good_inputs();
        missing.as_array_mut().unwrap().remove(1);
        assert_eq!(
            err(missing),
            "missing input 'f3' (FP32); given: 'f0', 'n', 'cat'"
        );
        let mut extra = good_inputs();
        for name in ["zz", "yy"] {
            extra
                .as_array_mut()
                .unwrap()
                .push(json!({"name": name, "shape": [3], "datatype": "FP32", "data": [1, 2, 3]}));
        }
        assert_eq!(
            err(extra),
            "unknown inputs 'zz', 'yy'; the model's inputs are: 'f0', 'f3', 'n', 'cat'"
        );
        let mut twice = good_inputs();
        let first = twice[0].clone();
        twice.as_array_mut().unwrap().push(first);
        assert_eq!(err(twice), "input 'f0' is given more than once");
        assert_eq!(
            err(with(2, |v| v["shape"] = json!([2]))),
            "input 'n': shape [2] says 2 rows, but input 'f0' has 3"
        );
        assert_eq!(
            err(with(0, |v| v["shape"] = json!([3, 2]))),
            "input 'f0': shape [3, 2] is not supported; each input is one column, so its shape must be [N] or [N, 1]"
        );
        assert_eq!(
            err(with(0, |v| v["shape"] = json!([-1]))),
            "input 'f0': shape [-1] has a negative dimension"
        );
        assert_eq!(
            err(with(0, |v| v["datatype"] = json!("FLOAT"))),
            format!("input 'f0': unknown datatype 'FLOAT'; expected one of {DATATYPES}")
        );
        assert_eq!(
            err(with(2, |v| v["datatype"] = json!("FP32"))),
            "input 'n': datatype FP32 does not fit column type Int32; send INT32"
        );
        assert_eq!(
            err(with(3, |v| v["datatype"] = json!("INT64"))),
            "input 'cat': datatype INT64 does not fit column type Utf8; send BYTES"
        );
        assert_eq!(
            err(with(0, |v| v["datatype"] = json!("BYTES"))),
            "input 'f0': datatype BYTES does not fit column type Float32; send FP32"
        );
        assert_eq!(
            err(with(0, |v| v["data"] = json!([1, null, 2]))),
            "input 'f0': data[1] is null, but the input is required (Float32)"
        );
        assert_eq!(
            err(with(0, |v| v["data"] = json!([1, "x", 2]))),
            "input 'f0': data[1]: expected a number for FP32, got a string"
        );
        assert_eq!(
            err(with(3, |v| v["data"] = json!(["a", 2, "c"]))),
            "input 'cat': data[1]: expected a string for BYTES, got a number"
        );
        assert_eq!(
            err(with(2, |v| v["data"] = json!([1, 2.5, 3]))),
            "input 'n': data[1]: expected an integer for INT64, got 2.5"
        );
        assert_eq!(
            err(with(2, |v| {
                v["datatype"] = json!("INT8");
                v["data"] = json!([1, 300, 3]);
            })),
            "input 'n': data[1]: 300 is out of range for INT8"
        );
        assert_eq!(
            err(with(2, |v| v["data"] = json!([1, 2, 3_000_000_000_i64]))),
            "input 'n': INT64 values do not fit column type Int32: Cast error: Can't cast value 3000000000 to type Int32"
        );
        assert_eq!(
            err(with(0, |v| v["data"] = json!([[1, [2]], 3]))),
            "input 'f0': data is nested more than one level deep"
        );
        assert_eq!(
            err(with(0, |v| v["data"] = json!("1,2,3"))),
            "input 'f0': data must be a list of values, got a string"
        );
    }

    #[test]
    fn metadata_lists_inputs_and_outputs() {
        let m = model_metadata("churn", &[1, 3], &schema(), Some(2), true);
        assert_eq!(m.name, "churn");
        assert_eq!(m.versions, ["1", "3"]);
        assert_eq!(m.platform, "millrace");
        let inputs: Vec<(&str, &str, &[i64])> = m
            .inputs
            .iter()
            .map(|t| (t.name.as_str(), t.datatype.as_str(), t.shape.as_slice()))
            .collect();
        assert_eq!(
            inputs,
            [
                ("f0", "FP32", &[-1][..]),
                ("f3", "FP32", &[-1]),
                ("n", "INT32", &[-1]),
                ("cat", "BYTES", &[-1]),
            ]
        );
        assert_eq!(
            serde_json::to_value(&m.outputs).unwrap(),
            json!([
                {"name": "class", "datatype": "BYTES", "shape": [-1]},
                {"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]},
            ])
        );
        let m = model_metadata("c", &[1], &schema(), Some(3), false);
        assert_eq!(m.outputs[0].datatype, "INT64");
        assert_eq!(m.outputs[1].shape, [-1, 3]);
        let m = model_metadata("r", &[], &schema(), None, false);
        assert_eq!(
            serde_json::to_value(&m.outputs).unwrap(),
            json!([{"name": "value", "datatype": "FP32", "shape": [-1]}])
        );
        assert_eq!(datatype_of(&DataType::UInt16), Some("UINT16"));
        assert_eq!(datatype_of(&DataType::LargeUtf8), Some("BYTES"));
        assert_eq!(datatype_of(&DataType::Date32), None);
    }

    #[test]
    fn outputs_from_predictions() {
        let probs = [0.2, 0.8, 0.6, 0.4, 0.5, 0.5];
        let all = response_outputs(&probs, 3, Some(2), None, None).unwrap();
        assert_eq!(
            serde_json::to_value(&all).unwrap(),
            json!([
                {"name": "class", "shape": [3], "datatype": "INT64", "data": [1, 0, 0]},
                {"name": "probabilities", "shape": [3, 2], "datatype": "FP32",
                 "data": [0.2, 0.8, 0.6, 0.4, 0.5, 0.5]},
            ])
        );
        let names = ["no".to_owned(), "yes".to_owned()];
        let want = |names: &[&str]| -> Vec<RequestOutput> {
            names
                .iter()
                .map(|n| RequestOutput {
                    name: (*n).to_owned(),
                    parameters: None,
                })
                .collect()
        };
        let class = response_outputs(
            &probs,
            3,
            Some(2),
            Some(&names),
            Some(&want(&["class", "class"])),
        )
        .unwrap();
        assert_eq!(
            serde_json::to_value(&class).unwrap(),
            json!([{"name": "class", "shape": [3], "datatype": "BYTES", "data": ["yes", "no", "no"]}])
        );
        let order = response_outputs(
            &probs,
            3,
            Some(2),
            Some(&names),
            Some(&want(&["probabilities", "class"])),
        )
        .unwrap();
        assert_eq!(order[0].name, "probabilities");
        assert_eq!(order[1].name, "class");
        assert_eq!(
            response_outputs(&probs, 3, Some(2), None, Some(&want(&["value"]))).unwrap_err(),
            "unknown output 'value'; the model's outputs are: 'class', 'probabilities'"
        );
        let reg = response_outputs(&[1.5, -0.1], 2, None, None, Some(&[])).unwrap();
        assert_eq!(
            serde_json::to_value(&reg).unwrap(),
            json!([{"name": "value", "shape": [2], "datatype": "FP32", "data": [1.5, -0.1]}])
        );
        assert_eq!(
            response_outputs(&[1.0, 2.0, 3.0], 2, None, None, None).unwrap_err(),
            "the model returned 3 values for 2 rows of 1"
        );
        assert_eq!(
            response_outputs(&[0.1, 0.2, 0.7], 1, Some(3), Some(&names), None).unwrap_err(),
            "class 2 has no name: the model has 2 class names"
        );
    }

    #[test]
    fn bodies_round_trip_through_serde() {
        let body = json!({
            "inputs": [{"name": "f0", "shape": [1], "datatype": "FP32", "data": [1.0]}],
            "outputs": [{"name": "class"}]
        });
        let req: InferenceRequest = serde_json::from_value(body.clone()).unwrap();
        assert_eq!(req.id, None);
        assert_eq!(req.outputs.as_ref().unwrap()[0].name, "class");
        assert_eq!(serde_json::to_value(&req).unwrap(), body);
        let resp = InferenceResponse {
            model_name: "m".into(),
            model_version: Some("2".into()),
            id: None,
            parameters: None,
            outputs: vec![],
        };
        assert_eq!(
            serde_json::to_value(&resp).unwrap(),
            json!({"model_name": "m", "model_version": "2", "outputs": []})
        );
        assert_eq!(
            serde_json::to_value(ErrorBody {
                error: "bad".into()
            })
            .unwrap(),
            json!({"error": "bad"})
        );
    }
}
