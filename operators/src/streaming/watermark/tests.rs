//! The per-partition watermark against a plain recompute from the whole history, on random
//! inputs; and the backlog case: in-order partitions read in any interleaving are never late.

use std::collections::BTreeMap;

use super::*;

/// SplitMix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One record as seen by a worker: partition, event time, processing time.
type Seen = (i32, Option<i64>, i64);

/// A worker's mark recomputed from every record it has seen.
fn recompute_mark(
    partitions: &[i32],
    history: &[Seen],
    lateness: i64,
    idle_after: Option<i64>,
    start: i64,
    now: i64,
) -> WorkerMark {
    let idle_after = idle_after.filter(|&a| a > 0);
    let last = |p: i32| {
        history
            .iter()
            .filter(|s| s.0 == p && s.2 <= now)
            .map(|s| s.2)
            .max()
            .unwrap_or(start)
            .max(start)
    };
    let active: Vec<i32> = partitions
        .iter()
        .copied()
        .filter(|&p| idle_after.is_none_or(|a| now - last(p) < a))
        .collect();
    if active.is_empty() {
        // Everything idle: the mark just before the last partition went idle.
        let (Some(a), Some(t)) = (idle_after, partitions.iter().map(|&p| last(p)).max()) else {
            return WorkerMark::Idle(None);
        };
        return match recompute_mark(partitions, history, lateness, Some(a), start, t + a - 1) {
            WorkerMark::At(w) => WorkerMark::Idle(Some(w)),
            _ => WorkerMark::Idle(None),
        };
    }
    let mut marks = Vec::new();
    for p in active {
        match history
            .iter()
            .filter(|s| s.0 == p)
            .filter_map(|s| s.1)
            .max()
        {
            None => return WorkerMark::Waiting,
            Some(max) => marks.push(max - lateness),
        }
    }
    WorkerMark::At(marks.into_iter().min().unwrap())
}

#[test]
fn matches_a_plain_recompute_on_random_inputs() {
    for seed in 0..300 {
        let mut rng = Rng(seed);
        let workers = 1 + rng.below(4) as usize;
        let partitions = 1 + rng.below(8) as i32;
        let lateness = rng.below(20) as i64;
        let idle_after = match rng.below(3) {
            0 => None,
            _ => Some(rng.below(40) as i64),
        };
        let start = 1_000;
        let owned: Vec<Vec<i32>> = (0..workers)
            .map(|w| {
                (0..partitions)
                    .filter(|p| *p as usize % workers == w)
                    .collect()
            })
            .collect();
        let mut live: Vec<PartitionWatermarks> = owned
            .iter()
            .map(|ps| PartitionWatermarks::new(ps, &BTreeMap::new(), lateness, idle_after, start))
            .collect();
        let mut history: Vec<Vec<Seen>> = vec![Vec::new(); workers];
        let (mut job, mut expected_job) = (None, None);
        let mut now = start;
        for step in 0..60 {
            now += rng.below(12) as i64;
            for w in 0..workers {
                if owned[w].is_empty() {
                    continue;
                }
                for _ in 0..rng.below(4) {
                    let p = owned[w][rng.below(owned[w].len() as u64) as usize];
                    // Event times around the step, sometimes far behind, sometimes missing.
                    let event = match rng.below(10) {
                        0 => None,
                        1 => Some(rng.below(100) as i64),
                        _ => Some(step * 10 + rng.below(30) as i64),
                    };
                    live[w].observe(p, event, now);
                    history[w].push((p, event, now));
                }
            }
            let marks: Vec<WorkerMark> = live.iter().map(|l| l.mark(now)).collect();
            let expected: Vec<WorkerMark> = (0..workers)
                .map(|w| recompute_mark(&owned[w], &history[w], lateness, idle_after, start, now))
                .collect();
            assert_eq!(marks, expected, "seed {seed} step {step}");
            for (w, l) in live.iter().enumerate() {
                for &p in &owned[w] {
                    let expected_max = history[w]
                        .iter()
                        .filter(|s| s.0 == p)
                        .filter_map(|s| s.1)
                        .max();
                    let got = l.max_events().into_iter().find(|e| e.0 == p).map(|e| e.1);
                    assert_eq!(got, expected_max, "seed {seed} partition {p}");
                }
            }
            // The job's watermark: the minimum over workers, held while one waits or all are
            // idle, never going back.
            job = job_watermark(job, marks.iter().copied());
            if !expected.contains(&WorkerMark::Waiting) {
                let at = |m: &WorkerMark| match m {
                    WorkerMark::At(w) => Some(*w),
                    _ => None,
                };
                let carried = |m: &WorkerMark| match m {
                    WorkerMark::Idle(w) => *w,
                    _ => None,
                };
                let min = expected
                    .iter()
                    .filter_map(at)
                    .min()
                    .or_else(|| expected.iter().filter_map(carried).min());
                expected_job = match (expected_job, min) {
                    (Some(a), Some(b)) => Some(i64::max(a, b)),
                    (a, b) => a.or(b),
                };
            }
            assert_eq!(job, expected_job, "seed {seed} step {step}");
        }
    }
}

