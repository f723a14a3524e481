//! Losses: the user's choice ([`Loss`], [`Reduction`]) and the per-row loss the trainer
//! differentiates.

use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::targets::{TargetsRef, check_targets};
use crate::error::{Error, Result};
use crate::model::Task;

/// The training loss (the `train.loss` config key).
///
/// When the config leaves it out, [`Loss::for_task`] picks cross-entropy for classification and
/// squared error for regression.
///
/// ```
/// use millrace_ml::model::Task;
/// use millrace_ml::trainer::Loss;
/// let loss: Loss = serde_json::from_str(r#""mae""#).unwrap();
/// assert_eq!(loss, Loss::Mae);
/// assert!(loss.validate(&Task::Regression).is_ok());
/// let err = loss.validate(&Task::Classification { num_classes: 2 }).unwrap_err();
/// assert!(err.to_string().contains("train.loss"));
/// assert_eq!(Loss::for_task(&Task::Regression), Loss::Mse);
/// ```
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Loss {
    /// Softmax cross-entropy of the logits against the class, `-log softmax(o)[y]`
    /// (classification; `cross_entropy`).
    CrossEntropy,
    /// Squared error `(o - y)²` (regression; `mse`).
    Mse,
    /// Absolute error `|o - y|` (regression; `mae`). Its gradient with respect to the output is
    /// exactly `sign(o - y)` (0 where `o == y`).
    Mae,
}

impl Loss {
    /// The default loss for `task`: cross-entropy for classification, squared error for
    /// regression.
    pub fn for_task(task: &Task) -> Self {
        match task {
            Task::Classification { .. } => Loss::CrossEntropy,
            Task::Regression => Loss::Mse,
        }
    }

    /// The config name (`cross_entropy`, `mse`, `mae`).
    pub fn name(&self) -> &'static str {
        match self {
            Loss::CrossEntropy => "cross_entropy",
            Loss::Mse => "mse",
            Loss::Mae => "mae",
        }
    }

    /// Checks that the loss fits `task`; the error names `train.loss`.
    pub fn validate(&self, task: &Task) -> Result<()> {
        match (self, task) {
            (Loss::CrossEntropy, Task::Classification { .. })
            | (Loss::Mse | Loss::Mae, Task::Regression) => Ok(()),
            (Loss::CrossEntropy, Task::Regression) => Err(Error::config(
                "train.loss",
                "`cross_entropy` is a classification loss but the task is regression; \
                 use `mse` or `mae` (or leave `loss` out for `mse`)",
            )),
            (Loss::Mse | Loss::Mae, Task::Classification { .. }) => Err(Error::config(
                "train.loss",
                format!(
                    "`{}` is a regression loss but the task is classification; \
                     use `cross_entropy` (or leave `loss` out)",
                    self.name()
                ),
            )),
        }
    }
}

impl std::fmt::Display for Loss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How the per-row losses of a batch combine into the loss that is differentiated (the
/// `train.reduction` config key).
///
/// ```
/// use millrace_ml::trainer::Reduction;
/// assert_eq!(Reduction::default(), Reduction::Mean);
/// assert_eq!(Reduction::Mean.scale(4), 0.25);
/// assert_eq!(Reduction::Sum.scale(4), 1.0);
/// ```
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Reduction {
    /// The mean over the batch's rows (`mean`): the step does not depend on the batch size.
    #[default]
    Mean,
    /// The sum over the batch's rows (`sum`): each row contributes its full gradient.
    Sum,
}

impl Reduction {
    /// The factor applied to the summed loss (and gradient) of a batch of `rows` rows: `1 / rows`
    /// for [`Reduction::Mean`] (1 for an empty batch), 1 for [`Reduction::Sum`].
    pub fn scale(&self, rows: u64) -> f32 {
        match self {
            Reduction::Mean if rows > 0 => 1.0 / rows as f32,
            Reduction::Mean | Reduction::Sum => 1.0,
        }
    }
}

/// The `loss` of each row, shape `[rows]`.
///
/// `output` is `[rows, num_classes]` logits or `[rows, 1]` values. Targets are checked first:
/// a class outside `0..num_classes` is an [`Error::Input`], never a panic inside the backend.
/// `loss` must fit `task` ([`Loss::validate`]).
pub(crate) fn per_row_loss<B: Backend>(
    output: Tensor<B, 2>,
    targets: TargetsRef<'_>,
    task: &Task,
    loss: Loss,
    device: &B::Device,
) -> Result<Tensor<B, 1>> {
    loss.validate(task)?;
    let [rows, width] = output.dims();
    check_targets(task, targets, rows)?;
    match (task, targets) {
        (Task::Classification { num_classes }, TargetsRef::Classes(classes)) => {
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
            let error = output.reshape([rows]) - target;
            Ok(match loss {
                Loss::Mae => error.abs(),
                Loss::Mse | Loss::CrossEntropy => error.square(),
            })
        }
        // `check_targets` refused these.
        (Task::Classification { .. }, TargetsRef::Values(_))
        | (Task::Regression, TargetsRef::Classes(_)) => Err(Error::Internal(
            "targets of the wrong kind passed the check".into(),
        )),
    }
}

/// The `train.loss` value: a built-in [`Loss`] or the name of a registered
/// [`UserLoss`](super::UserLoss). Written as one string either way (`"mse"`, `"focal"`).
///
/// ```
/// use millrace_ml::trainer::{Loss, LossChoice};
/// let loss: LossChoice = serde_json::from_str(r#""mae""#).unwrap();
/// assert_eq!(loss, LossChoice::Builtin(Loss::Mae));
/// let loss: LossChoice = serde_json::from_str(r#""focal""#).unwrap();
/// assert_eq!(loss, LossChoice::User("focal".into()));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum LossChoice {
    /// Cross-entropy, MSE or MAE.
    Builtin(Loss),
    /// A loss registered under this name.
    User(String),
}

impl LossChoice {
    /// The config name.
    pub fn name(&self) -> &str {
        match self {
            LossChoice::Builtin(loss) => loss.name(),
            LossChoice::User(name) => name,
        }
    }
}

impl From<Loss> for LossChoice {
    fn from(loss: Loss) -> Self {
        LossChoice::Builtin(loss)
    }
}

impl std::fmt::Display for LossChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for LossChoice {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for LossChoice {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        Ok(
            match serde_json::from_value::<Loss>(serde_json::Value::String(name.clone())) {
                Ok(loss) => LossChoice::Builtin(loss),
                Err(_) => LossChoice::User(name),
            },
        )
    }
}
