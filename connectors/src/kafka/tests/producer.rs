//! KafkaProducer and dead letters; failures without a broker.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

use super::*;
use crate::Error;

#[test]
fn dead_letters_round_trip_with_headers() {
    let Some(options) = broker() else { return };
    let dlq = unique("dlq");
    create_topic(&options, &dlq, 1, TIMEOUT).unwrap();
    let producer = KafkaProducer::new(&options, false).unwrap();
    let letters = [
        RejectedMessage {
            topic: "orders".into(),
            partition: 3,
            offset: 12_345_678_901,
            key: Some(b"order-7".to_vec()),
            payload: Some(vec![0xff, 0x00, b'{']),
            error: "line 1, column 2: expected value".into(),
        },
        RejectedMessage {
            topic: "orders".into(),
            partition: 0,
            offset: 0,
            key: None,
            payload: None,
            error: "null value".into(),
        },
    ];
    for letter in &letters {
        send_dead_letter(&producer, &dlq, letter).unwrap();
    }
    producer.flush(TIMEOUT).unwrap();
    assert_eq!(producer.delivered(), 2);

    let consumer: BaseConsumer = options
        .client_config()
        .set("group.id", unique("g-dlq"))
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(&dlq, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&assignment).unwrap();
    let deadline = Instant::now() + TIMEOUT;
    let mut got = 0;
    while got < letters.len() {
        assert!(Instant::now() < deadline, "dead letters not read back");
        let Some(message) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let message = message.unwrap();
        let letter = &letters[got];
        assert_eq!(message.key(), letter.key.as_deref());
        assert_eq!(
            message.payload().unwrap_or_default(),
            letter.payload.as_deref().unwrap_or_default()
        );
        let headers: BTreeMap<String, Vec<u8>> = message
            .headers()
            .unwrap()
            .iter()
            .map(|h| (h.key.to_string(), h.value.unwrap().to_vec()))
            .collect();
        let expected: BTreeMap<String, Vec<u8>> = [
            (HEADER_ERROR, letter.error.clone().into_bytes()),
            (HEADER_SOURCE_TOPIC, b"orders".to_vec()),
            (
                HEADER_SOURCE_PARTITION,
                letter.partition.to_string().into_bytes(),
            ),
            (HEADER_SOURCE_OFFSET, letter.offset.to_string().into_bytes()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        assert_eq!(headers, expected);
        got += 1;
    }
}

#[test]
fn idempotent_producer_delivers_every_message_once_in_order() {
    let Some(options) = broker() else { return };
    let topic = unique("idempotent");
    create_topic(&options, &topic, 2, TIMEOUT).unwrap();
    let producer = KafkaProducer::new(&options, true).unwrap();
    let started = now_ms();
    for i in 0..5000 {
        let key = format!("key-{}", i % 10);
        let payload = format!("{i}");
        producer
            .send(&topic, Some(key.as_bytes()), payload.as_bytes(), &[])
            .unwrap();
    }
    producer.flush(TIMEOUT).unwrap();
    assert_eq!(producer.delivered(), 5000);

    let mut source = KafkaSource::open(
        &options,
        &topic,
        &unique("g-idem"),
        0,
        1,
        StartFrom::Earliest,
        None,
    )
    .unwrap();
    let messages = read_to_end(&mut source);
    assert_eq!(messages.len(), 5000);
    let mut last_per_key: BTreeMap<Vec<u8>, i64> = BTreeMap::new();
    let mut partition_of_key: BTreeMap<Vec<u8>, i32> = BTreeMap::new();
    let mut all = BTreeSet::new();
    for message in &messages {
        let key = message.key.clone().unwrap();
        let i: i64 = std::str::from_utf8(message.payload.as_deref().unwrap())
            .unwrap()
            .parse()
            .unwrap();
        assert!(all.insert(i), "message {i} written twice");
        assert_eq!(
            *partition_of_key
                .entry(key.clone())
                .or_insert(message.partition),
            message.partition
        );
        let previous = last_per_key.insert(key, i);
        assert!(previous.is_none_or(|p| p < i), "per-key order kept");
        let ts = message.timestamp_ms.unwrap();
        assert!(
            ts >= started - 1000 && ts <= now_ms() + 1000,
            "timestamp {ts}"
        );
    }
    assert_eq!(all.len(), 5000);
}

#[test]
fn unreachable_broker_fails_quickly_naming_it() {
    // Port 1 on localhost: nothing listens, the connection is refused.
    let options = KafkaOptions::new("127.0.0.1:1");
    let started = Instant::now();
    let error = partitions(&options, "anything", Duration::from_secs(2)).unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let message = error.to_string();
    assert!(message.contains("127.0.0.1:1"), "{message}");
    assert!(matches!(error, Error::Kafka { .. }), "{message}");

    let started = Instant::now();
    let error = create_topic(&options, "anything", 1, Duration::from_secs(2)).unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(error.to_string().contains("127.0.0.1:1"), "{error}");

    let producer =
        KafkaProducer::new(&options.with_property("message.timeout.ms", "1000"), true).unwrap();
    producer.send("anything", None, b"x", &[]).unwrap();
    let error = producer.flush(Duration::from_secs(3)).unwrap_err();
    assert!(error.to_string().contains("127.0.0.1:1"), "{error}");
    assert!(error.to_string().contains("anything"), "{error}");
    assert_eq!(producer.delivered(), 0);
}

#[test]
fn bad_arguments_and_properties_fail_before_connecting() {
    let options = KafkaOptions::new("127.0.0.1:1");
    let open = |worker, workers, options: &KafkaOptions| {
        KafkaSource::open(
            options,
            "t",
            "g",
            worker,
            workers,
            StartFrom::Earliest,
            None,
        )
    };
    assert!(matches!(
        open(2, 2, &options),
        Err(Error::InvalidOption { .. })
    ));
    assert!(matches!(
        open(0, 0, &options),
        Err(Error::InvalidOption { .. })
    ));
    let bad = options.clone().with_property("fetch.max.bytez", "1");
    let message = open(0, 1, &bad).err().unwrap().to_string();
    assert!(message.contains("fetch.max.bytez"), "{message}");
    let message = KafkaProducer::new(&bad, false).err().unwrap().to_string();
    assert!(message.contains("fetch.max.bytez"), "{message}");
    let negative: BTreeMap<i32, i64> = [(0, -5)].into_iter().collect();
    let result = KafkaSource::open(
        &options,
        "t",
        "g",
        0,
        1,
        StartFrom::Committed,
        Some(&negative),
    );
    assert!(matches!(result, Err(Error::InvalidOption { .. })));
}
