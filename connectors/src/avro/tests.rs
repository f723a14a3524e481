use std::sync::Arc;

use apache_avro::types::Value;
use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, Date32Array, Float32Array, Float64Array,
    Int8Array, Int32Array, Int64Array, StringArray, TimestampMicrosecondArray,
    TimestampMillisecondArray, TimestampNanosecondArray, TimestampSecondArray,
};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, TimeUnit};
use arrow::record_batch::RecordBatch;

use super::{AvroFraming, AvroRowDecoder, AvroRowEncoder, arrow_schema, load_schema, parse_schema};
use crate::Error;

/// splitmix64: deterministic test data without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// `make`'s value, or `None` about one time in four.
    fn maybe<T>(&mut self, make: impl FnOnce(&mut Self) -> T) -> Option<T> {
        let value = make(self);
        (!self.next().is_multiple_of(4)).then_some(value)
    }
}

const ALL: &str = r#"{"type": "record", "name": "all", "namespace": "t", "fields": [
    {"name": "b", "type": "boolean"},
    {"name": "i", "type": "int"},
    {"name": "l", "type": "long"},
    {"name": "f", "type": "float"},
    {"name": "d", "type": "double"},
    {"name": "s", "type": "string"},
    {"name": "y", "type": "bytes"},
    {"name": "e", "type": {"type": "enum", "name": "Color", "symbols": ["RED", "GREEN", "BLUE"]}},
    {"name": "e2", "type": ["null", "Color"]},
    {"name": "date", "type": {"type": "int", "logicalType": "date"}},
    {"name": "ms", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    {"name": "us", "type": ["null", {"type": "long", "logicalType": "timestamp-micros"}]},
    {"name": "ns", "type": {"type": "long", "logicalType": "timestamp-nanos"}},
    {"name": "local", "type": {"type": "long", "logicalType": "local-timestamp-millis"}},
    {"name": "ni", "type": ["null", "int"]},
    {"name": "nl", "type": ["long", "null"]},
    {"name": "nf", "type": ["null", "float"]},
    {"name": "nd", "type": ["double", "null"]},
    {"name": "nstr", "type": ["null", "string"]},
    {"name": "nbytes", "type": ["null", "bytes"]},
    {"name": "nbool", "type": ["boolean", "null"]},
    {"name": "ndate", "type": ["null", {"type": "int", "logicalType": "date"}]}
]}"#;

const COLORS: [&str; 3] = ["RED", "GREEN", "BLUE"];
const WORDS: [&str; 4] = ["", "plain", "ünïcødé ✓", "quote \" \\"];

#[test]
fn arrow_schema_maps_every_type() {
    let schema = arrow_schema(&parse_schema(ALL).unwrap()).unwrap();
    let utc = Some(Arc::from("UTC"));
    let expected = [
        ("b", DataType::Boolean, false),
        ("i", DataType::Int32, false),
        ("l", DataType::Int64, false),
        ("f", DataType::Float32, false),
        ("d", DataType::Float64, false),
        ("s", DataType::Utf8, false),
        ("y", DataType::Binary, false),
        ("e", DataType::Utf8, false),
        ("e2", DataType::Utf8, true),
        ("date", DataType::Date32, false),
        (
            "ms",
            DataType::Timestamp(TimeUnit::Millisecond, utc.clone()),
            false,
        ),
        (
            "us",
            DataType::Timestamp(TimeUnit::Microsecond, utc.clone()),
            true,
        ),
        ("ns", DataType::Timestamp(TimeUnit::Nanosecond, utc), false),
        (
            "local",
            DataType::Timestamp(TimeUnit::Millisecond, None),
            false,
        ),
        ("ni", DataType::Int32, true),
        ("nl", DataType::Int64, true),
        ("nf", DataType::Float32, true),
        ("nd", DataType::Float64, true),
        ("nstr", DataType::Utf8, true),
        ("nbytes", DataType::Binary, true),
        ("nbool", DataType::Boolean, true),
        ("ndate", DataType::Date32, true),
    ];
    let expected: Vec<Field> = expected
        .into_iter()
        .map(|(name, data_type, nullable)| Field::new(name, data_type, nullable))
        .collect();
    assert_eq!(schema.as_ref(), &Schema::new(expected));
}

