//! Topics: metadata, creation; the consume rate measurement.

use std::time::{Duration, Instant};

use super::*;
use crate::Error;

#[test]
fn missing_topic_is_a_clear_error_and_is_not_created() {
    let Some(options) = broker() else { return };
    let topic = unique("missing");
    for _ in 0..2 {
        let error = partitions(&options, &topic, TIMEOUT).unwrap_err();
        let expected = format!(
            "topic `{topic}` does not exist on {}; create it or check the name",
            options.bootstrap_servers
        );
        assert_eq!(error.to_string(), expected);
    }
    let error = KafkaSource::open(&options, &topic, "g", 0, 1, StartFrom::Earliest, None)
        .err()
        .unwrap();
    assert!(matches!(error, Error::KafkaMissingTopic { .. }), "{error}");

    create_topic(&options, &topic, 3, TIMEOUT).unwrap();
    create_topic(&options, &topic, 3, TIMEOUT).unwrap(); // already exists: fine
    assert_eq!(
        partitions(&options, &topic, TIMEOUT).unwrap(),
        vec![0, 1, 2]
    );
}

/// Consume rate of 200k small messages (`MILLRACE_KAFKA_RATE_N` to change), 1 and 2 workers (run
/// with `--ignored --nocapture`).
#[test]
#[ignore = "measurement; run with --ignored --nocapture"]
fn consume_rate_200k() {
    let Some(options) = broker() else { return };
    let n = std::env::var("MILLRACE_KAFKA_RATE_N")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(200_000);
    let started = Instant::now();
    let topic = fixture(&options, "rate", 4, n);
    eprintln!("produced {n} in {:.2} s", started.elapsed().as_secs_f64());
    for workers in [1usize, 2] {
        let group = unique("g-rate");
        let started = Instant::now();
        let counts: Vec<usize> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..workers)
                .map(|worker| {
                    let (options, topic, group) = (&options, &topic, &group);
                    scope.spawn(move || {
                        let mut source = KafkaSource::open(
                            options,
                            topic,
                            group,
                            worker,
                            workers,
                            StartFrom::Earliest,
                            None,
                        )
                        .unwrap();
                        let mut count = 0;
                        while !source.at_end() {
                            count += source
                                .poll(10_000, Duration::from_millis(100))
                                .unwrap()
                                .len();
                        }
                        count
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let seconds = started.elapsed().as_secs_f64();
        assert_eq!(counts.iter().sum::<usize>(), n);
        eprintln!(
            "RATE workers={workers}: {n} messages in {seconds:.3} s = {:.0} msgs/s (open included)",
            n as f64 / seconds
        );
    }
}
