//! [`Inputs`]: one batch of features as the named tensors of a [`FeatureLayout`].

use std::sync::Arc;

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

use super::layout::{FeatureLayout, Input};
use crate::error::{Error, Result};

/// One `sequence` column of a batch (see [`Inputs::sequence`]).
#[derive(Clone, Debug)]
pub struct Sequence<B: Backend> {
    /// `[rows, max_len]`: each row's last `max_len` elements, then zeros. Standardised numbers,
    /// or vocabulary codes (0 unseen, `1..=V`) for lists of strings.
    pub values: Tensor<B, 2>,
    /// `[rows]`: elements per row, `0..=max_len`.
    pub lengths: Tensor<B, 1, Int>,
    /// `[rows, max_len]`: 1 where a position holds an element, 0 where it is padding.
    pub mask: Tensor<B, 2>,
    /// Distinct codes for lists of strings (vocabulary plus one); `None` for lists of numbers.
    pub cardinality: Option<usize>,
}

impl<B: Backend> Sequence<B> {
    /// The elements as integer codes, `[rows, max_len]` (for an embedding over a list of
    /// strings).
    pub fn codes(&self) -> Tensor<B, 2, Int> {
        self.values.clone().int()
    }

    /// The mean of each row's elements, `[rows, features]`, from per-position vectors
    /// `[rows, max_len, features]` (e.g. embeddings or convolution outputs); padding is left
    /// out and an empty row gives zeros.
    pub fn masked_mean(&self, per_position: Tensor<B, 3>) -> Tensor<B, 2> {
        let [rows, len, features] = per_position.dims();
        let mask = self.mask.clone().reshape([rows, len, 1]);
        let sum = (per_position * mask.clone())
            .sum_dim(1)
            .reshape([rows, features]);
        let count = mask.sum_dim(1).reshape([rows, 1]).clamp_min(1.0);
        sum / count
    }
}

/// A batch of rows as named tensors: the dense block, each `index` column's codes, each
/// `sequence` column, or the whole feature vector. Slices of one `[rows, width]` tensor, taken
/// when asked for.
#[derive(Clone, Debug)]
pub struct Inputs<B: Backend> {
    rows: usize,
    x: Tensor<B, 2>,
    layout: Arc<FeatureLayout>,
}

