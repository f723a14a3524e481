//! [`FittedPreprocessor::transform`]: Arrow batch → dense features, column at a time.
//!
//! Every row is written into the output first; rejected rows are marked (with the first column
//! that failed) and compacted away at the end, so the common all-good batch is one pass per
//! column with no per-row allocation.

use arrow::array::Array;
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;

use super::columns::{
    NUMERIC, STRING, column, is_numeric, is_string, map_str, type_error, visit_f64, visit_i64,
};
use super::features::{Features, RowError, Targets};
use super::fitted::{FittedPreprocessor, LabelInfo, SequenceEncoding};
use super::lists::{Element, LIST, last, list_element, list_rows};
use super::spec::NullPolicy;
use crate::error::{Error, Result};

const NULL: u32 = u32::MAX;

/// Rows written per block (24 features × 2048 rows × 4 bytes ≈ 200 KB of output).
const BLOCK_ROWS: usize = 2048;

/// Rejection bookkeeping: the first reason per row wins (columns are visited in order).
struct Rejects {
    bad: Vec<bool>,
    errors: Vec<RowError>,
}

impl Rejects {
    fn reject(&mut self, row: usize, column: &str, reason: impl FnOnce() -> String) {
        if !self.bad[row] {
            self.bad[row] = true;
            self.errors.push(RowError {
                row: row as u32,
                column: column.to_string(),
                reason: reason(),
            });
        }
    }
}

impl FittedPreprocessor {
    /// Turns `batch` into features (and targets if `with_label`).
    ///
    /// Rows with a null/NaN feature under `nulls: dead_letter`, a null label, a class outside
    /// `0..num_classes` or an unseen string class are *rejected* (listed in
    /// [`Features::rejected`]), not errors. A missing column or a column of the wrong type is an
    /// error.
    pub fn transform(&self, batch: &RecordBatch, with_label: bool) -> Result<Features> {
        let n = batch.num_rows();
        if u32::try_from(n).is_err() {
            return Err(Error::Input(format!(
                "batch of {n} rows is too large (max {})",
                u32::MAX
            )));
        }
        let spec = &self.spec;
        let dim = self.input_dim();
        let policy = spec.nulls;
        let mut x = vec![0.0f32; n * dim];
        let mut rej = Rejects {
            bad: vec![false; n],
            errors: Vec::new(),
        };

        // Resolve and type-check every column before writing anything.
        let n_std = spec.standardize.len();
        let mut numeric = Vec::with_capacity(n_std + spec.numeric.len());
        for (off, name) in spec.standardize.iter().chain(&spec.numeric).enumerate() {
            let array = column(batch, name)?;
            if !is_numeric(array.data_type()) {
                return Err(type_error(name, NUMERIC, array.data_type()));
            }
            let (shift, scale, mean) = if off < n_std {
                let m = &self.standardize[off];
                let (mean, std) = (m.mean_or_zero(), m.std_or_one());
                (mean, 1.0 / std, mean)
            } else {
                (0.0, 1.0, self.numeric[off - n_std].mean_or_zero())
            };
            let fill = match policy {
                NullPolicy::DeadLetter => None,
                NullPolicy::Mean => Some(((mean - shift) * scale) as f32),
                NullPolicy::Zero => Some(((0.0 - shift) * scale) as f32),
            };
            numeric.push((name, array, shift, scale, fill));
        }
        // One-hot then index columns as codes: 0 unseen, 1..=V vocabulary, NULL null.
        let lookups = self.lookups();
        let mut off = numeric.len();
        let one_hot = spec
            .one_hot
            .iter()
            .zip(&self.one_hot)
            .map(|(c, v)| (c, v.len(), true));
        let index = spec.index.iter().map(|c| (c, 1, false));
        let mut categorical = Vec::with_capacity(lookups.len());
        for (j, (name, width, is_one_hot)) in one_hot.chain(index).enumerate() {
            let array = column(batch, name)?;
            if !is_string(array.data_type()) {
                return Err(type_error(name, STRING, array.data_type()));
            }
            let lookup = &lookups[j];
            let codes = map_str(array.as_ref(), name, NULL, |s| {
                lookup.get(s).copied().unwrap_or(0)
            })?;
            categorical.push((name, codes, off, is_one_hot));
            off += width;
        }
        let sequences = self.sequence_columns(batch, off)?;

        // Write in blocks of rows, so the block of `x` stays in cache while every column
        // visits it. Columns are visited in feature order, so a row's first bad column wins.
        for start in (0..n).step_by(BLOCK_ROWS) {
            let len = BLOCK_ROWS.min(n - start);
            for (col, (name, array, shift, scale, fill)) in numeric.iter().enumerate() {
                let (shift, scale, fill) = (*shift, *scale, *fill);
                visit_f64(array.slice(start, len).as_ref(), name, |i, v| {
                    let row = start + i;
                    let out = &mut x[row * dim + col];
                    match (v, fill) {
                        (Some(v), _) => *out = ((v - shift) * scale) as f32,
                        (None, Some(f)) => *out = f,
                        (None, None) => rej.reject(row, name, || "null or non-finite value".into()),
                    }
                })?;
            }
            for (name, codes, off, is_one_hot) in &categorical {
                for (i, &code) in codes[start..start + len].iter().enumerate() {
                    let row = start + i;
                    if code == NULL {
                        if policy == NullPolicy::DeadLetter {
                            rej.reject(row, name, || "null value".into());
                        }
                    } else if *is_one_hot {
                        if code > 0 {
                            x[row * dim + off + code as usize - 1] = 1.0;
                        }
                    } else {
                        x[row * dim + off] = code as f32;
                    }
                }
            }
        }

        for seq in &sequences {
            seq.write(&mut x, dim, policy, &mut rej);
        }

        let y = if with_label {
            Some(self.targets(batch, &mut rej)?)
        } else {
            None
        };
        Ok(compact(x, y, dim, rej))
    }

