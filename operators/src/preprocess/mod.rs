//! Preprocess nodes: row-wise SQL, the train/eval split, and feature encoding (fitted in `millrace-ml`).

mod compiled;
mod fit;
mod split;
mod sql;
mod udf;

pub use compiled::CompiledSql;
pub(crate) use fit::merge_fits;
pub use split::HashSplit;
pub use sql::{INPUT_TABLE, SqlPlan, SqlRunner};
pub use udf::{Udf, UdfFn, check_udfs, register_udf, registered_udfs};
