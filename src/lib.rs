//! # millrace
//!
//! A dataflow engine for AI applications: one graph of **ingest → preprocess → train-step →
//! evaluate → serve** operators on timely dataflow workers, as a batch job (Parquet → trained model)
//! today and a streaming job tomorrow.
//!
//! This crate is the facade: [`prelude`] for the Rust DSL, [`pipeline_file`] for TOML pipelines,
//! and the `millrace` CLI. The layers underneath are usable alone:
//! [`connectors`] (Arrow from Parquet), [`ml`] (models, preprocessing, metrics),
//! [`engine`] (workers, batch streams, collectives), [`operators`] (the five node kinds).
//!
//! ```
//! use millrace::prelude::*;
//!
//! let dir = std::env::temp_dir().join(format!("millrace-doc-{}", std::process::id()));
//! millrace::data::generate_tabular(&dir.join("train"), 6_000, 2, 1, false).unwrap();
//! let report = Pipeline::new("doc")
//!     .ingest_parquet(dir.join("train"))
//!     .sql("SELECT * FROM input WHERE f3 IS NOT NULL")
//!     .standardize(["f0", "f1", "f2", "f3", "f4", "f5", "f6", "f7", "f8"])
//!     .one_hot(["cat"])
//!     .label("label")
//!     .train(Train::logistic().lr(0.05).batch_size(256).epochs(2))
//!     .eval_split(0.2, 7)
//!     .run_dir(dir.join("run"))
//!     .run()
//!     .unwrap();
//! assert_eq!(report.summary.rows_read, 6_000);
//! assert!(report.run_dir.join("model/model.json").exists());
//! # std::fs::remove_dir_all(&dir).ok();
//! ```

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod app;
mod cli;
pub mod cluster;
pub mod curves;
pub mod data;
pub mod dsl;
mod error;
pub mod inspect;
pub mod pipeline_file;
pub mod produce;
pub mod progress;
pub mod run;
pub mod tracking;
pub mod tune;

pub use app::App;
pub use error::{Error, Result};
pub use millrace_connectors as connectors;
pub use millrace_engine as engine;
pub use millrace_ml as ml;
pub use millrace_operators as operators;
pub use millrace_operators::preprocess::{Step, Udf};

/// What a pipeline author needs.
pub mod prelude {
    pub use crate::dsl::{Pipeline, RunReport, Sink, Train, Tune};
    pub use crate::run::{RunConfig, plan, run_planned};
    pub use millrace_engine::{Batch, ClusterConfig, DeadLetter, Flow, FlowContext, execute};
    pub use millrace_ml::model::Activation;
    pub use millrace_ml::optim::{Decay, LrSchedule};
    pub use millrace_ml::preprocess::NullPolicy;
    pub use millrace_operators::spec::{PipelineSpec, ServeSpec, SinkPoint};
}
