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
struct Event {
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

fn spec() -> FeatureSpec {
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

#[test]
fn an_event_sees_the_table_as_of_its_time() {
    let rows = execute::<_, Error, _>(
        &ClusterConfig::local(2),
        MetricsRegistry::new(),
        |worker, ctx| {
            let spec = FeatureSpec {
                inner_join: false,
                table_columns: vec!["label".into()],
                aggregates: Vec::new(),
            };
            let mut view = FeatureView::new(worker, "pit", spec)?;
            if ctx.index == 0 {
                view.update_table(Value::Int(1), vec![Value::Int(0)], 0, 1)?;
                // A later version, known before the events arrive: it must not leak into them.
                view.update_table(Value::Int(1), vec![Value::Int(0)], 100, -1)?;
                view.update_table(Value::Int(1), vec![Value::Int(1)], 100, 1)?;
                for t in [50, 99, 100, 150] {
                    view.push_event(Value::Int(1), t, vec![Value::Int(t as i64)], Vec::new())?;
                }
            }
            view.advance_to(200);
            view.complete(worker, &ctx)?;
            let late = view.push_event(Value::Int(1), 199, Vec::new(), Vec::new());
            assert!(late.unwrap_err().to_string().contains("late event"));
            Ok(view.released())
        },
    )
    .unwrap();
    let mut seen: Vec<(u64, Value)> = rows
        .into_iter()
        .flatten()
        .map(|r| (r.time, r.features[0].clone()))
        .collect();
    seen.sort();
    let want: Vec<(u64, Value)> = [(50, 0), (99, 0), (100, 1), (150, 1)]
        .map(|(t, l)| (t, Value::Int(l)))
        .to_vec();
    assert_eq!(seen, want);
}

/// An inner join drops the events whose key has no table row as of their time, and only those:
/// a key deleted from the table drops its later events, a key added keeps them.
#[test]
fn an_inner_join_drops_events_without_a_table_row_as_of_their_time() {
    let rows = execute::<_, Error, _>(
        &ClusterConfig::local(2),
        MetricsRegistry::new(),
        |worker, ctx| {
            let spec = FeatureSpec {
                inner_join: true,
                table_columns: vec!["tier".into()],
                aggregates: vec![Aggregate {
                    name: "n".into(),
                    kind: AggKind::Count,
                    window_ms: None,
                }],
            };
            let mut view = FeatureView::new(worker, "inner", spec)?;
            if ctx.index == 0 {
                // Key 1 until 100, key 2 from 100; key 3 never.
                view.update_table(Value::Int(1), vec![Value::Int(10)], 0, 1)?;
                view.update_table(Value::Int(1), vec![Value::Int(10)], 100, -1)?;
                view.update_table(Value::Int(2), vec![Value::Int(20)], 100, 1)?;
                for (key, t) in [(1, 50), (1, 150), (2, 50), (2, 150), (3, 60)] {
                    let row = vec![Value::Int(t as i64)];
                    view.push_event(Value::Int(key), t, row, vec![Value::Null])?;
                }
            }
            view.advance_to(200);
            view.complete(worker, &ctx)?;
            Ok(view.released())
        },
    )
    .unwrap();
    let mut seen: Vec<(u64, Row)> = (rows.into_iter().flatten())
        .map(|r| (r.time, r.features))
        .collect();
    seen.sort();
    // The count is over every event of the key, dropped ones included: the join drops rows, not
    // inputs of the aggregates.
    let want = vec![
        (50, vec![Value::Int(10), Value::Int(1)]),
        (150, vec![Value::Int(20), Value::Int(2)]),
    ];
    assert_eq!(seen, want);
}

#[test]
fn bad_definitions_and_inputs_are_named() {
    let mut spec = spec();
    spec.aggregates[1].name = "score".into();
    assert!(
        spec.validate()
            .unwrap_err()
            .to_string()
            .contains("two features are named `score`")
    );
    let mut spec = self::spec();
    spec.aggregates[0].window_ms = Some(0);
    assert!(
        spec.validate()
            .unwrap_err()
            .to_string()
            .contains("`n_all` has a window of 0 ms")
    );
    assert!(
        "median"
            .parse::<AggKind>()
            .unwrap_err()
            .to_string()
            .contains("count_distinct")
    );
    assert_eq!("AVG".parse::<AggKind>().unwrap(), AggKind::Mean);
    execute::<_, Error, _>(
        &ClusterConfig::local(1),
        MetricsRegistry::new(),
        |worker, _| {
            let mut view = FeatureView::new(worker, "bad", self::spec())?;
            let mut inputs = Event {
                key: 1,
                time: 5,
                amount: Value::from("ten"),
                category: Value::Null,
            }
            .inputs();
            let err = view
                .push_event(Value::Int(1), 5, Vec::new(), inputs.clone())
                .unwrap_err();
            assert!(
                err.to_string()
                    .contains("aggregate `sum_1s` (sum) needs numbers"),
                "{err}"
            );
            inputs.pop();
            assert!(
                view.push_event(Value::Int(1), 5, Vec::new(), inputs)
                    .is_err()
            );
            let err = view
                .update_table(Value::Int(1), vec![Value::Int(1)], 0, 1)
                .unwrap_err();
            assert!(
                err.to_string().contains("has 2 columns (score, tier)"),
                "{err}"
            );
            Ok(())
        },
    )
    .unwrap();
}

#[test]
fn aggregate_kinds_over_a_multiset() {
    let values = [
        (1, Value::Int(3), 2),
        (2, Value::Null, 1),
        (2, Value::Int(5), 1),
        (3, Value::Int(3), 1),
    ];
    let of = |k: AggKind| k.compute(values.iter().map(|(t, v, n)| (*t, v, *n)));
    assert_eq!(of(AggKind::Count), Value::Int(5));
    assert_eq!(of(AggKind::Sum), Value::Int(14));
    assert_eq!(of(AggKind::Mean), Value::Float(3.5));
    assert_eq!(of(AggKind::Min), Value::Int(3));
    assert_eq!(of(AggKind::Max), Value::Int(5));
    assert_eq!(of(AggKind::Last), Value::Int(3));
    assert_eq!(of(AggKind::CountDistinct), Value::Int(2));
    let big = [(1, Value::Int(i64::MAX), 1), (2, Value::Int(1), 1)];
    let sum = AggKind::Sum.compute(big.iter().map(|(t, v, n)| (*t, v, *n)));
    assert_eq!(sum, Value::Float(i64::MAX as f64 + 1.0));
    assert_eq!(AggKind::Max.compute(std::iter::empty()), Value::Null);
}

#[test]
fn the_store_holds_each_keys_features_as_of_the_frontier() {
    let agg = |name: &str, kind, window_ms| Aggregate {
        name: name.into(),
        kind,
        window_ms,
    };
    let spec = FeatureSpec {
        inner_join: false,
        table_columns: vec!["label".into()],
        aggregates: vec![
            agg("n_100ms", AggKind::Count, Some(100)),
            agg("total", AggKind::Sum, None),
        ],
    };
    let store = Arc::new(FeatureStore::new(&spec, true));
    let shared = Arc::clone(&store);
    let frontiers = execute::<_, Error, _>(
        &ClusterConfig::local(2),
        MetricsRegistry::new(),
        move |worker, ctx| {
            let mut view = FeatureView::with_store(
                worker,
                "store",
                spec.clone(),
                Some(Arc::clone(&shared)),
                2,
            )?;
            if ctx.index == 0 {
                view.update_table(Value::Int(1), vec![Value::Int(0)], 0, 1)?;
                view.update_table(Value::Int(1), vec![Value::Int(0)], 100, -1)?;
                view.update_table(Value::Int(1), vec![Value::Int(1)], 100, 1)?;
                let inputs = |amount: i64| vec![Value::Null, Value::Int(amount)];
                view.push_event(Value::Int(1), 50, Vec::new(), inputs(2))?;
                view.push_event(Value::Int(2), 60, Vec::new(), inputs(5))?;
                view.push_event(Value::Int(1), 120, Vec::new(), inputs(3))?;
            }
            view.advance_to(300);
            view.complete(worker, &ctx)?;
            Ok(view.released().len())
        },
    )
    .unwrap();
    assert_eq!(frontiers.iter().sum::<usize>(), 3);
    // At 300 the 100 ms windows are empty again; the table row is the one of time 100.
    assert_eq!(
        store.lookup(&Value::Int(1)),
        (299, vec![Value::Int(1), Value::Int(0), Value::Int(5)])
    );
    assert_eq!(
        store.lookup(&Value::Int(2)),
        (299, vec![Value::Null, Value::Int(0), Value::Int(5)])
    );
    assert_eq!(
        store.lookup(&Value::Int(3)),
        (299, vec![Value::Null, Value::Int(0), Value::Null])
    );
    assert_eq!(store.len(), 2);
    assert_eq!(store.parse_key("12"), Ok(Value::Int(12)));
    assert!(
        store
            .parse_key("u12")
            .unwrap_err()
            .contains("not an integer")
    );
}

/// Two processes of two workers: each process's store holds every key, with the same features,
/// though each worker owns only its share of the keys.
#[test]
fn every_process_store_holds_every_key() {
    let spec = FeatureSpec {
        inner_join: false,
        table_columns: vec!["label".into()],
        aggregates: vec![Aggregate {
            name: "total".into(),
            kind: AggKind::Sum,
            window_ms: None,
        }],
    };
    let ports: Vec<u16> = (0..2)
        .map(|_| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        })
        .collect();
    let hosts: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let processes: Vec<_> = (0..2)
        .map(|process_id| {
            let (spec, hosts) = (spec.clone(), hosts.clone());
            std::thread::spawn(move || {
                let store = Arc::new(FeatureStore::new(&spec, true));
                let shared = Arc::clone(&store);
                let config = ClusterConfig {
                    workers: 2,
                    processes: 2,
                    process_id,
                    hosts,
                    connect_timeout: std::time::Duration::from_secs(20),
                };
                execute::<_, Error, _>(&config, MetricsRegistry::new(), move |worker, ctx| {
                    let store = Some(Arc::clone(&shared));
                    let mut view =
                        FeatureView::with_store(worker, "replicated", spec.clone(), store, 2)?;
                    // Every worker adds rows and events for its own keys; each key is owned by
                    // one worker after differential's exchange.
                    for key in (0..40).filter(|k| k % 4 == ctx.index as i64) {
                        view.update_table(Value::Int(key), vec![Value::Int(key * 10)], 0, 1)?;
                        for t in 0..3 {
                            let inputs = vec![Value::Int(key + t)];
                            view.push_event(Value::Int(key), 10 + t as u64, Vec::new(), inputs)?;
                        }
                    }
                    view.advance_to(100);
                    view.complete(worker, &ctx)?;
                    // Taking the released rows brings the store up to date.
                    Ok(view.released().len())
                })
                .unwrap();
                store
            })
        })
        .collect();
    let stores: Vec<Arc<FeatureStore>> = processes.into_iter().map(|p| p.join().unwrap()).collect();
    for store in &stores {
        assert_eq!(store.len(), 40);
        for key in 0..40 {
            let (_, features) = store.lookup(&Value::Int(key));
            assert_eq!(
                features,
                vec![Value::Int(key * 10), Value::Int(3 * key + 3)],
                "key {key}"
            );
        }
    }
}
