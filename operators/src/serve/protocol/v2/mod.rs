//! Open Inference Protocol (KServe v2) REST bodies, and named input tensors → an Arrow batch of
//! the model's raw input schema.
//!
//! Each column of the input schema is one input tensor of shape `[N]` (or `[N, 1]`), so a request
//! carries N records column by column. Errors name the input, and the value index where one is at
//! fault, in the style of [`super::instances_to_batch`].

use std::collections::HashSet;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanArray, Float64Array, Int64Array, ListArray, RecordBatch,
    RecordBatchOptions, StringArray, UInt64Array,
};
use arrow::buffer::OffsetBuffer;
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::{DataType, FieldRef, Schema, SchemaRef};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

mod binary;
pub(crate) mod fast;
mod request;

pub use self::binary::{
    HEADER_LENGTH, ResponseBody, binary_inputs, output_bytes, response_body, split_body,
};
pub(crate) use self::request::list_item;
use self::request::*;
pub use self::request::{request_to_batch, request_to_batch_filling, request_to_batch_with};

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
    /// The values, flat in row-major order (or nested one level); null when the tensor is sent
    /// in binary (the `binary_data_size` parameter).
    #[serde(default)]
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
    /// Output parameters (`binary_data_size` when the values follow the JSON in binary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Map<String, Value>>,
    /// The values, flat in row-major order; null (and left out) when sent in binary.
    #[serde(default, skip_serializing_if = "Value::is_null")]
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
    if let Some(item) = list_item(t) {
        return input_datatype(item.data_type());
    }
    datatype_of(t).or(match t {
        DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64 => Some("BYTES"),
        t if t.is_numeric() => Some("FP64"),
        _ => None,
    })
}

/// Model metadata for a raw input schema (each column one input of shape `[-1]`, list columns
/// `[-1, -1]`) and the outputs:
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
            let shape = match list_item(f.data_type()) {
                Some(_) => vec![-1, -1],
                None => vec![-1],
            };
            tensor(f.name(), &dt, shape)
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

/// Checks that `predictions` holds `rows` × width values (width = `num_classes`, or 1 for
/// regression) and returns the width.
pub(crate) fn prediction_width(
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

/// The name of class `index`, or an error when the model has fewer names.
pub(crate) fn class_name(names: &[String], index: usize) -> Result<&str, String> {
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
                let classes = predictions.chunks(width).map(crate::serve::argmax);
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
            parameters: None,
            data: Value::Array(data),
        });
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod testgen;
#[cfg(test)]
mod tests;
