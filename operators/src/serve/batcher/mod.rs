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
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// What the batcher runs: a model over row-major f32 feature rows.
pub trait BatchModel: Send + Sync + 'static {
    /// Features per input row.
    fn input_dim(&self) -> usize;
    /// Values per output row.
    fn output_dim(&self) -> usize;
    /// rows × input_dim in → rows × output_dim out.
    fn predict(&self, x: &[f32], rows: usize) -> Result<Vec<f32>, String>;
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
    /// The request was malformed or the model failed on its batch.
    #[error("{0}")]
    Failed(String),
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
struct Job {
    x: Vec<f32>,
    rows: usize,
    queued_at: Instant,
    reply: oneshot::Sender<Reply>,
}

/// State behind the queue lock.
struct Queue {
    jobs: VecDeque<Job>,
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

impl Queue {
    /// Pops the oldest job whose caller is still waiting, dropping abandoned ones.
    fn pop_live(&mut self) -> Option<Job> {
        while let Some(job) = self.jobs.pop_front() {
            self.queued_rows = self.queued_rows.saturating_sub(job.rows);
            if !job.reply.is_closed() {
                return Some(job);
            }
        }
        None
    }
}

struct Shared {
    model: Arc<dyn BatchModel>,
    options: BatcherOptions,
    queue: Mutex<Queue>,
    /// Wakes an idle thread to start a batch.
    idle: Condvar,
    /// Wakes the gathering thread when a job arrives.
    gather: Condvar,
    batches: AtomicU64,
    batched_rows: AtomicU64,
    buckets: [AtomicU64; 12],
    /// Jobs queued, as last seen under the lock (read without it by spinning threads).
    pending: AtomicUsize,
}

/// How long an idle inference thread keeps looking for work before it parks.
const SPIN: Duration = Duration::from_micros(50);

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // Nothing panics while holding the lock (model calls run outside it, under catch_unwind),
        // so a poisoned lock still holds consistent state.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn max_batch_rows(&self) -> usize {
        self.options.max_batch_rows.max(1)
    }

    /// Waits for the next batch and moves its jobs into `batch`; false once closed and drained.
    fn next_batch(&self, batch: &mut Vec<Job>) -> bool {
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
            // Under load the next request is microseconds away: look again for a short while
            // before parking, which spares a sleep and a wake-up per batch.
            drop(queue);
            let spin_until = Instant::now() + SPIN;
            while self.pending.load(Ordering::Acquire) == 0 && Instant::now() < spin_until {
                std::hint::spin_loop();
            }
            queue = self.lock();
            if queue.jobs.is_empty() && !queue.closed {
                queue.idle_waiters += 1;
                queue = self
                    .idle
                    .wait(queue)
                    .unwrap_or_else(PoisonError::into_inner);
                queue.idle_waiters -= 1;
            }
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
        self.pending.store(queue.jobs.len(), Ordering::Release);
        true
    }

    /// Runs one forward pass over `batch` and answers every job in it.
    fn run_batch(&self, batch: &mut Vec<Job>, input: &mut Vec<f32>) {
        let rows: usize = batch.iter().map(|job| job.rows).sum();
        let result = catch_unwind(AssertUnwindSafe(|| match batch.as_slice() {
            [only] => self.model.predict(&only.x, rows),
            jobs => {
                input.clear();
                for job in jobs {
                    input.extend_from_slice(&job.x);
                }
                self.model.predict(input, rows)
            }
        }));
        self.record(rows);
        let out_dim = self.model.output_dim();
        let outputs = match result {
            Ok(Ok(out)) => match rows.checked_mul(out_dim) {
                Some(expected) if out.len() == expected => Ok(out),
                _ => Err(format!(
                    "model returned {} values for a batch of {rows} rows × {out_dim} outputs",
                    out.len()
                )),
            },
            Ok(Err(message)) => Err(message),
            Err(panic) => Err(format!("model panicked: {}", panic_message(&*panic))),
        };
        match outputs {
            // A lone job takes the output as is, without a copy. Send errors mean the caller gave
            // up (timed out); there is nobody to answer then.
            Ok(out) if batch.len() == 1 => {
                if let Some(job) = batch.pop() {
                    let _ = job.reply.send(Ok(out));
                }
            }
            Ok(out) => {
                let mut offset = 0;
                for job in batch.drain(..) {
                    let len = job.rows * out_dim;
                    let _ = job.reply.send(Ok(out[offset..offset + len].to_vec()));
                    offset += len;
                }
            }
            Err(message) => {
                for job in batch.drain(..) {
                    let _ = job.reply.send(Err(BatchError::Failed(message.clone())));
                }
            }
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

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(message) = panic.downcast_ref::<&str>() {
        (*message).to_string()
    } else if let Some(message) = panic.downcast_ref::<String>() {
        message.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

fn inference_loop(shared: Arc<Shared>) {
    let mut batch = Vec::new();
    let mut input = Vec::new();
    while shared.next_batch(&mut batch) {
        shared.run_batch(&mut batch, &mut input);
    }
}

/// Merges concurrent requests into batched forward passes on dedicated inference threads.
///
/// Cheap to share (`Send + Sync`); dropping it closes it: queued work is still answered, then the
/// threads exit.
pub struct DynamicBatcher {
    shared: Arc<Shared>,
}

impl DynamicBatcher {
    /// Starts `options.threads` inference threads named `millrace-infer-N` running `model`.
    pub fn new(model: Arc<dyn BatchModel>, options: BatcherOptions) -> Self {
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
            pending: AtomicUsize::new(0),
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

    /// Queues `rows` rows (`x.len()` must be `rows × input_dim`, else [`BatchError::Failed`]) and
    /// awaits this request's `rows × output_dim` outputs. A request bigger than `max_batch_rows`
    /// runs as its own batch. Dropping the future abandons the request; its rows are then skipped
    /// if they have not run yet.
    pub async fn infer(&self, x: Vec<f32>, rows: usize) -> Result<Vec<f32>, BatchError> {
        let input_dim = self.shared.model.input_dim();
        if rows.checked_mul(input_dim) != Some(x.len()) {
            return Err(BatchError::Failed(format!(
                "request has {} feature values, expected {rows} rows × {input_dim} features",
                x.len()
            )));
        }
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
                return Ok(Vec::new());
            }
            let queued_rows = queue.queued_rows;
            if queued_rows > 0
                && queued_rows.saturating_add(rows) > self.shared.options.max_queue_rows
            {
                return Err(BatchError::Overloaded { queued_rows });
            }
            queue.jobs.push_back(Job {
                x,
                rows,
                queued_at: Instant::now(),
                reply,
            });
            queue.queued_rows = queued_rows.saturating_add(rows);
            self.shared
                .pending
                .store(queue.jobs.len(), Ordering::Release);
            if queue.collecting {
                if queue.gather_waiters > 0 {
                    self.shared.gather.notify_one();
                }
            } else if queue.idle_waiters > 0 {
                self.shared.idle.notify_one();
            }
        }
        answer.await.unwrap_or_else(|_| {
            Err(BatchError::Failed(
                "the inference thread stopped before answering".to_string(),
            ))
        })
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

impl Drop for DynamicBatcher {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests;
