//! The column buffers that v2 bodies of the common form are decoded into: one growing buffer per
//! input column for a whole batch of requests, turned into Arrow arrays once, so a batch costs no
//! Arrow array per tensor per request and no concatenation. A body that fails halfway is rolled
//! back, leaving the rows of the bodies before it.

use std::sync::Arc;

use arrow::array::{ArrayRef, Float32Array, Float64Array, RecordBatch, RecordBatchOptions};
use arrow::array::{GenericStringArray, StringArray};
use arrow::buffer::{Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow::datatypes::{DataType, SchemaRef};

/// The cells of one tensor, parsed: numbers (or nulls) or strings (or nulls).
#[derive(Default)]
pub(super) struct Scratch {
    pub(super) nums: Vec<Option<f64>>,
    pub(super) strs: Vec<Option<String>>,
    /// Whether the cells are strings (`strs`) rather than numbers (`nums`).
    pub(super) is_text: bool,
}

impl Scratch {
    pub(super) fn clear(&mut self) {
        self.nums.clear();
        self.strs.clear();
        self.is_text = false;
    }

    fn len(&self) -> usize {
        if self.is_text {
            self.strs.len()
        } else {
            self.nums.len()
        }
    }
}

enum Values {
    F32(Vec<f32>),
    F64(Vec<f64>),
    Utf8 { bytes: Vec<u8>, offsets: Vec<i32> },
}

struct Column {
    values: Values,
    valid: Vec<bool>,
    nullable: bool,
}

/// A batch of requests' rows, column by column, in the model's input schema.
pub(crate) struct Columns {
    schema: SchemaRef,
    columns: Vec<Column>,
    /// Rows of the bodies appended whole.
    rows: usize,
    /// The body being appended: which columns it filled, and its rows.
    filled: Vec<bool>,
    body_rows: Option<usize>,
    pub(super) scratch: Scratch,
}

impl Columns {
    /// Buffers for `schema`; `None` when a column has a type the fast path does not decode.
    pub(crate) fn new(schema: &SchemaRef, capacity: usize) -> Option<Self> {
        let columns = schema
            .fields()
            .iter()
            .map(|field| {
                let values = match field.data_type() {
                    DataType::Float32 => Values::F32(Vec::with_capacity(capacity)),
                    DataType::Float64 => Values::F64(Vec::with_capacity(capacity)),
                    DataType::Utf8 => Values::Utf8 {
                        bytes: Vec::with_capacity(capacity * 8),
                        offsets: {
                            let mut o = Vec::with_capacity(capacity + 1);
                            o.push(0);
                            o
                        },
                    },
                    _ => return None,
                };
                Some(Column {
                    values,
                    valid: Vec::with_capacity(capacity),
                    nullable: field.is_nullable(),
                })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Columns {
            filled: vec![false; columns.len()],
            schema: Arc::clone(schema),
            columns,
            rows: 0,
            body_rows: None,
            scratch: Scratch::default(),
        })
    }

    /// Appends one body holding at most `max_rows` rows (exactly that many when `exact`): its
    /// rows and request id, or `None` (and nothing appended) when it is not of the common form.
    pub(crate) fn append(
        &mut self,
        body: &[u8],
        max_rows: usize,
        exact: bool,
    ) -> Option<(usize, Option<String>)> {
        self.filled.iter_mut().for_each(|f| *f = false);
        self.body_rows = None;
        let decoded = super::decode_into(body, self);
        let rows = self.body_rows.unwrap_or(0);
        let whole =
            self.filled.iter().all(|&f| f) && rows <= max_rows && (!exact || rows == max_rows);
        match decoded {
            Some(id) if whole => {
                self.rows += rows;
                Some((rows, id))
            }
            _ => {
                self.truncate();
                None
            }
        }
    }

    /// The rows appended so far as one batch.
    pub(crate) fn finish(self) -> Option<RecordBatch> {
        let rows = self.rows;
        let arrays = self
            .columns
            .into_iter()
            .map(|c| {
                let nulls = c
                    .valid
                    .iter()
                    .any(|v| !v)
                    .then(|| NullBuffer::from(c.valid));
                let array: ArrayRef = match c.values {
                    Values::F32(v) => Arc::new(Float32Array::new(ScalarBuffer::from(v), nulls)),
                    Values::F64(v) => Arc::new(Float64Array::new(ScalarBuffer::from(v), nulls)),
                    Values::Utf8 { bytes, offsets } => Arc::new(
                        StringArray::try_new(
                            OffsetBuffer::new(ScalarBuffer::from(offsets)),
                            Buffer::from_vec(bytes),
                            nulls,
                        )
                        .ok()?,
                    )
                        as Arc<GenericStringArray<i32>>,
                };
                Some(array)
            })
            .collect::<Option<Vec<_>>>()?;
        RecordBatch::try_new_with_options(
            self.schema,
            arrays,
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )
        .ok()
    }

    /// Puts the tensor `name` (its cells in the scratch) into its column.
    pub(super) fn put(&mut self, name: &str, datatype: &str, shape: &[i64]) -> Result<(), &str> {
        let index = self
            .schema
            .fields()
            .iter()
            .position(|f| f.name() == name)
            .ok_or("unknown input")?;
        if std::mem::replace(&mut self.filled[index], true) {
            return Err("input given twice");
        }
        let rows = self.scratch.len();
        if !matches!(shape, [n] | [n, 1] if *n == rows as i64) {
            return Err("shape");
        }
        if *self.body_rows.get_or_insert(rows) != rows {
            return Err("inputs of different lengths");
        }
        let scratch = &self.scratch;
        let column = &mut self.columns[index];
        let nulls = if scratch.is_text {
            scratch.strs.iter().any(Option::is_none)
        } else {
            scratch.nums.iter().any(Option::is_none)
        };
        if nulls && !column.nullable {
            return Err("null in a required input");
        }
        let numeric = matches!(datatype, "FP32" | "FP64" | "FP16");
        match (&mut column.values, scratch.is_text) {
            // Past f32's range the cast gives an infinity: the general path names the value.
            (Values::F32(_), false)
                if numeric
                    && scratch
                        .nums
                        .iter()
                        .flatten()
                        .any(|x| (*x as f32).is_infinite()) =>
            {
                return Err("past Float32's range");
            }
            (Values::F32(v), false) if numeric => {
                v.extend(scratch.nums.iter().map(|x| x.unwrap_or(0.0) as f32))
            }
            (Values::F64(v), false) if numeric => {
                v.extend(scratch.nums.iter().map(|x| x.unwrap_or(0.0)))
            }
            (Values::Utf8 { bytes, offsets }, true) if datatype == "BYTES" => {
                for s in &scratch.strs {
                    bytes.extend_from_slice(s.as_deref().unwrap_or("").as_bytes());
                    offsets.push(i32::try_from(bytes.len()).map_err(|_| "too much text")?);
                }
            }
            // Only nulls: parsed as numbers, fine for a text column too.
            (Values::Utf8 { bytes, offsets }, false)
                if datatype == "BYTES" && scratch.nums.iter().all(Option::is_none) =>
            {
                offsets.extend(std::iter::repeat_n(bytes.len() as i32, rows));
            }
            _ => return Err("not a fast-path type"),
        }
        if scratch.is_text {
            column
                .valid
                .extend(scratch.strs.iter().map(Option::is_some));
        } else {
            column
                .valid
                .extend(scratch.nums.iter().map(Option::is_some));
        }
        Ok(())
    }

    /// Drops whatever the current body appended.
    fn truncate(&mut self) {
        let rows = self.rows;
        for c in &mut self.columns {
            c.valid.truncate(rows);
            match &mut c.values {
                Values::F32(v) => v.truncate(rows),
                Values::F64(v) => v.truncate(rows),
                Values::Utf8 { bytes, offsets } => {
                    offsets.truncate(rows + 1);
                    bytes.truncate(offsets[rows] as usize);
                }
            }
        }
    }
}
