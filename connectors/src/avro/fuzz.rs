//! Avro records through the Kafka [`RecordDecoder`], fuzzed (issue 14 §4): datums written by
//! apache-avro from random values of a flat schema (raw and in the Confluent framing), and
//! byte-level mutations of them. apache-avro's own reader is the reference: a message must
//! decode exactly when it reads one whole datum, into the same values, and a rejected one must
//! be a dead letter with a reason that names the field or the framing.

use std::sync::Mutex;

use apache_avro::types::Value;
use apache_avro::{Schema as AvroSchema, from_avro_datum, to_avro_datum};
use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{
    DataType, Date32Type, Float32Type, Float64Type, Int32Type, Int64Type, TimeUnit,
    TimestampMicrosecondType, TimestampMillisecondType,
};
use arrow::record_batch::RecordBatch;
use millrace_fuzz::json::regex;
use millrace_fuzz::proptest::prelude::*;
use millrace_fuzz::{Bytes, Fuzz, TestRunner, Verdict, below, mutate, pick};

use super::{AvroFraming, parse_schema};
use crate::kafka::{MessageFormat, MetadataColumns, RawMessage, RecordDecoder};

const SCHEMA: &str = r#"{"type": "record", "name": "r", "fields": [
    {"name": "b", "type": "boolean"},
    {"name": "i", "type": "int"},
    {"name": "l", "type": "long"},
    {"name": "f", "type": "float"},
    {"name": "d", "type": "double"},
    {"name": "s", "type": "string"},
    {"name": "y", "type": "bytes"},
    {"name": "e", "type": {"type": "enum", "name": "Color", "symbols": ["RED", "GREEN", "BLUE"]}},
    {"name": "date", "type": {"type": "int", "logicalType": "date"}},
    {"name": "ms", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    {"name": "us", "type": ["null", {"type": "long", "logicalType": "timestamp-micros"}]},
    {"name": "ni", "type": ["null", "int"]},
    {"name": "nl", "type": ["long", "null"]},
    {"name": "ns", "type": ["null", "string"]}
]}"#;

const NAMES: [&str; 14] = [
    "b", "i", "l", "f", "d", "s", "y", "e", "date", "ms", "us", "ni", "nl", "ns",
];
const COLORS: [&str; 3] = ["RED", "GREEN", "BLUE"];

fn text() -> impl Strategy<Value = String> {
    prop_oneof![4 => regex("[a-z ]{0,8}"), 1 => any::<String>()]
}

fn union<T: Strategy<Value = Value>>(null_first: bool, inner: T) -> impl Strategy<Value = Value> {
    let (null, other) = if null_first { (0, 1) } else { (1, 0) };
    prop_oneof![
        1 => Just(Value::Union(null, Box::new(Value::Null))),
        3 => inner.prop_map(move |v| Value::Union(other, Box::new(v))),
    ]
}

/// A record of [`SCHEMA`], field by field.
fn record() -> impl Strategy<Value = Value> {
    let first = (
        any::<bool>().prop_map(Value::Boolean),
        any::<i32>().prop_map(Value::Int),
        any::<i64>().prop_map(Value::Long),
        any::<f32>().prop_map(Value::Float),
        any::<f64>().prop_map(Value::Double),
        text().prop_map(Value::String),
        prop::collection::vec(any::<u8>(), 0..8).prop_map(Value::Bytes),
    );
    let second = (
        (0..3usize).prop_map(|i| Value::Enum(i as u32, COLORS[i].to_owned())),
        any::<i32>().prop_map(Value::Date),
        any::<i64>().prop_map(Value::TimestampMillis),
        union(true, any::<i64>().prop_map(Value::TimestampMicros)),
        union(true, any::<i32>().prop_map(Value::Int)),
        union(false, any::<i64>().prop_map(Value::Long)),
        union(true, text().prop_map(Value::String)),
    );
    (first, second).prop_map(|((b, i, l, f, d, s, y), (e, date, ms, us, ni, nl, ns))| {
        let values = [b, i, l, f, d, s, y, e, date, ms, us, ni, nl, ns];
        Value::Record(NAMES.iter().map(|n| n.to_string()).zip(values).collect())
    })
}

/// A message: a datum (valid, or mutated), with or without the Confluent header.
#[derive(Clone, Debug)]
struct Message {
    confluent: bool,
    bytes: Bytes,
}

