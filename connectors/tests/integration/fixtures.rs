//! Temporary directories and small Parquet files with a known layout.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use millrace_connectors::parquet::{Compression, FileStats, ParquetFileWriter, WriterOptions};

pub type TestResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(label: &str) -> TestResult<Self> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "millrace-connectors-{label}-{}-{n}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)?;
        Ok(Self(path))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `id` Int64 (non-null), `name` Utf8 (nullable), `score` Float64 (non-null).
pub fn abc_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
        Field::new("score", DataType::Float64, false),
    ]))
}

/// Rows `first..first + n`: id = i, name = "n{i}" (null when i % 7 == 0), score = i / 2.
pub fn abc_batch(first: i64, n: usize) -> TestResult<RecordBatch> {
    let ids: Vec<i64> = (first..first + n as i64).collect();
    let names: StringArray = ids
        .iter()
        .map(|i| (i % 7 != 0).then(|| format!("n{i}")))
        .collect();
    let scores: Vec<f64> = ids.iter().map(|&i| i as f64 / 2.0).collect();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(ids)),
        Arc::new(names),
        Arc::new(Float64Array::from(scores)),
    ];
    Ok(RecordBatch::try_new(abc_schema(), columns)?)
}

/// Writes one file whose row groups hold exactly `row_groups[k]` rows, ids starting at `first_id`.
pub fn write_abc(path: &Path, first_id: i64, row_groups: &[usize]) -> TestResult<FileStats> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let options = WriterOptions {
        row_group_rows: 1 << 20,
        compression: Compression::Snappy,
    };
    let mut writer = ParquetFileWriter::new(path, abc_schema(), options)?;
    let mut next = first_id;
    for &n in row_groups {
        writer.write(&abc_batch(next, n)?)?;
        writer.flush()?;
        next += n as i64;
    }
    Ok(writer.finish()?)
}

/// The `id` column of a batch.
pub fn ids(batch: &RecordBatch) -> TestResult<Vec<i64>> {
    let column = batch.column_by_name("id").ok_or("no id column")?;
    let ids = column
        .as_any()
        .downcast_ref::<Int64Array>()
        .ok_or("id is not Int64")?;
    Ok(ids.values().to_vec())
}
