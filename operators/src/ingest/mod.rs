//! Ingest nodes: sources that turn the outside world into a [`Flow`](millrace_engine::Flow).

mod parquet;

pub use parquet::parquet_source;
