//! Prequential (test-then-train) evaluation: every record is scored by the model before the model
//! trains on it, and the metrics cover a sliding window of the most recent records.
//!
//! The window is kept as per-step totals over all workers (every worker sees the same totals after
//! the step's exchange), so all workers agree on the metrics and the state fits in a checkpoint.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// One step's totals over all workers.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct StepScore {
    /// Records scored.
    pub rows: u64,
    /// Classification: records whose most likely class was right.
    pub correct: u64,
    /// Classification: summed negative log-likelihood of the true class; regression: summed
    /// squared error.
    pub loss_sum: f64,
    /// Regression: summed absolute error.
    pub abs_sum: f64,
}

impl StepScore {
    /// Adds `other` to these totals.
    pub fn add(&mut self, other: &StepScore) {
        self.rows += other.rows;
        self.correct += other.correct;
        self.loss_sum += other.loss_sum;
        self.abs_sum += other.abs_sum;
    }
}

/// The sliding window of step totals.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct PrequentialState {
    steps: VecDeque<StepScore>,
    total: StepScore,
    /// Records scored since the job began (not only in the window).
    pub scored: u64,
}

/// Metrics over the window.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PrequentialMetrics {
    /// Records in the window.
    pub rows: u64,
    /// Classification accuracy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    /// Classification mean log loss.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_loss: Option<f64>,
    /// Regression root mean squared error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rmse: Option<f64>,
    /// Regression mean absolute error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mae: Option<f64>,
}

impl PrequentialState {
    /// Adds a step's totals, dropping the oldest steps while the rest still cover `window`
    /// records.
    pub fn push(&mut self, step: StepScore, window: u64) {
        if step.rows == 0 {
            return;
        }
        self.scored += step.rows;
        self.total.add(&step);
        self.steps.push_back(step);
        while let Some(front) = self.steps.front().copied() {
            if self.total.rows - front.rows < window {
                break;
            }
            self.steps.pop_front();
            self.total.rows -= front.rows;
            self.total.correct -= front.correct;
            self.total.loss_sum -= front.loss_sum;
            self.total.abs_sum -= front.abs_sum;
        }
    }

    /// The window's metrics; `None` before any record was scored.
    pub fn metrics(&self, classification: bool) -> Option<PrequentialMetrics> {
        let t = &self.total;
        if t.rows == 0 {
            return None;
        }
        let n = t.rows as f64;
        Some(if classification {
            PrequentialMetrics {
                rows: t.rows,
                accuracy: Some(t.correct as f64 / n),
                log_loss: Some(t.loss_sum / n),
                rmse: None,
                mae: None,
            }
        } else {
            PrequentialMetrics {
                rows: t.rows,
                accuracy: None,
                log_loss: None,
                rmse: Some((t.loss_sum / n).max(0.0).sqrt()),
                mae: Some(t.abs_sum / n),
            }
        })
    }
}

/// Scores `rows` predictions against their targets: `predictions` are class probabilities
/// (`rows × classes`) for classification, values for regression.
pub fn score(predictions: &[f32], classes: Option<&[i64]>, values: Option<&[f32]>) -> StepScore {
    let mut s = StepScore::default();
    match (classes, values) {
        (Some(classes), _) if !classes.is_empty() => {
            let k = predictions.len() / classes.len();
            for (row, &class) in classes.iter().enumerate() {
                let p = &predictions[row * k..(row + 1) * k];
                let best = crate::serve::argmax(p);
                s.rows += 1;
                s.correct += u64::from(best as i64 == class);
                let truth = usize::try_from(class)
                    .ok()
                    .and_then(|c| p.get(c))
                    .copied()
                    .unwrap_or(0.0);
                s.loss_sum += -f64::from(truth.max(1e-7)).ln();
            }
        }
        (_, Some(values)) => {
            for (p, y) in predictions.iter().zip(values) {
                let e = f64::from(*p) - f64::from(*y);
                s.rows += 1;
                s.loss_sum += e * e;
                s.abs_sum += e.abs();
            }
        }
        _ => {}
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_keeps_the_newest_records() {
        let mut state = PrequentialState::default();
        for i in 0..10u64 {
            state.push(
                StepScore {
                    rows: 10,
                    correct: i,
                    loss_sum: 1.0,
                    abs_sum: 0.0,
                },
                25,
            );
        }
        // Steps 7, 8, 9 cover 30 ≥ 25 rows; dropping step 7 would leave 20 < 25.
        let m = state.metrics(true).unwrap();
        assert_eq!(m.rows, 30);
        assert_eq!(m.accuracy, Some((7 + 8 + 9) as f64 / 30.0));
        assert_eq!(state.scored, 100);
    }

    #[test]
    fn scores_classes_and_values() {
        let s = score(&[0.9, 0.1, 0.2, 0.8, 0.6, 0.4], Some(&[0, 1, 1]), None);
        assert_eq!((s.rows, s.correct), (3, 2));
        let expected = -(0.9f32.ln() + 0.8f32.ln() + 0.4f32.ln()) as f64;
        assert!((s.loss_sum - expected).abs() < 1e-5);
        let r = score(&[1.0, 3.0], None, Some(&[2.0, 3.0]));
        assert_eq!((r.rows, r.loss_sum, r.abs_sum), (2, 1.0, 1.0));
    }
}
