//! One worker's scorer: raw rows → the bundle's preprocessing and forward pass → output rows (the
//! carried input columns next to the prediction), with every row it cannot score named as a dead
//! letter. It runs what the server runs for a request (the compiled SQL with its steps, the fitted
//! encoding, the same forward pass), so both give the same answers for the same rows.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, Float32Array, Int64Array, ListArray, RecordBatch, StringArray, UInt32Array,
};
use arrow::buffer::OffsetBuffer;
use arrow::compute::kernels::cast::{CastOptions, cast_with_options};
use arrow::compute::{concat_batches, take};
use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use millrace_engine::{Batch, DeadLetter, Emit, row_to_json};
use millrace_ml::bundle::ModelBundle;
use millrace_ml::preprocess::FittedPreprocessor;

use crate::preprocess::CompiledSql;
use crate::serve::{Forward, ForwardDevice, argmax, compiled_bundle_sql};
use crate::{Error, Result};

/// The operator name dead letters of scoring carry.
pub(super) const OPERATOR: &str = "predict/score";

/// The prediction columns of a model's output, after the carried input columns: `class` and
/// `probabilities` for a classifier (as the server's KServe v2 outputs), `value` for regression.
pub(super) fn prediction_fields(preprocess: &FittedPreprocessor) -> Vec<Field> {
    match preprocess.num_classes() {
        Some(_) => vec![
            match preprocess.class_names() {
                Some(_) => Field::new("class", DataType::Utf8, true),
                None => Field::new("class", DataType::Int64, false),
            },
            Field::new(
                "probabilities",
                DataType::List(Arc::new(Field::new_list_field(DataType::Float32, false))),
                false,
            ),
        ],
        None => vec![Field::new("value", DataType::Float32, false)],
    }
}

/// Raw rows → output rows, on one worker.
pub(super) struct Scorer {
    /// The raw columns the model reads, with the types it was trained on.
    input: SchemaRef,
    sql: Option<CompiledSql>,
    /// The user's query, for the reason of a row it filters out.
    user_sql: Option<String>,
    preprocess: FittedPreprocessor,
    forward: Forward,
    class_names: Option<Vec<String>>,
    /// Input columns copied to the output, by name.
    carry: Vec<String>,
    output: SchemaRef,
}

/// What scoring some rows gave: the output rows and, by input row, those that could not be scored.
struct Scored {
    out: RecordBatch,
    dead: Vec<(usize, String)>,
}

impl Scorer {
    /// The scorer of `bundle`, copying `carry` and writing `output` (the plan's output schema).
    pub(super) fn new(bundle: &ModelBundle, carry: &[String], output: SchemaRef) -> Result<Self> {
        let name = &bundle.meta.name;
        let (input, sql, user_sql) = compiled_bundle_sql(bundle, name)?;
        let forward = Forward::new(bundle, &ForwardDevice::default())?;
        Ok(Scorer {
            input,
            sql,
            user_sql,
            preprocess: bundle.preprocess.clone(),
            forward,
            class_names: bundle.preprocess.class_names(),
            carry: carry.to_vec(),
            output,
        })
    }

    /// Scores one batch: its scored rows go on, each row it cannot score is a dead letter with
    /// the reason. A batch-level failure (a SQL error, a cast that fails) is retried row by row,
    /// so only the rows at fault are lost.
    pub(super) fn score(&self, batch: Batch, emit: &mut Emit) {
        let origin = batch.origin.as_deref().map(str::to_string);
        let raw = &batch.data;
        let scored = match self.score_rows(raw) {
            Ok(scored) => scored,
            Err(_) if raw.num_rows() > 1 => self.row_by_row(raw),
            Err(reason) => Scored {
                out: RecordBatch::new_empty(Arc::clone(&self.output)),
                dead: vec![(0, reason)],
            },
        };
        for (row, reason) in scored.dead {
            emit.dead(DeadLetter {
                operator: OPERATOR.to_string(),
                reason,
                origin: origin.clone(),
                record: row_to_json(raw, row),
                rows: 1,
            });
        }
        emit.batch(Batch {
            data: scored.out,
            origin: batch.origin,
        });
    }

    /// Each row of `raw` scored alone, the scored ones in one batch.
    fn row_by_row(&self, raw: &RecordBatch) -> Scored {
        let mut parts = Vec::new();
        let mut dead = Vec::new();
        for row in 0..raw.num_rows() {
            match self.score_rows(&raw.slice(row, 1)) {
                Ok(scored) => {
                    parts.push(scored.out);
                    dead.extend(scored.dead.into_iter().map(|(_, r)| (row, r)));
                }
                Err(reason) => dead.push((row, reason)),
            }
        }
        let out = concat_batches(&self.output, &parts)
            .unwrap_or_else(|_| RecordBatch::new_empty(Arc::clone(&self.output)));
        Scored { out, dead }
    }

