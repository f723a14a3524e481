//! RecordDecoder against a broker: JSON and Avro topics with bad messages and tombstones, the
//! metadata columns, dead letters to a DLQ; the benchmark-like rows the sink tests share.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{
    Array, ArrayRef, AsArray, Float32Array, Int8Array, StringArray, TimestampMillisecondArray,
    UInt32Array,
};
use arrow::compute::{cast, concat_batches, take_record_batch};
use arrow::datatypes::{DataType, Field, Int32Type, Int64Type, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use super::*;
use crate::avro::{AvroFraming, AvroRowEncoder, parse_schema};
use crate::json::JsonRowEncoder;

/// The benchmark-like row: f0..f15 Float32, cat Utf8, label Int8, ts Timestamp(ms, UTC).
pub(super) fn bench_schema() -> SchemaRef {
    let mut fields: Vec<Field> = (0..16)
        .map(|i| Field::new(format!("f{i}"), DataType::Float32, false))
        .collect();
    fields.push(Field::new("cat", DataType::Utf8, true));
    fields.push(Field::new("label", DataType::Int8, false));
    let utc = DataType::Timestamp(TimeUnit::Millisecond, Some(Arc::from("UTC")));
    fields.push(Field::new("ts", utc, true));
    Arc::new(Schema::new(fields))
}

/// The same record as Avro (label as an int: it reads back as Int32).
pub(super) const BENCH_AVRO: &str = r#"{"type": "record", "name": "row", "fields": [
    {"name": "f0", "type": "float"}, {"name": "f1", "type": "float"},
    {"name": "f2", "type": "float"}, {"name": "f3", "type": "float"},
    {"name": "f4", "type": "float"}, {"name": "f5", "type": "float"},
    {"name": "f6", "type": "float"}, {"name": "f7", "type": "float"},
    {"name": "f8", "type": "float"}, {"name": "f9", "type": "float"},
    {"name": "f10", "type": "float"}, {"name": "f11", "type": "float"},
    {"name": "f12", "type": "float"}, {"name": "f13", "type": "float"},
    {"name": "f14", "type": "float"}, {"name": "f15", "type": "float"},
    {"name": "cat", "type": ["null", "string"]},
    {"name": "label", "type": "int"},
    {"name": "ts", "type": ["null", {"type": "long", "logicalType": "timestamp-millis"}]}
]}"#;

/// `n` deterministic rows of [`bench_schema`], with nulls in `cat` and `ts`.
pub(super) fn bench_batch(n: usize, seed: u64) -> RecordBatch {
    let mut state = seed;
    let mut next = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) as u32
    };
    let mut columns: Vec<ArrayRef> = Vec::new();
    for _ in 0..16 {
        let values: Vec<f32> = (0..n).map(|_| (next() as f32 / 1e4 - 2e5) * 1e-3).collect();
        columns.push(Arc::new(Float32Array::from(values)));
    }
    let cats = ["a", "bb", "ünï \"q\"", ""];
    let cat: StringArray = (0..n)
        .map(|i| (i % 5 != 3).then(|| cats[next() as usize % cats.len()]))
        .collect();
    columns.push(Arc::new(cat));
    let label: Int8Array = (0..n).map(|_| Some(next() as i8)).collect();
    columns.push(Arc::new(label));
    let ts: TimestampMillisecondArray = (0..n)
        .map(|i| (i % 7 != 2).then(|| BASE_TS + (next() % 1_000_000) as i64))
        .collect::<TimestampMillisecondArray>()
        .with_timezone("UTC");
    columns.push(Arc::new(ts));
    RecordBatch::try_new(bench_schema(), columns).unwrap()
}

/// `batch` with `label` cast to Int32, as Avro reads it back.
pub(super) fn label_as_int32(batch: &RecordBatch) -> RecordBatch {
    let mut fields: Vec<Field> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    let mut columns = batch.columns().to_vec();
    let i = batch.schema().index_of("label").unwrap();
    fields[i] = Field::new("label", DataType::Int32, false);
    columns[i] = cast(&columns[i], &DataType::Int32).unwrap();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
}

/// The first `n` columns of `batch` (the payload columns of a decoded batch).
pub(super) fn payload_columns(batch: &RecordBatch, n: usize) -> RecordBatch {
    batch.project(&(0..n).collect::<Vec<_>>()).unwrap()
}