    /// Resolves and encodes the elements of every `sequence` column; the first starts at
    /// feature `off`.
    fn sequence_columns<'a>(
        &'a self,
        batch: &RecordBatch,
        mut off: usize,
    ) -> Result<Vec<Sequence<'a>>> {
        let lookups = self.lookups();
        let mut lookup = self.one_hot.len() + self.index.len();
        let mut out = Vec::with_capacity(self.sequence.len());
        for (spec, encoding) in self.spec.sequence.iter().zip(&self.sequence) {
            let name = &spec.column;
            let array = column(batch, name)?;
            let element = list_element(array.data_type())
                .ok_or_else(|| type_error(name, LIST, array.data_type()))?;
            let rows = list_rows(array.as_ref(), name)?;
            let elements = match (encoding, element) {
                (SequenceEncoding::Values { mean, std }, Element::Number) => {
                    let (mean, scale) = (*mean, 1.0 / *std);
                    let mut values = vec![None; rows.values.len()];
                    visit_f64(rows.values.as_ref(), name, |i, v| {
                        values[i] = v.map(|v| ((v - mean) * scale) as f32);
                    })?;
                    let fill = match self.spec.nulls {
                        NullPolicy::DeadLetter => None,
                        NullPolicy::Mean => Some(0.0),
                        NullPolicy::Zero => Some((-mean * scale) as f32),
                    };
                    Elements::Values { values, fill }
                }
                (SequenceEncoding::Codes { .. }, Element::String) => {
                    let map = &lookups[lookup];
                    lookup += 1;
                    Elements::Codes(map_str(rows.values.as_ref(), name, NULL, |s| {
                        map.get(s).copied().unwrap_or(0)
                    })?)
                }
                (SequenceEncoding::Values { .. }, Element::String) => {
                    return Err(type_error(
                        name,
                        "a list of numbers (as when fitted)",
                        array.data_type(),
                    ));
                }
                (SequenceEncoding::Codes { .. }, Element::Number) => {
                    return Err(type_error(
                        name,
                        "a list of strings (as when fitted)",
                        array.data_type(),
                    ));
                }
            };
            out.push(Sequence {
                name,
                max_len: spec.max_len,
                off,
                ranges: rows.ranges,
                elements,
            });
            off += 1 + spec.max_len;
        }
        Ok(out)
    }

    fn targets(&self, batch: &RecordBatch, rej: &mut Rejects) -> Result<Targets> {
        let name = &self.spec.label;
        let array = column(batch, name)?;
        let dt = array.data_type();
        let n = array.len();
        match &self.label {
            LabelInfo::Values { .. } => {
                let mut values = vec![0.0f32; n];
                visit_f64(array.as_ref(), name, |row, v| match v {
                    Some(v) => values[row] = v as f32,
                    None => rej.reject(row, name, || "label is null or non-finite".into()),
                })?;
                Ok(Targets::Values(values))
            }
            LabelInfo::Ints { num_classes } => {
                if !(dt.is_integer() || *dt == DataType::Boolean) {
                    return Err(type_error(
                        name,
                        "an integer or Boolean type (as when fitted)",
                        dt,
                    ));
                }
                let k = *num_classes as i64;
                let mut classes = vec![0i64; n];
                visit_i64(array.as_ref(), name, |row, v| match v {
                    Some(v) if (0..k).contains(&v) => classes[row] = v,
                    Some(v) => rej.reject(row, name, || format!("label {v} outside 0..{k}")),
                    None => rej.reject(row, name, || "label is null".into()),
                })?;
                Ok(Targets::Classes(classes))
            }
            LabelInfo::Strings { .. } => {
                if !is_string(dt) {
                    return Err(type_error(name, "a string type (as when fitted)", dt));
                }
                let lookup = self
                    .lookups()
                    .last()
                    .ok_or_else(|| Error::Internal("string label without a class lookup".into()))?;
                let codes = map_str(array.as_ref(), name, NULL, |s| {
                    lookup.get(s).copied().unwrap_or(0)
                })?;
                let mut classes = vec![0i64; n];
                for (row, code) in codes.into_iter().enumerate() {
                    match code {
                        NULL => rej.reject(row, name, || "label is null".into()),
                        0 => rej.reject(row, name, || unseen_label(array.as_ref(), row)),
                        c => classes[row] = i64::from(c) - 1,
                    }
                }
                Ok(Targets::Classes(classes))
            }
        }
    }
}

