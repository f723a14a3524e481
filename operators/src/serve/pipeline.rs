//! What a served model's inference thread runs for a batch of requests: the bundled SQL, the
//! fitted encoding and the forward pass, once over all the batch's raw rows.
//!
//! The I/O threads only parse each request into an Arrow batch of the model's input schema; the
//! rest (concatenation, preprocessing, prediction) runs here, off the I/O threads and once per
//! batch rather than once per request. When the merged run finds a problem with some rows (a
//! value the encoding rejects, rows the SQL filters out, a SQL error), every request of the batch
//! is run again on its own, so each caller gets the answer, or the error naming its own
//! instance, it would have got alone.

use arrow::array::RecordBatch;
use arrow::compute::concat_batches;
use arrow::datatypes::SchemaRef;
use millrace_ml::bundle::DensePredictor;
use millrace_ml::preprocess::FittedPreprocessor;

use super::batcher::{BatchError, BatchRunner, split_rows};
use crate::preprocess::CompiledSql;

/// Raw rows → predictions: the served model's whole per-batch computation.
pub(crate) struct Pipeline {
    pub(crate) input_schema: SchemaRef,
    pub(crate) sql: Option<CompiledSql>,
    /// The user's SQL, for error messages.
    pub(crate) user_sql: Option<String>,
    pub(crate) preprocess: FittedPreprocessor,
    pub(crate) predictor: DensePredictor,
}

impl Pipeline {
    /// Runs one request's (or one merged batch's) rows end to end.
    fn run_one(&self, raw: &RecordBatch) -> Result<Vec<f32>, BatchError> {
        let rows = raw.num_rows();
        let features = self.features(raw, rows)?;
        self.predictor
            .predict(&features, rows)
            .map_err(|e| BatchError::Failed(e.to_string()))
    }

    /// The feature rows of `raw`, or the first problem with them, naming the instance.
    fn features(&self, raw: &RecordBatch, rows: usize) -> Result<Vec<f32>, BatchError> {
        let prepared = match &self.sql {
            Some(sql) => {
                let out = sql.apply(raw).map_err(BatchError::Rejected)?;
                if out.num_rows() != rows {
                    return Err(BatchError::Rejected(format!(
                        "{} of {rows} instances were filtered out by the model's preprocess SQL ({}); send only rows it keeps",
                        rows - out.num_rows(),
                        self.user_sql.as_deref().unwrap_or("")
                    )));
                }
                out
            }
            None => raw.clone(),
        };
        let features = self
            .preprocess
            .transform(&prepared, false)
            .map_err(|e| BatchError::Rejected(e.to_string()))?;
        if let Some(bad) = features.rejected.first() {
            return Err(BatchError::Rejected(format!(
                "instances[{}].{}: {}",
                bad.row, bad.column, bad.reason
            )));
        }
        Ok(features.x)
    }
}

/// What a request hands the inference thread: rows already in Arrow, or a KServe v2 JSON body to
/// decode here (off the I/O thread), once per batch.
pub(crate) enum RawInput {
    /// Rows of the model's input schema.
    Batch(RecordBatch),
    /// A v2 JSON body of the common form, expected to hold this many rows.
    V2Body(axum::body::Bytes),
}

impl BatchRunner for Pipeline {
    type Input = RawInput;

    fn output_dim(&self) -> usize {
        self.predictor.output_dim()
    }

    fn run(&self, inputs: Vec<RawInput>, rows: &[usize]) -> Vec<Result<Vec<f32>, BatchError>> {
        // Bodies are decoded first; one that is not of the common form (or holds another number
        // of rows than its caller saw) goes back to the caller for the general path.
        let mut answers: Vec<Option<Result<Vec<f32>, BatchError>>> =
            (0..inputs.len()).map(|_| None).collect();
        let (mut batches, mut index, mut batch_rows) = (Vec::new(), Vec::new(), Vec::new());
        for (i, (input, &n)) in inputs.into_iter().zip(rows).enumerate() {
            let batch = match input {
                RawInput::Batch(b) => Some(b),
                RawInput::V2Body(body) => super::v2_fast::decode(&body, &self.input_schema, n)
                    .map(|(b, _)| b)
                    .filter(|b| b.num_rows() == n),
            };
            match batch {
                Some(b) => {
                    batches.push(b);
                    index.push(i);
                    batch_rows.push(n);
                }
                None => answers[i] = Some(Err(BatchError::Fallback)),
            }
        }
        if !batches.is_empty() {
            for (i, answer) in index
                .into_iter()
                .zip(self.run_batches(batches, &batch_rows))
            {
                answers[i] = Some(answer);
            }
        }
        answers
            .into_iter()
            .map(|a| a.unwrap_or(Err(BatchError::Fallback)))
            .collect()
    }
}

impl Pipeline {
    fn run_batches(
        &self,
        inputs: Vec<RecordBatch>,
        rows: &[usize],
    ) -> Vec<Result<Vec<f32>, BatchError>> {
        if let [only] = inputs.as_slice() {
            return vec![self.run_one(only)];
        }
        let total: usize = rows.iter().sum();
        let merged = concat_batches(&self.input_schema, &inputs)
            .map_err(|e| BatchError::Failed(format!("cannot merge requests into a batch: {e}")));
        let features = merged.and_then(|raw| self.features(&raw, total));
        match features {
            Ok(x) => match self.predictor.predict(&x, total) {
                Ok(out) => split_rows(out, rows, self.output_dim()),
                Err(e) => {
                    let message = e.to_string();
                    (0..inputs.len())
                        .map(|_| Err(BatchError::Failed(message.clone())))
                        .collect()
                }
            },
            // Some request's rows are at fault: answer each request on its own.
            Err(_) => inputs.iter().map(|raw| self.run_one(raw)).collect(),
        }
    }
}
