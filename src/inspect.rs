//! `millrace inspect` and `millrace cp`: a first look at a dataset anywhere millrace can read
//! (schema with partition columns, row count, per-column nulls, min, max, sum), and copying a
//! dataset between stores.

use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use millrace_connectors::inspect::{DatasetStats, StatsBuilder};
use millrace_connectors::parquet::{DatasetOptions, ParquetDataset, ScanOptions};
use millrace_connectors::runtime;
use millrace_connectors::storage::{StorageLocation, StorageOptions};
use object_store::ObjectStoreExt;
use object_store::buffered::BufWriter;
use serde::Serialize;
use tokio::io::AsyncWriteExt;

use crate::Result;

/// What `millrace inspect` reports.
#[derive(Clone, Debug, Serialize)]
pub struct Inspection {
    /// The location, as a URL or absolute path.
    pub url: String,
    /// `parquet` or `delta`.
    pub format: String,
    /// The Delta table version read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delta_version: Option<i64>,
    /// Data files read.
    pub files: usize,
    /// Their total size in bytes.
    pub bytes: u64,
    /// Row groups over all files.
    pub row_groups: usize,
    /// Partition columns (also in `stats.columns`, last).
    pub partition_columns: Vec<String>,
    /// Rows and per-column statistics.
    pub stats: DatasetStats,
}

impl Inspection {
    /// A human-readable report.
    pub fn render_text(&self) -> String {
        let mut out = format!(
            "{} ({}{}): {} files, {} row groups, {:.1} MB\n",
            self.url,
            self.format,
            self.delta_version
                .map(|v| format!(" version {v}"))
                .unwrap_or_default(),
            self.files,
            self.row_groups,
            self.bytes as f64 / 1e6
        );
        if !self.partition_columns.is_empty() {
            out.push_str(&format!(
                "partitioned by: {}\n",
                self.partition_columns.join(", ")
            ));
        }
        out.push_str(&self.stats.render_text());
        out
    }
}

/// Reads every row of the dataset at `url` with `workers` threads and computes its statistics.
pub fn inspect(
    url: &str,
    options: &DatasetOptions,
    workers: usize,
    progress: bool,
) -> Result<Inspection> {
    let dataset = ParquetDataset::open_with(url, options)?;
    let workers = workers.max(1);
    let bar = if progress {
        let bar = ProgressBar::new(dataset.num_rows());
        bar.set_style(
            ProgressStyle::with_template(
                "inspect {bar:30} {human_pos}/{human_len} rows {per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let plan = dataset.plan(workers);
    let partials: Vec<Result<StatsBuilder>> = std::thread::scope(|scope| {
        let handles: Vec<_> = plan
            .into_iter()
            .map(|units| {
                let dataset = dataset.clone();
                let bar = bar.clone();
                scope.spawn(move || -> Result<StatsBuilder> {
                    let mut stats = StatsBuilder::new(dataset.schema());
                    for unit in &units {
                        for item in dataset.read_unit(unit, &ScanOptions::default())? {
                            let (_, batch) = item?;
                            stats.update(&batch)?;
                            bar.inc(batch.num_rows() as u64);
                        }
                    }
                    Ok(stats)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(crate::Error::Internal("an inspect thread panicked".into()))
                })
            })
            .collect()
    });
    bar.finish_and_clear();
    let mut total = StatsBuilder::new(dataset.schema());
    for partial in partials {
        total.merge(partial?)?;
    }
    Ok(Inspection {
        url: dataset.url().to_string(),
        format: if dataset.delta_version().is_some() {
            "delta".into()
        } else {
            "parquet".into()
        },
        delta_version: dataset.delta_version(),
        files: dataset.files().len(),
        bytes: dataset.num_bytes(),
        row_groups: dataset.num_row_groups(),
        partition_columns: dataset.partition_columns(),
        stats: total.finish(),
    })
}

/// What `millrace cp` copied.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct CopyReport {
    /// Objects copied.
    pub objects: usize,
    /// Bytes copied.
    pub bytes: u64,
}

/// Copies every object under `src` to the same relative path under `dst` (between any two
/// stores), streaming each object through a multipart upload; `_SUCCESS` markers are copied
/// last so a reader waiting for them never sees a partial copy.
pub fn copy(src: &str, dst: &str, storage: &StorageOptions) -> Result<CopyReport> {
    let from = StorageLocation::parse(src, storage)?;
    let to = StorageLocation::parse(dst, storage)?;
    runtime::block_on(async {
        let mut objects: Vec<object_store::ObjectMeta> = from
            .store
            .list(Some(&from.root))
            .try_collect()
            .await
            .map_err(|e| millrace_connectors::Error::store(from.url.clone(), "list", e))?;
        objects.sort_by_key(|o| {
            (
                o.location.filename() == Some("_SUCCESS"),
                o.location.to_string(),
            )
        });
        let (markers, data): (Vec<_>, Vec<_>) = objects
            .into_iter()
            .partition(|o| o.location.filename() == Some("_SUCCESS"));
        let copy_one = |meta: object_store::ObjectMeta| {
            let (from, to) = (&from, &to);
            async move {
                let relative = meta
                    .location
                    .prefix_match(&from.root)
                    .map(|parts| parts.collect::<Vec<_>>())
                    .unwrap_or_default();
                let target = relative
                    .into_iter()
                    .fold(to.root.clone(), |path, part| path.join(part));
                let source_url = from.url_of(&meta.location);
                let target_url = to.url_of(&target);
                let mut stream = from
                    .store
                    .get(&meta.location)
                    .await
                    .map_err(|e| millrace_connectors::Error::store(source_url.clone(), "read", e))?
                    .into_stream();
                let mut writer = BufWriter::new(Arc::clone(&to.store), target.clone());
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk.map_err(|e| {
                        millrace_connectors::Error::store(source_url.clone(), "read", e)
                    })?;
                    writer.write_all(&chunk).await.map_err(|e| {
                        crate::Error::Internal(format!("writing {target_url}: {e}"))
                    })?;
                }
                writer
                    .shutdown()
                    .await
                    .map_err(|e| crate::Error::Internal(format!("finishing {target_url}: {e}")))?;
                Ok::<u64, crate::Error>(meta.size)
            }
        };
        let mut report = CopyReport::default();
        let sizes: Vec<Result<u64>> = futures::stream::iter(data.into_iter().map(copy_one))
            .buffer_unordered(8)
            .collect()
            .await;
        for size in sizes {
            report.bytes += size?;
            report.objects += 1;
        }
        for marker in markers {
            report.bytes += copy_one(marker).await?;
            report.objects += 1;
        }
        Ok(report)
    })
}
