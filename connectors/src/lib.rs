//! # millrace-connectors
//!
//! Reads and writes the outside world as Arrow [`RecordBatch`](arrow::record_batch::RecordBatch)es.
//! This crate knows nothing of the dataflow engine: the engine's source and sink operators call it.
//!
//! - [`parquet`]: a Parquet file or directory tree as a dataset. [`parquet::ParquetDataset::open`]
//!   reads every footer up front (a broken file fails at once, naming its path);
//!   [`parquet::ParquetDataset::plan`] splits the row groups into one balanced list per worker;
//!   [`parquet::ParquetDataset::read_unit`] streams a unit's row groups as batches, each tagged with its
//!   [`parquet::BatchOrigin`] for dead-letter messages; [`parquet::ParquetFileWriter`] writes
//!   batches to one file atomically.
//! - [`synthetic`]: deterministic generated datasets, such as the tabular benchmark dataset
//!   ([`synthetic::tabular::generate`]).
//!
//! ```text
//!  ParquetDataset::open(dir) ──plan(workers)──▶ [[ScanUnit]; workers]
//!                                                     │ worker i
//!                                                     ▼
//!                         read_unit(unit, projection) ──▶ (BatchOrigin, RecordBatch)* ──▶ engine
//!  engine ──▶ RecordBatch* ──▶ ParquetFileWriter::write ──finish──▶ part-00000.parquet
//! ```
//!
//! ## Example
//!
//! Generate a small tabular dataset, plan it for two workers, and read two columns back:
//!
//! ```
//! use millrace_connectors::parquet::{ParquetDataset, ScanOptions};
//! use millrace_connectors::synthetic::tabular::{TabularSpec, generate};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = std::env::temp_dir().join(format!("millrace-doc-{}", std::process::id()));
//! let spec = TabularSpec { rows: 10_000, files: 2, seed: 7, holdout: false, row_group_rows: 1_000, entities: 0 };
//! let report = generate(&spec, &dir)?;
//! assert_eq!(report.files.len(), 2);
//!
//! let dataset = ParquetDataset::open_path(&dir)?;
//! assert_eq!(dataset.num_rows(), 10_000);
//! assert_eq!(dataset.schema().fields().len(), 19);
//!
//! let options = ScanOptions { projection: Some(vec!["label".into(), "f0".into()]), batch_size: 0 };
//! let mut rows = 0;
//! let mut positives = 0;
//! for part in dataset.plan(2) {
//!     for unit in &part {
//!         for item in dataset.read_unit(unit, &options)? {
//!             let (_origin, batch) = item?;
//!             assert_eq!(batch.schema().field(0).name(), "f0"); // dataset order, not request order
//!             let label = batch.column(1).as_any().downcast_ref::<arrow::array::Int8Array>().ok_or("not int8")?;
//!             positives += label.values().iter().map(|&v| u64::from(v as u8)).sum::<u64>();
//!             rows += batch.num_rows();
//!         }
//!     }
//! }
//! assert_eq!(rows, 10_000);
//! assert_eq!(positives, report.positives);
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok(())
//! # }
//! ```

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod avro;
pub mod delta;
pub mod env;
pub mod hive;
pub mod inspect;
pub mod json;
pub mod kafka;
pub mod parquet;
pub mod runtime;
pub mod storage;
pub mod synthetic;

mod error;

pub use error::{Error, Result};
