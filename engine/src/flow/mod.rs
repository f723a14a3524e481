//! The batch stream API: a [`Flow`] is a timely stream of Arrow batches plus the context every
//! operator needs (its worker, the metrics registry, the dead-letter outputs).
//!
//! ```text
//! Flow::source(..) ─▶ map_batches / filter / exchange_by / rebalance / operator / stateful ─▶ sink / collect
//!                          └─────────── dead letters ───────────▶ FlowContext::dead_letters
//! ```
//!
//! Every operator is built by [`Flow::operator`] (or, for sources and sinks, the same pattern), which
//! requires a name, counts batches and rows in and out, dead letters and busy time per worker, and
//! routes rejected records to the dead-letter output instead of failing.

pub(crate) mod exchange;
mod operator;
mod sink;
mod source;
mod stateful;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use timely::dataflow::operators::Concatenate;
use timely::dataflow::{Scope, Stream};
use timely::progress::Timestamp;

use crate::batch::{Batch, DeadLetter};
use crate::cluster::WorkerContext;
use crate::metrics::OperatorStats;

pub use operator::Emit;

/// A timely stream of [`Batch`]es.
pub type BatchStream<'scope, T> = Stream<'scope, T, Vec<Batch>>;
/// A timely stream of [`DeadLetter`]s.
pub type DeadLetterStream<'scope, T> = Stream<'scope, T, Vec<DeadLetter>>;

/// A stream of Arrow batches with its operator context: the type the stream API is built on.
pub struct Flow<'scope, T: Timestamp> {
    stream: BatchStream<'scope, T>,
    ctx: FlowContext<'scope, T>,
}

impl<'scope, T: Timestamp> Flow<'scope, T> {
    /// Wraps a timely stream of batches (for operators written directly against timely).
    pub fn from_stream(stream: BatchStream<'scope, T>, ctx: FlowContext<'scope, T>) -> Self {
        Flow { stream, ctx }
    }

    /// The underlying timely stream.
    pub fn stream(&self) -> &BatchStream<'scope, T> {
        &self.stream
    }

    /// The underlying timely stream, consuming the flow.
    pub fn into_stream(self) -> BatchStream<'scope, T> {
        self.stream
    }

    /// The operator context shared by this flow's operators.
    pub fn context(&self) -> &FlowContext<'scope, T> {
        &self.ctx
    }

    /// The timely scope the flow lives in.
    pub fn scope(&self) -> Scope<'scope, T> {
        self.stream.scope()
    }
}

/// What every operator of a flow shares: the worker, the metrics registry and the dead-letter outputs.
pub struct FlowContext<'scope, T: Timestamp> {
    inner: Rc<ContextInner<'scope, T>>,
}

impl<T: Timestamp> Clone for FlowContext<'_, T> {
    fn clone(&self) -> Self {
        FlowContext {
            inner: Rc::clone(&self.inner),
        }
    }
}

struct ContextInner<'scope, T: Timestamp> {
    worker: WorkerContext,
    dead: RefCell<Vec<DeadLetterStream<'scope, T>>>,
}

impl<'scope, T: Timestamp> FlowContext<'scope, T> {
    /// A context for the flows of one dataflow on one worker.
    pub fn new(worker: WorkerContext) -> Self {
        FlowContext {
            inner: Rc::new(ContextInner {
                worker,
                dead: RefCell::new(Vec::new()),
            }),
        }
    }

    /// The worker this context belongs to.
    pub fn worker(&self) -> &WorkerContext {
        &self.inner.worker
    }

    /// The counters of operator `name` on this worker.
    pub fn stats(&self, name: &str) -> Arc<OperatorStats> {
        self.inner
            .worker
            .metrics
            .operator(name, self.inner.worker.index)
    }

    /// Adds a stream of dead letters to the context's dead-letter output.
    pub fn add_dead_letters(&self, stream: DeadLetterStream<'scope, T>) {
        self.inner.dead.borrow_mut().push(stream);
    }

    /// All dead letters of the operators built so far, as one stream (`None` if no operator can
    /// produce any). Operators built after this call are not included.
    pub fn dead_letters(&self, scope: Scope<'scope, T>) -> Option<DeadLetterStream<'scope, T>> {
        let streams = std::mem::take(&mut *self.inner.dead.borrow_mut());
        if streams.is_empty() {
            None
        } else {
            Some(scope.concatenate(streams))
        }
    }
}
