//! KafkaSource: assignment, start offsets, commits, resume.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use super::*;

#[test]
fn handles_are_send() {
    fn send<T: Send>() {}
    fn sync<T: Sync>() {}
    send::<KafkaSource>();
    send::<KafkaProducer>();
    sync::<KafkaProducer>();
}

#[test]
fn two_workers_read_every_message_exactly_once() {
    let Some(options) = broker() else { return };
    let topic = fixture(&options, "two-workers", 4, 1000);
    let group = unique("g-two-workers");
    let mut seen = BTreeSet::new();
    for worker in 0..2 {
        let mut source = KafkaSource::open(
            &options,
            &topic,
            &group,
            worker,
            2,
            StartFrom::Earliest,
            None,
        )
        .unwrap();
        let expected: Vec<i32> = (0..4).filter(|p| p % 2 == worker as i32).collect();
        assert_eq!(source.assignment(), expected);
        assert_eq!(source.topic(), topic);
        let messages = read_to_end(&mut source);
        assert_eq!(messages.len(), 500, "worker {worker}");
        let mut last: BTreeMap<i32, i64> = BTreeMap::new();
        for message in &messages {
            assert_eq!(message.partition as usize % 2, worker);
            let previous = last.insert(message.partition, message.offset);
            assert_eq!(
                previous.map_or(0, |o| o + 1),
                message.offset,
                "in order, no gaps"
            );
            let i = check_fixture_message(message, 4);
            assert!(seen.insert(i), "message {i} read twice");
        }
        let ends: BTreeMap<i32, i64> = expected.iter().map(|&p| (p, 250)).collect();
        assert_eq!(source.positions(), ends);
        assert!(
            source
                .poll(10, Duration::from_millis(200))
                .unwrap()
                .is_empty()
        );
        assert!(source.at_end());
    }
    assert_eq!(seen, (0..1000).collect::<BTreeSet<_>>());
}

#[test]
fn commit_midway_then_resume_exactly_from_committed() {
    let Some(options) = broker() else { return };
    let topic = fixture(&options, "commit", 4, 1000);
    let group = unique("g-commit");

    // A fresh group has no committed offsets: Committed starts at the earliest message.
    let mut first =
        KafkaSource::open(&options, &topic, &group, 0, 1, StartFrom::Committed, None).unwrap();
    assert_eq!(first.positions(), (0..4).map(|p| (p, 0)).collect());
    let mut before = Vec::new();
    while before.len() < 400 {
        before.extend(first.poll(100, Duration::from_secs(1)).unwrap());
    }
    let committed = first.positions();
    assert!(
        committed.values().any(|&o| 0 < o && o < 250),
        "midway: {committed:?}"
    );
    for p in 0..4 {
        let read = before.iter().filter(|m| m.partition == p).count() as i64;
        assert_eq!(committed[&p], read, "partition {p}");
    }
    first.commit(&committed).unwrap();
    drop(first);

    // The group's offsets, as another client sees them.
    let checker: BaseConsumer = options
        .client_config()
        .set("group.id", &group)
        .create()
        .unwrap();
    let mut query = TopicPartitionList::new();
    query.add_partition_range(&topic, 0, 3);
    let stored = checker.committed_offsets(query, TIMEOUT).unwrap();
    for elem in stored.elements() {
        assert_eq!(elem.offset(), Offset::Offset(committed[&elem.partition()]));
    }

    // Two workers resume from the committed offsets: no duplicate, no gap.
    let mut seen: BTreeSet<usize> = before.iter().map(|m| check_fixture_message(m, 4)).collect();
    assert_eq!(seen.len(), before.len());
    for worker in 0..2 {
        let mut source = KafkaSource::open(
            &options,
            &topic,
            &group,
            worker,
            2,
            StartFrom::Committed,
            None,
        )
        .unwrap();
        let expected: BTreeMap<i32, i64> = committed
            .iter()
            .filter(|(p, _)| **p as usize % 2 == worker)
            .map(|(p, o)| (*p, *o))
            .collect();
        assert_eq!(source.positions(), expected);
        let after = read_to_end(&mut source);
        for p in source.assignment() {
            let first = after.iter().find(|m| m.partition == p).map(|m| m.offset);
            let expected = (committed[&p] < 250).then_some(committed[&p]);
            assert_eq!(first, expected, "partition {p} resumes at the commit");
        }
        for message in &after {
            assert!(seen.insert(check_fixture_message(message, 4)), "duplicate");
        }
    }
    assert_eq!(seen, (0..1000).collect::<BTreeSet<_>>());
}

