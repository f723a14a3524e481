//! Reading a [`ScanUnit`]'s row groups as a stream of `RecordBatch`es.

use std::fs::File;
use std::path::{Path, PathBuf};

use ::parquet::arrow::ProjectionMask;
use ::parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReader,
    ParquetRecordBatchReaderBuilder,
};
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

use super::plan::ScanUnit;
use super::schema::column_indices;
use crate::{Error, Result};

/// Rows per batch when [`ScanOptions::batch_size`] is 0.
pub const DEFAULT_BATCH_SIZE: usize = 65_536;

/// What to decode from each row group.
#[derive(Clone, Debug, Default)]
pub struct ScanOptions {
    /// Only these columns are decoded; the output keeps the dataset's column order, whatever the
    /// order here. `None` decodes every column.
    pub projection: Option<Vec<String>>,
    /// Maximum rows per batch; 0 means [`DEFAULT_BATCH_SIZE`].
    pub batch_size: usize,
}

/// Where a batch came from, for dead-letter messages.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct BatchOrigin {
    /// The file.
    pub file: PathBuf,
    /// The row group within the file.
    pub row_group: usize,
    /// Offset of the batch's first row within the file (counting all earlier row groups).
    pub first_row: u64,
}

/// Streams the unit's row groups as `RecordBatch`es, decoding one row group at a time (so memory
/// stays bounded by one row group's projected columns).
///
/// The footer, the row-group indices and the projection are checked here, before any data is read.
/// A decode error is yielded once, naming the file and row group; the iterator then moves on to the
/// next row group, so a caller may dead-letter the damaged group and keep going, or stop.
pub fn read_unit(unit: &ScanUnit, options: &ScanOptions) -> Result<UnitReader> {
    let path = unit.file.clone();
    let file = File::open(&path).map_err(|e| Error::io(&path, "open", e))?;
    let meta = ArrowReaderMetadata::load(&file, ArrowReaderOptions::new()).map_err(|source| {
        Error::CorruptFile {
            path: path.clone(),
            source,
        }
    })?;

    let row_groups = meta.metadata().row_groups();
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

    let projection = match &options.projection {
        None => ProjectionMask::all(),
        Some(columns) => {
            let indices = column_indices(meta.schema(), columns, &path)?;
            ProjectionMask::roots(meta.parquet_schema(), indices)
        }
    };
    let batch_size = if options.batch_size == 0 {
        DEFAULT_BATCH_SIZE
    } else {
        options.batch_size
    };

    Ok(UnitReader {
        path,
        file,
        meta,
        projection,
        batch_size,
        row_offsets,
        pending: unit.row_groups.iter().rev().copied().collect(),
        current: None,
    })
}

/// The iterator returned by [`read_unit`].
pub struct UnitReader {
    path: PathBuf,
    file: File,
    meta: ArrowReaderMetadata,
    projection: ProjectionMask,
    batch_size: usize,
    /// Row offset of each row group's first row within the file.
    row_offsets: Vec<u64>,
    /// Row groups still to read, last one first (popped from the end).
    pending: Vec<usize>,
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

impl UnitReader {
    /// The file this reader reads.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn open_row_group(&self, row_group: usize) -> Result<ParquetRecordBatchReader> {
        let decode = |source: Box<dyn std::error::Error + Send + Sync>| Error::Decode {
            path: self.path.clone(),
            row_group,
            source,
        };
        let file = self
            .file
            .try_clone()
            .map_err(|e| Error::io(&self.path, "re-open", e))?;
        ParquetRecordBatchReaderBuilder::new_with_metadata(file, self.meta.clone())
            .with_row_groups(vec![row_group])
            .with_projection(self.projection.clone())
            .with_batch_size(self.batch_size)
            .build()
            .map_err(|e| decode(Box::new(e)))
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
                        return Some(Ok((origin, batch)));
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
            match self.open_row_group(row_group) {
                Ok(reader) => {
                    let first_row = self.row_offsets.get(row_group).copied().unwrap_or(0);
                    self.current = Some((row_group, first_row, reader));
                }
                Err(e) => return Some(Err(e)),
            }
        }
    }
}
