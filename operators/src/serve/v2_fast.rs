//! The fast path of `POST /v2/models/NAME/infer` with JSON: the common request — every input
//! column once as a flat FP32/FP64 (float columns) or BYTES (string columns) tensor of shape `[n]`
//! or `[n, 1]`, no `outputs` or `parameters` — parsed straight into Arrow arrays, without a
//! `serde_json::Value` per tensor. Anything else returns `None` and takes the general path
//! (`request_to_batch`), which accepts every form and names any problem.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float32Array, Float64Array, RecordBatch, RecordBatchOptions, StringArray,
};
use arrow::datatypes::{DataType, SchemaRef};
use serde::de::{
    DeserializeSeed, Deserializer, Error as _, IgnoredAny, MapAccess, SeqAccess, Visitor,
};

/// Decodes a v2 JSON body for `schema` (at most `max_rows` rows): the batch and the request id.
pub(crate) fn decode(
    body: &[u8],
    schema: &SchemaRef,
    max_rows: usize,
) -> Option<(RecordBatch, Option<String>)> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let mut columns: Vec<Option<ArrayRef>> = vec![None; schema.fields().len()];
    let id = Request {
        schema,
        columns: &mut columns,
    }
    .deserialize(&mut de)
    .ok()?;
    de.end().ok()?;
    let columns: Vec<ArrayRef> = columns.into_iter().collect::<Option<_>>()?;
    let rows = columns.first().map_or(0, |c| c.len());
    if rows > max_rows || columns.iter().any(|c| c.len() != rows) {
        return None;
    }
    let batch = RecordBatch::try_new_with_options(
        Arc::clone(schema),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(rows)),
    )
    .ok()?;
    Some((batch, id))
}

/// The rows a body of the common form holds, read from its first `"shape"` without parsing it,
/// when it has no `id`, `outputs` or `parameters` and at most `max_rows` rows; the inference
/// thread then decodes it (and hands it back when the guess was wrong).
pub(crate) fn common_rows(body: &[u8], max_rows: usize) -> Option<usize> {
    // A key the fast path does not take sends the body elsewhere; the first "shape" gives the
    // rows. (SIMD substring searches: a few hundred nanoseconds for a 1 KB body.)
    let has = |needle: &[u8]| memchr::memmem::find(body, needle).is_some();
    if has(b"\"id\"") || has(b"\"outputs\"") || has(b"\"parameters\"") {
        return None;
    }
    let shape = memchr::memmem::find(body, b"\"shape\"").map(|at| at + 7);
    let rest = &body[shape?..];
    let open = rest.iter().position(|&c| c == b'[')?;
    if rest[..open]
        .iter()
        .any(|&c| c != b':' && !c.is_ascii_whitespace())
    {
        return None;
    }
    let digits = rest[open + 1..]
        .iter()
        .skip_while(|c| c.is_ascii_whitespace())
        .take_while(|c| c.is_ascii_digit())
        .try_fold(0usize, |n, &c| {
            n.checked_mul(10)?.checked_add(usize::from(c - b'0'))
        })?;
    (1..=max_rows).contains(&digits).then_some(digits)
}

struct Request<'a> {
    schema: &'a SchemaRef,
    columns: &'a mut Vec<Option<ArrayRef>>,
}

impl<'de> DeserializeSeed<'de> for Request<'_> {
    type Value = Option<String>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Request<'_> {
    type Value = Option<String>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an inference request")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut id = None;
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match key.as_ref() {
                "inputs" => map.next_value_seed(Inputs {
                    schema: self.schema,
                    columns: &mut *self.columns,
                })?,
                "id" => id = Some(map.next_value::<String>()?),
                // `outputs`, `parameters`, anything else: the general path.
                _ => return Err(A::Error::custom("not the common form")),
            }
        }
        Ok(id)
    }
}

struct Inputs<'a> {
    schema: &'a SchemaRef,
    columns: &'a mut Vec<Option<ArrayRef>>,
}

