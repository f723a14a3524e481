//! The view against a plain recomputation: the table replayed up to each event's time, and each
//! aggregate computed over the key's events in its window by a straightforward loop.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::*;
use crate::{ClusterConfig, MetricsRegistry, execute};

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

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const STEP_MS: u64 = 1_000;

#[derive(Clone, Debug)]
pub(super) struct Event {
    key: i64,
    time: u64,
    amount: Value,
    category: Value,
}

impl Event {
    fn row(&self) -> Row {
        vec![
            Value::Int(self.key),
            Value::Int(self.time as i64),
            self.amount.clone(),
        ]
    }
    /// count, sum, mean, min, max, last, count_distinct
    fn inputs(&self) -> Row {
        let a = self.amount.clone();
        vec![
            Value::Null,
            a.clone(),
            a.clone(),
            a.clone(),
            a.clone(),
            self.category.clone(),
            self.category.clone(),
            a.clone(),
            a.clone(),
            a.clone(),
            a,
            self.category.clone(),
        ]
    }
}

#[derive(Clone, Debug)]
struct TableUpdate {
    key: i64,
    row: Row,
    time: u64,
    diff: isize,
}

/// Per step: its events (times in `[s, s + 2)` steps, so out of order across steps) and table
/// updates (at or after the step's start, which is the frontier when they are pushed).
#[derive(Clone, Debug, Default)]
struct Scenario {
    steps: Vec<(Vec<Event>, Vec<TableUpdate>)>,
}

fn scenario(seed: u64, steps: u64, events_per_step: u64, keys: i64) -> Scenario {
    let mut rng = Rng(seed);
    let mut table: BTreeMap<i64, Row> = BTreeMap::new();
    let mut out = Scenario::default();
    for s in 0..steps {
        let mut updates = Vec::new();
        let changes = if s == 0 {
            keys * 3 / 4
        } else {
            rng.below(6) as i64
        };
        for _ in 0..changes {
            let key = if s == 0 {
                table.len() as i64
            } else {
                rng.below(keys as u64 + 2) as i64
            };
            let time = s * STEP_MS + rng.below(STEP_MS);
            if let Some(old) = table.remove(&key) {
                updates.push(TableUpdate {
                    key,
                    row: old,
                    time,
                    diff: -1,
                });
                if rng.below(4) == 0 {
                    continue; // deleted
                }
            }
            let row = vec![
                Value::Int(rng.below(1000) as i64),
                Value::from(format!("tier{}", rng.below(3)).as_str()),
            ];
            table.insert(key, row.clone());
            updates.push(TableUpdate {
                key,
                row,
                time,
                diff: 1,
            });
        }
        let events = (0..events_per_step)
            .map(|_| Event {
                key: rng.below(keys as u64) as i64,
                time: s * STEP_MS + rng.below(2 * STEP_MS),
                amount: if rng.below(10) == 0 {
                    Value::Null
                } else {
                    Value::Float(rng.below(10_000) as f64 / 100.0)
                },
                category: Value::from(format!("c{}", rng.below(4)).as_str()),
            })
            .collect();
        out.steps.push((events, updates));
    }
    out
}

pub(super) fn spec() -> FeatureSpec {
    let agg = |name: &str, kind, window_ms| Aggregate {
        name: name.into(),
        kind,
        window_ms,
    };
    FeatureSpec {
        inner_join: false,
        table_columns: vec!["score".into(), "tier".into()],
        aggregates: vec![
            agg("n_all", AggKind::Count, None),
            agg("sum_1s", AggKind::Sum, Some(1_000)),
            agg("mean_1s", AggKind::Mean, Some(1_000)),
            agg("min_5s", AggKind::Min, Some(5_000)),
            agg("max_5s", AggKind::Max, Some(5_000)),
            agg("last_cat", AggKind::Last, None),
            agg("cats_1s", AggKind::CountDistinct, Some(1_000)),
            // All time: running values, not a reduce.
            agg("sum_all", AggKind::Sum, None),
            agg("mean_all", AggKind::Mean, None),
            agg("min_all", AggKind::Min, None),
            agg("max_all", AggKind::Max, None),
            agg("cats_all", AggKind::CountDistinct, None),
        ],
    }
}

