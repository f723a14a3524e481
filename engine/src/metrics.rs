//! Per-operator counters, shared by all worker threads of a process, and their Prometheus rendering.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

/// Counters of one operator on one worker. Cheap to update from the hot path (relaxed atomics).
#[derive(Debug, Default)]
pub struct OperatorStats {
    batches_in: AtomicU64,
    rows_in: AtomicU64,
    batches_out: AtomicU64,
    rows_out: AtomicU64,
    dead_letters: AtomicU64,
    busy_ns: AtomicU64,
}

impl OperatorStats {
    /// Counts a batch of `rows` rows received.
    pub fn record_in(&self, rows: usize) {
        self.batches_in.fetch_add(1, Ordering::Relaxed);
        self.rows_in.fetch_add(rows as u64, Ordering::Relaxed);
    }

    /// Counts a batch of `rows` rows sent on.
    pub fn record_out(&self, rows: usize) {
        self.batches_out.fetch_add(1, Ordering::Relaxed);
        self.rows_out.fetch_add(rows as u64, Ordering::Relaxed);
    }

    /// Counts records sent to the dead-letter output.
    pub fn record_dead(&self, records: usize) {
        self.dead_letters
            .fetch_add(records as u64, Ordering::Relaxed);
    }

    /// Adds time spent doing this operator's work.
    pub fn record_busy(&self, busy: Duration) {
        self.busy_ns
            .fetch_add(busy.as_nanos() as u64, Ordering::Relaxed);
    }

