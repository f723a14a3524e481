//! The stateful operator: state kept across batches, and a call when all of a time's batches
//! have arrived (timely's frontier notification), metered like every other operator.

use std::time::Instant;

use timely::dataflow::channels::pact::ParallelizationContract;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::order::TotalOrder;
use timely::progress::Timestamp;
use timely::progress::operate::FrontierInterest;

use super::Flow;
use super::operator::Emit;
use crate::batch::Batch;

/// Capabilities held for a time whose batches are still arriving: one for the output and one for
/// the dead-letter output.
struct Held<T: Timestamp> {
    time: T,
    output: Capability<T>,
    dead: Capability<T>,
}

impl<'scope, T: Timestamp + TotalOrder> Flow<'scope, T> {
    /// A named operator with state: `on_batch(&mut state, time, batch, emit)` for each batch as
    /// it arrives (through `pact`), and `on_complete(&mut state, time, emit)` once every batch of
    /// `time` has arrived on this worker (the input frontier passed it), in time order; and, when
    /// the input ends after its last such call, once more at the time the input last stood at,
    /// with [`Emit::input_ended`] true (it is true in every call after which no batch can
    /// come), so state kept for later times can be flushed. What either emits goes out at
    /// `time`. Windows, per-key aggregates over a whole input, barriers
    /// and model publishing are built this way. Rows in and out, dead letters and the time spent
    /// in both callbacks are counted under `name`.
    pub fn stateful<P, S, B, C>(
        self,
        name: &str,
        pact: P,
        mut state: S,
        mut on_batch: B,
        mut on_complete: C,
    ) -> Flow<'scope, T>
    where
        P: ParallelizationContract<T, Vec<Batch>>,
        S: 'static,
        B: FnMut(&mut S, &T, Batch, &mut Emit) + 'static,
        C: FnMut(&mut S, &T, &mut Emit) + 'static,
    {
        let ctx = self.ctx.clone();
        let stats = ctx.stats(name);
        let mut builder = OperatorBuilder::new(name.to_owned(), self.stream.scope());
        let mut input = builder.new_input(self.stream, pact);
        builder.set_notify_for(0, FrontierInterest::IfCapability);
        let (output, stream) = builder.new_output();
        let (dead_output, dead_stream) = builder.new_output();
        let mut output = OutputBuilder::from(output);
        let mut dead_output = OutputBuilder::from(dead_output);

        builder.build(move |_capabilities| {
            let mut emit = Emit::default();
            let mut held: Vec<Held<T>> = Vec::new();
            // After the last held time completed: capabilities at the input's frontier, for
            // one more `on_complete` when the input ends.
            let mut waiting: Option<Held<T>> = None;
            move |frontiers| {
                let mut out = output.activate();
                let mut dead = dead_output.activate();
                input.for_each_stamp(|cap, data| {
                    // Messages sent under no capability carry no time and make no progress
                    // claim; there is nothing to hold them at.
                    let Some(time) = cap.least().cloned() else {
                        return;
                    };
                    let at = match held.iter().position(|h| h.time == time) {
                        Some(at) => at,
                        None => {
                            held.push(Held {
                                output: cap.delayed(&time, 0),
                                dead: cap.delayed(&time, 1),
                                time: time.clone(),
                            });
                            held.len() - 1
                        }
                    };
                    let started = Instant::now();
                    for batch in data.flat_map(|d| d.drain(..)) {
                        stats.record_in(batch.num_rows());
                        on_batch(&mut state, &time, batch, &mut emit);
                    }
                    stats.record_busy(started.elapsed());
                    let h = &held[at];
                    emit.flush(&stats, &mut out, &h.output, &mut dead, &h.dead);
                });
                // Times the frontier has passed are complete, oldest first.
                held.sort_by(|a, b| a.time.cmp(&b.time));
                let frontier = frontiers[0].frontier();
                emit.input_ended = frontier.is_empty();
                while held
                    .first()
                    .is_some_and(|h| !frontiers[0].less_equal(&h.time))
                {
                    let mut done = held.remove(0);
                    let started = Instant::now();
                    on_complete(&mut state, &done.time, &mut emit);
                    stats.record_busy(started.elapsed());
                    emit.flush(&stats, &mut out, &done.output, &mut dead, &done.dead);
                    // The last time completed before the input ended: its capabilities wait at
                    // the frontier for the end.
                    if let Some(now) = frontier.first().filter(|_| held.is_empty()) {
                        done.output.downgrade(now);
                        done.dead.downgrade(now);
                        done.time = now.clone();
                        waiting = Some(done);
                    }
                }
                match (frontier.first(), waiting.as_mut()) {
                    (Some(now), Some(w)) => {
                        w.output.downgrade(now);
                        w.dead.downgrade(now);
                        w.time = now.clone();
                    }
                    (None, Some(_)) => {
                        if let Some(end) = waiting.take() {
                            let started = Instant::now();
                            on_complete(&mut state, &end.time, &mut emit);
                            stats.record_busy(started.elapsed());
                            emit.flush(&stats, &mut out, &end.output, &mut dead, &end.dead);
                        }
                    }
                    _ => {}
                }
            }
        });
        ctx.add_dead_letters(dead_stream);
        Flow { stream, ctx }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, RecordBatch};
    use arrow::datatypes::{DataType, Field, Schema};
    use timely::dataflow::channels::pact::Pipeline;