/// One message to produce and what decoding it should give.
struct Planned {
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
    /// The row of the produced batch it holds, or the error it must be rejected with.
    expect: Result<usize, String>,
}

/// Produces `messages`: message `i` to partition `i % partitions` with timestamp `BASE_TS + i`.
fn produce(options: &KafkaOptions, topic: &str, partitions: i32, messages: &[Planned]) {
    let producer: BaseProducer = options
        .client_config()
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .unwrap();
    for (i, message) in messages.iter().enumerate() {
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic)
            .partition(i as i32 % partitions)
            .timestamp(BASE_TS + i as i64);
        if let Some(key) = &message.key {
            record = record.key(key.as_slice());
        }
        if let Some(payload) = &message.payload {
            record = record.payload(payload.as_slice());
        }
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    record = back;
                    producer.poll(Duration::from_millis(10));
                }
            }
        }
    }
    producer.flush(TIMEOUT).unwrap();
}

/// Good rows, then bad messages at fixed places: keys `key-i`, except none for every 7th message
/// and bytes that are not UTF-8 for message 3.
fn plan(good: Vec<Vec<u8>>, bad: Vec<(usize, Option<Vec<u8>>, String)>) -> Vec<Planned> {
    let mut planned: Vec<Planned> = good
        .into_iter()
        .enumerate()
        .map(|(row, payload)| Planned {
            key: None,
            payload: Some(payload),
            expect: Ok(row),
        })
        .collect();
    for (at, payload, error) in bad {
        let expect = Err(error);
        planned.insert(
            at,
            Planned {
                key: None,
                payload,
                expect,
            },
        );
    }
    for (i, message) in planned.iter_mut().enumerate() {
        message.key = match i {
            3 => Some(vec![0xff, b'k']),
            _ if i % 7 == 6 => None,
            _ => Some(format!("key-{i}").into_bytes()),
        };
    }
    planned
}

