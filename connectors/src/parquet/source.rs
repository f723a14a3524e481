//! Reading a [`ScanUnit`]'s row groups as a stream of `RecordBatch`es, from any store.
//!
//! For each row group only the byte ranges of the projected column chunks are fetched (nearby
//! ranges coalesced into one request, several requests in flight), and the next row group is
//! fetched in the background while the current one is decoded on the caller's thread. Memory stays
//! bounded by two row groups' projected columns.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ::parquet::arrow::ProjectionMask;
use ::parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use ::parquet::file::reader::{ChunkReader, Length};
use arrow::array::ArrayRef;
use arrow::datatypes::{Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use bytes::{Buf, Bytes};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use super::dataset::{Inner, ParquetDataset};
use super::plan::ScanUnit;
use super::schema::column_indices;
use super::spark::rebase_batch;
use crate::{Error, Result, hive, runtime};

/// Rows per batch when [`ScanOptions::batch_size`] is 0.
pub const DEFAULT_BATCH_SIZE: usize = 65_536;

/// What to decode from each row group.
#[derive(Clone, Debug, Default)]
pub struct ScanOptions {
    /// Only these columns are decoded (partition columns included); the output keeps the
    /// dataset's column order, whatever the order here. `None` decodes every column.
    pub projection: Option<Vec<String>>,
    /// Maximum rows per batch; 0 means [`DEFAULT_BATCH_SIZE`].
    pub batch_size: usize,
}

/// Where a batch came from, for dead-letter messages.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct BatchOrigin {
    /// The file (a local path or a URL).
    pub file: PathBuf,
    /// The row group within the file.
    pub row_group: usize,
    /// Offset of the batch's first row within the file (counting all earlier row groups).
    pub first_row: u64,
}

/// The fetched column chunks of one row group: sorted, non-overlapping `(offset, bytes)` ranges of
/// the file, readable as the file itself for offsets inside them.
struct FetchedRanges {
    file_len: u64,
    ranges: Vec<(u64, Bytes)>,
}

impl FetchedRanges {
    fn slice(&self, start: u64, length: Option<usize>) -> ::parquet::errors::Result<Bytes> {
        let index = self.ranges.partition_point(|(offset, _)| *offset <= start);
        let missing = || {
            ::parquet::errors::ParquetError::General(format!(
                "byte {start} of the file was not fetched (reader bug)"
            ))
        };
        let (offset, bytes) = index
            .checked_sub(1)
            .and_then(|i| self.ranges.get(i))
            .ok_or_else(missing)?;
        let from = usize::try_from(start - offset).map_err(|_| missing())?;
        let to = match length {
            Some(length) => from + length,
            None => bytes.len(),
        };
        if to > bytes.len() {
            return Err(missing());
        }
        Ok(bytes.slice(from..to))
    }
}

impl Length for FetchedRanges {
    fn len(&self) -> u64 {
        self.file_len
    }
}

impl ChunkReader for FetchedRanges {
    type T = bytes::buf::Reader<Bytes>;

    fn get_read(&self, start: u64) -> ::parquet::errors::Result<Self::T> {
        Ok(self.slice(start, None)?.reader())
    }

    fn get_bytes(&self, start: u64, length: usize) -> ::parquet::errors::Result<Bytes> {
        self.slice(start, Some(length))
    }
}