/// Partitions of in-order records (event times 100 ms apart, dealt round-robin), read by
/// `workers` in a random interleaving: one partition may run far ahead of another.
fn backlog(seed: u64, workers: usize, partitions: i32, rows: i64, rule_per_partition: bool) -> u64 {
    let mut rng = Rng(seed);
    let lateness = 1_000; // far below how far a partition may run ahead
    let owned: Vec<Vec<i32>> = (0..workers)
        .map(|w| {
            (0..partitions)
                .filter(|p| *p as usize % workers == w)
                .collect()
        })
        .collect();
    let mut next: BTreeMap<i32, i64> = (0..partitions).map(|p| (p, i64::from(p))).collect();
    let mut live: Vec<PartitionWatermarks> = owned
        .iter()
        .map(|ps| PartitionWatermarks::new(ps, &BTreeMap::new(), lateness, None, 0))
        .collect();
    let mut newest: Vec<Option<i64>> = vec![None; workers];
    let mut job = None;
    let mut late = 0;
    while next.values().any(|&i| i < rows) {
        for w in 0..workers {
            // A chunk of one partition, as a fetch hands it over.
            let p = owned[w][rng.below(owned[w].len() as u64) as usize];
            let chunk = 1 + rng.below(200) as i64;
            let i = next[&p];
            let mut at = i;
            while at < rows && at < i + chunk * i64::from(partitions) {
                let t = at * 100;
                if job.is_some_and(|wm| t < wm) {
                    late += 1;
                }
                live[w].observe(p, Some(t), 0);
                newest[w] = newest[w].max(Some(t));
                at += i64::from(partitions);
            }
            next.insert(p, at);
        }
        job = if rule_per_partition {
            job_watermark(job, live.iter().map(|l| l.mark(0)))
        } else {
            // The old rule: the newest event time of the slowest worker that has seen one.
            newest.iter().flatten().min().map(|m| m - lateness).max(job)
        };
    }
    late
}

#[test]
fn in_order_partitions_read_in_any_interleaving_are_never_late() {
    let mut old_rule_late = 0;
    for seed in 0..50 {
        assert_eq!(backlog(seed, 2, 4, 20_000, true), 0, "seed {seed}");
        assert_eq!(backlog(seed, 1, 3, 5_000, true), 0, "seed {seed}");
        assert_eq!(backlog(seed, 3, 8, 20_000, true), 0, "seed {seed}");
        old_rule_late += backlog(seed, 2, 4, 20_000, false);
    }
    // The rule this replaces (newest event per worker) made in-order records late.
    assert!(old_rule_late > 0);
}

#[test]
fn an_idle_partition_stops_holding_the_watermark_back_and_it_never_regresses() {
    let mut w = PartitionWatermarks::new(&[0, 2], &BTreeMap::new(), 10, Some(1_000), 0);
    w.observe(0, Some(500), 100);
    // Partition 2 has no event time and is not idle yet: the worker waits.
    assert_eq!(w.mark(900), WorkerMark::Waiting);
    assert!(!w.is_idle(2, 999));
    assert!(w.is_idle(2, 1_000));
    // Still active partition 0 (last record at 100) is idle only from 1100.
    assert_eq!(w.mark(1_050), WorkerMark::At(490));
    let job = job_watermark(None, [w.mark(1_050), WorkerMark::Idle(Some(10_000))]);
    assert_eq!(job, Some(490));
    // Everything idle: the worker carries its mark from just before partition 0 went idle (at
    // 1100, when partition 2 was idle already), whenever the step falls.
    assert_eq!(w.mark(5_000), WorkerMark::Idle(Some(490)));
    assert_eq!(job_watermark(job, [w.mark(5_000)]), Some(490));
    assert_eq!(job_watermark(Some(600), [w.mark(5_000)]), Some(600));
    // Both went idle at once, partition 2 still without an event time: nothing to carry...
    let mut late_idle = PartitionWatermarks::new(&[0, 2], &BTreeMap::new(), 10, Some(1_000), 0);
    late_idle.observe(0, Some(700), 0);
    assert_eq!(late_idle.mark(1_200), WorkerMark::Idle(None));
    // ...until partition 0 outlives it.
    late_idle.observe(0, Some(800), 900);
    assert_eq!(late_idle.mark(9_000), WorkerMark::Idle(Some(790)));
    // Partition 2 comes back far behind: its worker's mark drops, the job's does not.
    w.observe(2, Some(100), 5_000);
    assert_eq!(w.mark(5_000), WorkerMark::At(90));
    assert_eq!(job_watermark(job, [w.mark(5_000)]), Some(490));
    // A worker still waiting for a first event time holds the job back.
    assert_eq!(
        job_watermark(job, [WorkerMark::At(9_000), WorkerMark::Waiting]),
        Some(490)
    );
    assert_eq!(job_watermark(job, [WorkerMark::At(9_000)]), Some(9_000));
}

