//! Checkpoints: atomic snapshots of a job's state in a local directory or an object store.
//!
//! A [`CheckpointStore`] keeps the checkpoints of one job under one location:
//!
//! ```text
//! <location>/ckpt-000000000040/data.bin   payload ++ stable_hash(payload) as 8 bytes little-endian
//! <location>/ckpt-000000000040/COMMIT     {"step":40,"bytes":<size of data.bin>,"checksum":"<16 hex>"}
//! ```
//!
//! A checkpoint is complete when its `COMMIT` exists; `COMMIT` is written only after `data.bin` is
//! fully stored, so a crash while writing leaves an incomplete checkpoint that is never read and is
//! removed by a later write. On a local filesystem both files are written (and fsynced) into a
//! `.tmp-<step>-<uuid>` directory that is then renamed to `ckpt-<step>`; on object stores each PUT is
//! atomic and `COMMIT` goes last. Only one process may write to a location at a time.
//!
//! [`encode`] and [`decode`] turn a serde value into a payload with a header (magic `MILLCKPT`, the
//! job kind, a format number) so a checkpoint of another kind of job or of another millrace version
//! is refused with a clear message instead of decoding into garbage.
//!
//! ```
//! use millrace_operators::checkpoint::{decode, encode};
//!
//! let bytes = encode("batch-train", 1, &(7u64, vec![0.5f32])).unwrap();
//! let state: (u64, Vec<f32>) = decode("batch-train", 1, &bytes, "ckpt-000000000007").unwrap();
//! assert_eq!(state, (7, vec![0.5]));
//! assert!(decode::<(u64, Vec<f32>)>("streaming", 1, &bytes, "x").is_err());
//! ```

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::path::Path as FsPath;
use std::time::Instant;

use futures::TryStreamExt;
use millrace_connectors::runtime::block_on;
use millrace_connectors::storage::{StorageLocation, StorageOptions};
use millrace_engine::stable_hash;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectMeta, ObjectStoreExt, PutPayload, WriteMultipart};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

mod codec;
#[cfg(test)]
mod tests;

pub use codec::{decode, encode};

/// Name of the payload file of a checkpoint.
const DATA: &str = "data.bin";
/// Name of the marker that makes a checkpoint complete.
const COMMIT: &str = "COMMIT";
/// Prefix of a checkpoint's directory; the step follows with at least 12 digits.
const DIR_PREFIX: &str = "ckpt-";
/// Prefix of a local checkpoint being written.
const TMP_PREFIX: &str = ".tmp-";

/// When a `data.bin` is uploaded in parts instead of one PUT (one PUT to S3 is limited to 5 GiB).
#[derive(Clone, Copy, Debug)]
struct Upload {
    /// Sizes above this go as a multipart upload.
    multipart_over: usize,
    /// Size of each part.
    part_size: usize,
}

const UPLOAD: Upload = Upload {
    multipart_over: 256 << 20,
    part_size: 32 << 20,
};

/// One complete checkpoint found in a store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointInfo {
    /// The step it was taken at.
    pub step: u64,
    /// Stored size of its `data.bin` (the payload plus an 8-byte checksum).
    pub bytes: u64,
    /// URL (or local path) of its `ckpt-<step>` folder, for messages.
    pub url: String,
}

/// Checkpoints of one job under one location: `ckpt-<step, 12 digits>/data.bin` +
/// `ckpt-<step>/COMMIT`, the newest `keep` of them kept.
#[derive(Clone, Debug)]
pub struct CheckpointStore {
    location: StorageLocation,
    keep: usize,
}

/// The content of a `COMMIT` file.
#[derive(Debug, Serialize, Deserialize)]
struct Commit {
    step: u64,
    bytes: u64,
    checksum: String,
}

/// What one listing found under a `ckpt-<step>/` folder.
#[derive(Debug, Default)]
struct Entry {
    /// Size of `data.bin`, when present.
    data: Option<u64>,
    /// The `COMMIT` object, when present.
    commit: Option<ObjectPath>,
    /// Every object under the folder, `COMMIT` included.
    objects: Vec<ObjectPath>,
}

