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

/// The sink of one part file's bytes: an object store upload that counts what it is given.
struct StoreFile {
    upload: BufWriter,
    bytes: u64,
    /// `complete` has started: the upload can no longer be aborted.
    completing: bool,
}

impl AsyncFileWriter for StoreFile {
    fn write(&mut self, bs: Bytes) -> BoxFuture<'_, ::parquet::errors::Result<()>> {
        async move {
            let len = bs.len() as u64;
            self.upload
                .put(bs)
                .await
                .map_err(|e| ParquetError::External(Box::new(e)))?;
            self.bytes += len;
            Ok(())
        }
        .boxed()
    }

    fn complete(&mut self) -> BoxFuture<'_, ::parquet::errors::Result<()>> {
        self.completing = true;
        async move {
            let upload = &mut self.upload;
            std::future::poll_fn(|cx| {
                tokio::io::AsyncWrite::poll_shutdown(Pin::new(&mut *upload), cx)
            })
            .await
            .map_err(|e| ParquetError::External(Box::new(e)))
        }
        .boxed()
    }
}

/// A part file being written.
struct OpenFile {
    /// Path relative to the root.
    rel: String,
    /// Display form, for errors.
    url: String,
    location: StorePath,
    writer: AsyncArrowWriter<StoreFile>,
    rows: u64,
}

