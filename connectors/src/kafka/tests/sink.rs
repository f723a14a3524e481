//! KafkaSink: JSON and Avro round trips through a broker, keyed by a column; errors without one.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, ArrayRef, AsArray, Int8Array, StringArray};
use arrow::compute::concat_batches;
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;

use super::records::{BENCH_AVRO, bench_batch, bench_schema, label_as_int32, payload_columns};
use super::*;
use crate::Error;
use crate::avro::{AvroFraming, parse_schema};

/// Writes `batch` through a sink (in two writes), then reads the topic back with `format` and the
/// `_key` column: returns the decoded payload columns and keys.
fn round_trip(
    options: &KafkaOptions,
    sink_format: SinkFormat,
    key_column: &str,
    batch: &RecordBatch,
    format: MessageFormat,
) -> (RecordBatch, Vec<Option<String>>) {
    let topic = unique("sink");
    create_topic(options, &topic, 1, TIMEOUT).unwrap();
    let mut sink = KafkaSink::new(
        options,
        &topic,
        sink_format,
        &batch.schema(),
        Some(key_column),
    )
    .unwrap();
    assert_eq!(sink.topic(), topic);
    let half = batch.num_rows() / 2;
    let first = sink.write(&batch.slice(0, half)).unwrap();
    let second = sink
        .write(&batch.slice(half, batch.num_rows() - half))
        .unwrap();
    assert_eq!(first + second, batch.num_rows());
    sink.flush(TIMEOUT).unwrap();
    assert_eq!(sink.delivered(), batch.num_rows() as u64);

    let mut source = KafkaSource::open(
        options,
        &topic,
        &unique("g-sink"),
        0,
        1,
        StartFrom::Earliest,
        None,
    )
    .unwrap();
    let messages = read_to_end(&mut source);
    assert_eq!(messages.len(), batch.num_rows());
    let metadata = MetadataColumns {
        key: true,
        ..MetadataColumns::NONE
    };
    let mut decoder = RecordDecoder::new(format, metadata).unwrap();
    let decoded = decoder.decode(&topic, &messages);
    assert!(decoded.dead.is_empty(), "{:?}", decoded.dead);
    let width = decoded.batch.num_columns() - 1;
    let keys = decoded.batch.column(width).as_string::<i32>();
    let keys = (0..keys.len())
        .map(|r| keys.is_valid(r).then(|| keys.value(r).to_owned()))
        .collect();
    (payload_columns(&decoded.batch, width), keys)
}

#[test]
fn json_sink_round_trip_keyed_by_a_string_column() {
    let Some(options) = broker() else { return };
    let batch = bench_batch(300, 3);
    let format = MessageFormat::Json {
        schema: bench_schema(),
    };
    let (decoded, keys) = round_trip(&options, SinkFormat::Json, "cat", &batch, format);
    assert_eq!(decoded, batch);
    let cat = batch.column(16).as_string::<i32>();
    let expected: Vec<Option<String>> = (0..cat.len())
        .map(|r| cat.is_valid(r).then(|| cat.value(r).to_owned()))
        .collect();
    assert_eq!(keys, expected);
    assert!(keys.iter().any(Option::is_none) && keys.iter().any(|k| k.as_deref() == Some("")));
}

#[test]
fn avro_sink_round_trip_keyed_by_an_integer_column() {
    let Some(options) = broker() else { return };
    let batch = bench_batch(300, 5);
    let avro = parse_schema(BENCH_AVRO).unwrap();
    let sink_format = SinkFormat::Avro {
        schema: avro.clone(),
        framing: AvroFraming::Confluent,
    };
    let format = MessageFormat::Avro {
        schema: avro,
        framing: AvroFraming::Confluent,
    };
    let (decoded, keys) = round_trip(&options, sink_format, "label", &batch, format);
    assert_eq!(decoded, label_as_int32(&batch));
    let label = batch
        .column(17)
        .as_primitive::<arrow::datatypes::Int8Type>();
    let expected: Vec<Option<String>> =
        label.values().iter().map(|v| Some(v.to_string())).collect();
    assert_eq!(keys, expected);
    assert!(
        keys.iter()
            .any(|k| k.as_deref().is_some_and(|k| k.starts_with('-')))
    );
}

