//! Evaluate: metrics of the current model on the eval rows of every worker.
//!
//! Each worker predicts its own eval rows; the predictions and labels are gathered through the
//! dataflow so every worker computes the same, exact metrics (ROC AUC needs all the scores).

use millrace_ml::Replica;
use millrace_ml::metrics::{EvalMetrics, evaluate_classification, evaluate_regression};
use millrace_ml::preprocess::{Features, Targets};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Rows predicted per call, to bound memory.
const PREDICT_CHUNK: usize = 65_536;

/// One worker's predictions and labels, gathered by every worker.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Shard {
    predictions: Vec<f32>,
    classes: Vec<i64>,
    values: Vec<f32>,
}

/// Evaluates a model on this worker's eval rows, together with the other workers: each predicts
/// its own rows ([`Evaluator::shard`]), the training loop gathers the shards, and every worker
/// computes the same metrics from all of them ([`Evaluator::metrics`]).
pub struct Evaluator {
    eval: Option<Features>,
    num_classes: Option<usize>,
}

impl Evaluator {
    /// An evaluator over `eval` (None when the run has no eval rows on any worker). Every worker
    /// must create it with `eval` either present on all workers or on none.
    pub fn new(eval: Option<Features>, num_classes: Option<usize>) -> Self {
        Evaluator { eval, num_classes }
    }

    /// Predictions of `trainer` for `features`, in chunks.
    pub fn predict_all(trainer: &Replica, features: &Features) -> Result<Vec<f32>> {
        let dim = features.x.len().checked_div(features.rows).unwrap_or(0);
        let mut out = Vec::new();
        let mut start = 0;
        while start < features.rows {
            let end = (start + PREDICT_CHUNK).min(features.rows);
            out.extend(trainer.predict(&features.x[start * dim..end * dim], end - start)?);
            start = end;
        }
        Ok(out)
    }

    /// This worker's predictions of `trainer` and labels (None when the run has no eval rows:
    /// then no worker has any and nothing is gathered).
    pub(crate) fn shard(&self, trainer: &Replica) -> Result<Option<Shard>> {
        let Some(eval) = &self.eval else {
            return Ok(None);
        };
        let mut shard = Shard {
            predictions: Self::predict_all(trainer, eval)?,
            ..Shard::default()
        };
        match &eval.y {
            Some(Targets::Classes(c)) => shard.classes = c.clone(),
            Some(Targets::Values(v)) => shard.values = v.clone(),
            None => return Err(Error::Internal("eval features have no labels".into())),
        }
        Ok(Some(shard))
    }

    /// The metrics over every worker's shard, in worker order (None when there are no rows).
    pub(crate) fn metrics(&self, shards: Vec<Shard>) -> Option<EvalMetrics> {
        let mut all = Shard::default();
        for s in shards {
            all.predictions.extend(s.predictions);
            all.classes.extend(s.classes);
            all.values.extend(s.values);
        }
        if all.predictions.is_empty() {
            return None;
        }
        Some(match self.num_classes {
            Some(k) => evaluate_classification(&all.predictions, k, &all.classes),
            None => evaluate_regression(&all.predictions, &all.values),
        })
    }
}
