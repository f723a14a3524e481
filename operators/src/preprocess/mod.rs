//! Preprocess nodes: row-wise SQL, user steps over batches, the train/eval split, and feature encoding (fitted in `millrace-ml`).

mod compiled;
mod fit;
mod split;
mod sql;
mod steps;
mod udf;

pub use compiled::CompiledSql;
pub(crate) use fit::{merge_fits, merge_in_worker_order};
pub use split::HashSplit;
pub(crate) use sql::context;
pub use sql::{INPUT_TABLE, SqlPlan, SqlRunner};
pub use steps::{
    FilterFn, MapFn, Step, StepChain, StepNames, put_step, register_step, registered_steps,
};
pub use udf::{Udf, UdfFn, check_udfs, register_udf, registered_udfs};
