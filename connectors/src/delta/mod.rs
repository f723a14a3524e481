//! Delta Lake tables: replays a table's `_delta_log` to find the schema and the live data files of
//! one version, without the `deltalake` crate.
//!
//! ```text
//!  _last_checkpoint ─▶ N.checkpoint[.K.P].parquet ─▶ N+1.json … V.json ─▶ DeltaSnapshot { schema, files }
//!                      (or 0.json … V.json when the log has no checkpoint ≤ V)
//! ```
//!
//! The data files are plain Parquet files that do not hold the partition columns: a reader scans
//! [`DeltaFile::path`] and appends [`DeltaFile::partition_values`] as constant columns.
//!
//! Supported: reader versions 1 to 3, classic checkpoints (single-file and multi-part), JSON
//! commits, the `timestampNtz` and `vacuumProtocolCheck` reader features, and the
//! `deletionVectors` feature as long as no live file has a deletion vector. Column mapping, live
//! deletion vectors, v2 checkpoints and other reader features fail with [`Error::Unsupported`],
//! which says how to rewrite the table so it can be read.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Display;
use std::sync::Arc;

use arrow::datatypes::{DataType, Schema, SchemaRef};
use arrow::json::LineDelimitedWriter;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{GetOptions, ObjectStore};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use percent_encoding::percent_decode_str;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::Value;

use crate::{Error, Result};

mod log;
mod paths;
mod schema;

use self::log::*;
use self::paths::*;
pub use self::schema::delta_type_to_arrow;

const LOG_DIR: &str = "_delta_log";
const LAST_CHECKPOINT: &str = "_last_checkpoint";
const COLUMN_MAPPING_MODE: &str = "delta.columnMapping.mode";
/// Reader features that need nothing from this reader (`columnMapping` is checked by its mode,
/// `deletionVectors` file by file).
const SUPPORTED_READER_FEATURES: &[&str] = &[
    "timestampNtz",
    "vacuumProtocolCheck",
    "columnMapping",
    "deletionVectors",
];
/// Checkpoint columns replay needs; the others (stats_parsed, tags, txn, ...) are not decoded.
const CHECKPOINT_COLUMNS: &[&str] = &[
    "add.path",
    "add.partitionValues",
    "add.size",
    "add.stats",
    "add.deletionVector",
    "metaData",
    "protocol",
];
/// Commit files fetched at once.
const CONCURRENT_COMMITS: usize = 16;

/// The state of a Delta table at one version: its schema and its live data files.
#[derive(Debug, Clone, PartialEq)]
pub struct DeltaSnapshot {
    /// The table version this snapshot describes.
    pub version: i64,
    /// Every column in table order, partition columns included (Delta schemaString → Arrow).
    pub schema: SchemaRef,
    /// Partition column names in metaData.partitionColumns order.
    pub partition_columns: Vec<String>,
    /// Live files sorted by path.
    pub files: Vec<DeltaFile>,
    /// When the version was committed (its `commitInfo.timestamp`, epoch ms), when the log says.
    pub timestamp_ms: Option<i64>,
}

/// One live data file of a [`DeltaSnapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeltaFile {
    /// Full object path in the store (table root joined with the add action's percent-decoded
    /// relative path).
    pub path: Path,
    /// Size in bytes, as logged.
    pub size: u64,
    /// One entry per partition column, in `partition_columns` order; `None` for a null value.
    /// Values are the strings of the add action's partitionValues (dates "2024-03-01", numbers as
    /// text).
    pub partition_values: Vec<Option<String>>,
    /// numRecords from the add action's stats, when present.
    pub num_records: Option<u64>,
}

/// True when `<root>/_delta_log/` holds at least one object.
pub async fn is_delta_table(store: &dyn ObjectStore, root: &Path) -> Result<bool> {
    let log = root.clone().join(LOG_DIR);
    match store.list(Some(&log)).next().await {
        None | Some(Err(object_store::Error::NotFound { .. })) => Ok(false),
        Some(Ok(_)) => Ok(true),
        Some(Err(e)) => Err(Error::store(log.to_string(), "list", e)),
    }
}