impl<'de> DeserializeSeed<'de> for Inputs<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Inputs<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of input tensors")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(tensor) = seq.next_element_seed(Tensor)? {
            let index = self
                .schema
                .fields()
                .iter()
                .position(|f| f.name() == tensor.name.as_ref())
                .ok_or_else(|| A::Error::custom("unknown input"))?;
            let field = &self.schema.fields()[index];
            let slot = &mut self.columns[index];
            if slot.is_some() {
                return Err(A::Error::custom("input given twice"));
            }
            let rows = tensor.data.len();
            let flat = match tensor.shape.as_slice() {
                [n] => *n == rows as i64,
                [n, 1] => *n == rows as i64,
                _ => false,
            };
            if !flat {
                return Err(A::Error::custom("shape"));
            }
            let nulls = match &tensor.data {
                Data::Nums(v) => v.iter().any(Option::is_none),
                Data::Strs(v) => v.iter().any(Option::is_none),
            };
            if nulls && !field.is_nullable() {
                return Err(A::Error::custom("null in a required input"));
            }
            let array: ArrayRef = match (field.data_type(), tensor.datatype.as_ref(), tensor.data) {
                (DataType::Float32, "FP32" | "FP64" | "FP16", Data::Nums(v)) => Arc::new(
                    v.into_iter()
                        .map(|x| x.map(|x| x as f32))
                        .collect::<Float32Array>(),
                ),
                (DataType::Float64, "FP32" | "FP64" | "FP16", Data::Nums(v)) => {
                    Arc::new(Float64Array::from(v))
                }
                (DataType::Utf8, "BYTES", Data::Strs(v)) => Arc::new(StringArray::from(v)),
                _ => return Err(A::Error::custom("not a fast-path type")),
            };
            *slot = Some(array);
        }
        Ok(())
    }
}

struct Tensor;

struct Parsed<'de> {
    name: Cow<'de, str>,
    datatype: Cow<'de, str>,
    shape: Shape,
    data: Data,
}

/// A tensor shape of at most 2 dimensions (more fails: the general path handles it).
#[derive(Default)]
struct Shape {
    dims: [i64; 2],
    len: usize,
}

impl Shape {
    fn as_slice(&self) -> &[i64] {
        &self.dims[..self.len]
    }
}

impl<'de> serde::Deserialize<'de> for Shape {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Shape;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a shape of 1 or 2 dimensions")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Shape, A::Error> {
                let mut shape = Shape::default();
                while let Some(d) = seq.next_element::<i64>()? {
                    if shape.len == 2 {
                        return Err(A::Error::custom("too many dimensions"));
                    }
                    shape.dims[shape.len] = d;
                    shape.len += 1;
                }
                Ok(shape)
            }
        }
        d.deserialize_seq(V)
    }
}

enum Data {
    Nums(Vec<Option<f64>>),
    Strs(Vec<Option<String>>),
}

impl Data {
    fn len(&self) -> usize {
        match self {
            Data::Nums(v) => v.len(),
            Data::Strs(v) => v.len(),
        }
    }
}

impl<'de> DeserializeSeed<'de> for Tensor {
    type Value = Parsed<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Tensor {
    type Value = Parsed<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an input tensor")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut name, mut datatype, mut shape, mut data) = (None, None, None, None);
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match key.as_ref() {
                "name" => name = Some(map.next_value::<Cow<'de, str>>()?),
                "datatype" => datatype = Some(map.next_value::<Cow<'de, str>>()?),
                "shape" => shape = Some(map.next_value::<Shape>()?),
                "data" => data = Some(map.next_value_seed(Cells)?),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    return Err(A::Error::custom("not the common form"));
                }
            }
        }
        match (name, datatype, shape, data) {
            (Some(name), Some(datatype), Some(shape), Some(data)) => Ok(Parsed {
                name,
                datatype,
                shape,
                data,
            }),
            _ => Err(A::Error::custom("incomplete tensor")),
        }
    }
}

/// A flat list of numbers or strings (nulls allowed); anything else fails.
struct Cells;

impl<'de> DeserializeSeed<'de> for Cells {
    type Value = Data;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Data, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Cells {
    type Value = Data;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a flat list of values")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Data, A::Error> {
        // Numbers (or nulls) until the first string; then strings (or nulls) only.
        let mut nums: Vec<Option<f64>> = Vec::with_capacity(seq.size_hint().unwrap_or(1));
        let mut strs: Option<Vec<Option<String>>> = None;
        while let Some(cell) = seq.next_element::<Option<NumOrStr>>()? {
            match (cell, &mut strs) {
                (None, None) => nums.push(None),
                (None, Some(s)) => s.push(None),
                (Some(NumOrStr::Num(x)), None) => nums.push(Some(x)),
                (Some(NumOrStr::Str(v)), None) if nums.iter().all(Option::is_none) => {
                    let mut s: Vec<Option<String>> = nums.iter().map(|_| None).collect();
                    s.push(Some(v));
                    strs = Some(s);
                }
                (Some(NumOrStr::Str(v)), Some(s)) => s.push(Some(v)),
                _ => return Err(A::Error::custom("mixed values")),
            }
        }
        Ok(match strs {
            Some(s) => Data::Strs(s),
            None => Data::Nums(nums),
        })
    }
}

