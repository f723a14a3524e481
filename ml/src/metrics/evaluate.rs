//! [`EvalMetrics`] and the functions that compute them.

use serde::{Deserialize, Serialize};

use super::auc::roc_auc;

/// Evaluation results for one model on one data set.
///
/// Serialised untagged: the field names tell the two kinds apart.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(untagged)]
pub enum EvalMetrics {
    /// Classification metrics.
    Classification {
        /// Rows evaluated.
        rows: u64,
        /// Fraction of rows whose most probable class is the label.
        accuracy: f64,
        /// Mean negative log-likelihood of the label (probabilities clipped to `[1e-15, 1-1e-15]`).
        log_loss: f64,
        /// ROC AUC: of class 1 for binary, macro one-vs-rest for more classes
        /// (classes without both positives and negatives are left out; `NaN` if none remain).
        roc_auc: f64,
    },
    /// Regression metrics.
    Regression {
        /// Rows evaluated.
        rows: u64,
        /// Root mean squared error.
        rmse: f64,
        /// Mean absolute error.
        mae: f64,
        /// Coefficient of determination (1 for a perfect fit; for a constant target, 1 if the
        /// fit is perfect and 0 otherwise, as scikit-learn does).
        r2: f64,
    },
}

impl EvalMetrics {
    /// The metric to show first: `("accuracy", …)` or `("rmse", …)`.
    pub fn headline(&self) -> (&'static str, f64) {
        match self {
            EvalMetrics::Classification { accuracy, .. } => ("accuracy", *accuracy),
            EvalMetrics::Regression { rmse, .. } => ("rmse", *rmse),
        }
    }

    /// Number of rows evaluated.
    pub fn rows(&self) -> u64 {
        match self {
            EvalMetrics::Classification { rows, .. } | EvalMetrics::Regression { rows, .. } => {
                *rows
            }
        }
    }
}

const CLIP: f64 = 1e-15;

/// Classification metrics from row-major probabilities (`rows * num_classes`) and labels.
///
/// Rows are `min(labels.len(), probs.len() / num_classes)`. Accuracy takes the first class with
/// the highest probability. A label outside `0..num_classes` counts as wrong, with probability 0.
pub fn evaluate_classification(probs: &[f32], num_classes: usize, labels: &[i64]) -> EvalMetrics {
    let k = num_classes.max(1);
    let rows = labels.len().min(probs.len() / k);
    let mut correct = 0u64;
    let mut nll = 0.0f64;
    for (row, &label) in labels[..rows].iter().enumerate() {
        let p = &probs[row * k..(row + 1) * k];
        let mut best = 0;
        for c in 1..k {
            if p[c] > p[best] {
                best = c;
            }
        }
        let p_label = usize::try_from(label)
            .ok()
            .filter(|&l| l < k)
            .map_or(0.0, |l| f64::from(p[l]));
        if usize::try_from(label).ok() == Some(best) {
            correct += 1;
        }
        nll -= p_label.clamp(CLIP, 1.0 - CLIP).ln();
    }
    let n = rows as f64;
    let auc = if k == 2 {
        let scores: Vec<f32> = (0..rows).map(|r| probs[r * k + 1]).collect();
        let positive: Vec<bool> = labels[..rows].iter().map(|&l| l == 1).collect();
        roc_auc(&scores, &positive)
    } else {
        macro_auc(probs, k, &labels[..rows])
    };
    EvalMetrics::Classification {
        rows: rows as u64,
        accuracy: correct as f64 / n,
        log_loss: nll / n,
        roc_auc: auc,
    }
}

fn macro_auc(probs: &[f32], k: usize, labels: &[i64]) -> f64 {
    let rows = labels.len();
    let mut scores = vec![0.0f32; rows];
    let mut positive = vec![false; rows];
    let (mut sum, mut count) = (0.0, 0u32);
    for c in 0..k {
        for r in 0..rows {
            scores[r] = probs[r * k + c];
            positive[r] = labels[r] == c as i64;
        }
        let auc = roc_auc(&scores, &positive);
        if !auc.is_nan() {
            sum += auc;
            count += 1;
        }
    }
    if count == 0 {
        f64::NAN
    } else {
        sum / f64::from(count)
    }
}

