//! [`ParquetDataset`]: a Parquet file, a directory tree of them (Spark output with Hive-style
//! partitions), or a Delta table, on any store, with every footer read up front.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ::parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use ::parquet::file::metadata::ParquetMetaDataReader;
use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use serde::{Deserialize, Serialize};

use super::listing::{ListedFile, PartitionFilter, list_dataset, wait_for_success};
use super::plan::{ScanUnit, plan_row_groups};
use super::schema::{column_indices, field_difference};
use super::spark::{SparkWriteInfo, int96_columns, int96_schema_hint};
use crate::storage::{StorageLocation, StorageOptions};
use crate::{Error, Result, delta, hive, runtime};

mod open;
use open::{Listing, list_files, read_footers};

/// Footers read at once while opening a dataset.
const FOOTER_CONCURRENCY: usize = 32;

/// Bytes read from the end of a file in the first request for its footer (most footers fit).
const FOOTER_HINT: u64 = 64 * 1024;

/// One row group of a file, as its footer describes it.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RowGroupInfo {
    /// Rows in the row group.
    pub rows: u64,
    /// Compressed size of the row group's column chunks, in bytes.
    pub compressed_bytes: u64,
}

/// One file of a dataset, as its footer and its directory describe it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ParquetFileInfo {
    /// Where the file is, for messages: a local path or a URL such as `s3://bucket/key`.
    pub path: PathBuf,
    /// Total rows in the file.
    pub rows: u64,
    /// File size in bytes.
    pub size_bytes: u64,
    /// The file's row groups, in file order.
    pub row_groups: Vec<RowGroupInfo>,
    /// The file's partition values, one per [`ParquetDataset::partition_columns`] (None: null).
    pub partition_values: Vec<Option<String>>,
}

/// How the data at a location is laid out.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DatasetFormat {
    /// A Delta table when `_delta_log/` exists, else Parquet files.
    #[default]
    Auto,
    /// Parquet files (a file, a directory, Spark output).
    Parquet,
    /// A Delta Lake table.
    Delta,
}

/// How to open a dataset; the default reads everything under the location.
#[derive(Clone, Debug, Default)]
pub struct DatasetOptions {
    /// Object store settings.
    pub storage: StorageOptions,
    /// Parquet files or a Delta table.
    pub format: DatasetFormat,
    /// Partition directories failing any of these are skipped without being listed.
    pub partition_filters: Vec<PartitionFilter>,
    /// Declared partition column types by name (`int`, `bigint`, `double`, `date`, `string`,
    /// `boolean`); other partition columns get Spark's inferred type.
    pub partition_types: BTreeMap<String, String>,
    /// Wait until `_SUCCESS` exists (at most this long) before listing.
    pub wait_for_success: Option<Duration>,
    /// For Delta tables: the version to read (latest when `None`).
    pub delta_version: Option<i64>,
}

/// What the reader needs of one file besides [`ParquetFileInfo`].
#[derive(Debug)]
pub(crate) struct FileState {
    /// Path in the store.
    pub object: ObjectPath,
    /// The decoded footer, with INT96 columns read as microsecond UTC timestamps.
    pub meta: ArrowReaderMetadata,
    /// How Spark wrote the file (calendar rebase flags).
    pub spark: SparkWriteInfo,
    /// Top-level INT96 columns.
    pub int96: Vec<String>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub location: StorageLocation,
    /// File columns, then partition columns.
    pub schema: SchemaRef,
    /// Columns stored in the files.
    pub file_schema: SchemaRef,
    /// Partition columns (their values come from directory names or the Delta log).
    pub partition_fields: Vec<FieldRef>,
    pub files: Vec<ParquetFileInfo>,
    pub states: Vec<FileState>,
    pub delta_version: Option<i64>,
    pub delta_timestamp_ms: Option<i64>,
}

/// A Parquet file, a directory tree of Parquet files, or a Delta table, sharing one schema.
///
/// Names starting with `_` or `.` (`_SUCCESS`, `_committed_*`, `.crc` files, `_temporary/`) are
/// ignored when listing; `key=value` directories become typed partition columns appended to the
/// schema; files are sorted by path. Cloning is cheap.
#[derive(Clone, Debug)]
pub struct ParquetDataset {
    pub(crate) inner: Arc<Inner>,
}

impl ParquetDataset {
    /// Opens a local path or URL (`&str`, `String`, `Path` or `PathBuf`) with default options
    /// (credentials from the environment).
    pub fn open(location: impl AsRef<std::ffi::OsStr>) -> Result<Self> {
        Self::open_with(
            &location.as_ref().to_string_lossy(),
            &DatasetOptions::default(),
        )
    }

    /// Opens a local path or a path given as `std::path::Path`.
    pub fn open_path(path: impl AsRef<Path>) -> Result<Self> {
        Self::open(path.as_ref())
    }

