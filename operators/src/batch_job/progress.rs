//! How a running job reports progress (progress bars on a terminal, log lines otherwise).

use millrace_ml::metrics::EvalMetrics;

/// Receives a job's progress. Called from worker threads: implementations must be cheap and `Sync`.
pub trait Progress: Send + Sync {
    /// Ingest is starting; `rows` is the number of rows to read over all workers.
    fn ingest_start(&self, _rows: u64) {}
    /// `rows` more rows were read (by any worker).
    fn ingested(&self, _rows: u64) {}
    /// Ingest and preprocessing are done.
    fn ingest_done(&self) {}
    /// Training is starting with `total_steps` steps over `rows` rows.
    fn train_start(&self, _total_steps: u64, _rows: u64) {}
    /// Step `step` finished with mean loss `loss`.
    fn train_step(&self, _step: u64, _loss: f64) {}
    /// An evaluation after epoch `epoch` finished.
    fn eval(&self, _epoch: usize, _metrics: &EvalMetrics) {}
    /// Training is done.
    fn train_done(&self) {}
    /// A tune run of `trials` trials is starting; they will make at most `reports` reports
    /// (fewer when the scheduler stops some).
    fn tune_start(&self, _trials: usize, _reports: u64) {}
    /// The `done`-th report of the run: `trial`'s `metric` is `value`.
    fn tune_report(&self, _done: u64, _trial: &str, _metric: &str, _value: f64) {}
    /// A trial ended (completed or stopped).
    fn tune_trial(&self, _trial: &super::TrialSummary) {}
}

/// Reports nothing.
pub struct NoProgress;

impl Progress for NoProgress {}
