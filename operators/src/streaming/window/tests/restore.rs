//! Checkpoints: a job interrupted at any round, its windowers' states snapshotted, serialized and
//! restored (each into its own windower, or all into one), gives the results of the job that ran
//! through; states that do not fit the spec are refused.

use super::reference::{Keys, Row, TimeType, batch, random_rows, schema, spec};
use super::*;
use crate::Error;

/// Each round: the rows each of the two workers pushes, one batch each.
type Rounds = Vec<[Vec<Row>; 2]>;

/// Deals `rows` to two workers at random and cuts each one's queue into batches of 1 to 150 rows.
fn rounds(rows: &[Row], rng: &mut Rng) -> Rounds {
    let mut queues: [VecDeque<Row>; 2] = Default::default();
    for r in rows {
        queues[rng.below(2) as usize].push_back(r.clone());
    }
    let mut out = vec![];
    while queues.iter().any(|q| !q.is_empty()) {
        out.push(queues.each_mut().map(|q| {
            let take = (1 + rng.below(150) as usize).min(q.len());
            q.drain(..take).collect()
        }));
    }
    out
}

/// What a set of windowers emitted.
#[derive(Debug, Default, PartialEq)]
struct Emitted {
    /// Per windower, everything `close` and `flush_all` returned, in order.
    results: Vec<Vec<WindowResult>>,
    /// The ids of the late and unusable rows, sorted.
    late_ids: Vec<i64>,
}

struct Job {
    spec: WindowSpec,
    schema: SchemaRef,
    keys: Keys,
    time: TimeType,
    rounds: Rounds,
}

/// The job run through without a crash, on two workers closed on their combined watermark after
/// each round.
struct Uninterrupted {
    /// The watermark closed at after each round (`None`: no close).
    wms: Vec<Option<i64>>,
    /// Per round, each worker's closed windows; one more round at the end for the flush.
    results: Vec<[Vec<WindowResult>; 2]>,
    /// Per round, the late row ids of both workers.
    late_ids: Vec<Vec<i64>>,
    /// Both workers' states before each round, and after the last (before the flush).
    snaps: Vec<[WindowState; 2]>,
}

impl Job {
    fn new(seed: u64, keys: Keys, time: TimeType, size: u64, slide: Option<u64>) -> Self {
        let mut rng = Rng(seed);
        let rows = random_rows(&mut rng, 4_000);
        Job {
            spec: spec(keys, size, slide, LatePolicy::DeadLetter),
            schema: schema(keys, time),
            keys,
            time,
            rounds: rounds(&rows, &mut rng),
        }
    }

    fn windower(&self) -> Windower {
        Windower::new(self.spec.clone(), self.schema.clone()).unwrap()
    }

    /// Pushes `rows` into `w`, returning the late row ids.
    fn push(&self, w: &mut Windower, rows: &[Row]) -> Vec<i64> {
        let pushed = w
            .push(&batch(&self.schema, self.keys, self.time, rows))
            .unwrap();
        pushed.late.map_or_else(Vec::new, |late| {
            late.column(0).as_primitive::<Int64Type>().values().to_vec()
        })
    }

    fn uninterrupted(&self, snapshots: bool) -> Uninterrupted {
        let mut ws = [self.windower(), self.windower()];
        let mut run = Uninterrupted {
            wms: vec![],
            results: vec![],
            late_ids: vec![],
            snaps: vec![],
        };
        for round in &self.rounds {
            if snapshots {
                let before = ws.each_ref().map(Windower::open_windows);
                run.snaps.push(ws.each_ref().map(Windower::snapshot));
                // A snapshot changes nothing.
                assert_eq!(ws.each_ref().map(Windower::open_windows), before);
            }
            let mut late = vec![];
            for (w, rows) in ws.iter_mut().zip(round) {
                late.extend(self.push(w, rows));
            }
            late.sort_unstable();
            run.late_ids.push(late);
            let wm = combined_watermark(ws.iter().map(Windower::local_watermark));
            run.wms.push(wm);
            run.results.push(
                ws.each_mut()
                    .map(|w| wm.map_or_else(Vec::new, |wm| w.close(wm).unwrap())),
            );
        }
        if snapshots {
            run.snaps.push(ws.each_ref().map(Windower::snapshot));
        }
        run.results
            .push(ws.each_mut().map(|w| w.flush_all().unwrap()));
        run
    }

