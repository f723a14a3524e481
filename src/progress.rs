//! Progress on a terminal (indicatif bars) or as log lines (tracing) when output is not a terminal.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use millrace_ml::metrics::EvalMetrics;
use millrace_operators::batch_job::Progress;

/// Progress bars when stderr is a terminal, periodic `tracing` lines otherwise.
pub struct CliProgress {
    bar: Mutex<Option<ProgressBar>>,
    terminal: bool,
    total: AtomicU64,
    done: AtomicU64,
    last_log: Mutex<Instant>,
}

impl CliProgress {
    /// Chooses bars or log lines by whether stderr is a terminal.
    pub fn new() -> Self {
        CliProgress {
            bar: Mutex::new(None),
            terminal: std::io::stderr().is_terminal(),
            total: AtomicU64::new(0),
            done: AtomicU64::new(0),
            last_log: Mutex::new(Instant::now()),
        }
    }

    fn start_bar(&self, total: u64, template: &str, unit: &str) {
        self.total.store(total, Ordering::Relaxed);
        self.done.store(0, Ordering::Relaxed);
        if !self.terminal {
            return;
        }
        let bar = ProgressBar::new(total);
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(unit.to_string());
        bar.enable_steady_tick(Duration::from_millis(200));
        if let Ok(mut slot) = self.bar.lock() {
            if let Some(old) = slot.take() {
                old.finish_and_clear();
            }
            *slot = Some(bar);
        }
    }

    fn with_bar(&self, f: impl FnOnce(&ProgressBar)) {
        if let Ok(slot) = self.bar.lock()
            && let Some(bar) = slot.as_ref()
        {
            f(bar);
        }
    }

    fn finish_bar(&self) {
        if let Ok(mut slot) = self.bar.lock()
            && let Some(bar) = slot.take()
        {
            bar.finish();
        }
    }

    fn log_due(&self) -> bool {
        let Ok(mut last) = self.last_log.lock() else {
            return false;
        };
        if last.elapsed() >= Duration::from_secs(5) {
            *last = Instant::now();
            true
        } else {
            false
        }
    }
}

impl Default for CliProgress {
    fn default() -> Self {
        Self::new()
    }
}

impl Progress for CliProgress {
    fn ingest_start(&self, rows: u64) {
        tracing::info!(rows, "ingest: reading and preprocessing");
        self.start_bar(
            rows,
            "ingest {bar:40} {human_pos}/{human_len} rows {per_sec} eta {eta}",
            "rows",
        );
    }

    fn ingested(&self, rows: u64) {
        let done = self.done.fetch_add(rows, Ordering::Relaxed) + rows;
        self.with_bar(|b| b.set_position(done));
        if !self.terminal && self.log_due() {
            tracing::info!(
                rows = done,
                of = self.total.load(Ordering::Relaxed),
                "ingest"
            );
        }
    }

    fn ingest_done(&self) {
        self.finish_bar();
        tracing::info!(rows = self.done.load(Ordering::Relaxed), "ingest: done");
    }

    fn train_start(&self, total_steps: u64, rows: u64) {
        tracing::info!(steps = total_steps, rows, "train: starting");
        self.start_bar(
            total_steps,
            "train  {bar:40} step {pos}/{len} {per_sec} eta {eta} {msg}",
            "",
        );
    }

    fn train_step(&self, step: u64, loss: f64) {
        self.done.store(step, Ordering::Relaxed);
        self.with_bar(|b| {
            b.set_position(step);
            if step.is_multiple_of(20) {
                b.set_message(format!("loss {loss:.4}"));
            }
        });
        if !self.terminal && self.log_due() {
            tracing::info!(step, of = self.total.load(Ordering::Relaxed), loss, "train");
        }
    }

    fn eval(&self, epoch: usize, metrics: &EvalMetrics) {
        let (name, value) = metrics.headline();
        self.with_bar(|b| b.println(format!("epoch {epoch}: {name} {value:.4}")));
        tracing::info!(epoch, metric = name, value, "evaluate");
    }

    fn train_done(&self) {
        self.finish_bar();
    }

    fn tune_start(&self, trials: usize, reports: u64) {
        tracing::info!(trials, reports, "tune: starting");
        self.start_bar(
            reports,
            "tune   {bar:40} report {pos}/{len} (at most) eta {eta} {msg}",
            "",
        );
    }

    fn tune_report(&self, done: u64, trial: &str, metric: &str, value: f64) {
        self.done.store(done, Ordering::Relaxed);
        self.with_bar(|b| {
            b.set_position(done);
            b.set_message(format!("{trial}: {metric} {value:.4}"));
        });
        if !self.terminal && self.log_due() {
            tracing::info!(
                done,
                of = self.total.load(Ordering::Relaxed),
                trial,
                metric,
                value,
                "tune"
            );
        }
    }

    fn tune_trial(&self, t: &millrace_operators::batch_job::TrialSummary) {
        let line = match &t.stop_reason {
            Some(why) => format!(
                "{} stopped after {} epochs ({:.4}): {why}",
                t.trial, t.epochs, t.metric
            ),
            None => format!(
                "{} completed {} epochs ({:.4})",
                t.trial, t.epochs, t.metric
            ),
        };
        self.with_bar(|b| b.println(&line));
        tracing::info!(trial = %t.trial, status = ?t.status, reports = t.reports, epochs = t.epochs, metric = t.metric, "tune trial ended");
    }
}
