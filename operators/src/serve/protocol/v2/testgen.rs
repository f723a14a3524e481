//! Random v2 requests for the decoders' property tests: the same tensors as JSON, as a binary
//! body and as gRPC messages, for one fixed schema that covers every wire kind.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use serde_json::{Map, Value, json};

use super::{InferenceRequest, RequestInput};

/// The schema the generated requests are for.
pub(crate) fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("f", DataType::Float32, false),
        Field::new("g", DataType::Float64, true),
        Field::new("i", DataType::Int64, true),
        Field::new("u", DataType::UInt32, true),
        Field::new("s", DataType::Utf8, true),
        Field::new("b", DataType::Boolean, true),
    ]))
}

/// Datatypes a client may send for each column (some out of range for it on purpose).
const CHOICES: [(&str, &[&str]); 6] = [
    ("f", &["FP32", "FP32", "FP64", "INT32", "UINT8"]),
    ("g", &["FP64", "FP32", "INT64"]),
    ("i", &["INT64", "INT8", "INT16", "INT32", "UINT16"]),
    ("u", &["UINT32", "UINT8", "INT16"]),
    ("s", &["BYTES"]),
    ("b", &["BOOL"]),
];

/// Values of one tensor.
#[derive(Clone, Debug)]
pub(crate) enum Values {
    Int(Vec<i64>),
    UInt(Vec<u64>),
    Float(Vec<f64>),
    Text(Vec<String>),
    Bool(Vec<bool>),
}

/// One generated tensor.
#[derive(Clone, Debug)]
pub(crate) struct Tensor {
    pub name: String,
    pub datatype: &'static str,
    pub shape: Vec<i64>,
    pub values: Values,
}

/// splitmix64: a small, deterministic generator driven by the property test's seed.
pub(crate) struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }
}

fn int_range(dt: &str) -> (i64, i64) {
    match dt {
        "INT8" => (i8::MIN.into(), i8::MAX.into()),
        "INT16" => (i16::MIN.into(), i16::MAX.into()),
        "INT32" => (i32::MIN.into(), i32::MAX.into()),
        _ => (-1_000_000, 1_000_000),
    }
}

/// Tensors for `rows` rows: usually every column once, sometimes one missing or unknown.
pub(crate) fn tensors(rng: &mut Rng) -> Vec<Tensor> {
    let rows = rng.below(6) as usize;
    let mut out = Vec::new();
    for (name, choices) in CHOICES {
        let dt = choices[rng.below(choices.len() as u64) as usize];
        let values = match dt {
            "FP32" | "FP64" => Values::Float(
                (0..rows)
                    .map(|_| (rng.below(20_000) as f64 - 10_000.0) / 64.0)
                    .collect(),
            ),
            "INT8" | "INT16" | "INT32" | "INT64" => {
                let (min, max) = int_range(dt);
                let span = (max - min) as u64 + 1;
                Values::Int((0..rows).map(|_| min + rng.below(span) as i64).collect())
            }
            "UINT8" => Values::UInt((0..rows).map(|_| rng.below(256)).collect()),
            "UINT16" => Values::UInt((0..rows).map(|_| rng.below(65_536)).collect()),
            "UINT32" => Values::UInt((0..rows).map(|_| rng.below(1 << 32)).collect()),
            "BYTES" => Values::Text(
                (0..rows)
                    .map(|_| {
                        let words = ["", "a", "blue", "ünï", "日本", "x y", "\"q\""];
                        words[rng.below(words.len() as u64) as usize]
                            .repeat(1 + rng.below(3) as usize)
                    })
                    .collect(),
            ),
            _ => Values::Bool((0..rows).map(|_| rng.below(2) == 1).collect()),
        };
        let n = rows as i64;
        let shape = if rng.below(2) == 0 {
            vec![n]
        } else {
            vec![n, 1]
        };
        out.push(Tensor {
            name: name.to_owned(),
            datatype: dt,
            shape,
            values,
        });
    }
    match rng.below(20) {
        0 => {
            out.remove(rng.below(out.len() as u64) as usize);
        }
        1 => out[0].name = "nope".to_owned(),
        2 => out[1].shape = vec![rows as i64 + 1],
        _ => {}
    }
    out
}

impl Tensor {
    fn json_data(&self) -> Value {
        match &self.values {
            Values::Int(v) => json!(v),
            Values::UInt(v) => json!(v),
            Values::Float(v) => json!(v),
            Values::Text(v) => json!(v),
            Values::Bool(v) => json!(v),
        }
    }

    /// The tensor's bytes in the binary layout.
    pub fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match (&self.values, self.datatype) {
            (Values::Int(v), dt) => {
                let w = match dt {
                    "INT8" => 1,
                    "INT16" => 2,
                    "INT32" => 4,
                    _ => 8,
                };
                for x in v {
                    out.extend_from_slice(&x.to_le_bytes()[..w]);
                }
            }
            (Values::UInt(v), dt) => {
                let w = match dt {
                    "UINT8" => 1,
                    "UINT16" => 2,
                    "UINT32" => 4,
                    _ => 8,
                };
                for x in v {
                    out.extend_from_slice(&x.to_le_bytes()[..w]);
                }
            }
            (Values::Float(v), "FP32") => {
                out.extend(v.iter().flat_map(|x| (*x as f32).to_le_bytes()));
            }
            (Values::Float(v), _) => out.extend(v.iter().flat_map(|x| x.to_le_bytes())),
            (Values::Text(v), _) => {
                for s in v {
                    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
                    out.extend_from_slice(s.as_bytes());
                }
            }
            (Values::Bool(v), _) => out.extend(v.iter().map(|b| u8::from(*b))),
        }
        out
    }
}

/// The tensors as a JSON request.
pub(crate) fn json_request(tensors: &[Tensor]) -> InferenceRequest {
    InferenceRequest {
        id: None,
        parameters: None,
        inputs: tensors
            .iter()
            .map(|t| RequestInput {
                name: t.name.clone(),
                shape: t.shape.clone(),
                datatype: t.datatype.to_owned(),
                parameters: None,
                data: t.json_data(),
            })
            .collect(),
        outputs: None,
    }
}

/// The tensors as a binary body (header length, body); `binary[i]` says whether tensor i goes in
/// binary (else as JSON data in the header).
pub(crate) fn binary_body(tensors: &[Tensor], binary: &[bool]) -> (usize, Vec<u8>) {
    let mut request = json_request(tensors);
    let mut tail = Vec::new();
    for (i, (input, t)) in request.inputs.iter_mut().zip(tensors).enumerate() {
        if binary.get(i).copied().unwrap_or(true) {
            let bytes = t.bytes();
            let mut p = Map::new();
            p.insert("binary_data_size".to_owned(), json!(bytes.len()));
            input.parameters = Some(p);
            input.data = Value::Null;
            tail.extend_from_slice(&bytes);
        }
    }
    let mut body = serde_json::to_vec(&request).unwrap_or_default();
    let header = body.len();
    body.extend_from_slice(&tail);
    (header, body)
}
