//! Kafka JSON records through [`RecordDecoder`], fuzzed (issue 14 §4): lists of messages whose
//! payloads are near-valid records, mutations of them, or tombstones, with keys of any bytes.
//! Every message must become a row or a dead letter with a reason; each row must hold what a
//! plain `serde_json::Value` reading of its payload says, and its metadata must be its message's.

use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{
    DataType, Field, Float32Type, Int32Type, Int64Type, Schema, TimeUnit, UInt8Type,
};
use millrace_fuzz::json::{self, Cell};
use millrace_fuzz::proptest::collection::vec;
use millrace_fuzz::proptest::prelude::*;
use millrace_fuzz::{Fuzz, TestRunner, Verdict, below, mutate, pick};
use serde_json::Value;

use super::*;

const FIELDS: &[(&str, Cell)] = &[
    ("x", Cell::Number),
    ("n", Cell::Integer),
    ("u", Cell::Integer),
    ("s", Cell::Text),
    ("b", Cell::Bool),
    ("t", Cell::Timestamp),
    ("d", Cell::Date),
    ("raw", Cell::Text),
];

fn schema() -> arrow::datatypes::SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("x", DataType::Float32, false),
        Field::new("n", DataType::Int32, true),
        Field::new("u", DataType::UInt8, true),
        Field::new("s", DataType::Utf8, true),
        Field::new("b", DataType::Boolean, true),
        Field::new(
            "t",
            DataType::Timestamp(TimeUnit::Millisecond, Some(Arc::from("UTC"))),
            true,
        ),
        Field::new("d", DataType::Date32, true),
        Field::new("raw", DataType::Binary, true),
    ]))
}

/// One or two messages: a record drawn from the grammar, then (or instead) mutations of it, now
/// and then a tombstone.
fn messages(runner: &mut TestRunner, records: &BoxedStrategy<json::Json>) -> Vec<RawMessage> {
    let count = 1 + below(runner, 2);
    let record = pick(runner, records).text().into_bytes();
    (0..count)
        .map(|i| {
            let payload = match below(runner, 24) {
                0 => None,
                1..=11 if i == 0 => Some(record.clone()),
                _ => Some(mutate(runner, &record)),
            };
            let key = match below(runner, 3) {
                0 => None,
                _ => Some(pick(runner, vec(any::<u8>(), 0..6))),
            };
            RawMessage {
                partition: below(runner, 3) as i32,
                offset: 1_000 + i as i64,
                timestamp_ms: (below(runner, 4) > 0).then(|| BASE_TS + below(runner, 1_000) as i64),
                key,
                payload,
            }
        })
        .collect()
}

/// The value of field `name` in row `row`, as the reference (a `Value` reading of the payload)
/// would have it: compared for the columns whose reading is unambiguous.
fn agrees(
    batch: &arrow::record_batch::RecordBatch,
    row: usize,
    record: &Value,
) -> Result<(), String> {
    let get = |name: &str| record.get(name).unwrap_or(&Value::Null);
    let column = |name: &str| batch.column_by_name(name).map(Arc::clone);
    for field in batch
        .schema()
        .fields()
        .iter()
        .filter(|f| !f.name().starts_with('_'))
    {
        let name = field.name();
        let (Some(array), value) = (column(name), get(name)) else {
            return Err(format!("no column {name}"));
        };
        if array.is_null(row) != value.is_null() {
            return Err(format!(
                "field {name}: null is {}, the payload has {value}",
                array.is_null(row)
            ));
        }
        if value.is_null() {
            continue;
        }
        let same = match name.as_str() {
            "x" => {
                value.as_f64().map(|v| v as f32)
                    == Some(array.as_primitive::<Float32Type>().value(row))
            }
            "n" => value.as_f64() == Some(f64::from(array.as_primitive::<Int32Type>().value(row))),
            "u" => value.as_f64() == Some(f64::from(array.as_primitive::<UInt8Type>().value(row))),
            "s" => value.as_str() == Some(array.as_string::<i32>().value(row)),
            "b" => value.as_bool() == Some(array.as_boolean().value(row)),
            "raw" => value.as_str().map(str::as_bytes) == Some(array.as_binary::<i32>().value(row)),
            _ => true,
        };
        if !same {
            return Err(format!(
                "field {name}: row holds {:?} at {row}, the payload {value}",
                array.slice(row, 1)
            ));
        }
    }
    Ok(())
}