/// What every event's features must be, recomputed from scratch.
fn reference(scenario: &Scenario) -> Vec<Released> {
    let events: Vec<&Event> = scenario.steps.iter().flat_map(|(e, _)| e).collect();
    let mut updates: Vec<&TableUpdate> = scenario.steps.iter().flat_map(|(_, u)| u).collect();
    updates.sort_by_key(|u| u.time);
    let spec = spec();
    let mut out: Vec<Released> = events
        .iter()
        .map(|e| {
            let mut table: BTreeMap<i64, Row> = BTreeMap::new();
            for u in updates.iter().filter(|u| u.time <= e.time) {
                if u.diff > 0 {
                    table.insert(u.key, u.row.clone());
                } else {
                    table.remove(&u.key);
                }
            }
            let mut features = table
                .get(&e.key)
                .cloned()
                .unwrap_or(vec![Value::Null, Value::Null]);
            for (j, a) in spec.aggregates.iter().enumerate() {
                let inside: Vec<&&Event> = events
                    .iter()
                    .filter(|o| o.key == e.key && o.time <= e.time)
                    .filter(|o| a.window_ms.is_none_or(|w| o.time + w > e.time))
                    .collect();
                let values: Vec<(u64, Value)> = inside
                    .iter()
                    .map(|o| (o.time, o.inputs()[j].clone()))
                    .filter(|(_, v)| !v.is_null())
                    .collect();
                let numbers: Vec<f64> = values.iter().filter_map(|(_, v)| v.as_f64()).collect();
                features.push(match a.kind {
                    AggKind::Count => Value::Int(inside.len() as i64),
                    AggKind::Sum if numbers.is_empty() => Value::Null,
                    AggKind::Sum => Value::Float(numbers.iter().sum()),
                    AggKind::Mean if numbers.is_empty() => Value::Null,
                    AggKind::Mean => {
                        Value::Float(numbers.iter().sum::<f64>() / numbers.len() as f64)
                    }
                    AggKind::Min => values
                        .iter()
                        .map(|(_, v)| v.clone())
                        .min()
                        .unwrap_or(Value::Null),
                    AggKind::Max => values
                        .iter()
                        .map(|(_, v)| v.clone())
                        .max()
                        .unwrap_or(Value::Null),
                    AggKind::Last => values
                        .iter()
                        .max()
                        .map(|(_, v)| v.clone())
                        .unwrap_or(Value::Null),
                    AggKind::CountDistinct => {
                        let mut distinct: Vec<&Value> = values.iter().map(|(_, v)| v).collect();
                        distinct.sort();
                        distinct.dedup();
                        Value::Int(distinct.len() as i64)
                    }
                });
            }
            Released {
                time: e.time,
                row: e.row(),
                features,
            }
        })
        .collect();
    sort(&mut out);
    out
}

fn sort(rows: &mut [Released]) {
    rows.sort_by(|a, b| (a.time, &a.row, &a.features).cmp(&(b.time, &b.row, &b.features)));
}

/// Floats equal to 1e-9 relative (sums in a different order), everything else exactly.
fn assert_same(got: &[Released], want: &[Released]) {
    assert_eq!(got.len(), want.len(), "released rows");
    let close = |a: &Value, b: &Value| match (a, b) {
        (Value::Float(x), Value::Float(y)) => (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0),
        _ => a == b,
    };
    for (g, w) in got.iter().zip(want) {
        assert_eq!((g.time, &g.row), (w.time, &w.row));
        let same = g.features.iter().zip(&w.features).all(|(a, b)| close(a, b));
        assert!(
            same,
            "event {:?} at {}:\n got {:?}\nwant {:?}",
            w.row, w.time, g.features, w.features
        );
    }
}

