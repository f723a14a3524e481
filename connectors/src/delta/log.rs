//! The `_delta_log/` directory: listing its files, reading `_last_checkpoint`, and the errors of
//! a damaged log.

use super::*;

#[derive(Debug, Default)]
pub(super) struct LogListing {
    pub(super) commits: BTreeMap<i64, Path>,
    /// Complete checkpoints by version: their files in part order.
    pub(super) checkpoints: BTreeMap<i64, Vec<Path>>,
}

impl LogListing {
    pub(super) fn latest(&self) -> Option<i64> {
        let commit = self.commits.keys().next_back();
        let checkpoint = self.checkpoints.keys().next_back();
        commit.max(checkpoint).copied()
    }
}

pub(super) enum LogFile {
    Commit(i64),
    Checkpoint(i64),
    CheckpointPart { version: i64, part: u32, parts: u32 },
}

/// Parses `{version:020}.json`, `{version:020}.checkpoint.parquet` and
/// `{version:020}.checkpoint.{part:010}.{parts:010}.parquet`; anything else is not ours.
pub(super) fn parse_log_name(name: &str) -> Option<LogFile> {
    let (digits, rest) = name.split_at_checked(20)?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let version: i64 = digits.parse().ok()?;
    match rest {
        ".json" => Some(LogFile::Commit(version)),
        ".checkpoint.parquet" => Some(LogFile::Checkpoint(version)),
        _ => {
            let rest = rest
                .strip_prefix(".checkpoint.")?
                .strip_suffix(".parquet")?;
            let (part, parts) = rest.split_once('.')?;
            let number = |s: &str| -> Option<u32> {
                (s.len() == 10 && s.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| s.parse().ok())
                    .flatten()
            };
            let (part, parts) = (number(part)?, number(parts)?);
            (1..=parts)
                .contains(&part)
                .then_some(LogFile::CheckpointPart {
                    version,
                    part,
                    parts,
                })
        }
    }
}

pub(super) fn commit_name(version: i64) -> String {
    format!("{version:020}.json")
}

pub(super) fn log_url(url: &str, name: &str) -> String {
    format!("{url}/{LOG_DIR}/{name}")
}

/// Lists `_delta_log/` (only the entries after version `from`'s files when given).
pub(super) async fn list_log(
    store: &dyn ObjectStore,
    log: &Path,
    from: Option<i64>,
    url: &str,
) -> Result<LogListing> {
    let depth = log.parts_count() + 1;
    let mut objects = match from {
        Some(v) => store.list_with_offset(Some(log), &log.clone().join(format!("{v:020}"))),
        None => store.list(Some(log)),
    };
    let mut listing = LogListing::default();
    let mut parts: HashMap<(i64, u32), BTreeMap<u32, Path>> = HashMap::new();
    while let Some(object) = objects.next().await {
        let object = match object {
            Ok(object) => object,
            Err(object_store::Error::NotFound { .. }) => break,
            Err(e) => return Err(Error::store(log_url(url, ""), "list", e)),
        };
        // Deeper entries (`_commits/`, `_sidecars/`) belong to features this reader rejects.
        if object.location.parts_count() != depth {
            continue;
        }
        match object.location.filename().and_then(parse_log_name) {
            Some(LogFile::Commit(v)) => {
                listing.commits.insert(v, object.location);
            }
            Some(LogFile::Checkpoint(v)) => {
                listing.checkpoints.insert(v, vec![object.location]);
            }
            Some(LogFile::CheckpointPart {
                version,
                part,
                parts: n,
            }) => {
                parts
                    .entry((version, n))
                    .or_default()
                    .insert(part, object.location);
            }
            None => {}
        }
    }
    for ((version, n), found) in parts {
        if found.len() == n as usize {
            listing
                .checkpoints
                .entry(version)
                .or_insert_with(|| found.into_values().collect());
        }
    }
    Ok(listing)
}

/// The version `_last_checkpoint` names; `None` when the file is missing or unreadable (it is
/// only a hint: the listing finds checkpoints without it).
pub(super) async fn read_last_checkpoint(
    store: &dyn ObjectStore,
    log: &Path,
    url: &str,
) -> Result<Option<i64>> {
    #[derive(Deserialize)]
    struct LastCheckpoint {
        version: i64,
    }
    let bytes = match get_bytes(store, &log.clone().join(LAST_CHECKPOINT)).await {
        Ok(bytes) => bytes,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(Error::store(log_url(url, LAST_CHECKPOINT), "read", e)),
    };
    match serde_json::from_slice::<LastCheckpoint>(&bytes) {
        Ok(last) => Ok(Some(last.version)),
        Err(e) => {
            tracing::warn!(file = log_url(url, LAST_CHECKPOINT), error = %e, "ignoring unreadable `_last_checkpoint`");
            Ok(None)
        }
    }
}

pub(super) async fn get_bytes(store: &dyn ObjectStore, path: &Path) -> object_store::Result<Bytes> {
    store
        .get_opts(path, GetOptions::default())
        .await?
        .bytes()
        .await
}

/// A damaged log file (user: the table is broken).
pub(super) fn corrupt(url: &str, name: &str, reason: impl Display) -> Error {
    Error::DeltaLog {
        url: log_url(url, name),
        reason: reason.to_string(),
    }
}

pub(super) fn unsupported(url: &str, what: impl Into<String>, hint: impl Into<String>) -> Error {
    Error::Unsupported {
        url: url.to_string(),
        what: what.into(),
        hint: hint.into(),
    }
}

pub(super) fn missing_commit(
    url: &str,
    v: i64,
    target: i64,
    has_checkpoint: bool,
    listing: &LogListing,
) -> Error {
    let file = log_url(url, &commit_name(v));
    let reason = if v == 0 && !has_checkpoint {
        let readable = match listing.checkpoints.keys().next() {
            Some(oldest) => format!("read version {oldest} or later (the oldest checkpoint)"),
            None => "the log has no checkpoint either, so restore the missing commits".to_string(),
        };
        format!(
            "version {target} cannot be rebuilt: `{file}` is missing and there is no checkpoint \
             at or before version {target} (log retention removed them); {readable}"
        )
    } else {
        format!(
            "version {target} cannot be rebuilt: the log skips commit `{file}`; restore the \
             missing commit file, or read a version from a later checkpoint"
        )
    };
    Error::DeltaLog {
        url: url.to_string(),
        reason,
    }
}