#[test]
fn resume_map_overrides_committed_offsets() {
    let Some(options) = broker() else { return };
    let topic = fixture(&options, "resume", 4, 400);
    let group = unique("g-resume");
    let source =
        KafkaSource::open(&options, &topic, &group, 0, 1, StartFrom::Earliest, None).unwrap();
    source.commit(&(0..4).map(|p| (p, 10)).collect()).unwrap();
    drop(source);

    let resume: BTreeMap<i32, i64> = [(0, 90), (2, 5), (7, 1)].into_iter().collect();
    let mut source = KafkaSource::open(
        &options,
        &topic,
        &group,
        0,
        1,
        StartFrom::Committed,
        Some(&resume),
    )
    .unwrap();
    let expected: BTreeMap<i32, i64> = [(0, 90), (1, 10), (2, 5), (3, 10)].into_iter().collect();
    assert_eq!(source.positions(), expected);
    let messages = read_to_end(&mut source);
    for (p, start) in &expected {
        let offsets: Vec<i64> = messages
            .iter()
            .filter(|m| m.partition == *p)
            .map(|m| m.offset)
            .collect();
        assert_eq!(offsets, (*start..100).collect::<Vec<_>>(), "partition {p}");
    }
    for message in &messages {
        check_fixture_message(message, 4);
    }

    // Without a resume map, Earliest ignores the committed offsets.
    let mut source =
        KafkaSource::open(&options, &topic, &group, 0, 1, StartFrom::Earliest, None).unwrap();
    assert_eq!(source.positions(), (0..4).map(|p| (p, 0)).collect());
    assert_eq!(read_to_end(&mut source).len(), 400);
}

#[test]
fn start_from_a_timestamp() {
    let Some(options) = broker() else { return };
    let topic = fixture(&options, "timestamp", 4, 1000);
    let group = unique("g-timestamp");
    let mut source = KafkaSource::open(
        &options,
        &topic,
        &group,
        0,
        1,
        StartFrom::Timestamp(BASE_TS + 501),
        None,
    )
    .unwrap();
    // tansu answers the lookup with an earlier offset (mostly 0): the source skips the older
    // messages itself, so only the delivered messages are checked, not the start positions.
    for (p, start) in source.positions() {
        assert!(start <= 126, "partition {p} starts at {start}");
    }
    let messages = read_to_end(&mut source);
    // Partition p holds i = p + 4k; the first with i >= 501 is k = 125 (p >= 1) or 126 (p = 0).
    let firsts: BTreeMap<i32, i64> = [(0, 126), (1, 125), (2, 125), (3, 125)]
        .into_iter()
        .collect();
    for (p, first) in &firsts {
        let offset = messages
            .iter()
            .find(|m| m.partition == *p)
            .map(|m| m.offset);
        assert_eq!(offset, Some(*first), "partition {p}");
    }
    let indexes: BTreeSet<usize> = messages
        .iter()
        .map(|m| check_fixture_message(m, 4))
        .collect();
    assert_eq!(indexes, (501..1000).collect());
    assert_eq!(source.positions(), (0..4).map(|p| (p, 250)).collect());
}

#[test]
fn start_from_latest_reads_new_messages() {
    let Some(options) = broker() else { return };
    let topic = fixture(&options, "latest", 2, 200);
    let group = unique("g-latest");
    let mut source =
        KafkaSource::open(&options, &topic, &group, 0, 1, StartFrom::Latest, None).unwrap();
    // tansu's high watermark may point into the last batch (see the module docs), so only check
    // that the start is past the first message and that every new message arrives.
    for (p, start) in source.positions() {
        assert!(
            (1..=100).contains(&start),
            "partition {p} starts at {start}"
        );
    }
    produce_range(&options, &topic, 2, 200..260);
    let deadline = Instant::now() + TIMEOUT;
    let mut new = BTreeSet::new();
    while new.len() < 60 {
        assert!(Instant::now() < deadline, "only {} new messages", new.len());
        for message in source.poll(100, Duration::from_millis(500)).unwrap() {
            let i = check_fixture_message(&message, 2);
            if i >= 200 {
                new.insert(i);
            }
        }
    }
    assert_eq!(new, (200..260).collect());
    assert_eq!(
        source.positions(),
        [(0, 130), (1, 130)].into_iter().collect()
    );
}

