//! Integration tests for millrace-ml (one binary, several modules).
#![allow(clippy::unwrap_used, missing_docs)]

mod bundle;
mod common;
#[cfg(feature = "cuda")]
mod gpu;
mod preprocess;
mod sequence;
mod trainer;