/// One non-null cell: a number or a string (a list or an object fails).
enum NumOrStr {
    Num(f64),
    Str(String),
}

impl<'de> serde::Deserialize<'de> for NumOrStr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = NumOrStr;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number or a string")
            }
            fn visit_f64<E>(self, v: f64) -> Result<NumOrStr, E> {
                Ok(NumOrStr::Num(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<NumOrStr, E> {
                Ok(NumOrStr::Num(v as f64))
            }
            fn visit_u64<E>(self, v: u64) -> Result<NumOrStr, E> {
                Ok(NumOrStr::Num(v as f64))
            }
            fn visit_str<E>(self, v: &str) -> Result<NumOrStr, E> {
                Ok(NumOrStr::Str(v.to_owned()))
            }
            fn visit_string<E>(self, v: String) -> Result<NumOrStr, E> {
                Ok(NumOrStr::Str(v))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::Array;
    use arrow::datatypes::{Field, Schema};

    use super::*;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("x", DataType::Float32, false),
            Field::new("c", DataType::Utf8, true),
        ]))
    }

    #[test]
    fn decodes_the_common_form() {
        let body = br#"{"id": "r1", "inputs": [
            {"name": "c", "shape": [2, 1], "datatype": "BYTES", "data": ["a", null]},
            {"name": "x", "shape": [2], "datatype": "FP32", "data": [1, 2.5]}]}"#;
        let (batch, id) = decode(body, &schema(), 10).unwrap();
        assert_eq!(id.as_deref(), Some("r1"));
        let x = batch
            .column(0)
            .as_any()
            .downcast_ref::<Float32Array>()
            .unwrap();
        assert_eq!(x.values().to_vec(), vec![1.0, 2.5]);
        let c = batch
            .column(1)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert_eq!((c.value(0), c.is_null(1)), ("a", true));
    }

    #[test]
    fn everything_else_takes_the_general_path() {
        let s = schema();
        for body in [
            &br#"{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}"#[..],
            br#"{"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1]}, {"name": "c", "shape": [1], "datatype": "BYTES", "data": ["a"]}]}"#,
            br#"{"inputs": [{"name": "x", "shape": [1], "datatype": "INT64", "data": [1]}, {"name": "c", "shape": [1], "datatype": "BYTES", "data": ["a"]}]}"#,
            br#"{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [null]}, {"name": "c", "shape": [1], "datatype": "BYTES", "data": ["a"]}]}"#,
            br#"{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [[1]]}, {"name": "c", "shape": [1], "datatype": "BYTES", "data": ["a"]}]}"#,
            br#"{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}, {"name": "c", "shape": [1], "datatype": "BYTES", "data": ["a"]}], "outputs": []}"#,
            br#"{"inputs": [{"name": "y", "shape": [1], "datatype": "FP32", "data": [1]}]}"#,
            b"not json",
        ] {
            assert!(decode(body, &s, 10).is_none(), "{}", String::from_utf8_lossy(body));
        }
        let ok = br#"{"inputs": [{"name": "x", "shape": [3], "datatype": "FP32", "data": [1, 2, 3]}, {"name": "c", "shape": [3], "datatype": "BYTES", "data": ["a", "b", "c"]}]}"#;
        assert!(decode(ok, &s, 3).is_some());
        assert!(decode(ok, &s, 2).is_none(), "over max_rows");
    }
}

