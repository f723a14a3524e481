//! Per-key aggregates: what each kind computes over the events of a key in a window.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::value::Value;
use crate::{Error, Result};

/// What an aggregate computes over the events of one key. Nulls are skipped by every kind but
/// [`AggKind::Count`], which counts events (`COUNT(*)`); a window with no non-null value gives
/// `Null`, except for the counts, which give 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AggKind {
    /// Events in the window.
    Count,
    /// Sum of the values: an integer over integers, a float when any value is a float.
    Sum,
    /// Mean of the values, a float (`avg` in a pipeline file too).
    #[serde(alias = "avg")]
    Mean,
    /// Smallest value (values of one type; integers sort before floats before strings).
    Min,
    /// Largest value.
    Max,
    /// The value of the newest event (the greatest value among events of the same millisecond).
    Last,
    /// Number of distinct values.
    CountDistinct,
}

impl AggKind {
    /// Every kind, in the order the docs list them.
    pub const ALL: [AggKind; 7] = [
        AggKind::Count,
        AggKind::Sum,
        AggKind::Mean,
        AggKind::Min,
        AggKind::Max,
        AggKind::Last,
        AggKind::CountDistinct,
    ];

    /// The kind's name in pipeline files and errors.
    pub fn name(self) -> &'static str {
        match self {
            AggKind::Count => "count",
            AggKind::Sum => "sum",
            AggKind::Mean => "mean",
            AggKind::Min => "min",
            AggKind::Max => "max",
            AggKind::Last => "last",
            AggKind::CountDistinct => "count_distinct",
        }
    }

    /// True when the kind adds its inputs up, so that they must be numbers.
    pub fn numeric(self) -> bool {
        matches!(self, AggKind::Sum | AggKind::Mean)
    }

    /// The aggregate of `events`: (event time, value, multiplicity), sorted by time.
    pub(super) fn compute<'a>(
        self,
        events: impl Iterator<Item = (u64, &'a Value, isize)>,
    ) -> Value {
        let values = events.filter(|(_, v, n)| *n > 0 && (self == AggKind::Count || !v.is_null()));
        match self {
            AggKind::Count => Value::Int(values.map(|(_, _, n)| n as i64).sum()),
            AggKind::Sum => sum(values),
            AggKind::Mean => {
                let (mut total, mut n) = (0.0, 0i64);
                for (_, v, c) in values {
                    total += v.as_f64().unwrap_or(0.0) * c as f64;
                    n += c as i64;
                }
                if n == 0 {
                    Value::Null
                } else {
                    Value::Float(total / n as f64)
                }
            }
            AggKind::Min => values
                .map(|(_, v, _)| v)
                .min()
                .cloned()
                .unwrap_or(Value::Null),
            AggKind::Max => values
                .map(|(_, v, _)| v)
                .max()
                .cloned()
                .unwrap_or(Value::Null),
            AggKind::Last => values
                .map(|(t, v, _)| (t, v))
                .max()
                .map(|(_, v)| v.clone())
                .unwrap_or(Value::Null),
            AggKind::CountDistinct => {
                Value::Int(values.map(|(_, v, _)| v).collect::<BTreeSet<_>>().len() as i64)
            }
        }
    }
}

/// An integer sum over integers (a float when it overflows `i64`), a float sum in event order once
/// any value is a float.
fn sum<'a>(values: impl Iterator<Item = (u64, &'a Value, isize)>) -> Value {
    let values: Vec<_> = values.collect();
    if values.is_empty() {
        return Value::Null;
    }
    if values.iter().all(|(_, v, _)| matches!(v, Value::Int(_))) {
        let total: i128 = values
            .iter()
            .map(|(_, v, c)| {
                if let Value::Int(i) = v {
                    *i as i128 * *c as i128
                } else {
                    0
                }
            })
            .sum();
        return i64::try_from(total).map_or(Value::Float(total as f64), Value::Int);
    }
    // A left fold in event order from -0.0 (the identity of float addition), as the running
    // all-time sum adds them.
    Value::Float(values.iter().fold(-0.0, |total, (_, v, c)| {
        total + v.as_f64().unwrap_or(0.0) * *c as f64
    }))
}

impl fmt::Display for AggKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for AggKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let lower = s.to_ascii_lowercase();
        AggKind::ALL
            .into_iter()
            .find(|k| k.name() == lower || (lower == "avg" && *k == AggKind::Mean))
            .ok_or_else(|| {
                Error::Features(format!(
                    "unknown aggregate `{s}`: use one of {}",
                    crate::list(AggKind::ALL.map(AggKind::name))
                ))
            })
    }
}

/// One aggregate of a feature view: `kind` over the events' `input` values, per key, over the
/// events of the last `window_ms` of event time (all events so far when `None`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Aggregate {
    /// The feature's name (its column in the output).
    pub name: String,
    /// What it computes.
    pub kind: AggKind,
    /// Event-time window length in milliseconds; `None` for all time.
    pub window_ms: Option<u64>,
}