/// Messages from records drawn from the grammar: each datum fed once as written, then twice
/// mutated (which keeps the drawing to a third of the inputs).
fn messages(schema: AvroSchema) -> impl FnMut(&mut TestRunner) -> Message {
    let records = record().boxed();
    let (mut datum, mut turn) = (Vec::new(), 0usize);
    move |runner: &mut TestRunner| {
        let fresh = turn % 3 == 0;
        turn += 1;
        if fresh {
            datum = to_avro_datum(&schema, pick(runner, &records)).unwrap_or_default();
        }
        let confluent = below(runner, 4) == 0;
        let mut bytes = if confluent {
            vec![0, 0, 0, 0, 7]
        } else {
            Vec::new()
        };
        bytes.extend_from_slice(&datum);
        if !fresh {
            bytes = mutate(runner, &bytes);
        }
        Message {
            confluent,
            bytes: Bytes(bytes),
        }
    }
}

/// One cell, comparable across apache-avro values and Arrow arrays.
#[derive(Debug, PartialEq)]
enum Cell {
    Null,
    Bool(bool),
    Int(i64),
    F32(u32),
    F64(u64),
    Text(String),
    Bytes(Vec<u8>),
}

fn avro_cell(value: &Value) -> Cell {
    match value {
        Value::Null => Cell::Null,
        Value::Boolean(b) => Cell::Bool(*b),
        Value::Int(i) | Value::Date(i) => Cell::Int((*i).into()),
        Value::Long(l) | Value::TimestampMillis(l) | Value::TimestampMicros(l) => Cell::Int(*l),
        Value::Float(f) => Cell::F32(f.to_bits()),
        Value::Double(d) => Cell::F64(d.to_bits()),
        Value::String(s) | Value::Enum(_, s) => Cell::Text(s.clone()),
        Value::Bytes(b) => Cell::Bytes(b.clone()),
        Value::Union(_, inner) => avro_cell(inner),
        other => Cell::Text(format!("unexpected {other:?}")),
    }
}

fn arrow_cell(array: &ArrayRef, row: usize) -> Cell {
    if array.is_null(row) {
        return Cell::Null;
    }
    match array.data_type() {
        DataType::Boolean => Cell::Bool(array.as_boolean().value(row)),
        DataType::Int32 => Cell::Int(array.as_primitive::<Int32Type>().value(row).into()),
        DataType::Int64 => Cell::Int(array.as_primitive::<Int64Type>().value(row)),
        DataType::Date32 => Cell::Int(array.as_primitive::<Date32Type>().value(row).into()),
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            Cell::Int(array.as_primitive::<TimestampMillisecondType>().value(row))
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            Cell::Int(array.as_primitive::<TimestampMicrosecondType>().value(row))
        }
        DataType::Float32 => Cell::F32(array.as_primitive::<Float32Type>().value(row).to_bits()),
        DataType::Float64 => Cell::F64(array.as_primitive::<Float64Type>().value(row).to_bits()),
        DataType::Utf8 => Cell::Text(array.as_string::<i32>().value(row).to_owned()),
        DataType::Binary => Cell::Bytes(array.as_binary::<i32>().value(row).to_vec()),
        other => Cell::Text(format!("unexpected column type {other}")),
    }
}

/// apache-avro's reading: the record, when the datum is exactly one record of the schema.
fn reference(schema: &AvroSchema, message: &Message) -> Option<Vec<(String, Value)>> {
    let datum = if message.confluent {
        match message.bytes.0.as_slice() {
            [0, _, _, _, _, datum @ ..] => datum,
            _ => return None,
        }
    } else {
        &message.bytes.0
    };
    // apache-avro reads a union index past the end of its input as branch 0 rather than fail;
    // with padding after the datum, a datum that needed bytes past its end reads into the
    // padding instead, and is refused below.
    const PADDING: usize = 64;
    let mut padded = datum.to_vec();
    padded.extend([0; PADDING]);
    let mut rest = padded.as_slice();
    match from_avro_datum(schema, &mut rest, None) {
        Ok(Value::Record(fields)) if rest.len() == PADDING => Some(fields),
        _ => None,
    }
}

