//! Part files on their way to the store (the counting upload sink, closing a file, cleaning up
//! completed ones) and the dataset-level markers: `_SUCCESS` and overwrite's delete.

use super::*;

/// The sink of one part file's bytes: an object store upload that counts what it is given.
pub(super) struct StoreFile {
    pub(super) upload: BufWriter,
    pub(super) bytes: u64,
    /// `complete` has started: the upload can no longer be aborted.
    pub(super) completing: bool,
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
pub(super) struct OpenFile {
    /// Path relative to the root.
    pub(super) rel: String,
    /// Display form, for errors.
    pub(super) url: String,
    pub(super) location: StorePath,
    pub(super) writer: AsyncArrowWriter<StoreFile>,
    pub(super) rows: u64,
}

/// A part file this writer completed.
pub(super) struct Completed {
    pub(super) file: WrittenFile,
    pub(super) location: StorePath,
}

/// Turns a Parquet writer error into this crate's, keeping an object store error found inside it
/// (so it is reported, and retried, as the store's).
pub(super) fn write_error(url: &str, e: ParquetError) -> Error {
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
pub(super) fn store_error(e: BoxError) -> std::result::Result<object_store::Error, BoxError> {
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
pub(super) fn location(root: &StorePath, rel: &str) -> std::result::Result<StorePath, String> {
    let mut location = root.clone();
    for segment in rel.split('/') {
        let part = PathPart::parse(segment).map_err(|e| e.to_string())?;
        location = location.join(part);
    }
    Ok(location)
}

/// The file name's codec part, as Spark writes it (`.snappy`, `.zstd`, `.lz4`; none when
/// uncompressed).
pub(super) fn codec_extension(compression: Compression) -> &'static str {
    match compression {
        Compression::None => "",
        Compression::Snappy => ".snappy",
        Compression::Zstd => ".zstd",
        Compression::Lz4 => ".lz4",
    }
}

/// Writes the footer and completes the upload; on failure aborts the upload where it still can.
pub(super) async fn close_file(file: OpenFile) -> Result<Completed> {
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

/// Deletes the completed files (one already gone is fine); the first failure after trying all.
pub(super) async fn delete_completed(
    store: &dyn ObjectStore,
    url: &str,
    files: &[Completed],
) -> Result<()> {
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