/// A `sequence` column's elements, encoded.
enum Elements {
    /// Standardised numbers (`None`: null or non-finite), and what a null becomes (`None`: the
    /// row is rejected).
    Values {
        values: Vec<Option<f32>>,
        fill: Option<f32>,
    },
    /// Vocabulary codes: 0 unseen, `NULL` null.
    Codes(Vec<u32>),
}

/// A `sequence` column ready to write: per row its length, then its last `max_len` elements,
/// padded with zeros.
struct Sequence<'a> {
    name: &'a str,
    max_len: usize,
    /// Position of the length in the row's features.
    off: usize,
    ranges: Vec<Option<std::ops::Range<usize>>>,
    elements: Elements,
}

impl Sequence<'_> {
    fn write(&self, x: &mut [f32], dim: usize, policy: NullPolicy, rej: &mut Rejects) {
        let name = self.name;
        for (row, range) in self.ranges.iter().enumerate() {
            let Some(range) = range else {
                // A null list is empty (length 0) unless nulls are dead-lettered.
                if policy == NullPolicy::DeadLetter {
                    rej.reject(row, name, || "null list".into());
                }
                continue;
            };
            let kept = last(range, self.max_len);
            let out = &mut x[row * dim + self.off..row * dim + self.off + 1 + self.max_len];
            out[0] = kept.len() as f32;
            for (slot, e) in out[1..].iter_mut().zip(kept) {
                let position = || e - range.start;
                match &self.elements {
                    Elements::Values { values, fill } => match (values[e], fill) {
                        (Some(v), _) => *slot = v,
                        (None, Some(f)) => *slot = *f,
                        (None, None) => rej.reject(row, name, || {
                            format!("element {} is null or non-finite", position())
                        }),
                    },
                    Elements::Codes(codes) => match codes[e] {
                        NULL if policy == NullPolicy::DeadLetter => {
                            rej.reject(row, name, || format!("element {} is null", position()));
                        }
                        NULL => {}
                        code => *slot = code as f32,
                    },
                }
            }
        }
    }
}

/// "unseen label `…`" with the value (looked up again only for rejected rows).
fn unseen_label(array: &dyn Array, row: usize) -> String {
    let mut value = None;
    let _ = super::columns::visit_str(&array.slice(row, 1), "", |_, s| {
        value = s.map(str::to_string)
    });
    match value {
        Some(v) => format!("unseen label `{v}` (not a class seen while fitting)"),
        None => "unseen label".to_string(),
    }
}

/// Drops rejected rows from `x` and `y`.
fn compact(mut x: Vec<f32>, y: Option<Targets>, dim: usize, rej: Rejects) -> Features {
    let Rejects { bad, mut errors } = rej;
    let n = bad.len();
    if errors.is_empty() {
        return Features {
            x,
            y,
            rows: n,
            accepted: (0..n as u32).collect(),
            rejected: errors,
        };
    }
    errors.sort_unstable_by_key(|e| e.row);
    let accepted: Vec<u32> = (0..n as u32).filter(|&r| !bad[r as usize]).collect();
    for (to, &from) in accepted.iter().enumerate() {
        let from = from as usize;
        if from != to {
            x.copy_within(from * dim..(from + 1) * dim, to * dim);
        }
    }
    x.truncate(accepted.len() * dim);
    let keep = |r: &usize| !bad[*r];
    let y = y.map(|y| match y {
        Targets::Classes(c) => Targets::Classes((0..n).filter(keep).map(|r| c[r]).collect()),
        Targets::Values(v) => Targets::Values((0..n).filter(keep).map(|r| v[r]).collect()),
    });
    Features {
        x,
        y,
        rows: accepted.len(),
        accepted,
        rejected: errors,
    }
}