#[test]
fn a_worker_without_partitions_is_at_end() {
    let Some(options) = broker() else { return };
    let topic = fixture(&options, "idle-worker", 1, 10);
    let group = unique("g-idle");
    let mut idle =
        KafkaSource::open(&options, &topic, &group, 1, 2, StartFrom::Earliest, None).unwrap();
    assert!(idle.assignment().is_empty());
    assert!(idle.at_end());
    assert!(idle.positions().is_empty());
    assert!(
        idle.poll(100, Duration::from_millis(100))
            .unwrap()
            .is_empty()
    );
    idle.commit(&BTreeMap::new()).unwrap();
    // A source may commit partitions it does not read (one worker commits a whole checkpoint).
    idle.commit(&[(0, 7)].into_iter().collect()).unwrap();
    let busy =
        KafkaSource::open(&options, &topic, &group, 0, 2, StartFrom::Committed, None).unwrap();
    assert_eq!(busy.positions(), [(0, 7)].into_iter().collect());
}

/// `has_unread` is the partition's lag as librdkafka last fetched it: true while the broker holds
/// messages the source has not delivered, false for an empty partition and once all are read.
#[test]
fn unread_messages_are_the_lag_behind_the_fetched_high_watermark() {
    let Some(options) = broker() else { return };
    let topic = unique("unread");
    create_topic(&options, &topic, 2, TIMEOUT).unwrap();
    // Every message into partition 0; partition 1 stays empty.
    produce_range(&options, &topic, 1, 0..1000);
    let group = unique("g-unread");
    let mut source =
        KafkaSource::open(&options, &topic, &group, 0, 1, StartFrom::Earliest, None).unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + TIMEOUT;
    while got.is_empty() {
        assert!(Instant::now() < deadline, "nothing read");
        got = source.poll(10, Duration::from_millis(500)).unwrap();
    }
    assert!(got.len() <= 10);
    assert!(source.has_unread(0), "{} of 1000 delivered", got.len());
    assert!(!source.has_unread(1), "an empty partition has no lag");
    assert!(
        !source.has_unread(7),
        "a partition this source does not read"
    );
    let rest = read_to_end(&mut source);
    assert_eq!(got.len() + rest.len(), 1000);
    assert!(!source.has_unread(0));
    assert!(!source.has_unread(1));
}

/// A paused partition delivers nothing; resumed, it goes on from where it stopped, with no
/// message lost or repeated: with what librdkafka fetched of it kept, and (a tiny hold) with it
/// paused in librdkafka and fetched again after what was kept.
#[test]
fn a_paused_partition_resumes_where_it_stopped() {
    for hold_bytes in [None, Some(200)] {
        pause_and_resume(hold_bytes);
    }
}

fn pause_and_resume(hold_bytes: Option<usize>) {
    let Some(options) = broker() else { return };
    let topic = fixture(&options, "pause", 2, 2000);
    let group = unique("g-pause");
    let mut source =
        KafkaSource::open(&options, &topic, &group, 0, 1, StartFrom::Earliest, None).unwrap();
    if let Some(bytes) = hold_bytes {
        source.set_hold_bytes(bytes);
    }
    let mut seen: Vec<(i32, i64)> = Vec::new();
    let deadline = Instant::now() + TIMEOUT;
    while !seen.iter().any(|m| m.0 == 0) {
        assert!(Instant::now() < deadline, "nothing from partition 0");
        let got = source.poll(20, Duration::from_millis(500)).unwrap();
        seen.extend(got.iter().map(|m| (m.partition, m.offset)));
    }
    source.set_paused(&BTreeSet::from([0, 9])).unwrap();
    assert_eq!(source.paused(), &BTreeSet::from([0]));
    let at_pause = source.positions()[&0];
    for _ in 0..5 {
        let got = source.poll(200, Duration::from_millis(200)).unwrap();
        assert!(
            got.iter().all(|m| m.partition == 1),
            "partition 0 is paused"
        );
        seen.extend(got.iter().map(|m| (m.partition, m.offset)));
    }
    assert_eq!(source.positions()[&0], at_pause);
    source.set_paused(&BTreeSet::new()).unwrap();
    assert!(source.paused().is_empty());
    seen.extend(
        read_to_end(&mut source)
            .iter()
            .map(|m| (m.partition, m.offset)),
    );
    for p in 0..2 {
        let offsets: Vec<i64> = seen.iter().filter(|m| m.0 == p).map(|m| m.1).collect();
        assert_eq!(
            offsets,
            (0..1000).collect::<Vec<_>>(),
            "partition {p}, hold {hold_bytes:?}"
        );
    }
    assert!(!source.has_unread(0) && source.at_end());
}