/// The JSON of an inference response with every output (what `response_outputs` and
/// `InferenceResponse` give for a request without `outputs`), written directly; `None` when the
/// predictions do not fit the model's shape (the general path reports that).
pub(crate) fn response(
    model_name: &str,
    version: u64,
    id: Option<&str>,
    predictions: &[f32],
    rows: usize,
    num_classes: Option<usize>,
    class_names: Option<&[String]>,
) -> Option<Vec<u8>> {
    use std::io::Write as _;
    let width = num_classes.unwrap_or(1);
    if width == 0 || rows.checked_mul(width) != Some(predictions.len()) {
        return None;
    }
    let mut out = Vec::with_capacity(128 + predictions.len() * 12);
    let string = |out: &mut Vec<u8>, s: &str| serde_json::to_writer(&mut *out, s).ok();
    out.extend_from_slice(b"{\"model_name\":");
    string(&mut out, model_name)?;
    write!(out, ",\"model_version\":\"{version}\"").ok()?;
    if let Some(id) = id {
        out.extend_from_slice(b",\"id\":");
        string(&mut out, id)?;
    }
    out.extend_from_slice(b",\"outputs\":[");
    let number = |out: &mut Vec<u8>, v: f32| {
        if v.is_finite() {
            write!(out, "{v}").ok()
        } else {
            out.extend_from_slice(b"null");
            Some(())
        }
    };
    if num_classes.is_some() {
        let datatype = if class_names.is_some() {
            "BYTES"
        } else {
            "INT64"
        };
        write!(
            out,
            "{{\"name\":\"class\",\"shape\":[{rows}],\"datatype\":\"{datatype}\",\"data\":["
        )
        .ok()?;
        for (i, row) in predictions.chunks(width).enumerate() {
            if i > 0 {
                out.push(b',');
            }
            let best = crate::serve::argmax(row);
            match class_names {
                Some(names) => string(&mut out, names.get(best)?)?,
                None => write!(out, "{best}").ok()?,
            }
        }
        write!(out, "]}},{{\"name\":\"probabilities\",\"shape\":[{rows},{width}],\"datatype\":\"FP32\",\"data\":[").ok()?;
    } else {
        write!(
            out,
            "{{\"name\":\"value\",\"shape\":[{rows}],\"datatype\":\"FP32\",\"data\":["
        )
        .ok()?;
    }
    for (i, v) in predictions.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        number(&mut out, *v)?;
    }
    out.extend_from_slice(b"]}]}");
    Some(out)
}

#[cfg(test)]
mod rows_tests {
    use super::common_rows;

    #[test]
    fn reads_the_rows_of_the_common_form_only() {
        let body = br#"{"inputs": [{"name": "x", "shape": [3, 1], "datatype": "FP32", "data": [1, 2, 3]}]}"#;
        assert_eq!(common_rows(body, 10), Some(3));
        assert_eq!(common_rows(body, 2), None);
        assert_eq!(
            common_rows(br#"{"id": "a", "inputs": [{"shape": [1]}]}"#, 10),
            None
        );
        assert_eq!(
            common_rows(br#"{"inputs": [{"shape": [1]}], "outputs": []}"#, 10),
            None
        );
        assert_eq!(
            common_rows(br#"{"inputs": [{"shape" : [ 12 ]}]}"#, 100),
            Some(12)
        );
        assert_eq!(common_rows(br#"{"inputs": [{"shape": [0]}]}"#, 10), None);
        assert_eq!(common_rows(b"nothing", 10), None);
    }
}

#[cfg(test)]
mod response_tests {
    use super::*;
    use crate::serve::v2::{InferenceResponse, response_outputs};

    /// The direct writer gives the same JSON value as the general path.
    #[test]
    fn matches_the_general_response() {
        let names = vec!["no".to_string(), "yes\"q".to_string()];
        for (predictions, rows, classes, class_names, id) in [
            (vec![0.2f32, 0.8, 0.6, 0.4], 2, Some(2), None, None),
            (
                vec![0.2f32, 0.8],
                1,
                Some(2),
                Some(names.as_slice()),
                Some("r-1"),
            ),
            (vec![1.5f32, f32::NAN, -0.1], 3, None, None, None),
        ] {
            let fast = response("m", 3, id, &predictions, rows, classes, class_names).unwrap();
            let general = InferenceResponse {
                model_name: "m".into(),
                model_version: Some("3".into()),
                id: id.map(str::to_string),
                parameters: None,
                outputs: response_outputs(&predictions, rows, classes, class_names, None).unwrap(),
            };
            let fast: serde_json::Value = serde_json::from_slice(&fast).unwrap();
            assert_eq!(fast, serde_json::to_value(&general).unwrap());
        }
        assert!(response("m", 1, None, &[0.1], 1, Some(2), None).is_none());
    }
}
