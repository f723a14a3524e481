//! [`ParquetDataset`]: a Parquet file, or a directory tree of them, with every footer read up front.

use std::collections::HashSet;
use std::fs::{self, File};
use std::path::{Path, PathBuf};

use ::parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use arrow::datatypes::SchemaRef;
use serde::{Deserialize, Serialize};

use super::plan::{ScanUnit, plan_row_groups};
use super::schema::{column_indices, field_difference};
use crate::{Error, Result};

/// One row group of a file, as its footer describes it.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RowGroupInfo {
    /// Rows in the row group.
    pub rows: u64,
    /// Compressed size of the row group's column chunks, in bytes.
    pub compressed_bytes: u64,
}

/// One file of a dataset, as its footer describes it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ParquetFileInfo {
    /// Path of the file (the dataset root joined with the relative path found while listing).
    pub path: PathBuf,
    /// Total rows in the file.
    pub rows: u64,
    /// File size in bytes.
    pub size_bytes: u64,
    /// The file's row groups, in file order.
    pub row_groups: Vec<RowGroupInfo>,
}

/// A Parquet file or a directory tree of Parquet files sharing one Arrow schema.
///
/// Files and directories whose name starts with `_` or `.` (`_SUCCESS`, `.part.crc`, ...) are ignored
/// when listing a directory; the remaining files are sorted by path.
#[derive(Clone, Debug)]
pub struct ParquetDataset {
    root: PathBuf,
    schema: SchemaRef,
    files: Vec<ParquetFileInfo>,
}

impl ParquetDataset {
    /// Opens a single `.parquet` file or a directory (searched recursively).
    ///
    /// Every footer is read here, so a truncated or corrupt file fails now with an error naming its
    /// path, and every file must have the schema of the first one (in path order).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let root = path.as_ref().to_path_buf();
        let paths = list_files(&root)?;
        let mut schema: Option<SchemaRef> = None;
        let mut files = Vec::with_capacity(paths.len());
        for path in paths {
            let (file_schema, info) = read_footer(&path)?;
            match &schema {
                None => schema = Some(file_schema),
                Some(reference) => {
                    if let Some(detail) = field_difference(reference, &file_schema) {
                        let first = files
                            .first()
                            .map(|f: &ParquetFileInfo| f.path.clone())
                            .unwrap_or_default();
                        return Err(Error::SchemaMismatch {
                            path,
                            reference: first,
                            detail,
                        });
                    }
                }
            }
            files.push(info);
        }
        let schema = schema.ok_or_else(|| Error::EmptyDataset { path: root.clone() })?;
        tracing::debug!(path = %root.display(), files = files.len(), "opened parquet dataset");
        Ok(Self {
            root,
            schema,
            files,
        })
    }

    /// The path the dataset was opened from.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The Arrow schema shared by all files.
    pub fn schema(&self) -> SchemaRef {
        SchemaRef::clone(&self.schema)
    }

    /// Total rows over all files.
    pub fn num_rows(&self) -> u64 {
        self.files.iter().map(|f| f.rows).sum()
    }

    /// Total row groups over all files.
    pub fn num_row_groups(&self) -> usize {
        self.files.iter().map(|f| f.row_groups.len()).sum()
    }

    /// The files, sorted by path.
    pub fn files(&self) -> &[ParquetFileInfo] {
        &self.files
    }

    /// Splits all row groups into `parts` lists (one per worker), deterministically.
    ///
    /// Every row group appears exactly once. Each list is a contiguous chunk of the global row-group
    /// sequence (files in path order, row groups in file order) whose row total is as close as
    /// possible to `num_rows / parts`; a chunk spanning files becomes one [`ScanUnit`] per file.
    /// When `parts` exceeds the number of row groups some lists are empty. `parts == 0` is treated
    /// as 1.
    pub fn plan(&self, parts: usize) -> Vec<Vec<ScanUnit>> {
        plan_row_groups(&self.files, parts)
    }

    /// Checks that every named column exists; the error names the first missing one and lists the
    /// available columns.
    pub fn check_columns(&self, cols: &[String]) -> Result<()> {
        column_indices(&self.schema, cols, &self.root).map(|_| ())
    }
}

/// Reads one footer: the Arrow schema and the row-group layout.
fn read_footer(path: &Path) -> Result<(SchemaRef, ParquetFileInfo)> {
    let file = File::open(path).map_err(|e| Error::io(path, "open", e))?;
    let size_bytes = file
        .metadata()
        .map_err(|e| Error::io(path, "read metadata of", e))?
        .len();
    let meta = ArrowReaderMetadata::load(&file, ArrowReaderOptions::new()).map_err(|source| {
        Error::CorruptFile {
            path: path.to_path_buf(),
            source,
        }
    })?;
    let row_groups: Vec<RowGroupInfo> = meta
        .metadata()
        .row_groups()
        .iter()
        .map(|rg| RowGroupInfo {
            rows: u64::try_from(rg.num_rows()).unwrap_or(0),
            compressed_bytes: u64::try_from(rg.compressed_size()).unwrap_or(0),
        })
        .collect();
    let rows = row_groups.iter().map(|rg| rg.rows).sum();
    let info = ParquetFileInfo {
        path: path.to_path_buf(),
        rows,
        size_bytes,
        row_groups,
    };
    Ok((SchemaRef::clone(meta.schema()), info))
}

/// `true` for names a dataset listing skips: `_SUCCESS`, `_metadata`, `.crc` files, `.tmp` dirs.
fn is_hidden(path: &Path) -> bool {
    path.file_name()
        .map(|n| n.to_string_lossy())
        .is_some_and(|n| n.starts_with('_') || n.starts_with('.'))
}

/// The data files of a dataset, sorted by path: `root` itself if it is a file, else every
/// non-hidden file below it.
fn list_files(root: &Path) -> Result<Vec<PathBuf>> {
    let meta = fs::metadata(root).map_err(|e| Error::io(root, "read metadata of", e))?;
    if !meta.is_dir() {
        return Ok(vec![root.to_path_buf()]);
    }
    let mut files = Vec::new();
    let mut visited = HashSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        // Symlinked directories may form cycles; visit each real directory once.
        let real = fs::canonicalize(&dir).map_err(|e| Error::io(&dir, "resolve", e))?;
        if !visited.insert(real) {
            continue;
        }
        let entries = fs::read_dir(&dir).map_err(|e| Error::io(&dir, "list directory", e))?;
        for entry in entries {
            let path = entry
                .map_err(|e| Error::io(&dir, "list directory", e))?
                .path();
            if is_hidden(&path) {
                continue;
            }
            let meta = fs::metadata(&path).map_err(|e| Error::io(&path, "read metadata of", e))?;
            if meta.is_dir() {
                stack.push(path);
            } else {
                files.push(path);
            }
        }
    }
    if files.is_empty() {
        return Err(Error::EmptyDataset {
            path: root.to_path_buf(),
        });
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_names() {
        assert!(is_hidden(Path::new("/a/_SUCCESS")));
        assert!(is_hidden(Path::new("/a/.part-0.parquet.crc")));
        assert!(is_hidden(Path::new("_tmp")));
        assert!(!is_hidden(Path::new("/a/_b/part-0.parquet")));
        assert!(!is_hidden(Path::new("/a/part-0.parquet")));
    }

    #[test]
    fn missing_path_is_an_io_error_naming_it() {
        let p = std::env::temp_dir().join("millrace-connectors-does-not-exist-4711");
        let err = ParquetDataset::open(&p)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains(&p.display().to_string()), "{err}");
    }
}
