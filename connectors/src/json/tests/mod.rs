use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryArray, BooleanArray, Date32Array, Float32Array, Float64Array, Int8Array,
    Int16Array, Int32Array, Int64Array, LargeStringArray, StringArray, StringViewArray,
    TimestampMicrosecondArray, TimestampMillisecondArray, TimestampNanosecondArray,
    TimestampSecondArray, UInt8Array, UInt16Array, UInt32Array, UInt64Array,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;

use super::{JsonRowDecoder, JsonRowEncoder};
use crate::Error;

/// Decoding: conversions, bad records, `seed`.
mod decode;
/// List columns.
mod lists;

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

    /// `make`'s value, or `None` about one time in five.
    fn maybe<T>(&mut self, make: impl FnOnce(&mut Self) -> T) -> Option<T> {
        let value = make(self);
        (!self.next().is_multiple_of(5)).then_some(value)
    }

    fn f64_bits(&mut self) -> f64 {
        loop {
            let v = f64::from_bits(self.next());
            if v.is_finite() {
                return v;
            }
        }
    }

    fn f32_bits(&mut self) -> f32 {
        loop {
            let v = f32::from_bits(self.next() as u32);
            if v.is_finite() {
                return v;
            }
        }
    }
}

fn all_types_schema() -> SchemaRef {
    let utc = Some(Arc::from("UTC"));
    Arc::new(Schema::new(vec![
        Field::new("bool", DataType::Boolean, true),
        Field::new("i8", DataType::Int8, true),
        Field::new("i16", DataType::Int16, true),
        Field::new("i32", DataType::Int32, true),
        Field::new("i64", DataType::Int64, false),
        Field::new("u8", DataType::UInt8, true),
        Field::new("u16", DataType::UInt16, true),
        Field::new("u32", DataType::UInt32, true),
        Field::new("u64", DataType::UInt64, true),
        Field::new("f32", DataType::Float32, true),
        Field::new("f64", DataType::Float64, false),
        Field::new("utf8", DataType::Utf8, true),
        Field::new("large \"utf8\"", DataType::LargeUtf8, true),
        Field::new("view", DataType::Utf8View, true),
        Field::new("binary", DataType::Binary, true),
        Field::new("ts_s", DataType::Timestamp(TimeUnit::Second, None), true),
        Field::new(
            "ts_ms",
            DataType::Timestamp(TimeUnit::Millisecond, utc.clone()),
            true,
        ),
        Field::new(
            "ts_us",
            DataType::Timestamp(TimeUnit::Microsecond, utc),
            true,
        ),
        Field::new(
            "ts_ns",
            DataType::Timestamp(TimeUnit::Nanosecond, None),
            true,
        ),
        Field::new("date", DataType::Date32, true),
    ]))
}

const WORDS: [&str; 6] = [
    "",
    "plain",
    "quote \" and \\",
    "tab\tnew\nline",
    "ünïcødé ✓",
    "\u{1}",
];