    fn snapshot(&self) -> Counters {
        Counters {
            batches_in: self.batches_in.load(Ordering::Relaxed),
            rows_in: self.rows_in.load(Ordering::Relaxed),
            batches_out: self.batches_out.load(Ordering::Relaxed),
            rows_out: self.rows_out.load(Ordering::Relaxed),
            dead_letters: self.dead_letters.load(Ordering::Relaxed),
            busy_s: self.busy_ns.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

/// A point-in-time copy of an operator's counters.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Counters {
    /// Batches received.
    pub batches_in: u64,
    /// Rows received.
    pub rows_in: u64,
    /// Batches sent on.
    pub batches_out: u64,
    /// Rows sent on.
    pub rows_out: u64,
    /// Records sent to the dead-letter output.
    pub dead_letters: u64,
    /// Seconds spent in the operator's logic.
    pub busy_s: f64,
}

impl Counters {
    fn add(&mut self, other: &Counters) {
        self.batches_in += other.batches_in;
        self.rows_in += other.rows_in;
        self.batches_out += other.batches_out;
        self.rows_out += other.rows_out;
        self.dead_letters += other.dead_letters;
        self.busy_s += other.busy_s;
    }
}

/// One row of a metrics snapshot.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OperatorReport {
    /// The operator's name, as given to the builder.
    pub operator: String,
    /// The worker it ran on.
    pub worker: usize,
    /// Its counters.
    #[serde(flatten)]
    pub counters: Counters,
}

/// All operator counters of a process. Clone the `Arc` into every worker.
#[derive(Debug, Default)]
pub struct MetricsRegistry {
    operators: Mutex<Vec<(String, usize, Arc<OperatorStats>)>>,
}

impl MetricsRegistry {
    /// A new, empty registry behind an `Arc`.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The counters of operator `name` on `worker` (created on first use; the same name twice on
    /// one worker shares counters).
    pub fn operator(&self, name: &str, worker: usize) -> Arc<OperatorStats> {
        let mut ops = self.lock();
        if let Some((_, _, stats)) = ops.iter().find(|(n, w, _)| n == name && *w == worker) {
            return Arc::clone(stats);
        }
        let stats = Arc::new(OperatorStats::default());
        ops.push((name.to_string(), worker, Arc::clone(&stats)));
        stats
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(String, usize, Arc<OperatorStats>)>> {
        // A poisoned lock only means a worker panicked while registering; the counters are still valid.
        self.operators
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds counters of workers of other processes (gathered through the dataflow); an operator
    /// already registered for that worker here keeps its own counters.
    pub fn absorb(&self, reports: impl IntoIterator<Item = OperatorReport>) {
        let mut ops = self.lock();
        for r in reports {
            if ops
                .iter()
                .any(|(n, w, _)| *n == r.operator && *w == r.worker)
            {
                continue;
            }
            let c = &r.counters;
            let stats = OperatorStats {
                batches_in: AtomicU64::new(c.batches_in),
                rows_in: AtomicU64::new(c.rows_in),
                batches_out: AtomicU64::new(c.batches_out),
                rows_out: AtomicU64::new(c.rows_out),
                dead_letters: AtomicU64::new(c.dead_letters),
                busy_ns: AtomicU64::new((c.busy_s.max(0.0) * 1e9) as u64),
            };
            ops.push((r.operator, r.worker, Arc::new(stats)));
        }
    }

    /// Every operator on every worker, in registration order.
    pub fn snapshot(&self) -> Vec<OperatorReport> {
        self.lock()
            .iter()
            .map(|(name, worker, stats)| OperatorReport {
                operator: name.clone(),
                worker: *worker,
                counters: stats.snapshot(),
            })
            .collect()
    }

    /// Counters summed over workers, one row per operator, in registration order.
    pub fn totals(&self) -> Vec<(String, Counters)> {
        let mut out: Vec<(String, Counters)> = Vec::new();
        for report in self.snapshot() {
            match out.iter_mut().find(|(n, _)| *n == report.operator) {
                Some((_, c)) => c.add(&report.counters),
                None => out.push((report.operator, report.counters)),
            }
        }
        out
    }

    /// The counters in Prometheus text exposition format.
    pub fn to_prometheus(&self) -> String {
        let snapshot = self.snapshot();
        let mut out = String::new();
        type Family = (&'static str, &'static str, fn(&Counters) -> f64);
        let families: [Family; 6] = [
            (
                "millrace_operator_batches_in_total",
                "Batches received by an operator.",
                |c| c.batches_in as f64,
            ),
            (
                "millrace_operator_rows_in_total",
                "Rows received by an operator.",
                |c| c.rows_in as f64,
            ),
            (
                "millrace_operator_batches_out_total",
                "Batches sent on by an operator.",
                |c| c.batches_out as f64,
            ),
            (
                "millrace_operator_rows_out_total",
                "Rows sent on by an operator.",
                |c| c.rows_out as f64,
            ),
            (
                "millrace_operator_dead_letters_total",
                "Records an operator sent to the dead-letter output.",
                |c| c.dead_letters as f64,
            ),
            (
                "millrace_operator_busy_seconds_total",
                "Seconds spent in an operator's logic.",
                |c| c.busy_s,
            ),
        ];
        for (name, help, value) in families {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            for r in &snapshot {
                let _ = writeln!(
                    out,
                    "{name}{{operator=\"{}\",worker=\"{}\"}} {}",
                    escape_label(&r.operator),
                    r.worker,
                    value(&r.counters)
                );
            }
        }
        out
    }
}

/// Escapes a Prometheus label value.
pub fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_add_up_per_operator_and_render() {
        let reg = MetricsRegistry::new();
        reg.operator("read", 0).record_in(10);
        reg.operator("read", 1).record_in(5);
        reg.operator("read", 0).record_out(7);
        reg.operator("sql \"x\"", 0).record_dead(2);
        let totals = reg.totals();
        assert_eq!(totals[0].0, "read");
        assert_eq!(totals[0].1.rows_in, 15);
        assert_eq!(totals[0].1.batches_in, 2);
        assert_eq!(totals[0].1.rows_out, 7);
        assert_eq!(totals[1].1.dead_letters, 2);
        let text = reg.to_prometheus();
        assert!(
            text.contains("millrace_operator_rows_in_total{operator=\"read\",worker=\"1\"} 5\n")
        );
        assert!(text.contains("operator=\"sql \\\"x\\\"\""));
    }
}
