//! Listing a dataset directory the way Spark does: Hive-style `key=value` directories become
//! partition values, `_`/`.` names are skipped, and partition filters prune whole directories
//! before anything below them is listed.

use std::cmp::Ordering;
use std::time::{Duration, Instant};

use futures::StreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path as ObjectPath;
use serde::{Deserialize, Serialize};

use crate::hive::parse_segment;
use crate::storage::StorageLocation;
use crate::{Error, Result};

/// Directories listed at once while walking a dataset.
const LIST_CONCURRENCY: usize = 16;

/// `(column, value)` pairs of the `key=value` directories above a file, outermost first.
type Partition = Vec<(String, Option<String>)>;

/// One data file found by [`list_dataset`].
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ListedFile {
    /// Path in the store.
    pub object: ObjectPath,
    /// Size in bytes.
    pub size: u64,
    /// `(column, value)` of every `key=value` directory above the file, outermost first.
    pub partition: Partition,
}

/// A condition on a partition column, checked against directory names before they are listed.
///
/// Written as text in a pipeline file: `region = 'eu'`, `event_date >= '2024-03-02'`,
/// `bucket in (1, 2, 3)`, `region not in ('us')`, `region is null`, `region is not null`
/// (`=`, `==`, `!=`, `<>`, `<`, `<=`, `>`, `>=`). Values compare as numbers when both sides
/// are numbers, else as text (ISO dates compare correctly as text). As in SQL, a null partition
/// value (`__HIVE_DEFAULT_PARTITION__`) fails every test but `is null`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PartitionFilter {
    /// The partition column.
    pub column: String,
    /// The test.
    pub op: FilterOp,
}

/// The test of a [`PartitionFilter`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum FilterOp {
    /// `=`
    Eq(String),
    /// `!=` / `<>`
    Ne(String),
    /// `<`
    Lt(String),
    /// `<=`
    Le(String),
    /// `>`
    Gt(String),
    /// `>=`
    Ge(String),
    /// `in (...)`
    In(Vec<String>),
    /// `not in (...)`
    NotIn(Vec<String>),
    /// `is null`
    IsNull,
    /// `is not null`
    IsNotNull,
}

impl PartitionFilter {
    /// Parses `column op value`; the error says what form is expected.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let bad = || {
            format!(
                "cannot parse partition filter `{text}`: expected `column OP value` with OP one of \
                 = != <> < <= > >=, or `column in (v1, v2)`, `column not in (...)`, \
                 `column is null`, `column is not null`"
            )
        };
        let trimmed = text.trim();
        let column_end = trimmed
            .find(|c: char| c.is_whitespace() || "=!<>".contains(c))
            .ok_or_else(bad)?;
        let column = trimmed[..column_end].trim_matches('`').to_string();
        if column.is_empty() {
            return Err(bad());
        }
        let rest = trimmed[column_end..].trim_start();
        let lower = rest.to_ascii_lowercase();
        let op = if lower == "is null" {
            FilterOp::IsNull
        } else if lower == "is not null" {
            FilterOp::IsNotNull
        } else if let Some(list) = lower.strip_prefix("not in") {
            FilterOp::NotIn(parse_list(&rest[rest.len() - list.len()..]).ok_or_else(bad)?)
        } else if let Some(list) = lower.strip_prefix("in") {
            FilterOp::In(parse_list(&rest[rest.len() - list.len()..]).ok_or_else(bad)?)
        } else {
            type MakeOp = fn(String) -> FilterOp;
            let ops: [(&str, MakeOp); 8] = [
                ("==", FilterOp::Eq),
                ("!=", FilterOp::Ne),
                ("<>", FilterOp::Ne),
                ("<=", FilterOp::Le),
                (">=", FilterOp::Ge),
                ("=", FilterOp::Eq),
                ("<", FilterOp::Lt),
                (">", FilterOp::Gt),
            ];
            let (symbol, make) = ops
                .iter()
                .find(|(symbol, _)| rest.starts_with(symbol))
                .ok_or_else(bad)?;
            let value = unquote(rest[symbol.len()..].trim()).ok_or_else(bad)?;
            make(value)
        };
        Ok(Self { column, op })
    }

    /// Whether a partition value passes.
    pub fn matches(&self, value: Option<&str>) -> bool {
        let Some(value) = value else {
            return matches!(self.op, FilterOp::IsNull);
        };
        let cmp = |other: &str| compare(value, other);
        match &self.op {
            FilterOp::Eq(v) => cmp(v) == Ordering::Equal,
            FilterOp::Ne(v) => cmp(v) != Ordering::Equal,
            FilterOp::Lt(v) => cmp(v) == Ordering::Less,
            FilterOp::Le(v) => cmp(v) != Ordering::Greater,
            FilterOp::Gt(v) => cmp(v) == Ordering::Greater,
            FilterOp::Ge(v) => cmp(v) != Ordering::Less,
            FilterOp::In(vs) => vs.iter().any(|v| cmp(v) == Ordering::Equal),
            FilterOp::NotIn(vs) => vs.iter().all(|v| cmp(v) != Ordering::Equal),
            FilterOp::IsNull => false,
            FilterOp::IsNotNull => true,
        }
    }
}

