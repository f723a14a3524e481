//! Per-row losses: softmax cross-entropy (classification) and squared error (regression).

use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

use super::targets::TargetsRef;
use crate::error::{Error, Result};
use crate::model::Task;

/// The loss of each row, shape `[rows]`.
///
/// `output` is `[rows, num_classes]` logits or `[rows, 1]` values. Targets are checked first:
/// a class outside `0..num_classes` is an [`Error::Input`], never a panic inside the backend.
pub(crate) fn per_row_loss<B: Backend>(
    output: Tensor<B, 2>,
    targets: TargetsRef<'_>,
    task: &Task,
    device: &B::Device,
) -> Result<Tensor<B, 1>> {
    let [rows, width] = output.dims();
    if targets.len() != rows {
        return Err(Error::Input(format!(
            "{} targets for {rows} rows",
            targets.len()
        )));
    }
    match (task, targets) {
        (Task::Classification { num_classes }, TargetsRef::Classes(classes)) => {
            let k = *num_classes as i64;
            if let Some((row, bad)) = classes
                .iter()
                .enumerate()
                .find(|(_, c)| !(0..k).contains(*c))
            {
                return Err(Error::Input(format!(
                    "class {bad} at row {row} is outside 0..{num_classes}"
                )));
            }
            debug_assert_eq!(width, *num_classes);
            let index = Tensor::<B, 2, Int>::from_data(
                TensorData::new(classes.to_vec(), [rows, 1]),
                device,
            );
            Ok(log_softmax(output, 1)
                .gather(1, index)
                .reshape([rows])
                .neg())
        }
        (Task::Regression, TargetsRef::Values(values)) => {
            let target =
                Tensor::<B, 1>::from_data(TensorData::new(values.to_vec(), [rows]), device);
            Ok((output.reshape([rows]) - target).square())
        }
        (Task::Classification { .. }, TargetsRef::Values(_)) => Err(Error::Input(
            "classification needs class targets (TargetsRef::Classes), got values".into(),
        )),
        (Task::Regression, TargetsRef::Classes(_)) => Err(Error::Input(
            "regression needs value targets (TargetsRef::Values), got classes".into(),
        )),
    }
}
