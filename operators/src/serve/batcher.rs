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
mod tests {
    use std::sync::mpsc;

    use super::*;

    /// Output per row: `[x0 * 2 + 1, rows in the batch]`. Optionally holds each batch until
    /// released, and fails any batch holding a negative feature.
    struct TestModel {
        gate: Option<Gate>,
    }

    struct Gate {
        entered: Mutex<mpsc::Sender<usize>>,
        release: Mutex<mpsc::Receiver<()>>,
    }

    impl BatchModel for TestModel {
        fn input_dim(&self) -> usize {
            2
        }
        fn output_dim(&self) -> usize {
            2
        }
        fn predict(&self, x: &[f32], rows: usize) -> Result<Vec<f32>, String> {
            if let Some(gate) = &self.gate {
                let _ = gate.entered.lock().unwrap().send(rows);
                // Err once the release sender is dropped: the gate stays open from then on.
                let _ = gate.release.lock().unwrap().recv();
            }
            assert_eq!(x.len(), rows * 2);
            if x.iter().any(|&v| v < 0.0) {
                return Err("negative feature in batch".to_string());
            }
            if x.contains(&666.0) {
                panic!("the number of the beast");
            }
            if x.contains(&777.0) {
                return Ok(vec![0.0; 1]);
            }
            Ok(x.chunks(2)
                .flat_map(|row| [row[0] * 2.0 + 1.0, rows as f32])
                .collect())
        }
    }

    fn plain() -> Arc<dyn BatchModel> {
        Arc::new(TestModel { gate: None })
    }

    /// A model that holds every batch until `release` sends or is dropped; `entered` tells when a
    /// batch (of that many rows) has reached the model.
    fn gated() -> (Arc<dyn BatchModel>, mpsc::Receiver<usize>, mpsc::Sender<()>) {
        let (entered_tx, entered) = mpsc::channel();
        let (release, release_rx) = mpsc::channel();
        let model = TestModel {
            gate: Some(Gate {
                entered: Mutex::new(entered_tx),
                release: Mutex::new(release_rx),
            }),
        };
        (Arc::new(model), entered, release)
    }

    fn options(max_batch_rows: usize, max_wait_ms: u64) -> BatcherOptions {
        BatcherOptions {
            max_batch_rows,
            max_wait: Duration::from_millis(max_wait_ms),
            ..BatcherOptions::default()
        }
    }

    /// Rows `[first, 0], [first + 1, 0], …`.
    fn rows_from(first: f32, rows: usize) -> Vec<f32> {
        (0..rows).flat_map(|r| [first + r as f32, 0.0]).collect()
    }