fn unquote(value: &str) -> Option<String> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    for quote in ['\'', '"'] {
        if let Some(inner) = value.strip_prefix(quote) {
            return inner.strip_suffix(quote).map(str::to_string);
        }
    }
    Some(value.to_string())
}

fn parse_list(text: &str) -> Option<Vec<String>> {
    let inner = text.trim().strip_prefix('(')?.strip_suffix(')')?;
    let values: Option<Vec<String>> = inner.split(',').map(unquote).collect();
    values.filter(|v| !v.is_empty())
}

/// Numbers compare as numbers, everything else as text.
fn compare(a: &str, b: &str) -> Ordering {
    match (a.parse::<i64>(), b.parse::<i64>()) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        _ => match (a.parse::<f64>(), b.parse::<f64>()) {
            (Ok(x), Ok(y)) if x.is_finite() && y.is_finite() => x.total_cmp(&y),
            _ => a.cmp(b),
        },
    }
}

/// `true` for names a listing skips: `_SUCCESS`, `_committed_*`, `_started_*`, `_temporary`,
/// `_delta_log`, `.crc` files and other hidden files.
pub(crate) fn is_hidden(name: &str) -> bool {
    name.starts_with('_') || name.starts_with('.')
}

/// Lists the data files under `location`, sorted by path, pruning partition directories that fail
/// `filters` before listing them. A `location` that is a single object is returned as one file.
pub(crate) async fn list_dataset(
    location: &StorageLocation,
    filters: &[PartitionFilter],
) -> Result<Vec<ListedFile>> {
    let store = &location.store;
    if let Some(path) = &location.local_root {
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, "read metadata of", e))?;
        if meta.is_file() {
            return Ok(vec![ListedFile {
                object: location.root.clone(),
                size: meta.len(),
                partition: Vec::new(),
            }]);
        }
    }
    let mut files = Vec::new();
    let mut level: Vec<(ObjectPath, Partition)> = vec![(location.root.clone(), Vec::new())];
    let mut first = true;
    while !level.is_empty() {
        let listings: Vec<_> = futures::stream::iter(level.into_iter().map(|(dir, partition)| {
            let store = std::sync::Arc::clone(store);
            async move {
                let listed = store.list_with_delimiter(Some(&dir)).await;
                (dir, partition, listed)
            }
        }))
        .buffer_unordered(LIST_CONCURRENCY)
        .collect()
        .await;
        let mut next = Vec::new();
        for (dir, partition, listed) in listings {
            let listed = listed.map_err(|e| Error::store(location.url_of(&dir), "list", e))?;
            if first && listed.objects.is_empty() && listed.common_prefixes.is_empty() {
                // Not a directory: maybe the URL names one object.
                return match store.head(&location.root).await {
                    Ok(meta) => Ok(vec![ListedFile {
                        object: meta.location,
                        size: meta.size,
                        partition: Vec::new(),
                    }]),
                    Err(object_store::Error::NotFound { .. }) => Err(Error::EmptyDataset {
                        path: location.url.clone().into(),
                    }),
                    Err(e) => Err(Error::store(&location.url, "read", e)),
                };
            }
            for object in listed.objects {
                let hidden = object.location.filename().is_none_or(is_hidden);
                if !hidden {
                    files.push(ListedFile {
                        object: object.location,
                        size: object.size,
                        partition: partition.clone(),
                    });
                }
            }
            for prefix in listed.common_prefixes {
                let Some(name) = prefix.filename() else {
                    continue;
                };
                if is_hidden(name) {
                    continue;
                }
                let mut child = partition.clone();
                if let Some((column, value)) = parse_segment(name) {
                    let pass = filters
                        .iter()
                        .filter(|f| f.column == column)
                        .all(|f| f.matches(value.as_deref()));
                    if !pass {
                        tracing::debug!(dir = %prefix, "pruned by partition filter");
                        continue;
                    }
                    child.push((column, value));
                }
                next.push((prefix, child));
            }
        }
        first = false;
        level = next;
    }
    files.sort_by(|a, b| a.object.cmp(&b.object));
    Ok(files)
}

