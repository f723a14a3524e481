//! Preprocess nodes: row-wise SQL, the train/eval split, and feature encoding (fitted in `millrace-ml`).

mod split;
mod sql;

pub use split::HashSplit;
pub use sql::{INPUT_TABLE, SqlPlan, SqlRunner};