/// A batch of every supported type, with nulls, extremes and random values.
fn all_types_batch(rows: usize, seed: u64) -> RecordBatch {
    let mut r = Rng(seed);
    let i8s: Int8Array = (0..rows)
        .map(|i| match i {
            0 => Some(i8::MIN),
            1 => Some(i8::MAX),
            _ => r.maybe(|r| r.next() as i8),
        })
        .collect();
    let i16s: Int16Array = (0..rows).map(|_| r.maybe(|r| r.next() as i16)).collect();
    let i32s: Int32Array = (0..rows).map(|_| r.maybe(|r| r.next() as i32)).collect();
    let i64s: Int64Array = (0..rows)
        .map(|i| match i {
            0 => i64::MIN,
            1 => i64::MAX,
            _ => r.next() as i64,
        })
        .collect();
    let u8s: UInt8Array = (0..rows).map(|_| r.maybe(|r| r.next() as u8)).collect();
    let u16s: UInt16Array = (0..rows).map(|_| r.maybe(|r| r.next() as u16)).collect();
    let u32s: UInt32Array = (0..rows).map(|_| r.maybe(|r| r.next() as u32)).collect();
    let u64s: UInt64Array = (0..rows)
        .map(|i| {
            if i == 0 {
                Some(u64::MAX)
            } else {
                r.maybe(Rng::next)
            }
        })
        .collect();
    let f32s: Float32Array = (0..rows)
        .map(|i| match i {
            0 => Some(0.1),
            1 => Some(f32::MIN_POSITIVE / 3.0),
            2 => Some(-0.0),
            3 => Some(16_777_216.0),
            _ => r.maybe(Rng::f32_bits),
        })
        .collect();
    let f64s: Float64Array = (0..rows)
        .map(|i| match i {
            0 => 0.1,
            1 => f64::MAX,
            2 => 5e-324,
            3 => 1e16,
            _ => r.f64_bits(),
        })
        .collect();
    let word = |r: &mut Rng| r.maybe(|r| WORDS[(r.next() % WORDS.len() as u64) as usize]);
    let utf8: StringArray = (0..rows).map(|_| word(&mut r)).collect();
    let large: LargeStringArray = (0..rows).map(|_| word(&mut r)).collect();
    let view: StringViewArray = (0..rows).map(|_| word(&mut r)).collect();
    let binary: BinaryArray = (0..rows).map(|_| word(&mut r).map(str::as_bytes)).collect();
    // Timestamps in and out of the years 0000-9999 (the encoder writes the latter as integers).
    let ts = |r: &mut Rng, range: i64| r.maybe(|r| (r.next() as i64) % range);
    let ts_s: TimestampSecondArray = (0..rows)
        .map(|i| {
            if i == 0 {
                Some(i64::MAX)
            } else {
                ts(&mut r, 300_000_000_000)
            }
        })
        .collect();
    let ts_ms: TimestampMillisecondArray = (0..rows)
        .map(|i| {
            if i == 0 {
                Some(i64::MIN)
            } else {
                ts(&mut r, 300_000_000_000_000)
            }
        })
        .collect::<TimestampMillisecondArray>()
        .with_timezone("UTC");
    let ts_us: TimestampMicrosecondArray = (0..rows)
        .map(|_| ts(&mut r, i64::MAX))
        .collect::<TimestampMicrosecondArray>()
        .with_timezone("UTC");
    let ts_ns: TimestampNanosecondArray = (0..rows).map(|_| ts(&mut r, i64::MAX)).collect();
    let dates: Date32Array = (0..rows)
        .map(|i| match i {
            0 => Some(i32::MIN),
            1 => Some(i32::MAX),
            _ => r.maybe(|r| (r.next() as i32) % 3_000_000),
        })
        .collect();
    let bools: BooleanArray = (0..rows).map(|_| r.maybe(|r| r.next() % 2 == 0)).collect();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(bools),
        Arc::new(i8s),
        Arc::new(i16s),
        Arc::new(i32s),
        Arc::new(i64s),
        Arc::new(u8s),
        Arc::new(u16s),
        Arc::new(u32s),
        Arc::new(u64s),
        Arc::new(f32s),
        Arc::new(f64s),
        Arc::new(utf8),
        Arc::new(large),
        Arc::new(view),
        Arc::new(binary),
        Arc::new(ts_s),
        Arc::new(ts_ms),
        Arc::new(ts_us),
        Arc::new(ts_ns),
        Arc::new(dates),
    ];
    RecordBatch::try_new(all_types_schema(), columns).unwrap()
}

#[test]
fn round_trip_every_type_with_nulls() {
    let batch = all_types_batch(2_000, 42);
    let encoder = JsonRowEncoder::new(&batch.schema()).unwrap();
    let mut decoder = JsonRowDecoder::new(batch.schema()).unwrap();
    for record in encoder.encode_batch(&batch).unwrap() {
        decoder.push(&record).unwrap_or_else(|e| {
            panic!("{e} in {}", String::from_utf8_lossy(&record));
        });
    }
    assert_eq!(decoder.len(), 2_000);
    let back = decoder.finish();
    for (i, field) in batch.schema().fields().iter().enumerate() {
        assert_eq!(back.column(i), batch.column(i), "column {}", field.name());
    }
    assert_eq!(back, batch);
    // Reusable after finish, and the same data decodes the same again.
    assert!(decoder.is_empty());
    for row in 0..batch.num_rows() {
        let mut out = Vec::new();
        encoder.encode_row(&batch, row, &mut out).unwrap();
        decoder.push(&out).unwrap();
    }
    assert_eq!(decoder.finish(), batch);
}

