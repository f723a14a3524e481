//! # millrace-engine
//!
//! The runtime of millrace: it starts timely dataflow workers (threads now, processes over TCP with
//! the same code), moves Arrow [`RecordBatch`](arrow::array::RecordBatch)es between them (as Arrow IPC
//! bytes when they cross a process), builds every operator through one generic, named builder that
//! counts batches, rows, dead letters and busy time, and offers collectives (all-gather, all-reduce)
//! over the dataflow for synchronous data-parallel training.
//!
//! ```text
//! execute(ClusterConfig) ─▶ per worker: Flow::source ─▶ map_batches/filter/exchange_by ─▶ sink
//!                                       Collective::all_reduce_sum (gradients, statistics)
//! MetricsRegistry ◀── every operator's counters ──▶ Prometheus text
//! ```
//!
//! ```
//! use std::sync::Arc;
//! use arrow::array::{Int64Array, RecordBatch};
//! use arrow::datatypes::{DataType, Field, Schema};
//! use millrace_engine::{Batch, ClusterConfig, Flow, FlowContext, MetricsRegistry, execute};
//!
//! let metrics = MetricsRegistry::new();
//! let per_worker = execute::<_, millrace_engine::Error, _>(&ClusterConfig::local(2), Arc::clone(&metrics), |worker, ctx| {
//!     let index = ctx.index;
//!     let (probe, rows) = worker.dataflow::<u64, _, _>(|scope| {
//!         let fc = FlowContext::new(ctx.clone());
//!         let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
//!         let batches = (0..3).map(move |i| {
//!             let col = Int64Array::from(vec![index as i64 * 100 + i; 10]);
//!             Ok(Batch::new(RecordBatch::try_new(schema.clone(), vec![Arc::new(col)]).unwrap()))
//!         });
//!         Flow::source(scope, &fc, "numbers", batches)
//!             .exchange_by("by-x", &["x"])
//!             .collect("keep")
//!     });
//!     ctx.step_while(worker, || !probe.done())?;
//!     let rows: usize = rows.borrow().iter().map(|b| b.num_rows()).sum();
//!     Ok(rows)
//! })
//! .unwrap();
//! assert_eq!(per_worker.iter().sum::<usize>(), 60);
//! let totals = metrics.totals();
//! assert_eq!(totals.iter().find(|(n, _)| n == "numbers").unwrap().1.rows_out, 60);
//! ```

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod batch;
mod cluster;
mod collective;
mod error;
pub mod features;
mod flow;
mod metrics;
pub mod peers;
mod rounds;

pub use batch::{Batch, DeadLetter, row_to_json};
pub use cluster::{AbortedError, ClusterConfig, WorkerContext, execute};
pub use collective::Collective;
pub use error::{Error, Result, list, panic_message};
pub use flow::exchange::{hash_rows, partition_by_key, stable_hash};
pub use flow::{BatchStream, DeadLetterStream, Emit, Flow, FlowContext};
pub use metrics::{Counters, MetricsRegistry, OperatorReport, OperatorStats, escape_label};
pub use rounds::{
    Downstream, Rounds, run_rounds, run_rounds_into, run_rounds_with, sum_in_worker_order,
};

/// timely, re-exported so that users of the stream API need no separate dependency.
pub use timely;
