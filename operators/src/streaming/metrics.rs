//! A streaming job's live counters in Prometheus text format: served on the job's model server
//! (`GET /metrics`, after the serving metrics) and written to `metrics.prom` at the end.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use super::prequential::PrequentialMetrics;
use millrace_engine::escape_label;

/// Updated by worker 0 after every step (the totals are over all workers).
#[derive(Debug, Default)]
pub struct StreamMetrics {
    job: String,
    rows_read: AtomicU64,
    rows_trained: AtomicU64,
    rows_dead_lettered: AtomicU64,
    rows_late: AtomicU64,
    steps: AtomicU64,
    model_version: AtomicU64,
    checkpoints: AtomicU64,
    /// The job's event-time watermark (epoch ms, i64 bits); `i64::MIN` while there is none.
    watermark_ms: AtomicI64,
    /// f64 bits; NaN before any record was scored.
    accuracy: AtomicU64,
    log_loss: AtomicU64,
    rmse: AtomicU64,
}

/// Totals after a step.
pub(crate) struct Totals {
    pub(crate) read: u64,
    pub(crate) trained: u64,
    pub(crate) dead: u64,
    pub(crate) late: u64,
    pub(crate) step: u64,
    pub(crate) version: u64,
    pub(crate) watermark_ms: Option<i64>,
}

impl StreamMetrics {
    /// Counters of the job named `job`.
    pub fn new(job: &str) -> Self {
        let nan = f64::NAN.to_bits();
        StreamMetrics {
            job: job.to_string(),
            accuracy: AtomicU64::new(nan),
            log_loss: AtomicU64::new(nan),
            rmse: AtomicU64::new(nan),
            watermark_ms: AtomicI64::new(i64::MIN),
            ..StreamMetrics::default()
        }
    }

    pub(crate) fn update(&self, totals: &Totals, prequential: Option<&PrequentialMetrics>) {
        self.rows_read.store(totals.read, Ordering::Relaxed);
        self.rows_trained.store(totals.trained, Ordering::Relaxed);
        self.rows_dead_lettered
            .store(totals.dead, Ordering::Relaxed);
        self.rows_late.store(totals.late, Ordering::Relaxed);
        self.steps.store(totals.step, Ordering::Relaxed);
        self.model_version.store(totals.version, Ordering::Relaxed);
        self.watermark_ms
            .store(totals.watermark_ms.unwrap_or(i64::MIN), Ordering::Relaxed);
        if let Some(m) = prequential {
            let put = |slot: &AtomicU64, v: Option<f64>| {
                slot.store(v.unwrap_or(f64::NAN).to_bits(), Ordering::Relaxed);
            };
            put(&self.accuracy, m.accuracy);
            put(&self.log_loss, m.log_loss);
            put(&self.rmse, m.rmse);
        }
    }

    pub(crate) fn checkpointed(&self) {
        self.checkpoints.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition of the counters.
    pub fn render(&self) -> String {
        let job = escape_label(&self.job);
        let mut out = String::new();
        let counters = [
            (
                "millrace_stream_rows_read_total",
                "Records read from Kafka (good and bad).",
                &self.rows_read,
            ),
            (
                "millrace_stream_rows_trained_total",
                "Records trained on.",
                &self.rows_trained,
            ),
            (
                "millrace_stream_rows_dead_lettered_total",
                "Records sent to the dead-letter output.",
                &self.rows_dead_lettered,
            ),
            (
                "millrace_stream_rows_late_total",
                "Records behind the watermark.",
                &self.rows_late,
            ),
            (
                "millrace_stream_steps_total",
                "Training steps.",
                &self.steps,
            ),
            (
                "millrace_stream_checkpoints_total",
                "Checkpoints written by this run.",
                &self.checkpoints,
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            let _ = writeln!(
                out,
                "{name}{{job=\"{job}\"}} {}",
                value.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP millrace_stream_model_version The last published model version.\n# TYPE millrace_stream_model_version gauge"
        );
        let _ = writeln!(
            out,
            "millrace_stream_model_version{{job=\"{job}\"}} {}",
            self.model_version.load(Ordering::Relaxed)
        );
        let watermark = self.watermark_ms.load(Ordering::Relaxed);
        if watermark != i64::MIN {
            let _ = writeln!(
                out,
                "# HELP millrace_stream_watermark_ms The job's event-time watermark (epoch ms): the minimum over partitions that are not idle.\n# TYPE millrace_stream_watermark_ms gauge"
            );
            let _ = writeln!(
                out,
                "millrace_stream_watermark_ms{{job=\"{job}\"}} {watermark}"
            );
        }
        for (metric, slot) in [
            ("accuracy", &self.accuracy),
            ("log_loss", &self.log_loss),
            ("rmse", &self.rmse),
        ] {
            let value = f64::from_bits(slot.load(Ordering::Relaxed));
            if value.is_nan() {
                continue;
            }
            let name = format!("millrace_stream_prequential_{metric}");
            let _ = writeln!(
                out,
                "# HELP {name} Prequential (test-then-train) {metric} over the recent window.\n# TYPE {name} gauge"
            );
            let _ = writeln!(out, "{name}{{job=\"{job}\"}} {value}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_prequential_gauges() {
        let m = StreamMetrics::new("j\"1");
        assert!(!m.render().contains("prequential"));
        assert!(!m.render().contains("millrace_stream_watermark_ms"));
        m.update(
            &Totals {
                read: 10,
                trained: 8,
                dead: 1,
                late: 1,
                step: 3,
                version: 2,
                watermark_ms: Some(1_700_000_000_000),
            },
            Some(&PrequentialMetrics {
                rows: 8,
                accuracy: Some(0.75),
                log_loss: Some(0.5),
                rmse: None,
                mae: None,
            }),
        );
        m.checkpointed();
        let text = m.render();
        assert!(
            text.contains("millrace_stream_rows_read_total{job=\"j\\\"1\"} 10"),
            "{text}"
        );
        assert!(text.contains("millrace_stream_rows_trained_total{job=\"j\\\"1\"} 8"));
        assert!(text.contains("millrace_stream_model_version{job=\"j\\\"1\"} 2"));
        assert!(text.contains("millrace_stream_checkpoints_total{job=\"j\\\"1\"} 1"));
        assert!(text.contains("millrace_stream_prequential_accuracy{job=\"j\\\"1\"} 0.75"));
        assert!(!text.contains("rmse"));
        assert!(text.contains("millrace_stream_watermark_ms{job=\"j\\\"1\"} 1700000000000"));
    }
}