/// A part file this writer completed.
struct Completed {
    file: WrittenFile,
    location: StorePath,
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

/// Turns a Parquet writer error into this crate's, keeping an object store error found inside it
/// (so it is reported, and retried, as the store's).
fn write_error(url: &str, e: ParquetError) -> Error {
    match e {
        ParquetError::External(inner) => match store_error(inner) {
            Ok(source) => Error::store(url, "write", source),
            Err(inner) => Error::Write {
                path: PathBuf::from(url),
                source: ParquetError::External(inner),
            },
        },
        source => Error::Write {
            path: PathBuf::from(url),
            source,
        },
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The object store error inside `e` (directly, or wrapped in a Parquet or I/O error), if any.
fn store_error(e: BoxError) -> std::result::Result<object_store::Error, BoxError> {
    let e = match e.downcast::<object_store::Error>() {
        Ok(source) => return Ok(*source),
        Err(e) => e,
    };
    let e = match e.downcast::<ParquetError>() {
        Ok(parquet) => {
            return match *parquet {
                ParquetError::External(inner) => store_error(inner),
                other => Err(Box::new(other)),
            };
        }
        Err(e) => e,
    };
    match e.downcast::<std::io::Error>() {
        Ok(io) if io.get_ref().is_some_and(|r| r.is::<object_store::Error>()) => {
            match io.into_inner() {
                Some(inner) => store_error(inner),
                None => Err(Box::new(std::io::Error::other("I/O error"))),
            }
        }
        Ok(io) => Err(io),
        Err(e) => Err(e),
    }
}

/// `root` + the `/`-separated relative path, whose segments are used as they are (already escaped).
fn location(root: &StorePath, rel: &str) -> std::result::Result<StorePath, String> {
    let mut location = root.clone();
    for segment in rel.split('/') {
        let part = PathPart::parse(segment).map_err(|e| e.to_string())?;
        location = location.join(part);
    }
    Ok(location)
}

/// The file name's codec part, as Spark writes it (`.snappy`, `.zstd`, `.lz4`; none when
/// uncompressed).
fn codec_extension(compression: Compression) -> &'static str {
    match compression {
        Compression::None => "",
        Compression::Snappy => ".snappy",
        Compression::Zstd => ".zstd",
        Compression::Lz4 => ".lz4",
    }
}

fn invalid(option: &'static str, reason: String) -> Error {
    Error::InvalidOption { option, reason }
}

/// Writes the footer and completes the upload; on failure aborts the upload where it still can.
async fn close_file(file: OpenFile) -> Result<Completed> {
    let OpenFile {
        rel,
        url,
        location,
        mut writer,
        rows,
    } = file;
    match writer.finish().await {
        Ok(_) => {
            let bytes = writer.into_inner().bytes;
            tracing::debug!(file = %url, rows, bytes, "part file complete");
            Ok(Completed {
                file: WrittenFile {
                    path: rel,
                    rows,
                    bytes,
                },
                location,
            })
        }
        Err(e) => {
            let mut sink = writer.into_inner();
            if !sink.completing {
                let _ = sink.upload.abort().await;
            }
            Err(write_error(&url, e))
        }
    }
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

/// Deletes the completed files (one already gone is fine); the first failure after trying all.
async fn delete_completed(store: &dyn ObjectStore, url: &str, files: &[Completed]) -> Result<()> {
    let mut first_error = None;
    for file in files {
        match store.delete(&file.location).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => {
                let file_url = format!("{}/{}", url.trim_end_matches('/'), file.file.path);
                first_error.get_or_insert(Error::store(file_url, "delete", e));
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Writes the empty `_SUCCESS` marker into `root` (call once, after every task finished); `url`
/// is the root's display form for errors.
pub fn write_success(store: &dyn ObjectStore, root: &StorePath, url: &str) -> Result<()> {
    let marker = root.clone().join("_SUCCESS");
    runtime::block_on(store.put(&marker, PutPayload::new()))
        .map(|_| ())
        .map_err(|e| {
            Error::store(
                format!("{}/_SUCCESS", url.trim_end_matches('/')),
                "write",
                e,
            )
        })
}

/// Deletes every object under `root` (for mode = "overwrite"), returning how many were deleted;
/// a missing root deletes nothing. `url` is the root's display form for errors.
pub fn delete_prefix(store: &dyn ObjectStore, root: &StorePath, url: &str) -> Result<usize> {
    runtime::block_on(async {
        let listed: std::result::Result<Vec<StorePath>, _> = store
            .list(Some(root))
            .map_ok(|meta| meta.location)
            .try_collect()
            .await;
        let locations = match listed {
            Ok(locations) => locations,
            Err(object_store::Error::NotFound { .. }) => Vec::new(),
            Err(e) => return Err(Error::store(url, "list", e)),
        };
        let mut deleted = 0;
        let mut results =
            store.delete_stream(futures::stream::iter(locations.into_iter().map(Ok)).boxed());
        while let Some(result) = results.next().await {
            match result {
                Ok(_) => deleted += 1,
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(Error::store(url, "delete", e)),
            }
        }
        Ok(deleted)
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::fs::File;
    use std::path::Path;

    use ::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use arrow::array::{
        Array, ArrayRef, AsArray, Float64Array, Int32Array, Int64Array, StringArray,
    };
    use arrow::datatypes::{DataType, Field, Float64Type, Int32Type, Int64Type};
    use object_store::local::LocalFileSystem;

    use super::*;

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos();
            let dir = std::env::temp_dir().join(format!(
                "millrace-dataset-writer-{name}-{}-{nanos}",
                std::process::id()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn local_store(dir: &TempDir) -> Arc<dyn ObjectStore> {
        Arc::new(
            LocalFileSystem::new_with_prefix(&dir.0)
                .unwrap()
                .with_automatic_cleanup(true),
        )
    }

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("region", DataType::Utf8, true),
            Field::new("score", DataType::Float64, true),
        ]))
    }

    fn batch(ids: &[i64], regions: &[Option<&str>]) -> RecordBatch {
        let scores: Vec<f64> = ids.iter().map(|&i| i as f64 * 0.5).collect();
        RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(Int64Array::from(ids.to_vec())) as ArrayRef,
                Arc::new(StringArray::from(regions.to_vec())),
                Arc::new(Float64Array::from(scores)),
            ],
        )
        .unwrap()
    }

    fn options(partition_by: &[&str]) -> DatasetWriterOptions {
        DatasetWriterOptions {
            partition_by: partition_by.iter().map(|s| s.to_string()).collect(),
            job_id: "job-1".into(),
            ..DatasetWriterOptions::default()
        }
    }

    fn writer(store: &Arc<dyn ObjectStore>, options: DatasetWriterOptions) -> DatasetWriter {
        DatasetWriter::new(
            Arc::clone(store),
            StorePath::from("preds"),
            "file:///tmp/preds".into(),
            schema(),
            options,
        )
        .unwrap()
    }

    /// Every file's rows as (id, region from the directory, score), with the file's schema
    /// checked to hold no partition column.
    fn read_back(root: &Path, files: &WrittenFiles) -> BTreeMap<i64, (Option<String>, f64)> {
        let mut rows = BTreeMap::new();
        for file in &files.files {
            let dir = file.path.rsplit_once('/').map(|(dir, _)| dir);
            let region = dir.map(|d| hive::parse_segment(d).unwrap().1);
            let reader = ParquetRecordBatchReaderBuilder::try_new(
                File::open(root.join(&file.path)).unwrap(),
            )
            .unwrap();
            let names: Vec<_> = reader
                .schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect();
            assert_eq!(names, ["id", "score"], "{}", file.path);
            let mut count = 0;
            for batch in reader.build().unwrap() {
                let batch = batch.unwrap();
                let ids = batch.column(0).as_primitive::<Int64Type>();
                let scores = batch.column(1).as_primitive::<Float64Type>();
                for i in 0..batch.num_rows() {
                    let region = region.clone().unwrap_or(None);
                    let previous = rows.insert(ids.value(i), (region, scores.value(i)));
                    assert!(previous.is_none(), "row {} read twice", ids.value(i));
                    count += 1;
                }
            }
            assert_eq!(count, file.rows, "{}", file.path);
            let size = std::fs::metadata(root.join(&file.path)).unwrap().len();
            assert_eq!(size, file.bytes, "{}", file.path);
        }
        rows
    }

    fn files_on_disk(dir: &Path) -> Vec<String> {
        fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(base, &path, out);
                } else {
                    let rel = path.strip_prefix(base).unwrap();
                    out.push(rel.to_string_lossy().replace('\\', "/"));
                }
            }
        }
        let mut out = Vec::new();
        if dir.exists() {
            walk(dir, dir, &mut out);
        }
        out.sort();
        out
    }

    #[test]
    fn partitioned_write_escapes_values_and_reads_back_every_row() {
        let dir = TempDir::new("partitioned");
        let store = local_store(&dir);
        let mut w = writer(&store, options(&["region"]));
        w.write(&batch(
            &[1, 2, 3, 4],
            &[Some("eu"), Some("ap/south:1"), None, Some("eu")],
        ))
        .unwrap();
        w.write(&batch(
            &[5, 6, 7],
            &[Some(""), Some("ap/south:1"), Some("us")],
        ))
        .unwrap();
        let written = w.finish().unwrap();

        let part = "part-00000-job-1.c000.snappy.parquet";
        let paths: Vec<_> = written.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                format!("region=__HIVE_DEFAULT_PARTITION__/{part}"),
                format!("region=ap%2Fsouth%3A1/{part}"),
                format!("region=eu/{part}"),
                format!("region=us/{part}"),
            ]
        );
        let rows: Vec<_> = written.files.iter().map(|f| f.rows).collect();
        assert_eq!(rows, [2, 2, 2, 1]);
        assert_eq!(written.rows, 7);
        // The directory names on disk are the escaped names, not re-encoded ones.
        let root = dir.0.join("preds");
        assert_eq!(files_on_disk(&root), paths);
        assert!(root.join("region=ap%2Fsouth%3A1").is_dir());