#[test]
fn encoder_writes_readable_values() {
    let batch = all_types_batch(3, 7);
    let encoder = JsonRowEncoder::new(&batch.schema()).unwrap();
    let first: serde_json::Value =
        serde_json::from_slice(&encoder.encode_batch(&batch).unwrap()[0]).unwrap();
    // Keys in schema order, escaped; f32 as its own shortest form; timestamps and dates outside
    // the years 0000-9999 as integers.
    let keys: Vec<&str> = first
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys.len(), 20);
    assert_eq!(first["i64"], serde_json::json!(i64::MIN));
    assert_eq!(first["f64"], serde_json::json!(0.1));
    assert_eq!(first["ts_s"], serde_json::json!(i64::MAX));
    assert_eq!(first["date"], serde_json::json!(i32::MIN));
    let text = String::from_utf8(encoder.encode_batch(&batch).unwrap()[0].clone()).unwrap();
    assert!(text.starts_with("{\"bool\":"), "{text}");
    assert!(text.contains("\"large \\\"utf8\\\"\":"), "{text}");
    assert!(text.contains("\"f32\":0.1,"), "{text}");

    let schema = Arc::new(Schema::new(vec![
        Field::new("x", DataType::Float64, true),
        Field::new("y", DataType::Float32, true),
        Field::new("b", DataType::Binary, true),
        Field::new(
            "t",
            DataType::Timestamp(TimeUnit::Millisecond, Some("+02:00".into())),
            true,
        ),
        Field::new("n", DataType::Timestamp(TimeUnit::Nanosecond, None), true),
        Field::new("d", DataType::Date32, true),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Float64Array::from(vec![f64::NAN, f64::INFINITY, 1.0])),
            Arc::new(Float32Array::from(vec![
                f32::NEG_INFINITY,
                1e-45,
                3.4028235e38,
            ])),
            Arc::new(BinaryArray::from(vec![
                &b"ok"[..],
                &[0xff, b'a'][..],
                &[][..],
            ])),
            Arc::new(
                TimestampMillisecondArray::from(vec![Some(1_714_564_800_123), Some(0), None])
                    .with_timezone("+02:00"),
            ),
            Arc::new(TimestampNanosecondArray::from(vec![
                1,
                1_000,
                1_000_000_000,
            ])),
            Arc::new(Date32Array::from(vec![Some(19_844), Some(-1), None])),
        ],
    )
    .unwrap();
    let encoder = JsonRowEncoder::new(&schema).unwrap();
    let rows: Vec<String> = encoder
        .encode_batch(&batch)
        .unwrap()
        .into_iter()
        .map(|r| String::from_utf8(r).unwrap())
        .collect();
    assert_eq!(
        rows,
        [
            r#"{"x":null,"y":null,"b":"ok","t":"2024-05-01T12:00:00.123Z","n":"1970-01-01T00:00:00.000000001Z","d":"2024-05-01"}"#,
            r#"{"x":null,"y":1e-45,"b":"�a","t":"1970-01-01T00:00:00Z","n":"1970-01-01T00:00:00.000001Z","d":"1969-12-31"}"#,
            r#"{"x":1.0,"y":3.4028235e+38,"b":"","t":null,"n":"1970-01-01T00:00:01Z","d":null}"#,
        ]
    );
    // encode_row appends, and leaves `out` alone on error.
    let mut out = b"prefix ".to_vec();
    encoder.encode_row(&batch, 2, &mut out).unwrap();
    assert_eq!(&out[..8], b"prefix {");
    let before = out.clone();
    let err = encoder.encode_row(&batch, 3, &mut out).unwrap_err();
    assert!(err.to_string().contains("row 3"), "{err}");
    assert_eq!(out, before);
    let other = all_types_batch(2, 1);
    let err = encoder.encode_row(&other, 0, &mut out).unwrap_err();
    assert!(matches!(err, Error::BatchSchema { .. }), "{err}");
    assert_eq!(out, before);
}

#[test]
fn empty_schema_and_empty_batch() {
    let schema = Arc::new(Schema::empty());
    let mut decoder = JsonRowDecoder::new(schema.clone()).unwrap();
    decoder.push(br#"{"anything": [1, {"a": null}]}"#).unwrap();
    decoder.push(b" {} ").unwrap();
    let batch = decoder.finish();
    assert_eq!((batch.num_rows(), batch.num_columns()), (2, 0));
    let encoder = JsonRowEncoder::new(&schema).unwrap();
    assert_eq!(
        encoder.encode_batch(&batch).unwrap(),
        vec![b"{}".to_vec(); 2]
    );

    let mut decoder = JsonRowDecoder::new(all_types_schema()).unwrap();
    let batch = decoder.finish();
    assert_eq!(batch.num_rows(), 0);
    assert_eq!(batch.schema(), all_types_schema());
}
