//! How fast a feature view takes events, on its own: 2 workers, 10,000 keys, a 100,000-row
//! table, a count and a mean over the last hour and an all-time sum; events 100 ms apart, pushed
//! 4,096 per worker per step with the frontier 1 s behind the newest. Prints events/s per
//! 98,304 events and over the whole run; then changes 1,000, 10,000 and 100,000 of the table's
//! rows at once and prints how long each change takes to become visible to an event (checked).
//!
//!     cargo run --release -p millrace-engine --example features_view [-- EVENTS]

use std::time::Instant;

use millrace_engine::features::{AggKind, Aggregate, FeatureSpec, FeatureView, Value};
use millrace_engine::timely::worker::Worker;
use millrace_engine::{ClusterConfig, Collective, Error, MetricsRegistry, WorkerContext, execute};

// The allocator the `millrace` binary uses.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const REPORT_EVERY: u64 = 98_304;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let events: u64 = std::env::args()
        .nth(1)
        .map_or(Ok(1_000_000), |a| a.parse())?;
    let agg = |name: &str, kind, window_ms| Aggregate {
        name: name.into(),
        kind,
        window_ms,
    };
    let spec = FeatureSpec {
        inner_join: false,
        table_columns: vec!["affinity".into()],
        aggregates: vec![
            agg("n_1h", AggKind::Count, Some(3_600_000)),
            agg("f0_mean_1h", AggKind::Mean, Some(3_600_000)),
            agg("f1_sum", AggKind::Sum, None),
        ],
    };
    execute::<_, Error, _>(
        &ClusterConfig::local(2),
        MetricsRegistry::new(),
        move |worker, ctx| {
            let mut view = FeatureView::new(worker, "bench", spec.clone())?;
            for k in (ctx.index as u64..100_000).step_by(ctx.peers) {
                view.update_table(
                    Value::Int(k as i64),
                    vec![Value::Float(k as f64 / 7.0)],
                    0,
                    1,
                )?;
            }
            let started = Instant::now();
            let mut last = Instant::now();
            let (mut released, mut i, mut step) = (0usize, ctx.index as u64, 0u64);
            let per_step = 4096 * ctx.peers as u64;
            while step * per_step < events {
                let end = ((step + 1) * per_step).min(events);
                while i < end {
                    let key = Value::Int((i * 7919 % 10_000) as i64);
                    let inputs = vec![
                        Value::Null,
                        Value::Float((i % 100) as f64),
                        Value::Float(1.0),
                    ];
                    view.push_event(key, i * 100, vec![Value::Int(i as i64)], inputs)?;
                    i += ctx.peers as u64;
                }
                view.advance_to((end * 100).saturating_sub(1_000));
                view.complete(worker, &ctx)?;
                released += view.released().len();
                step += 1;
                if ctx.index == 0 && (step * per_step).is_multiple_of(REPORT_EVERY) {
                    let rate = REPORT_EVERY as f64 / last.elapsed().as_secs_f64();
                    println!("{:>8} events: {rate:>9.0} events/s", step * per_step);
                    last = Instant::now();
                }
            }
            if ctx.index == 0 {
                println!(
                    "total {:.0} events/s",
                    events as f64 / started.elapsed().as_secs_f64()
                );
            }
            released += table_updates(worker, &ctx, &mut view)?;
            view.advance_to(u64::MAX - 1);
            view.complete(worker, &ctx)?;
            released += view.released().len();
            Ok(released)
        },
    )?;
    Ok(())
}

/// Table updates after the events: each round changes the affinity of the keys below its size
/// (a retraction and an insertion at the frontier), then an event of key 3 at that time is
/// released with the new value. Prints the time from the first update to the view complete past
/// it (what an event of that time waits for). Returns the rows released.
fn table_updates(
    worker: &mut Worker,
    ctx: &WorkerContext,
    view: &mut FeatureView,
) -> Result<usize, Error> {
    let sizes = [1_000u64, 10_000, 100_000];
    let affinity = |k: u64, rounds: usize| {
        let bumps = sizes[..rounds].iter().filter(|&&n| k < n).count();
        Value::Float(k as f64 / 7.0 + bumps as f64)
    };
    let mut released = 0;
    let mut markers = Collective::<u64>::new(worker, "markers");
    for (round, &changed) in sizes.iter().enumerate() {
        let at = view.frontier();
        let started = Instant::now();
        for k in (ctx.index as u64..changed).step_by(ctx.peers) {
            let key = Value::Int(k as i64);
            view.update_table(key.clone(), vec![affinity(k, round)], at, -1)?;
            view.update_table(key, vec![affinity(k, round + 1)], at, 1)?;
        }
        if ctx.index == 0 {
            let inputs = vec![Value::Null, Value::Float(0.0), Value::Float(0.0)];
            view.push_event(Value::Int(3), at, vec![Value::Int(-1)], inputs)?;
        }
        view.advance_to(at + 1);
        view.complete(worker, ctx)?;
        let visible = started.elapsed();
        let mut marked = false;
        for row in view.released() {
            released += 1;
            if row.row == vec![Value::Int(-1)] {
                assert_eq!(row.features[0], affinity(3, round + 1), "round {round}");
                marked = true;
            }
        }
        let marked: u64 = markers
            .all_gather(worker, ctx, u64::from(marked))?
            .iter()
            .sum();
        assert_eq!(
            marked, 1,
            "round {round}: the event of the new version was not released"
        );
        if ctx.index == 0 {
            println!(
                "table: {changed:>7} rows changed, visible after {:>7.1} ms ({:.0} rows/s)",
                visible.as_secs_f64() * 1000.0,
                changed as f64 / visible.as_secs_f64()
            );
        }
    }
    Ok(released)
}