        let got = read_back(&root, &written);
        let expected: BTreeMap<i64, (Option<String>, f64)> = [
            (1, Some("eu")),
            (2, Some("ap/south:1")),
            (3, None),
            (4, Some("eu")),
            (5, None), // Spark writes "" as the default partition too
            (6, Some("ap/south:1")),
            (7, Some("us")),
        ]
        .into_iter()
        .map(|(id, r)| (id, (r.map(String::from), id as f64 * 0.5)))
        .collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn nested_partitions_follow_partition_by_order() {
        let dir = TempDir::new("nested");
        let store = local_store(&dir);
        let schema = Arc::new(Schema::new(vec![
            Field::new("region", DataType::Utf8, false),
            Field::new("year", DataType::Int32, false),
            Field::new("v", DataType::Int32, false),
        ]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(StringArray::from(vec!["eu", "eu", "us"])) as ArrayRef,
                Arc::new(Int32Array::from(vec![2024, 2023, 2024])),
                Arc::new(Int32Array::from(vec![1, 2, 3])),
            ],
        )
        .unwrap();
        let mut w = DatasetWriter::new(
            Arc::clone(&store),
            StorePath::from("t"),
            "file:///t".into(),
            schema,
            DatasetWriterOptions {
                file: WriterOptions {
                    compression: Compression::None,
                    ..WriterOptions::default()
                },
                ..options(&["year", "region"])
            },
        )
        .unwrap();
        w.write(&batch).unwrap();
        let written = w.finish().unwrap();
        let files: Vec<_> = written
            .files
            .iter()
            .map(|f| (f.path.as_str(), f.rows))
            .collect();
        assert_eq!(
            files,
            [
                ("year=2023/region=eu/part-00000-job-1.c000.parquet", 1),
                ("year=2024/region=eu/part-00000-job-1.c000.parquet", 1),
                ("year=2024/region=us/part-00000-job-1.c000.parquet", 1),
            ]
        );
        let file = File::open(dir.0.join("t").join(files[2].0)).unwrap();
        let batches: Vec<_> = ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap()
            .collect::<std::result::Result<_, _>>()
            .unwrap();
        assert_eq!(batches[0].num_columns(), 1);
        assert_eq!(batches[0].column(0).as_primitive::<Int32Type>().value(0), 3);
    }

