//! [`FittedPreprocessor`]: the fitted statistics, frozen, plus what the model needs to know.

use std::collections::HashMap;
use std::sync::OnceLock;

use arrow::datatypes::{DataType, Field, Schema};
use serde::{Deserialize, Serialize};

use super::spec::{FeatureSpec, LabelKind};
use super::stats::Moments;

/// A raw input column as it was when the preprocessor was fitted.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct RawColumn {
    /// Column name.
    pub name: String,
    /// Arrow type seen while fitting.
    pub data_type: DataType,
}

/// What the label turned out to be.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub enum LabelInfo {
    /// Integer or Boolean classes `0..num_classes`.
    Ints {
        /// Number of classes (at least 2).
        num_classes: usize,
    },
    /// String classes; class `i` is `names[i]` (sorted by name).
    Strings {
        /// Class names.
        names: Vec<String>,
    },
    /// Regression target statistics (informational).
    Values {
        /// Mean of the fitted targets.
        mean: f64,
        /// Standard deviation of the fitted targets (1 if 0).
        std: f64,
    },
}

/// How a fitted `sequence` column's elements become numbers.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum SequenceEncoding {
    /// Numeric elements, standardised as `(x - mean) / std`.
    Values {
        /// Mean of every element fitted.
        mean: f64,
        /// Standard deviation of every element fitted (1 if 0).
        std: f64,
    },
    /// String elements, coded 0 for unseen and `1..=V` over the vocabulary.
    Codes {
        /// By descending count, ties by name.
        vocabulary: Vec<String>,
    },
}

/// Fitted preprocessing: turns Arrow batches into model features with
/// [`FittedPreprocessor::transform`]. Serialisable; stored in model bundles.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct FittedPreprocessor {
    pub(crate) spec: FeatureSpec,
    pub(crate) label_kind: LabelKind,
    /// One per `spec.standardize` column.
    pub(crate) standardize: Vec<Moments>,
    /// One per `spec.numeric` column.
    pub(crate) numeric: Vec<Moments>,
    /// Vocabulary per `spec.one_hot` column.
    pub(crate) one_hot: Vec<Vec<String>>,
    /// Vocabulary per `spec.index` column.
    pub(crate) index: Vec<Vec<String>>,
    /// Encoding per `spec.sequence` column.
    #[serde(default)]
    pub(crate) sequence: Vec<SequenceEncoding>,
    pub(crate) label: LabelInfo,
    /// Feature columns then the label.
    pub(crate) raw: Vec<RawColumn>,
    pub(crate) rows_fitted: u64,
    /// Value → code (vocabulary position + 1) per one-hot column, index column and string
    /// sequence column, then label classes; built on first use.
    #[serde(skip)]
    pub(crate) lookups: OnceLock<Vec<HashMap<String, u32>>>,
}

impl PartialEq for FittedPreprocessor {
    fn eq(&self, other: &Self) -> bool {
        self.spec == other.spec
            && self.label_kind == other.label_kind
            && self.standardize == other.standardize
            && self.numeric == other.numeric
            && self.one_hot == other.one_hot
            && self.index == other.index
            && self.sequence == other.sequence
            && self.label == other.label
            && self.raw == other.raw
            && self.rows_fitted == other.rows_fitted
    }
}

