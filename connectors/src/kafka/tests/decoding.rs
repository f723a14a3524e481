//! RecordDecoder without a broker: the raw format, dead letters in order, decoder reuse,
//! construction errors; the decode rate measurement.

use std::sync::Arc;
use std::time::Instant;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, Float32Array, Int32Array, Int64Array, StringArray,
    TimestampMillisecondArray,
};
use arrow::datatypes::{DataType, Field, Float32Type, Int32Type, Int64Type, Schema, TimeUnit};
use arrow::record_batch::RecordBatch;

use super::*;
use crate::Error;
use crate::avro::{AvroFraming, parse_schema};
use crate::json::{JsonRowDecoder, JsonRowEncoder};

fn raw(
    partition: i32,
    offset: i64,
    ts: Option<i64>,
    key: Option<&[u8]>,
    payload: Option<&[u8]>,
) -> RawMessage {
    RawMessage {
        partition,
        offset,
        timestamp_ms: ts,
        key: key.map(<[u8]>::to_vec),
        payload: payload.map(<[u8]>::to_vec),
    }
}

#[test]
fn raw_format_keeps_every_message_with_its_metadata() {
    let messages = [
        raw(2, 10, Some(5), Some(b"k1"), Some(b"\x00\xffbytes")),
        raw(0, 11, None, None, None),
        raw(1, 12, Some(-3), Some(&[0xff, 0xfe, b'a']), Some(b"")),
    ];
    let mut decoder = RecordDecoder::new(MessageFormat::Raw, MetadataColumns::ALL).unwrap();
    let decoded = decoder.decode("t", &messages);
    assert!(decoded.dead.is_empty());
    let utc = DataType::Timestamp(TimeUnit::Millisecond, Some(Arc::from("UTC")));
    let schema = Arc::new(Schema::new(vec![
        Field::new("value", DataType::Binary, true),
        Field::new("_key", DataType::Utf8, true),
        Field::new("_timestamp", utc, true),
        Field::new("_partition", DataType::Int32, false),
        Field::new("_offset", DataType::Int64, false),
    ]));
    assert_eq!(decoder.schema(), schema);
    let expected = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(BinaryArray::from(vec![
                Some(&b"\x00\xffbytes"[..]),
                None,
                Some(b""),
            ])),
            Arc::new(StringArray::from(vec![
                Some("k1"),
                None,
                Some("\u{fffd}\u{fffd}a"),
            ])),
            Arc::new(
                TimestampMillisecondArray::from(vec![Some(5), None, Some(-3)]).with_timezone("UTC"),
            ),
            Arc::new(Int32Array::from(vec![2, 0, 1])),
            Arc::new(Int64Array::from(vec![10, 11, 12])),
        ],
    )
    .unwrap();
    assert_eq!(decoded.batch, expected);

    // Nothing in, an empty batch of the schema out; no metadata, only the payload.
    let empty = decoder.decode("t", &[]);
    assert_eq!(empty.batch.num_rows(), 0);
    assert_eq!(empty.batch.schema(), decoder.schema());
    let mut bare = RecordDecoder::new(MessageFormat::Raw, MetadataColumns::default()).unwrap();
    let decoded = bare.decode("t", &messages);
    assert_eq!(decoded.batch.num_columns(), 1);
    assert_eq!(decoded.batch.column(0), expected.column(0));
}

