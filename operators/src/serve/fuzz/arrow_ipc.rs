//! Arrow IPC stream bodies ([`decode_stream`]): streams written by arrow's own writer from
//! random schemas and values (NaN, infinities, nulls, dictionaries, names twice, columns missing
//! or extra, several batches), and byte-level mutations of them.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Date32Array, DictionaryArray, Float32Array, Float64Array, Int32Array,
    Int64Array, LargeStringArray, NullArray, RecordBatch, StringArray,
};
use arrow::datatypes::{DataType, Field, Int32Type, Schema, SchemaRef};
use arrow::ipc::writer::StreamWriter;
use millrace_fuzz::json::regex;
use millrace_fuzz::proptest::collection::vec;
use millrace_fuzz::proptest::prelude::*;
use millrace_fuzz::{Bytes, Fuzz, TestRunner, Verdict, below, mutate, pick};

use super::{MAX_ROWS, well_formed};
use crate::serve::arrow_io::decode_stream;

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("x", DataType::Float32, false),
        Field::new("y", DataType::Float64, true),
        Field::new("c", DataType::Utf8, true),
    ]))
}

/// The column types a client may send.
#[derive(Clone, Copy, Debug)]
enum Type {
    F32,
    F64,
    I32,
    I64,
    Utf8,
    LargeUtf8,
    Dictionary,
    Bool,
    Date32,
    Null,
}

const TYPES: &[Type] = &[
    Type::F32,
    Type::F64,
    Type::I32,
    Type::I64,
    Type::Utf8,
    Type::LargeUtf8,
    Type::Dictionary,
    Type::Bool,
    Type::Date32,
    Type::Null,
];

/// One cell, drawn for any type and converted to the column's.
#[derive(Clone, Debug)]
enum Value {
    Null,
    Float(f64),
    Int(i64),
    Text(String),
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        1 => Just(Value::Null),
        3 => any::<f32>().prop_map(|x| Value::Float(x.into())),
        1 => any::<f64>().prop_map(Value::Float),
        2 => (-300i64..300).prop_map(Value::Int),
        1 => any::<i64>().prop_map(Value::Int),
        2 => regex("[-+0-9.eE]{0,8}").prop_map(Value::Text),
        1 => any::<String>().prop_map(Value::Text),
    ]
}

fn array(ty: Type, values: &[Value]) -> ArrayRef {
    let float = |v: &Value| match v {
        Value::Float(x) => Some(*x),
        Value::Int(n) => Some(*n as f64),
        _ => None,
    };
    let int = |v: &Value| match v {
        Value::Int(n) => Some(*n),
        Value::Float(x) if x.is_finite() => Some(*x as i64),
        _ => None,
    };
    let text = |v: &Value| match v {
        Value::Null => None,
        Value::Float(x) => Some(x.to_string()),
        Value::Int(n) => Some(n.to_string()),
        Value::Text(s) => Some(s.clone()),
    };
    match ty {
        Type::F32 => Arc::new(Float32Array::from_iter(
            values.iter().map(|v| float(v).map(|x| x as f32)),
        )),
        Type::F64 => Arc::new(Float64Array::from_iter(values.iter().map(float))),
        Type::I32 => Arc::new(Int32Array::from_iter(
            values.iter().map(|v| int(v).map(|n| n as i32)),
        )),
        Type::I64 => Arc::new(Int64Array::from_iter(values.iter().map(int))),
        Type::Utf8 => Arc::new(StringArray::from_iter(values.iter().map(text))),
        Type::LargeUtf8 => Arc::new(LargeStringArray::from_iter(values.iter().map(text))),
        Type::Dictionary => {
            let texts: Vec<Option<String>> = values.iter().map(text).collect();
            Arc::new(
                texts
                    .iter()
                    .map(Option::as_deref)
                    .collect::<DictionaryArray<Int32Type>>(),
            )
        }
        Type::Bool => Arc::new(BooleanArray::from_iter(
            values.iter().map(|v| int(v).map(|n| n % 2 == 0)),
        )),
        Type::Date32 => Arc::new(Date32Array::from_iter(
            values.iter().map(|v| int(v).map(|n| n as i32)),
        )),
        Type::Null => Arc::new(NullArray::new(values.len())),
    }
}

/// A stream: a schema of named, typed columns and one to three batches of it.
#[derive(Clone, Debug)]
struct Stream {
    columns: Vec<(String, Type)>,
    batches: Vec<Vec<Vec<Value>>>,
}

