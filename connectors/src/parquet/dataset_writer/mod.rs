//! [`DatasetWriter`]: batches to a Hive-partitioned directory of Parquet part files in any object
//! store, laid out like Spark's:
//!
//! ```text
//! <root>/region=eu/part-00003-<job>.c000.snappy.parquet
//! <root>/region=__HIVE_DEFAULT_PARTITION__/part-00003-<job>.c000.snappy.parquet
//! <root>/_SUCCESS                      (write_success, once every task finished)
//! ```
//!
//! Every task (worker) of one write runs its own writer with its own `task` number and the shared
//! `job_id`, so the tasks never collide on a name. A part file becomes visible only once complete:
//! a cloud store completes its multipart upload (or single PUT), the local file system renames its
//! staging file. Memory stays bounded: at most `max_open_files` files are open at once, each
//! holding at most one row group and one upload part.

use std::collections::HashMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use ::parquet::arrow::AsyncArrowWriter;
use ::parquet::arrow::async_writer::AsyncFileWriter;
use ::parquet::errors::ParquetError;
use ::parquet::file::properties::WriterProperties;
use arrow::array::UInt32Array;
use arrow::compute::take_record_batch;
use arrow::datatypes::{Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use arrow::row::{RowConverter, SortField};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt, TryStreamExt};
use object_store::buffered::BufWriter;
use object_store::path::{Path as StorePath, PathPart};
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

use super::schema::field_difference;
use super::sink::{Compression, WriterOptions};
use crate::{Error, Result, hive, runtime};

mod files;

use self::files::*;
pub use self::files::{delete_prefix, write_success};

/// [`DatasetWriterOptions::max_open_files`] when it is 0 (Spark's `maxOpenFiles` is larger, but
/// each open file here holds a row group in memory).
pub const DEFAULT_MAX_OPEN_FILES: usize = 64;

/// Bytes buffered per file before its upload starts, and the size of each uploaded part
/// (S3's smallest part is 5 MiB).
const UPLOAD_PART_BYTES: usize = 5 * 1024 * 1024;

/// Parts of one file uploading at once.
const UPLOAD_CONCURRENCY: usize = 2;

/// Files completed at once by [`DatasetWriter::finish`].
const CLOSE_CONCURRENCY: usize = 8;

/// How a [`DatasetWriter`] lays out its files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatasetWriterOptions {
    /// Columns to partition by, in directory order; they are removed from the file data (like
    /// Spark).
    pub partition_by: Vec<String>,
    /// Compression and row group size of each part file.
    pub file: WriterOptions,
    /// Roll to a new part file after this many rows (0 = no limit), like Spark's
    /// `maxRecordsPerFile`.
    pub max_rows_per_file: usize,
    /// Part number written into file names (each worker/task uses its own, like Spark's task id).
    pub task: usize,
    /// Job id shared by all tasks of one write (Spark's UUID in part file names);
    /// [`DatasetWriter::new_job_id`] makes one. ASCII letters, digits, `-`, `_` and `.` only.
    pub job_id: String,
    /// Most part files open at once; opening one more first closes the open file holding the most
    /// buffered data, to bound memory (like Spark's `maxOpenFiles`). 0 means
    /// [`DEFAULT_MAX_OPEN_FILES`].
    pub max_open_files: usize,
}

impl Default for DatasetWriterOptions {
    /// Not partitioned, default file options, no row limit, task 0, a fresh job id: set the same
    /// `job_id` on every task of one write.
    fn default() -> Self {
        Self {
            partition_by: Vec::new(),
            file: WriterOptions::default(),
            max_rows_per_file: 0,
            task: 0,
            job_id: DatasetWriter::new_job_id(),
            max_open_files: DEFAULT_MAX_OPEN_FILES,
        }
    }
}

/// One completed part file.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct WrittenFile {
    /// Path relative to the dataset root, `/`-separated, e.g.
    /// `region=eu/part-00003-<job>.c000.snappy.parquet`.
    pub path: String,
    /// Rows in the file.
    pub rows: u64,
    /// Size of the file in bytes.
    pub bytes: u64,
}

/// What one [`DatasetWriter`] wrote.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct WrittenFiles {
    /// The part files, sorted by path.
    pub files: Vec<WrittenFile>,
    /// Rows in all files together.
    pub rows: u64,
}

