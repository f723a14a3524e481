//! The binary tensor data extension of the v2 REST protocol, and the raw tensor bytes of v2 gRPC
//! (`raw_input_contents` / `raw_output_contents`), which use the same layout.
//!
//! A binary request body is a JSON header of `Inference-Header-Content-Length` bytes followed by
//! the tensors' bytes, in the order of the inputs that have a `binary_data_size` parameter.
//! Fixed-size values are little-endian (BOOL one byte, 0 or 1); each BYTES element is a 4-byte
//! little-endian length and that many bytes. Outputs are sent the same way when the request asks
//! (`binary_data_output` for all, or `binary_data` per output): the output then carries
//! `binary_data_size` instead of `data`, and the response says its header's length in the same
//! header.

use super::*;

/// The header giving the length of the JSON part of a binary body (request and response).
pub const HEADER_LENGTH: &str = "inference-header-content-length";

/// Splits a binary request body into its JSON header (parsed) and the binary part. `header_len`
/// is the value of the `Inference-Header-Content-Length` header.
pub fn split_body<'a>(
    body: &'a [u8],
    header_len: &str,
) -> Result<(InferenceRequest, &'a [u8]), String> {
    let len: usize = header_len.trim().parse().map_err(|_| {
        format!("Inference-Header-Content-Length '{header_len}' is not a byte count")
    })?;
    if len > body.len() {
        return Err(format!(
            "Inference-Header-Content-Length is {len}, past the end of the {}-byte body",
            body.len()
        ));
    }
    let (header, tail) = body.split_at(len);
    let request: InferenceRequest = serde_json::from_slice(header).map_err(|e| {
        format!("the JSON header (the first {len} bytes) is not a valid inference request: {e}")
    })?;
    Ok((request, tail))
}

/// The `binary_data_size` parameter of an input, when it has one.
fn binary_size(input: &RequestInput) -> Result<Option<usize>, String> {
    let Some(v) = input
        .parameters
        .as_ref()
        .and_then(|p| p.get("binary_data_size"))
    else {
        return Ok(None);
    };
    v.as_u64()
        .and_then(|n| usize::try_from(n).ok())
        .map(Some)
        .ok_or_else(|| {
            format!(
                "input '{}': binary_data_size must be a byte count, got {v}",
                input.name
            )
        })
}

/// The binary part cut into each input's bytes (None for inputs sent as JSON `data`); the sizes
/// must add up to the binary part exactly.
pub fn binary_inputs<'a>(
    request: &InferenceRequest,
    tail: &'a [u8],
) -> Result<Vec<Option<&'a [u8]>>, String> {
    let mut at = 0usize;
    let mut out = Vec::with_capacity(request.inputs.len());
    for input in &request.inputs {
        let Some(size) = binary_size(input)? else {
            out.push(None);
            continue;
        };
        if !input.data.is_null() {
            return Err(format!(
                "input '{}' has both binary_data_size and 'data'; send one",
                input.name
            ));
        }
        let end = at
            .checked_add(size)
            .filter(|end| *end <= tail.len())
            .ok_or_else(|| {
                format!(
                    "input '{}': binary_data_size {size} at byte {at} runs past the end of the {}-byte binary data",
                    input.name,
                    tail.len()
                )
            })?;
        out.push(Some(&tail[at..end]));
        at = end;
    }
    if at != tail.len() {
        return Err(format!(
            "the binary data is {} bytes, but the inputs' binary_data_size add up to {at}",
            tail.len()
        ));
    }
    Ok(out)
}

/// Bytes per value of a fixed-size datatype (None for BYTES).
fn value_size(datatype: &str) -> Option<usize> {
    Some(match datatype {
        "BOOL" | "INT8" | "UINT8" => 1,
        "INT16" | "UINT16" | "FP16" => 2,
        "INT32" | "UINT32" | "FP32" => 4,
        "INT64" | "UINT64" | "FP64" => 8,
        _ => return None,
    })
}

/// IEEE half → f32 (exact).
fn f16_to_f32(bits: u16) -> f32 {
    let sign = if bits & 0x8000 != 0 { -1.0f32 } else { 1.0 };
    let exp = i32::from((bits >> 10) & 0x1f);
    let frac = f32::from(bits & 0x3ff);
    match exp {
        0 => sign * frac * 2f32.powi(-24),
        31 if frac == 0.0 => sign * f32::INFINITY,
        31 => f32::NAN,
        e => sign * (1.0 + frac / 1024.0) * 2f32.powi(e - 15),
    }
}

/// Reads the fixed-size little-endian values of `bytes` as `N`-byte chunks.
fn chunks<const N: usize>(bytes: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
    bytes.chunks_exact(N).map(|c| {
        let mut a = [0u8; N];
        a.copy_from_slice(c);
        a
    })
}

