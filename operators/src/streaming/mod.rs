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

pub mod checkpoint;
mod clock;
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
mod windows;
mod worker;

pub use checkpoint::{Checkpoint, StreamCheckpoints};
pub use clock::{FinishedStream, StreamPhases};
pub use plan::StreamPlan;
pub use run::{StreamOptions, StreamSummary, run_stream, run_stream_without_summary};
pub use spec::StreamSpec;