    #[test]
    fn max_rows_per_file_rolls_to_the_next_file() {
        let dir = TempDir::new("roll");
        let store = local_store(&dir);
        let mut w = writer(
            &store,
            DatasetWriterOptions {
                max_rows_per_file: 4,
                file: WriterOptions {
                    compression: Compression::Zstd,
                    row_group_rows: 2,
                },
                ..options(&["region"])
            },
        );
        for start in [0, 3, 6, 9] {
            let ids: Vec<i64> = (start..(start + 3).min(10)).collect();
            let regions = vec![Some("eu"); ids.len()];
            w.write(&batch(&ids, &regions)).unwrap();
        }
        let written = w.finish().unwrap();
        let files: Vec<_> = written
            .files
            .iter()
            .map(|f| (f.path.as_str(), f.rows))
            .collect();
        assert_eq!(
            files,
            [
                ("region=eu/part-00000-job-1.c000.zstd.parquet", 4),
                ("region=eu/part-00000-job-1.c001.zstd.parquet", 4),
                ("region=eu/part-00000-job-1.c002.zstd.parquet", 2),
            ]
        );
        let got = read_back(&dir.0.join("preds"), &written);
        assert_eq!(
            got.keys().copied().collect::<Vec<_>>(),
            (0..10).collect::<Vec<_>>()
        );
        assert_eq!(got[&9], (Some("eu".into()), 4.5));
    }

    #[test]
    fn max_open_files_closes_the_biggest_and_reopens_with_the_next_number() {
        let dir = TempDir::new("open-files");
        let store = local_store(&dir);
        let mut w = writer(
            &store,
            DatasetWriterOptions {
                max_open_files: 2,
                ..options(&["region"])
            },
        );
        // "eu" buffers the most rows, so opening "us" closes it; its later rows go to c001.
        w.write(&batch(
            &[1, 2, 3, 4],
            &[Some("eu"), Some("eu"), Some("eu"), Some("ap")],
        ))
        .unwrap();
        w.write(&batch(&[5, 6], &[Some("us"), Some("eu")])).unwrap();
        let written = w.finish().unwrap();
        let files: Vec<_> = written
            .files
            .iter()
            .map(|f| (f.path.as_str(), f.rows))
            .collect();
        assert_eq!(
            files,
            [
                ("region=ap/part-00000-job-1.c000.snappy.parquet", 1),
                ("region=eu/part-00000-job-1.c000.snappy.parquet", 3),
                ("region=eu/part-00000-job-1.c001.snappy.parquet", 1),
                ("region=us/part-00000-job-1.c000.snappy.parquet", 1),
            ]
        );
        let got = read_back(&dir.0.join("preds"), &written);
        assert_eq!(got.len(), 6);
        assert_eq!(got[&6], (Some("eu".into()), 3.0));
    }

