//! Train-step: synchronous data-parallel training over the dataflow.

mod buffer;
mod data_parallel;
mod message;
mod order;
mod position;
mod rows;
pub(crate) mod spill;
mod step;

pub(crate) use data_parallel::train_in_loop;
pub use data_parallel::{TrainEvent, TrainReport, train_data_parallel};
pub(crate) use message::{JobMsg, OperatorRow, exchange};
pub(crate) use order::{checksum as parameter_checksum, sample_rows};
pub use position::{DataFingerprint, EvalRecord, TrainControl, TrainPosition};
pub use rows::TrainRows;
pub(crate) use step::apply_summed_gradient;