impl FittedPreprocessor {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        spec: FeatureSpec,
        label_kind: LabelKind,
        standardize: Vec<Moments>,
        numeric: Vec<Moments>,
        one_hot: Vec<Vec<String>>,
        index: Vec<Vec<String>>,
        sequence: Vec<SequenceEncoding>,
        label: LabelInfo,
        raw: Vec<RawColumn>,
        rows_fitted: u64,
    ) -> Self {
        Self {
            spec,
            label_kind,
            standardize,
            numeric,
            one_hot,
            index,
            sequence,
            label,
            raw,
            rows_fitted,
            lookups: OnceLock::new(),
        }
    }

    /// The spec this was fitted with.
    pub fn spec(&self) -> &FeatureSpec {
        &self.spec
    }

    /// Number of features per row.
    pub fn input_dim(&self) -> usize {
        self.spec.standardize.len()
            + self.spec.numeric.len()
            + self.one_hot.iter().map(Vec::len).sum::<usize>()
            + self.spec.index.len()
            + self
                .spec
                .sequence
                .iter()
                .map(|s| 1 + s.max_len)
                .sum::<usize>()
    }

    /// Name of each feature, in order: the column name, `column=value` for one-hot features, and
    /// `column.len`, `column[0]`, … for sequence columns.
    pub fn feature_names(&self) -> Vec<String> {
        let mut names = Vec::with_capacity(self.input_dim());
        names.extend(self.spec.standardize.iter().cloned());
        names.extend(self.spec.numeric.iter().cloned());
        for (column, vocab) in self.spec.one_hot.iter().zip(&self.one_hot) {
            names.extend(vocab.iter().map(|v| format!("{column}={v}")));
        }
        names.extend(self.spec.index.iter().cloned());
        for s in &self.spec.sequence {
            names.push(format!("{}.len", s.column));
            names.extend((0..s.max_len).map(|i| format!("{}[{i}]", s.column)));
        }
        names
    }

    /// How each `sequence` column's elements are encoded, in spec order.
    pub fn sequence_encodings(&self) -> &[SequenceEncoding] {
        &self.sequence
    }

    /// Classification or regression.
    pub fn label_kind(&self) -> LabelKind {
        self.label_kind
    }

    /// What the label turned out to be.
    pub fn label_info(&self) -> &LabelInfo {
        &self.label
    }

    /// Number of classes (classification only).
    pub fn num_classes(&self) -> Option<usize> {
        match &self.label {
            LabelInfo::Ints { num_classes } => Some(*num_classes),
            LabelInfo::Strings { names } => Some(names.len()),
            LabelInfo::Values { .. } => None,
        }
    }

    /// The task the fitted label calls for: classification over its classes, or regression.
    pub fn task(&self) -> crate::model::Task {
        match self.num_classes() {
            Some(num_classes) => crate::model::Task::Classification { num_classes },
            None => crate::model::Task::Regression,
        }
    }

    /// Class names, for string labels (class `i` is element `i`).
    pub fn class_names(&self) -> Option<Vec<String>> {
        match &self.label {
            LabelInfo::Strings { names } => Some(names.clone()),
            _ => None,
        }
    }

    /// The columns a batch must have: features in order, then the label if `with_label`.
    pub fn required_columns(&self, with_label: bool) -> Vec<String> {
        let mut cols: Vec<String> = self
            .spec
            .feature_columns()
            .into_iter()
            .map(String::from)
            .collect();
        if with_label {
            cols.push(self.spec.label.clone());
        }
        cols
    }

    /// The raw input columns (features, then the label) with the types seen while fitting.
    pub fn raw_columns(&self) -> &[RawColumn] {
        &self.raw
    }

    /// [`FittedPreprocessor::raw_columns`] as an Arrow schema (all fields nullable).
    pub fn raw_schema(&self) -> Schema {
        Schema::new(
            self.raw
                .iter()
                .map(|c| Field::new(&c.name, c.data_type.clone(), true))
                .collect::<Vec<_>>(),
        )
    }

    /// Means of the `standardize` columns, in spec order.
    pub fn means(&self) -> Vec<f64> {
        self.standardize.iter().map(Moments::mean_or_zero).collect()
    }

    /// Standard deviations used to scale the `standardize` columns (1 where the data had none).
    pub fn stds(&self) -> Vec<f64> {
        self.standardize.iter().map(Moments::std_or_one).collect()
    }

    /// Means of the `numeric` (pass-through) columns, used for `nulls: mean`.
    pub fn numeric_means(&self) -> Vec<f64> {
        self.numeric.iter().map(Moments::mean_or_zero).collect()
    }

    /// Fitted `(mean, std)` of a `standardize` or `numeric` column.
    pub fn column_stats(&self, column: &str) -> Option<(f64, f64)> {
        let pos = |list: &[String]| list.iter().position(|c| c == column);
        pos(&self.spec.standardize)
            .map(|i| &self.standardize[i])
            .or_else(|| pos(&self.spec.numeric).map(|i| &self.numeric[i]))
            .map(|m| (m.mean_or_zero(), m.std_or_one()))
    }

    /// Vocabulary of a `one_hot`, `index` or string `sequence` column: by descending count,
    /// ties by name.
    pub fn vocabulary(&self, column: &str) -> Option<&[String]> {
        let pos = |list: &[String]| list.iter().position(|c| c == column);
        let sequence = || {
            let i = self.spec.sequence.iter().position(|s| s.column == column)?;
            match &self.sequence[i] {
                SequenceEncoding::Codes { vocabulary } => Some(vocabulary.as_slice()),
                SequenceEncoding::Values { .. } => None,
            }
        };
        pos(&self.spec.one_hot)
            .map(|i| self.one_hot[i].as_slice())
            .or_else(|| pos(&self.spec.index).map(|i| self.index[i].as_slice()))
            .or_else(sequence)
    }

    /// Number of rows the statistics were fitted on.
    pub fn rows_fitted(&self) -> u64 {
        self.rows_fitted
    }

    /// Value → code maps (one-hot columns, index columns, then string label classes).
    pub(crate) fn lookups(&self) -> &[HashMap<String, u32>] {
        self.lookups.get_or_init(|| {
            let to_map = |vocab: &Vec<String>| {
                vocab
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (v.clone(), i as u32 + 1))
                    .collect::<HashMap<_, _>>()
            };
            let codes = self.sequence.iter().filter_map(|s| match s {
                SequenceEncoding::Codes { vocabulary } => Some(vocabulary),
                SequenceEncoding::Values { .. } => None,
            });
            let mut maps: Vec<_> = self
                .one_hot
                .iter()
                .chain(&self.index)
                .chain(codes)
                .map(to_map)
                .collect();
            if let LabelInfo::Strings { names } = &self.label {
                maps.push(to_map(names));
            }
            maps
        })
    }
}
