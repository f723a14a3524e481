//! Streaming jobs: a Kafka topic in, a model trained online (test-then-train), versions published
//! to the model server while it serves, checkpoints and Kafka offsets committed together.
//!
//! ```text
//!  Kafka partitions ─(p % workers)─▶ worker: poll → decode (dead letters) → SQL → late? → encode
//!        ▲                                   → score with the current model (prequential)
//!        │ commit offsets                    → gradient of its rows
//!        │                                         │ one message per worker per step
//!  checkpoint (model, optimiser, offsets) ◀── all workers: summed gradient → same update
//!                                                  │ every N steps / T s
//!                                          publish version → model server (hot swap), models/<v>/
//! ```
//!
//! With an event-time column, each worker keeps a watermark per partition it reads (its newest
//! event time minus `max_out_of_orderness`), takes the minimum over its partitions that are not
//! idle (no record for `idle_timeout`), and sends it with its step message; the job's watermark
//! is the minimum over the workers and never goes back. Records behind it are late, and windows
//! close on it. Each checkpoint holds it and every partition's newest event time.

pub mod checkpoint;
mod clock;
pub mod features;
mod fit;
mod input;
mod late;
pub mod metrics;
mod outputs;
pub mod plan;
pub mod prequential;
mod publish;
mod run;
pub mod spec;
mod watermark;
pub mod window;
mod window_output;
mod worker;

pub use checkpoint::{Checkpoint, StreamCheckpoints};
pub use clock::{FinishedStream, StreamPhases};
pub use features::{FeaturePlan, FeaturesCheckpoint};
pub use plan::StreamPlan;
pub use run::{
    OnPublish, StreamBranchSummary, StreamOptions, StreamSummary, run_stream,
    run_stream_without_summary,
};
pub use spec::StreamSpec;