/// A payload as the reference reads it: a `serde_json::Value` of each field the schema names,
/// the other keys skipped as the decoder skips them (a number past f64 or a lone surrogate is
/// valid JSON text, and may sit in a key nobody reads).
struct Known(serde_json::Map<String, Value>);

impl<'de> serde::Deserialize<'de> for Known {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> serde::de::Visitor<'de> for Fields {
            type Value = Known;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Known, A::Error> {
                let mut out = serde_json::Map::new();
                while let Some(key) = map.next_key::<String>()? {
                    if FIELDS.iter().any(|(name, _)| *name == key) {
                        let value: Value = map.next_value()?;
                        out.insert(key, value);
                    } else {
                        map.next_value::<serde::de::IgnoredAny>()?;
                    }
                }
                Ok(Known(out))
            }
        }
        d.deserialize_map(Fields)
    }
}

fn check(
    decoder: &std::sync::Mutex<RecordDecoder>,
    messages: &[RawMessage],
) -> Result<Verdict, String> {
    let mut decoder = decoder
        .lock()
        .map_err(|_| "decoder poisoned by an earlier panic")?;
    let decoded = decoder.decode("fuzz", messages);
    let (batch, dead) = (&decoded.batch, &decoded.dead);
    if batch.num_rows() + dead.len() != messages.len() {
        return Err(format!(
            "{} rows + {} dead letters for {} messages",
            batch.num_rows(),
            dead.len(),
            messages.len()
        ));
    }
    for column in batch.columns() {
        column
            .to_data()
            .validate_full()
            .map_err(|e| format!("invalid column: {e}"))?;
    }
    let offsets = batch
        .column_by_name(OFFSET_COLUMN)
        .ok_or("no _offset column")?;
    let offsets = offsets.as_primitive::<Int64Type>();
    let (mut row, mut next_dead) = (0, 0);
    for message in messages {
        if dead
            .get(next_dead)
            .is_some_and(|d| d.offset == message.offset)
        {
            let letter = &dead[next_dead];
            if letter.payload != message.payload
                || letter.key != message.key
                || letter.topic != "fuzz"
            {
                return Err(format!(
                    "dead letter {} does not carry its message",
                    letter.offset
                ));
            }
            let named = ["field", "JSON", "object", "tombstone"]
                .iter()
                .any(|w| letter.error.contains(w));
            if !named {
                return Err(format!(
                    "dead letter reason names nothing: {}",
                    letter.error
                ));
            }
            next_dead += 1;
            continue;
        }
        if offsets.value(row) != message.offset {
            return Err(format!(
                "row {row} has offset {}, not {}",
                offsets.value(row),
                message.offset
            ));
        }
        let payload = message
            .payload
            .as_deref()
            .ok_or("a tombstone became a row")?;
        let record = serde_json::from_slice::<Known>(payload)
            .map_err(|e| format!("accepted a payload serde_json rejects: {e}"))?;
        agrees(batch, row, &Value::Object(record.0))?;
        row += 1;
    }
    match dead.first() {
        Some(letter) if letter.error.trim().is_empty() => Err("empty dead-letter reason".into()),
        Some(letter) => Ok(Verdict::Rejected(letter.error.clone())),
        None => Ok(Verdict::Accepted),
    }
}

#[test]
fn json_records_fuzzed() {
    let format = MessageFormat::Json { schema: schema() };
    let decoder = RecordDecoder::new(format, MetadataColumns::ALL).expect("supported schema");
    let decoder = std::sync::Mutex::new(decoder);
    let counts = Fuzz::new("Kafka JSON records").run(
        || {
            let records = json::record(FIELDS);
            move |runner: &mut TestRunner| messages(runner, &records)
        },
        move |list| check(&decoder, list),
    );
    let cases = counts.generated;
    assert!(
        counts.accepted > cases / 20 && counts.rejected > cases / 4,
        "{counts:?}"
    );
}