    #[test]
    fn tasks_of_one_job_write_distinct_files_and_success_marks_the_end() {
        let dir = TempDir::new("tasks");
        let store = local_store(&dir);
        let job = DatasetWriter::new_job_id();
        assert_eq!(uuid::Uuid::parse_str(&job).unwrap().get_version_num(), 4);
        let mut all = WrittenFiles::default();
        for (task, ids) in [(0, [1, 2]), (3, [3, 4])] {
            let mut w = writer(
                &store,
                DatasetWriterOptions {
                    task,
                    job_id: job.clone(),
                    ..options(&["region"])
                },
            );
            w.write(&batch(&ids, &[Some("eu"), Some("us")])).unwrap();
            let written = w.finish().unwrap();
            all.rows += written.rows;
            all.files.extend(written.files);
        }
        let root = dir.0.join("preds");
        assert!(!root.join("_SUCCESS").exists());
        write_success(
            store.as_ref(),
            &StorePath::from("preds"),
            "file:///tmp/preds",
        )
        .unwrap();
        assert_eq!(std::fs::metadata(root.join("_SUCCESS")).unwrap().len(), 0);

        let mut expected: Vec<String> = ["eu", "us"]
            .iter()
            .flat_map(|r| {
                [0, 3].map(|t| format!("region={r}/part-{t:05}-{job}.c000.snappy.parquet"))
            })
            .collect();
        expected.push("_SUCCESS".into());
        expected.sort();
        assert_eq!(files_on_disk(&root), expected);
        let got = read_back(&root, &all);
        assert_eq!(got.keys().copied().collect::<Vec<_>>(), [1, 2, 3, 4]);
        assert_eq!(got[&4], (Some("us".into()), 2.0));
    }

    #[test]
    fn abort_leaves_nothing_behind() {
        let dir = TempDir::new("abort");
        let store = local_store(&dir);
        let mut w = writer(
            &store,
            DatasetWriterOptions {
                max_rows_per_file: 2,
                ..options(&["region"])
            },
        );
        // Two completed files in "eu" and one open in "eu" and "us".
        w.write(&batch(
            &[1, 2, 3, 4, 5, 6],
            &[
                Some("eu"),
                Some("eu"),
                Some("eu"),
                Some("eu"),
                Some("eu"),
                Some("us"),
            ],
        ))
        .unwrap();
        assert_eq!(files_on_disk(&dir.0.join("preds")).len(), 2);
        w.abort().unwrap();
        assert_eq!(files_on_disk(&dir.0), Vec::<String>::new());
        let listed: Vec<_> = runtime::block_on(store.list(None).try_collect::<Vec<_>>()).unwrap();
        assert!(listed.is_empty(), "{listed:?}");
    }

    #[test]
    fn delete_prefix_deletes_only_under_the_root() {
        let dir = TempDir::new("delete");
        let store = local_store(&dir);
        let mut w = writer(&store, options(&["region"]));
        w.write(&batch(&[1, 2, 3], &[Some("eu"), Some("us"), None]))
            .unwrap();
        w.finish().unwrap();
        let root = StorePath::from("preds");
        write_success(store.as_ref(), &root, "file:///tmp/preds").unwrap();
        runtime::block_on(store.put(&StorePath::from("preds2/keep"), PutPayload::from("x")))
            .unwrap();

        assert_eq!(
            delete_prefix(store.as_ref(), &root, "file:///tmp/preds").unwrap(),
            4
        );
        assert_eq!(files_on_disk(&dir.0), ["preds2/keep"]);
        assert_eq!(
            delete_prefix(store.as_ref(), &root, "file:///tmp/preds").unwrap(),
            0
        );
    }

    #[test]
    fn unpartitioned_write_puts_part_files_at_the_root() {
        let dir = TempDir::new("flat");
        let store = local_store(&dir);
        let mut w = writer(&store, options(&[]));
        w.write(&batch(&[1, 2], &[Some("eu"), None])).unwrap();
        w.write(&batch(&[], &[])).unwrap();
        let written = w.finish().unwrap();
        assert_eq!(written.files.len(), 1);
        assert_eq!(
            written.files[0].path,
            "part-00000-job-1.c000.snappy.parquet"
        );
        assert_eq!(written.rows, 2);
        let file = File::open(dir.0.join("preds").join(&written.files[0].path)).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
        assert_eq!(reader.schema().fields().len(), 3);
        let batch = reader.build().unwrap().next().unwrap().unwrap();
        let regions = batch.column(1).as_string::<i32>();
        assert_eq!(regions.value(0), "eu");
        assert!(regions.is_null(1));
    }