/// Replays the log up to `version` (latest when `None`). `url` is only for error messages.
pub async fn load_snapshot(
    store: &dyn ObjectStore,
    root: &Path,
    url: &str,
    version: Option<i64>,
) -> Result<DeltaSnapshot> {
    let url = url.trim_end_matches('/');
    if let Some(v) = version.filter(|v| *v < 0) {
        return Err(Error::InvalidOption {
            option: "version",
            reason: format!("Delta table versions start at 0, got {v}"),
        });
    }
    let log = root.clone().join(LOG_DIR);
    let hint = read_last_checkpoint(store, &log, url).await?;
    let listing = match hint {
        Some(h) if version.is_none_or(|v| v >= h) => {
            let listing = list_log(store, &log, Some(h), url).await?;
            if listing.checkpoints.contains_key(&h) {
                listing
            } else {
                tracing::warn!(
                    table = url,
                    checkpoint = h,
                    "`_last_checkpoint` names a missing checkpoint; listing the whole log"
                );
                list_log(store, &log, None, url).await?
            }
        }
        _ => list_log(store, &log, None, url).await?,
    };
    let latest = listing.latest().ok_or_else(|| Error::InvalidUrl {
        url: url.to_string(),
        reason: format!(
            "not a Delta table: `{LOG_DIR}/` holds no commit (`{}`) or checkpoint; point at the \
             table's root directory, the one that contains `{LOG_DIR}/`",
            commit_name(0)
        ),
    })?;
    let target = version.unwrap_or(latest);
    if target > latest {
        return Err(Error::InvalidOption {
            option: "version",
            reason: format!("`{url}` has no version {target}: its latest version is {latest}"),
        });
    }

    let checkpoint = listing.checkpoints.range(..=target).next_back();
    let first_commit = checkpoint.map_or(0, |(v, _)| v + 1);
    let mut commits = Vec::new();
    for v in first_commit..=target {
        let Some(path) = listing.commits.get(&v) else {
            return Err(missing_commit(
                url,
                v,
                target,
                checkpoint.is_some(),
                &listing,
            ));
        };
        commits.push((v, path.clone()));
    }

    let mut replay = Replay::default();
    if let Some((v, parts)) = checkpoint {
        tracing::debug!(
            table = url,
            checkpoint = v,
            parts = parts.len(),
            "reading Delta checkpoint"
        );
        for part in parts {
            replay_checkpoint(store, part, url, &mut replay).await?;
        }
    }
    let mut fetched = futures::stream::iter(commits)
        .map(|(v, path)| async move {
            let name = commit_name(v);
            let bytes = get_bytes(store, &path)
                .await
                .map_err(|e| Error::store(log_url(url, &name), "read", e))?;
            Ok::<_, Error>((name, bytes))
        })
        .buffered(CONCURRENT_COMMITS);
    while let Some((name, bytes)) = fetched.try_next().await? {
        replay_commit(&name, &bytes, url, &mut replay)?;
    }
    let snapshot = replay.finish(root, url, target)?;
    tracing::debug!(
        table = url,
        version = target,
        files = snapshot.files.len(),
        "replayed Delta log"
    );
    Ok(snapshot)
}

/// The log's files, from a listing.
/// One line of a commit file, or one row of a checkpoint; other actions are ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Action {
    commit_info: Option<CommitInfo>,
    add: Option<AddAction>,
    remove: Option<RemoveAction>,
    meta_data: Option<MetaData>,
    protocol: Option<Protocol>,
}

