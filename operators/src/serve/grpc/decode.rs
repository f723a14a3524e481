//! `ModelInferRequest` → named input tensors and their bytes (the layout of the REST binary
//! extension, so one decoder checks both), and predictions → `ModelInferResponse`.
//!
//! Inputs come either all in `raw_input_contents` (one entry per input, in order) or each in its
//! typed `contents` field (`fp32_contents` for FP32, `int_contents` for INT8/16/32, …); the typed
//! values are written out as little-endian bytes. Every error names the input.

use super::proto::model_infer_request::InferInputTensor;
use super::proto::model_infer_response::InferOutputTensor;
use super::proto::{InferTensorContents, ModelInferRequest, ModelInferResponse};
use crate::serve::v2::{
    InferenceRequest, RequestInput, RequestOutput, output_bytes, response_outputs,
};

/// The request as named tensors (no JSON data) and each input's bytes.
pub(crate) fn to_request(
    message: &ModelInferRequest,
) -> Result<(InferenceRequest, Vec<Vec<u8>>), String> {
    let raw = &message.raw_input_contents;
    if !raw.is_empty() && raw.len() != message.inputs.len() {
        return Err(format!(
            "raw_input_contents has {} entries for {} inputs; send one per input, in order",
            raw.len(),
            message.inputs.len()
        ));
    }
    let mut inputs = Vec::with_capacity(message.inputs.len());
    let mut bytes = Vec::with_capacity(message.inputs.len());
    for (i, input) in message.inputs.iter().enumerate() {
        let given = input.contents.as_ref().filter(|c| !is_empty(c));
        let data = match (raw.get(i), given) {
            (Some(_), Some(_)) => {
                return Err(format!(
                    "input '{}' has contents, but the request also has raw_input_contents; send one",
                    input.name
                ));
            }
            (Some(r), None) => r.clone(),
            (None, Some(c)) => contents_bytes(input, c)?,
            (None, None) => contents_bytes(input, &InferTensorContents::default())?,
        };
        inputs.push(RequestInput {
            name: input.name.clone(),
            shape: input.shape.clone(),
            datatype: input.datatype.clone(),
            parameters: None,
            data: serde_json::Value::Null,
        });
        bytes.push(data);
    }
    let outputs = (!message.outputs.is_empty()).then(|| {
        message
            .outputs
            .iter()
            .map(|o| RequestOutput {
                name: o.name.clone(),
                parameters: None,
            })
            .collect()
    });
    let request = InferenceRequest {
        id: (!message.id.is_empty()).then(|| message.id.clone()),
        parameters: None,
        inputs,
        outputs,
    };
    Ok((request, bytes))
}

fn is_empty(c: &InferTensorContents) -> bool {
    c.bool_contents.is_empty()
        && c.int_contents.is_empty()
        && c.int64_contents.is_empty()
        && c.uint_contents.is_empty()
        && c.uint64_contents.is_empty()
        && c.fp32_contents.is_empty()
        && c.fp64_contents.is_empty()
        && c.bytes_contents.is_empty()
}

/// The names of the non-empty fields of `c`.
fn filled(c: &InferTensorContents) -> Vec<&'static str> {
    [
        ("bool_contents", c.bool_contents.is_empty()),
        ("int_contents", c.int_contents.is_empty()),
        ("int64_contents", c.int64_contents.is_empty()),
        ("uint_contents", c.uint_contents.is_empty()),
        ("uint64_contents", c.uint64_contents.is_empty()),
        ("fp32_contents", c.fp32_contents.is_empty()),
        ("fp64_contents", c.fp64_contents.is_empty()),
        ("bytes_contents", c.bytes_contents.is_empty()),
    ]
    .into_iter()
    .filter_map(|(name, empty)| (!empty).then_some(name))
    .collect()
}

