//! The model server's Prometheus metrics, rendered in text format 0.0.4 for `GET /metrics`.
//!
//! Label sets are few (routes × models × status codes), so each metric is a map behind a
//! `RwLock`, keyed by label values, holding atomics: an observation read-locks the map and bumps
//! an atomic; only the first observation of a new label set takes the write lock.

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{PoisonError, RwLock};
use std::time::Duration;

/// `Content-Type` of [`ServeMetrics::render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Request latency buckets: `le` label and bound in nanoseconds.
const DURATION_BUCKETS: [(&str, u64); 14] = [
    ("0.0001", 100_000),
    ("0.00025", 250_000),
    ("0.0005", 500_000),
    ("0.001", 1_000_000),
    ("0.0025", 2_500_000),
    ("0.005", 5_000_000),
    ("0.01", 10_000_000),
    ("0.025", 25_000_000),
    ("0.05", 50_000_000),
    ("0.1", 100_000_000),
    ("0.25", 250_000_000),
    ("0.5", 500_000_000),
    ("1", 1_000_000_000),
    ("2.5", 2_500_000_000),
];

/// Batch size buckets: `le` label and bound in rows.
const ROW_BUCKETS: [(&str, u64); 11] = [
    ("1", 1),
    ("2", 2),
    ("4", 4),
    ("8", 8),
    ("16", 16),
    ("32", 32),
    ("64", 64),
    ("128", 128),
    ("256", 256),
    ("512", 512),
    ("1024", 1024),
];

/// Label values → `V`, created on first use.
#[derive(Debug)]
struct Family<K, V>(RwLock<BTreeMap<K, V>>);

impl<K, V> Default for Family<K, V> {
    fn default() -> Self {
        Self(RwLock::new(BTreeMap::new()))
    }
}

impl<K: Ord, V: Default> Family<K, V> {
    /// Runs `f` on the entry for `key`, under the read lock once the entry exists.
    fn with<Q, R>(&self, key: &Q, f: impl FnOnce(&V) -> R) -> R
    where
        K: Borrow<Q>,
        Q: Ord + ToOwned<Owned = K> + ?Sized,
    {
        let map = self.0.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(v) = map.get(key) {
            return f(v);
        }
        drop(map);
        let mut map = self.0.write().unwrap_or_else(PoisonError::into_inner);
        f(map.entry(key.to_owned()).or_default())
    }

    /// Runs `f` on every entry, in key order.
    fn each(&self, mut f: impl FnMut(&K, &V)) {
        let map = self.0.read().unwrap_or_else(PoisonError::into_inner);
        for (k, v) in map.iter() {
            f(k, v);
        }
    }
}

/// Counts per bucket (not cumulative; `N` finite bounds, then +Inf) and the sum, in integer units
/// (nanoseconds, rows) so that adding is exact and lock-free.
#[derive(Debug)]
struct Histogram<const N: usize> {
    buckets: [AtomicU64; N],
    inf: AtomicU64,
    sum: AtomicU64,
}

impl<const N: usize> Default for Histogram<N> {
    fn default() -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            inf: AtomicU64::new(0),
            sum: AtomicU64::new(0),
        }
    }
}

impl<const N: usize> Histogram<N> {
    fn observe(&self, bounds: &[(&str, u64); N], value: u64) {
        match bounds.iter().position(|(_, b)| value <= *b) {
            Some(i) => self.buckets[i].fetch_add(1, Relaxed),
            None => self.inf.fetch_add(1, Relaxed),
        };
        self.sum.fetch_add(value, Relaxed);
    }

    /// `_bucket` (cumulative), `_sum` (via `sum`) and `_count` lines; the count is the +Inf bucket,
    /// so the two always agree.
    fn render(
        &self,
        out: &mut String,
        name: &str,
        labels: &str,
        bounds: &[(&str, u64); N],
        sum: impl Fn(u64) -> String,
    ) {
        let mut total = 0u64;
        for ((le, _), count) in bounds.iter().zip(&self.buckets) {
            total += count.load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {total}");
        }
        total += self.inf.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {total}");
        let _ = writeln!(
            out,
            "{name}_sum{{{labels}}} {}",
            sum(self.sum.load(Relaxed))
        );
        let _ = writeln!(out, "{name}_count{{{labels}}} {total}");
    }
}

