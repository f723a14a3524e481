//! What the user writes in the `train.model` config section, and the learning task.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Which family of model to train.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// A multi-layer perceptron: `hidden` must list at least one layer width.
    Mlp,
    /// Logistic (softmax) regression: classification, no hidden layers.
    Logistic,
    /// Linear regression: regression, no hidden layers.
    Linear,
}

/// The non-linearity between hidden layers of an MLP.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// `max(0, x)`.
    #[default]
    Relu,
    /// Hyperbolic tangent.
    Tanh,
    /// Gaussian error linear unit (exact, erf based).
    Gelu,
    /// Logistic sigmoid.
    Sigmoid,
}

/// The model section of a training config.
///
/// ```
/// use millrace_ml::model::{ModelKind, ModelSpec, Task};
/// let spec: ModelSpec = serde_json::from_str(r#"{"kind": "mlp", "hidden": [64, 64]}"#).unwrap();
/// assert_eq!(spec.kind, ModelKind::Mlp);
/// spec.validate(&Task::Classification { num_classes: 2 }).unwrap();
/// ```
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// Model family.
    pub kind: ModelKind,
    /// Hidden layer widths, input side first (MLP only).
    #[serde(default)]
    pub hidden: Vec<usize>,
    /// Activation between hidden layers (MLP only; default `relu`).
    #[serde(default)]
    pub activation: Activation,
}

/// What the model predicts.
///
/// Serialised externally tagged (`{"classification": {"num_classes": 3}}` or `"regression"`),
/// which every serde format, bincode included, can read back.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// Predict one of `num_classes` classes (labels `0..num_classes`); binary is 2 classes.
    Classification {
        /// Number of classes, at least 2.
        num_classes: usize,
    },
    /// Predict one real value.
    Regression,
}

impl Task {
    /// Width of the model's output layer: `num_classes` or 1.
    pub fn output_dim(&self) -> usize {
        match self {
            Task::Classification { num_classes } => *num_classes,
            Task::Regression => 1,
        }
    }

    /// Checks the task itself (at least two classes).
    pub fn validate(&self) -> Result<()> {
        match self {
            Task::Classification { num_classes } if *num_classes < 2 => Err(Error::config(
                "train.task",
                format!(
                    "classification needs at least 2 classes, got {num_classes}; \
                     check that the label column holds more than one class"
                ),
            )),
            _ => Ok(()),
        }
    }
}

impl ModelSpec {
    /// A spec of the given kind with no hidden layers and the default activation.
    pub fn new(kind: ModelKind) -> Self {
        Self {
            kind,
            hidden: Vec::new(),
            activation: Activation::default(),
        }
    }

    /// An MLP with the given hidden widths.
    pub fn mlp(hidden: impl Into<Vec<usize>>, activation: Activation) -> Self {
        Self {
            kind: ModelKind::Mlp,
            hidden: hidden.into(),
            activation,
        }
    }

    /// Checks that the spec makes sense for `task`; errors name the config key to change.
    pub fn validate(&self, task: &Task) -> Result<()> {
        task.validate()?;
        match (self.kind, task) {
            (ModelKind::Logistic, Task::Regression) => {
                return Err(Error::config(
                    "train.model.kind",
                    "`logistic` is a classifier but the task is regression; \
                     use `kind: linear` (or `kind: mlp`) for a numeric label",
                ));
            }
            (ModelKind::Linear, Task::Classification { .. }) => {
                return Err(Error::config(
                    "train.model.kind",
                    "`linear` is a regressor but the task is classification; \
                     use `kind: logistic` (or `kind: mlp`) for a class label",
                ));
            }
            _ => {}
        }
        match self.kind {
            ModelKind::Mlp if self.hidden.is_empty() => Err(Error::config(
                "train.model.hidden",
                "`kind: mlp` needs at least one hidden layer, e.g. `hidden: [64, 64]` \
                 (or use `kind: logistic` / `kind: linear` for no hidden layers)",
            )),
            ModelKind::Logistic | ModelKind::Linear if !self.hidden.is_empty() => {
                Err(Error::config(
                    "train.model.hidden",
                    format!(
                        "hidden layers are only for `kind: mlp`; remove `hidden` or set `kind: mlp` \
                         (got kind {:?} with hidden {:?})",
                        self.kind, self.hidden
                    ),
                ))
            }
            _ => match self.hidden.iter().position(|&w| w == 0) {
                Some(i) => Err(Error::config(
                    "train.model.hidden",
                    format!("hidden layer {i} has width 0; every width must be at least 1"),
                )),
                None => Ok(()),
            },
        }
    }

