//! Training: the [`Trainer`] replica (forward, backward, optimiser step) and its targets.

mod loss;
mod targets;
mod train;

pub use targets::TargetsRef;
pub use train::Trainer;
pub(crate) use train::predict_with;