#[test]
fn json_dead_letters_without_broker_and_decoder_reuse() {
    let schema = Arc::new(Schema::new(vec![
        Field::new("x", DataType::Float32, false),
        Field::new("s", DataType::Utf8, true),
    ]));
    let metadata = MetadataColumns {
        partition: true,
        offset: true,
        ..MetadataColumns::NONE
    };
    let mut decoder = RecordDecoder::new(MessageFormat::Json { schema }, metadata).unwrap();
    let messages = [
        raw(0, 0, None, Some(b"a"), Some(br#"{"x": 1.25, "s": "one"}"#)),
        raw(0, 1, None, Some(b"b"), Some(br#"{"x": 2, "s": 3}"#)),
        raw(0, 2, None, None, None),
        raw(0, 3, None, None, Some(br#"{"x": 3}"#)),
        raw(0, 4, None, None, Some(br#"{"x": 4} trailing"#)),
    ];
    for round in 0..2 {
        let decoded = decoder.decode("topic-a", &messages);
        let batch = &decoded.batch;
        assert_eq!(batch.num_rows(), 2, "round {round}");
        assert_eq!(
            batch.column(0).as_primitive::<Float32Type>().values(),
            &[1.25, 3.0]
        );
        assert_eq!(batch.column(1).as_string::<i32>().value(0), "one");
        assert!(batch.column(1).is_null(1));
        assert_eq!(
            batch.column(2).as_primitive::<Int32Type>().values(),
            &[0, 0]
        );
        assert_eq!(
            batch.column(3).as_primitive::<Int64Type>().values(),
            &[0, 3]
        );
        let summary: Vec<(i64, Option<&[u8]>, &str)> = decoded
            .dead
            .iter()
            .map(|d| (d.offset, d.key.as_deref(), d.error.as_str()))
            .collect();
        assert_eq!(
            summary[0],
            (
                1,
                Some(&b"b"[..]),
                r#"field "s": expected a string, found a number 3"#
            )
        );
        assert_eq!(summary[1], (2, None, TOMBSTONE_ERROR));
        assert_eq!(summary[2].0, 4);
        assert!(
            summary[2].2.starts_with("invalid JSON after the object"),
            "{}",
            summary[2].2
        );
        assert_eq!(decoded.dead[0].topic, "topic-a");
        assert_eq!(
            decoded.dead[0].payload.as_deref(),
            messages[1].payload.as_deref()
        );
    }
}

#[test]
fn metadata_names_clashing_with_payload_fields_are_refused() {
    let schema = Arc::new(Schema::new(vec![
        Field::new("_offset", DataType::Int64, false),
        Field::new("_key", DataType::Utf8, true),
    ]));
    let format = || MessageFormat::Json {
        schema: schema.clone(),
    };
    let error = RecordDecoder::new(format(), MetadataColumns::ALL).unwrap_err();
    assert!(matches!(error, Error::InvalidOption { .. }), "{error}");
    let message = error.to_string();
    assert!(
        message.contains("\"_key\" and \"_offset\"") || message.contains("_key and _offset"),
        "{message}"
    );
    // Only the columns asked for can clash.
    let metadata = MetadataColumns {
        partition: true,
        timestamp: true,
        ..MetadataColumns::NONE
    };
    let decoder = RecordDecoder::new(format(), metadata).unwrap();
    let names: Vec<String> = decoder
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(names, ["_offset", "_key", "_timestamp", "_partition"]);
    // The payload decoder's own errors come through.
    let list = DataType::List(Arc::new(Field::new("item", DataType::Float16, true)));
    let schema = Arc::new(Schema::new(vec![Field::new("xs", list, true)]));
    let error =
        RecordDecoder::new(MessageFormat::Json { schema }, MetadataColumns::NONE).unwrap_err();
    assert!(error.to_string().contains("\"xs\""), "{error}");
    let avro = parse_schema(r#"{"type": "record", "name": "r", "fields": [{"name": "a", "type": {"type": "array", "items": "int"}}]}"#).unwrap();
    let error = RecordDecoder::new(
        MessageFormat::Avro {
            schema: avro,
            framing: AvroFraming::Raw,
        },
        MetadataColumns::NONE,
    )
    .unwrap_err();
    assert!(error.to_string().contains("\"a\""), "{error}");
}

/// Decode rate of 200k JSON messages of 24 Float32 fields (`MILLRACE_DECODE_RATE_N` to change),
/// in micro-batches of 10k, against the bare JsonRowDecoder (run with `--ignored --nocapture`,
/// in release for a meaningful number). No broker needed.
#[test]
#[ignore = "measurement; run with --ignored --nocapture (release)"]
fn decode_rate_200k_json_24_floats() {
    let n: usize = std::env::var("MILLRACE_DECODE_RATE_N")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(200_000);
    let fields: Vec<Field> = (0..24)
        .map(|i| Field::new(format!("f{i}"), DataType::Float32, false))
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let columns: Vec<ArrayRef> = (0..24)
        .map(|c| {
            let values = (0..n).map(|r| ((r * 31 + c * 7) % 10_007) as f32 * 0.013 - 50.0);
            Arc::new(Float32Array::from_iter_values(values)) as ArrayRef
        })
        .collect();
    let batch = RecordBatch::try_new(schema.clone(), columns).unwrap();
    let payloads = JsonRowEncoder::new(&schema)
        .unwrap()
        .encode_batch(&batch)
        .unwrap();
    let bytes: usize = payloads.iter().map(Vec::len).sum();
    let messages: Vec<RawMessage> = payloads
        .into_iter()
        .enumerate()
        .map(|(i, payload)| RawMessage {
            partition: (i % 4) as i32,
            offset: (i / 4) as i64,
            timestamp_ms: Some(BASE_TS + i as i64),
            key: Some(format!("key-{i}").into_bytes()),
            payload: Some(payload),
        })
        .collect();
    const CHUNK: usize = 10_000;
    let rate = |seconds: f64| n as f64 / seconds;

    let mut bare = JsonRowDecoder::new(schema.clone()).unwrap();
    let mut best_bare = f64::MAX;
    for _ in 0..3 {
        let started = Instant::now();
        let mut rows = 0;
        for chunk in messages.chunks(CHUNK) {
            for m in chunk {
                bare.push(m.payload.as_deref().unwrap()).unwrap();
            }
            rows += bare.finish().num_rows();
        }
        assert_eq!(rows, n);
        best_bare = best_bare.min(started.elapsed().as_secs_f64());
    }
    for (label, metadata) in [
        ("no metadata", MetadataColumns::NONE),
        ("all metadata", MetadataColumns::ALL),
    ] {
        let mut decoder = RecordDecoder::new(
            MessageFormat::Json {
                schema: schema.clone(),
            },
            metadata,
        )
        .unwrap();
        let mut best = f64::MAX;
        for _ in 0..3 {
            let started = Instant::now();
            let mut rows = 0;
            for chunk in messages.chunks(CHUNK) {
                let decoded = decoder.decode("bench", chunk);
                assert!(decoded.dead.is_empty());
                rows += decoded.batch.num_rows();
            }
            assert_eq!(rows, n);
            best = best.min(started.elapsed().as_secs_f64());
        }
        eprintln!(
            "DECODE RATE RecordDecoder JSON 24xFloat32 ({label}): {n} msgs ({:.0} B avg) in {best:.3} s = {:.0} msgs/s ({:.0} MB/s); bare JsonRowDecoder {:.0} msgs/s; build {}",
            bytes as f64 / n as f64,
            rate(best),
            bytes as f64 / best / 1e6,
            rate(best_bare),
            if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            }
        );
    }
}
