//! Synthetic datasets for benchmarks and tests, generated deterministically from a seed.

mod rng;
pub mod tabular;

pub use rng::Rng;