impl ParquetDataset {
    /// Streams `unit`'s row groups as `RecordBatch`es with the projected columns (partition
    /// columns filled from the file's directory), rebased as Spark reads them.
    ///
    /// The row-group indices and the projection are checked here, before any data is read. A
    /// fetch or decode error is yielded once, naming the file and row group; the iterator then
    /// moves on to the next row group, so a caller may dead-letter the damaged group and keep
    /// going, or stop.
    pub fn read_unit(&self, unit: &ScanUnit, options: &ScanOptions) -> Result<UnitReader> {
        let inner = Arc::clone(&self.inner);
        let state = inner
            .states
            .get(unit.file_index)
            .ok_or_else(|| Error::Internal(format!("scan unit names file {}", unit.file_index)))?;
        let path = inner.files[unit.file_index].path.clone();
        let row_groups = state.meta.metadata().row_groups();
        let mut row_offsets = Vec::with_capacity(row_groups.len());
        let mut offset = 0u64;
        for rg in row_groups {
            row_offsets.push(offset);
            offset += u64::try_from(rg.num_rows()).unwrap_or(0);
        }
        if let Some(&bad) = unit.row_groups.iter().find(|&&g| g >= row_groups.len()) {
            return Err(Error::RowGroupOutOfRange {
                path,
                row_group: bad,
                num_row_groups: row_groups.len(),
            });
        }

        let columns: Vec<String> = match &options.projection {
            None => inner
                .schema
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect(),
            Some(columns) => {
                let indices = column_indices(&inner.schema, columns, Path::new(&path))?;
                indices
                    .into_iter()
                    .map(|i| inner.schema.field(i).name().clone())
                    .collect()
            }
        };
        let file_indices: Vec<usize> = columns
            .iter()
            .filter_map(|c| inner.file_schema.index_of(c).ok())
            .collect();
        let partition_indices: Vec<usize> = columns
            .iter()
            .filter_map(|c| inner.partition_fields.iter().position(|f| f.name() == c))
            .collect();
        let projection = ProjectionMask::roots(state.meta.parquet_schema(), file_indices);
        let output_schema = Arc::new(Schema::new(
            columns
                .iter()
                .filter_map(|c| inner.schema.field_with_name(c).ok().cloned())
                .collect::<Vec<_>>(),
        ));
        let batch_size = if options.batch_size == 0 {
            DEFAULT_BATCH_SIZE
        } else {
            options.batch_size
        };
        let mut reader = UnitReader {
            inner,
            file_index: unit.file_index,
            path,
            projection,
            partition_indices,
            output_schema,
            batch_size,
            row_offsets,
            pending: unit.row_groups.iter().rev().copied().collect(),
            prefetch: None,
            current: None,
        };
        reader.start_prefetch();
        Ok(reader)
    }
}

type Fetch = JoinHandle<Result<FetchedRanges>>;

/// The iterator returned by [`ParquetDataset::read_unit`].
pub struct UnitReader {
    inner: Arc<Inner>,
    file_index: usize,
    path: PathBuf,
    projection: ProjectionMask,
    /// Indices into the dataset's partition fields of the projected partition columns.
    partition_indices: Vec<usize>,
    output_schema: SchemaRef,
    batch_size: usize,
    /// Row offset of each row group's first row within the file.
    row_offsets: Vec<u64>,
    /// Row groups still to read, last one first (popped from the end).
    pending: Vec<usize>,
    /// The fetch of the row group at the end of `pending`, running in the background.
    prefetch: Option<(usize, Fetch)>,
    /// The row group being decoded: (index, next row offset in the file, reader).
    current: Option<(usize, u64, ParquetRecordBatchReader)>,
}

impl std::fmt::Debug for UnitReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnitReader")
            .field("path", &self.path)
            .field("batch_size", &self.batch_size)
            .field("pending", &self.pending)
            .field("current", &self.current.as_ref().map(|c| (c.0, c.1)))
            .finish()
    }
}

impl Drop for UnitReader {
    fn drop(&mut self) {
        if let Some((_, fetch)) = self.prefetch.take() {
            fetch.abort();
        }
    }
}

impl UnitReader {
    /// The file this reader reads.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema of the batches this reader yields.
    pub fn schema(&self) -> SchemaRef {
        SchemaRef::clone(&self.output_schema)
    }

    /// Starts fetching the next pending row group, unless a fetch is running.
    fn start_prefetch(&mut self) {
        if self.prefetch.is_some() {
            return;
        }
        let Some(&row_group) = self.pending.last() else {
            return;
        };
        let state = &self.inner.states[self.file_index];
        let metadata = state.meta.metadata().row_group(row_group);
        let mut ranges: Vec<std::ops::Range<u64>> = metadata
            .columns()
            .iter()
            .enumerate()
            .filter(|(leaf, _)| self.projection.leaf_included(*leaf))
            .map(|(_, column)| {
                let (start, length) = column.byte_range();
                start..start + length
            })
            .collect();
        ranges.sort_by_key(|r| r.start);
        let store = Arc::clone(&self.inner.location.store);
        let object = state.object.clone();
        let file_len = self.inner.files[self.file_index].size_bytes;
        let url = self.path.display().to_string();
        let fetch = runtime::handle().spawn(async move {
            let bytes = if ranges.is_empty() {
                Vec::new()
            } else {
                store
                    .get_ranges(&object, &ranges)
                    .await
                    .map_err(|e| Error::store(url, "read", e))?
            };
            Ok(FetchedRanges {
                file_len,
                ranges: ranges.iter().map(|r| r.start).zip(bytes).collect(),
            })
        });
        self.prefetch = Some((row_group, fetch));
    }