/// Escapes a label value for the text format.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// The model server's metrics; shared by all request handlers (`Send + Sync`).
#[derive(Debug, Default)]
pub struct ServeMetrics {
    /// route → model → HTTP status → count.
    requests: Family<String, Family<String, Family<u16, AtomicU64>>>,
    /// route → model → latency.
    durations: Family<String, Family<String, Histogram<14>>>,
    /// model → rows per predicted batch.
    batch_rows: Family<String, Histogram<11>>,
    /// model → rows waiting.
    queue_rows: Family<String, AtomicU64>,
    /// model → version served.
    model_version: Family<String, AtomicU64>,
    in_flight: AtomicI64,
}

impl ServeMetrics {
    /// No observations yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// One finished request: route label (`v1_predict`, `v2_infer`, `v2_metadata`, …), model
    /// name, HTTP status and latency.
    pub fn observe_request(&self, route: &str, model: &str, status: u16, latency: Duration) {
        self.requests.with(route, |by_model| {
            by_model.with(model, |by_code| {
                by_code.with(&status, |n| n.fetch_add(1, Relaxed));
            });
        });
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.durations.with(route, |by_model| {
            by_model.with(model, |h| h.observe(&DURATION_BUCKETS, nanos));
        });
    }

    /// One batch of `rows` rows sent through `model`.
    pub fn observe_batch(&self, model: &str, rows: usize) {
        let rows = u64::try_from(rows).unwrap_or(u64::MAX);
        self.batch_rows
            .with(model, |h| h.observe(&ROW_BUCKETS, rows));
    }

    /// Replaces `model`'s batch-size histogram with a batcher's own counts: `per_bucket` holds
    /// (upper bound, batches) for bounds 1, 2, 4, … 1024 and then +Inf (not cumulative), `rows`
    /// the rows of all those batches.
    pub fn set_batches(&self, model: &str, per_bucket: &[(usize, u64)], rows: u64) {
        self.batch_rows.with(model, |h| {
            for (i, (_, count)) in per_bucket.iter().enumerate() {
                match h.buckets.get(i) {
                    Some(bucket) => bucket.store(*count, Relaxed),
                    None => h.inf.store(*count, Relaxed),
                }
            }
            h.sum.store(rows, Relaxed);
        });
    }

    /// Rows waiting to be batched for `model`.
    pub fn set_queue_depth(&self, model: &str, rows: usize) {
        let rows = u64::try_from(rows).unwrap_or(u64::MAX);
        self.queue_rows.with(model, |g| g.store(rows, Relaxed));
    }

    /// The version of `model` being served.
    pub fn set_model_version(&self, model: &str, version: u64) {
        self.model_version
            .with(model, |g| g.store(version, Relaxed));
    }

    /// A request started.
    pub fn inc_in_flight(&self) {
        self.in_flight.fetch_add(1, Relaxed);
    }

    /// A request finished.
    pub fn dec_in_flight(&self) {
        self.in_flight.fetch_sub(1, Relaxed);
    }

