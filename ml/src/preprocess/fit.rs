//! [`FitState`]: statistics gathered over batches, mergeable across workers.

use std::collections::BTreeMap;

use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

use super::columns::{
    CLASS_LABEL, NUMERIC, STRING, column, is_numeric, is_string, type_error, visit_f64, visit_i64,
    visit_str,
};
use super::fitted::{FittedPreprocessor, LabelInfo, RawColumn, SequenceEncoding};
use super::lists::{Element, LIST, list_element, list_rows};
use super::spec::{FeatureSpec, LabelKind};
use super::stats::{Counts, Moments};
use crate::error::{Error, Result};

/// Label statistics, by the label column's type.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub(crate) enum LabelStats {
    /// No label value seen yet.
    #[default]
    Empty,
    /// Integer or Boolean classes: count of each value seen (the largest key is the max).
    Ints(BTreeMap<i64, u64>),
    /// String classes.
    Strings(Counts),
    /// Regression targets.
    Values(Moments),
}

/// Element statistics of a `sequence` column, by its element type.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub(crate) enum SequenceStats {
    /// No batch seen yet.
    #[default]
    Empty,
    /// Numeric elements.
    Values(Moments),
    /// String elements.
    Strings(Counts),
}

/// Preprocessing statistics fitted so far.
///
/// Build one per worker with [`FitState::new`], feed it batches with [`FitState::update`],
/// combine the workers' states with [`FitState::merge`] (in any grouping: the result equals
/// fitting on all the data, up to floating-point rounding), and [`FitState::finish`].
/// Plain serde data, so it can be sent between workers with any format, bincode included.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct FitState {
    spec: FeatureSpec,
    label_kind: LabelKind,
    /// One per `spec.standardize` column.
    standardize: Vec<Moments>,
    /// One per `spec.numeric` column.
    numeric: Vec<Moments>,
    /// One per `spec.one_hot` column.
    one_hot: Vec<Counts>,
    /// One per `spec.index` column.
    index: Vec<Counts>,
    /// One per `spec.sequence` column.
    #[serde(default)]
    sequence: Vec<SequenceStats>,
    label: LabelStats,
    /// Arrow type of each feature column then the label, as first seen.
    types: Vec<Option<DataType>>,
    rows: u64,
    /// Set when states that cannot be combined were merged; reported by `finish`.
    problem: Option<String>,
}

impl FitState {
    /// An empty state for `spec` (the spec is checked by `update` and `finish`).
    pub fn new(spec: &FeatureSpec, label_kind: LabelKind) -> Self {
        let columns = spec.feature_columns().len() + 1;
        Self {
            spec: spec.clone(),
            label_kind,
            standardize: vec![Moments::default(); spec.standardize.len()],
            numeric: vec![Moments::default(); spec.numeric.len()],
            one_hot: vec![Counts::default(); spec.one_hot.len()],
            index: vec![Counts::default(); spec.index.len()],
            sequence: vec![SequenceStats::Empty; spec.sequence.len()],
            label: LabelStats::Empty,
            types: vec![None; columns],
            rows: 0,
            problem: None,
        }
    }

    /// The spec being fitted.
    pub fn spec(&self) -> &FeatureSpec {
        &self.spec
    }