/// Writes batches into a Hive-partitioned directory of Parquet part files, like one Spark task.
///
/// Call [`write`](Self::write) with each batch, then [`finish`](Self::finish) (or
/// [`abort`](Self::abort)); once every task of the write finished, one caller writes the
/// [`write_success`] marker. After an error from `write`, call `abort`. A writer dropped without
/// either leaves its completed files in place and its open uploads unfinished (a local staging
/// file is removed; a cloud multipart upload is left to the bucket's lifecycle rules).
pub struct DatasetWriter {
    store: Arc<dyn ObjectStore>,
    root: StorePath,
    url: String,
    schema: SchemaRef,
    file_schema: SchemaRef,
    partition_columns: Vec<usize>,
    data_columns: Vec<usize>,
    /// Turns the partition columns of a batch into comparable rows; `None` when not partitioned.
    converter: Option<RowConverter>,
    properties: WriterProperties,
    options: DatasetWriterOptions,
    /// Open part files by partition directory (`""` when not partitioned).
    open: HashMap<String, OpenFile>,
    /// The next file number (`c000`, `c001`, ...) of each partition directory.
    next_seq: HashMap<String, usize>,
    completed: Vec<Completed>,
}

impl std::fmt::Debug for DatasetWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatasetWriter")
            .field("url", &self.url)
            .field("options", &self.options)
            .field("open_files", &self.open.len())
            .field("completed_files", &self.completed.len())
            .finish()
    }
}

/// An invalid-option error for the writer's options.
fn invalid(option: &'static str, reason: String) -> Error {
    Error::InvalidOption { option, reason }
}

impl DatasetWriter {
    /// A fresh job id (a UUID v4), to share among the tasks of one write.
    pub fn new_job_id() -> String {
        uuid::Uuid::new_v4().to_string()
    }

