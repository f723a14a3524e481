//! The `train.features` config section: which columns become which features.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// What to do with a null (or NaN / infinite) feature value.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum NullPolicy {
    /// Reject the row, with the column and reason, to the dead-letter output.
    #[default]
    DeadLetter,
    /// Numeric: use the fitted mean (0 after standardising). One-hot: all zeros. Index: 0.
    Mean,
    /// Numeric: use the raw value 0 (then standardise). One-hot: all zeros. Index: 0.
    Zero,
}

/// Whether the label is a class or a number.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum LabelKind {
    /// Integer (`0..num_classes`), boolean or string classes.
    Classification,
    /// Any numeric type.
    Regression,
}

/// A list column read as a padded sequence (see [`FeatureSpec::sequence`]).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(deny_unknown_fields)]
pub struct SequenceSpec {
    /// The column: a List, LargeList or FixedSizeList of numbers or of strings.
    pub column: String,
    /// Elements kept per row: longer lists keep their last `max_len` elements (the most recent,
    /// as Keras' `pad_sequences` does), shorter ones are padded with zeros after the end.
    pub max_len: usize,
}

/// Which columns become features, and how.
///
/// Features are laid out in this order: `standardize` columns, `numeric` columns, then each
/// `one_hot` column's vocabulary, then `index` columns, then per `sequence` column its length
/// and `max_len` padded elements.
///
/// ```
/// use millrace_ml::preprocess::FeatureSpec;
/// let spec: FeatureSpec = serde_json::from_str(
///     r#"{"standardize": ["age"], "one_hot": ["city"], "label": "churned"}"#,
/// ).unwrap();
/// assert_eq!(spec.feature_columns(), vec!["age", "city"]);
/// spec.validate().unwrap();
/// ```
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FeatureSpec {
    /// Numeric columns scaled to `(x - mean) / std` (a zero std is taken as 1).
    #[serde(default)]
    pub standardize: Vec<String>,
    /// Numeric columns passed through as `f32`.
    #[serde(default)]
    pub numeric: Vec<String>,
    /// String columns one-hot encoded over the fitted vocabulary (unseen: all zeros).
    #[serde(default)]
    pub one_hot: Vec<String>,
    /// String columns mapped to one number: 0 for unseen, `1..=V` for vocabulary entries.
    #[serde(default)]
    pub index: Vec<String>,
    /// List columns as padded sequences with their lengths. Numeric elements are standardised
    /// with the mean and standard deviation of all elements seen while fitting; string elements
    /// are coded over a fitted vocabulary (0 for unseen, `1..=V`), as `index` columns are.
    #[serde(default)]
    pub sequence: Vec<SequenceSpec>,
    /// Keep only the most frequent categories per column (ties broken by name).
    #[serde(default)]
    pub max_categories: Option<usize>,
    /// The label column.
    pub label: String,
    /// What to do with null feature values.
    #[serde(default)]
    pub nulls: NullPolicy,
}

impl FeatureSpec {
    /// All feature columns, in feature order (without the label).
    pub fn feature_columns(&self) -> Vec<&str> {
        self.standardize
            .iter()
            .chain(&self.numeric)
            .chain(&self.one_hot)
            .chain(&self.index)
            .map(String::as_str)
            .chain(self.sequence.iter().map(|s| s.column.as_str()))
            .collect()
    }

    /// Checks the spec; errors name the config key.
    pub fn validate(&self) -> Result<()> {
        if self.label.is_empty() {
            return Err(Error::config(
                "train.features.label",
                "the label column name is empty",
            ));
        }
        if self.feature_columns().is_empty() {
            return Err(Error::config(
                "train.features",
                "no feature columns: list columns under standardize, numeric, one_hot or index",
            ));
        }
        if self.max_categories == Some(0) {
            return Err(Error::config(
                "train.features.max_categories",
                "must be at least 1 (or left out for no limit)",
            ));
        }
        let sequence: Vec<String> = self.sequence.iter().map(|s| s.column.clone()).collect();
        let lists = [
            ("standardize", &self.standardize),
            ("numeric", &self.numeric),
            ("one_hot", &self.one_hot),
            ("index", &self.index),
            ("sequence", &sequence),
        ];
        let mut seen = HashSet::new();
        for (list, columns) in lists {
            for column in columns {
                if column.is_empty() {
                    return Err(Error::config(
                        format!("train.features.{list}"),
                        "a column name is empty",
                    ));
                }
                if *column == self.label {
                    return Err(Error::config(
                        format!("train.features.{list}"),
                        format!("`{column}` is the label; it cannot also be a feature"),
                    ));
                }
                if !seen.insert(column.as_str()) {
                    return Err(Error::config(
                        format!("train.features.{list}"),
                        format!("column `{column}` is listed more than once"),
                    ));
                }
            }
        }
        for s in &self.sequence {
            if s.max_len == 0 || s.max_len > MAX_SEQUENCE_LEN {
                return Err(Error::config(
                    "train.features.sequence",
                    format!(
                        "column `{}`: max_len must be 1..={MAX_SEQUENCE_LEN}, got {}",
                        s.column, s.max_len
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// The longest `max_len` a sequence column may have (elements per row).
pub const MAX_SEQUENCE_LEN: usize = 1 << 16;

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> FeatureSpec {
        FeatureSpec {
            standardize: vec!["a".into()],
            one_hot: vec!["c".into()],
            label: "y".into(),
            ..FeatureSpec::default()
        }
    }

    #[test]
    fn validates() {
        assert!(spec().validate().is_ok());
        let mut s = spec();
        s.numeric.push("a".into());
        let err = s.validate().unwrap_err().to_string();
        assert!(
            err.contains("train.features.numeric") && err.contains("`a`"),
            "{err}"
        );
        let mut s = spec();
        s.index.push("y".into());
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .contains("is the label")
        );
        let s = FeatureSpec {
            label: "y".into(),
            ..FeatureSpec::default()
        };
        assert!(s.validate().is_err());
        let mut s = spec();
        s.sequence.push(SequenceSpec {
            column: "a".into(),
            max_len: 4,
        });
        let err = s.validate().unwrap_err().to_string();
        assert!(err.contains("train.features.sequence"), "{err}");
        s.sequence[0].column = "readings".into();
        s.validate().unwrap();
        assert_eq!(s.feature_columns(), vec!["a", "c", "readings"]);
        s.sequence[0].max_len = 0;
        let err = s.validate().unwrap_err().to_string();
        assert!(
            err.contains("max_len") && err.contains("`readings`"),
            "{err}"
        );
    }

    #[test]
    fn parses_null_policy() -> Result<(), serde_json::Error> {
        let s: FeatureSpec =
            serde_json::from_str(r#"{"numeric":["x"],"label":"y","nulls":"mean"}"#)?;
        assert_eq!(s.nulls, NullPolicy::Mean);
        let s: FeatureSpec = serde_json::from_str(r#"{"numeric":["x"],"label":"y"}"#)?;
        assert_eq!(s.nulls, NullPolicy::DeadLetter);
        assert!(serde_json::from_str::<FeatureSpec>(r#"{"label":"y","nulls":"drop"}"#).is_err());
        Ok(())
    }
}
