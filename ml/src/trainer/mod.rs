//! Training: the built-in [`Trainer`] replica (forward, backward, optimiser step), the generic
//! [`ModuleTrainer`] for any [`Model`](crate::model::Model), their targets and their loss
//! ([`Loss`], [`Reduction`], a user's [`UserLoss`]).

mod dense_step;
mod loss;
mod module_trainer;
mod objective;
mod targets;
mod train;

pub use loss::{Loss, LossChoice, Reduction};
pub use module_trainer::{DynTrainer, ModuleTrainer};
pub(crate) use module_trainer::{checked_forward, output_values, seeded_init};
pub use objective::{Objective, TargetTensor, UserLoss, UserLossFn};
pub use targets::TargetsRef;
#[cfg(feature = "cuda")]
pub(crate) use targets::{check_features, check_flat_len, check_targets};
pub use train::Trainer;
pub(crate) use train::predict_with;
#[cfg(feature = "cuda")]
pub(crate) use train::replica_config;

#[cfg(test)]
mod dense_tests;
#[cfg(test)]
mod module_tests;
#[cfg(test)]
mod tests;
