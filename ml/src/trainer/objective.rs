//! [`Objective`]: the loss a replica differentiates, built in ([`Loss`]) or the user's
//! ([`UserLoss`]).

use std::fmt;

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

use super::loss::{Loss, per_row_loss};
use super::targets::{TargetsRef, check_targets};
use crate::error::Result;
use crate::model::Task;

/// The targets of a batch as tensors, for a [`UserLoss`].
#[derive(Clone, Debug)]
pub enum TargetTensor<B: Backend> {
    /// Class indices, `[rows]`.
    Classes(Tensor<B, 1, Int>),
    /// Values, `[rows]`.
    Values(Tensor<B, 1>),
}

/// A loss a user writes: per-row values of a batch, on any backend.
///
/// ```
/// use burn::tensor::activation::log_softmax;
/// use burn::tensor::backend::Backend;
/// use burn::tensor::Tensor;
/// use millrace_ml::model::Task;
/// use millrace_ml::trainer::{TargetTensor, UserLoss};
///
/// /// Focal loss (γ = 2) for classification: `-(1 - p)^γ log p` of the true class.
/// struct Focal;
///
/// impl UserLoss for Focal {
///     fn validate(task: &Task) -> millrace_ml::Result<()> {
///         match task {
///             Task::Classification { .. } => Ok(()),
///             Task::Regression => Err(millrace_ml::Error::config("train.loss", "focal is for classification")),
///         }
///     }
///     fn per_row<B: Backend>(output: Tensor<B, 2>, targets: TargetTensor<B>) -> Tensor<B, 1> {
///         let TargetTensor::Classes(classes) = targets else { unreachable!("validated") };
///         let [rows, _] = output.dims();
///         let log_p = log_softmax(output, 1).gather(1, classes.reshape([rows, 1])).reshape([rows]);
///         let p = log_p.clone().exp();
///         p.neg().add_scalar(1.0).powi_scalar(2).mul(log_p).neg()
///     }
/// }
/// ```
pub trait UserLoss: Send + Sync + 'static {
    /// Checks that the loss fits `task`; the error should name `train.loss`.
    fn validate(task: &Task) -> Result<()>;

    /// The loss of each row, `[rows]`, from the model's `[rows, width]` output. Targets are
    /// checked first (classes in range, one per row).
    fn per_row<B: Backend>(output: Tensor<B, 2>, targets: TargetTensor<B>) -> Tensor<B, 1>;
}

/// A [`UserLoss`] bound to one backend: what an [`Objective`] holds.
pub struct UserLossFn<B: Backend> {
    /// The registered name (the `train.loss` value).
    pub name: String,
    /// [`UserLoss::validate`].
    pub validate: fn(&Task) -> Result<()>,
    /// [`UserLoss::per_row`] on `B`.
    pub per_row: fn(Tensor<B, 2>, TargetTensor<B>) -> Tensor<B, 1>,
}

impl<B: Backend> Clone for UserLossFn<B> {
    fn clone(&self) -> Self {
        UserLossFn {
            name: self.name.clone(),
            validate: self.validate,
            per_row: self.per_row,
        }
    }
}

impl<B: Backend> UserLossFn<B> {
    /// `L` on backend `B`, named `name`.
    pub fn of<L: UserLoss>(name: impl Into<String>) -> Self {
        UserLossFn {
            name: name.into(),
            validate: L::validate,
            per_row: L::per_row::<B>,
        }
    }
}

/// The loss a replica differentiates.
#[derive(Clone)]
pub enum Objective<B: Backend> {
    /// Cross-entropy, MSE or MAE.
    Builtin(Loss),
    /// A registered [`UserLoss`].
    User(UserLossFn<B>),
}

impl<B: Backend> fmt::Debug for Objective<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl<B: Backend> From<Loss> for Objective<B> {
    fn from(loss: Loss) -> Self {
        Objective::Builtin(loss)
    }
}

impl<B: Backend> Objective<B> {
    /// The config name.
    pub fn name(&self) -> &str {
        match self {
            Objective::Builtin(loss) => loss.name(),
            Objective::User(f) => &f.name,
        }
    }

    /// Checks that the loss fits `task`.
    pub fn validate(&self, task: &Task) -> Result<()> {
        match self {
            Objective::Builtin(loss) => loss.validate(task),
            Objective::User(f) => (f.validate)(task),
        }
    }

    /// The loss of each row, `[rows]` (targets checked first: a class out of range is an
    /// input error, not a panic in the backend).
    pub fn per_row(
        &self,
        output: Tensor<B, 2>,
        targets: TargetsRef<'_>,
        task: &Task,
        device: &B::Device,
    ) -> Result<Tensor<B, 1>> {
        match self {
            Objective::Builtin(loss) => per_row_loss(output, targets, task, *loss, device),
            Objective::User(f) => {
                (f.validate)(task)?;
                let [rows, _] = output.dims();
                check_targets(task, targets, rows)?;
                let targets = match targets {
                    TargetsRef::Classes(c) => TargetTensor::Classes(Tensor::from_data(
                        TensorData::new(c.to_vec(), [rows]),
                        device,
                    )),
                    TargetsRef::Values(v) => TargetTensor::Values(Tensor::from_data(
                        TensorData::new(v.to_vec(), [rows]),
                        device,
                    )),
                };
                Ok((f.per_row)(output, targets))
            }
        }
    }
}
