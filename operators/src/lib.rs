//! # millrace-operators
//!
//! The five kinds of node of a millrace graph, joining the engine (timely, batch streams,
//! collectives) to the connectors (Parquet) and the models (burn):
//!
//! ```text
//! ingest (Parquet) ─▶ preprocess (SQL, split, fitted encoding) ─▶ train-step (data-parallel)
//!                                                                 ├─▶ evaluate (metrics over all workers)
//!                                                                 └─▶ model bundle ─▶ serve (HTTP)
//! ```
//!
//! [`job`] runs a whole batch pipeline described by a [`spec::PipelineSpec`]; the pieces are usable
//! alone in custom graphs built with [`millrace_engine::Flow`].
//!
//! ```
//! use arrow::datatypes::{DataType, Field, Schema};
//! use millrace_operators::preprocess::SqlPlan;
//!
//! let input = Schema::new(vec![
//!     Field::new("f0", DataType::Float32, true),
//!     Field::new("f1", DataType::Float32, true),
//!     Field::new("label", DataType::Int8, false),
//! ]);
//! // Only the columns the query reads are decoded by the source.
//! let plan = SqlPlan::plan(Some("SELECT f0, label FROM input WHERE f0 > 0"), &input, &["f0".into(), "label".into()]).unwrap();
//! assert_eq!(plan.input_columns, vec!["f0", "label"]);
//! ```

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod batch_job;
pub mod checkpoint;
mod error;
pub mod evaluate;
pub mod ingest;
pub mod predict;
pub mod preprocess;
pub mod serve;
pub mod sink;
pub mod spec;
pub mod streaming;
pub mod train;
pub mod tune;
pub mod ui;

pub use error::{Error, Result};
