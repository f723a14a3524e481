//! [`FeatureLayout`]: the named tensors inside a row of features.
//!
//! A fitted preprocessor writes each accepted row as one flat `f32` vector (the form the engine
//! shuffles, batches and checkpoints). The layout says what that vector holds, so a model can
//! read it as named tensors ([`Inputs`](super::Inputs)):
//!
//! ```text
//! [ standardize.. numeric.. one_hot vocabularies.. | index columns.. ]
//!   └──────────── "dense" block (f32) ───────────┘   └ one code per column: 0 unseen, 1..=V ┘
//! ```

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::preprocess::FittedPreprocessor;

/// Index codes travel in `f32`; every integer up to 2^24 is exact there.
const MAX_EXACT_CODE: usize = 1 << 24;

/// An `index`-encoded categorical column as a model input: an integer code per row.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct IndexInput {
    /// The column name (the input's name).
    pub name: String,
    /// Position of the code in the row's feature vector.
    pub offset: usize,
    /// Number of distinct codes: the vocabulary size plus one (code 0 is "unseen").
    pub cardinality: usize,
}

/// What a row's feature vector holds, as named tensors.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct FeatureLayout {
    /// Width of the dense block (standardised, numeric and one-hot features), at the start.
    pub dense: usize,
    /// The `index` columns, after the dense block, in `train.features.index` order.
    pub index: Vec<IndexInput>,
}

/// A named tensor a model reads (see [`Model::inputs`](super::Model::inputs)).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Input {
    /// The dense block, `[rows, dense]` `f32`.
    Dense,
    /// The codes of one `index` column, `[rows]` integers in `0..cardinality`.
    Index(String),
    /// The whole feature vector, `[rows, width]` `f32` (index codes as numbers), as the
    /// built-in MLP reads it.
    All,
}

impl std::fmt::Display for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Input::Dense => f.write_str("dense"),
            Input::Index(column) => write!(f, "index:{column}"),
            Input::All => f.write_str("all"),
        }
    }
}

impl FeatureLayout {
    /// A layout of `width` dense features and no index columns.
    pub fn dense(width: usize) -> Self {
        FeatureLayout {
            dense: width,
            index: Vec::new(),
        }
    }

    /// The layout of the rows `preprocess` writes.
    pub fn of(preprocess: &FittedPreprocessor) -> Result<Self> {
        let dense = preprocess.input_dim() - preprocess.spec().index.len();
        let mut index = Vec::with_capacity(preprocess.spec().index.len());
        for (i, column) in preprocess.spec().index.iter().enumerate() {
            let vocabulary = preprocess.vocabulary(column).map_or(0, <[String]>::len);
            let cardinality = vocabulary + 1;
            if cardinality > MAX_EXACT_CODE {
                return Err(Error::config(
                    "train.features.max_categories",
                    format!(
                        "index column `{column}` has {vocabulary} categories; codes are exact up to \
                         {MAX_EXACT_CODE}: set max_categories to at most {}",
                        MAX_EXACT_CODE - 1
                    ),
                ));
            }
            index.push(IndexInput {
                name: column.clone(),
                offset: dense + i,
                cardinality,
            });
        }
        Ok(FeatureLayout { dense, index })
    }

    /// Values per row.
    pub fn width(&self) -> usize {
        self.dense + self.index.len()
    }

    /// The index column `name`.
    pub fn index_input(&self, name: &str) -> Option<&IndexInput> {
        self.index.iter().find(|i| i.name == name)
    }

    /// Every input this layout provides.
    pub fn provided(&self) -> Vec<Input> {
        let mut out = vec![Input::All];
        if self.dense > 0 {
            out.push(Input::Dense);
        }
        out.extend(self.index.iter().map(|i| Input::Index(i.name.clone())));
        out
    }

    /// Checks that every input `needs` lists is here; the error names the model `kind`, the
    /// missing tensor and the `train.features` key that would provide it.
    pub fn check(&self, kind: &str, needs: &[Input]) -> Result<()> {
        for input in needs {
            let missing = match input {
                Input::All => self.width() == 0,
                Input::Dense => self.dense == 0,
                Input::Index(column) => self.index_input(column).is_none(),
            };
            if missing {
                let fix = match input {
                    Input::Index(column) => format!(
                        "list `{column}` under train.features.index (an integer code per category)"
                    ),
                    Input::Dense | Input::All => {
                        "list columns under train.features.standardize, numeric or one_hot".into()
                    }
                };
                let have: Vec<String> = self.provided().iter().map(Input::to_string).collect();
                return Err(Error::config(
                    "train.features",
                    format!(
                        "model `{kind}` reads the tensor `{input}`, which the preprocessing does not \
                         produce (it produces {}); {fix}",
                        have.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_names_the_missing_tensor_and_the_fix() {
        let layout = FeatureLayout {
            dense: 3,
            index: vec![IndexInput {
                name: "cat".into(),
                offset: 3,
                cardinality: 5,
            }],
        };
        assert_eq!(layout.width(), 4);
        layout
            .check("m", &[Input::Dense, Input::Index("cat".into()), Input::All])
            .unwrap();
        let err = layout
            .check("two_tower", &[Input::Index("entity".into())])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`two_tower`")
                && err.contains("index:entity")
                && err.contains("train.features.index")
                && err.contains("index:cat"),
            "{err}"
        );
        let err = FeatureLayout::dense(0)
            .check("m", &[Input::Dense])
            .unwrap_err()
            .to_string();
        assert!(err.contains("standardize"), "{err}");
    }
}