    /// Runs rounds `from..` on `ws` as the uninterrupted job did (same watermarks), worker `i`'s
    /// rows going to `ws[route[i]]`, then flushes.
    fn resume(
        &self,
        ws: &mut [Windower],
        route: [usize; 2],
        from: usize,
        wms: &[Option<i64>],
    ) -> Emitted {
        let mut out = Emitted {
            results: vec![vec![]; ws.len()],
            late_ids: vec![],
        };
        for (round, wm) in self.rounds[from..].iter().zip(&wms[from..]) {
            for (rows, to) in round.iter().zip(route) {
                out.late_ids.extend(self.push(&mut ws[to], rows));
            }
            if let Some(wm) = *wm {
                for (w, results) in ws.iter_mut().zip(&mut out.results) {
                    results.extend(w.close(wm).unwrap());
                }
            }
        }
        for (w, results) in ws.iter_mut().zip(&mut out.results) {
            results.extend(w.flush_all().unwrap());
            assert_eq!(w.open_windows(), 0);
        }
        out.late_ids.sort_unstable();
        out
    }
}

fn via_bincode(state: &WindowState) -> WindowState {
    let bytes = bincode::serialize(state).unwrap();
    let back: WindowState = bincode::deserialize(&bytes).unwrap();
    assert_eq!(&back, state);
    back
}

fn via_json(state: &WindowState) -> WindowState {
    let text = serde_json::to_string(state).unwrap();
    let back: WindowState = serde_json::from_str(&text).unwrap();
    assert_eq!(&back, state);
    back
}

fn check_restore(seed: u64, keys: Keys, time: TimeType, size: u64, slide: Option<u64>) {
    let job = Job::new(seed, keys, time, size, slide);
    let run = job.uninterrupted(true);
    assert_eq!(
        run.results,
        job.uninterrupted(false).results,
        "taking snapshots changed the results"
    );
    let n = job.rounds.len();
    assert!(n > 10, "{n} rounds");
    let expected = merge_all(run.results.iter().flatten().cloned().collect());
    let slide_ms = slide.unwrap_or(size) as i64;
    let mut merged_some = false;
    for cut in [0, 1, n / 3, n / 2, n - 1, n] {
        let [a, b] = &run.snaps[cut];
        // The state is complete and ordered.
        for s in [a, b] {
            assert!(s.open.windows(2).all(|p| p[0].sort_key() < p[1].sort_key()));
            assert!(s.open.iter().all(|r| r.end_ms - r.start_ms == size as i64
                && r.start_ms.rem_euclid(slide_ms) == 0
                && r.state.len() == job.spec.aggregates.len()));
        }
        let closed = run.wms[..cut].iter().rev().find_map(|wm| *wm);
        assert_eq!((a.closed_ms, b.closed_ms), (closed, closed));
        let before: Vec<WindowResult> = run.results[..cut]
            .iter()
            .flat_map(|r| r.iter().flatten().cloned())
            .collect();
        let late_after: Vec<i64> = {
            let mut l: Vec<i64> = run.late_ids[cut..].iter().flatten().copied().collect();
            l.sort_unstable();
            l
        };

        // Both workers' states into one windower: the job goes on on one worker.
        let mut one = job.windower();
        one.restore(via_bincode(a)).unwrap();
        one.restore(via_bincode(b)).unwrap();
        let distinct: BTreeMap<(i64, Option<KeyValue>), ()> = a
            .open
            .iter()
            .chain(&b.open)
            .map(|r| ((r.start_ms, r.key.clone()), ()))
            .collect();
        assert_eq!(one.open_windows(), distinct.len());
        merged_some |= distinct.len() < a.open.len() + b.open.len();
        assert_eq!(one.closed_watermark(), closed);
        let locals = [a, b].map(|s| s.max_event_ms.map(|m| m - 200));
        assert_eq!(one.local_watermark(), locals[0].max(locals[1]));
        let merged_state = one.snapshot();
        assert_eq!(
            merged_state.open,
            merge_all(vec![a.open.clone(), b.open.clone()]),
            "cut {cut}"
        );
        let resumed = job.resume(std::slice::from_mut(&mut one), [0, 0], cut, &run.wms);
        let mut all = vec![before.clone()];
        all.extend(resumed.results);
        assert_eq!(merge_all(all), expected, "one worker after cut {cut}");
        assert_eq!(resumed.late_ids, late_after, "one worker after cut {cut}");

        // Each state into its own fresh windower: the same workers go on, result for result.
        let mut two = [job.windower(), job.windower()];
        for (w, s) in two.iter_mut().zip([a, b]) {
            w.restore(via_json(s)).unwrap();
            assert_eq!(&w.snapshot(), s);
        }
        let resumed = job.resume(&mut two, [0, 1], cut, &run.wms);
        for (i, got) in resumed.results.iter().enumerate() {
            let want: Vec<WindowResult> = run.results[cut..]
                .iter()
                .flat_map(|r| r[i].clone())
                .collect();
            assert_eq!(got, &want, "worker {i} after cut {cut}");
        }
        assert_eq!(resumed.late_ids, late_after, "two workers after cut {cut}");
        let mut all = vec![before];
        all.extend(resumed.results);
        assert_eq!(merge_all(all), expected, "two workers after cut {cut}");
    }
    assert!(merged_some, "no cut had a window open on both workers");
    assert!(run.snaps[n / 2].iter().all(|s| !s.open.is_empty()));
}

