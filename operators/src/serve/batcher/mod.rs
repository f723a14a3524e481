//! The dynamic batcher: concurrent requests' feature rows are merged into one forward pass.
//!
//! Callers `infer` from tokio tasks; their rows wait in one shared queue. An inference thread (a
//! plain std thread, never a tokio I/O thread) takes the oldest job, gathers more jobs until the
//! batch would exceed `max_batch_rows` or `max_wait` has passed since the first job was queued,
//! runs the model once over the concatenated rows and hands each caller exactly its own rows
//! back through a oneshot channel.
//!
//! ```text
//!  infer ─┐                     ┌─ rows 0..2 ─▶ caller A
//!  infer ─┼─▶ queue ─▶ thread ──┼─ rows 2..3 ─▶ caller B      (one predict over 5 rows)
//!  infer ─┘                     └─ rows 3..5 ─▶ caller C
//! ```
//!
//! With several threads, one thread at a time gathers a batch, so batches stay as full as the
//! traffic allows while the other threads run the batches already formed.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

pub use wake::configure_runtime;
use wake::{Wake, defer_wake};

mod wake;

/// A model over row-major f32 feature rows: the simplest thing a batcher can run (every
/// `BatchModel` is a [`BatchRunner`] whose requests are feature rows).
pub trait BatchModel: Send + Sync + 'static {
    /// Features per input row.
    fn input_dim(&self) -> usize;
    /// Values per output row.
    fn output_dim(&self) -> usize;
    /// rows × input_dim in → rows × output_dim out.
    fn predict(&self, x: &[f32], rows: usize) -> Result<Vec<f32>, String>;
}

/// What the batcher runs: anything that answers several queued requests in one go. The batcher
/// checks the answers (one per request, `rows × output_dim` values each) and catches panics.
pub trait BatchRunner: Send + Sync + 'static {
    /// One request's input, as queued.
    type Input: Send + 'static;
    /// Values per output row.
    fn output_dim(&self) -> usize;
    /// Checks one request before it is queued; an error answers it at once.
    fn check(&self, _input: &Self::Input, _rows: usize) -> Result<(), BatchError> {
        Ok(())
    }
    /// Answers `inputs` (request `i` has `rows[i]` rows) in order, one result per request.
    fn run(&self, inputs: Vec<Self::Input>, rows: &[usize]) -> Vec<Result<Vec<f32>, BatchError>>;
}

impl<M: BatchModel + ?Sized> BatchRunner for M {
    type Input = Vec<f32>;

    fn output_dim(&self) -> usize {
        BatchModel::output_dim(self)
    }

    fn check(&self, x: &Vec<f32>, rows: usize) -> Result<(), BatchError> {
        let input_dim = self.input_dim();
        if rows.checked_mul(input_dim) != Some(x.len()) {
            return Err(BatchError::Failed(format!(
                "request has {} feature values, expected {rows} rows × {input_dim} features",
                x.len()
            )));
        }
        Ok(())
    }

    fn run(&self, inputs: Vec<Vec<f32>>, rows: &[usize]) -> Vec<Result<Vec<f32>, BatchError>> {
        let total: usize = rows.iter().sum();
        let result = match inputs.as_slice() {
            [only] => self.predict(only, total),
            _ => self.predict(&inputs.concat(), total),
        };
        let out_dim = BatchModel::output_dim(self);
        match result {
            Ok(out) if Some(out.len()) == total.checked_mul(out_dim) => {
                split_rows(out, rows, out_dim)
            }
            Ok(out) => fail_all(
                rows.len(),
                &format!(
                    "model returned {} values for a batch of {total} rows × {out_dim} outputs",
                    out.len()
                ),
            ),
            Err(message) => fail_all(rows.len(), &message),
        }
    }
}

/// Splits one batch's row-major outputs back into each request's rows (`rows[i]` rows of
/// `width` values for request `i`); a lone request takes the outputs without a copy.
pub fn split_rows(
    out: Vec<f32>,
    rows: &[usize],
    width: usize,
) -> Vec<Result<Vec<f32>, BatchError>> {
    if rows.len() == 1 {
        return vec![Ok(out)];
    }
    let mut offset = 0;
    rows.iter()
        .map(|&n| {
            let len = n * width;
            let part = out[offset..offset + len].to_vec();
            offset += len;
            Ok(part)
        })
        .collect()
}

fn fail_all(requests: usize, message: &str) -> Vec<Result<Vec<f32>, BatchError>> {
    (0..requests)
        .map(|_| Err(BatchError::Failed(message.to_string())))
        .collect()
}