/// A batch of [`ALL`]'s Arrow schema with random values (nulls in the nullable fields).
fn all_batch(rows: usize, seed: u64) -> RecordBatch {
    let schema = arrow_schema(&parse_schema(ALL).unwrap()).unwrap();
    let mut r = Rng(seed);
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|field| -> ArrayRef {
            let n = field.is_nullable();
            let mut value = |make: &mut dyn FnMut(&mut Rng) -> u64| {
                (0..rows)
                    .map(|_| {
                        if n {
                            r.maybe(|r| make(r))
                        } else {
                            Some(make(&mut r))
                        }
                    })
                    .collect::<Vec<_>>()
            };
            let any = &mut |r: &mut Rng| r.next();
            match field.data_type() {
                DataType::Boolean => Arc::new(
                    value(any)
                        .into_iter()
                        .map(|v| v.map(|v| v % 2 == 0))
                        .collect::<BooleanArray>(),
                ),
                DataType::Int32 => Arc::new(
                    value(any)
                        .into_iter()
                        .map(|v| v.map(|v| v as i32))
                        .collect::<Int32Array>(),
                ),
                DataType::Int64 => Arc::new(
                    value(any)
                        .into_iter()
                        .map(|v| v.map(|v| v as i64))
                        .collect::<Int64Array>(),
                ),
                DataType::Float32 => Arc::new(
                    value(any)
                        .into_iter()
                        .map(|v| v.map(|v| f32::from_bits(v as u32)))
                        .filter(|v| v.is_none_or(|v| !v.is_nan()))
                        .chain(std::iter::repeat(Some(1.5)))
                        .take(rows)
                        .collect::<Float32Array>(),
                ),
                DataType::Float64 => Arc::new(
                    value(any)
                        .into_iter()
                        .map(|v| v.map(f64::from_bits))
                        .filter(|v| v.is_none_or(|v| !v.is_nan()))
                        .chain(std::iter::repeat(Some(-2.5)))
                        .take(rows)
                        .collect::<Float64Array>(),
                ),
                DataType::Utf8 => {
                    let words: &[&str] = if field.name().starts_with('e') {
                        &COLORS
                    } else {
                        &WORDS
                    };
                    Arc::new(
                        value(any)
                            .into_iter()
                            .map(|v| v.map(|v| words[(v % words.len() as u64) as usize]))
                            .collect::<StringArray>(),
                    )
                }
                DataType::Binary => Arc::new(
                    value(any)
                        .into_iter()
                        .map(|v| v.map(|v| v.to_le_bytes()[..(v % 9) as usize].to_vec()))
                        .collect::<BinaryArray>(),
                ),
                DataType::Date32 => Arc::new(
                    value(any)
                        .into_iter()
                        .map(|v| v.map(|v| v as i32))
                        .collect::<Date32Array>(),
                ),
                DataType::Timestamp(unit, tz) => {
                    let v = value(any).into_iter().map(|v| v.map(|v| v as i64));
                    match unit {
                        TimeUnit::Millisecond => Arc::new(
                            v.collect::<TimestampMillisecondArray>()
                                .with_timezone_opt(tz.clone()),
                        ),
                        TimeUnit::Microsecond => Arc::new(
                            v.collect::<TimestampMicrosecondArray>()
                                .with_timezone_opt(tz.clone()),
                        ),
                        _ => Arc::new(
                            v.collect::<TimestampNanosecondArray>()
                                .with_timezone_opt(tz.clone()),
                        ),
                    }
                }
                other => panic!("unexpected type {other}"),
            }
        })
        .collect();
    RecordBatch::try_new(schema, columns).unwrap()
}

#[test]
fn round_trip_every_type_both_framings() {
    let avro = parse_schema(ALL).unwrap();
    let batch = all_batch(1_000, 3);
    for framing in [AvroFraming::Raw, AvroFraming::Confluent] {
        let encoder = AvroRowEncoder::new(avro.clone(), &batch.schema(), framing)
            .unwrap()
            .with_schema_id(0x0102_0304);
        let mut decoder = AvroRowDecoder::new(avro.clone(), framing).unwrap();
        assert_eq!(decoder.schema(), &batch.schema());
        let messages = encoder.encode_batch(&batch).unwrap();
        for message in &messages {
            decoder.push(message).unwrap();
            // apache-avro reads what we write, and writes the same bytes back.
            let datum = match framing {
                AvroFraming::Raw => &message[..],
                AvroFraming::Confluent => {
                    assert_eq!(&message[..5], &[0, 1, 2, 3, 4]);
                    &message[5..]
                }
            };
            let mut rest = datum;
            let value = apache_avro::from_avro_datum(&avro, &mut rest, None).unwrap();
            assert!(rest.is_empty());
            assert_eq!(apache_avro::to_avro_datum(&avro, value).unwrap(), datum);
        }
        assert_eq!(decoder.len(), 1_000);
        let back = decoder.finish();
        for (i, field) in batch.schema().fields().iter().enumerate() {
            assert_eq!(back.column(i), batch.column(i), "column {}", field.name());
        }
        assert_eq!(back, batch);
        // encode_row appends the same message.
        let mut out = vec![9];
        encoder.encode_row(&batch, 17, &mut out).unwrap();
        assert_eq!(&out[1..], &messages[17][..]);
    }
}