impl CheckpointStore {
    /// Opens `location` (a path or a URL such as `s3://bucket/prefix`), keeping the newest `keep`
    /// checkpoints (at least 1). Nothing is contacted yet.
    pub fn open(location: &str, storage: &StorageOptions, keep: usize) -> Result<Self> {
        Ok(Self::new(StorageLocation::parse(location, storage)?, keep))
    }

    /// Same as [`CheckpointStore::open`] from an already-parsed location.
    pub fn new(location: StorageLocation, keep: usize) -> Self {
        Self {
            location,
            keep: keep.max(1),
        }
    }

    /// The location's URL (or absolute path), for messages.
    pub fn url(&self) -> &str {
        &self.location.url
    }

    /// Complete checkpoints (`COMMIT` present), oldest first. Incomplete ones (data without
    /// `COMMIT`: a crash while writing) are not listed. Nothing is verified here; see
    /// [`CheckpointStore::read`].
    pub fn list(&self) -> Result<Vec<CheckpointInfo>> {
        Ok(self
            .scan()?
            .iter()
            .filter(|(_, entry)| entry.commit.is_some())
            .map(|(step, entry)| self.info(*step, entry.data.unwrap_or(0)))
            .collect())
    }

    /// Writes `payload` as the checkpoint of `step` atomically (replacing one of the same step),
    /// then prunes to the newest `keep` and removes leftovers of crashed writes older than the newest
    /// complete checkpoint. A failed prune is logged, not returned: the checkpoint is safely stored.
    pub fn write(&self, step: u64, payload: &[u8]) -> Result<CheckpointInfo> {
        self.write_with(step, payload, UPLOAD)
    }

    fn write_with(&self, step: u64, payload: &[u8], upload: Upload) -> Result<CheckpointInfo> {
        let started = Instant::now();
        let checksum = stable_hash(payload);
        let bytes = payload.len() as u64 + 8;
        let commit = serde_json::to_vec(&Commit {
            step,
            bytes,
            checksum: format!("{checksum:016x}"),
        })
        .map_err(|e| Error::Internal(format!("cannot encode a checkpoint COMMIT: {e}")))?;
        match &self.location.local_root {
            Some(root) => self.write_local(root, step, payload, checksum, &commit)?,
            None => self.write_objects(step, payload, checksum, commit, upload)?,
        }
        let info = self.info(step, bytes);
        tracing::info!(
            step,
            bytes,
            ms = started.elapsed().as_millis() as u64,
            url = %info.url,
            "checkpoint written"
        );
        if let Err(e) = self.prune() {
            tracing::warn!(url = %self.location.url, error = %e, "could not prune old checkpoints; they stay until the next checkpoint");
        }
        Ok(info)
    }

    /// The newest complete checkpoint's info and payload, or `None` when there is none.
    ///
    /// The payload is verified; a damaged newest checkpoint is an [`Error::Checkpoint`] saying
    /// what is wrong and which folder to delete to resume from the one before. It never falls back
    /// to an older checkpoint by itself.
    pub fn latest(&self) -> Result<Option<(CheckpointInfo, Vec<u8>)>> {
        let entries = self.scan()?;
        let newest = entries.iter().rev().find(|(_, e)| e.commit.is_some());
        let newest = newest.map(|(step, _)| *step);
        for &skipped in entries.keys().filter(|s| newest.is_none_or(|n| **s > n)) {
            self.warn_incomplete(skipped);
        }
        let Some(step) = newest else { return Ok(None) };
        let payload = self.read(step)?;
        Ok(Some((self.info(step, payload.len() as u64 + 8), payload)))
    }