    /// Rows seen so far (across merged states).
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Adds the statistics of `batch`. Nulls (and NaN) are skipped.
    ///
    /// Errors (nothing is added) when a column is missing or has the wrong type.
    pub fn update(&mut self, batch: &RecordBatch) -> Result<()> {
        self.spec.validate()?;
        // Check every column first, so a failed update leaves the state untouched.
        let names: Vec<String> = self
            .spec
            .feature_columns()
            .into_iter()
            .map(String::from)
            .collect();
        let n_std = self.spec.standardize.len();
        let n_num = self.spec.numeric.len();
        let n_hot = self.spec.one_hot.len();
        let n_plain = names.len() - self.spec.sequence.len();
        let mut arrays = Vec::with_capacity(names.len() + 1);
        for (i, name) in names.iter().enumerate() {
            let array = column(batch, name)?;
            let dt = array.data_type();
            let (ok, expected) = if i < n_std + n_num {
                (is_numeric(dt), NUMERIC)
            } else if i < n_plain {
                (is_string(dt), STRING)
            } else {
                (list_element(dt).is_some(), LIST)
            };
            if !ok {
                return Err(type_error(name, expected, dt));
            }
            arrays.push(array);
        }
        // Element kinds must not change between batches (checked before anything is added).
        let mut sequences = Vec::with_capacity(self.spec.sequence.len());
        for (j, array) in arrays[n_plain..names.len()].iter().enumerate() {
            let name = &names[n_plain + j];
            let element = list_element(array.data_type());
            match (&self.sequence[j], element) {
                (SequenceStats::Values(_), Some(Element::String))
                | (SequenceStats::Strings(_), Some(Element::Number)) => {
                    return Err(type_error(
                        name,
                        "a list of the element type seen in earlier batches",
                        array.data_type(),
                    ));
                }
                _ => sequences.push(list_rows(array.as_ref(), name)?),
            }
        }
        let label = column(batch, &self.spec.label)?;
        self.check_label_type(label.data_type())?;
        arrays.push(label);

        for (i, array) in arrays.iter().enumerate() {
            let dt = array.data_type();
            if self.types[i].is_none() {
                self.types[i] = Some(dt.clone());
            }
        }
        let mut values = Vec::with_capacity(batch.num_rows());
        for (j, array) in arrays[..n_std + n_num].iter().enumerate() {
            values.clear();
            visit_f64(array.as_ref(), &names[j], |_, v| values.extend(v))?;
            let m = Moments::of(&values);
            if j < n_std {
                self.standardize[j].merge(&m);
            } else {
                self.numeric[j - n_std].merge(&m);
            }
        }
        for (j, array) in arrays[n_std + n_num..n_plain].iter().enumerate() {
            let counts = if j < n_hot {
                &mut self.one_hot[j]
            } else {
                &mut self.index[j - n_hot]
            };
            count_strings(array.as_ref(), &names[n_std + n_num + j], counts)?;
        }
        for (j, rows) in sequences.into_iter().enumerate() {
            let name = &names[n_plain + j];
            let stats = &mut self.sequence[j];
            if is_string(rows.values.data_type()) {
                let mut counts = Counts::default();
                count_strings(rows.values.as_ref(), name, &mut counts)?;
                match stats {
                    SequenceStats::Strings(c) => c.merge(&counts),
                    _ => *stats = SequenceStats::Strings(counts),
                }
            } else {
                values.clear();
                visit_f64(rows.values.as_ref(), name, |_, v| values.extend(v))?;
                let m = Moments::of(&values);
                match stats {
                    SequenceStats::Values(mine) => mine.merge(&m),
                    _ => *stats = SequenceStats::Values(m),
                }
            }
        }
        self.update_label(label.as_ref())?;
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    fn check_label_type(&self, dt: &DataType) -> Result<()> {
        let ok = match self.label_kind {
            LabelKind::Classification => {
                dt.is_integer() || *dt == DataType::Boolean || is_string(dt)
            }
            LabelKind::Regression => is_numeric(dt),
        };
        if ok {
            return Ok(());
        }
        let expected = match self.label_kind {
            LabelKind::Classification => CLASS_LABEL,
            LabelKind::Regression => NUMERIC,
        };
        Err(type_error(&self.spec.label, expected, dt))
    }

    fn update_label(&mut self, array: &dyn arrow::array::Array) -> Result<()> {
        let name = self.spec.label.clone();
        let mut batch = match self.label_kind {
            LabelKind::Regression => {
                let mut values = Vec::with_capacity(array.len());
                visit_f64(array, &name, |_, v| values.extend(v))?;
                LabelStats::Values(Moments::of(&values))
            }
            LabelKind::Classification if is_string(array.data_type()) => {
                let mut counts = Counts::default();
                count_strings(array, &name, &mut counts)?;
                LabelStats::Strings(counts)
            }
            LabelKind::Classification => {
                let mut counts = BTreeMap::new();
                visit_i64(array, &name, |_, v| {
                    if let Some(v) = v {
                        *counts.entry(v).or_insert(0u64) += 1;
                    }
                })?;
                LabelStats::Ints(counts)
            }
        };
        merge_labels(&mut self.label, &mut batch).map_err(|m| Error::ColumnType {
            column: name,
            expected: m,
            actual: array.data_type().to_string(),
        })
    }

    /// Combines `other` (fitted on other rows with the same spec) into `self`.
    ///
    /// States with different specs, or whose label columns had different kinds of type, cannot
    /// be combined: the problem is remembered and [`FitState::finish`] reports it.
    pub fn merge(&mut self, other: &FitState) {
        if let Some(p) = &other.problem {
            self.problem.get_or_insert_with(|| p.clone());
        }
        if self.spec != other.spec || self.label_kind != other.label_kind {
            self.problem.get_or_insert_with(|| {
                "merged preprocessing states fitted with different feature specs".to_string()
            });
            return;
        }
        for (a, b) in self.standardize.iter_mut().zip(&other.standardize) {
            a.merge(b);
        }
        for (a, b) in self.numeric.iter_mut().zip(&other.numeric) {
            a.merge(b);
        }
        for (a, b) in self.one_hot.iter_mut().zip(&other.one_hot) {
            a.merge(b);
        }
        for (a, b) in self.index.iter_mut().zip(&other.index) {
            a.merge(b);
        }
        let mut mixed = None;
        for (j, (a, b)) in self.sequence.iter_mut().zip(&other.sequence).enumerate() {
            if *a == SequenceStats::Empty {
                a.clone_from(b);
                continue;
            }
            match (a, b) {
                (_, SequenceStats::Empty) => {}
                (SequenceStats::Values(a), SequenceStats::Values(b)) => a.merge(b),
                (SequenceStats::Strings(a), SequenceStats::Strings(b)) => a.merge(b),
                _ => mixed = mixed.or(Some(j)),
            }
        }
        if let Some(j) = mixed {
            self.problem.get_or_insert_with(|| {
                format!(
                    "sequence column `{}`: workers saw lists of numbers and lists of strings",
                    self.spec.sequence[j].column
                )
            });
        }
        for (a, b) in self.types.iter_mut().zip(&other.types) {
            if a.is_none() {
                a.clone_from(b);
            }
        }
        let mut theirs = other.label.clone();
        if let Err(m) = merge_labels(&mut self.label, &mut theirs) {
            self.problem.get_or_insert_with(|| {
                format!(
                    "label column `{}`: workers saw different types ({m})",
                    self.spec.label
                )
            });
        }
        self.rows += other.rows;
    }

    /// The fitted preprocessor.
    pub fn finish(self) -> Result<FittedPreprocessor> {
        self.spec.validate()?;
        if let Some(p) = self.problem {
            return Err(Error::Internal(p));
        }
        let names: Vec<String> = self
            .spec
            .feature_columns()
            .into_iter()
            .map(String::from)
            .collect();
        let mut raw = Vec::with_capacity(names.len() + 1);
        for (name, dt) in names
            .iter()
            .chain(std::iter::once(&self.spec.label))
            .zip(&self.types)
        {
            let Some(dt) = dt else {
                return Err(Error::Input(format!(
                    "cannot finish fitting: no batch was seen (column `{name}` never appeared); \
                     fit on at least one batch with rows"
                )));
            };
            raw.push(RawColumn {
                name: name.clone(),
                data_type: dt.clone(),
            });
        }
        let label = match self.label {
            LabelStats::Empty => {
                return Err(Error::Input(format!(
                    "label column `{}` has no non-null values in the {} rows fitted",
                    self.spec.label, self.rows
                )));
            }
            LabelStats::Values(m) => LabelInfo::Values {
                mean: m.mean_or_zero(),
                std: m.std_or_one(),
            },
            LabelStats::Ints(counts) => {
                let Some(max) = counts.keys().next_back().copied().filter(|&m| m >= 0) else {
                    return Err(Error::Input(format!(
                        "label column `{}` has no class in 0.. (classes must be 0, 1, 2, …)",
                        self.spec.label
                    )));
                };
                let num_classes = usize::try_from(max)
                    .ok()
                    .and_then(|m| m.checked_add(1))
                    .unwrap_or(usize::MAX);
                if num_classes > 1 << 24 {
                    return Err(Error::Input(format!(
                        "label column `{}` has class {max}: too many classes (at most {})",
                        self.spec.label,
                        1 << 24
                    )));
                }
                LabelInfo::Ints {
                    num_classes: num_classes.max(2),
                }
            }
            LabelStats::Strings(counts) => {
                let mut names: Vec<String> = counts.0.into_keys().collect();
                names.sort_unstable();
                if names.len() < 2 {
                    return Err(Error::Input(format!(
                        "label column `{}` has only one class ({names:?}); classification needs two or more",
                        self.spec.label
                    )));
                }
                LabelInfo::Strings { names }
            }
        };
        let max = self.spec.max_categories;
        let sequence = self
            .sequence
            .iter()
            .map(|s| match s {
                // No batch had a value: the column was all nulls or empty lists.
                SequenceStats::Empty => SequenceEncoding::Values {
                    mean: 0.0,
                    std: 1.0,
                },
                SequenceStats::Values(m) => SequenceEncoding::Values {
                    mean: m.mean_or_zero(),
                    std: m.std_or_one(),
                },
                SequenceStats::Strings(c) => SequenceEncoding::Codes {
                    vocabulary: c.vocabulary(max),
                },
            })
            .collect();
        Ok(FittedPreprocessor::new(
            self.spec,
            self.label_kind,
            self.standardize,
            self.numeric,
            self.one_hot.iter().map(|c| c.vocabulary(max)).collect(),
            self.index.iter().map(|c| c.vocabulary(max)).collect(),
            sequence,
            label,
            raw,
            self.rows,
        ))
    }
}

/// Merges label statistics; `Err(expected)` if the kinds differ.
fn merge_labels(mine: &mut LabelStats, theirs: &mut LabelStats) -> Result<(), String> {
    match (mine, theirs) {
        (_, LabelStats::Empty) => Ok(()),
        (m @ LabelStats::Empty, t) => {
            *m = std::mem::take(t);
            Ok(())
        }
        (LabelStats::Ints(a), LabelStats::Ints(b)) => {
            for (k, v) in b.iter() {
                *a.entry(*k).or_insert(0) += v;
            }
            Ok(())
        }
        (LabelStats::Strings(a), LabelStats::Strings(b)) => {
            a.merge(b);
            Ok(())
        }
        (LabelStats::Values(a), LabelStats::Values(b)) => {
            a.merge(b);
            Ok(())
        }
        (LabelStats::Strings(_), _) => Err("a string type, as in earlier batches".into()),
        (_, _) => Err("an integer or Boolean type, as in earlier batches".into()),
    }
}

/// Adds the non-null values of a string column to `counts`.
fn count_strings(array: &dyn arrow::array::Array, name: &str, counts: &mut Counts) -> Result<()> {
    if let DataType::Dictionary(..) = array.data_type() {
        // Count per dictionary entry, then add each distinct string once.
        let mut per_entry: Vec<u64> = Vec::new();
        let mut entries: Vec<Option<String>> = Vec::new();
        let mut lookup: std::collections::HashMap<String, u32> = std::collections::HashMap::new();
        let codes = super::columns::map_str(array, name, u32::MAX, |s| {
            let next = entries.len() as u32;
            *lookup.entry(s.to_string()).or_insert_with(|| {
                entries.push(Some(s.to_string()));
                next
            })
        })?;
        per_entry.resize(entries.len(), 0);
        for c in codes {
            if let Some(n) = per_entry.get_mut(c as usize) {
                *n += 1;
            }
        }
        for (s, n) in entries.iter().zip(per_entry) {
            if let (Some(s), true) = (s, n > 0) {
                counts.add(s, n);
            }
        }
        return Ok(());
    }
    visit_str(array, name, |_, s| {
        if let Some(s) = s {
            counts.add(s, 1);
        }
    })
}

// Sent between workers: must stay plain owned data.
const _: () = {
    const fn assert_sendable<T: Send + Sync + Clone + 'static>() {}
    assert_sendable::<FitState>();
};
