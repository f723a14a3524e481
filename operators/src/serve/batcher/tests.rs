//! Tests of the parent module.
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

#[test]
fn a_configured_runtime_batches_what_one_thread_queues_before_it_parks() {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(1).enable_all();
    let runtime = configure_runtime(&mut builder).build().unwrap();
    let batcher = Arc::new(DynamicBatcher::new(plain(), options(64, 0)));
    let worker = Arc::clone(&batcher);
    let answers = runtime.block_on(async move {
        // Let the worker thread park once, which turns deferred wake-ups on for it.
        tokio::time::sleep(Duration::from_millis(20)).await;
        tokio::spawn(async move {
            // Queued without waking the inference thread; it wakes when this thread parks.
            let pending: Vec<_> = (0..8)
                .map(|i| worker.infer(rows_from(i as f32, 1), 1))
                .collect();
            let mut answers = Vec::new();
            for answer in pending {
                answers.push(answer.await.unwrap());
            }
            answers
        })
        .await
        .unwrap()
    });
    for (i, answer) in answers.iter().enumerate() {
        assert_eq!(answer, &vec![i as f32 * 2.0 + 1.0, 8.0], "request {i}");
    }
    assert_eq!(batcher.stats().batches, 1);
    // Threads outside such a runtime wake the inference thread at once.
    let out = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(batcher.infer(vec![1.0, 0.0], 1))
        .unwrap();
    assert_eq!(out, vec![3.0, 1.0]);
}
