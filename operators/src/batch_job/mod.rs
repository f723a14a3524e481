//! The batch job: ingest → preprocess → train → evaluate, on timely workers, writing a run directory.

pub mod checkpoint;
mod clock;
mod encode;
mod ingest;
mod metrics_log;
mod output;
pub(crate) mod plan;
mod progress;
mod run;
mod summary;
mod train;
mod tune;

pub use clock::FinishedRun;
pub(crate) use output::prepare_location;
pub use plan::JobPlan;
pub use progress::{NoProgress, Progress};
pub(crate) use run::write_dead_letters;
pub use run::{RunOptions, run, run_without_summary};
pub use summary::{
    BranchSummary, CheckpointStats, OperatorSummary, Phases, Summary, peak_rss_bytes,
};
pub use tune::{TrialStatus, TrialSummary, TuneSummary};