    /// Scores `raw`, or fails as a whole with the reason.
    fn score_rows(&self, raw: &RecordBatch) -> std::result::Result<Scored, String> {
        let conformed = self.conform(raw)?;
        let (prepared, rows_of) = match &self.sql {
            Some(sql) => sql.apply_tracked(&conformed)?,
            None => {
                let n = u32::try_from(raw.num_rows()).map_err(|e| e.to_string())?;
                (conformed, UInt32Array::from_iter_values(0..n))
            }
        };
        let features = (self.preprocess.transform(&prepared, false)).map_err(|e| e.to_string())?;
        let predictions = (self.forward.predict(&features.x, features.rows))
            .map_err(|e| format!("the forward pass failed: {e}"))?;
        // Output row i is input row `kept[i]`.
        let kept: Vec<u32> = (features.accepted.iter())
            .filter(|&&a| rows_of.is_valid(a as usize))
            .map(|&a| rows_of.value(a as usize))
            .collect();
        let mut dead = Vec::new();
        let mut seen = vec![false; raw.num_rows()];
        for &row in &kept {
            seen[row as usize] = true;
        }
        for bad in &features.rejected {
            if rows_of.is_valid(bad.row as usize) {
                let row = rows_of.value(bad.row as usize) as usize;
                seen[row] = true;
                dead.push((row, format!("column `{}`: {}", bad.column, bad.reason)));
            }
        }
        for (row, _) in seen.iter().enumerate().filter(|(_, seen)| !**seen) {
            dead.push((row, self.filtered_reason()));
        }
        dead.sort_by_key(|(row, _)| *row);
        let indices = UInt32Array::from(kept);
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.output.fields().len());
        for name in &self.carry {
            let column = raw
                .column_by_name(name)
                .ok_or_else(|| format!("the input has no column `{name}`"))?;
            columns.push(take(column, &indices, None).map_err(|e| e.to_string())?);
        }
        columns.extend(self.prediction_columns(predictions, features.rows));
        let out = RecordBatch::try_new(Arc::clone(&self.output), columns)
            .map_err(|e| format!("could not assemble the output rows: {e}"))?;
        Ok(Scored { out, dead })
    }

    fn filtered_reason(&self) -> String {
        format!(
            "filtered out by the model's preprocess SQL ({}); it cannot be scored",
            self.user_sql.as_deref().unwrap_or("its steps")
        )
    }

    /// `raw` with the model's input columns cast to the types it was trained on (a dataset may
    /// store `f0` as a double where training read a float); a value that does not fit fails.
    fn conform(&self, raw: &RecordBatch) -> std::result::Result<RecordBatch, String> {
        let schema = raw.schema();
        let mismatched = |f: &FieldRef| {
            (schema.field_with_name(f.name())).is_ok_and(|got| got.data_type() != f.data_type())
        };
        if !self.input.fields().iter().any(mismatched) {
            return Ok(raw.clone());
        }
        let options = CastOptions {
            safe: false,
            ..CastOptions::default()
        };
        let mut fields = Vec::with_capacity(schema.fields().len());
        let mut columns = Vec::with_capacity(schema.fields().len());
        for (field, column) in schema.fields().iter().zip(raw.columns()) {
            match self.input.field_with_name(field.name()) {
                Ok(want) if want.data_type() != field.data_type() => {
                    let cast =
                        cast_with_options(column, want.data_type(), &options).map_err(|e| {
                            format!(
                                "column `{}`: cannot read {} as the model's {}: {e}",
                                field.name(),
                                field.data_type(),
                                want.data_type()
                            )
                        })?;
                    fields.push(Field::new(field.name(), want.data_type().clone(), true));
                    columns.push(cast);
                }
                _ => {
                    fields.push(field.as_ref().clone());
                    columns.push(Arc::clone(column));
                }
            }
        }
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(|e| e.to_string())
    }

    /// `class` and `probabilities`, or `value`, of `rows` predicted rows.
    fn prediction_columns(&self, predictions: Vec<f32>, rows: usize) -> Vec<ArrayRef> {
        let width = self.forward.output_dim().max(1);
        if self.preprocess.num_classes().is_none() {
            return vec![Arc::new(Float32Array::from(predictions))];
        }
        let classes = predictions.chunks(width).map(argmax);
        let class: ArrayRef = match &self.class_names {
            Some(names) => Arc::new(StringArray::from_iter(
                classes.map(|c| names.get(c).map(String::as_str)),
            )),
            None => Arc::new(Int64Array::from_iter_values(classes.map(|c| c as i64))),
        };
        let item = Arc::new(Field::new_list_field(DataType::Float32, false));
        let values = Arc::new(Float32Array::from(predictions));
        let probabilities = ListArray::new(
            item,
            OffsetBuffer::from_lengths(std::iter::repeat_n(width, rows)),
            values,
            None,
        );
        vec![class, Arc::new(probabilities)]
    }
}

/// The scorer of the plan's bundle on this worker, or the error that stops the job.
pub(super) fn scorer(bundle: &ModelBundle, carry: &[String], output: &SchemaRef) -> Result<Scorer> {
    Scorer::new(bundle, carry, Arc::clone(output)).map_err(|e| match e {
        Error::Serve(m) => Error::Serve(format!("cannot score with the model: {m}")),
        other => other,
    })
}