    /// Opens `location` (a path or URL) with `options`, from synchronous code.
    pub fn open_with(location: &str, options: &DatasetOptions) -> Result<Self> {
        runtime::block_on(Self::open_async(location, options))
    }

    /// Opens `location` (a path or URL) with `options`.
    ///
    /// Every footer is read here (concurrently), so a truncated or corrupt file fails now with an
    /// error naming it, and every file must have the columns and types of the first one.
    pub async fn open_async(location: &str, options: &DatasetOptions) -> Result<Self> {
        let location = StorageLocation::parse(location, &options.storage)?;
        let Listing {
            listed,
            partition_columns,
            delta_types,
            delta_version,
            delta_timestamp_ms,
            is_delta,
        } = list_files(&location, options).await?;
        let (file_schema, files, states) = read_footers(&location, listed).await?;
        let partition_fields =
            partition_fields(&location, &partition_columns, &files, options, &delta_types)?;
        if let Some(clash) = partition_fields
            .iter()
            .find(|p| file_schema.field_with_name(p.name()).is_ok())
        {
            return Err(Error::Partition {
                path: location.url.clone().into(),
                reason: format!(
                    "partition column `{}` is also a column inside the files",
                    clash.name()
                ),
            });
        }
        let mut fields: Vec<FieldRef> = file_schema.fields().iter().cloned().collect();
        fields.extend(partition_fields.iter().cloned());
        let schema = Arc::new(Schema::new(fields));
        tracing::debug!(url = %location.url, files = files.len(), delta = is_delta, "opened dataset");
        Ok(Self {
            inner: Arc::new(Inner {
                location,
                schema,
                file_schema,
                partition_fields,
                files,
                states,
                delta_version,
                delta_timestamp_ms,
            }),
        })
    }

    /// The location the dataset was opened from, as a URL (or an absolute local path).
    pub fn url(&self) -> &str {
        &self.inner.location.url
    }

    /// Where the dataset is.
    pub fn location(&self) -> &StorageLocation {
        &self.inner.location
    }

    /// The Arrow schema: the files' columns, then the partition columns.
    pub fn schema(&self) -> SchemaRef {
        SchemaRef::clone(&self.inner.schema)
    }

    /// The columns stored inside the files.
    pub fn file_schema(&self) -> SchemaRef {
        SchemaRef::clone(&self.inner.file_schema)
    }

    /// The partition column names, outermost directory first.
    pub fn partition_columns(&self) -> Vec<String> {
        self.inner
            .partition_fields
            .iter()
            .map(|f| f.name().clone())
            .collect()
    }

    /// The Delta table version read, for Delta tables.
    pub fn delta_version(&self) -> Option<i64> {
        self.inner.delta_version
    }

    /// For a Delta table, when its version was committed (epoch ms), when its log says.
    pub fn delta_timestamp_ms(&self) -> Option<i64> {
        self.inner.delta_timestamp_ms
    }

    /// Total rows over all files.
    pub fn num_rows(&self) -> u64 {
        self.inner.files.iter().map(|f| f.rows).sum()
    }

    /// Total bytes over all files.
    pub fn num_bytes(&self) -> u64 {
        self.inner.files.iter().map(|f| f.size_bytes).sum()
    }

    /// Total row groups over all files.
    pub fn num_row_groups(&self) -> usize {
        self.inner.files.iter().map(|f| f.row_groups.len()).sum()
    }

    /// The files, sorted by path.
    pub fn files(&self) -> &[ParquetFileInfo] {
        &self.inner.files
    }

    /// Splits all row groups into `parts` lists (one per worker), deterministically, by size.
    ///
    /// Every row group appears exactly once. Each list is a contiguous chunk of the global row-group
    /// sequence (files in path order, row groups in file order) whose compressed size is as close
    /// as possible to `1 / parts` of the total: a large file's row groups are split across
    /// workers, many small files are grouped; a chunk spanning files becomes one [`ScanUnit`] per
    /// file. When `parts` exceeds the number of row groups some lists are empty. `parts == 0` is
    /// treated as 1.
    pub fn plan(&self, parts: usize) -> Vec<Vec<ScanUnit>> {
        plan_row_groups(&self.inner.files, parts)
    }

    /// Checks that every named column exists; the error names the first missing one and lists the
    /// available columns.
    pub fn check_columns(&self, cols: &[String]) -> Result<()> {
        column_indices(&self.inner.schema, cols, Path::new(self.url())).map(|_| ())
    }
}

fn list_or_none(columns: &[String]) -> String {
    if columns.is_empty() {
        "none".to_string()
    } else {
        columns.join(", ")
    }
}

fn passes(partition: &[(String, Option<String>)], filters: &[PartitionFilter]) -> bool {
    filters.iter().all(|f| {
        partition
            .iter()
            .find(|(c, _)| *c == f.column)
            .is_none_or(|(_, v)| f.matches(v.as_deref()))
    })
}

/// The schema without key-value metadata (Spark's and Arrow's own), so files written by
/// different jobs compare equal.
fn without_metadata(schema: &SchemaRef) -> SchemaRef {
    Arc::new(Schema::new(schema.fields().clone()))
}

