//! Borrowed training targets, and the checks every replica makes of a batch before it runs.

use crate::error::{Error, Result};
use crate::model::Task;

/// The targets of a batch of rows, borrowed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum TargetsRef<'a> {
    /// Class indices in `0..num_classes` (classification).
    Classes(&'a [i64]),
    /// Target values (regression).
    Values(&'a [f32]),
}

impl TargetsRef<'_> {
    /// Number of rows.
    pub fn len(&self) -> usize {
        match self {
            TargetsRef::Classes(c) => c.len(),
            TargetsRef::Values(v) => v.len(),
        }
    }

    /// True when there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rows `start..end` (clamped to the length).
    pub fn slice(&self, start: usize, end: usize) -> Self {
        let clamp = |len: usize| (start.min(len), end.min(len).max(start.min(len)));
        match *self {
            TargetsRef::Classes(c) => {
                let (s, e) = clamp(c.len());
                TargetsRef::Classes(&c[s..e])
            }
            TargetsRef::Values(v) => {
                let (s, e) = clamp(v.len());
                TargetsRef::Values(&v[s..e])
            }
        }
    }
}

/// Checks that `x` holds `rows` rows of `input_dim` features.
pub(crate) fn check_features(x: &[f32], rows: usize, input_dim: usize) -> Result<()> {
    if rows.checked_mul(input_dim) != Some(x.len()) {
        return Err(Error::Input(format!(
            "feature buffer has {} values, expected {rows} rows x {input_dim} features",
            x.len()
        )));
    }
    Ok(())
}

/// Checks that a flat vector (`what`: "gradient", "parameter vector") has the model's
/// `num_params` values.
pub(crate) fn check_flat_len(what: &str, values: &[f32], num_params: usize) -> Result<()> {
    if values.len() != num_params {
        return Err(Error::Input(format!(
            "{what} has {} values, model has {num_params} parameters",
            values.len()
        )));
    }
    Ok(())
}

/// Checks that `y` has one target per row of the kind `task` needs, classes in range; errors
/// name the first bad row.
pub(crate) fn check_targets(task: &Task, y: TargetsRef<'_>, rows: usize) -> Result<()> {
    if y.len() != rows {
        return Err(Error::Input(format!("{} targets for {rows} rows", y.len())));
    }
    match (task, y) {
        (Task::Classification { num_classes }, TargetsRef::Classes(classes)) => {
            let k = *num_classes as i64;
            match classes
                .iter()
                .enumerate()
                .find(|(_, c)| !(0..k).contains(*c))
            {
                Some((row, bad)) => Err(Error::Input(format!(
                    "class {bad} at row {row} is outside 0..{num_classes}"
                ))),
                None => Ok(()),
            }
        }
        (Task::Regression, TargetsRef::Values(_)) => Ok(()),
        (Task::Classification { .. }, TargetsRef::Values(_)) => Err(Error::Input(
            "classification needs class targets (TargetsRef::Classes), got values".into(),
        )),
        (Task::Regression, TargetsRef::Classes(_)) => Err(Error::Input(
            "regression needs value targets (TargetsRef::Values), got classes".into(),
        )),
    }
}
