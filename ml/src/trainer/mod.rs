//! Training: the [`Trainer`] replica (forward, backward, optimiser step), its targets and its
//! loss ([`Loss`], [`Reduction`]).

mod loss;
mod targets;
mod train;

pub use loss::{Loss, Reduction};
pub use targets::TargetsRef;
#[cfg(feature = "cuda")]
pub(crate) use targets::{check_features, check_flat_len, check_targets};
pub use train::Trainer;
pub(crate) use train::predict_with;
#[cfg(feature = "cuda")]
pub(crate) use train::replica_config;

#[cfg(test)]
mod tests;