/// The elements of a BYTES tensor: `rows` × (4-byte little-endian length + bytes), nothing left.
pub(crate) fn bytes_elements<'a>(
    name: &str,
    bytes: &'a [u8],
    rows: usize,
) -> Result<Vec<&'a [u8]>, String> {
    let mut out = Vec::with_capacity(rows.min(bytes.len() / 4));
    let mut at = 0usize;
    while at < bytes.len() {
        if out.len() == rows {
            return Err(format!(
                "input '{name}': {} bytes are left over after the {rows} BYTES elements the shape holds",
                bytes.len() - at
            ));
        }
        let Some(head) = bytes.get(at..at + 4) else {
            return Err(format!(
                "input '{name}': element {}: its 4-byte length is cut off at byte {at} of {}",
                out.len(),
                bytes.len()
            ));
        };
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let start = at + 4;
        let Some(value) = start.checked_add(len).and_then(|end| bytes.get(start..end)) else {
            return Err(format!(
                "input '{name}': element {} says {len} bytes, but only {} remain",
                out.len(),
                bytes.len() - start
            ));
        };
        out.push(value);
        at = start + len;
    }
    if out.len() != rows {
        return Err(format!(
            "input '{name}': the shape holds {rows} BYTES elements, the data has {}",
            out.len()
        ));
    }
    Ok(out)
}

fn finite<T: Into<f64> + Copy>(name: &str, values: &[T]) -> Result<(), String> {
    match values.iter().position(|v| !(*v).into().is_finite()) {
        Some(i) => Err(format!(
            "input '{name}': value {i} is {}; only finite numbers are accepted",
            values[i].into()
        )),
        None => Ok(()),
    }
}

/// One input's binary bytes → an array of the wire type (integers widened to 64 bits, floats to
/// f32 for FP32 columns and f64 otherwise, as the JSON path builds them); the caller casts it to
/// the column.
pub(super) fn binary_column(
    input: &RequestInput,
    bytes: &[u8],
    column: &DataType,
    rows: usize,
) -> Result<ArrayRef, String> {
    let name = input.name.as_str();
    let dt = input.datatype.as_str();
    if let Some(size) = value_size(dt) {
        let want = rows.checked_mul(size);
        if want != Some(bytes.len()) {
            return Err(format!(
                "input '{name}': shape {} of {dt} needs {} bytes ({size} per value), got {}",
                shape_str(&input.shape),
                want.map_or_else(|| "more than 2^64".to_owned(), |w| w.to_string()),
                bytes.len()
            ));
        }
    }
    let floats = |v: Vec<f64>| -> Result<ArrayRef, String> {
        finite(name, &v)?;
        Ok(if *column == DataType::Float32 {
            Arc::new(arrow::array::Float32Array::from(
                v.into_iter().map(|x| x as f32).collect::<Vec<_>>(),
            ))
        } else {
            Arc::new(Float64Array::from(v))
        })
    };
    let array: ArrayRef = match dt {
        "BOOL" => {
            if let Some(i) = bytes.iter().position(|b| *b > 1) {
                return Err(format!(
                    "input '{name}': value {i} is byte {}, not a BOOL (0 or 1)",
                    bytes[i]
                ));
            }
            Arc::new(BooleanArray::from(
                bytes.iter().map(|b| *b == 1).collect::<Vec<_>>(),
            ))
        }
        "INT8" => ints(bytes.iter().map(|b| i64::from(*b as i8))),
        "INT16" => ints(chunks::<2>(bytes).map(|c| i64::from(i16::from_le_bytes(c)))),
        "INT32" => ints(chunks::<4>(bytes).map(|c| i64::from(i32::from_le_bytes(c)))),
        "INT64" => ints(chunks::<8>(bytes).map(i64::from_le_bytes)),
        "UINT8" => uints(bytes.iter().map(|b| u64::from(*b))),
        "UINT16" => uints(chunks::<2>(bytes).map(|c| u64::from(u16::from_le_bytes(c)))),
        "UINT32" => uints(chunks::<4>(bytes).map(|c| u64::from(u32::from_le_bytes(c)))),
        "UINT64" => uints(chunks::<8>(bytes).map(u64::from_le_bytes)),
        "FP16" => floats(
            chunks::<2>(bytes)
                .map(|c| f64::from(f16_to_f32(u16::from_le_bytes(c))))
                .collect(),
        )?,
        "FP32" => {
            let v: Vec<f32> = chunks::<4>(bytes).map(f32::from_le_bytes).collect();
            finite(name, &v)?;
            if *column == DataType::Float32 {
                Arc::new(arrow::array::Float32Array::from(v))
            } else {
                Arc::new(Float64Array::from(
                    v.into_iter().map(f64::from).collect::<Vec<_>>(),
                ))
            }
        }
        "FP64" => floats(chunks::<8>(bytes).map(f64::from_le_bytes).collect())?,
        _ => {
            let elements = bytes_elements(name, bytes, rows)?;
            if matches!(
                column,
                DataType::Binary | DataType::LargeBinary | DataType::BinaryView
            ) {
                Arc::new(arrow::array::BinaryArray::from(elements))
            } else {
                let mut strings = Vec::with_capacity(elements.len());
                for (i, e) in elements.iter().enumerate() {
                    strings.push(std::str::from_utf8(e).map_err(|err| {
                        format!("input '{name}': element {i} is not valid UTF-8 text ({err}); column type {column} needs text")
                    })?);
                }
                Arc::new(StringArray::from(strings))
            }
        }
    };
    Ok(array)
}

