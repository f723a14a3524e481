//! The batch job: ingest → preprocess → train → evaluate, on timely workers, writing a run directory.

mod output;
mod plan;
mod progress;
mod run;
mod summary;

pub use plan::JobPlan;
pub use progress::{NoProgress, Progress};
pub use run::{RunOptions, run};
pub use summary::{OperatorSummary, Summary, peak_rss_bytes};
