//! The batch job: ingest → preprocess → train → evaluate, on timely workers, writing a run directory.

pub mod checkpoint;
mod ingest;
mod output;
pub(crate) mod plan;
mod progress;
mod run;
mod summary;

pub use plan::JobPlan;
pub use progress::{NoProgress, Progress};
pub(crate) use run::write_dead_letters;
pub use run::{RunOptions, run};
pub use summary::{CheckpointStats, OperatorSummary, Summary, peak_rss_bytes};
