//! The fast path of `POST /v2/models/NAME/infer` with JSON: the common request — every input
//! column once as a flat FP32/FP64 (float columns) or BYTES (string columns) tensor of shape `[n]`
//! or `[n, 1]`, no `outputs` or `parameters` — parsed straight into Arrow arrays, without a
//! `serde_json::Value` per tensor. Anything else returns `None` and takes the general path
//! (`request_to_batch`), which accepts every form and names any problem.

use std::borrow::Cow;
use std::fmt;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use serde::de::{
    DeserializeSeed, Deserializer, Error as _, IgnoredAny, MapAccess, SeqAccess, Visitor,
};

mod columns;
mod response;
#[cfg(test)]
mod tests;

pub(crate) use columns::Columns;
use columns::Scratch;
pub(crate) use response::response;

/// Decodes a v2 JSON body for `schema` (at most `max_rows` rows): the batch and the request id.
pub(crate) fn decode(
    body: &[u8],
    schema: &SchemaRef,
    max_rows: usize,
) -> Option<(RecordBatch, Option<String>)> {
    let mut columns = Columns::new(schema, 1)?;
    let (_, id) = columns.append(body, max_rows, false)?;
    Some((columns.finish()?, id))
}

/// Parses `body` into `columns` (which check each tensor): the request id, or `None` when the
/// body is not of the common form.
fn decode_into(body: &[u8], columns: &mut Columns) -> Option<Option<String>> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let id = Request { columns }.deserialize(&mut de).ok()?;
    de.end().ok()?;
    Some(id)
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
    columns: &'a mut Columns,
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
        let (mut id, mut inputs) = (None, false);
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match key.as_ref() {
                // A key given twice: the general path names it.
                "inputs" if inputs => return Err(A::Error::custom("inputs given twice")),
                "id" if id.is_some() => return Err(A::Error::custom("id given twice")),
                "inputs" => {
                    map.next_value_seed(Inputs {
                        columns: &mut *self.columns,
                    })?;
                    inputs = true;
                }
                "id" => id = Some(map.next_value::<String>()?),
                // `outputs`, `parameters`, anything else: the general path.
                _ => return Err(A::Error::custom("not the common form")),
            }
        }
        Ok(id)
    }
}

struct Inputs<'a> {
    columns: &'a mut Columns,
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
        loop {
            self.columns.scratch.clear();
            let tensor = seq.next_element_seed(Tensor {
                scratch: &mut self.columns.scratch,
            })?;
            let Some(tensor) = tensor else { return Ok(()) };
            self.columns
                .put(&tensor.name, &tensor.datatype, tensor.shape.as_slice())
                .map_err(A::Error::custom)?;
        }
    }
}

/// One input tensor; its cells go into the scratch.
struct Tensor<'a> {
    scratch: &'a mut Scratch,
}

struct Parsed<'de> {
    name: Cow<'de, str>,
    datatype: Cow<'de, str>,
    shape: Shape,
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

impl<'de> DeserializeSeed<'de> for Tensor<'_> {
    type Value = Parsed<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Tensor<'_> {
    type Value = Parsed<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an input tensor")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut name, mut datatype, mut shape, mut data) = (None, None, None, None);
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            let repeated = match key.as_ref() {
                "name" => name.is_some(),
                "datatype" => datatype.is_some(),
                "shape" => shape.is_some(),
                "data" => data.is_some(),
                _ => false,
            };
            if repeated {
                // The general path names it (and the cells of a second "data" must not be
                // appended to the first's).
                return Err(A::Error::custom("a tensor key given twice"));
            }
            match key.as_ref() {
                "name" => name = Some(map.next_value::<Cow<'de, str>>()?),
                "datatype" => datatype = Some(map.next_value::<Cow<'de, str>>()?),
                "shape" => shape = Some(map.next_value::<Shape>()?),
                "data" => {
                    map.next_value_seed(Cells {
                        scratch: &mut *self.scratch,
                    })?;
                    data = Some(());
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    return Err(A::Error::custom("not the common form"));
                }
            }
        }
        match (name, datatype, shape, data) {
            (Some(name), Some(datatype), Some(shape), Some(())) => Ok(Parsed {
                name,
                datatype,
                shape,
            }),
            _ => Err(A::Error::custom("incomplete tensor")),
        }
    }
}

/// A flat list of numbers or strings (nulls allowed), into the scratch; anything else fails.
struct Cells<'a> {
    scratch: &'a mut Scratch,
}

impl<'de> DeserializeSeed<'de> for Cells<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Cells<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a flat list of values")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        // Numbers (or nulls) until the first string; then strings (or nulls) only.
        let Scratch {
            nums,
            strs,
            is_text,
        } = self.scratch;
        while let Some(cell) = seq.next_element::<Option<NumOrStr>>()? {
            match (cell, *is_text) {
                (None, false) => nums.push(None),
                (None, true) => strs.push(None),
                (Some(NumOrStr::Num(x)), false) => nums.push(Some(x)),
                (Some(NumOrStr::Str(v)), false) if nums.iter().all(Option::is_none) => {
                    strs.extend(nums.iter().map(|_| None));
                    strs.push(Some(v));
                    *is_text = true;
                }
                (Some(NumOrStr::Str(v)), true) => strs.push(Some(v)),
                _ => return Err(A::Error::custom("mixed values")),
            }
        }
        Ok(())
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