fn ints(values: impl Iterator<Item = i64>) -> ArrayRef {
    Arc::new(Int64Array::from(values.collect::<Vec<_>>()))
}

fn uints(values: impl Iterator<Item = u64>) -> ArrayRef {
    Arc::new(UInt64Array::from(values.collect::<Vec<_>>()))
}

/// The bytes of output `name` (`class`, `probabilities` or `value`) in the binary layout:
/// classes as INT64 (or BYTES names), probabilities and values as FP32. `width` is
/// [`prediction_width`]'s.
pub fn output_bytes(
    name: &str,
    predictions: &[f32],
    width: usize,
    class_names: Option<&[String]>,
) -> Result<Vec<u8>, String> {
    if name != "class" {
        return Ok(predictions.iter().flat_map(|v| v.to_le_bytes()).collect());
    }
    let mut out = Vec::new();
    for row in predictions.chunks(width.max(1)) {
        let class = crate::serve::argmax(row);
        match class_names {
            Some(names) => {
                let n = class_name(names, class)?.as_bytes();
                let len = u32::try_from(n.len()).map_err(|_| "a class name over 4 GiB")?;
                out.extend_from_slice(&len.to_le_bytes());
                out.extend_from_slice(n);
            }
            None => out.extend_from_slice(&i64::try_from(class).unwrap_or(i64::MAX).to_le_bytes()),
        }
    }
    Ok(out)
}

/// Whether output `name` goes in binary: its own `binary_data` parameter, else the request's
/// `binary_data_output`, else JSON.
fn wants_binary(request: &InferenceRequest, name: &str) -> bool {
    let own = request
        .outputs
        .as_deref()
        .and_then(|outs| outs.iter().find(|o| o.name == name))
        .and_then(|o| o.parameters.as_ref())
        .and_then(|p| p.get("binary_data"))
        .and_then(Value::as_bool);
    own.unwrap_or_else(|| {
        request
            .parameters
            .as_ref()
            .and_then(|p| p.get("binary_data_output"))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    })
}

/// A v2 response body: JSON, or (when any output is asked for in binary) the JSON header and the
/// outputs' bytes, with the header's length to send as `Inference-Header-Content-Length`.
pub struct ResponseBody {
    /// The whole body.
    pub bytes: Vec<u8>,
    /// Length of the JSON header when the body has binary outputs after it.
    pub header_len: Option<usize>,
}

/// The response to `request` for `predictions` (`rows` × width values), with outputs in binary
/// where [`wants_binary`] says so.
pub fn response_body(
    request: &InferenceRequest,
    model: (&str, u64),
    predictions: &[f32],
    rows: usize,
    num_classes: Option<usize>,
    class_names: Option<&[String]>,
) -> Result<ResponseBody, String> {
    let mut outputs = response_outputs(
        predictions,
        rows,
        num_classes,
        class_names,
        request.outputs.as_deref(),
    )?;
    let width = prediction_width(predictions, rows, num_classes)?;
    let mut tail = Vec::new();
    for out in &mut outputs {
        if !wants_binary(request, &out.name) {
            continue;
        }
        let bytes = output_bytes(&out.name, predictions, width, class_names)?;
        let mut params = Map::new();
        params.insert("binary_data_size".to_owned(), Value::from(bytes.len()));
        out.parameters = Some(params);
        out.data = Value::Null;
        tail.extend_from_slice(&bytes);
    }
    let any_binary = outputs.iter().any(|o| o.parameters.is_some());
    let response = InferenceResponse {
        model_name: model.0.to_owned(),
        model_version: Some(model.1.to_string()),
        id: request.id.clone(),
        parameters: None,
        outputs,
    };
    let mut bytes = serde_json::to_vec(&response).map_err(|e| e.to_string())?;
    let header_len = any_binary.then_some(bytes.len());
    bytes.extend_from_slice(&tail);
    Ok(ResponseBody { bytes, header_len })
}

#[cfg(test)]
mod tests;
