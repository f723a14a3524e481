//! Evaluate: metrics of the current model on the eval rows of every worker.
//!
//! Each worker predicts its own eval rows; the predictions and labels are gathered through the
//! dataflow so every worker computes the same, exact metrics (ROC AUC needs all the scores).

use millrace_engine::timely::worker::Worker;
use millrace_engine::{Collective, WorkerContext};
use millrace_ml::Replica;
use millrace_ml::metrics::{EvalMetrics, evaluate_classification, evaluate_regression};
use millrace_ml::preprocess::{Features, Targets};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Rows predicted per call, to bound memory.
const PREDICT_CHUNK: usize = 65_536;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Shard {
    predictions: Vec<f32>,
    classes: Vec<i64>,
    values: Vec<f32>,
}

/// Evaluates a model on this worker's eval rows, together with the other workers.
pub struct Evaluator {
    eval: Option<Features>,
    channel: Option<Collective<Shard>>,
    num_classes: Option<usize>,
}

impl Evaluator {
    /// An evaluator over `eval` (None when the run has no eval rows on any worker). Every worker must
    /// create it at the same point, with `eval` either present on all workers or on none.
    pub fn new(worker: &mut Worker, eval: Option<Features>, num_classes: Option<usize>) -> Self {
        let channel = eval
            .as_ref()
            .map(|_| Collective::new(worker, "evaluate/gather"));
        Evaluator {
            eval,
            channel,
            num_classes,
        }
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

    /// The metrics of `trainer` over all workers' eval rows (None when there are none).
    pub fn evaluate(
        &mut self,
        worker: &mut Worker,
        ctx: &WorkerContext,
        trainer: &Replica,
    ) -> Result<Option<EvalMetrics>> {
        let (Some(eval), Some(channel)) = (&self.eval, &mut self.channel) else {
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
        let shards = channel.all_gather(worker, ctx, shard)?;
        let mut all = Shard::default();
        for s in shards {
            all.predictions.extend(s.predictions);
            all.classes.extend(s.classes);
            all.values.extend(s.values);
        }
        if all.predictions.is_empty() {
            return Ok(None);
        }
        Ok(Some(match self.num_classes {
            Some(k) => evaluate_classification(&all.predictions, k, &all.classes),
            None => evaluate_regression(&all.predictions, &all.values),
        }))
    }
}
