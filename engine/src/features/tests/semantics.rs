//! What an event sees: the table as of its time, an inner join, the aggregate kinds, and the
//! definitions and inputs a view refuses.

use super::{Event, spec};
use crate::features::*;
use crate::{ClusterConfig, Error, MetricsRegistry, execute};

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
    let mut spec = super::spec();
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
            let mut view = FeatureView::new(worker, "bad", super::spec())?;
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
