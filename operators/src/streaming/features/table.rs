//! The dimension table of `[features.table]`: a Parquet dataset, Spark output or a Delta table,
//! read once, and for Delta watched for new versions. A new version becomes a difference: each
//! worker retracts the rows of its share of the files the version removed and inserts those of
//! the files it added; rows a rewrite left as they were cancel out inside the view.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use arrow::datatypes::SchemaRef;
use millrace_connectors::parquet::{DatasetOptions, ParquetDataset, ScanOptions, ScanUnit};
use millrace_connectors::storage::StorageOptions;
use millrace_engine::features::{Row, Value};

use crate::spec::FeaturesSpec;
use crate::{Error, Result};

/// A table row with its change: (key, values), +1 or -1.
pub(crate) type TableUpdate = ((Value, Row), isize);

/// The table as one worker reads it.
pub(crate) struct FeatureTable {
    path: String,
    options: DatasetOptions,
    /// The key column, then the feature columns.
    columns: Vec<String>,
    dataset: ParquetDataset,
    refresh: Option<Duration>,
    /// When worker 0 last looked for a new version (never, at first: it looks at once).
    checked: Option<Instant>,
}

impl FeatureTable {
    /// Opens the table at `version` (the latest when `None`) and checks its columns.
    pub(crate) fn open(
        spec: &FeaturesSpec,
        storage: &StorageOptions,
        version: Option<i64>,
    ) -> Result<Self> {
        let table = spec
            .table
            .as_ref()
            .ok_or_else(|| Error::Internal("no [features.table]".into()))?;
        let key = spec.table_key().unwrap_or(&spec.key).to_string();
        let options = DatasetOptions {
            storage: storage.clone(),
            delta_version: version,
            ..Default::default()
        };
        let dataset = ParquetDataset::open_with(&table.path, &options).map_err(|e| {
            Error::config(
                "features.table.path",
                format!("cannot read the table `{}`: {e}", table.path),
            )
        })?;
        let columns: Vec<String> = std::iter::once(key)
            .chain(table.columns.iter().cloned())
            .collect();
        dataset
            .check_columns(&columns)
            .map_err(|e| Error::config("features.table.columns", e.to_string()))?;
        let refresh = spec.refresh();
        if refresh.is_some() && dataset.delta_version().is_none() {
            return Err(Error::config(
                "features.table.refresh",
                format!(
                    "`{}` is not a Delta table: only a Delta table has versions to watch",
                    table.path
                ),
            ));
        }
        Ok(FeatureTable {
            path: table.path.clone(),
            options,
            columns,
            dataset,
            refresh,
            checked: None,
        })
    }

    /// The schema of the table at `path`, all its columns.
    pub(crate) fn schema_at(path: &str, storage: &StorageOptions) -> Result<SchemaRef> {
        let options = DatasetOptions {
            storage: storage.clone(),
            ..Default::default()
        };
        let dataset = ParquetDataset::open_with(path, &options).map_err(|e| {
            Error::config(
                "features.table.path",
                format!("cannot read the table `{path}`: {e}"),
            )
        })?;
        Ok(dataset.schema())
    }

    /// The table's schema.
    pub(crate) fn schema(&self) -> SchemaRef {
        self.dataset.schema()
    }

    /// The Delta version read (`None` for Parquet).
    pub(crate) fn version(&self) -> Option<i64> {
        self.dataset.delta_version()
    }

    /// The rows of worker `index` of `peers`'s share of the table.
    pub(crate) fn rows(&self, index: usize, peers: usize) -> Result<Vec<TableUpdate>> {
        let units = self.dataset.plan(peers).swap_remove(index);
        self.read(&self.dataset, &units, 1)
    }

    /// Worker 0: the latest version when it is newer than the one read and a refresh is due.
    pub(crate) fn newer(&mut self) -> Result<Option<i64>> {
        let Some(every) = self.refresh else {
            return Ok(None);
        };
        if self.checked.is_some_and(|at| at.elapsed() < every) {
            return Ok(None);
        }
        self.checked = Some(Instant::now());
        let latest = ParquetDataset::open_with(
            &self.path,
            &DatasetOptions {
                delta_version: None,
                ..self.options.clone()
            },
        )
        .map_err(|e| {
            Error::config(
                "features.table.path",
                format!("the table `{}` can no longer be read: {e}", self.path),
            )
        })?;
        Ok(latest.delta_version().filter(|v| Some(*v) > self.version()))
    }

    /// Moves to `version`: this worker's share of the rows it removed (-1) and added (+1), and
    /// when it was committed (epoch ms, when the log says).
    pub(crate) fn move_to(
        &mut self,
        version: i64,
        index: usize,
        peers: usize,
    ) -> Result<(Vec<TableUpdate>, Option<i64>)> {
        let options = DatasetOptions {
            delta_version: Some(version),
            ..self.options.clone()
        };
        let next = ParquetDataset::open_with(&self.path, &options).map_err(|e| {
            Error::config(
                "features.table.path",
                format!("cannot read version {version} of `{}`: {e}", self.path),
            )
        })?;
        next.check_columns(&self.columns).map_err(|e| {
            Error::config("features.table.columns", format!("version {version}: {e}"))
        })?;
        let paths = |d: &ParquetDataset| {
            d.files()
                .iter()
                .map(|f| f.path.clone())
                .collect::<BTreeSet<PathBuf>>()
        };
        let (old, new) = (paths(&self.dataset), paths(&next));
        let only = |d: &ParquetDataset, other: &BTreeSet<PathBuf>| -> Vec<ScanUnit> {
            d.plan(peers)
                .swap_remove(index)
                .into_iter()
                .filter(|u| !other.contains(&u.file))
                .collect()
        };
        let mut updates = self.read(&self.dataset, &only(&self.dataset, &new), -1)?;
        updates.extend(self.read(&next, &only(&next, &old), 1)?);
        let at = next.delta_timestamp_ms();
        tracing::info!(table = %self.path, version, rows = updates.len(), "feature table: new version");
        self.dataset = next;
        Ok((updates, at))
    }

    fn read(
        &self,
        dataset: &ParquetDataset,
        units: &[ScanUnit],
        diff: isize,
    ) -> Result<Vec<TableUpdate>> {
        let scan = ScanOptions {
            projection: Some(self.columns.clone()),
            batch_size: 8192,
        };
        let mut out = Vec::new();
        for unit in units {
            for item in dataset.read_unit(unit, &scan)? {
                let (_, batch) = item?;
                for mut row in Value::rows(&batch, &self.columns)? {
                    let key = row.remove(0);
                    if !key.is_null() {
                        out.push(((key, row), diff));
                    }
                }
            }
        }
        Ok(out)
    }
}