/// Reads `topic` (every partition) to its end, decodes it in chunks of 13 messages with one
/// decoder, and checks the result against `planned` (message `i` in partition `i % partitions`
/// at offset `i / partitions`); returns the dead letters.
fn consume_and_check(
    options: &KafkaOptions,
    topic: &str,
    partitions: i32,
    planned: &[Planned],
    format: MessageFormat,
    expected: &RecordBatch,
) -> Vec<RejectedMessage> {
    let mut source = KafkaSource::open(
        options,
        topic,
        &unique("g-rec"),
        0,
        1,
        StartFrom::Earliest,
        None,
    )
    .unwrap();
    let messages = read_to_end(&mut source);
    assert_eq!(messages.len(), planned.len());
    let mut decoder = RecordDecoder::new(format, MetadataColumns::ALL).unwrap();
    let schema = decoder.schema();
    let width = expected.num_columns();
    let names: Vec<&str> = schema.fields()[width..]
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    assert_eq!(names, ["_key", "_timestamp", "_partition", "_offset"]);
    let mut batches = Vec::new();
    let mut dead = Vec::new();
    for chunk in messages.chunks(13) {
        let decoded = decoder.decode(topic, chunk);
        assert_eq!(decoded.batch.schema(), schema);
        batches.push(decoded.batch);
        dead.extend(decoded.dead);
    }
    let batch = concat_batches(&schema, &batches).unwrap();

    // Back to production order: message i sits at (i % partitions, i / partitions).
    let index_of =
        |partition: i32, offset: i64| (offset * partitions as i64 + partition as i64) as usize;
    let partition = batch.column(width + 2).as_primitive::<Int32Type>();
    let offset = batch.column(width + 3).as_primitive::<Int64Type>();
    let mut order: Vec<(usize, u32)> = (0..batch.num_rows())
        .map(|r| (index_of(partition.value(r), offset.value(r)), r as u32))
        .collect();
    order.sort();
    let batch = take_record_batch(
        &batch,
        &UInt32Array::from_iter_values(order.iter().map(|o| o.1)),
    )
    .unwrap();
    let good: Vec<(usize, usize)> = planned
        .iter()
        .enumerate()
        .filter_map(|(i, p)| p.expect.clone().ok().map(|row| (i, row)))
        .collect();
    assert_eq!(batch.num_rows(), good.len());
    assert_eq!(&payload_columns(&batch, width), expected);
    let keys = batch.column(width).as_string::<i32>();
    let timestamps = batch
        .column(width + 1)
        .as_primitive::<arrow::datatypes::TimestampMillisecondType>();
    let partition = batch.column(width + 2).as_primitive::<Int32Type>();
    let offset = batch.column(width + 3).as_primitive::<Int64Type>();
    for (r, &(i, row)) in good.iter().enumerate() {
        assert_eq!(row, r, "rows come in production order");
        let key = planned[i].key.as_deref().map(String::from_utf8_lossy);
        assert_eq!(
            keys.is_valid(r).then(|| keys.value(r)),
            key.as_deref(),
            "message {i}"
        );
        assert_eq!(timestamps.value(r), BASE_TS + i as i64, "message {i}");
        assert_eq!(partition.value(r), i as i32 % partitions, "message {i}");
        assert_eq!(
            offset.value(r),
            (i / partitions as usize) as i64,
            "message {i}"
        );
    }
    let row3 = good.iter().position(|&(i, _)| i == 3).unwrap();
    assert_eq!(keys.value(row3), "\u{fffd}k");

    // Dead letters: every bad message, in consumption order, with where it came from.
    let mut got: BTreeMap<usize, &RejectedMessage> = BTreeMap::new();
    for letter in &dead {
        got.insert(index_of(letter.partition, letter.offset), letter);
    }
    assert_eq!(got.len(), dead.len());
    let bad: Vec<usize> = (0..planned.len())
        .filter(|&i| planned[i].expect.is_err())
        .collect();
    assert_eq!(got.keys().copied().collect::<Vec<_>>(), bad);
    let consumed_bad: Vec<(i32, i64)> = messages
        .iter()
        .filter(|m| planned[index_of(m.partition, m.offset)].expect.is_err())
        .map(|m| (m.partition, m.offset))
        .collect();
    let dead_order: Vec<(i32, i64)> = dead.iter().map(|d| (d.partition, d.offset)).collect();
    assert_eq!(
        dead_order, consumed_bad,
        "dead letters come in message order"
    );
    for (&i, letter) in &got {
        assert_eq!(letter.topic, topic);
        assert_eq!(letter.key, planned[i].key);
        assert_eq!(letter.payload, planned[i].payload);
        let expected = planned[i].expect.clone().unwrap_err();
        assert_eq!(letter.error, expected, "message {i}");
    }
    dead
}

/// Sends `dead` to a new DLQ topic and checks what a consumer reads back there.
fn dead_letters_to_dlq(options: &KafkaOptions, dead: &[RejectedMessage]) {
    let dlq = unique("dlq-rec");
    create_topic(options, &dlq, 1, TIMEOUT).unwrap();
    let producer = KafkaProducer::new(options, true).unwrap();
    for letter in dead {
        send_dead_letter(&producer, &dlq, letter).unwrap();
    }
    producer.flush(TIMEOUT).unwrap();
    assert_eq!(producer.delivered(), dead.len() as u64);

    let consumer: BaseConsumer = options
        .client_config()
        .set("group.id", unique("g-dlq-rec"))
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(&dlq, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&assignment).unwrap();
    let deadline = Instant::now() + TIMEOUT;
    let mut got = 0;
    while got < dead.len() {
        assert!(Instant::now() < deadline, "dead letters not read back");
        let Some(message) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let message = message.unwrap();
        let letter = &dead[got];
        assert_eq!(message.key(), letter.key.as_deref());
        assert_eq!(
            message.payload().unwrap_or_default(),
            letter.payload.as_deref().unwrap_or_default()
        );
        let headers: BTreeMap<String, String> = message
            .headers()
            .unwrap()
            .iter()
            .map(|h| {
                (
                    h.key.to_string(),
                    String::from_utf8(h.value.unwrap().to_vec()).unwrap(),
                )
            })
            .collect();
        assert_eq!(headers[HEADER_ERROR], letter.error);
        assert_eq!(headers[HEADER_SOURCE_TOPIC], letter.topic);
        assert_eq!(
            headers[HEADER_SOURCE_PARTITION],
            letter.partition.to_string()
        );
        assert_eq!(headers[HEADER_SOURCE_OFFSET], letter.offset.to_string());
        got += 1;
    }
}

