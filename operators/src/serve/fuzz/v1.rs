//! `/v1/predict` bodies: the fast path ([`DecoderPool`]) against the general path
//! ([`v1_request_to_batch`] after parsing the JSON, as the server does).

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use millrace_fuzz::json::{self, Cell, Json};
use millrace_fuzz::proptest::collection::vec;
use millrace_fuzz::proptest::prelude::*;
use millrace_fuzz::{Bytes, Fuzz, Verdict, drawn_and_mutated};

use super::{MAX_ROWS, same, well_formed};
use crate::serve::RequestError;
use crate::serve::protocol::v1::fast::DecoderPool;
use crate::serve::protocol::v1::v1_request_to_batch;

const FIELDS: &[(&str, Cell)] = &[
    ("x", Cell::Number),
    ("y", Cell::Number),
    ("i", Cell::Integer),
    ("k", Cell::Integer),
    ("s", Cell::Text),
    ("b", Cell::Bool),
    ("t", Cell::Timestamp),
    ("d", Cell::Date),
];

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("x", DataType::Float32, false),
        Field::new("y", DataType::Float64, true),
        Field::new("i", DataType::Int64, true),
        Field::new("k", DataType::Int8, true),
        Field::new("s", DataType::Utf8, true),
        Field::new("b", DataType::Boolean, true),
        Field::new("t", DataType::Timestamp(TimeUnit::Microsecond, None), true),
        Field::new("d", DataType::Date32, true),
    ]))
}

/// `{"instances": [records], "model"?: …}` and its near misses.
fn body() -> BoxedStrategy<Json> {
    let instances = prop_oneof![
        20 => vec(json::record(FIELDS), 0..=MAX_ROWS + 1).prop_map(Json::Arr),
        1 => json::value(),
    ];
    let model = prop_oneof![
        4 => Just(None),
        1 => Just(Some(Json::string("m"))),
        1 => json::scalar().prop_map(Some),
    ];
    (instances, model, 0..8usize)
        .prop_map(|(instances, model, shape)| {
            let mut entries = vec![("instances".to_owned(), instances.clone())];
            if let Some(model) = model {
                entries.insert(0, ("model".to_owned(), model));
            }
            match shape {
                0 => entries.push(("instances".to_owned(), Json::Arr(vec![]))),
                1 => entries.push(("instances".to_owned(), instances)),
                2 => entries[0].0 = "inputs".to_owned(),
                3 => return instances,
                _ => {}
            }
            Json::Obj(entries)
        })
        .boxed()
}

/// What the server answers a body: the fast path's batch where it takes the body, else the
/// general path's.
fn check(pool: &DecoderPool, schema: &SchemaRef, body: &Bytes) -> Result<Verdict, String> {
    let fast = pool.decode(&body.0, MAX_ROWS);
    let general = match serde_json::from_slice(&body.0) {
        Ok(request) => v1_request_to_batch(&request, schema, MAX_ROWS),
        Err(e) => Err(RequestError::bad(format!(
            "request body is not valid JSON: {e}"
        ))),
    };
    match (fast, general) {
        (Some((batch, _)), Ok(expected)) => {
            well_formed(&batch, schema)?;
            same("the fast path", &batch, &expected)?;
            Ok(Verdict::Accepted)
        }
        (Some((batch, _)), Err(e)) => Err(format!(
            "the fast path accepts {} rows, the general path rejects: {}",
            batch.num_rows(),
            e.message
        )),
        (None, Ok(batch)) => {
            well_formed(&batch, schema)?;
            Ok(Verdict::Accepted)
        }
        (None, Err(e)) => {
            let named = ["instances", "JSON", "rows"]
                .iter()
                .any(|w| e.message.contains(w));
            if !named || !(400..500).contains(&e.status) {
                return Err(format!(
                    "status {} names neither instance nor body: {}",
                    e.status, e.message
                ));
            }
            Ok(Verdict::Rejected(e.message))
        }
    }
}

#[test]
fn v1_predict_bodies() {
    let schema = schema();
    let pool = DecoderPool::new(&schema).expect("every column has a fast decoder");
    let counts = Fuzz::new("v1 predict (fast and general path)").run(
        || drawn_and_mutated(body(), 1, |doc| doc.text().into_bytes()),
        move |body| check(&pool, &schema, body),
    );
    let cases = counts.generated;
    assert!(
        counts.accepted > cases / 20 && counts.rejected > cases / 4,
        "{counts:?}"
    );
}