#[test]
fn tumbling_windows_resume_from_a_snapshot_on_one_or_two_workers() {
    check_restore(21, Keys::None, TimeType::Millis, 1_000, None);
    check_restore(22, Keys::Str, TimeType::Micros, 500, None);
}

#[test]
fn sliding_windows_resume_from_a_snapshot_on_one_or_two_workers() {
    check_restore(23, Keys::Int, TimeType::Millis, 1_000, Some(250));
    check_restore(24, Keys::Str, TimeType::Millis, 600, Some(200));
}

#[test]
fn restore_keeps_the_larger_frontier_and_event_time() {
    let job = Job::new(25, Keys::Int, TimeType::Millis, 1_000, None);
    let mut w = job.windower();
    assert_eq!(w.snapshot(), WindowState::default());
    w.restore(WindowState::default()).unwrap();
    assert_eq!(w.snapshot(), WindowState::default());
    let state = |closed_ms, max_event_ms| WindowState {
        open: vec![],
        closed_ms,
        max_event_ms,
    };
    w.restore(state(Some(2_000), Some(3_000))).unwrap();
    assert_eq!(w.snapshot(), state(Some(2_000), Some(3_000)));
    assert_eq!(w.local_watermark(), Some(2_800));
    w.restore(state(None, Some(1_000))).unwrap();
    w.restore(state(Some(1_000), None)).unwrap();
    assert_eq!(w.snapshot(), state(Some(2_000), Some(3_000)));
    w.restore(state(Some(5_000), Some(9_000))).unwrap();
    assert_eq!(w.snapshot(), state(Some(5_000), Some(9_000)));
    // A restored window that already ends at the frontier takes no rows and goes out at the next
    // close that reaches it.
    let old = WindowResult {
        start_ms: 3_000,
        end_ms: 4_000,
        key: Some(KeyValue::Int(1)),
        state: job
            .spec
            .aggregates
            .iter()
            .map(|a| AggState::new(a.function))
            .collect(),
    };
    w.restore(WindowState {
        open: vec![old.clone()],
        ..Default::default()
    })
    .unwrap();
    assert_eq!(w.open_windows(), 1);
    assert!(w.close(3_999).unwrap().is_empty());
    assert_eq!(w.close(4_000).unwrap(), vec![old]);
    // After a flush everything is closed; a restored flushed state closes everything too.
    let mut fresh = job.windower();
    fresh.restore(state(Some(i64::MAX), None)).unwrap();
    assert_eq!(fresh.closed_watermark(), Some(i64::MAX));
}

