//! Per-column statistics of a stream of batches: the numbers behind `millrace inspect URL [--json]`.
//!
//! A [`StatsBuilder`] is fed [`RecordBatch`]es one at a time (or one builder per worker, then
//! [`StatsBuilder::merge`]d) and [`finish`](StatsBuilder::finish)es into [`DatasetStats`]: the row
//! count and, per column, the null count, min, max and (for numbers) sum. Running state is kept
//! typed per column (integers in `i128`, decimals in `i256`, timestamps as raw ticks) and only
//! rendered to JSON at the end, in the formats of [`json_value`], which match Spark's:
//!
//! | Arrow type | JSON |
//! |---|---|
//! | integers | numbers; a sum that does not fit `i64` is a string of digits |
//! | floats | numbers; `"NaN"`, `"Infinity"`, `"-Infinity"` as strings; NaN is above every number |
//! | decimal(p, s) | strings with exactly `s` fraction digits: `"-0.05"` |
//! | dates | `"YYYY-MM-DD"` (proleptic Gregorian) |
//! | timestamps | `"YYYY-MM-DDTHH:MM:SS.ffffff"`, with a `Z` when the type has a time zone |
//!
//! Types without an order here (binary, nested, intervals, ...) only get a null count.

use std::fmt::Write as _;

use arrow::array::{
    Array, ArrayRef, AsArray, PrimitiveArray, RecordBatch, downcast_integer_array,
    downcast_temporal_array,
};
use arrow::compute;
use arrow::datatypes::*;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use chrono::{DateTime, NaiveDate};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Error, Result};

mod accumulate;
mod values;

use self::accumulate::*;
use self::values::*;
pub use self::values::{json_value, spark_type_name};

/// Accumulates statistics batch by batch; mergeable across workers.
#[derive(Debug)]
pub struct StatsBuilder {
    schema: SchemaRef,
    rows: u64,
    columns: Vec<ColumnAcc>,
}

/// The statistics of a whole dataset, as `millrace inspect` prints them.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DatasetStats {
    /// How many rows were seen.
    pub rows: u64,
    /// One entry per column, in schema order.
    pub columns: Vec<ColumnStats>,
}

/// The statistics of one column.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ColumnStats {
    /// The column name.
    pub name: String,
    /// Spark-style type name: "bigint", "int", "smallint", "tinyint", "float", "double",
    /// "decimal(12,2)", "string", "boolean", "date", "timestamp" (UTC-adjusted), "timestamp_ntz",
    /// "binary", or the Arrow type's Display for others.
    pub data_type: String,
    /// Whether the schema allows nulls in this column.
    pub nullable: bool,
    /// How many values are null.
    pub nulls: u64,
    /// The smallest value; `None` when there is no non-null value or the type has no order here.
    pub min: Option<Value>,
    /// The largest value; `None` when there is no non-null value or the type has no order here.
    pub max: Option<Value>,
    /// The sum of the non-null values, for numbers only; `None` when there is no non-null value.
    pub sum: Option<Value>,
}

impl StatsBuilder {
    /// An empty builder for batches of `schema`.
    pub fn new(schema: SchemaRef) -> Self {
        let columns = schema
            .fields()
            .iter()
            .map(|f| ColumnAcc::new(f.data_type()))
            .collect();
        Self {
            schema,
            rows: 0,
            columns,
        }
    }

    /// Adds one batch. Batches must have the builder's schema (same field names and types, in
    /// order); else Err naming the first differing field.
    pub fn update(&mut self, batch: &RecordBatch) -> Result<()> {
        check_schema(&self.schema, &batch.schema(), "batch")?;
        for (acc, array) in self.columns.iter_mut().zip(batch.columns()) {
            acc.update(array.as_ref())?;
        }
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Combines another builder over the same schema (for per-worker partial stats).
    pub fn merge(&mut self, other: StatsBuilder) -> Result<()> {
        check_schema(&self.schema, &other.schema, "merged builder")?;
        for (acc, other) in self.columns.iter_mut().zip(other.columns) {
            acc.merge(other)?;
        }
        self.rows += other.rows;
        Ok(())
    }

    /// The statistics of everything seen.
    pub fn finish(self) -> DatasetStats {
        let columns = self
            .schema
            .fields()
            .iter()
            .zip(self.columns)
            .map(|(field, acc)| {
                let (min, max, sum) = acc.acc.render();
                ColumnStats {
                    name: field.name().clone(),
                    data_type: spark_type_name(field.data_type()),
                    nullable: field.is_nullable(),
                    nulls: acc.nulls,
                    min,
                    max,
                    sum,
                }
            })
            .collect();
        DatasetStats {
            rows: self.rows,
            columns,
        }
    }
}

/// Err naming the first field of `found` that differs from `expected` in name or type.
fn check_schema(expected: &Schema, found: &Schema, what: &str) -> Result<()> {
    let (e, f) = (expected.fields(), found.fields());
    let Some(i) = (0..e.len().max(f.len())).find(|&i| match (e.get(i), f.get(i)) {
        (Some(a), Some(b)) => a.name() != b.name() || !a.data_type().equals_datatype(b.data_type()),
        _ => true,
    }) else {
        return Ok(());
    };
    let describe = |field: Option<&FieldRef>| match field {
        Some(field) => format!("`{}` of type {}", field.name(), field.data_type()),
        None => "no field".to_owned(),
    };
    Err(Error::Internal(format!(
        "{what} does not match the statistics schema at field {i}: expected {}, found {} \
         ({} fields expected, {} found)",
        describe(e.get(i)),
        describe(f.get(i)),
        e.len(),
        f.len()
    )))
}

impl DatasetStats {
    /// A human-readable table: a header line with rows, then one line per column: name, type,
    /// nullable, nulls, min, max, sum (aligned columns).
    pub fn render_text(&self) -> String {
        let header = ["column", "type", "nullable", "nulls", "min", "max", "sum"].map(String::from);
        let mut table = vec![header];
        for c in &self.columns {
            table.push([
                text_cell(&c.name),
                c.data_type.clone(),
                if c.nullable { "yes" } else { "no" }.to_owned(),
                c.nulls.to_string(),
                value_cell(c.min.as_ref()),
                value_cell(c.max.as_ref()),
                value_cell(c.sum.as_ref()),
            ]);
        }
        let mut widths = [0; 7];
        for row in &table {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = format!("rows: {}, columns: {}\n", self.rows, self.columns.len());
        for row in &table {
            let mut line = String::new();
            for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
                let _ = match i {
                    0 => write!(line, "{cell:<w$}"),
                    3 => write!(line, "  {cell:>w$}"),
                    _ => write!(line, "  {cell:<w$}"),
                };
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// A value for the text table: strings without quotes, nothing as "-".
fn value_cell(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => "-".to_owned(),
        Some(Value::String(s)) => text_cell(s),
        Some(v) => v.to_string(),
    }
}

/// Text on one line and at most 40 characters: control characters escaped, the rest cut with "…".
fn text_cell(s: &str) -> String {
    const MAX: usize = 40;
    let mut escaped = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            escaped.extend(c.escape_default());
        } else {
            escaped.push(c);
        }
    }
    if escaped.chars().count() <= MAX {
        return escaped;
    }
    let mut cut: String = escaped.chars().take(MAX - 1).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests;