#[derive(Debug, Deserialize)]
struct CommitInfo {
    timestamp: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AddAction {
    path: String,
    #[serde(default)]
    partition_values: Option<HashMap<String, Option<String>>>,
    size: i64,
    stats: Option<String>,
    deletion_vector: Option<IgnoredAny>,
}

#[derive(Debug, Deserialize)]
struct RemoveAction {
    path: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MetaData {
    schema_string: String,
    #[serde(default)]
    partition_columns: Vec<String>,
    #[serde(default)]
    configuration: Option<HashMap<String, Option<String>>>,
    format: Option<Format>,
}

#[derive(Debug, Deserialize)]
struct Format {
    provider: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Protocol {
    min_reader_version: i32,
    reader_features: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Stats {
    num_records: Option<u64>,
}

struct LiveFile {
    /// The path as logged (a percent-encoded relative URI, or an absolute URI).
    path: String,
    size: i64,
    partition_values: HashMap<String, Option<String>>,
    num_records: Option<u64>,
    deletion_vector: bool,
    /// Index into [`Replay::sources`] and the line (or checkpoint row) of the add action.
    origin: (usize, usize),
}

/// The table state built up action by action.
#[derive(Default)]
struct Replay {
    protocol: Option<Protocol>,
    metadata: Option<(MetaData, (usize, usize))>,
    /// Live files by percent-decoded path, the key removes match on.
    files: HashMap<String, LiveFile>,
    /// Names of the log files read, for error messages.
    sources: Vec<String>,
    /// The commit timestamp of the last commit replayed.
    timestamp_ms: Option<i64>,
}

impl Replay {
    fn source(&mut self, name: &str) -> usize {
        self.sources.push(name.to_string());
        self.sources.len() - 1
    }

    fn apply(&mut self, action: Action, origin: (usize, usize), checkpoint: bool) {
        if let Some(info) = action.commit_info {
            self.timestamp_ms = info.timestamp;
        }
        if let Some(protocol) = action.protocol {
            self.protocol = Some(protocol);
        }
        if let Some(metadata) = action.meta_data {
            self.metadata = Some((metadata, origin));
        }
        // A checkpoint's removes are tombstones for VACUUM, already applied to its adds.
        if let Some(remove) = action.remove.filter(|_| !checkpoint) {
            self.files
                .remove(&*percent_decode_str(&remove.path).decode_utf8_lossy());
        }
        if let Some(add) = action.add {
            let num_records = add
                .stats
                .and_then(|s| serde_json::from_str::<Stats>(&s).ok())
                .and_then(|s| s.num_records);
            let file = LiveFile {
                size: add.size,
                partition_values: add.partition_values.unwrap_or_default(),
                num_records,
                deletion_vector: add.deletion_vector.is_some(),
                origin,
                path: add.path,
            };
            let key = percent_decode_str(&file.path)
                .decode_utf8_lossy()
                .into_owned();
            self.files.insert(key, file);
        }
    }

    fn location(&self, url: &str, (source, line): (usize, usize)) -> String {
        let name = self.sources.get(source).map_or("?", String::as_str);
        let unit = if name.ends_with(".json") {
            "line"
        } else {
            "row"
        };
        format!("`{}` {unit} {line}", log_url(url, name))
    }

    fn finish(self, root: &Path, url: &str, version: i64) -> Result<DeltaSnapshot> {
        let last = || log_url(url, &commit_name(version));
        let protocol = self.protocol.as_ref().ok_or_else(|| Error::DeltaLog {
            url: last(),
            reason: "no `protocol` action in the log up to this version; the log is damaged".into(),
        })?;
        let (metadata, meta_origin) = self.metadata.as_ref().ok_or_else(|| Error::DeltaLog {
            url: last(),
            reason: "no `metaData` action in the log up to this version; the log is damaged".into(),
        })?;
        check_protocol(protocol, metadata, url)?;
        let meta_err = |reason: String| Error::DeltaLog {
            url: self.location(url, *meta_origin),
            reason: format!("{reason}; the table's metaData action is damaged"),
        };
        if let Some(format) = metadata
            .format
            .as_ref()
            .filter(|f| !f.provider.eq_ignore_ascii_case("parquet"))
        {
            return Err(unsupported(
                url,
                format!("a Delta table whose data files are `{}`", format.provider),
                "Delta tables store Parquet files; rewrite the table with a Delta writer",
            ));
        }
        let schema_json: Value = serde_json::from_str(&metadata.schema_string)
            .map_err(|e| meta_err(format!("schemaString is not JSON: {e}")))?;
        let schema = match delta_type_to_arrow(&schema_json) {
            Ok(DataType::Struct(fields)) => Schema::new(fields),
            Ok(other) => {
                return Err(meta_err(format!(
                    "schemaString is a `{other}`, not a struct"
                )));
            }
            Err(e) => return Err(meta_err(format!("schemaString: {e}"))),
        };
        let partition_columns = metadata.partition_columns.clone();
        if let Some(missing) = partition_columns
            .iter()
            .find(|c| schema.field_with_name(c).is_err())
        {
            return Err(meta_err(format!(
                "partition column `{missing}` is not in the schema"
            )));
        }

        let mut files = Vec::with_capacity(self.files.len());
        for file in self.files.values() {
            let at = || self.location(url, file.origin);
            if file.deletion_vector {
                return Err(unsupported(
                    url,
                    format!(
                        "deletion vectors (live file `{}` has one, added at {})",
                        file.path,
                        at()
                    ),
                    "run `REORG TABLE <table> APPLY (PURGE)` in Spark or Databricks to rewrite the \
                     files without deletion vectors, and set `delta.enableDeletionVectors` = false \
                     to stop new ones",
                ));
            }
            let path = resolve_path(root, url, &file.path).map_err(|problem| match problem {
                PathProblem::Foreign => unsupported(
                    url,
                    format!(
                        "a data file outside the table root (`{}`, added at {})",
                        file.path,
                        at()
                    ),
                    "copy the table with a Delta writer (e.g. Spark `DEEP CLONE`) so all its files \
                     live under its root",
                ),
                PathProblem::Invalid(reason) => Error::DeltaLog {
                    url: at(),
                    reason: format!("add path `{}` {reason}; the log is damaged", file.path),
                },
            })?;
            let size = u64::try_from(file.size).map_err(|_| Error::DeltaLog {
                url: at(),
                reason: format!(
                    "add action has a negative size {}; the log is damaged",
                    file.size
                ),
            })?;
            let partition_values = partition_columns
                .iter()
                .map(|column| partition_value(&file.partition_values, column))
                .collect();
            files.push(DeltaFile {
                path,
                size,
                partition_values,
                num_records: file.num_records,
            });
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(DeltaSnapshot {
            version,
            schema: Arc::new(schema),
            partition_columns,
            files,
            timestamp_ms: self.timestamp_ms,
        })
    }
}

/// The partition value of `column`; the empty string means null, as in the protocol.
fn partition_value(values: &HashMap<String, Option<String>>, column: &str) -> Option<String> {
    let value = values.get(column).or_else(|| {
        let key = values.keys().find(|k| k.eq_ignore_ascii_case(column))?;
        values.get(key)
    });
    value.cloned().flatten().filter(|v| !v.is_empty())
}

fn check_protocol(protocol: &Protocol, metadata: &MetaData, url: &str) -> Result<()> {
    let mode = metadata
        .configuration
        .as_ref()
        .and_then(|c| c.get(COLUMN_MAPPING_MODE).cloned().flatten())
        .unwrap_or_else(|| "none".to_string());
    if !mode.eq_ignore_ascii_case("none") {
        return Err(unsupported(
            url,
            format!("column mapping (`{COLUMN_MAPPING_MODE}` = `{mode}`)"),
            "write the table without column mapping, e.g. in Spark `CREATE TABLE copy USING delta \
             AS SELECT * FROM <table>` (column mapping is off unless enabled)",
        ));
    }
    match protocol.min_reader_version {
        ..=2 => Ok(()),
        3 => {
            let features = protocol.reader_features.as_deref().unwrap_or_default();
            match features
                .iter()
                .find(|f| !SUPPORTED_READER_FEATURES.contains(&f.as_str()))
            {
                None => Ok(()),
                Some(feature) => Err(unsupported(
                    url,
                    format!("the Delta reader feature `{feature}`"),
                    "rewrite the table without it (e.g. Spark `ALTER TABLE <table> DROP FEATURE`), \
                     or export it to plain Parquet",
                )),
            }
        }
        v => Err(unsupported(
            url,
            format!("Delta reader version {v} (this reader knows versions 1 to 3)"),
            "export the table to plain Parquet, or rewrite it with a Delta writer at reader version 3 or lower",
        )),
    }
}

fn replay_commit(name: &str, bytes: &[u8], url: &str, replay: &mut Replay) -> Result<()> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| corrupt(url, name, format!("not UTF-8 text ({e})")))?;
    let source = replay.source(name);
    replay.timestamp_ms = None;
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let action: Action = serde_json::from_str(line).map_err(|e| {
            corrupt(
                url,
                name,
                format!("line {}: not a valid Delta action ({e})", i + 1),
            )
        })?;
        replay.apply(action, (source, i + 1), false);
    }
    Ok(())
}

/// Reads one checkpoint file. Its rows go through the same JSON action parser as commits (via
/// arrow's JSON writer), so both sources share one definition of an action.
async fn replay_checkpoint(
    store: &dyn ObjectStore,
    part: &Path,
    url: &str,
    replay: &mut Replay,
) -> Result<()> {
    let name = part.filename().unwrap_or_default().to_string();
    let bytes = get_bytes(store, part)
        .await
        .map_err(|e| Error::store(log_url(url, &name), "read", e))?;
    let damaged = |e: &dyn Display| {
        corrupt(
            url,
            &name,
            format!(
                "not a readable checkpoint ({e}); if the commits it covers still exist, deleting \
                 it (and `{LAST_CHECKPOINT}`) lets readers replay them instead"
            ),
        )
    };
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(|e| damaged(&e))?;
    let mask =
        ProjectionMask::columns(builder.parquet_schema(), CHECKPOINT_COLUMNS.iter().copied());
    let reader = builder
        .with_projection(mask)
        .build()
        .map_err(|e| damaged(&e))?;
    let source = replay.source(&name);
    let mut row = 0;
    for batch in reader {
        let batch = batch.map_err(|e| damaged(&e))?;
        let mut writer = LineDelimitedWriter::new(Vec::new());
        writer.write(&batch).map_err(|e| damaged(&e))?;
        writer.finish().map_err(|e| damaged(&e))?;
        for line in writer
            .into_inner()
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
        {
            row += 1;
            let action: Action = serde_json::from_slice(line).map_err(|e| {
                corrupt(
                    url,
                    &name,
                    format!("row {row}: not a valid Delta action ({e})"),
                )
            })?;
            replay.apply(action, (source, row), true);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