    /// Layer widths from input to output: `[input_dim, hidden.., output_dim]`.
    pub fn layer_dims(&self, input_dim: usize, task: &Task) -> Vec<usize> {
        let mut dims = Vec::with_capacity(self.hidden.len() + 2);
        dims.push(input_dim);
        dims.extend_from_slice(&self.hidden);
        dims.push(task.output_dim());
        dims
    }

    /// Number of trainable parameters (weights and biases) for this spec.
    pub fn num_params(&self, input_dim: usize, task: &Task) -> usize {
        self.layer_dims(input_dim, task)
            .windows(2)
            .map(|w| w[0] * w[1] + w[1])
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BINARY: Task = Task::Classification { num_classes: 2 };

    #[test]
    fn parses_with_defaults() -> Result<(), serde_json::Error> {
        let spec: ModelSpec = serde_json::from_str(r#"{"kind":"logistic"}"#)?;
        assert_eq!(spec, ModelSpec::new(ModelKind::Logistic));
        let spec: ModelSpec =
            serde_json::from_str(r#"{"kind":"mlp","hidden":[8],"activation":"tanh"}"#)?;
        assert_eq!(spec.activation, Activation::Tanh);
        assert!(serde_json::from_str::<ModelSpec>(r#"{"kind":"mlp","hiden":[8]}"#).is_err());
        Ok(())
    }

    #[test]
    fn validation_names_the_key() {
        let err = ModelSpec::new(ModelKind::Mlp)
            .validate(&BINARY)
            .unwrap_err();
        assert!(err.to_string().contains("train.model.hidden"), "{err}");
        let err = ModelSpec::new(ModelKind::Logistic)
            .validate(&Task::Regression)
            .unwrap_err();
        assert!(err.to_string().contains("kind: linear"), "{err}");
        let err = ModelSpec::new(ModelKind::Linear)
            .validate(&BINARY)
            .unwrap_err();
        assert!(err.to_string().contains("kind: logistic"), "{err}");
        assert!(
            ModelSpec::mlp([4, 0], Activation::Relu)
                .validate(&BINARY)
                .is_err()
        );
        assert!(
            ModelSpec::new(ModelKind::Logistic)
                .validate(&Task::Classification { num_classes: 1 })
                .is_err()
        );
        assert!(
            ModelSpec::mlp([4], Activation::Gelu)
                .validate(&Task::Regression)
                .is_ok()
        );
    }

    #[test]
    fn counts_parameters() {
        let spec = ModelSpec::mlp([64, 64], Activation::Relu);
        assert_eq!(
            spec.num_params(24, &BINARY),
            24 * 64 + 64 + 64 * 64 + 64 + 64 * 2 + 2
        );
        assert_eq!(
            ModelSpec::new(ModelKind::Linear).num_params(3, &Task::Regression),
            4
        );
    }

    #[test]
    fn task_serialises_externally_tagged() -> Result<(), serde_json::Error> {
        assert_eq!(
            serde_json::to_string(&BINARY)?,
            r#"{"classification":{"num_classes":2}}"#
        );
        assert_eq!(serde_json::to_string(&Task::Regression)?, r#""regression""#);
        Ok(())
    }
}
