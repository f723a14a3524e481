//! Fuzzing the serving decoders (issue 14 §4): `/v1/predict` bodies (fast and general path), v2
//! JSON bodies (both fast paths and the general path) and Arrow IPC bodies, each with 100,000
//! generated or mutated inputs (`MILLRACE_FUZZ_CASES`, `MILLRACE_FUZZ_SEED` change that). Every
//! input must be accepted into a well-formed batch or rejected with a message that names the
//! problem, never panic or hang, and the paths must agree wherever they both accept.

mod arrow_ipc;
mod v1;
mod v2;

use arrow::array::{Array, RecordBatch};
use arrow::datatypes::SchemaRef;

/// The most rows a request may hold in these tests (small, so that the limit is hit often).
const MAX_ROWS: usize = 6;

/// Checks `batch` is a well-formed batch of `schema`: every array valid in full (offsets, UTF-8,
/// lengths) and no null in a required column.
fn well_formed(batch: &RecordBatch, schema: &SchemaRef) -> Result<(), String> {
    if batch.schema() != *schema {
        return Err(format!("schema {:?}, not the model's", batch.schema()));
    }
    for (column, field) in batch.columns().iter().zip(schema.fields()) {
        column
            .to_data()
            .validate_full()
            .map_err(|e| format!("column {}: {e}", field.name()))?;
        if column.len() != batch.num_rows() {
            return Err(format!("column {} has {} rows", field.name(), column.len()));
        }
        if !field.is_nullable() && column.null_count() > 0 {
            return Err(format!("required column {} holds nulls", field.name()));
        }
    }
    Ok(())
}

/// Checks two batches hold the same values, bit for bit (floats included).
fn same(what: &str, got: &RecordBatch, expected: &RecordBatch) -> Result<(), String> {
    if got.num_rows() != expected.num_rows() {
        return Err(format!(
            "{what}: {} rows, the general path {}",
            got.num_rows(),
            expected.num_rows()
        ));
    }
    for (i, field) in expected.schema().fields().iter().enumerate() {
        let (a, b) = (got.column(i).to_data(), expected.column(i).to_data());
        if a != b {
            return Err(format!(
                "{what}: column {} differs: {:?} vs the general path's {:?}",
                field.name(),
                got.column(i),
                expected.column(i)
            ));
        }
    }
    Ok(())
}