    use crate::{Batch, ClusterConfig, Flow, FlowContext, MetricsRegistry, execute};

    fn column(values: Vec<i64>) -> Batch {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        Batch::new(RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(values))]).unwrap())
    }

    #[test]
    fn sums_every_batch_of_a_time_once_the_frontier_passes_it() {
        let metrics = MetricsRegistry::new();
        let per_worker = execute::<_, crate::Error, _>(
            &ClusterConfig::local(2),
            Arc::clone(&metrics),
            |worker, ctx| {
                let index = ctx.index as i64;
                let (probe, out) = worker.dataflow::<u64, _, _>(|scope| {
                    let fc = FlowContext::new(ctx.clone());
                    // Each worker: three batches of 10 rows.
                    let batches = (0..3).map(move |i| Ok(column(vec![index * 100 + i; 10])));
                    Flow::source(scope, &fc, "numbers", batches)
                        .stateful(
                            "total",
                            Pipeline,
                            (0i64, 0usize),
                            |(sum, rows), _, batch, _| {
                                let x = batch.data.column(0);
                                let x = x.as_any().downcast_ref::<Int64Array>().unwrap();
                                *sum += x.values().iter().sum::<i64>();
                                *rows += x.len();
                            },
                            |(sum, rows), _, emit| {
                                // Called once, after every batch of the time arrived.
                                if *rows > 0 {
                                    emit.batch(column(vec![*sum, *rows as i64]));
                                }
                            },
                        )
                        .collect("out")
                });
                while !probe.done() {
                    worker.step();
                }
                let values: Vec<Vec<i64>> = out
                    .borrow()
                    .iter()
                    .map(|b| {
                        let x = b.data.column(0);
                        x.as_any()
                            .downcast_ref::<Int64Array>()
                            .unwrap()
                            .values()
                            .to_vec()
                    })
                    .collect();
                Ok(values)
            },
        )
        .unwrap();
        // One sum per worker, emitted once: 10 × (0 + 1 + 2) and 10 × (100 + 101 + 102).
        assert_eq!(per_worker, vec![vec![vec![30, 30]], vec![vec![3030, 30]]]);
        let snapshot = metrics.snapshot();
        let total = snapshot.iter().filter(|o| o.operator == "total");
        assert_eq!(total.map(|o| o.counters.rows_in).sum::<u64>(), 60);
    }
}
