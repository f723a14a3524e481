//! Deferred wake-ups: an I/O thread that queues requests wakes the inference thread once, when
//! it runs out of work and is about to park, so the requests it read in one pass become one batch.

use std::cell::{Cell, RefCell};
use std::sync::Arc;

thread_local! {
    /// Set on the worker threads of a runtime built with [`configure_runtime`], from their first
    /// park on.
    static DEFERS_WAKES: Cell<bool> = const { Cell::new(false) };
    /// Batchers this thread queued work on without waking them.
    static DEFERRED: RefCell<Vec<Arc<dyn Wake>>> = const { RefCell::new(Vec::new()) };
}

/// Records that `shared` needs a wake-up when this thread parks; false when this thread does not
/// defer wake-ups (then the caller wakes at once).
pub(super) fn defer_wake(shared: Arc<dyn Wake>) -> bool {
    if !DEFERS_WAKES.with(Cell::get) {
        return false;
    }
    DEFERRED.with(|deferred| {
        let mut deferred = deferred.borrow_mut();
        if !deferred.iter().any(|other| Arc::ptr_eq(other, &shared)) {
            deferred.push(shared);
        }
    });
    true
}

/// Wakes every batcher this thread deferred; runs when the thread is about to park.
fn flush_deferred_wakes() {
    let pending = DEFERRED.with(|deferred| std::mem::take(&mut *deferred.borrow_mut()));
    for shared in pending {
        shared.wake_idle();
    }
}

/// Sets up a tokio runtime whose threads call [`DynamicBatcher::infer`] so that requests read in
/// one pass over the sockets are batched together: a thread queues its requests without waking
/// the inference thread and wakes it once, when it runs out of work and is about to park. That
/// saves a wake-up (a system call and a context switch) per request under load and costs nothing
/// when idle. Batchers used from threads of other runtimes wake at once, as before.
pub fn configure_runtime(builder: &mut tokio::runtime::Builder) -> &mut tokio::runtime::Builder {
    // The flag is set at the first park, not at thread start: tokio's blocking-pool threads run
    // `on_thread_start` too but never park through the hook, so they must keep waking at once.
    builder
        .on_thread_park(|| {
            DEFERS_WAKES.with(|defers| defers.set(true));
            flush_deferred_wakes();
        })
        .on_thread_stop(flush_deferred_wakes)
}

/// A batcher whose wake-up an I/O thread deferred.
pub(super) trait Wake: Send + Sync {
    fn wake_idle(&self);
}