/// Runs steps `from..to` of `scenario` on `workers` workers (restored from `restore` when given),
/// and returns the released rows and, when `to` is not the end, every worker's state.
fn run(
    scenario: &Scenario,
    workers: usize,
    from: usize,
    to: usize,
    restore: Vec<FeatureState>,
) -> (Vec<Released>, Vec<FeatureState>) {
    let scenario = Arc::new(scenario.clone());
    let restore = Arc::new(restore);
    let per_worker = execute::<_, Error, _>(
        &ClusterConfig::local(workers),
        MetricsRegistry::new(),
        move |worker, ctx| {
            let mut view = FeatureView::new(worker, "features", spec())?;
            view.restore(&restore, &ctx)?;
            let mut rows = Vec::new();
            let steps = scenario.steps.len();
            for s in from..to {
                let (events, updates) = &scenario.steps[s];
                for (i, u) in updates
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| i % ctx.peers == ctx.index)
                {
                    let _ = i;
                    view.update_table(Value::Int(u.key), u.row.clone(), u.time, u.diff)?;
                }
                for e in events.iter().skip(ctx.index).step_by(ctx.peers) {
                    view.push_event(Value::Int(e.key), e.time, e.row(), e.inputs())?;
                }
                let end = if s + 1 == steps {
                    u64::MAX - 1
                } else {
                    (s as u64 + 1) * STEP_MS
                };
                view.advance_to(end);
                view.complete(worker, &ctx)?;
                rows.extend(view.released());
            }
            let state = if to < steps { Some(view.state()) } else { None };
            Ok((rows, state))
        },
    )
    .unwrap();
    let mut rows: Vec<Released> = per_worker.iter().flat_map(|(r, _)| r.clone()).collect();
    sort(&mut rows);
    (
        rows,
        per_worker.into_iter().filter_map(|(_, s)| s).collect(),
    )
}

#[test]
fn view_equals_a_recomputation_on_one_and_on_three_workers() {
    let scenario = scenario(7, 12, 150, 40);
    let want = reference(&scenario);
    assert_eq!(want.len(), 12 * 150);
    // The scenario exercises what it should: unmatched keys, windows with nulls only, deletions.
    assert!(want.iter().any(|r| r.features[0].is_null()));
    assert!(
        scenario
            .steps
            .iter()
            .flat_map(|(_, u)| u)
            .any(|u| u.diff < 0)
    );
    for workers in [1, 3] {
        let (got, _) = run(&scenario, workers, 0, 12, Vec::new());
        assert_same(&got, &want);
    }
}

#[test]
fn restored_view_on_another_worker_count_continues_exactly() {
    let scenario = scenario(11, 10, 120, 25);
    let want = reference(&scenario);
    let (before, states) = run(&scenario, 2, 0, 4, Vec::new());
    assert_eq!(states.len(), 2);
    assert!(states.iter().all(|s| s.frontier == 4 * STEP_MS));
    // Events of step 3 reach into step 4, so some wait in the state for their features.
    assert!(states.iter().map(|s| s.pending.len()).sum::<usize>() > 0);
    // The all-time window keeps one running value per key, not its events (the 1 s and 5 s
    // windows keep theirs, and no running values).
    let (windows, _) = spec().windows();
    let all_time = windows.iter().position(Option::is_none).unwrap();
    let keys: usize = states.iter().map(|s| s.running[all_time].len()).sum();
    assert!((1..=25).contains(&keys), "{keys} keys' running values");
    let unfolded: usize = states.iter().map(|s| s.windows[all_time].len()).sum();
    let pushed: usize = scenario.steps[..4].iter().map(|(e, _)| e.len()).sum();
    assert!(unfolded < pushed / 4, "{unfolded} of {pushed} events kept");
    let windowed = windows.iter().position(Option::is_some).unwrap();
    assert!(states.iter().all(|s| s.running[windowed].is_empty()));
    // A view defined otherwise refuses the state, naming both.
    let mut changed = spec();
    changed.aggregates[1].window_ms = Some(2_000);
    let err = execute::<_, Error, _>(&ClusterConfig::local(1), MetricsRegistry::new(), {
        let states = states.clone();
        move |worker, ctx| {
            FeatureView::new(worker, "changed", changed.clone())?.restore(&states, &ctx)
        }
    })
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("sum_1s = sum over 1000 ms") && err.contains("sum_1s = sum over 2000 ms"),
        "{err}"
    );
    let (after, _) = run(&scenario, 3, 4, 10, states);
    let mut got = before;
    got.extend(after);
    sort(&mut got);
    assert_same(&got, &want);
}

mod keyed;
mod semantics;
mod store;