    /// Waits for the fetch of `row_group` (started by `start_prefetch`) and builds its decoder.
    fn open_row_group(&mut self, row_group: usize) -> Result<ParquetRecordBatchReader> {
        let decode =
            |path: &PathBuf, source: Box<dyn std::error::Error + Send + Sync>| Error::Decode {
                path: path.clone(),
                row_group,
                source,
            };
        let fetch = match self.prefetch.take() {
            Some((g, fetch)) if g == row_group => fetch,
            other => {
                self.prefetch = other;
                return Err(Error::Internal(format!(
                    "row group {row_group} of `{}` was not prefetched",
                    self.path.display()
                )));
            }
        };
        let fetched = runtime::block_on(fetch)
            .map_err(|e| Error::Internal(format!("fetch task failed: {e}")))??;
        let state = &self.inner.states[self.file_index];
        ParquetRecordBatchReaderBuilder::new_with_metadata(fetched, state.meta.clone())
            .with_row_groups(vec![row_group])
            .with_projection(self.projection.clone())
            .with_batch_size(self.batch_size)
            .build()
            .map_err(|e| decode(&self.path, Box::new(e)))
    }

    /// Rebases Spark's legacy calendar values and appends the partition columns.
    fn finish_batch(&self, batch: RecordBatch) -> Result<RecordBatch> {
        let state = &self.inner.states[self.file_index];
        let batch = if state.spark.needs_rebase() {
            rebase_batch(batch, &state.spark, &state.int96)
                .map_err(|e| Error::Internal(format!("rebasing `{}`: {e}", self.path.display())))?
        } else {
            batch
        };
        if self.partition_indices.is_empty()
            && batch.schema().fields() == self.output_schema.fields()
        {
            return Ok(batch);
        }
        let rows = batch.num_rows();
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.output_schema.fields().len());
        let mut file_columns = batch.columns().iter();
        for field in self.output_schema.fields() {
            match self
                .inner
                .partition_fields
                .iter()
                .position(|p| p.name() == field.name())
            {
                Some(p) => {
                    let file = &self.inner.files[self.file_index];
                    let value = file.partition_values.get(p).cloned().flatten();
                    let array = hive::constant_array(field.data_type(), value.as_deref(), rows)
                        .map_err(|reason| Error::Partition {
                            path: self.path.clone(),
                            reason,
                        })?;
                    columns.push(array);
                }
                None => match file_columns.next() {
                    Some(column) => columns.push(Arc::clone(column)),
                    None => {
                        return Err(Error::Internal(format!(
                            "decoded batch of `{}` lacks column `{}`",
                            self.path.display(),
                            field.name()
                        )));
                    }
                },
            }
        }
        RecordBatch::try_new(SchemaRef::clone(&self.output_schema), columns).map_err(|e| {
            Error::Internal(format!(
                "assembling a batch of `{}`: {e}",
                self.path.display()
            ))
        })
    }
}

impl Iterator for UnitReader {
    type Item = Result<(BatchOrigin, RecordBatch)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some((row_group, first_row, reader)) = &mut self.current {
                let (row_group, first_row) = (*row_group, *first_row);
                match reader.next() {
                    Some(Ok(batch)) => {
                        if let Some(current) = &mut self.current {
                            current.1 += batch.num_rows() as u64;
                        }
                        let origin = BatchOrigin {
                            file: self.path.clone(),
                            row_group,
                            first_row,
                        };
                        return Some(self.finish_batch(batch).map(|b| (origin, b)));
                    }
                    Some(Err(e)) => {
                        self.current = None;
                        return Some(Err(Error::Decode {
                            path: self.path.clone(),
                            row_group,
                            source: Box::new(e),
                        }));
                    }
                    None => self.current = None,
                }
            }
            let row_group = self.pending.pop()?;
            let opened = self.open_row_group(row_group);
            // Fetch the next row group while this one decodes.
            self.start_prefetch();
            match opened {
                Ok(reader) => {
                    let first_row = self.row_offsets.get(row_group).copied().unwrap_or(0);
                    self.current = Some((row_group, first_row, reader));
                }
                Err(e) => return Some(Err(e)),
            }
        }
    }
}