/// How requests are merged into batches.
#[derive(Clone, Debug)]
pub struct BatcherOptions {
    /// Most rows in one forward pass (0 counts as 1). A single request with more rows runs alone.
    pub max_batch_rows: usize,
    /// After the first job of a batch was queued, wait at most this long for more.
    pub max_wait: Duration,
    /// Rows allowed to wait in the queue; a request that would go beyond this gets
    /// [`BatchError::Overloaded`]. A request arriving at an empty queue is always accepted, so
    /// one request bigger than this limit can still be served.
    pub max_queue_rows: usize,
    /// Inference threads (0 counts as 1); each takes whole batches.
    pub threads: usize,
}

impl Default for BatcherOptions {
    fn default() -> Self {
        BatcherOptions {
            max_batch_rows: 64,
            max_wait: Duration::ZERO,
            max_queue_rows: 8192,
            threads: 1,
        }
    }
}

/// Why a request got no predictions.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BatchError {
    /// The queue is full; retry later (the server answers 503 with Retry-After).
    #[error("model server overloaded: {queued_rows} rows already waiting; retry later")]
    Overloaded {
        /// Rows waiting when the request was refused.
        queued_rows: usize,
    },
    /// The model failed on the request's batch (the server answers 500).
    #[error("{0}")]
    Failed(String),
    /// The request's own rows are unacceptable, e.g. a value the preprocessing rejects (the
    /// server answers 400).
    #[error("{0}")]
    Rejected(String),
    /// The request's body must be read by the server's general path (it is not of the form the
    /// inference thread decodes); the caller retries there.
    #[error("the request needs the general path")]
    Fallback,
    /// The batcher was closed (the server is shutting down or swapping models).
    #[error("model batcher is closed; no new requests are accepted")]
    Closed,
}

/// Counters for /metrics (all monotonic except the queue gauges).
#[derive(Debug, Default, Clone)]
pub struct BatcherStats {
    /// Forward passes run (failed ones included).
    pub batches: u64,
    /// Rows over all forward passes.
    pub batched_rows: u64,
    /// Rows waiting in the queue now (gauge).
    pub queued_rows: usize,
    /// Requests waiting in the queue now (gauge).
    pub queued_requests: usize,
    /// Histogram of batch sizes in rows: `(upper bound, batches in this bucket)`, bounds 1, 2, 4,
    /// …, 1024 and `usize::MAX` for +Inf. Counts are per bucket, not cumulative, so they add up
    /// to `batches`; a Prometheus `le` series is their running sum.
    pub batch_size_buckets: Vec<(usize, u64)>,
}

/// Upper bounds of the batch-size histogram buckets.
const BUCKET_BOUNDS: [usize; 12] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, usize::MAX];

type Reply = Result<Vec<f32>, BatchError>;

/// One request waiting for its rows.
struct Job<I> {
    input: I,
    rows: usize,
    queued_at: Instant,
    reply: oneshot::Sender<Reply>,
}

/// State behind the queue lock.
struct Queue<I> {
    jobs: VecDeque<Job<I>>,
    queued_rows: usize,
    closed: bool,
    /// A thread is gathering a batch; the others leave the queue to it.
    collecting: bool,
    /// Set when no inference thread could be started.
    no_threads: Option<String>,
    /// Threads parked on `idle` / `gather`: a producer wakes one only when some are parked, so a
    /// busy (or spinning) inference thread costs callers no wake-up system call.
    idle_waiters: usize,
    gather_waiters: usize,
}

impl<I> Queue<I> {
    /// Pops the oldest job whose caller is still waiting, dropping abandoned ones.
    fn pop_live(&mut self) -> Option<Job<I>> {
        while let Some(job) = self.jobs.pop_front() {
            self.queued_rows = self.queued_rows.saturating_sub(job.rows);
            if !job.reply.is_closed() {
                return Some(job);
            }
        }
        None
    }
}

struct Shared<M: BatchRunner + ?Sized> {
    model: Arc<M>,
    options: BatcherOptions,
    queue: Mutex<Queue<M::Input>>,
    /// Wakes an idle thread to start a batch.
    idle: Condvar,
    /// Wakes the gathering thread when a job arrives.
    gather: Condvar,
    batches: AtomicU64,
    batched_rows: AtomicU64,
    buckets: [AtomicU64; 12],
}

