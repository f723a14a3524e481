//! Preprocess nodes: row-wise SQL, the train/eval split, and feature encoding (fitted in `millrace-ml`).

mod compiled;
mod split;
mod sql;

pub use compiled::CompiledSql;
pub use split::HashSplit;
pub use sql::{INPUT_TABLE, SqlPlan, SqlRunner};