impl Stream {
    fn bytes(&self) -> Vec<u8> {
        let fields: Vec<Field> = self
            .columns
            .iter()
            .map(|(name, ty)| {
                let dt = array(*ty, &[]).data_type().clone();
                Field::new(name, dt, true)
            })
            .collect();
        let schema = Arc::new(Schema::new(fields));
        let mut out = Vec::new();
        let Ok(mut writer) = StreamWriter::try_new(&mut out, &schema) else {
            return out;
        };
        for batch in &self.batches {
            let rows = batch.first().map_or(0, Vec::len);
            let arrays = self
                .columns
                .iter()
                .zip(batch)
                .map(|((_, ty), values)| array(*ty, values))
                .collect();
            let options = arrow::array::RecordBatchOptions::new().with_row_count(Some(rows));
            if let Ok(b) = RecordBatch::try_new_with_options(Arc::clone(&schema), arrays, &options)
            {
                let _ = writer.write(&b);
            }
        }
        let _ = writer.finish();
        drop(writer);
        out
    }

    fn rows(&self) -> usize {
        self.batches
            .iter()
            .map(|b| b.first().map_or(0, Vec::len))
            .sum()
    }
}

fn stream() -> BoxedStrategy<Stream> {
    let name = prop::sample::select(vec!["x", "y", "c", "x", "extra", ""]).prop_map(str::to_owned);
    let column = (name, prop::sample::select(TYPES));
    let columns = prop_oneof![
        // Mostly the model's three columns, with any types.
        4 => (prop::sample::select(TYPES), prop::sample::select(TYPES), prop::sample::select(TYPES))
            .prop_map(|(a, b, c)| vec![("x".to_owned(), a), ("y".to_owned(), b), ("c".to_owned(), c)]),
        1 => vec(column, 0..5),
    ];
    (columns, vec(0..5usize, 1..4))
        .prop_flat_map(|(columns, rows)| {
            let width = columns.len();
            let batches: Vec<_> = rows
                .into_iter()
                .map(|n| vec(vec(value(), n), width))
                .collect();
            (Just(columns), batches)
        })
        .prop_map(|(columns, batches)| Stream { columns, batches })
        .boxed()
}

/// A body and, when it was not mutated, the rows it holds.
#[derive(Clone, Debug)]
struct Body {
    bytes: Bytes,
    rows: Option<usize>,
}

const REASONS: &[&str] = &[
    "empty body",
    "body is not an Arrow IPC stream",
    "bad Arrow IPC stream",
    "missing column '",
    "column '",
];

fn check(schema: &SchemaRef, body: &Body) -> Result<Verdict, String> {
    match decode_stream(&body.bytes.0, schema, MAX_ROWS) {
        Ok(batch) => {
            well_formed(&batch, schema)?;
            if batch.num_rows() > MAX_ROWS {
                return Err(format!("{} rows, over the limit", batch.num_rows()));
            }
            if let Some(rows) = body.rows.filter(|&r| r != batch.num_rows()) {
                return Err(format!(
                    "{} rows decoded of the {rows} sent",
                    batch.num_rows()
                ));
            }
            Ok(Verdict::Accepted)
        }
        Err(e) if e.status == 413 && e.message.contains("rows in one request") => {
            Ok(Verdict::Rejected(e.message))
        }
        Err(e) if e.status == 400 && REASONS.iter().any(|r| e.message.starts_with(r)) => {
            Ok(Verdict::Rejected(e.message))
        }
        Err(e) => Err(format!(
            "status {}: the message does not say what is wrong: {}",
            e.status, e.message
        )),
    }
}

#[test]
fn arrow_ipc_bodies() {
    let schema = schema();
    let counts = Fuzz::new("Arrow IPC body").run(
        || {
            let strategy = stream();
            move |runner: &mut TestRunner| {
                let stream = pick(runner, &strategy);
                let bytes = stream.bytes();
                if below(runner, 3) == 0 {
                    Body {
                        bytes: Bytes(bytes),
                        rows: Some(stream.rows()),
                    }
                } else {
                    Body {
                        bytes: Bytes(mutate(runner, &bytes)),
                        rows: None,
                    }
                }
            }
        },
        move |body| check(&schema, body),
    );
    let cases = counts.generated;
    assert!(
        counts.accepted > cases / 50 && counts.rejected > cases / 4,
        "{counts:?}"
    );
}