    /// All metrics in Prometheus text format 0.0.4, label sets in sorted order.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let name = "millrace_serve_requests_total";
        header(
            &mut out,
            name,
            "counter",
            "Requests answered, by route, model and HTTP status.",
        );
        self.requests.each(|route, by_model| {
            by_model.each(|model, by_code| {
                by_code.each(|code, n| {
                    let _ = writeln!(
                        out,
                        "{name}{{route=\"{}\",model=\"{}\",code=\"{code}\"}} {}",
                        escape(route),
                        escape(model),
                        n.load(Relaxed)
                    );
                });
            });
        });
        let name = "millrace_serve_request_duration_seconds";
        header(
            &mut out,
            name,
            "histogram",
            "Time from request to response, in seconds.",
        );
        self.durations.each(|route, by_model| {
            by_model.each(|model, h| {
                let labels = format!("route=\"{}\",model=\"{}\"", escape(route), escape(model));
                h.render(&mut out, name, &labels, &DURATION_BUCKETS, |nanos| {
                    (nanos as f64 / 1e9).to_string()
                });
            });
        });
        let name = "millrace_serve_batch_rows";
        header(
            &mut out,
            name,
            "histogram",
            "Rows per batch sent through the model.",
        );
        self.batch_rows.each(|model, h| {
            let labels = format!("model=\"{}\"", escape(model));
            h.render(&mut out, name, &labels, &ROW_BUCKETS, |rows| {
                rows.to_string()
            });
        });
        let gauges = [
            (
                "millrace_serve_queue_rows",
                "Rows waiting to be batched.",
                &self.queue_rows,
            ),
            (
                "millrace_serve_model_version",
                "Version of the model being served.",
                &self.model_version,
            ),
        ];
        for (name, help, family) in gauges {
            header(&mut out, name, "gauge", help);
            family.each(|model, g| {
                let _ = writeln!(
                    out,
                    "{name}{{model=\"{}\"}} {}",
                    escape(model),
                    g.load(Relaxed)
                );
            });
        }
        let name = "millrace_serve_in_flight_requests";
        header(&mut out, name, "gauge", "Requests being answered now.");
        let _ = writeln!(out, "{name} {}", self.in_flight.load(Relaxed));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn lines_of<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
        text.lines().filter(|l| l.starts_with(prefix)).collect()
    }

    #[test]
    fn renders_observations() {
        let m = ServeMetrics::new();
        m.observe_request("v2_infer", "churn", 200, Duration::from_micros(300));
        m.observe_request("v2_infer", "churn", 200, Duration::from_millis(3));
        m.observe_request("v2_infer", "churn", 400, Duration::from_micros(50));
        m.observe_request("v1_predict", "churn", 200, Duration::from_secs(3));
        m.observe_batch("churn", 1);
        m.observe_batch("churn", 5);
        m.observe_batch("churn", 2000);
        m.set_queue_depth("churn", 12);
        m.set_queue_depth("churn", 7);
        m.set_model_version("churn", 4);
        m.inc_in_flight();
        m.inc_in_flight();
        m.dec_in_flight();
        let text = m.render();
        assert_eq!(
            lines_of(&text, "millrace_serve_requests_total"),
            [
                r#"millrace_serve_requests_total{route="v1_predict",model="churn",code="200"} 1"#,
                r#"millrace_serve_requests_total{route="v2_infer",model="churn",code="200"} 2"#,
                r#"millrace_serve_requests_total{route="v2_infer",model="churn",code="400"} 1"#,
            ]
        );
        let d = "millrace_serve_request_duration_seconds";
        let v2 = lines_of(&text, &format!("{d}_bucket{{route=\"v2_infer\""));
        let counts: Vec<&str> = v2.iter().filter_map(|l| l.rsplit(' ').next()).collect();
        // 50µs ≤ 0.0001; 300µs ≤ 0.0005; 3ms ≤ 0.005.
        assert_eq!(
            counts,
            [
                "1", "1", "2", "2", "2", "3", "3", "3", "3", "3", "3", "3", "3", "3", "3"
            ]
        );
        assert_eq!(
            v2[2],
            r#"millrace_serve_request_duration_seconds_bucket{route="v2_infer",model="churn",le="0.0005"} 2"#
        );
        assert_eq!(
            v2[14],
            r#"millrace_serve_request_duration_seconds_bucket{route="v2_infer",model="churn",le="+Inf"} 3"#
        );
        assert_eq!(
            lines_of(&text, &format!("{d}_sum")),
            [
                r#"millrace_serve_request_duration_seconds_sum{route="v1_predict",model="churn"} 3"#,
                r#"millrace_serve_request_duration_seconds_sum{route="v2_infer",model="churn"} 0.00335"#,
            ]
        );
        assert_eq!(
            lines_of(&text, &format!("{d}_count")),
            [
                r#"millrace_serve_request_duration_seconds_count{route="v1_predict",model="churn"} 1"#,
                r#"millrace_serve_request_duration_seconds_count{route="v2_infer",model="churn"} 3"#,
            ]
        );
        let v1 = lines_of(&text, &format!("{d}_bucket{{route=\"v1_predict\""));
        assert_eq!(
            v1[13],
            r#"millrace_serve_request_duration_seconds_bucket{route="v1_predict",model="churn",le="2.5"} 0"#
        );
        assert_eq!(
            v1[14],
            r#"millrace_serve_request_duration_seconds_bucket{route="v1_predict",model="churn",le="+Inf"} 1"#
        );
        let rows = lines_of(&text, "millrace_serve_batch_rows");
        assert_eq!(
            rows,
            [
                r#"millrace_serve_batch_rows_bucket{model="churn",le="1"} 1"#,
                r#"millrace_serve_batch_rows_bucket{model="churn",le="2"} 1"#,
                r#"millrace_serve_batch_rows_bucket{model="churn",le="4"} 1"#,
                r#"millrace_serve_batch_rows_bucket{model="churn",le="8"} 2"#,
                r#"millrace_serve_batch_rows_bucket{model="churn",le="16"} 2"#,
                r#"millrace_serve_batch_rows_bucket{model="churn",le="32"} 2"#,
                r#"millrace_serve_batch_rows_bucket{model="churn",le="64"} 2"#,
                r#"millrace_serve_batch_rows_bucket{model="churn",le="128"} 2"#,
                r#"millrace_serve_batch_rows_bucket{model="churn",le="256"} 2"#,
                r#"millrace_serve_batch_rows_bucket{model="churn",le="512"} 2"#,
                r#"millrace_serve_batch_rows_bucket{model="churn",le="1024"} 2"#,
                r#"millrace_serve_batch_rows_bucket{model="churn",le="+Inf"} 3"#,
                r#"millrace_serve_batch_rows_sum{model="churn"} 2006"#,
                r#"millrace_serve_batch_rows_count{model="churn"} 3"#,
            ]
        );
        let tail: Vec<&str> = text
            .lines()
            .skip_while(|l| !l.starts_with("# HELP millrace_serve_queue_rows"))
            .collect();
        assert_eq!(
            tail,
            [
                "# HELP millrace_serve_queue_rows Rows waiting to be batched.",
                "# TYPE millrace_serve_queue_rows gauge",
                r#"millrace_serve_queue_rows{model="churn"} 7"#,
                "# HELP millrace_serve_model_version Version of the model being served.",
                "# TYPE millrace_serve_model_version gauge",
                r#"millrace_serve_model_version{model="churn"} 4"#,
                "# HELP millrace_serve_in_flight_requests Requests being answered now.",
                "# TYPE millrace_serve_in_flight_requests gauge",
                "millrace_serve_in_flight_requests 1",
            ]
        );
        assert!(text.contains("# TYPE millrace_serve_requests_total counter\n"));
        assert!(text.contains("# TYPE millrace_serve_request_duration_seconds histogram\n"));
        assert!(text.contains("# TYPE millrace_serve_batch_rows histogram\n"));
    }

    #[test]
    fn empty_metrics_and_escaping() {
        let m = ServeMetrics::default();
        let text = m.render();
        assert_eq!(text.lines().filter(|l| l.starts_with("# TYPE")).count(), 6);
        assert_eq!(
            lines_of(&text, "millrace_serve_in_flight_requests"),
            ["millrace_serve_in_flight_requests 0"]
        );
        m.set_model_version("a\"b\\c\nd", 2);
        assert!(
            m.render()
                .contains(r#"millrace_serve_model_version{model="a\"b\\c\nd"} 2"#)
        );
    }

    #[test]
    fn concurrent_observations_add_up() {
        let m = Arc::new(ServeMetrics::new());
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let m = Arc::clone(&m);
                std::thread::spawn(move || {
                    for i in 0..1000u64 {
                        let model = if i % 2 == 0 { "a" } else { "b" };
                        let status = if t % 2 == 0 { 200 } else { 503 };
                        m.inc_in_flight();
                        m.observe_request("v2_infer", model, status, Duration::from_micros(i));
                        m.observe_batch(model, 3);
                        m.dec_in_flight();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let text = m.render();
        for model in ["a", "b"] {
            for code in [200, 503] {
                assert!(text.contains(&format!(
                    "millrace_serve_requests_total{{route=\"v2_infer\",model=\"{model}\",code=\"{code}\"}} 2000\n"
                )));
            }
            assert!(text.contains(&format!(
                "millrace_serve_request_duration_seconds_count{{route=\"v2_infer\",model=\"{model}\"}} 4000\n"
            )));
            assert!(text.contains(&format!(
                "millrace_serve_batch_rows_bucket{{model=\"{model}\",le=\"4\"}} 4000\n"
            )));
            assert!(text.contains(&format!(
                "millrace_serve_batch_rows_sum{{model=\"{model}\"}} 12000\n"
            )));
        }
        // Even i (model a): 0, 2, …, 998 µs per thread → 8 × 249_500 µs = 1.996 s.
        assert!(text.contains(
            "millrace_serve_request_duration_seconds_sum{route=\"v2_infer\",model=\"a\"} 1.996\n"
        ));
        assert!(text.contains("millrace_serve_in_flight_requests 0\n"));
    }
}