fn row_agrees(batch: &RecordBatch, fields: &[(String, Value)]) -> Result<(), String> {
    for (name, value) in fields {
        let column = batch
            .column_by_name(name)
            .ok_or(format!("no column {name}"))?;
        let (got, expected) = (arrow_cell(column, 0), avro_cell(value));
        if got != expected {
            return Err(format!(
                "field {name}: decoded {got:?}, apache-avro reads {expected:?}"
            ));
        }
    }
    Ok(())
}

struct Decoders {
    raw: RecordDecoder,
    confluent: RecordDecoder,
}

fn check(
    decoders: &Mutex<Decoders>,
    schema: &AvroSchema,
    message: &Message,
) -> Result<Verdict, String> {
    let mut decoders = decoders
        .lock()
        .map_err(|_| "decoders poisoned by an earlier panic")?;
    let decoder = if message.confluent {
        &mut decoders.confluent
    } else {
        &mut decoders.raw
    };
    let raw = RawMessage {
        partition: 0,
        offset: 5,
        timestamp_ms: None,
        key: None,
        payload: Some(message.bytes.0.clone()),
    };
    let decoded = decoder.decode("fuzz", &[raw]);
    let expected = reference(schema, message);
    match (decoded.batch.num_rows(), decoded.dead.first(), expected) {
        (1, None, Some(fields)) => {
            for column in decoded.batch.columns() {
                column
                    .to_data()
                    .validate_full()
                    .map_err(|e| format!("invalid column: {e}"))?;
            }
            row_agrees(&decoded.batch, &fields)?;
            Ok(Verdict::Accepted)
        }
        (1, None, None) => Err("decoded a message apache-avro does not read as one datum".into()),
        (0, Some(letter), expected) => {
            // apache-avro drops the bits of a 10-byte varint past 64; the decoder refuses such a
            // varint, rightly (the value does not fit a long).
            let overflow = letter.error.contains("does not fit 64 bits");
            if let Some(fields) = expected.filter(|_| !overflow) {
                return Err(format!(
                    "rejected ({}) a datum apache-avro reads: {fields:?}",
                    letter.error
                ));
            }
            let named = ["field \"", "Confluent", "magic byte", "bytes left"]
                .iter()
                .any(|w| letter.error.contains(w));
            if !named || letter.offset != 5 {
                return Err(format!("the dead letter names nothing: {letter:?}"));
            }
            Ok(Verdict::Rejected(letter.error.clone()))
        }
        (rows, _, _) => Err(format!(
            "{rows} rows and {} dead letters for one message",
            decoded.dead.len()
        )),
    }
}

#[test]
fn avro_records_fuzzed() {
    let schema = parse_schema(SCHEMA).expect("the schema parses");
    let decoder = |framing| {
        let format = MessageFormat::Avro {
            schema: schema.clone(),
            framing,
        };
        RecordDecoder::new(format, MetadataColumns::NONE).expect("a flat schema")
    };
    let decoders = Mutex::new(Decoders {
        raw: decoder(AvroFraming::Raw),
        confluent: decoder(AvroFraming::Confluent),
    });
    let writer = schema.clone();
    let counts = Fuzz::new("Kafka Avro records").run(
        move || messages(writer),
        move |message| check(&decoders, &schema, message),
    );
    let cases = counts.generated;
    assert!(
        counts.accepted > cases / 5 && counts.rejected > cases / 4,
        "{counts:?}"
    );
}

#[test]
fn apache_avro_writes_what_the_decoder_reads() {
    // The reference and the decoder agree on one plain record, so the fuzz test compares like
    // with like.
    let schema = parse_schema(SCHEMA).expect("the schema parses");
    let mut runner = TestRunner::deterministic();
    let records = record().boxed();
    let message = Message {
        confluent: false,
        bytes: Bytes(to_avro_datum(&schema, pick(&mut runner, &records)).expect("valid")),
    };
    let fields = reference(&schema, &message).expect("apache-avro reads its own datum");
    let mut decoder = RecordDecoder::new(
        MessageFormat::Avro {
            schema: schema.clone(),
            framing: AvroFraming::Raw,
        },
        MetadataColumns::NONE,
    )
    .expect("a flat schema");
    let raw = RawMessage {
        partition: 0,
        offset: 0,
        timestamp_ms: None,
        key: None,
        payload: Some(message.bytes.0),
    };
    let decoded = decoder.decode("t", &[raw]);
    assert_eq!(decoded.batch.num_rows(), 1, "{:?}", decoded.dead);
    row_agrees(&decoded.batch, &fields).expect("same values");
}
