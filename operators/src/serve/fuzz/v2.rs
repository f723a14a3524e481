//! v2 JSON inference bodies: both fast paths (`v2::fast::decode` for a request decoded on its own,
//! and `common_rows` + `Columns::append` for bodies decoded together on the inference thread)
//! against the general path (`InferenceRequest` + [`request_to_batch`], as the server runs it).

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use millrace_fuzz::json::{self, Cell, Json};
use millrace_fuzz::proptest::collection::vec;
use millrace_fuzz::proptest::prelude::*;
use millrace_fuzz::{Bytes, Fuzz, Verdict, drawn_and_mutated};

use super::{MAX_ROWS, same, well_formed};
use crate::serve::protocol::v2::fast::{self, Columns, common_rows};
use crate::serve::v2::{InferenceRequest, request_to_batch};

/// The inputs: name, the datatype clients send for it, what its cells are.
const INPUTS: &[(&str, &str, Cell)] = &[
    ("x", "FP32", Cell::Number),
    ("y", "FP64", Cell::Number),
    ("c", "BYTES", Cell::Text),
];

const DATATYPES: &[&str] = &[
    "FP32", "FP64", "FP16", "BYTES", "INT64", "INT8", "UINT8", "BOOL", "fp32", "STRING", "",
];

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("x", DataType::Float32, false),
        Field::new("y", DataType::Float64, true),
        Field::new("c", DataType::Utf8, true),
    ]))
}

/// A body of two good rows, decoded before each fuzzed one into the same buffers.
const GOOD: &[u8] =
    br#"{"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1.5, -2]},
    {"name": "y", "shape": [2, 1], "datatype": "FP64", "data": [null, 0.25]},
    {"name": "c", "shape": [2], "datatype": "BYTES", "data": ["a", "\u00e9"]}]}"#;

/// One tensor of `rows` rows, mostly right (name, datatype, shape, data), sometimes not.
fn tensor(input: usize, rows: usize) -> BoxedStrategy<Json> {
    let (name, datatype, kind) = INPUTS[input];
    let name = prop_oneof![12 => Just(Json::string(name)), 1 => json::scalar()];
    let datatype = prop_oneof![
        10 => Just(datatype.to_owned()),
        1 => prop::sample::select(DATATYPES).prop_map(str::to_owned),
    ];
    let length = prop_oneof![12 => Just(rows), 1 => 0..=MAX_ROWS + 1];
    let shape = prop_oneof![
        6 => Just(vec![rows as i64]),
        3 => Just(vec![rows as i64, 1]),
        1 => vec(-2i64..=(MAX_ROWS as i64 + 1), 0..4),
        1 => Just(vec![i64::MAX]),
    ];
    (name, datatype, shape, length, 0..12usize)
        .prop_flat_map(move |(name, datatype, shape, length, form)| {
            let cells = vec(json::cell(kind), length);
            (Just((name, datatype, shape, form)), cells)
        })
        .prop_map(|((name, datatype, shape, form), cells)| {
            let shape = Json::Arr(shape.iter().map(|d| Json::Num(d.to_string())).collect());
            let data = match form {
                // Nested one level, as `[[1], [2]]`.
                0 => Json::Arr(cells.into_iter().map(|c| Json::Arr(vec![c])).collect()),
                _ => Json::Arr(cells),
            };
            let mut entries = vec![
                ("name".to_owned(), name),
                ("shape".to_owned(), shape),
                ("datatype".to_owned(), Json::string(&datatype)),
                ("data".to_owned(), data),
            ];
            match form {
                1 => entries.reverse(),
                2 => entries.push(entries[3].clone()),
                3 => entries.push(("parameters".to_owned(), Json::Obj(vec![]))),
                4 => {
                    entries.remove(3);
                }
                5 => entries.insert(0, entries[0].clone()),
                _ => {}
            }
            Json::Obj(entries)
        })
        .boxed()
}

