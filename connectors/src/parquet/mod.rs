//! Parquet files and directories of Parquet files as a source and a sink of Arrow `RecordBatch`es.
//!
//! - [`ParquetDataset::open`] lists a file or a directory tree and reads every footer up front, so a
//!   broken file fails at open time, naming its path.
//! - [`ParquetDataset::plan`] splits the dataset's row groups into `parts` balanced lists of
//!   [`ScanUnit`]s, one list per worker.
//! - [`ParquetDataset::read_unit`] streams one unit's row groups as batches, one row group decoded at a time.
//! - [`ParquetFileWriter`] writes batches to one file atomically (temp file, fsync, rename).

mod dataset;
mod dataset_writer;
mod listing;
mod plan;
mod schema;
mod sink;
mod source;
pub mod spark;

pub use dataset::{DatasetFormat, DatasetOptions, ParquetDataset, ParquetFileInfo, RowGroupInfo};
pub use dataset_writer::{
    DEFAULT_MAX_OPEN_FILES, DatasetWriter, DatasetWriterOptions, WrittenFile, WrittenFiles,
    delete_prefix, write_success,
};
pub use listing::{FilterOp, PartitionFilter};
pub use plan::ScanUnit;
pub use sink::{Compression, DEFAULT_ROW_GROUP_ROWS, FileStats, ParquetFileWriter, WriterOptions};
pub use source::{BatchOrigin, DEFAULT_BATCH_SIZE, ScanOptions, UnitReader};
