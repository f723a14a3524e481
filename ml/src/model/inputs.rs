//! [`Inputs`]: one batch of features as the named tensors of a [`FeatureLayout`].

use std::sync::Arc;

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

use super::layout::{FeatureLayout, Input};
use crate::error::{Error, Result};

/// A batch of rows as named tensors: the dense block, each `index` column's codes, or the whole
/// feature vector. Slices of one `[rows, width]` tensor, taken when asked for.
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
    use crate::model::layout::IndexInput;
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
}
