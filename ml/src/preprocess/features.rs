//! The output of a transform: a dense feature matrix, targets, and the rows that were rejected.

use serde::{Deserialize, Serialize};

use crate::trainer::TargetsRef;

/// Owned targets of the accepted rows.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub enum Targets {
    /// Class indices in `0..num_classes`.
    Classes(Vec<i64>),
    /// Regression targets.
    Values(Vec<f32>),
}

impl Targets {
    /// Borrows the targets, as the trainer takes them.
    pub fn as_ref(&self) -> TargetsRef<'_> {
        match self {
            Targets::Classes(c) => TargetsRef::Classes(c),
            Targets::Values(v) => TargetsRef::Values(v),
        }
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.as_ref().len()
    }

    /// True when there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A row that could not be turned into features: data, not a failure.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct RowError {
    /// Row index in the input batch.
    pub row: u32,
    /// The first column that made the row unusable.
    pub column: String,
    /// Why, e.g. "null value" or "label 7 outside 0..3".
    pub reason: String,
}

/// Model-ready features of one input batch.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Features {
    /// Row-major `rows × input_dim` values of the accepted rows.
    pub x: Vec<f32>,
    /// Targets of the accepted rows (when the label was requested).
    pub y: Option<Targets>,
    /// Number of accepted rows.
    pub rows: usize,
    /// Input row index of each accepted row.
    pub accepted: Vec<u32>,
    /// Rejected rows with the reason, in row order.
    pub rejected: Vec<RowError>,
}

impl Features {
    /// Number of features per row (`x.len() / rows`; 0 when there are no rows).
    pub fn input_dim(&self) -> usize {
        self.x.len().checked_div(self.rows).unwrap_or(0)
    }

    /// Accepted row `i` as a slice.
    pub fn row(&self, i: usize) -> Option<&[f32]> {
        let dim = self.input_dim();
        self.x.get(i * dim..(i + 1) * dim)
    }
}