/// Options for a broker that is never contacted: the sink connects only to deliver.
fn offline() -> KafkaOptions {
    KafkaOptions::new("127.0.0.1:9").with_property("message.timeout.ms", "1000")
}

#[test]
fn bad_key_columns_and_schemas_fail_at_construction() {
    let schema = bench_schema();
    let error =
        KafkaSink::new(&offline(), "t", SinkFormat::Json, &schema, Some("nope")).unwrap_err();
    assert!(matches!(error, Error::InvalidOption { .. }), "{error}");
    let message = error.to_string();
    assert!(
        message.contains("column \"nope\" is not in the input schema"),
        "{message}"
    );
    assert!(message.contains("f0, f1"), "{message}");

    let error = KafkaSink::new(&offline(), "t", SinkFormat::Json, &schema, Some("f2")).unwrap_err();
    let message = error.to_string();
    assert!(message.contains("column \"f2\" is Float32"), "{message}");
    let error = KafkaSink::new(&offline(), "t", SinkFormat::Json, &schema, Some("ts")).unwrap_err();
    assert!(error.to_string().contains("\"ts\""), "{error}");

    let error = KafkaSink::new(&offline(), "", SinkFormat::Json, &schema, None).unwrap_err();
    assert!(error.to_string().contains("KafkaSink topic"), "{error}");

    let avro = parse_schema(
        r#"{"type": "record", "name": "r", "fields": [{"name": "missing", "type": "int"}]}"#,
    )
    .unwrap();
    let format = SinkFormat::Avro {
        schema: avro,
        framing: AvroFraming::Raw,
    };
    let error = KafkaSink::new(&offline(), "t", format, &schema, None).unwrap_err();
    assert!(error.to_string().contains("\"missing\""), "{error}");
    let options = offline().with_property("no.such.property", "1");
    let error = KafkaSink::new(&options, "t", SinkFormat::Json, &schema, None).unwrap_err();
    assert!(error.to_string().contains("`no.such.property`"), "{error}");

    for key in ["cat", "label"] {
        KafkaSink::new(&offline(), "t", SinkFormat::Json, &schema, Some(key)).unwrap();
    }
}

#[test]
fn a_batch_that_cannot_be_encoded_queues_nothing() {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int8, true),
        Field::new("s", DataType::Utf8, true),
    ]));
    let avro = parse_schema(
        r#"{"type": "record", "name": "r", "fields": [
            {"name": "id", "type": ["null", "int"]}, {"name": "s", "type": "string"}]}"#,
    )
    .unwrap();
    let format = SinkFormat::Avro {
        schema: avro,
        framing: AvroFraming::Raw,
    };
    let mut sink = KafkaSink::new(&offline(), "t", format, &schema, Some("id")).unwrap();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int8Array::from(vec![Some(1), None, Some(3)])),
        Arc::new(StringArray::from(vec![Some("a"), Some("b"), None])),
    ];
    let batch = RecordBatch::try_new(schema.clone(), columns).unwrap();
    let error = sink.write(&batch).unwrap_err();
    assert!(matches!(error, Error::BatchSchema { .. }), "{error}");
    let message = error.to_string();
    assert!(message.contains("row 2, column \"s\""), "{message}");
    assert!(message.contains("Kafka topic t"), "{message}");
    // Nothing was queued, so there is nothing to deliver to the unreachable broker.
    sink.flush(Duration::from_millis(200)).unwrap();
    assert_eq!(sink.write(&batch.slice(0, 0)).unwrap(), 0);

    // A batch whose key column has another type than the schema's.
    let other = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, true),
        Field::new("s", DataType::Utf8, true),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec!["1"])),
        Arc::new(StringArray::from(vec!["a"])),
    ];
    let wrong = RecordBatch::try_new(other, columns).unwrap();
    let error = sink.write(&wrong).unwrap_err();
    assert!(error.to_string().contains("key column \"id\""), "{error}");
    sink.flush(Duration::from_millis(200)).unwrap();

    // Writable rows are queued and then fail delivery to the unreachable broker.
    let writable = concat_batches(&schema, &[batch.slice(0, 2)]).unwrap();
    assert_eq!(sink.write(&writable).unwrap(), 2);
    let error = sink.flush(Duration::from_secs(10)).unwrap_err();
    assert!(
        matches!(error, Error::KafkaDelivery { .. } | Error::Kafka { .. }),
        "{error}"
    );
}