    async fn wait_queued(batcher: &DynamicBatcher, rows: usize) {
        for _ in 0..5000 {
            if batcher.stats().queued_rows == rows {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("queue never reached {rows} rows: {:?}", batcher.stats());
    }

    fn bucket_total(stats: &BatcherStats) -> u64 {
        stats.batch_size_buckets.iter().map(|&(_, n)| n).sum()
    }

    #[test]
    fn batcher_is_send_and_sync_and_infer_is_send() {
        fn assert_send_sync<T: Send + Sync>(_: &T) {}
        fn assert_send<T: Send>(_: &T) {}
        let batcher = DynamicBatcher::new(plain(), BatcherOptions::default());
        assert_send_sync(&batcher);
        assert_send(&batcher.infer(vec![1.0, 2.0], 1));
        let defaults = BatcherOptions::default();
        assert_eq!(defaults.max_batch_rows, 64);
        assert_eq!(defaults.max_wait, Duration::ZERO);
        assert_eq!(defaults.max_queue_rows, 8192);
        assert_eq!(defaults.threads, 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_callers_each_get_their_own_rows() {
        let batcher = Arc::new(DynamicBatcher::new(
            plain(),
            BatcherOptions {
                threads: 2,
                ..options(16, 2)
            },
        ));
        let mut tasks = Vec::new();
        for i in 0..200usize {
            let worker = Arc::clone(&batcher);
            let rows = 1 + i % 5;
            tasks.push(tokio::spawn(async move {
                let first = (i * 10) as f32;
                let out = worker.infer(rows_from(first, rows), rows).await.unwrap();
                (first, rows, out)
            }));
        }
        let mut total_rows = 0;
        let mut batched_together = 0;
        for task in tasks {
            let (first, rows, out) = task.await.unwrap();
            assert_eq!(out.len(), rows * 2);
            for r in 0..rows {
                assert_eq!(out[r * 2], (first + r as f32) * 2.0 + 1.0);
                let batch_rows = out[r * 2 + 1] as usize;
                assert!((rows..=16).contains(&batch_rows), "batch of {batch_rows}");
                if batch_rows > rows {
                    batched_together += 1;
                }
            }
            total_rows += rows;
        }
        assert!(batched_together > 0);
        let stats = batcher.stats();
        assert_eq!(total_rows, 600);
        assert_eq!(stats.batched_rows, 600);
        assert_eq!(bucket_total(&stats), stats.batches);
        assert_eq!(stats.queued_rows, 0);
        assert_eq!(stats.queued_requests, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn waiting_merges_single_row_requests() {
        let batcher = Arc::new(DynamicBatcher::new(plain(), options(64, 5)));
        let tasks: Vec<_> = (0..32)
            .map(|i| {
                let worker = Arc::clone(&batcher);
                tokio::spawn(async move { worker.infer(vec![i as f32, 0.0], 1).await.unwrap() })
            })
            .collect();
        let mut largest = 0.0f32;
        for (i, task) in tasks.into_iter().enumerate() {
            let out = task.await.unwrap();
            assert_eq!(out[0], i as f32 * 2.0 + 1.0);
            largest = largest.max(out[1]);
        }
        let stats = batcher.stats();
        assert!(stats.batches < 32, "{stats:?}");
        assert!(largest > 1.0);
        assert_eq!(stats.batched_rows, 32);
        assert_eq!(bucket_total(&stats), stats.batches);
        assert_eq!(stats.batch_size_buckets.len(), 12);
        assert_eq!(stats.batch_size_buckets[0].0, 1);
        assert_eq!(stats.batch_size_buckets[11].0, usize::MAX);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn max_batch_rows_is_respected_and_oversized_requests_run_alone() {
        let (model, entered, release) = gated();
        let batcher = Arc::new(DynamicBatcher::new(model, options(4, 50)));
        // Hold the thread on a first batch, so everything below is queued together.
        let first = {
            let worker = Arc::clone(&batcher);
            tokio::spawn(async move { worker.infer(rows_from(0.0, 1), 1).await })
        };
        assert_eq!(entered.recv().unwrap(), 1);
        let sizes = [3usize, 2, 1, 10, 1, 2, 3, 1];
        let mut tasks = Vec::new();
        let mut queued = 0;
        for (i, &rows) in sizes.iter().enumerate() {
            let worker = Arc::clone(&batcher);
            tasks.push(tokio::spawn(async move {
                worker
                    .infer(rows_from(100.0 * (i + 1) as f32, rows), rows)
                    .await
            }));
            queued += rows;
            wait_queued(&batcher, queued).await;
        }
        drop(release);
        assert_eq!(first.await.unwrap().unwrap(), vec![1.0, 1.0]);
        // FIFO: [3] (2 would make 5), [2, 1], [10] alone, [1, 2], [3, 1].
        let expected_batch = [3.0, 3.0, 3.0, 10.0, 3.0, 3.0, 4.0, 4.0];
        for (i, task) in tasks.into_iter().enumerate() {
            let out = task.await.unwrap().unwrap();
            let first = 100.0 * (i + 1) as f32;
            for r in 0..sizes[i] {
                assert_eq!(out[r * 2], (first + r as f32) * 2.0 + 1.0);
                assert_eq!(out[r * 2 + 1], expected_batch[i], "request {i}");
            }
        }
        let stats = batcher.stats();
        assert_eq!(stats.batches, 6);
        assert_eq!(stats.batched_rows, 24);
        let buckets: Vec<u64> = stats.batch_size_buckets.iter().map(|&(_, n)| n).collect();
        assert_eq!(buckets, vec![1, 0, 4, 0, 1, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn full_queue_is_overloaded_until_it_drains() {
        let (model, entered, release) = gated();
        let batcher = Arc::new(DynamicBatcher::new(
            model,
            BatcherOptions {
                max_queue_rows: 4,
                ..options(64, 0)
            },
        ));
        let held = {
            let worker = Arc::clone(&batcher);
            tokio::spawn(async move { worker.infer(rows_from(1.0, 1), 1).await })
        };
        assert_eq!(entered.recv().unwrap(), 1);
        let mut queued = Vec::new();
        for i in 0..2 {
            let worker = Arc::clone(&batcher);
            queued.push(tokio::spawn(async move {
                worker.infer(rows_from(10.0 * i as f32, 2), 2).await
            }));
            wait_queued(&batcher, 2 * (i + 1)).await;
        }
        assert_eq!(
            batcher.infer(rows_from(5.0, 1), 1).await,
            Err(BatchError::Overloaded { queued_rows: 4 })
        );
        let stats = batcher.stats();
        assert_eq!((stats.queued_rows, stats.queued_requests), (4, 2));
        drop(release);
        assert_eq!(held.await.unwrap().unwrap(), vec![3.0, 1.0]);
        assert_eq!(
            queued.remove(0).await.unwrap().unwrap(),
            vec![1.0, 4.0, 3.0, 4.0]
        );
        assert_eq!(
            queued.remove(0).await.unwrap().unwrap(),
            vec![21.0, 4.0, 23.0, 4.0]
        );
        assert_eq!(
            batcher.infer(rows_from(5.0, 1), 1).await,
            Ok(vec![11.0, 1.0])
        );
    }

    #[tokio::test]
    async fn a_request_bigger_than_the_queue_is_served_when_the_queue_is_empty() {
        let batcher = DynamicBatcher::new(
            plain(),
            BatcherOptions {
                max_queue_rows: 2,
                ..options(2, 0)
            },
        );
        let out = batcher.infer(rows_from(0.0, 5), 5).await.unwrap();
        assert_eq!(out, vec![1.0, 5.0, 3.0, 5.0, 5.0, 5.0, 7.0, 5.0, 9.0, 5.0]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_batch_fails_all_its_callers_and_later_batches_work() {
        let (model, entered, release) = gated();
        let batcher = Arc::new(DynamicBatcher::new(model, options(64, 20)));
        let held = {
            let worker = Arc::clone(&batcher);
            tokio::spawn(async move { worker.infer(rows_from(1.0, 1), 1).await })
        };
        assert_eq!(entered.recv().unwrap(), 1);
        let mut tasks = Vec::new();
        for (i, first) in [1.0f32, -1.0, 2.0].into_iter().enumerate() {
            let worker = Arc::clone(&batcher);
            tasks.push(tokio::spawn(async move {
                worker.infer(rows_from(first, 1), 1).await
            }));
            wait_queued(&batcher, i + 1).await;
        }
        drop(release);
        assert_eq!(held.await.unwrap().unwrap(), vec![3.0, 1.0]);
        for task in tasks {
            assert_eq!(
                task.await.unwrap(),
                Err(BatchError::Failed("negative feature in batch".to_string()))
            );
        }
        assert_eq!(entered.recv().unwrap(), 3);
        assert_eq!(
            batcher.infer(rows_from(4.0, 2), 2).await,
            Ok(vec![9.0, 2.0, 11.0, 2.0])
        );
        let stats = batcher.stats();
        assert_eq!((stats.batches, stats.batched_rows), (3, 6));
    }

    #[tokio::test]
    async fn panics_and_wrong_output_sizes_fail_the_batch_only() {
        let batcher = DynamicBatcher::new(plain(), options(64, 0));
        let panicked = batcher.infer(vec![666.0, 0.0], 1).await;
        assert_eq!(
            panicked,
            Err(BatchError::Failed(
                "model panicked: the number of the beast".to_string()
            ))
        );
        let short = batcher.infer(vec![777.0, 0.0], 1).await;
        assert_eq!(
            short,
            Err(BatchError::Failed(
                "model returned 1 values for a batch of 1 rows × 2 outputs".to_string()
            ))
        );
        assert_eq!(batcher.infer(vec![2.0, 0.0], 1).await, Ok(vec![5.0, 1.0]));
    }

    #[tokio::test]
    async fn malformed_and_empty_requests() {
        let batcher = DynamicBatcher::new(plain(), BatcherOptions::default());
        assert_eq!(
            batcher.infer(vec![1.0, 2.0, 3.0], 2).await,
            Err(BatchError::Failed(
                "request has 3 feature values, expected 2 rows × 2 features".to_string()
            ))
        );
        assert_eq!(batcher.infer(Vec::new(), 0).await, Ok(Vec::new()));
        assert_eq!(batcher.stats().batches, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn abandoned_requests_are_skipped() {
        let (model, entered, release) = gated();
        let batcher = Arc::new(DynamicBatcher::new(model, options(64, 0)));
        let held = {
            let worker = Arc::clone(&batcher);
            tokio::spawn(async move { worker.infer(rows_from(1.0, 1), 1).await })
        };
        assert_eq!(entered.recv().unwrap(), 1);
        let gave_up = tokio::time::timeout(
            Duration::from_millis(20),
            batcher.infer(rows_from(50.0, 3), 3),
        )
        .await;
        assert!(gave_up.is_err());
        assert_eq!(batcher.stats().queued_rows, 3);
        drop(release);
        assert_eq!(held.await.unwrap().unwrap(), vec![3.0, 1.0]);
        assert_eq!(
            batcher.infer(rows_from(2.0, 1), 1).await,
            Ok(vec![5.0, 1.0])
        );
        let stats = batcher.stats();
        assert_eq!((stats.batches, stats.batched_rows), (2, 2));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn close_answers_queued_work_then_refuses() {
        let (model, entered, release) = gated();
        let batcher = Arc::new(DynamicBatcher::new(
            model,
            BatcherOptions {
                threads: 2,
                ..options(1, 0)
            },
        ));
        let mut tasks = Vec::new();
        for i in 0..2 {
            let worker = Arc::clone(&batcher);
            tasks.push(tokio::spawn(async move {
                worker.infer(rows_from(i as f32, 1), 1).await
            }));
            // Both threads end up held inside the model.
            assert_eq!(entered.recv().unwrap(), 1);
        }
        for i in 2..5 {
            let worker = Arc::clone(&batcher);
            tasks.push(tokio::spawn(async move {
                worker.infer(rows_from(i as f32, 1), 1).await
            }));
            wait_queued(&batcher, i - 1).await;
        }
        batcher.close();
        batcher.close();
        assert_eq!(
            batcher.infer(rows_from(9.0, 1), 1).await,
            Err(BatchError::Closed)
        );
        drop(release);
        for (i, task) in tasks.into_iter().enumerate() {
            assert_eq!(
                task.await.unwrap(),
                Ok(vec![i as f32 * 2.0 + 1.0, 1.0]),
                "request {i}"
            );
        }
        assert_eq!(batcher.stats().batches, 5);
    }

    #[test]
    fn dropping_the_batcher_stops_its_threads() {
        let model = plain();
        let batcher = DynamicBatcher::new(
            Arc::clone(&model),
            BatcherOptions {
                threads: 3,
                ..BatcherOptions::default()
            },
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let out = runtime.block_on(batcher.infer(vec![3.0, 0.0], 1)).unwrap();
        assert_eq!(out, vec![7.0, 1.0]);
        drop(batcher);
        // Each thread holds the shared state, and with it the model; they let go on exit.
        for _ in 0..5000 {
            if Arc::strong_count(&model) == 1 {
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        panic!("inference threads still running after drop");
    }
}