const SMALL: &str = r#"{"type": "record", "name": "small", "fields": [
    {"name": "id", "type": "long"},
    {"name": "flag", "type": "boolean"},
    {"name": "tag", "type": ["null", "string"]},
    {"name": "color", "type": {"type": "enum", "name": "C", "symbols": ["A", "B"]}}
]}"#;

#[test]
fn decodes_what_apache_avro_writes() {
    let avro = parse_schema(SMALL).unwrap();
    let record = |id: i64, tag: Option<&str>, color: u32| {
        Value::Record(vec![
            ("id".into(), Value::Long(id)),
            ("flag".into(), Value::Boolean(id % 2 == 0)),
            (
                "tag".into(),
                match tag {
                    Some(t) => Value::Union(1, Box::new(Value::String(t.into()))),
                    None => Value::Union(0, Box::new(Value::Null)),
                },
            ),
            (
                "color".into(),
                Value::Enum(color, ["A", "B"][color as usize].into()),
            ),
        ])
    };
    let mut decoder = AvroRowDecoder::new(avro.clone(), AvroFraming::Confluent).unwrap();
    for (id, tag, color) in [(-5, Some("x"), 1), (i64::MAX, None, 0), (0, Some(""), 1)] {
        let mut message = vec![0, 0, 0, 0, 42];
        message.extend(apache_avro::to_avro_datum(&avro, record(id, tag, color)).unwrap());
        decoder.push(&message).unwrap();
    }
    let batch = decoder.finish();
    assert_eq!(
        batch.column(0).as_primitive::<Int64Type>().values(),
        &[-5, i64::MAX, 0]
    );
    assert_eq!(
        batch.column(1).as_boolean(),
        &BooleanArray::from(vec![false, false, true])
    );
    assert_eq!(
        batch.column(2).as_string::<i32>(),
        &StringArray::from(vec![Some("x"), None, Some("")])
    );
    assert_eq!(
        batch.column(3).as_string::<i32>(),
        &StringArray::from(vec!["B", "A", "B"])
    );
}

