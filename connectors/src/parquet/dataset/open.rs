//! Opening a dataset: listing its files (or a Delta snapshot) and reading their footers.

use super::*;

/// What listing a dataset found: its files (after the partition filters), its partition
/// columns, a Delta table's column types and version.
pub(super) struct Listing {
    pub(super) listed: Vec<ListedFile>,
    pub(super) partition_columns: Vec<String>,
    pub(super) delta_types: BTreeMap<String, DataType>,
    pub(super) delta_version: Option<i64>,
    pub(super) delta_timestamp_ms: Option<i64>,
    pub(super) is_delta: bool,
}

/// Lists the dataset at `location`: a Delta table's snapshot, or the Parquet files (after its
/// `_SUCCESS` marker when asked to wait); refuses an empty one and a filter on a column that is
/// not a partition column.
pub(super) async fn list_files(
    location: &StorageLocation,
    options: &DatasetOptions,
) -> Result<Listing> {
    let is_delta = match options.format {
        DatasetFormat::Parquet => false,
        DatasetFormat::Delta => true,
        DatasetFormat::Auto => delta::is_delta_table(location.store.as_ref(), &location.root)
            .await
            .unwrap_or(false),
    };
    let mut delta_timestamp_ms = None;
    let (listed, partition_columns, delta_types, delta_version) = if is_delta {
        let snapshot = delta::load_snapshot(
            location.store.as_ref(),
            &location.root,
            &location.url,
            options.delta_version,
        )
        .await?;
        delta_timestamp_ms = snapshot.timestamp_ms;
        let types: BTreeMap<String, DataType> = snapshot
            .schema
            .fields()
            .iter()
            .map(|f| (f.name().clone(), f.data_type().clone()))
            .collect();
        let listed: Vec<ListedFile> = snapshot
            .files
            .into_iter()
            .map(|file| ListedFile {
                object: file.path,
                size: file.size,
                partition: snapshot
                    .partition_columns
                    .iter()
                    .cloned()
                    .zip(file.partition_values)
                    .collect(),
            })
            .filter(|file| passes(&file.partition, &options.partition_filters))
            .collect();
        (
            listed,
            snapshot.partition_columns,
            types,
            Some(snapshot.version),
        )
    } else {
        if let Some(timeout) = options.wait_for_success {
            wait_for_success(location, timeout).await?;
        }
        let listed = list_dataset(location, &options.partition_filters).await?;
        let columns = partition_columns(location, &listed)?;
        (listed, columns, BTreeMap::new(), None)
    };
    if listed.is_empty() {
        return Err(Error::EmptyDataset {
            path: location.url.clone().into(),
        });
    }
    for filter in &options.partition_filters {
        if !partition_columns.contains(&filter.column) {
            return Err(Error::InvalidOption {
                option: "partition_filter",
                reason: format!(
                    "`{}` is not a partition column of `{}` (partition columns: {})",
                    filter.column,
                    location.url,
                    list_or_none(&partition_columns)
                ),
            });
        }
    }

    Ok(Listing {
        listed,
        partition_columns,
        delta_types,
        delta_version,
        delta_timestamp_ms,
        is_delta,
    })
}

/// Reads every listed file's footer (a few at a time): the dataset's file schema (the first
/// file's; another file is read with its Arrow types when its Parquet types allow, else refused),
/// each file's row groups and its reading state.
pub(super) async fn read_footers(
    location: &StorageLocation,
    listed: Vec<ListedFile>,
) -> Result<(SchemaRef, Vec<ParquetFileInfo>, Vec<FileState>)> {
    let footers: Vec<Result<(ListedFile, ArrowReaderMetadata)>> =
        futures::stream::iter(listed.into_iter().map(|file| async move {
            let meta = read_footer(location, &file).await?;
            Ok((file, meta))
        }))
        .buffered(FOOTER_CONCURRENCY)
        .collect()
        .await;

    let mut file_schema: Option<SchemaRef> = None;
    let mut files = Vec::with_capacity(footers.len());
    let mut states = Vec::with_capacity(footers.len());
    for footer in footers {
        let (listed, mut meta) = footer?;
        let path = PathBuf::from(location.url_of(&listed.object));
        match &file_schema {
            None => file_schema = Some(without_metadata(meta.schema())),
            Some(reference) => {
                if let Some(detail) = field_difference(reference, meta.schema()) {
                    // Writers differ in the Arrow types they record (Utf8 vs Utf8View, time
                    // zone spellings): read this file as the first one when its Parquet
                    // types allow it.
                    let coerced = ArrowReaderMetadata::try_new(
                        Arc::clone(meta.metadata()),
                        ArrowReaderOptions::new().with_schema(SchemaRef::clone(reference)),
                    );
                    if let Ok(coerced) = coerced
                        && field_difference(reference, coerced.schema()).is_none()
                    {
                        meta = coerced;
                        tracing::debug!(file = %path.display(), "read with the first file's Arrow types");
                    } else {
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
        }
        let row_groups: Vec<RowGroupInfo> = meta
            .metadata()
            .row_groups()
            .iter()
            .map(|rg| RowGroupInfo {
                rows: u64::try_from(rg.num_rows()).unwrap_or(0),
                compressed_bytes: u64::try_from(rg.compressed_size()).unwrap_or(0),
            })
            .collect();
        let partition_values: Vec<Option<String>> =
            listed.partition.iter().map(|(_, v)| v.clone()).collect();
        files.push(ParquetFileInfo {
            path,
            rows: row_groups.iter().map(|rg| rg.rows).sum(),
            size_bytes: listed.size,
            row_groups,
            partition_values,
        });
        let spark =
            SparkWriteInfo::from_key_value(meta.metadata().file_metadata().key_value_metadata());
        let int96 = int96_columns(meta.parquet_schema());
        states.push(FileState {
            object: listed.object,
            meta,
            spark,
            int96,
        });
    }
    let file_schema = file_schema.ok_or_else(|| Error::EmptyDataset {
        path: location.url.clone().into(),
    })?;
    Ok((file_schema, files, states))
}