/// A JSON object of the bench schema with `f3` replaced by `f3` and `label` by `label`.
fn json_row(f3: &str, label: Option<&str>) -> Vec<u8> {
    let mut text = String::from("{");
    for i in 0..16 {
        let value = if i == 3 {
            f3.to_owned()
        } else {
            format!("{i}.5")
        };
        text.push_str(&format!("\"f{i}\": {value}, "));
    }
    text.push_str("\"cat\": \"x\"");
    if let Some(label) = label {
        text.push_str(&format!(", \"label\": {label}"));
    }
    text.push('}');
    text.into_bytes()
}

#[test]
fn json_topic_with_bad_messages_and_tombstone() {
    let Some(options) = broker() else { return };
    let batch = bench_batch(60, 7);
    let encoder = JsonRowEncoder::new(&batch.schema()).unwrap();
    let good = encoder.encode_batch(&batch).unwrap();
    let bad = vec![
        (
            5,
            Some(b"not json".to_vec()),
            "not a JSON object: expected ident at line 1 column 2".to_owned(),
        ),
        (
            17,
            Some(json_row("\"abc\"", Some("1"))),
            r#"field "f3": expected a number, found a string "abc""#.to_owned(),
        ),
        (
            30,
            Some(json_row("1", None)),
            r#"missing required field "label""#.to_owned(),
        ),
        (44, None, TOMBSTONE_ERROR.to_owned()),
    ];
    let planned = plan(good, bad);
    let topic = unique("rec-json");
    create_topic(&options, &topic, 2, TIMEOUT).unwrap();
    produce(&options, &topic, 2, &planned);
    let format = MessageFormat::Json {
        schema: bench_schema(),
    };
    let dead = consume_and_check(&options, &topic, 2, &planned, format, &batch);
    assert_eq!(dead.len(), 4);
    dead_letters_to_dlq(&options, &dead);
}

#[test]
fn avro_confluent_topic_with_bad_messages_and_tombstone() {
    let Some(options) = broker() else { return };
    let avro = parse_schema(BENCH_AVRO).unwrap();
    let batch = bench_batch(50, 11);
    let encoder = AvroRowEncoder::new(avro.clone(), &batch.schema(), AvroFraming::Confluent)
        .unwrap()
        .with_schema_id(42);
    let good = encoder.encode_batch(&batch).unwrap();
    // The header and 10 floats, then half of f10.
    let mut truncated = good[0].clone();
    truncated.truncate(5 + 4 * 10 + 2);
    let mut trailing = good[1].clone();
    let datum = trailing.len() - 5;
    trailing.extend_from_slice(&[0, 1]);
    let bad = vec![
        (
            2,
            Some(br#"{"f0": 1}"#.to_vec()),
            "the magic byte is 0x7b, not 0x00: the message is not in the Confluent wire format \
             (is the topic raw Avro, or JSON?)"
                .to_owned(),
        ),
        (
            9,
            Some(vec![0, 0, 0]),
            "the message has 3 bytes, too few for the Confluent wire format (a magic byte and a \
             4-byte schema id, then the datum)"
                .to_owned(),
        ),
        (
            21,
            Some(truncated),
            "field \"f10\": the datum is truncated: reading a float at byte 40 needs 4 bytes, 2 \
             are left"
                .to_owned(),
        ),
        (
            33,
            Some(trailing),
            format!(
                "2 bytes left after the Avro datum (the schema read {datum} of its {} bytes); the \
                 message was written with another schema, or is not a single datum",
                datum + 2
            ),
        ),
        (40, None, TOMBSTONE_ERROR.to_owned()),
    ];
    let planned = plan(good, bad);
    let topic = unique("rec-avro");
    create_topic(&options, &topic, 3, TIMEOUT).unwrap();
    produce(&options, &topic, 3, &planned);
    let format = MessageFormat::Avro {
        schema: avro,
        framing: AvroFraming::Confluent,
    };
    let dead = consume_and_check(
        &options,
        &topic,
        3,
        &planned,
        format,
        &label_as_int32(&batch),
    );
    assert_eq!(dead.len(), 5);
    dead_letters_to_dlq(&options, &dead);
}