/// `{"id"?, "inputs": [tensors], "outputs"?, "parameters"?}` and its near misses.
fn body() -> BoxedStrategy<Json> {
    (0..=MAX_ROWS + 1)
        .prop_flat_map(|rows| {
            let tensors = (tensor(0, rows), tensor(1, rows), tensor(2, rows));
            (tensors, 0..10usize, json::string(), 0..6usize)
        })
        .prop_map(|((x, y, c), order, id, extra)| {
            let mut inputs = vec![x, y, c];
            match order {
                0 => inputs.reverse(),
                1 => {
                    inputs.pop();
                }
                2 => inputs.push(inputs[0].clone()),
                3 => inputs.rotate_left(1),
                _ => {}
            }
            let mut entries = vec![("inputs".to_owned(), Json::Arr(inputs))];
            match extra {
                0 => entries.insert(0, ("id".to_owned(), Json::Str(id))),
                1 => entries.push(("outputs".to_owned(), Json::Arr(vec![]))),
                2 => entries.push(("parameters".to_owned(), Json::Obj(vec![]))),
                3 => entries.push(entries[0].clone()),
                _ => {}
            }
            Json::Obj(entries)
        })
        .boxed()
}

/// The general path, as the server runs it: the request, its batch, the row limit.
fn general(body: &[u8], schema: &SchemaRef) -> Result<(RecordBatch, Option<String>), String> {
    let request: InferenceRequest = serde_json::from_slice(body)
        .map_err(|e| format!("request body is not a valid inference request: {e}"))?;
    let batch = request_to_batch(&request, schema)?;
    if batch.num_rows() > MAX_ROWS {
        return Err(format!(
            "{} rows in one request; the limit is {MAX_ROWS} (split the request)",
            batch.num_rows()
        ));
    }
    Ok((batch, request.id))
}

/// The batched fast path: the good body, then this one, into one set of buffers; the batch and
/// whether this body was appended (`None`: the buffers were not even tried).
fn batched(body: &[u8], schema: &SchemaRef) -> Option<(RecordBatch, bool)> {
    let rows = common_rows(body, MAX_ROWS)?;
    let mut columns = Columns::new(schema, 2 + rows)?;
    columns.append(GOOD, 2, true)?;
    let appended = columns.append(body, rows, true).is_some();
    Some((columns.finish()?, appended))
}

fn check(schema: &SchemaRef, good: &RecordBatch, body: &Bytes) -> Result<Verdict, String> {
    let general = general(&body.0, schema);
    if let Some((batch, id)) = fast::decode(&body.0, schema, MAX_ROWS) {
        let (expected, expected_id) = general.as_ref().map_err(|e| {
            format!(
                "the fast path accepts {} rows, the general path rejects: {e}",
                batch.num_rows()
            )
        })?;
        well_formed(&batch, schema)?;
        same("the fast path", &batch, expected)?;
        if id != *expected_id {
            return Err(format!(
                "the fast path reads id {id:?}, the general path {expected_id:?}"
            ));
        }
    }
    if let Some((batch, appended)) = batched(&body.0, schema) {
        if batch.num_rows() < 2 {
            return Err("appending the body lost the rows before it".to_owned());
        }
        same("the rows before the body", &batch.slice(0, 2), good)?;
        let rest = batch.slice(2, batch.num_rows() - 2);
        if appended {
            let expected = &general
                .as_ref()
                .map_err(|e| {
                    format!("the batched fast path accepts the body, the general path rejects: {e}")
                })?
                .0;
            same("the batched fast path", &rest, expected)?;
        } else if rest.num_rows() > 0 {
            return Err(format!(
                "a body that failed to append left {} rows",
                rest.num_rows()
            ));
        }
    }
    match general {
        Ok((batch, _)) => {
            well_formed(&batch, schema)?;
            Ok(Verdict::Accepted)
        }
        Err(e) => {
            let named = ["input", "request", "rows", "binary"]
                .iter()
                .any(|w| e.contains(w));
            if !named {
                return Err(format!("the message names neither input nor request: {e}"));
            }
            Ok(Verdict::Rejected(e))
        }
    }
}

#[test]
fn v2_json_bodies() {
    let schema = schema();
    let good = general(GOOD, &schema).expect("the good body decodes").0;
    let counts = Fuzz::new("v2 JSON infer (fast paths and general path)").run(
        || drawn_and_mutated(body(), 1, |doc| doc.text().into_bytes()),
        move |body| check(&schema, &good, body),
    );
    let cases = counts.generated;
    assert!(
        counts.accepted > cases / 50 && counts.rejected > cases / 4,
        "{counts:?}"
    );
}
