//! Sinks: where a flow ends.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Instant;

use timely::dataflow::ProbeHandle;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Probe;
use timely::dataflow::operators::generic::operator::Operator;
use timely::progress::Timestamp;

use super::Flow;
use crate::batch::Batch;

impl<'scope, T: Timestamp> Flow<'scope, T> {
    /// Ends the flow in `f`, called once per batch. Returns a probe that tells when every batch up to
    /// a time has been consumed.
    pub fn sink<F>(self, name: &str, mut f: F) -> ProbeHandle<T>
    where
        F: FnMut(Batch) + 'static,
    {
        let stats = self.ctx.stats(name);
        let (probe, stream) = self.stream.probe();
        stream.sink(Pipeline, name, move |(input, _frontier)| {
            input.for_each(|_cap, data| {
                let started = Instant::now();
                for batch in data.drain(..) {
                    stats.record_in(batch.num_rows());
                    f(batch);
                }
                stats.record_busy(started.elapsed());
            });
        });
        probe
    }

    /// Ends the flow by keeping its batches on this worker. Read the vector once the probe says the
    /// flow is done.
    pub fn collect(self, name: &str) -> (ProbeHandle<T>, Rc<RefCell<Vec<Batch>>>) {
        let store = Rc::new(RefCell::new(Vec::new()));
        let sink = Rc::clone(&store);
        let probe = self.sink(name, move |batch| sink.borrow_mut().push(batch));
        (probe, store)
    }
}
