//! How fast a feature view takes events, on its own: 2 workers, 10,000 keys, a 100,000-row
//! table, a count and a mean over the last hour and an all-time sum; events 100 ms apart, pushed
//! 4,096 per worker per step with the frontier 1 s behind the newest. Prints events/s per
//! 98,304 events and over the whole run.
//!
//!     cargo run --release -p millrace-engine --example features_view [-- EVENTS]

use std::time::Instant;

use millrace_engine::features::{AggKind, Aggregate, FeatureSpec, FeatureView, Value};
use millrace_engine::{ClusterConfig, Error, MetricsRegistry, execute};

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
            view.advance_to(u64::MAX - 1);
            view.complete(worker, &ctx)?;
            released += view.released().len();
            if ctx.index == 0 {
                println!(
                    "total {:.0} events/s",
                    events as f64 / started.elapsed().as_secs_f64()
                );
            }
            Ok(released)
        },
    )?;
    Ok(())
}