impl<B: Backend> Inputs<B> {
    /// `rows` rows of row-major features `x` laid out as `layout` says.
    pub fn new(
        x: &[f32],
        rows: usize,
        layout: Arc<FeatureLayout>,
        device: &B::Device,
    ) -> Result<Self> {
        let width = layout.width();
        if rows.checked_mul(width) != Some(x.len()) {
            return Err(Error::Input(format!(
                "feature buffer has {} values, expected {rows} rows x {width} features",
                x.len()
            )));
        }
        let x = Tensor::from_data(TensorData::new(x.to_vec(), [rows, width]), device);
        Ok(Inputs { rows, x, layout })
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The layout the tensors come from.
    pub fn layout(&self) -> &FeatureLayout {
        &self.layout
    }

    /// The whole feature vector, `[rows, width]` (index codes as numbers).
    pub fn all(&self) -> Tensor<B, 2> {
        self.x.clone()
    }

    /// The dense block, `[rows, dense]`.
    pub fn dense(&self) -> Result<Tensor<B, 2>> {
        if self.layout.dense == 0 {
            return Err(self.missing(&Input::Dense));
        }
        Ok(self.x.clone().slice([0..self.rows, 0..self.layout.dense]))
    }

    /// The codes of `index` column `column`, `[rows]` in `0..cardinality` (0: unseen).
    pub fn index(&self, column: &str) -> Result<Tensor<B, 1, Int>> {
        let Some(input) = self.layout.index_input(column) else {
            return Err(self.missing(&Input::Index(column.to_owned())));
        };
        Ok(self
            .x
            .clone()
            .slice([0..self.rows, input.offset..input.offset + 1])
            .reshape([self.rows])
            .int())
    }

    /// Number of distinct codes of `index` column `column` (its vocabulary plus "unseen").
    pub fn cardinality(&self, column: &str) -> Result<usize> {
        self.layout
            .index_input(column)
            .map(|i| i.cardinality)
            .ok_or_else(|| self.missing(&Input::Index(column.to_owned())))
    }

    /// The sequence column `column`: padded elements, lengths and mask.
    pub fn sequence(&self, column: &str) -> Result<Sequence<B>> {
        let Some(input) = self.layout.sequence_input(column) else {
            return Err(self.missing(&Input::Sequence(column.to_owned())));
        };
        let (rows, len, at) = (self.rows, input.max_len, input.offset);
        let lengths = self.x.clone().slice([0..rows, at..at + 1]);
        let values = self.x.clone().slice([0..rows, at + 1..at + 1 + len]);
        let device = self.x.device();
        let positions = Tensor::<B, 1, Int>::arange(0..len as i64, &device)
            .float()
            .reshape([1, len])
            .expand([rows, len]);
        let mask = positions.lower(lengths.clone().expand([rows, len])).float();
        Ok(Sequence {
            values,
            lengths: lengths.reshape([rows]).int(),
            mask,
            cardinality: input.cardinality,
        })
    }

    fn missing(&self, input: &Input) -> Error {
        Error::Input(format!(
            "the model asked for tensor `{input}`, which these features do not hold; declare it in \
             the model's `inputs` so that the preprocessing is checked before training"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Cpu, cpu_device};
    use crate::model::layout::{IndexInput, SequenceInput};
    use crate::model::read_f32;

    #[test]
    fn slices_named_tensors() {
        let layout = Arc::new(FeatureLayout {
            dense: 2,
            index: vec![IndexInput {
                name: "cat".into(),
                offset: 2,
                cardinality: 4,
            }],
            ..FeatureLayout::default()
        });
        let x = [0.5, -1.0, 3.0, 1.5, 2.0, 0.0];
        let inputs = Inputs::<Cpu>::new(&x, 2, layout, &cpu_device()).unwrap();
        assert_eq!(
            read_f32(inputs.dense().unwrap()).unwrap(),
            vec![0.5, -1.0, 1.5, 2.0]
        );
        let codes = inputs.index("cat").unwrap().into_data().convert::<i64>();
        assert_eq!(codes.to_vec::<i64>().unwrap(), vec![3, 0]);
        assert_eq!(inputs.cardinality("cat").unwrap(), 4);
        assert_eq!(read_f32(inputs.all()).unwrap(), x.to_vec());
        assert!(inputs.index("dog").is_err());
        assert!(Inputs::<Cpu>::new(&x[1..], 2, inputs.layout.clone(), &cpu_device()).is_err());
    }

    #[test]
    fn sequences_with_lengths_and_masks() {
        let layout = Arc::new(FeatureLayout {
            dense: 1,
            sequence: vec![SequenceInput {
                name: "s".into(),
                offset: 1,
                max_len: 3,
                cardinality: None,
            }],
            ..FeatureLayout::default()
        });
        // Rows: dense, then length and three padded elements.
        let x = [9.0, 2.0, 1.0, 3.0, 0.0, 9.0, 0.0, 0.0, 0.0, 0.0];
        let inputs = Inputs::<Cpu>::new(&x, 2, layout, &cpu_device()).unwrap();
        let s = inputs.sequence("s").unwrap();
        assert_eq!(
            read_f32(s.values.clone()).unwrap(),
            vec![1.0, 3.0, 0.0, 0.0, 0.0, 0.0]
        );
        let lengths = s.lengths.clone().into_data().convert::<i64>();
        assert_eq!(lengths.to_vec::<i64>().unwrap(), vec![2, 0]);
        assert_eq!(
            read_f32(s.mask.clone()).unwrap(),
            vec![1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
        );
        let mean = s.masked_mean(s.values.clone().reshape([2, 3, 1]));
        assert_eq!(read_f32(mean).unwrap(), vec![2.0, 0.0]);
        assert!(inputs.sequence("t").is_err());
    }
}