#[test]
fn states_that_do_not_fit_the_spec_are_refused() {
    let job = Job::new(26, Keys::Str, TimeType::Millis, 1_000, Some(250));
    let rows: Vec<Row> = job
        .rounds
        .iter()
        .take(3)
        .flatten()
        .flatten()
        .cloned()
        .collect();
    let mut src = job.windower();
    job.push(&mut src, &rows);
    src.close(src.local_watermark().unwrap() - 1_500).unwrap();
    let good = src.snapshot();
    assert!(good.open.len() > 4, "{} open windows", good.open.len());

    // The last window of a copy of `good`, changed.
    let bad = |change: &dyn Fn(&mut WindowResult)| {
        let mut s = good.clone();
        change(s.open.last_mut().unwrap());
        s
    };
    let far = (-(1i64 << 62) - 5_000).div_euclid(250) * 250;
    let cases: Vec<(WindowState, &str)> = vec![
        (
            bad(&|r| {
                r.state.pop();
            }),
            "has 5 aggregate states, the spec has 6",
        ),
        (
            bad(&|r| r.state[2] = AggState::Count(1)),
            "aggregate 2 (\"sum_v\") is Sum in the spec, but the state is Count",
        ),
        (
            bad(&|r| {
                r.start_ms += 1;
                r.end_ms += 1;
            }),
            "not a multiple of the slide (250 ms)",
        ),
        (bad(&|r| r.end_ms += 250), "not 1000 ms long"),
        (
            bad(&|r| r.key = Some(KeyValue::Int(3))),
            "groups by a string or null key",
        ),
        (bad(&|r| r.key = None), "groups by a string or null key"),
        (
            bad(&|r| {
                r.start_ms = far;
                r.end_ms = far + 1_000;
            }),
            "usable range",
        ),
    ];
    let mut target = job.windower();
    target.restore(good.clone()).unwrap();
    let before = target.snapshot();
    for (state, detail) in cases {
        let w = state.open.last().unwrap();
        let window = format!("[{}, {})", w.start_ms, w.end_ms);
        let e = target.restore(state.clone()).unwrap_err();
        assert!(matches!(e, Error::Checkpoint(_)), "{e:?}");
        let e = e.to_string();
        assert!(
            e.contains(&window) && e.contains(detail),
            "{e:?} should name the window {window} and say {detail:?}"
        );
        // Refused as a whole: the windows before the bad one were not merged either.
        assert_eq!(target.snapshot(), before);
    }
    let e = target
        .restore(WindowState {
            max_event_ms: Some(i64::MAX),
            ..good.clone()
        })
        .unwrap_err()
        .to_string();
    assert!(e.contains("largest event time"), "{e}");
    assert_eq!(target.snapshot(), before);

    // A state from another spec: tumbling 500 ms windows, or no key.
    let other = Job {
        spec: WindowSpec {
            size: Duration::from_millis(500),
            slide: None,
            ..job.spec.clone()
        },
        ..Job::new(26, Keys::Str, TimeType::Millis, 1_000, Some(250))
    };
    let mut w = other.windower();
    other.push(&mut w, &rows);
    let e = target.restore(w.snapshot()).unwrap_err().to_string();
    assert!(e.contains("not 1000 ms long"), "{e}");
    let unkeyed = Job::new(26, Keys::None, TimeType::Millis, 1_000, Some(250));
    let e = unkeyed.windower().restore(good).unwrap_err().to_string();
    assert!(e.contains("groups by no key"), "{e}");
    assert_eq!(target.snapshot(), before);
}
