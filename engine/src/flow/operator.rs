//! The one generic batch operator builder; every named batch operator is built on it.

use std::time::Instant;

use arrow::array::{BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::{ParallelizationContract, Pipeline};
use timely::dataflow::operators::CapabilityTrait;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::{OutputBuilder, OutputBuilderSession};
use timely::progress::Timestamp;
use timely::progress::operate::FrontierInterest;

use super::Flow;
use crate::batch::{Batch, DeadLetter};
use crate::metrics::OperatorStats;

/// Where an operator's logic puts its results: batches to send on and records to dead-letter.
#[derive(Default)]
pub struct Emit {
    pub(super) batches: Vec<Batch>,
    pub(super) dead: Vec<DeadLetter>,
    /// In a stateful operator's `on_complete`: no batch can arrive any more.
    pub(super) input_ended: bool,
}

impl Emit {
    /// In a stateful operator's `on_complete`: true when its input has ended (no batch of any
    /// time can arrive any more), so state kept for later times can be flushed now.
    pub fn input_ended(&self) -> bool {
        self.input_ended
    }

    /// Sends a batch downstream (empty batches are dropped).
    pub fn batch(&mut self, batch: Batch) {
        if batch.num_rows() > 0 {
            self.batches.push(batch);
        }
    }

    /// Sends a record to the dead-letter output.
    pub fn dead(&mut self, dead: DeadLetter) {
        self.dead.push(dead);
    }

    /// Sends what was emitted: the batches on `out` at `cap`, the dead letters on `dead` at
    /// `dead_cap`, each counted in `stats`.
    pub(super) fn flush<T: Timestamp>(
        &mut self,
        stats: &OperatorStats,
        out: &mut OutputBuilderSession<'_, T, CapacityContainerBuilder<Vec<Batch>>>,
        cap: &impl CapabilityTrait<T>,
        dead: &mut OutputBuilderSession<'_, T, CapacityContainerBuilder<Vec<DeadLetter>>>,
        dead_cap: &impl CapabilityTrait<T>,
    ) {
        if !self.batches.is_empty() {
            let mut session = out.session(cap);
            for batch in self.batches.drain(..) {
                stats.record_out(batch.num_rows());
                session.give(batch);
            }
        }
        if !self.dead.is_empty() {
            let mut session = dead.session(dead_cap);
            for letter in self.dead.drain(..) {
                stats.record_dead(letter.rows as usize);
                session.give(letter);
            }
        }
    }
}

impl<'scope, T: Timestamp> Flow<'scope, T> {
    /// Builds a named operator from `logic`, called once per input batch. Batches arrive through
    /// `pact` (use `Pipeline` to stay on this worker). Rows and batches in and out, dead letters and
    /// time spent in `logic` are counted under `name`.
    pub fn operator<P, L>(self, name: &str, pact: P, mut logic: L) -> Flow<'scope, T>
    where
        P: ParallelizationContract<T, Vec<Batch>>,
        L: FnMut(Batch, &mut Emit) + 'static,
    {
        let ctx = self.ctx.clone();
        let stats = ctx.stats(name);
        let mut builder = OperatorBuilder::new(name.to_owned(), self.stream.scope());
        let mut input = builder.new_input(self.stream, pact);
        builder.set_notify_for(0, FrontierInterest::Never);
        let (output, stream) = builder.new_output();
        let (dead_output, dead_stream) = builder.new_output();
        let mut output = OutputBuilder::from(output);
        let mut dead_output = OutputBuilder::from(dead_output);

        builder.build(move |_capabilities| {
            let mut emit = Emit::default();
            move |_frontiers| {
                let mut out = output.activate();
                let mut dead = dead_output.activate();
                input.for_each_stamp(|cap, data| {
                    let started = Instant::now();
                    for batch in data.flat_map(|d| d.drain(..)) {
                        stats.record_in(batch.num_rows());
                        logic(batch, &mut emit);
                    }
                    stats.record_busy(started.elapsed());
                    emit.flush(&stats, &mut out, &cap, &mut dead, &cap);
                });
            }
        });
        ctx.add_dead_letters(dead_stream);
        Flow { stream, ctx }
    }

    /// Transforms each batch. An `Err(reason)` sends the whole batch to the dead-letter output.
    pub fn map_batches<F>(self, name: &str, mut f: F) -> Flow<'scope, T>
    where
        F: FnMut(RecordBatch) -> Result<RecordBatch, String> + 'static,
    {
        let op = name.to_string();
        self.operator(name, Pipeline, move |batch, emit| {
            let rows = batch.num_rows() as u64;
            let origin = batch.origin.clone();
            match f(batch.data) {
                Ok(data) => emit.batch(Batch { data, origin }),
                Err(reason) => emit.dead(DeadLetter {
                    operator: op.clone(),
                    reason,
                    origin: origin.map(|o| o.to_string()),
                    record: None,
                    rows,
                }),
            }
        })
    }

    /// Keeps the rows for which `predicate` is true (null counts as false).
    pub fn filter<F>(self, name: &str, mut predicate: F) -> Flow<'scope, T>
    where
        F: FnMut(&RecordBatch) -> Result<BooleanArray, String> + 'static,
    {
        self.map_batches(name, move |batch| {
            let mask = predicate(&batch)?;
            filter_record_batch(&batch, &mask).map_err(|e| format!("filter failed: {e}"))
        })
    }

    /// Calls `f` on each batch, passing it on unchanged.
    pub fn inspect<F>(self, name: &str, mut f: F) -> Flow<'scope, T>
    where
        F: FnMut(&Batch) + 'static,
    {
        self.operator(name, Pipeline, move |batch, emit| {
            f(&batch);
            emit.batch(batch);
        })
    }
}