    /// Reads and verifies the checkpoint of `step`.
    pub fn read(&self, step: u64) -> Result<Vec<u8>> {
        let commit_path = self.file(step, COMMIT);
        let commit = match self.get(&commit_path) {
            Ok(bytes) => bytes,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(Error::Checkpoint(format!(
                    "there is no complete checkpoint of step {step} at {} (no {COMMIT} file); \
                     the complete ones are listed by `CheckpointStore::list`",
                    self.dir_url(step)
                )));
            }
            Err(e) => return Err(self.store_error(&commit_path, "read checkpoint file", e)),
        };
        let commit: Commit = serde_json::from_slice(&commit)
            .map_err(|e| self.damaged(step, format!("its {COMMIT} file does not parse ({e})")))?;
        if commit.step != step {
            return Err(self.damaged(
                step,
                format!("its {COMMIT} file names step {}", commit.step),
            ));
        }
        let data_path = self.file(step, DATA);
        let mut data = match self.get(&data_path) {
            Ok(bytes) => bytes,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(self.damaged(step, format!("{DATA} is missing")));
            }
            Err(e) => return Err(self.store_error(&data_path, "read checkpoint file", e)),
        };
        let sized = (data.len() as u64 == commit.bytes).then(|| data.split_last_chunk::<8>());
        let Some((payload, stored)) = sized.flatten() else {
            let what = format!(
                "{DATA} holds {} bytes but {COMMIT} says {} (truncated or overwritten)",
                data.len(),
                commit.bytes
            );
            return Err(self.damaged(step, what));
        };
        let stored = u64::from_le_bytes(*stored);
        let computed = stable_hash(payload);
        if stored != computed || format!("{computed:016x}") != commit.checksum {
            return Err(self.damaged(
                step,
                format!(
                    "checksum mismatch: the data hashes to {computed:016x}, {DATA} records \
                     {stored:016x} and {COMMIT} {}",
                    commit.checksum
                ),
            ));
        }
        data.truncate(data.len() - 8);
        Ok(data)
    }

    // ---- writing ----

    fn write_local(
        &self,
        root: &FsPath,
        step: u64,
        payload: &[u8],
        checksum: u64,
        commit: &[u8],
    ) -> Result<()> {
        fs::create_dir_all(root)
            .map_err(|e| io_error(root, "create the checkpoint directory", e))?;
        let tmp = root.join(format!("{TMP_PREFIX}{step}-{}", uuid::Uuid::new_v4()));
        fs::create_dir(&tmp).map_err(|e| io_error(&tmp, "create checkpoint directory", e))?;
        let result = (|| {
            write_synced(&tmp.join(DATA), &[payload, &checksum.to_le_bytes()])?;
            write_synced(&tmp.join(COMMIT), &[commit])?;
            sync_dir(&tmp);
            let target = root.join(dir_name(step));
            remove_local_checkpoint(&target)?;
            fs::rename(&tmp, &target)
                .map_err(|e| io_error(&target, "rename the new checkpoint into place as", e))?;
            sync_dir(root);
            Ok(())
        })();
        if result.is_err() {
            let _ = fs::remove_dir_all(&tmp);
        }
        result
    }

    fn write_objects(
        &self,
        step: u64,
        payload: &[u8],
        checksum: u64,
        commit: Vec<u8>,
        upload: Upload,
    ) -> Result<()> {
        let store = &self.location.store;
        // Replacing a checkpoint of the same step: make it incomplete first, so no COMMIT ever
        // describes a half-replaced data.bin.
        let commit_path = self.file(step, COMMIT);
        match block_on(store.delete(&commit_path)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(self.store_error(&commit_path, "delete checkpoint file", e)),
        }
        let mut data = Vec::with_capacity(payload.len() + 8);
        data.extend_from_slice(payload);
        data.extend_from_slice(&checksum.to_le_bytes());
        let data_path = self.file(step, DATA);
        block_on(async {
            if data.len() <= upload.multipart_over {
                store.put(&data_path, PutPayload::from(data)).await?;
                return Ok(());
            }
            let mut writer = WriteMultipart::new_with_chunk_size(
                store.put_multipart(&data_path).await?,
                upload.part_size,
            );
            for part in data.chunks(upload.part_size) {
                if let Err(e) = writer.wait_for_capacity(4).await {
                    let _ = writer.abort().await;
                    return Err(e);
                }
                writer.write(part);
            }
            writer.finish().await.map(|_| ())
        })
        .map_err(|e| self.store_error(&data_path, "write checkpoint file", e))?;
        block_on(store.put(&commit_path, PutPayload::from(commit)))
            .map_err(|e| self.store_error(&commit_path, "write checkpoint file", e))?;
        Ok(())
    }

    // ---- pruning ----

    /// Removes complete checkpoints beyond the newest `keep`, incomplete ones older than the newest
    /// complete one and (locally) `.tmp-*` folders of crashed writes.
    fn prune(&self) -> Result<()> {
        let entries = self.scan()?;
        let complete: Vec<u64> = entries
            .iter()
            .filter(|(_, e)| e.commit.is_some())
            .map(|(step, _)| *step)
            .collect();
        let Some(&newest) = complete.last() else {
            return Ok(());
        };
        let oldest_kept = complete[complete.len().saturating_sub(self.keep)];
        for (&step, entry) in &entries {
            let stale = if entry.commit.is_some() {
                step < oldest_kept
            } else {
                step < newest
            };
            if stale {
                tracing::debug!(step, url = %self.dir_url(step), complete = entry.commit.is_some(), "removing checkpoint");
                self.remove(step, entry)?;
            }
        }
        if let Some(root) = &self.location.local_root {
            self.prune_local_leftovers(root, newest, &entries)?;
        }
        Ok(())
    }

    fn remove(&self, step: u64, entry: &Entry) -> Result<()> {
        if let Some(root) = &self.location.local_root {
            return remove_local_checkpoint(&root.join(dir_name(step)));
        }
        // COMMIT first: an interrupted removal leaves an incomplete checkpoint, never a damaged one.
        let commit = entry.commit.iter();
        let others = entry
            .objects
            .iter()
            .filter(|o| Some(*o) != entry.commit.as_ref());
        for object in commit.chain(others) {
            match block_on(self.location.store.delete(object)) {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.store_error(object, "delete old checkpoint file", e)),
            }
        }
        Ok(())
    }

    /// Local leftovers a listing of files does not show: `.tmp-*` folders, and `ckpt-*` folders
    /// older than `newest` that hold no files (so `entries` lacks them).
    fn prune_local_leftovers(
        &self,
        root: &FsPath,
        newest: u64,
        entries: &BTreeMap<u64, Entry>,
    ) -> Result<()> {
        let dir = fs::read_dir(root).map_err(|e| io_error(root, "list checkpoints in", e))?;
        for item in dir {
            let item = item.map_err(|e| io_error(root, "list checkpoints in", e))?;
            let name = item.file_name();
            let name = name.to_string_lossy();
            let leftover = name.starts_with(TMP_PREFIX)
                || parse_dir_name(&name)
                    .is_some_and(|step| step < newest && !entries.contains_key(&step));
            if leftover && item.file_type().is_ok_and(|t| t.is_dir()) {
                tracing::debug!(path = %item.path().display(), "removing leftover of a crashed checkpoint write");
                remove_local_checkpoint(&item.path())?;
            }
        }
        Ok(())
    }

    // ---- reading the store ----

    /// Every object below `ckpt-<step>/` folders, by step. Other objects are ignored.
    fn scan(&self) -> Result<BTreeMap<u64, Entry>> {
        let location = &self.location;
        let objects: Vec<ObjectMeta> =
            block_on(location.store.list(Some(&location.root)).try_collect())
                .map_err(|e| self.store_error(&location.root, "list checkpoints in", e))?;
        let mut entries: BTreeMap<u64, Entry> = BTreeMap::new();
        for meta in objects {
            let Some(mut parts) = meta.location.prefix_match(&location.root) else {
                continue;
            };
            let Some(step) = parts.next().and_then(|dir| parse_dir_name(dir.as_ref())) else {
                continue;
            };
            let rest: Vec<_> = parts.collect();
            let entry = entries.entry(step).or_default();
            match rest.as_slice() {
                [file] if file.as_ref() == DATA => entry.data = Some(meta.size),
                [file] if file.as_ref() == COMMIT => entry.commit = Some(meta.location.clone()),
                _ => {}
            }
            entry.objects.push(meta.location);
        }
        Ok(entries)
    }

    fn get(&self, path: &ObjectPath) -> std::result::Result<Vec<u8>, object_store::Error> {
        block_on(async { self.location.store.get(path).await?.bytes().await }).map(Vec::from)
    }

    // ---- names and messages ----

    fn dir(&self, step: u64) -> ObjectPath {
        self.location.root.clone().join(dir_name(step))
    }

    fn file(&self, step: u64, name: &str) -> ObjectPath {
        self.dir(step).join(name)
    }

    fn dir_url(&self, step: u64) -> String {
        self.location.url_of(&self.dir(step))
    }

    fn info(&self, step: u64, bytes: u64) -> CheckpointInfo {
        CheckpointInfo {
            step,
            bytes,
            url: self.dir_url(step),
        }
    }

    fn warn_incomplete(&self, step: u64) {
        tracing::warn!(
            step,
            url = %self.dir_url(step),
            "skipping incomplete checkpoint (no {COMMIT}: its write did not finish); \
             it is removed by the next checkpoint"
        );
    }

    fn store_error(&self, path: &ObjectPath, op: &'static str, e: object_store::Error) -> Error {
        millrace_connectors::Error::store(self.location.url_of(path), op, e).into()
    }

    /// The error for a damaged complete checkpoint of `step`: what is wrong and what to delete.
    fn damaged(&self, step: u64, what: String) -> Error {
        let url = self.dir_url(step);
        let delete = if self.location.local_root.is_some() {
            format!("delete the folder {url} (rm -r)")
        } else {
            format!("delete every object under {url}/")
        };
        // Best effort: name the checkpoint a resume would use once this one is gone.
        let previous = self.scan().ok().and_then(|entries| {
            entries
                .range(..step)
                .rev()
                .find(|(_, e)| e.commit.is_some())
                .map(|(s, _)| *s)
        });
        let then = match previous {
            Some(previous) => format!(
                "to resume from the checkpoint before it (step {previous}, {})",
                self.dir_url(previous)
            ),
            None => "to start over: there is no earlier checkpoint".to_string(),
        };
        Error::Checkpoint(format!(
            "checkpoint {url} is damaged: {what}; {delete} {then}"
        ))
    }
}

