//! [`ParquetFileWriter`]: batches to one Parquet file, atomically.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use ::parquet::arrow::ArrowWriter;
use ::parquet::basic::{Compression as ParquetCompression, ZstdLevel};
use ::parquet::file::properties::WriterProperties;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

use super::schema::field_difference;
use crate::{Error, Result};

/// Compression codec of written files.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// No compression.
    None,
    /// Snappy: fast, the usual default.
    #[default]
    Snappy,
    /// Zstandard at its default level: smaller, slower.
    Zstd,
    /// LZ4 (raw framing).
    Lz4,
}

impl Compression {
    fn to_parquet(self) -> ParquetCompression {
        match self {
            Compression::None => ParquetCompression::UNCOMPRESSED,
            Compression::Snappy => ParquetCompression::SNAPPY,
            Compression::Zstd => ParquetCompression::ZSTD(ZstdLevel::default()),
            Compression::Lz4 => ParquetCompression::LZ4_RAW,
        }
    }
}

/// Rows per row group when [`WriterOptions::row_group_rows`] is 0.
pub const DEFAULT_ROW_GROUP_ROWS: usize = 65_536;

/// How a [`ParquetFileWriter`] lays out its file.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct WriterOptions {
    /// Maximum rows per row group; 0 means [`DEFAULT_ROW_GROUP_ROWS`].
    pub row_group_rows: usize,
    /// Compression codec.
    pub compression: Compression,
}

impl Default for WriterOptions {
    fn default() -> Self {
        Self {
            row_group_rows: DEFAULT_ROW_GROUP_ROWS,
            compression: Compression::Snappy,
        }
    }
}

impl WriterOptions {
    /// The Parquet writer properties these options stand for (a starting point for
    /// [`ParquetFileWriter::with_properties`]).
    pub fn to_properties(&self) -> ::parquet::file::properties::WriterPropertiesBuilder {
        let rows = if self.row_group_rows == 0 {
            DEFAULT_ROW_GROUP_ROWS
        } else {
            self.row_group_rows
        };
        WriterProperties::builder()
            .set_compression(self.compression.to_parquet())
            .set_max_row_group_row_count(Some(rows))
    }
}

/// What a finished file holds.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileStats {
    /// The final path.
    pub path: PathBuf,
    /// Rows written.
    pub rows: u64,
    /// File size in bytes.
    pub bytes: u64,
    /// Row groups written.
    pub row_groups: usize,
}

/// Writes batches to one Parquet file atomically: the data goes to `.<name>.tmp` next to `path`,
/// which [`finish`](Self::finish) fsyncs and renames to `path`. Until then `path` is untouched, and
/// a writer dropped without `finish` removes its temporary file.
pub struct ParquetFileWriter {
    path: PathBuf,
    tmp: PathBuf,
    schema: SchemaRef,
    writer: Option<ArrowWriter<File>>,
    rows: u64,
}

impl std::fmt::Debug for ParquetFileWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParquetFileWriter")
            .field("path", &self.path)
            .field("rows", &self.rows)
            .finish()
    }
}

impl ParquetFileWriter {
    /// Creates the temporary file next to `path` (the parent directory must exist).
    pub fn new(path: impl AsRef<Path>, schema: SchemaRef, options: WriterOptions) -> Result<Self> {
        Self::with_properties(path, schema, options.to_properties().build())
    }

    /// Like [`new`](Self::new) with full control over the Parquet writer properties (encodings,
    /// dictionary, statistics per column).
    pub fn with_properties(
        path: impl AsRef<Path>,
        schema: SchemaRef,
        properties: WriterProperties,
    ) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| Error::InvalidOption {
                option: "ParquetFileWriter path",
                reason: format!("`{}` has no file name", path.display()),
            })?;
        let tmp = path.with_file_name(format!(".{name}.tmp"));
        let file = File::create(&tmp).map_err(|e| Error::io(&tmp, "create", e))?;
        let writer = ArrowWriter::try_new(file, SchemaRef::clone(&schema), Some(properties));
        let writer = match writer {
            Ok(w) => w,
            Err(source) => {
                let _ = fs::remove_file(&tmp);
                return Err(Error::Write { path, source });
            }
        };
        Ok(Self {
            path,
            tmp,
            schema,
            writer: Some(writer),
            rows: 0,
        })
    }

    /// The final path of the file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Appends a batch; its fields must match the writer's schema (names, types, nullability).
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if let Some(detail) = field_difference(&self.schema, &batch.schema()) {
            return Err(Error::BatchSchema {
                path: self.path.clone(),
                detail,
            });
        }
        let writer = self.writer.as_mut().ok_or_else(|| {
            Error::Internal(format!(
                "writer for `{}` used after finish",
                self.path.display()
            ))
        })?;
        writer.write(batch).map_err(|source| Error::Write {
            path: self.path.clone(),
            source,
        })?;
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Ends the current row group now (if it holds any rows), so the next batch starts a new one.
    pub fn flush(&mut self) -> Result<()> {
        let writer = self.writer.as_mut().ok_or_else(|| {
            Error::Internal(format!(
                "writer for `{}` used after finish",
                self.path.display()
            ))
        })?;
        writer.flush().map_err(|source| Error::Write {
            path: self.path.clone(),
            source,
        })
    }

    /// Writes the footer, fsyncs, and renames the temporary file to the final path. On error the
    /// temporary file is removed and `path` is left as it was.
    pub fn finish(mut self) -> Result<FileStats> {
        let result = self.finish_inner();
        if result.is_err() {
            let _ = fs::remove_file(&self.tmp);
        }
        result
    }

    fn finish_inner(&mut self) -> Result<FileStats> {
        let mut writer = self.writer.take().ok_or_else(|| {
            Error::Internal(format!(
                "writer for `{}` finished twice",
                self.path.display()
            ))
        })?;
        let write_err = |source| Error::Write {
            path: self.path.clone(),
            source,
        };
        writer.flush().map_err(write_err)?;
        let row_groups = writer.flushed_row_groups().len();
        // Writes the footer and hands back the file.
        let file = writer.into_inner().map_err(write_err)?;
        file.sync_all()
            .map_err(|e| Error::io(&self.tmp, "fsync", e))?;
        let bytes = file
            .metadata()
            .map_err(|e| Error::io(&self.tmp, "read metadata of", e))?
            .len();
        drop(file);
        fs::rename(&self.tmp, &self.path)
            .map_err(|e| Error::io(&self.path, "rename the finished temporary file to", e))?;
        sync_parent(&self.path);
        Ok(FileStats {
            path: self.path.clone(),
            rows: self.rows,
            bytes,
            row_groups,
        })
    }
}

impl Drop for ParquetFileWriter {
    fn drop(&mut self) {
        if self.writer.take().is_some() {
            // Abandoned before finish: leave no half-written file behind.
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Best effort: make the rename durable (a no-op where directories cannot be opened, e.g. Windows).
fn sync_parent(path: &Path) {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
        && let Ok(dir) = File::open(parent)
    {
        let _ = dir.sync_all();
    }
}