/// Typed contents → the little-endian bytes of the binary layout, checking that the field fits
/// the datatype and each value its range.
fn contents_bytes(input: &InferInputTensor, c: &InferTensorContents) -> Result<Vec<u8>, String> {
    let name = &input.name;
    let dt = input.datatype.as_str();
    let field = match dt {
        "BOOL" => "bool_contents",
        "INT8" | "INT16" | "INT32" => "int_contents",
        "INT64" => "int64_contents",
        "UINT8" | "UINT16" | "UINT32" => "uint_contents",
        "UINT64" => "uint64_contents",
        "FP32" => "fp32_contents",
        "FP64" => "fp64_contents",
        "BYTES" => "bytes_contents",
        "FP16" => {
            return Err(format!(
                "input '{name}': FP16 has no typed contents field; send it in raw_input_contents"
            ));
        }
        other => {
            return Err(format!(
                "input '{name}': unknown datatype '{other}'; expected one of BOOL, INT8, INT16, INT32, INT64, UINT8, UINT16, UINT32, UINT64, FP16, FP32, FP64, BYTES"
            ));
        }
    };
    if let Some(other) = filled(c).into_iter().find(|f| *f != field) {
        return Err(format!(
            "input '{name}': datatype {dt} takes {field}, but {other} is given"
        ));
    }
    let range = |i: usize, v: i64, min: i64, max: i64| {
        if v < min || v > max {
            Err(format!(
                "input '{name}': value {i} ({v}) is out of range for {dt}"
            ))
        } else {
            Ok(())
        }
    };
    let mut out = Vec::new();
    match dt {
        "BOOL" => out.extend(c.bool_contents.iter().map(|b| u8::from(*b))),
        "INT8" | "INT16" | "INT32" => {
            let (min, max) = match dt {
                "INT8" => (i64::from(i8::MIN), i64::from(i8::MAX)),
                "INT16" => (i64::from(i16::MIN), i64::from(i16::MAX)),
                _ => (i64::from(i32::MIN), i64::from(i32::MAX)),
            };
            for (i, v) in c.int_contents.iter().enumerate() {
                range(i, i64::from(*v), min, max)?;
                // In range, so the low bytes are the value in the narrower type.
                let le = v.to_le_bytes();
                out.extend_from_slice(&le[..width(dt)]);
            }
        }
        "INT64" => out.extend(c.int64_contents.iter().flat_map(|v| v.to_le_bytes())),
        "UINT8" | "UINT16" | "UINT32" => {
            let max = match dt {
                "UINT8" => i64::from(u8::MAX),
                "UINT16" => i64::from(u16::MAX),
                _ => i64::from(u32::MAX),
            };
            for (i, v) in c.uint_contents.iter().enumerate() {
                range(i, i64::from(*v), 0, max)?;
                out.extend_from_slice(&v.to_le_bytes()[..width(dt)]);
            }
        }
        "UINT64" => out.extend(c.uint64_contents.iter().flat_map(|v| v.to_le_bytes())),
        "FP32" => out.extend(c.fp32_contents.iter().flat_map(|v| v.to_le_bytes())),
        "FP64" => out.extend(c.fp64_contents.iter().flat_map(|v| v.to_le_bytes())),
        _ => {
            for (i, b) in c.bytes_contents.iter().enumerate() {
                let len = u32::try_from(b.len())
                    .map_err(|_| format!("input '{name}': element {i} is over 4 GiB"))?;
                out.extend_from_slice(&len.to_le_bytes());
                out.extend_from_slice(b);
            }
        }
    }
    Ok(out)
}

fn width(dt: &str) -> usize {
    match dt {
        "INT8" | "UINT8" => 1,
        "INT16" | "UINT16" => 2,
        _ => 4,
    }
}

/// The answer: the requested outputs (all when none are named) with their values in
/// `raw_output_contents`.
pub(crate) fn to_response(
    request: &InferenceRequest,
    model: (&str, u64),
    predictions: &[f32],
    rows: usize,
    num_classes: Option<usize>,
    class_names: Option<&[String]>,
) -> Result<ModelInferResponse, String> {
    let outputs = response_outputs(
        predictions,
        rows,
        num_classes,
        class_names,
        request.outputs.as_deref(),
    )?;
    let width = num_classes.unwrap_or(1);
    let mut response = ModelInferResponse {
        model_name: model.0.to_owned(),
        model_version: model.1.to_string(),
        id: request.id.clone().unwrap_or_default(),
        ..Default::default()
    };
    for out in outputs {
        response.raw_output_contents.push(output_bytes(
            &out.name,
            predictions,
            width,
            class_names,
        )?);
        response.outputs.push(InferOutputTensor {
            name: out.name,
            datatype: out.datatype,
            shape: out.shape,
            ..Default::default()
        });
    }
    Ok(response)
}

#[cfg(test)]
mod tests;
