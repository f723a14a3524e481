//! Preprocessing: fit statistics over Arrow batches (in parallel, mergeable), then turn batches
//! into dense model features.
//!
//! ```text
//! FeatureSpec ─► FitState::new ─► update(batch)… ─► merge(other worker's state)… ─► finish()
//!                                                                                    │
//!                                   batch ─► FittedPreprocessor::transform ◄─────────┘
//!                                                 │
//!                                                 ▼
//!                                   Features { x, y, accepted, rejected }
//! ```

mod columns;
mod features;
mod fit;
mod fitted;
mod lists;
mod spec;
mod stats;
mod transform;

pub use features::{Features, RowError, Targets};
pub use fit::FitState;
pub use fitted::{FittedPreprocessor, LabelInfo, RawColumn, SequenceEncoding};
pub use spec::{FeatureSpec, LabelKind, MAX_SEQUENCE_LEN, NullPolicy, SequenceSpec};
pub use stats::{Counts, Moments};