/// The partition columns every file agrees on, or an error naming a file whose directory layout
/// differs (Spark's "conflicting directory structures").
fn partition_columns(location: &StorageLocation, files: &[ListedFile]) -> Result<Vec<String>> {
    let Some(first) = files.first() else {
        return Ok(Vec::new());
    };
    let columns: Vec<String> = first.partition.iter().map(|(c, _)| c.clone()).collect();
    for file in files {
        let these: Vec<&String> = file.partition.iter().map(|(c, _)| c).collect();
        if these.len() != columns.len() || these.iter().zip(&columns).any(|(a, b)| *a != b) {
            return Err(Error::Partition {
                path: location.url_of(&file.object).into(),
                reason: format!(
                    "conflicting directory structure: this file is under partition columns [{}], \
                     `{}` under [{}]",
                    these
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    location.url_of(&first.object),
                    columns.join(", ")
                ),
            });
        }
    }
    Ok(columns)
}

/// Types the partition columns (declared, then Delta's, then inferred) and checks every value
/// parses, naming the directory of the first that does not.
fn partition_fields(
    location: &StorageLocation,
    columns: &[String],
    files: &[ParquetFileInfo],
    options: &DatasetOptions,
    delta_types: &BTreeMap<String, DataType>,
) -> Result<Vec<FieldRef>> {
    for declared in options.partition_types.keys() {
        if !columns.contains(declared) {
            return Err(Error::InvalidOption {
                option: "partition_types",
                reason: format!(
                    "`{declared}` is not a partition column of `{}` (partition columns: {})",
                    location.url,
                    list_or_none(columns)
                ),
            });
        }
    }
    let mut fields = Vec::with_capacity(columns.len());
    for (i, column) in columns.iter().enumerate() {
        let values = || {
            files
                .iter()
                .map(|f| f.partition_values.get(i).cloned().flatten())
        };
        let data_type = match options.partition_types.get(column) {
            Some(name) => hive::parse_type_name(name).ok_or_else(|| Error::InvalidOption {
                option: "partition_types",
                reason: format!(
                    "unknown type `{name}` for partition column `{column}`; use int, bigint, \
                     double, date, string or boolean"
                ),
            })?,
            None => match delta_types.get(column) {
                Some(t) => t.clone(),
                None => {
                    let owned: Vec<Option<String>> = values().collect();
                    hive::infer_type(owned.iter().map(|v| v.as_deref()))
                }
            },
        };
        for (file, value) in files.iter().zip(values()) {
            if let Err(reason) = hive::constant_array(&data_type, value.as_deref(), 1) {
                let dir = file
                    .path
                    .parent()
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| file.path.clone());
                return Err(Error::Partition {
                    path: dir,
                    reason: format!("partition column `{column}`: {reason}"),
                });
            }
        }
        let nullable = true;
        fields.push(Arc::new(Field::new(column, data_type, nullable)));
    }
    Ok(fields)
}

/// Reads one footer (one ranged request for most files) and re-types INT96 columns as Spark does.
async fn read_footer(location: &StorageLocation, file: &ListedFile) -> Result<ArrowReaderMetadata> {
    use object_store::ObjectStoreExt;
    let url = location.url_of(&file.object);
    let corrupt = |source| Error::CorruptFile {
        path: PathBuf::from(&url),
        source,
    };
    let size = file.size;
    let fetch = |length: u64| {
        let start = size.saturating_sub(length);
        let (store, object, url) = (&location.store, &file.object, &url);
        async move {
            store
                .get_range(object, start..size)
                .await
                .map_err(|e| Error::store(url.clone(), "read", e))
        }
    };
    let mut reader = ParquetMetaDataReader::new();
    let mut bytes = fetch(FOOTER_HINT.min(size)).await?;
    loop {
        match reader.try_parse_sized(&bytes, size) {
            Ok(()) => break,
            Err(::parquet::errors::ParquetError::NeedMoreData(needed))
                if (needed as u64) <= size && needed > bytes.len() =>
            {
                bytes = fetch(needed as u64).await?;
            }
            Err(e) => return Err(corrupt(e)),
        }
    }
    let metadata = Arc::new(reader.finish().map_err(corrupt)?);
    let meta = ArrowReaderMetadata::try_new(Arc::clone(&metadata), ArrowReaderOptions::new())
        .map_err(corrupt)?;
    match int96_schema_hint(meta.parquet_schema(), meta.schema()) {
        None => Ok(meta),
        Some(hint) => {
            ArrowReaderMetadata::try_new(metadata, ArrowReaderOptions::new().with_schema(hint))
                .map_err(corrupt)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_path_is_an_error_naming_it() {
        let p = std::env::temp_dir().join("millrace-connectors-does-not-exist-4711");
        let err = ParquetDataset::open_path(&p)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains(&p.display().to_string()), "{err}");
    }
}
