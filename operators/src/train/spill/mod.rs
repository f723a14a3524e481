//! Training rows on local disk when they exceed `train.memory_budget`: an external shuffle.
//!
//! The raw batches a worker ingests go to an Arrow IPC [`Spool`] once they pass the worker's
//! share of the budget; after the fit, they are read back batch by batch, encoded, and written
//! as Arrow IPC runs bucketed by the top bits of each row's key in the epoch's order
//! ([`BucketWriter`]). A bucket holds a contiguous range of the key space, so the epoch's steps
//! are the buckets in order, each sorted in memory when its turn comes, the next one read on
//! another thread meanwhile ([`Buckets::epoch`]). Each step gets the same rows, in the same
//! order, as from memory: the model is the same bit for bit.
//!
//! Spill files live in `$TMPDIR/millrace-spill/<pid>-<nonce>/`, removed when the job ends (or
//! fails); a directory left by a process that no longer runs (killed) is removed by the next
//! job that spills.

mod buckets;
mod spool;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

pub(crate) use buckets::{BucketWriter, Buckets, Loaded};
pub(crate) use spool::Spool;

use crate::{Error, Result};

/// A directory of spill files, removed with everything in it when dropped.
#[derive(Debug)]
pub(crate) struct SpillDir {
    path: PathBuf,
}

impl SpillDir {
    /// A new directory for this process's spill files under [`spill_root`], after removing the
    /// directories of processes that no longer run.
    pub(crate) fn create(label: &str) -> Result<SpillDir> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let root = spill_root();
        remove_stale(&root);
        let nonce = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = root.join(format!("{}-{nonce}-{label}", std::process::id()));
        std::fs::create_dir_all(&path).map_err(|e| {
            Error::io(
                &path,
                std::io::Error::new(
                    e.kind(),
                    format!("{e} (spill files go to $TMPDIR/millrace-spill: set TMPDIR to a writable local disk, or raise train.memory_budget)"),
                ),
            )
        })?;
        Ok(SpillDir { path })
    }

    /// The directory.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SpillDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            tracing::warn!(path = %self.path.display(), error = %e, "could not remove spill files");
        }
    }
}

/// Where spill directories are made: `$TMPDIR/millrace-spill`.
pub(crate) fn spill_root() -> PathBuf {
    std::env::temp_dir().join("millrace-spill")
}

/// Removes the spill directories under `root` whose process (the number before the first `-`)
/// no longer runs. Only where running processes can be seen (`/proc`); elsewhere nothing is
/// removed.
pub(crate) fn remove_stale(root: &Path) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let path = entry.path();
            match std::fs::remove_dir_all(&path) {
                Ok(()) => {
                    tracing::info!(path = %path.display(), "removed the spill files of a process that no longer runs")
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "could not remove stale spill files")
                }
            }
        }
    }
}

/// The memory budget when `train.memory_budget` is not set: half of the machine's memory
/// (`MemTotal` in `/proc/meminfo`), or 4 GiB where that cannot be read.
pub(crate) fn default_budget() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024 / 2)
        })
        .unwrap_or(4 << 30)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spill_directory_goes_when_dropped_and_a_dead_process_directory_on_the_next_spill() {
        let dir = SpillDir::create("test").unwrap();
        let path = dir.path().to_path_buf();
        std::fs::write(path.join("run-0.arrow"), b"x").unwrap();
        assert!(path.exists());
        drop(dir);
        assert!(!path.exists(), "removed when dropped");

        // A directory of a process that no longer runs (pid numbers stop below 2^22 on Linux),
        // and one of this process: only the first is removed.
        let root = spill_root();
        let stale = root.join(format!("{}-0-killed", (1u32 << 22) + 17));
        std::fs::create_dir_all(&stale).unwrap();
        std::fs::write(stale.join("bucket-3.arrow"), b"x").unwrap();
        let live = SpillDir::create("live").unwrap();
        assert!(
            !stale.exists(),
            "the dead process's spill files are removed"
        );
        assert!(live.path().exists(), "this process's directory stays");
    }
}