/// The folder name of the checkpoint of `step`.
fn dir_name(step: u64) -> String {
    format!("{DIR_PREFIX}{step:012}")
}

/// The step of a checkpoint folder name, or `None` for any other name.
fn parse_dir_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(DIR_PREFIX)?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let step = digits.parse().ok()?;
    (dir_name(step) == name).then_some(step)
}

fn io_error(path: &FsPath, op: &'static str, source: std::io::Error) -> Error {
    millrace_connectors::Error::Io {
        path: path.to_path_buf(),
        op,
        source,
    }
    .into()
}

/// Writes `parts` to a new file at `path` and fsyncs it.
fn write_synced(path: &FsPath, parts: &[&[u8]]) -> Result<()> {
    let mut file =
        fs::File::create(path).map_err(|e| io_error(path, "create checkpoint file", e))?;
    for part in parts {
        file.write_all(part)
            .map_err(|e| io_error(path, "write checkpoint file", e))?;
    }
    file.sync_all()
        .map_err(|e| io_error(path, "sync checkpoint file to disk", e))
}

/// Fsyncs a directory so a rename or a new entry in it survives a crash; not every platform allows
/// it, so failures are ignored.
fn sync_dir(path: &FsPath) {
    if let Ok(dir) = fs::File::open(path) {
        let _ = dir.sync_all();
    }
}

/// Removes a local checkpoint folder, `COMMIT` first; a missing folder is fine.
fn remove_local_checkpoint(path: &FsPath) -> Result<()> {
    let commit = path.join(COMMIT);
    match fs::remove_file(&commit) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error(&commit, "delete checkpoint file", e)),
    }
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error(path, "delete checkpoint folder", e)),
    }
}