#[test]
fn restored_event_times_and_disabled_idleness() {
    let restored = BTreeMap::from([(1, 7_000), (3, 5_000), (4, 1)]);
    // After a restart on another worker count, each worker takes its partitions' times.
    let w = PartitionWatermarks::new(&[1, 3], &restored, 1_000, None, 0);
    assert_eq!(w.mark(i64::MAX / 2), WorkerMark::At(4_000));
    assert_eq!(w.max_events(), vec![(1, 7_000), (3, 5_000)]);
    // Without idleness, a silent partition holds the watermark back forever.
    let silent = PartitionWatermarks::new(&[1, 5], &restored, 0, Some(0), 0);
    assert_eq!(silent.mark(i64::MAX / 2), WorkerMark::Waiting);
    // A worker without partitions is idle.
    let none = PartitionWatermarks::new(&[], &restored, 0, Some(10), 0);
    assert_eq!(none.mark(0), WorkerMark::Idle(None));
}

#[test]
fn a_partition_with_unread_records_is_not_idle() {
    let mut w = PartitionWatermarks::new(&[0, 1], &BTreeMap::new(), 10, Some(1_000), 0);
    // The consumer reads partition 0 far ahead; partition 1 still holds records it has not got to.
    w.observe(0, Some(50_000), 100);
    w.observe(1, Some(1_000), 100);
    w.unread(1, 5_000);
    assert!(!w.is_idle(1, 5_500));
    assert!(w.is_idle(0, 5_500));
    assert_eq!(w.mark(5_500), WorkerMark::At(990));
    // Once it has no lag, the timeout counts from the last time it had unread records.
    assert!(w.is_idle(1, 6_000));
    // A partition this worker does not read is left alone.
    w.unread(7, 6_000);
    assert!(!w.is_idle(7, 9_000));
}

#[test]
fn partitions_ahead_of_the_job_watermark_by_more_than_the_alignment() {
    let mut w = PartitionWatermarks::new(&[0, 1, 2], &BTreeMap::new(), 100, None, 0);
    w.observe(0, Some(10_000), 0);
    w.observe(1, Some(12_000), 0);
    w.observe(2, Some(30_000), 0);
    // The job's watermark is partition 0's (9,900): 1 is 2,000 ahead, 2 is 20,000 ahead.
    assert_eq!(w.mark(0), WorkerMark::At(9_900));
    assert_eq!(w.ahead(9_900, 5_000), BTreeSet::from([2]));
    assert_eq!(w.ahead(9_900, 1_000), BTreeSet::from([1, 2]));
    // The partition that holds the watermark back is never paused; nor is one without a time.
    assert!(!w.ahead(9_900, 0).contains(&0));
    let mut fresh = PartitionWatermarks::new(&[0, 1], &BTreeMap::new(), 0, None, 0);
    fresh.observe(0, Some(50_000), 0);
    assert_eq!(fresh.ahead(0, 1_000), BTreeSet::from([0]));
}

/// A table with messages not read yet holds a worker's mark at the newest table time read, and
/// makes an idle worker count again; a mark that waits still waits.
#[test]
fn a_held_mark_waits_for_the_table() {
    assert_eq!(WorkerMark::At(500).held(None), WorkerMark::At(500));
    assert_eq!(WorkerMark::At(500).held(Some(300)), WorkerMark::At(300));
    assert_eq!(WorkerMark::At(200).held(Some(300)), WorkerMark::At(200));
    assert_eq!(
        WorkerMark::Idle(Some(900)).held(Some(300)),
        WorkerMark::At(300)
    );
    assert_eq!(WorkerMark::Idle(None).held(Some(300)), WorkerMark::At(300));
    assert_eq!(WorkerMark::Waiting.held(Some(300)), WorkerMark::Waiting);
    assert_eq!(
        job_watermark(
            Some(100),
            [WorkerMark::At(500), WorkerMark::Idle(None).held(Some(300))]
        ),
        Some(300)
    );
}