/// Waits until `<location>/_SUCCESS` exists, polling with backoff (200 ms doubling to 5 s), or
/// fails after `timeout`.
pub(crate) async fn wait_for_success(location: &StorageLocation, timeout: Duration) -> Result<()> {
    let marker = location.root.clone().join("_SUCCESS");
    let start = Instant::now();
    let mut delay = Duration::from_millis(200);
    let mut announced = false;
    loop {
        match location.store.head(&marker).await {
            Ok(_) => return Ok(()),
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(Error::store(location.url_of(&marker), "check", e)),
        }
        if start.elapsed() >= timeout {
            return Err(Error::Timeout {
                url: location.url_of(&marker),
                what: "the _SUCCESS marker of the job that writes the data",
                seconds: timeout.as_secs_f64(),
                hint: "check that the upstream job finished successfully, or raise \
                       `success_timeout_s` (or set `wait_for_success = false` to read anyway)",
            });
        }
        if !announced {
            tracing::info!(url = %location.url, "waiting for _SUCCESS before reading");
            announced = true;
        }
        tokio::time::sleep(delay.min(timeout.saturating_sub(start.elapsed()))).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_and_match() {
        let f = PartitionFilter::parse("region = 'eu-central'").unwrap();
        assert_eq!(f.column, "region");
        assert!(f.matches(Some("eu-central")));
        assert!(!f.matches(Some("us-east")));
        assert!(!f.matches(None));
        let f = PartitionFilter::parse("event_date>='2024-03-02'").unwrap();
        assert!(f.matches(Some("2024-03-02")) && f.matches(Some("2024-03-04")));
        assert!(!f.matches(Some("2024-03-01")));
        let f = PartitionFilter::parse("bucket IN (2, 10)").unwrap();
        assert_eq!(f.op, FilterOp::In(vec!["2".into(), "10".into()]));
        assert!(f.matches(Some("10")) && !f.matches(Some("1")));
        let f = PartitionFilter::parse("bucket < 10").unwrap();
        assert!(f.matches(Some("9")), "numeric, not text, comparison");
        let f = PartitionFilter::parse("region not in ('us')").unwrap();
        assert!(f.matches(Some("eu")) && !f.matches(Some("us")) && !f.matches(None));
        assert!(
            PartitionFilter::parse("region is null")
                .unwrap()
                .matches(None)
        );
        assert!(
            PartitionFilter::parse("region IS NOT NULL")
                .unwrap()
                .matches(Some("x"))
        );
        let f = PartitionFilter::parse("region <> \"eu\"").unwrap();
        assert_eq!(f.op, FilterOp::Ne("eu".into()));
        for bad in [
            "region",
            "= 'x'",
            "region ~ 'x'",
            "region in 'x'",
            "region = ",
        ] {
            let err = PartitionFilter::parse(bad).unwrap_err();
            assert!(err.contains(bad.trim()), "{err}");
        }
    }

    #[test]
    fn hidden_names() {
        for name in [
            "_SUCCESS",
            "_committed_123",
            "_started_1",
            ".part-0.crc",
            "_delta_log",
        ] {
            assert!(is_hidden(name), "{name}");
        }
        assert!(!is_hidden("part-00000-x.c000.snappy.parquet"));
    }
}
