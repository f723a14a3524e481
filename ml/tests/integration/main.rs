//! Integration tests for millrace-ml (one binary, several modules).
#![allow(clippy::unwrap_used, missing_docs)]

mod bundle;
mod common;
mod preprocess;
mod trainer;
