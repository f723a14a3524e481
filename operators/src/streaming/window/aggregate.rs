//! Partial aggregates of one window, mergeable across workers, and their output batch.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float64Builder, Int64Array, Int64Builder, RecordBatch, StringBuilder,
    TimestampMillisecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::{Deserialize, Serialize};

use super::{AggFn, WINDOW_END, WINDOW_START, WindowSpec};
use crate::{Error, Result};

/// The value of a window's key column.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum KeyValue {
    /// A null key: its rows form a group of their own (as in SQL `GROUP BY`).
    Null,
    /// An integer key (any integer input type fitting `Int64`).
    Int(i64),
    /// A string key.
    Str(String),
}

/// The partial state of one aggregate, mergeable with the same aggregate from another worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum AggState {
    /// Rows, or non-null values, counted.
    Count(u64),
    /// Sum of `count` non-null values.
    Sum {
        /// The running sum.
        sum: f64,
        /// How many values were added.
        count: u64,
    },
    /// Mean as sum and count of the non-null values.
    Mean {
        /// The running sum.
        sum: f64,
        /// How many values were added.
        count: u64,
    },
    /// Smallest value so far, `None` before any.
    Min(Option<f64>),
    /// Largest value so far, `None` before any.
    Max(Option<f64>),
}

impl AggState {
    /// The empty state of `function`.
    pub fn new(function: AggFn) -> Self {
        match function {
            AggFn::Count => AggState::Count(0),
            AggFn::Sum => AggState::Sum { sum: 0.0, count: 0 },
            AggFn::Mean => AggState::Mean { sum: 0.0, count: 0 },
            AggFn::Min => AggState::Min(None),
            AggFn::Max => AggState::Max(None),
        }
    }

    /// The function this state aggregates.
    pub fn function(&self) -> AggFn {
        match self {
            AggState::Count(_) => AggFn::Count,
            AggState::Sum { .. } => AggFn::Sum,
            AggState::Mean { .. } => AggFn::Mean,
            AggState::Min(_) => AggFn::Min,
            AggState::Max(_) => AggFn::Max,
        }
    }

    /// Counts one row (for `Count`; other states ignore it).
    #[inline]
    pub(crate) fn count_one(&mut self) {
        if let AggState::Count(c) = self {
            *c += 1;
        }
    }

    /// Adds one non-null value.
    #[inline]
    pub(crate) fn add(&mut self, v: f64) {
        match self {
            AggState::Count(c) => *c += 1,
            AggState::Sum { sum, count } | AggState::Mean { sum, count } => {
                *sum += v;
                *count += 1;
            }
            AggState::Min(m) => *m = Some(m.map_or(v, |x| x.min(v))),
            AggState::Max(m) => *m = Some(m.map_or(v, |x| x.max(v))),
        }
    }

    /// Folds `other`, the same aggregate over other rows, into `self`. Returns `false` (and leaves
    /// `self` unchanged) when the two are different aggregates.
    pub fn merge(&mut self, other: &AggState) -> bool {
        match (self, other) {
            (AggState::Count(a), AggState::Count(b)) => *a += b,
            (AggState::Sum { sum, count }, AggState::Sum { sum: s, count: c })
            | (AggState::Mean { sum, count }, AggState::Mean { sum: s, count: c }) => {
                *sum += s;
                *count += c;
            }
            (AggState::Min(a), AggState::Min(b)) => *a = min_opt(*a, *b, f64::min),
            (AggState::Max(a), AggState::Max(b)) => *a = min_opt(*a, *b, f64::max),
            _ => return false,
        }
        true
    }

    /// The finished value: the count, sum, mean, min or max; `None` where SQL gives null (no
    /// non-null values). A count is never `None`.
    pub fn value(&self) -> Option<f64> {
        match *self {
            AggState::Count(c) => Some(c as f64),
            AggState::Sum { sum, count } => (count > 0).then_some(sum),
            AggState::Mean { sum, count } => (count > 0).then(|| sum / count as f64),
            AggState::Min(m) | AggState::Max(m) => m,
        }
    }
}

fn min_opt(a: Option<f64>, b: Option<f64>, pick: fn(f64, f64) -> f64) -> Option<f64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(pick(x, y)),
        (x, None) => x,
        (None, y) => y,
    }
}

/// One window's (partial) aggregates for one key, from one worker or merged over several.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WindowResult {
    /// Window start, epoch ms, inclusive.
    pub start_ms: i64,
    /// Window end, epoch ms, exclusive.
    pub end_ms: i64,
    /// The group's key; `None` when the spec has no key.
    pub key: Option<KeyValue>,
    /// One state per aggregate of the spec, in its order.
    pub state: Vec<AggState>,
}

impl WindowResult {
    pub(crate) fn sort_key(&self) -> (i64, i64, Option<&KeyValue>) {
        (self.end_ms, self.start_ms, self.key.as_ref())
    }
}

/// Folds `b`'s aggregates into `a`; both must be the same window and key, from the same spec.
/// Mismatched aggregates (a different spec: a bug) are left as in `a` and logged.
pub fn merge(a: &mut WindowResult, b: &WindowResult) {
    let consistent =
        a.state.len() == b.state.len() && a.state.iter_mut().zip(&b.state).all(|(x, y)| x.merge(y));
    if !consistent {
        tracing::error!(
            start_ms = a.start_ms,
            "window results of different aggregates were merged; this is a bug in millrace"
        );
    }
}

