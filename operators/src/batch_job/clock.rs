//! The run's clock: it starts when the user starts waiting (the process start for `millrace
//! run`), and stops when summary.json, the last file of the run, is written. Worker 0 marks the
//! moments it passes from one phase to the next; the phases are the spans between the marks.

use std::path::PathBuf;
use std::time::Instant;

use super::summary::{Phases, Summary};
use crate::{Error, Result};

/// The moments a worker passed from one phase to the next.
#[derive(Clone, Copy, Debug)]
pub(super) struct Marks {
    /// The worker started.
    pub(super) started: Instant,
    /// Its sources were exhausted.
    pub(super) ingested: Instant,
    /// The preprocessing fit of all workers was merged.
    pub(super) fitted: Instant,
    /// Its rows were encoded.
    pub(super) encoded: Instant,
    /// Training (with its evaluations) returned.
    pub(super) trained: Instant,
    /// Seconds of the evaluations between `encoded` and `trained`.
    pub(super) eval_s: f64,
}

impl Marks {
    /// A worker's marks, all at `now` until it passes them.
    pub(super) fn new(now: Instant) -> Self {
        Marks {
            started: now,
            ingested: now,
            fitted: now,
            encoded: now,
            trained: now,
            eval_s: 0.0,
        }
    }

    /// The phases of a run whose clock ran from `start` to `stop`.
    pub(super) fn phases(&self, start: Instant, stop: Instant) -> Phases {
        let span = |from: Instant, to: Instant| to.saturating_duration_since(from).as_secs_f64();
        let training = span(self.encoded, self.trained);
        let evaluate_s = self.eval_s.clamp(0.0, training);
        Phases {
            plan_s: span(start, self.started),
            ingest_s: span(self.started, self.ingested),
            fit_s: span(self.ingested, self.fitted),
            encode_s: span(self.fitted, self.encoded),
            train_s: training - evaluate_s,
            evaluate_s,
            write_s: span(self.trained, stop),
        }
    }
}

/// A batch run whose outputs are all written but summary.json: write any files of your own
/// into the run directory (the CLI draws the curves), then call [`FinishedRun::write_summary`],
/// which stops the clock.
pub struct FinishedRun {
    pub(super) summary: Summary,
    pub(super) clock: Instant,
    pub(super) marks: Marks,
    pub(super) path: PathBuf,
}

impl FinishedRun {
    /// The summary as it stands (its times are completed by [`FinishedRun::write_summary`]).
    pub fn summary(&self) -> &Summary {
        &self.summary
    }

    /// Stops the clock, completes the summary's times and writes it as summary.json.
    pub fn write_summary(self) -> Result<Summary> {
        let FinishedRun {
            mut summary,
            clock,
            marks,
            path,
        } = self;
        let stop = Instant::now();
        let phases = marks.phases(clock, stop);
        summary.wall_s = stop.saturating_duration_since(clock).as_secs_f64();
        summary.ingest_s = phases.ingest_s + phases.fit_s + phases.encode_s;
        summary.e2e_rows_per_s = summary.rows_read as f64 / summary.wall_s.max(1e-9);
        summary.phases = phases;
        let text =
            serde_json::to_string_pretty(&summary).map_err(|e| Error::Internal(e.to_string()))?;
        std::fs::write(&path, text + "\n").map_err(|e| Error::io(&path, e))?;
        Ok(summary)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn phases_are_the_spans_between_the_marks_and_add_up_to_the_clock() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let marks = Marks {
            started: at(100),
            ingested: at(300),
            fitted: at(350),
            encoded: at(400),
            trained: at(1400),
            eval_s: 0.25,
        };
        let p = marks.phases(start, at(1500));
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
        assert!(close(p.plan_s, 0.1), "{p:?}");
        assert!(close(p.ingest_s, 0.2), "{p:?}");
        assert!(close(p.fit_s, 0.05), "{p:?}");
        assert!(close(p.encode_s, 0.05), "{p:?}");
        assert!(close(p.train_s, 0.75), "{p:?}");
        assert!(close(p.evaluate_s, 0.25), "{p:?}");
        assert!(close(p.write_s, 0.1), "{p:?}");
        assert!(close(p.total_s(), 1.5), "{p:?}");
        // Evaluation never exceeds the span it happened in; a clock started late counts 0.
        let marks = Marks {
            eval_s: 5.0,
            ..marks
        };
        let p = marks.phases(at(200), at(1500));
        assert!(close(p.evaluate_s, 1.0) && close(p.train_s, 0.0), "{p:?}");
        assert_eq!(p.plan_s, 0.0);
    }
}