    #[test]
    fn bad_options_are_named() {
        let dir = TempDir::new("options");
        let store = local_store(&dir);
        let new = |schema: SchemaRef, options: DatasetWriterOptions| {
            DatasetWriter::new(
                Arc::clone(&store),
                StorePath::from("preds"),
                "s3://bucket/preds".into(),
                schema,
                options,
            )
            .unwrap_err()
            .to_string()
        };
        let msg = new(schema(), options(&["regoin"]));
        assert!(msg.contains("`regoin`"), "{msg}");
        assert!(msg.contains("s3://bucket/preds"), "{msg}");
        assert!(
            msg.contains("available columns: id, region, score"),
            "{msg}"
        );

        let msg = new(schema(), options(&["region", "region"]));
        assert!(msg.contains("named twice"), "{msg}");

        let msg = new(schema(), options(&["id", "region", "score"]));
        assert!(msg.contains("every column"), "{msg}");

        let lists = Arc::new(Schema::new(vec![
            Field::new(
                "tags",
                DataType::List(Arc::new(Field::new_list_field(DataType::Int32, true))),
                true,
            ),
            Field::new("v", DataType::Int32, true),
        ]));
        let msg = new(lists, options(&["tags"]));
        assert!(
            msg.contains("`tags`") && msg.contains("not supported"),
            "{msg}"
        );

        let msg = new(
            schema(),
            DatasetWriterOptions {
                job_id: "a/b".into(),
                ..options(&[])
            },
        );
        assert!(msg.contains("job_id") && msg.contains("`a/b`"), "{msg}");
    }

    #[test]
    fn batch_of_another_schema_is_refused() {
        let dir = TempDir::new("schema");
        let store = local_store(&dir);
        let mut w = writer(&store, options(&["region"]));
        let other =
            RecordBatch::try_from_iter([("id", Arc::new(Int32Array::from(vec![1])) as ArrayRef)])
                .unwrap();
        let err = w.write(&other).unwrap_err();
        assert!(matches!(err, Error::BatchSchema { .. }), "{err}");
        w.abort().unwrap();
    }

    #[test]
    fn large_files_upload_in_parts_and_abort_mid_upload() {
        let dir = TempDir::new("multipart");
        let store = local_store(&dir);
        let big = |first: i64| {
            let ids: Vec<i64> = (first..first + 400_000).collect();
            batch(&ids, &vec![Some("eu"); ids.len()])
        };
        let file = WriterOptions {
            compression: Compression::None,
            row_group_rows: 100_000,
        };
        let mut w = writer(
            &store,
            DatasetWriterOptions {
                file,
                ..options(&["region"])
            },
        );
        // Three batches of ~6.4 MB of raw ids: past one upload part, so a multipart upload.
        for first in [0, 400_000, 800_000] {
            w.write(&big(first)).unwrap();
        }
        let written = w.finish().unwrap();
        assert_eq!(written.rows, 1_200_000);
        assert!(
            written.files[0].bytes > UPLOAD_PART_BYTES as u64 * 2,
            "{written:?}"
        );
        let got = read_back(&dir.0.join("preds"), &written);
        assert_eq!(got.len(), 1_200_000);
        assert_eq!(got[&1_199_999], (Some("eu".into()), 599_999.5));

        let mut w = writer(
            &store,
            DatasetWriterOptions {
                file,
                task: 1,
                ..options(&["region"])
            },
        );
        w.write(&big(0)).unwrap();
        w.write(&big(400_000)).unwrap();
        w.abort().unwrap();
        // Only the first writer's file: no staging file of the aborted upload is left.
        assert_eq!(
            files_on_disk(&dir.0.join("preds")),
            [written.files[0].path.clone()]
        );
    }

    #[test]
    fn store_failures_name_the_file_and_finish_cleans_up() {
        let dir = TempDir::new("store-error");
        let store = local_store(&dir);
        // A plain file where the writer needs the directory `region=us`.
        std::fs::create_dir_all(dir.0.join("preds")).unwrap();
        std::fs::write(dir.0.join("preds/region=us"), b"in the way").unwrap();
        let mut w = writer(&store, options(&["region"]));
        w.write(&batch(&[1, 2], &[Some("eu"), Some("us")])).unwrap();
        let err = w.finish().unwrap_err();
        match &err {
            Error::Store { url, op, .. } => {
                assert_eq!(
                    url,
                    "file:///tmp/preds/region=us/part-00000-job-1.c000.snappy.parquet"
                );
                assert_eq!(*op, "write");
            }
            other => panic!("expected a store error, got {other:?}"),
        }
        // The file that did complete (region=eu) was deleted again.
        assert_eq!(files_on_disk(&dir.0.join("preds")), ["region=us"]);
    }

    #[test]
    fn writer_is_send() {
        fn send<T: Send>() {}
        send::<DatasetWriter>();
    }
}