impl<M: BatchRunner + ?Sized> Shared<M> {
    fn lock(&self) -> MutexGuard<'_, Queue<M::Input>> {
        // Nothing panics while holding the lock (model calls run outside it, under catch_unwind),
        // so a poisoned lock still holds consistent state.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn max_batch_rows(&self) -> usize {
        self.options.max_batch_rows.max(1)
    }

    /// Waits for the next batch and moves its jobs into `batch`; false once closed and drained.
    fn next_batch(&self, batch: &mut Vec<Job<M::Input>>) -> bool {
        let mut queue = self.lock();
        let first = loop {
            if !queue.collecting
                && let Some(job) = queue.pop_live()
            {
                break job;
            }
            if queue.closed && queue.jobs.is_empty() {
                return false;
            }
            queue.idle_waiters += 1;
            queue = self
                .idle
                .wait(queue)
                .unwrap_or_else(PoisonError::into_inner);
            queue.idle_waiters -= 1;
        };
        queue.collecting = true;
        let deadline = first.queued_at.checked_add(self.options.max_wait);
        let max_rows = self.max_batch_rows();
        let mut rows = first.rows;
        batch.push(first);
        while rows < max_rows {
            if let Some(next) = queue.jobs.front() {
                if next.reply.is_closed() {
                    queue.pop_live();
                    continue;
                }
                if rows.saturating_add(next.rows) > max_rows {
                    break;
                }
                if let Some(job) = queue.jobs.pop_front() {
                    queue.queued_rows = queue.queued_rows.saturating_sub(job.rows);
                    rows += job.rows;
                    batch.push(job);
                }
                continue;
            }
            if queue.closed {
                break;
            }
            let now = Instant::now();
            let wait = match deadline {
                Some(deadline) if deadline <= now => break,
                Some(deadline) => deadline - now,
                None => Duration::from_secs(3600),
            };
            queue.gather_waiters += 1;
            queue = self
                .gather
                .wait_timeout(queue, wait)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
            queue.gather_waiters -= 1;
        }
        queue.collecting = false;
        if queue.closed {
            self.idle.notify_all();
        } else if !queue.jobs.is_empty() && queue.idle_waiters > 0 {
            self.idle.notify_one();
        }
        true
    }

    /// Wakes an idle inference thread when jobs wait and nobody is gathering them.
    fn wake_idle(&self) {
        let queue = self.lock();
        if !queue.collecting && !queue.jobs.is_empty() && queue.idle_waiters > 0 {
            self.idle.notify_one();
        }
    }

    /// Runs one forward pass over `batch` and answers every job in it.
    fn run_batch(&self, batch: &mut Vec<Job<M::Input>>) {
        let mut inputs = Vec::with_capacity(batch.len());
        let mut rows = Vec::with_capacity(batch.len());
        let mut replies = Vec::with_capacity(batch.len());
        for job in batch.drain(..) {
            inputs.push(job.input);
            rows.push(job.rows);
            replies.push(job.reply);
        }
        let total: usize = rows.iter().sum();
        let requests = replies.len();
        let results = catch_unwind(AssertUnwindSafe(|| self.model.run(inputs, &rows)))
            .unwrap_or_else(|panic| {
                fail_all(
                    requests,
                    &format!(
                        "model panicked: {}",
                        millrace_engine::panic_message(&*panic)
                    ),
                )
            });
        self.record(total);
        let out_dim = self.model.output_dim();
        if results.len() != requests {
            let message = format!(
                "model answered {} of {requests} requests in a batch",
                results.len()
            );
            for reply in replies {
                let _ = reply.send(Err(BatchError::Failed(message.clone())));
            }
            return;
        }
        // Send errors mean the caller gave up (timed out); there is nobody to answer then.
        for ((reply, result), n) in replies.into_iter().zip(results).zip(rows) {
            let answer = match result {
                Ok(out) if Some(out.len()) != n.checked_mul(out_dim) => {
                    Err(BatchError::Failed(format!(
                        "model returned {} values for a request of {n} rows × {out_dim} outputs",
                        out.len()
                    )))
                }
                other => other,
            };
            let _ = reply.send(answer);
        }
    }

    fn record(&self, rows: usize) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.batched_rows.fetch_add(rows as u64, Ordering::Relaxed);
        let bucket = BUCKET_BOUNDS
            .iter()
            .position(|&bound| rows <= bound)
            .unwrap_or(BUCKET_BOUNDS.len() - 1);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
    }
}

impl<M: BatchRunner + ?Sized> Wake for Shared<M> {
    fn wake_idle(&self) {
        Shared::wake_idle(self);
    }
}

fn inference_loop<M: BatchRunner + ?Sized>(shared: Arc<Shared<M>>) {
    let mut batch = Vec::new();
    while shared.next_batch(&mut batch) {
        shared.run_batch(&mut batch);
    }
}

/// Merges concurrent requests into batched forward passes on dedicated inference threads.
///
/// Cheap to share (`Send + Sync`); dropping it closes it: queued work is still answered, then the
/// threads exit.
pub struct DynamicBatcher<M: BatchRunner + ?Sized = dyn BatchModel> {
    shared: Arc<Shared<M>>,
}