#[test]
fn bad_messages_name_the_field_and_change_nothing() {
    let avro = parse_schema(SMALL).unwrap();
    let mut decoder = AvroRowDecoder::new(avro.clone(), AvroFraming::Raw).unwrap();
    // id 3, flag true, tag "ab", color B
    let good = [6, 1, 2, 4, b'a', b'b', 2];
    decoder.push(&good).unwrap();
    let cases: &[(&[u8], &str)] = &[
        (
            &good[..6],
            r#"field "color": the datum is truncated: a varint starting at byte 6"#,
        ),
        (
            &good[..4],
            r#"field "tag": the datum is truncated: reading a string or bytes at byte 4 needs 2 bytes, 0 are left"#,
        ),
        (&[], r#"field "id": the datum is truncated"#),
        // A string where the long is: the length is read as the id, 'h' as the boolean.
        (
            &[0x0a, b'h', b'e', b'l', b'l', b'o'],
            r#"field "flag": the boolean at byte 1 is 0x68, not 0 or 1"#,
        ),
        (
            &[6, 1, 4, 2],
            r#"field "tag": union index 2 at byte 2 does not exist (the union has 2 branches)"#,
        ),
        (
            &[6, 1, 0, 4],
            r#"field "color": enum index 2 at byte 3 does not exist (the enum has 2 symbols)"#,
        ),
        (
            &[6, 1, 0, 2, 0, 0],
            "2 bytes left after the Avro datum (the schema read 4 of its 6 bytes)",
        ),
        (
            &[6, 1, 2, 2, 0xff, 2],
            r#"field "tag": the bytes are not valid UTF-8"#,
        ),
        (
            &[0xff; 11],
            r#"field "id": the varint at byte 0 does not fit 64 bits"#,
        ),
    ];
    for (message, expected) in cases {
        let err = decoder.push(message).unwrap_err();
        assert!(
            err.message().starts_with(expected),
            "{message:?}: got {err}, expected {expected}"
        );
        assert_eq!(decoder.len(), 1);
    }
    let mut confluent = AvroRowDecoder::new(avro, AvroFraming::Confluent).unwrap();
    let err = confluent.push(&[1, 0, 0, 0, 0, 6, 1, 0, 0]).unwrap_err();
    assert!(
        err.message()
            .starts_with("the magic byte is 0x01, not 0x00"),
        "{err}"
    );
    let err = confluent.push(&[0, 0, 0]).unwrap_err();
    assert!(
        err.message()
            .starts_with("the message has 3 bytes, too few"),
        "{err}"
    );
    assert!(confluent.is_empty());

    decoder.push(&[8, 0, 0, 0]).unwrap();
    let batch = decoder.finish();
    assert_eq!(
        batch.column(0).as_primitive::<Int64Type>().values(),
        &[3, 4]
    );
    assert_eq!(
        batch.column(2).as_string::<i32>(),
        &StringArray::from(vec![Some("ab"), None])
    );
    assert_eq!(
        batch.column(3).as_string::<i32>(),
        &StringArray::from(vec!["B", "A"])
    );
    assert!(decoder.is_empty());
}

#[test]
fn unsupported_fields_are_named() {
    let with = |field_type: &str| {
        let text = format!(
            r#"{{"type": "record", "name": "r", "fields": [
                {{"name": "ok", "type": "int"}}, {{"name": "x", "type": {field_type}}}]}}"#
        );
        let err = arrow_schema(&parse_schema(&text).unwrap()).unwrap_err();
        assert!(matches!(err, Error::InvalidOption { .. }));
        err.to_string()
    };
    let err = with(r#"{"type": "array", "items": "int"}"#);
    assert!(
        err.contains(r#"field "x": Avro type array is not supported; flatten it upstream"#),
        "{err}"
    );
    let err = with(r#"{"type": "map", "values": "int"}"#);
    assert!(
        err.contains(r#"field "x": Avro type map is not supported"#),
        "{err}"
    );
    let err = with(r#"{"type": "record", "name": "inner", "fields": []}"#);
    assert!(
        err.contains(r#"field "x": Avro type record inner is not supported"#),
        "{err}"
    );
    let err = with(r#"{"type": "fixed", "name": "f", "size": 4}"#);
    assert!(
        err.contains(r#"field "x": Avro type fixed f is not supported"#),
        "{err}"
    );
    let err = with(r#"["int", "string"]"#);
    assert!(
        err.contains(r#"field "x": Avro type union [int, string] is not supported"#),
        "{err}"
    );
    let err = with(r#"["null", {"type": "array", "items": "int"}]"#);
    assert!(
        err.contains(r#"field "x": Avro type array is not supported"#),
        "{err}"
    );
    let err = arrow_schema(&parse_schema(r#""int""#).unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("the top-level Avro schema must be a record, found int"),
        "{err}"
    );
    assert!(AvroRowDecoder::new(parse_schema(r#""long""#).unwrap(), AvroFraming::Raw).is_err());
    let err = parse_schema(
        r#"{"type": "record", "name": "r", "fields": [{"name": "x", "type": "nope"}]}"#,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with("invalid option `Avro schema`: cannot parse the Avro schema"),
        "{err}"
    );
    assert!(err.contains("nope"), "{err}");
}

#[test]
fn encoder_checks_columns_and_values() {
    let avro = parse_schema(SMALL).unwrap();
    let columns = |id: ArrayRef, tag: ArrayRef, color: ArrayRef| {
        let schema = Schema::new(vec![
            Field::new("extra", DataType::Float16, true),
            Field::new("color", color.data_type().clone(), true),
            Field::new("id", id.data_type().clone(), true),
            Field::new("tag", tag.data_type().clone(), true),
            Field::new("flag", DataType::Boolean, false),
        ]);
        let extra = arrow::array::new_null_array(&DataType::Float16, id.len());
        let flag = Arc::new(BooleanArray::from(vec![true; id.len()]));
        RecordBatch::try_new(Arc::new(schema), vec![extra, color, id, tag, flag]).unwrap()
    };
    // Narrower Arrow types widen; extra Arrow columns are ignored; order follows the Avro schema.
    let batch = columns(
        Arc::new(Int8Array::from(vec![Some(-1), None, Some(3)])),
        Arc::new(StringArray::from(vec![Some("t"), None, Some("u")])),
        Arc::new(StringArray::from(vec![Some("A"), Some("B"), Some("C")])),
    );
    let encoder = AvroRowEncoder::new(avro.clone(), &batch.schema(), AvroFraming::Raw).unwrap();
    let mut out = Vec::new();
    encoder.encode_row(&batch, 0, &mut out).unwrap();
    assert_eq!(out, [1, 1, 2, 2, b't', 0]);
    let err = encoder
        .encode_row(&batch, 1, &mut out)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(r#"row 1, column "id": null, but the Avro field is not nullable"#),
        "{err}"
    );
    let err = encoder
        .encode_row(&batch, 2, &mut out)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(r#"row 2, column "color": "C" is not a symbol of the Avro enum (A, B)"#),
        "{err}"
    );
    assert_eq!(out, [1, 1, 2, 2, b't', 0]);
    assert!(encoder.encode_batch(&batch).is_err());
    let other = all_batch(2, 1);
    let err = encoder.encode_row(&other, 0, &mut out).unwrap_err();
    assert!(matches!(err, Error::BatchSchema { .. }), "{err}");

    let err = AvroRowEncoder::new(
        avro.clone(),
        &Schema::new(vec![Field::new("id", DataType::Int64, false)]),
        AvroFraming::Raw,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains(
            r#"field "flag" of the Avro schema is not a column of the Arrow schema (columns: id)"#
        ),
        "{err}"
    );
    let wrong = columns(
        Arc::new(Float64Array::from(vec![1.0])),
        Arc::new(StringArray::from(vec!["t"])),
        Arc::new(StringArray::from(vec!["A"])),
    );
    let err = AvroRowEncoder::new(avro, &wrong.schema(), AvroFraming::Raw)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(r#"field "id": the Avro type is long but the Arrow column is Float64"#),
        "{err}"
    );
}

#[test]
fn timestamps_convert_between_units() {
    let avro = parse_schema(
        r#"{"type": "record", "name": "r", "fields": [
            {"name": "t", "type": {"type": "long", "logicalType": "timestamp-millis"}},
            {"name": "d", "type": "double"}]}"#,
    )
    .unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("t", DataType::Timestamp(TimeUnit::Second, None), false),
        Field::new("d", DataType::Float32, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(TimestampSecondArray::from(vec![-2, 1_714_564_800])),
            Arc::new(Float32Array::from(vec![0.1, -1.0])),
        ],
    )
    .unwrap();
    let encoder = AvroRowEncoder::new(avro.clone(), &schema, AvroFraming::Raw).unwrap();
    let mut decoder = AvroRowDecoder::new(avro, AvroFraming::Raw).unwrap();
    for message in encoder.encode_batch(&batch).unwrap() {
        decoder.push(&message).unwrap();
    }
    let back = decoder.finish();
    let t = back
        .column(0)
        .as_primitive::<arrow::datatypes::TimestampMillisecondType>();
    assert_eq!(t.values(), &[-2_000, 1_714_564_800_000]);
    assert_eq!(t.timezone(), Some("UTC"));
    let d = back
        .column(1)
        .as_primitive::<arrow::datatypes::Float64Type>();
    assert_eq!(d.values(), &[f64::from(0.1_f32), -1.0]);
}

#[test]
fn load_schema_reads_a_file() {
    let dir = std::env::temp_dir().join(format!("millrace-avro-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("small.avsc");
    std::fs::write(&path, SMALL).unwrap();
    let schema = load_schema(&path).unwrap();
    assert_eq!(arrow_schema(&schema).unwrap().fields().len(), 4);
    let bad = dir.join("bad.avsc");
    std::fs::write(&bad, "{").unwrap();
    let err = load_schema(&bad).unwrap_err().to_string();
    assert!(err.contains("bad.avsc"), "{err}");
    let err = load_schema(&dir.join("missing.avsc")).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert!(err.to_string().contains("missing.avsc"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