/// Regression metrics over `min(pred.len(), target.len())` rows.
pub fn evaluate_regression(pred: &[f32], target: &[f32]) -> EvalMetrics {
    let rows = pred.len().min(target.len());
    let n = rows as f64;
    let (mut se, mut ae, mut sum_t) = (0.0f64, 0.0f64, 0.0f64);
    for (&p, &t) in pred[..rows].iter().zip(&target[..rows]) {
        let d = f64::from(p) - f64::from(t);
        se += d * d;
        ae += d.abs();
        sum_t += f64::from(t);
    }
    let mean_t = sum_t / n;
    let ss_tot: f64 = target[..rows]
        .iter()
        .map(|&t| (f64::from(t) - mean_t).powi(2))
        .sum();
    let r2 = if ss_tot > 0.0 {
        1.0 - se / ss_tot
    } else if se == 0.0 {
        1.0
    } else {
        0.0
    };
    EvalMetrics::Regression {
        rows: rows as u64,
        rmse: (se / n).sqrt(),
        mae: ae / n,
        r2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn binary_classification_by_hand() {
        // Class-1 probabilities 0.9, 0.2, 0.6, 0.4 for labels 1, 0, 0, 1.
        let probs = [0.1, 0.9, 0.8, 0.2, 0.4, 0.6, 0.6, 0.4];
        let m = evaluate_classification(&probs, 2, &[1, 0, 0, 1]);
        let EvalMetrics::Classification {
            rows,
            accuracy,
            log_loss,
            roc_auc,
        } = m
        else {
            panic!("expected classification metrics, got {m:?}");
        };
        assert_eq!(rows, 4);
        assert_eq!(accuracy, 0.5);
        let expected = -(0.9f32 as f64).ln()
            - (0.8f32 as f64).ln()
            - (0.4f32 as f64).ln()
            - (0.4f32 as f64).ln();
        assert!(close(log_loss, expected / 4.0), "{log_loss}");
        // positives {0.9, 0.4}, negatives {0.2, 0.6}: wins 0.9>0.2, 0.9>0.6, 0.4>0.2 → 3/4.
        assert_eq!(roc_auc, 0.75);
        assert_eq!(m.headline(), ("accuracy", 0.5));
    }

    #[test]
    fn log_loss_is_clipped() {
        let m = evaluate_classification(&[1.0, 0.0], 2, &[1]);
        let EvalMetrics::Classification { log_loss, .. } = m else {
            panic!("expected classification metrics");
        };
        assert!(close(log_loss, -(1e-15f64).ln()), "{log_loss}");
    }

    #[test]
    fn multiclass_macro_auc() {
        // Perfectly separated 3 classes → every one-vs-rest AUC is 1.
        let probs = [0.8, 0.1, 0.1, 0.1, 0.7, 0.2, 0.2, 0.2, 0.6];
        let m = evaluate_classification(&probs, 3, &[0, 1, 2]);
        assert_eq!(
            m,
            EvalMetrics::Classification {
                rows: 3,
                accuracy: 1.0,
                log_loss: -((0.8f32 as f64).ln() + (0.7f32 as f64).ln() + (0.6f32 as f64).ln())
                    / 3.0,
                roc_auc: 1.0
            }
        );
    }

    #[test]
    fn regression_by_hand() {
        let m = evaluate_regression(&[1.0, 2.0, 3.0, 5.0], &[1.0, 2.0, 4.0, 3.0]);
        // errors 0, 0, -1, 2: mse = 5/4, mae = 3/4; mean target 2.5, ss_tot = 2.25+0.25+2.25+0.25 = 5.
        assert_eq!(
            m,
            EvalMetrics::Regression {
                rows: 4,
                rmse: (1.25f64).sqrt(),
                mae: 0.75,
                r2: 1.0 - 5.0 / 5.0
            }
        );
        assert_eq!(m.headline().0, "rmse");
        let perfect = evaluate_regression(&[2.0, 2.0], &[2.0, 2.0]);
        assert!(matches!(perfect, EvalMetrics::Regression { r2, .. } if r2 == 1.0));
    }

    #[test]
    fn serde_untagged_round_trip() -> Result<(), serde_json::Error> {
        let m = evaluate_regression(&[1.0, 2.0], &[1.5, 2.0]);
        let json = serde_json::to_string(&m)?;
        assert!(json.starts_with(r#"{"rows":2,"rmse""#), "{json}");
        assert_eq!(serde_json::from_str::<EvalMetrics>(&json)?, m);
        Ok(())
    }
}