impl<M: BatchRunner + ?Sized> DynamicBatcher<M> {
    /// Starts `options.threads` inference threads named `millrace-infer-N` running `model`.
    pub fn new(model: Arc<M>, options: BatcherOptions) -> Self {
        let threads = options.threads.max(1);
        let shared = Arc::new(Shared {
            model,
            options,
            queue: Mutex::new(Queue {
                jobs: VecDeque::new(),
                queued_rows: 0,
                closed: false,
                collecting: false,
                no_threads: None,
                idle_waiters: 0,
                gather_waiters: 0,
            }),
            idle: Condvar::new(),
            gather: Condvar::new(),
            batches: AtomicU64::new(0),
            batched_rows: AtomicU64::new(0),
            buckets: Default::default(),
        });
        let mut started = 0;
        let mut last_error = None;
        for n in 0..threads {
            let worker = Arc::clone(&shared);
            match std::thread::Builder::new()
                .name(format!("millrace-infer-{n}"))
                .spawn(move || inference_loop(worker))
            {
                Ok(_) => started += 1,
                Err(e) => {
                    tracing::error!(thread = n, error = %e, "could not start an inference thread");
                    last_error = Some(e.to_string());
                }
            }
        }
        if started == 0 {
            shared.lock().no_threads = Some(format!(
                "no inference thread could be started: {}",
                last_error.unwrap_or_default()
            ));
        }
        DynamicBatcher { shared }
    }

    /// Queues a request of `rows` rows (checked by [`BatchRunner::check`] first: for a
    /// [`BatchModel`], `rows × input_dim` features) and awaits its `rows × output_dim` outputs. A
    /// request bigger than `max_batch_rows` runs as its own batch. Dropping the future abandons
    /// the request; it is then skipped if it has not run yet.
    ///
    /// The request is queued when `infer` is called, not when the future is first polled.
    pub fn infer(
        &self,
        input: M::Input,
        rows: usize,
    ) -> impl Future<Output = Result<Vec<f32>, BatchError>> + Send + 'static {
        let queued = self.enqueue(input, rows);
        async move {
            match queued {
                Err(e) => Err(e),
                Ok(None) => Ok(Vec::new()),
                Ok(Some(answer)) => answer.await.unwrap_or_else(|_| {
                    Err(BatchError::Failed(
                        "the inference thread stopped before answering".to_string(),
                    ))
                }),
            }
        }
    }

    /// Checks and queues a request; `None` when it has no rows (nothing to wait for).
    fn enqueue(
        &self,
        input: M::Input,
        rows: usize,
    ) -> Result<Option<oneshot::Receiver<Reply>>, BatchError> {
        self.shared.model.check(&input, rows)?;
        let (reply, answer) = oneshot::channel();
        {
            let mut queue = self.shared.lock();
            if queue.closed {
                return Err(BatchError::Closed);
            }
            if let Some(message) = &queue.no_threads {
                return Err(BatchError::Failed(message.clone()));
            }
            if rows == 0 {
                return Ok(None);
            }
            let queued_rows = queue.queued_rows;
            if queued_rows > 0
                && queued_rows.saturating_add(rows) > self.shared.options.max_queue_rows
            {
                return Err(BatchError::Overloaded { queued_rows });
            }
            queue.jobs.push_back(Job {
                input,
                rows,
                queued_at: Instant::now(),
                reply,
            });
            queue.queued_rows = queued_rows.saturating_add(rows);
            if queue.collecting {
                if queue.gather_waiters > 0 {
                    self.shared.gather.notify_one();
                }
            } else if queue.idle_waiters > 0 {
                // On a runtime set up by `configure_runtime`, an I/O thread that still has
                // requests to read leaves the wake-up to the moment it runs out of work, so the
                // requests it reads in one pass become one batch (and one wake-up); a full batch
                // or any other thread wakes the inference thread at once.
                let full = queue.queued_rows >= self.shared.max_batch_rows();
                if full || !defer_wake(Arc::clone(&self.shared) as Arc<dyn Wake>) {
                    self.shared.idle.notify_one();
                }
            }
        }
        Ok(Some(answer))
    }

    /// A snapshot of the counters and queue gauges.
    pub fn stats(&self) -> BatcherStats {
        let (queued_rows, queued_requests) = {
            let queue = self.shared.lock();
            (queue.queued_rows, queue.jobs.len())
        };
        let shared = &self.shared;
        BatcherStats {
            batches: shared.batches.load(Ordering::Relaxed),
            batched_rows: shared.batched_rows.load(Ordering::Relaxed),
            queued_rows,
            queued_requests,
            batch_size_buckets: BUCKET_BOUNDS
                .iter()
                .zip(&shared.buckets)
                .map(|(&bound, count)| (bound, count.load(Ordering::Relaxed)))
                .collect(),
        }
    }

    /// Stops accepting work; already queued jobs are still answered and the threads exit once the
    /// queue is empty. Idempotent; also done on drop.
    pub fn close(&self) {
        let mut queue = self.shared.lock();
        queue.closed = true;
        self.shared.idle.notify_all();
        self.shared.gather.notify_all();
    }
}

impl<M: BatchRunner + ?Sized> Drop for DynamicBatcher<M> {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests;