/// Combines the results of the same `(start, end, key)` from several workers, ordered by
/// `(end, start, key)`.
pub fn merge_all(parts: Vec<Vec<WindowResult>>) -> Vec<WindowResult> {
    let mut all: BTreeMap<(i64, i64, Option<KeyValue>), WindowResult> = BTreeMap::new();
    for r in parts.into_iter().flatten() {
        match all.entry((r.end_ms, r.start_ms, r.key.clone())) {
            std::collections::btree_map::Entry::Occupied(mut e) => merge(e.get_mut(), &r),
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(r);
            }
        }
    }
    all.into_values().collect()
}

/// The output batch of `results`: `window_start`, `window_end` (both `Timestamp(ms, UTC)`), the
/// key column when keyed (named as `spec.key`: `Int64` for integer keys, `Utf8` for string keys
/// and when no result has a non-null key; [`super::Windower::to_batch`] always knows the type),
/// then one column per aggregate (`Count`: `Int64`, others `Float64`, null when SQL gives null).
pub fn to_batch(spec: &WindowSpec, results: &[WindowResult]) -> Result<RecordBatch> {
    let has_int = results
        .iter()
        .any(|r| matches!(r.key, Some(KeyValue::Int(_))));
    let has_str = results
        .iter()
        .any(|r| matches!(r.key, Some(KeyValue::Str(_))));
    if has_int && has_str {
        return Err(Error::Internal(
            "window results mix integer and string keys".into(),
        ));
    }
    let key_type = if has_int {
        DataType::Int64
    } else {
        DataType::Utf8
    };
    build_batch(spec, &key_type, results)
}

/// The output schema for `spec`, with a key column of `key_type` when keyed.
pub(crate) fn output_schema(spec: &WindowSpec, key_type: &DataType) -> SchemaRef {
    let ts = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
    let mut fields = vec![
        Field::new(WINDOW_START, ts.clone(), false),
        Field::new(WINDOW_END, ts, false),
    ];
    if let Some(k) = &spec.key {
        fields.push(Field::new(k, key_type.clone(), true));
    }
    for a in &spec.aggregates {
        fields.push(match a.function {
            AggFn::Count => Field::new(&a.name, DataType::Int64, false),
            _ => Field::new(&a.name, DataType::Float64, true),
        });
    }
    Arc::new(Schema::new(fields))
}

/// Builds the output batch with the key column as `key_type` (`Int64` or `Utf8`).
pub(crate) fn build_batch(
    spec: &WindowSpec,
    key_type: &DataType,
    results: &[WindowResult],
) -> Result<RecordBatch> {
    let schema = output_schema(spec, key_type);
    let n = results.len();
    let starts: Vec<i64> = results.iter().map(|r| r.start_ms).collect();
    let ends: Vec<i64> = results.iter().map(|r| r.end_ms).collect();
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(TimestampMillisecondArray::from(starts).with_timezone("UTC")),
        Arc::new(TimestampMillisecondArray::from(ends).with_timezone("UTC")),
    ];
    if spec.key.is_some() {
        columns.push(key_column(key_type, results)?);
    } else if results.iter().any(|r| r.key.is_some()) {
        return Err(Error::Internal(
            "a window result has a key but the spec has none".into(),
        ));
    }
    for (i, a) in spec.aggregates.iter().enumerate() {
        let states = results.iter().map(|r| match r.state.get(i) {
            Some(s) if s.function() == a.function => Ok(s),
            _ => Err(Error::Internal(format!(
                "window result for [{}, {}) has no {:?} state for aggregate {:?}",
                r.start_ms, r.end_ms, a.function, a.name
            ))),
        });
        if a.function == AggFn::Count {
            let mut b = Int64Builder::with_capacity(n);
            for s in states {
                if let AggState::Count(c) = s? {
                    b.append_value(i64::try_from(*c).unwrap_or(i64::MAX));
                }
            }
            columns.push(Arc::new(b.finish()));
        } else {
            let mut b = Float64Builder::with_capacity(n);
            for s in states {
                b.append_option(s?.value());
            }
            columns.push(Arc::new(b.finish()));
        }
    }
    Ok(RecordBatch::try_new(schema, columns)?)
}

fn key_column(key_type: &DataType, results: &[WindowResult]) -> Result<ArrayRef> {
    let wrong = |k: &Option<KeyValue>| {
        Error::Internal(format!(
            "window key {k:?} does not fit the key column type {key_type}"
        ))
    };
    if *key_type == DataType::Int64 {
        let keys: Result<Vec<Option<i64>>> = results
            .iter()
            .map(|r| match &r.key {
                Some(KeyValue::Int(v)) => Ok(Some(*v)),
                Some(KeyValue::Null) => Ok(None),
                other => Err(wrong(other)),
            })
            .collect();
        Ok(Arc::new(Int64Array::from(keys?)))
    } else {
        let mut b = StringBuilder::with_capacity(results.len(), results.len() * 8);
        for r in results {
            match &r.key {
                Some(KeyValue::Str(s)) => b.append_value(s),
                Some(KeyValue::Null) => b.append_null(),
                other => return Err(wrong(other)),
            }
        }
        Ok(Arc::new(b.finish()))
    }
}
