//! [`FeatureLayout`]: the named tensors inside a row of features.
//!
//! A fitted preprocessor writes each accepted row as one flat `f32` vector (the form the engine
//! shuffles, batches and checkpoints). The layout says what that vector holds, so a model can
//! read it as named tensors ([`Inputs`](super::Inputs)):
//!
//! ```text
//! [ standardize.. numeric.. one_hot vocabularies.. | index columns.. | len e0 e1 .. e(max_len-1) ].. ]
//!   └──────────── "dense" block (f32) ───────────┘   └ code per column┘ └ per sequence column ─────┘
//! ```
//!
//! Index codes are 0 for unseen and `1..=V` for vocabulary entries. A sequence column holds its
//! length, then its last `max_len` elements (standardised numbers, or codes as index columns have
//! them), padded with zeros.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::preprocess::{FeatureSpec, FittedPreprocessor, SequenceEncoding};

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

/// A `sequence` (list) column as a model input: a length and `max_len` padded elements per row.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SequenceInput {
    /// The column name (the input's name).
    pub name: String,
    /// Position of the length in the row's feature vector; the elements follow it.
    pub offset: usize,
    /// Elements per row, padding included.
    pub max_len: usize,
    /// For lists of strings: the number of distinct codes (vocabulary plus one, 0 is "unseen").
    /// `None` for lists of numbers (standardised values).
    pub cardinality: Option<usize>,
}

/// What a row's feature vector holds, as named tensors.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct FeatureLayout {
    /// Width of the dense block (standardised, numeric and one-hot features), at the start.
    pub dense: usize,
    /// The `index` columns, after the dense block, in `train.features.index` order.
    pub index: Vec<IndexInput>,
    /// The `sequence` columns, after the index columns, in `train.features.sequence` order.
    #[serde(default)]
    pub sequence: Vec<SequenceInput>,
}

/// A named tensor a model reads (see [`Model::inputs`](super::Model::inputs)).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Input {
    /// The dense block, `[rows, dense]` `f32`.
    Dense,
    /// The codes of one `index` column, `[rows]` integers in `0..cardinality`.
    Index(String),
    /// One `sequence` column: `[rows, max_len]` padded elements and `[rows]` lengths.
    Sequence(String),
    /// The whole feature vector, `[rows, width]` `f32` (index codes as numbers), as the
    /// built-in MLP reads it.
    All,
}

impl std::fmt::Display for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Input::Dense => f.write_str("dense"),
            Input::Index(column) => write!(f, "index:{column}"),
            Input::Sequence(column) => write!(f, "sequence:{column}"),
            Input::All => f.write_str("all"),
        }
    }
}

impl FeatureLayout {
    /// A layout of `width` dense features and no index columns.
    pub fn dense(width: usize) -> Self {
        FeatureLayout {
            dense: width,
            ..FeatureLayout::default()
        }
    }

    /// The layout `spec` will produce, before fitting: one category per string column stands
    /// in for the vocabularies, and lists are taken to be of numbers. Enough to check that a
    /// model's inputs are there before any data is read.
    pub fn planned(spec: &FeatureSpec) -> Self {
        let dense = spec.standardize.len() + spec.numeric.len() + spec.one_hot.len();
        Self::assemble(
            dense,
            spec.index.iter().map(|c| (c.clone(), 2)),
            spec.sequence
                .iter()
                .map(|s| (s.column.clone(), s.max_len, None)),
        )
    }

    fn assemble(
        dense: usize,
        index: impl Iterator<Item = (String, usize)>,
        sequence: impl Iterator<Item = (String, usize, Option<usize>)>,
    ) -> Self {
        let index: Vec<IndexInput> = index
            .enumerate()
            .map(|(i, (name, cardinality))| IndexInput {
                name,
                offset: dense + i,
                cardinality,
            })
            .collect();
        let mut offset = dense + index.len();
        let sequence = sequence
            .map(|(name, max_len, cardinality)| {
                let input = SequenceInput {
                    name,
                    offset,
                    max_len,
                    cardinality,
                };
                offset += 1 + max_len;
                input
            })
            .collect();
        FeatureLayout {
            dense,
            index,
            sequence,
        }
    }

    /// The layout of the rows `preprocess` writes.
    pub fn of(preprocess: &FittedPreprocessor) -> Result<Self> {
        let spec = preprocess.spec();
        let cardinality = |column: &str| -> Result<usize> {
            let vocabulary = preprocess.vocabulary(column).map_or(0, <[String]>::len);
            if vocabulary + 1 > MAX_EXACT_CODE {
                return Err(Error::config(
                    "train.features.max_categories",
                    format!(
                        "column `{column}` has {vocabulary} categories; codes are exact up to \
                         {MAX_EXACT_CODE}: set max_categories to at most {}",
                        MAX_EXACT_CODE - 1
                    ),
                ));
            }
            Ok(vocabulary + 1)
        };
        let index = spec
            .index
            .iter()
            .map(|c| Ok((c.clone(), cardinality(c)?)))
            .collect::<Result<Vec<_>>>()?;
        let sequence = spec
            .sequence
            .iter()
            .zip(preprocess.sequence_encodings())
            .map(|(s, encoding)| {
                let codes = match encoding {
                    SequenceEncoding::Codes { .. } => Some(cardinality(&s.column)?),
                    SequenceEncoding::Values { .. } => None,
                };
                Ok((s.column.clone(), s.max_len, codes))
            })
            .collect::<Result<Vec<_>>>()?;
        let sequence_width: usize = spec.sequence.iter().map(|s| 1 + s.max_len).sum();
        let dense = preprocess.input_dim() - index.len() - sequence_width;
        Ok(Self::assemble(
            dense,
            index.into_iter(),
            sequence.into_iter(),
        ))
    }

    /// Values per row.
    pub fn width(&self) -> usize {
        self.dense + self.index.len() + self.sequence.iter().map(|s| 1 + s.max_len).sum::<usize>()
    }

    /// The sequence column `name`.
    pub fn sequence_input(&self, name: &str) -> Option<&SequenceInput> {
        self.sequence.iter().find(|s| s.name == name)
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
        out.extend(
            self.sequence
                .iter()
                .map(|s| Input::Sequence(s.name.clone())),
        );
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
                Input::Sequence(column) => self.sequence_input(column).is_none(),
            };
            if missing {
                let fix = match input {
                    Input::Index(column) => format!(
                        "list `{column}` under train.features.index (an integer code per category)"
                    ),
                    Input::Sequence(column) => format!(
                        "add {{ column = \"{column}\", max_len = N }} to train.features.sequence \
                         (a list column, padded to max_len)"
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
            sequence: vec![SequenceInput {
                name: "clicks".into(),
                offset: 4,
                max_len: 3,
                cardinality: None,
            }],
        };
        assert_eq!(layout.width(), 8);
        layout
            .check("m", &[Input::Sequence("clicks".into())])
            .unwrap();
        let err = layout
            .check("m", &[Input::Sequence("words".into())])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("sequence:words") && err.contains("train.features.sequence"),
            "{err}"
        );
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