    /// A writer of `schema` batches into the dataset directory `root` of `store`; `url` is the
    /// root's display form for errors (e.g. `s3://bucket/preds`).
    ///
    /// Errors ([`Error::InvalidOption`]) when a partition column is not in the schema (naming the
    /// available ones), is named twice, or has a type that cannot name a directory (a list, a
    /// struct, binary, ...), when every column is a partition column, or when the job id is empty
    /// or holds characters other than ASCII letters, digits, `-`, `_` and `.`.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        root: StorePath,
        url: String,
        schema: SchemaRef,
        options: DatasetWriterOptions,
    ) -> Result<Self> {
        let mut options = options;
        if options.max_open_files == 0 {
            options.max_open_files = DEFAULT_MAX_OPEN_FILES;
        }
        let job_ok = !options.job_id.is_empty()
            && options
                .job_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !job_ok {
            return Err(invalid(
                "job_id",
                format!(
                    "`{}` cannot be part of a file name; use DatasetWriter::new_job_id()",
                    options.job_id
                ),
            ));
        }
        let available = || {
            schema
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut partition_columns = Vec::with_capacity(options.partition_by.len());
        for name in &options.partition_by {
            let index = schema.index_of(name).map_err(|_| {
                invalid(
                    "partition_by",
                    format!(
                        "partition column `{name}` is not in the schema of `{url}`; available \
                         columns: {}",
                        available()
                    ),
                )
            })?;
            if partition_columns.contains(&index) {
                return Err(invalid(
                    "partition_by",
                    format!("partition column `{name}` is named twice"),
                ));
            }
            let data_type = schema.field(index).data_type();
            if !hive::is_supported_type(data_type) {
                let probe = arrow::array::new_null_array(data_type, 1);
                let reason = hive::format_value(&probe, 0).err().unwrap_or_default();
                return Err(invalid(
                    "partition_by",
                    format!("partition column `{name}`: {reason}"),
                ));
            }
            partition_columns.push(index);
        }
        let data_columns: Vec<usize> = (0..schema.fields().len())
            .filter(|i| !partition_columns.contains(i))
            .collect();
        if data_columns.is_empty() {
            return Err(invalid(
                "partition_by",
                format!(
                    "every column of `{url}` ({}) is a partition column, so the files would hold \
                     no data; leave at least one column out of partition_by",
                    available()
                ),
            ));
        }
        let file_schema = Arc::new(Schema::new_with_metadata(
            data_columns
                .iter()
                .map(|&i| Arc::clone(&schema.fields()[i]))
                .collect::<Vec<_>>(),
            schema.metadata().clone(),
        ));
        let converter = if partition_columns.is_empty() {
            None
        } else {
            let fields = partition_columns
                .iter()
                .map(|&i| SortField::new(schema.field(i).data_type().clone()))
                .collect();
            Some(RowConverter::new(fields).map_err(|e| {
                Error::Internal(format!("cannot compare partition values of `{url}`: {e}"))
            })?)
        };
        Ok(Self {
            properties: options.file.to_properties().build(),
            store,
            root,
            url,
            schema,
            file_schema,
            partition_columns,
            data_columns,
            converter,
            options,
            open: HashMap::new(),
            next_seq: HashMap::new(),
            completed: Vec::new(),
        })
    }

    /// Splits `batch` by its partition values and appends each partition's rows to that
    /// partition's open part file (opening one, and closing a full or the biggest one, as needed).
    /// Rows keep their order within a partition.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if let Some(detail) = field_difference(&self.schema, &batch.schema()) {
            return Err(Error::BatchSchema {
                path: PathBuf::from(&self.url),
                detail,
            });
        }
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let groups = self.split(batch)?;
        let data = RecordBatch::try_new(
            Arc::clone(&self.file_schema),
            self.data_columns
                .iter()
                .map(|&i| Arc::clone(batch.column(i)))
                .collect(),
        )
        .map_err(|e| Error::Internal(format!("cannot project a batch for `{}`: {e}", self.url)))?;
        runtime::block_on(async {
            for (dir, indices) in groups {
                let rows = match indices {
                    None => data.clone(),
                    Some(indices) => take_record_batch(&data, &indices).map_err(|e| {
                        Error::Internal(format!("cannot gather rows for `{}`: {e}", self.url))
                    })?,
                };
                self.append(dir, rows).await?;
            }
            Ok::<(), Error>(())
        })
    }

    /// The batch's rows grouped by partition directory, in order of first appearance; `None`
    /// indices mean every row.
    fn split(&self, batch: &RecordBatch) -> Result<Vec<(String, Option<UInt32Array>)>> {
        let Some(converter) = &self.converter else {
            return Ok(vec![(String::new(), None)]);
        };
        let columns: Vec<_> = self
            .partition_columns
            .iter()
            .map(|&i| Arc::clone(batch.column(i)))
            .collect();
        let keys = converter.convert_columns(&columns).map_err(|e| {
            Error::Internal(format!(
                "cannot compare partition values of `{}`: {e}",
                self.url
            ))
        })?;
        // Distinct partition values, by their first row.
        let mut by_key = HashMap::new();
        let mut groups: Vec<(usize, Vec<u32>)> = Vec::new();
        for row in 0..batch.num_rows() {
            let group = *by_key.entry(keys.row(row)).or_insert_with(|| {
                groups.push((row, Vec::new()));
                groups.len() - 1
            });
            groups[group].1.push(row as u32);
        }
        // Their directories; a null and an empty string share one, so merge such groups.
        let mut by_dir: HashMap<String, usize> = HashMap::new();
        let mut out: Vec<(String, Vec<u32>, bool)> = Vec::with_capacity(groups.len());
        for (first, rows) in groups {
            let dir = self.partition_dir(&columns, first)?;
            match by_dir.get(&dir) {
                Some(&i) => {
                    out[i].1.extend(rows);
                    out[i].2 = true;
                }
                None => {
                    by_dir.insert(dir.clone(), out.len());
                    out.push((dir, rows, false));
                }
            }
        }
        let all_rows = out.len() == 1;
        Ok(out
            .into_iter()
            .map(|(dir, mut rows, merged)| {
                if merged {
                    rows.sort_unstable();
                }
                let indices = (!all_rows).then(|| UInt32Array::from(rows));
                (dir, indices)
            })
            .collect())
    }

    /// The escaped `k=v/k2=v2` directory of one row.
    fn partition_dir(&self, columns: &[arrow::array::ArrayRef], row: usize) -> Result<String> {
        let mut segments = Vec::with_capacity(columns.len());
        for (column, &index) in columns.iter().zip(&self.partition_columns) {
            let name = self.schema.field(index).name();
            let value =
                hive::format_value(column.as_ref(), row).map_err(|reason| Error::Partition {
                    path: PathBuf::from(&self.url),
                    reason: format!("column `{name}`: {reason}"),
                })?;
            segments.push(hive::partition_segment(name, value.as_deref()));
        }
        Ok(segments.join("/"))
    }

    /// Appends rows to the open file of `dir`, rolling to a new file at `max_rows_per_file`.
    async fn append(&mut self, dir: String, rows: RecordBatch) -> Result<()> {
        let max = self.options.max_rows_per_file as u64;
        let total = rows.num_rows();
        let mut offset = 0;
        while offset < total {
            if !self.open.contains_key(&dir) {
                let file = self.open_file(&dir).await?;
                self.open.insert(dir.clone(), file);
            }
            let Some(file) = self.open.get_mut(&dir) else {
                return Err(Error::Internal(format!("no open file for `{dir}`")));
            };
            let room = if max == 0 {
                total - offset
            } else {
                usize::try_from(max.saturating_sub(file.rows)).unwrap_or(usize::MAX)
            };
            let len = room.min(total - offset);
            let part = if offset == 0 && len == total {
                rows.clone()
            } else {
                rows.slice(offset, len)
            };
            file.writer
                .write(&part)
                .await
                .map_err(|e| write_error(&file.url, e))?;
            file.rows += len as u64;
            offset += len;
            if max != 0 && file.rows >= max {
                self.close(&dir).await?;
            }
        }
        Ok(())
    }

    /// Starts the next part file of `dir`, first closing the biggest open file when
    /// `max_open_files` are open.
    async fn open_file(&mut self, dir: &str) -> Result<OpenFile> {
        if self.open.len() >= self.options.max_open_files {
            let biggest = self
                .open
                .iter()
                .max_by(|(a_dir, a), (b_dir, b)| {
                    // Buffered bytes first; small writers differ only in buffered rows.
                    let a_size = (a.writer.memory_size(), a.writer.in_progress_rows());
                    let b_size = (b.writer.memory_size(), b.writer.in_progress_rows());
                    a_size.cmp(&b_size).then_with(|| b_dir.cmp(a_dir))
                })
                .map(|(dir, _)| dir.clone());
            if let Some(biggest) = biggest {
                tracing::debug!(
                    dataset = %self.url,
                    partition = %biggest,
                    max_open_files = self.options.max_open_files,
                    "too many open part files: closing the biggest"
                );
                self.close(&biggest).await?;
            }
        }
        let seq = self.next_seq.entry(dir.to_owned()).or_insert(0);
        let name = format!(
            "part-{:05}-{}.c{:03}{}.parquet",
            self.options.task,
            self.options.job_id,
            *seq,
            codec_extension(self.options.file.compression)
        );
        *seq += 1;
        let rel = if dir.is_empty() {
            name
        } else {
            format!("{dir}/{name}")
        };
        let url = format!("{}/{rel}", self.url.trim_end_matches('/'));
        let location = location(&self.root, &rel).map_err(|reason| Error::Partition {
            path: PathBuf::from(&url),
            reason: format!("not a valid object name: {reason}"),
        })?;
        let upload =
            BufWriter::with_capacity(Arc::clone(&self.store), location.clone(), UPLOAD_PART_BYTES)
                .with_max_concurrency(UPLOAD_CONCURRENCY);
        let sink = StoreFile {
            upload,
            bytes: 0,
            completing: false,
        };
        let writer = AsyncArrowWriter::try_new(
            sink,
            Arc::clone(&self.file_schema),
            Some(self.properties.clone()),
        )
        .map_err(|e| write_error(&url, e))?;
        Ok(OpenFile {
            rel,
            url,
            location,
            writer,
            rows: 0,
        })
    }

    /// Completes the open file of `dir`, if any.
    async fn close(&mut self, dir: &str) -> Result<()> {
        if let Some(file) = self.open.remove(dir) {
            let completed = close_file(file).await?;
            self.completed.push(completed);
        }
        Ok(())
    }

    /// Completes every open file and returns what this writer wrote. Does not write `_SUCCESS`
    /// ([`write_success`] does, once every task finished).
    ///
    /// When a file cannot be completed, the write is abandoned as by [`abort`](Self::abort) and
    /// the first error is returned.
    pub fn finish(self) -> Result<WrittenFiles> {
        let Self {
            store,
            url,
            open,
            mut completed,
            ..
        } = self;
        runtime::block_on(async {
            let results: Vec<Result<Completed>> = futures::stream::iter(open.into_values())
                .map(close_file)
                .buffer_unordered(CLOSE_CONCURRENCY)
                .collect()
                .await;
            let mut first_error = None;
            for result in results {
                match result {
                    Ok(file) => completed.push(file),
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
            if let Some(e) = first_error {
                tracing::warn!(dataset = %url, error = %e, "finishing failed: deleting the part files");
                // The original error matters more than a failed cleanup.
                let _ = delete_completed(store.as_ref(), &url, &completed).await;
                return Err(e);
            }
            let mut files: Vec<WrittenFile> = completed.into_iter().map(|c| c.file).collect();
            files.sort_by(|a, b| a.path.cmp(&b.path));
            let rows = files.iter().map(|f| f.rows).sum();
            Ok(WrittenFiles { files, rows })
        })
    }

    /// Abandons the write: aborts the open uploads (nothing of them becomes visible) and deletes
    /// the part files this writer completed. Returns the first failure, after trying everything.
    pub fn abort(self) -> Result<()> {
        let Self {
            store,
            url,
            open,
            completed,
            ..
        } = self;
        runtime::block_on(async {
            let mut first_error = None;
            for (_, file) in open {
                let mut sink = file.writer.into_inner();
                if let Err(e) = sink.upload.abort().await {
                    first_error.get_or_insert(Error::store(file.url, "abort upload of", e));
                }
            }
            if let Err(e) = delete_completed(store.as_ref(), &url, &completed).await {
                first_error.get_or_insert(e);
            }
            first_error.map_or(Ok(()), Err)
        })
    }
}

#[cfg(test)]
mod tests;
