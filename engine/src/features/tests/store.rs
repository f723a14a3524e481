//! The store of current features: as of the frontier, and replicated to every process.

use std::sync::Arc;

use crate::features::*;
use crate::{ClusterConfig, Error, MetricsRegistry, execute};

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

/// A view restored from a checkpoint serves the checkpoint's features at once, as of the
/// millisecond before its frontier, though nothing new arrives to move the frontier on (a job
/// resumed on a quiet stream); the events still waiting are released once it does move.
#[test]
fn a_restored_store_serves_the_checkpoint_features_before_the_frontier_moves() {
    let spec = FeatureSpec {
        inner_join: false,
        table_columns: vec!["label".into()],
        aggregates: vec![
            Aggregate {
                name: "n_1s".into(),
                kind: AggKind::Count,
                window_ms: Some(1_000),
            },
            Aggregate {
                name: "total".into(),
                kind: AggKind::Sum,
                window_ms: None,
            },
        ],
    };
    let run = |states: Vec<FeatureState>, frontiers: Vec<u64>, workers: usize| {
        let store = Arc::new(FeatureStore::new(&spec, true));
        let (shared, spec) = (Arc::clone(&store), spec.clone());
        let out = execute::<_, Error, _>(
            &ClusterConfig::local(workers),
            MetricsRegistry::new(),
            move |worker, ctx| {
                let store = Some(Arc::clone(&shared));
                let mut view = FeatureView::with_store(worker, "restored", spec.clone(), store, 2)?;
                view.restore(&states, &ctx)?;
                if states.is_empty() && ctx.index == 0 {
                    for key in 0..6 {
                        view.update_table(Value::Int(key), vec![Value::Int(key * 10)], 0, 1)?;
                        for t in [100, 200 + key as u64, 500] {
                            let inputs = vec![Value::Null, Value::Int(key + 1)];
                            view.push_event(Value::Int(key), t, vec![Value::Int(key)], inputs)?;
                        }
                    }
                }
                let mut released = 0;
                for &frontier in &frontiers {
                    view.advance_to(frontier);
                    view.complete(worker, &ctx)?;
                    released += view.released().len();
                }
                Ok((view.state(), released))
            },
        )
        .unwrap();
        let (states, released): (Vec<FeatureState>, Vec<usize>) = out.into_iter().unzip();
        (store, states, released.iter().sum::<usize>())
    };
    // Up to 400: the events at 500 wait.
    let (first, states, released) = run(Vec::new(), vec![400], 2);
    assert_eq!(released, 12);
    let want: Vec<(u64, Row)> = (0..6).map(|k| first.lookup(&Value::Int(k))).collect();
    assert_eq!(
        want[3],
        (399, vec![Value::Int(30), Value::Int(2), Value::Int(8)])
    );
    // Restored on 3 workers, the frontier left at 400: the same features, nothing released.
    let (restored, _, released) = run(states.clone(), vec![400], 3);
    assert_eq!(released, 0);
    for k in 0..6 {
        assert_eq!(restored.lookup(&Value::Int(k)), want[k as usize], "key {k}");
    }
    // Moved on, the waiting events come out with their features.
    let (moved, _, released) = run(states, vec![600], 3);
    assert_eq!(released, 6);
    assert_eq!(
        moved.lookup(&Value::Int(3)),
        (599, vec![Value::Int(30), Value::Int(3), Value::Int(12)])
    );
}
