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
use millrace_ml::preprocess::FittedPreprocessor;

use super::batcher::{BatchError, BatchRunner, split_rows};
use super::forward::Forward;
use super::protocol::v2::fast::Columns;
use crate::preprocess::CompiledSql;

/// Raw rows → predictions: the served model's whole per-batch computation.
pub(crate) struct Pipeline {
    pub(crate) input_schema: SchemaRef,
    pub(crate) sql: Option<CompiledSql>,
    /// The user's SQL, for error messages.
    pub(crate) user_sql: Option<String>,
    pub(crate) preprocess: FittedPreprocessor,
    pub(crate) predictor: Forward,
    /// Features filled in from a feature view's store before the SQL.
    pub(crate) fill: Option<super::fill::FeatureFill>,
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
        let filled;
        let raw = match &self.fill {
            Some(fill) => {
                filled = fill.fill(raw).map_err(BatchError::Rejected)?;
                &filled
            }
            None => raw,
        };
        let prepared = match &self.sql {
            Some(sql) => {
                let out = sql.apply(raw).map_err(BatchError::Rejected)?;
                if out.num_rows() != rows {
                    let steps = sql.step_names();
                    let steps = if steps.is_empty() {
                        String::new()
                    } else {
                        format!(
                            " or its steps ({})",
                            steps
                                .before
                                .iter()
                                .chain(&steps.after)
                                .cloned()
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    };
                    return Err(BatchError::Rejected(format!(
                        "{} of {rows} instances were filtered out by the model's preprocess SQL ({}){steps}; send only rows it keeps",
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
        // Bodies are decoded first, all into one set of column buffers; one that is not of the
        // common form (or holds another number of rows than its caller saw) goes back to its
        // caller for the general path.
        let mut answers: Vec<Option<Result<Vec<f32>, BatchError>>> =
            (0..inputs.len()).map(|_| None).collect();
        let mut bodies = Columns::new(&self.input_schema, rows.iter().sum());
        let (mut parts, mut index, mut kept_rows) = (Vec::new(), Vec::new(), Vec::new());
        let mut body_rows = 0;
        for (i, (input, &n)) in inputs.into_iter().zip(rows).enumerate() {
            let part = match input {
                RawInput::Batch(b) => Some(Part::Batch(b)),
                RawInput::V2Body(body) => bodies
                    .as_mut()
                    .and_then(|c| c.append(&body, n, true))
                    .map(|_| {
                        body_rows += n;
                        Part::Body(body_rows - n)
                    }),
            };
            match part {
                Some(p) => {
                    parts.push(p);
                    index.push(i);
                    kept_rows.push(n);
                }
                None => answers[i] = Some(Err(BatchError::Fallback)),
            }
        }
        if !parts.is_empty() {
            let decoded = bodies.and_then(Columns::finish);
            for (i, answer) in index
                .into_iter()
                .zip(self.run_parts(parts, decoded, &kept_rows))
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

/// One request of a batch: its own rows, or where its decoded body starts among the bodies'.
enum Part {
    Batch(RecordBatch),
    Body(usize),
}

impl Pipeline {
    /// Runs the requests' rows as one merged batch (the bodies' rows are already one).
    fn run_parts(
        &self,
        parts: Vec<Part>,
        bodies: Option<RecordBatch>,
        rows: &[usize],
    ) -> Vec<Result<Vec<f32>, BatchError>> {
        let merged = match (&bodies, parts.iter().all(|p| matches!(p, Part::Body(_)))) {
            (Some(b), true) => Ok(b.clone()),
            _ => {
                let batches: Option<Vec<RecordBatch>> = parts
                    .into_iter()
                    .zip(rows)
                    .map(|(p, &n)| match p {
                        Part::Batch(b) => Some(b),
                        Part::Body(at) => bodies.as_ref().map(|b| b.slice(at, n)),
                    })
                    .collect();
                concat_batches(&self.input_schema, batches.iter().flatten()).map_err(|e| {
                    BatchError::Failed(format!("cannot merge requests into a batch: {e}"))
                })
            }
        };
        match merged {
            Ok(merged) => self.run_merged(&merged, rows),
            Err(e) => rows.iter().map(|_| Err(e.clone())).collect(),
        }
    }

    /// Runs `merged`, the rows of requests of `rows` rows each, in one pass; when some request's
    /// rows are at fault, each request on its own.
    fn run_merged(
        &self,
        merged: &RecordBatch,
        rows: &[usize],
    ) -> Vec<Result<Vec<f32>, BatchError>> {
        if rows.len() == 1 {
            return vec![self.run_one(merged)];
        }
        let total = merged.num_rows();
        match self.features(merged, total) {
            Ok(x) => match self.predictor.predict(&x, total) {
                Ok(out) => split_rows(out, rows, self.output_dim()),
                Err(e) => {
                    let message = e.to_string();
                    rows.iter()
                        .map(|_| Err(BatchError::Failed(message.clone())))
                        .collect()
                }
            },
            Err(_) => {
                let mut at = 0;
                rows.iter()
                    .map(|&n| {
                        at += n;
                        self.run_one(&merged.slice(at - n, n))
                    })
                    .collect()
            }
        }
    }
}
