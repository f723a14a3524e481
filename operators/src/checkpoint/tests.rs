use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use futures::TryStreamExt;
use millrace_connectors::runtime::block_on;
use millrace_connectors::storage::{StorageLocation, StorageOptions, StoreKind};
use object_store::memory::InMemory;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

use super::*;

/// A fresh directory under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "millrace-checkpoint-{name}-{}",
            uuid::Uuid::new_v4()
        ));
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn local_store(dir: &TempDir, keep: usize) -> CheckpointStore {
    CheckpointStore::open(dir.0.to_str().unwrap(), &StorageOptions::default(), keep).unwrap()
}

fn memory_store(keep: usize) -> CheckpointStore {
    let location = StorageLocation {
        store: Arc::new(InMemory::new()),
        root: ObjectPath::from("ckpts/job"),
        url: "memory://bucket/ckpts/job".into(),
        kind: StoreKind::S3,
        local_root: None,
    };
    CheckpointStore::new(location, keep)
}

fn payload(step: u64) -> Vec<u8> {
    format!("state of step {step} ")
        .repeat(step as usize)
        .into_bytes()
}

fn steps(store: &CheckpointStore) -> Vec<u64> {
    store.list().unwrap().iter().map(|c| c.step).collect()
}

/// Every object under the store's root, as paths relative to it.
fn objects(store: &CheckpointStore) -> BTreeSet<String> {
    let location = &store.location;
    let metas: Vec<ObjectMeta> =
        block_on(location.store.list(Some(&location.root)).try_collect()).unwrap();
    metas
        .into_iter()
        .map(|m| {
            let parts: Vec<String> = m
                .location
                .prefix_match(&location.root)
                .unwrap()
                .map(|p| p.as_ref().to_string())
                .collect();
            parts.join("/")
        })
        .collect()
}

fn put_raw(store: &CheckpointStore, relative: &str, bytes: Vec<u8>) {
    let path = ObjectPath::parse(format!("{}/{relative}", store.location.root)).unwrap();
    block_on(store.location.store.put(&path, PutPayload::from(bytes))).unwrap();
}

fn get_raw(store: &CheckpointStore, relative: &str) -> Vec<u8> {
    let path = ObjectPath::parse(format!("{}/{relative}", store.location.root)).unwrap();
    store.get(&path).unwrap()
}

fn complete_objects(steps: &[u64]) -> BTreeSet<String> {
    steps
        .iter()
        .flat_map(|s| {
            [
                format!("{}/{DATA}", dir_name(*s)),
                format!("{}/{COMMIT}", dir_name(*s)),
            ]
        })
        .collect()
}

/// Write, list, keep, latest, and incomplete checkpoints (made with `make_incomplete`, which gets
/// the folder name of a step), the same on every kind of store.
fn lifecycle(store: &CheckpointStore, make_incomplete: impl Fn(&str)) {
    assert_eq!(store.list().unwrap(), vec![]);
    assert!(store.latest().unwrap().is_none());
    for step in [10, 20, 30, 40] {
        let info = store.write(step, &payload(step)).unwrap();
        assert_eq!(info.step, step);
        assert_eq!(info.bytes, payload(step).len() as u64 + 8);
        assert!(info.url.ends_with(&dir_name(step)), "{}", info.url);
    }
    let listed = store.list().unwrap();
    assert_eq!(listed.iter().map(|c| c.step).collect::<Vec<_>>(), [30, 40]);
    assert_eq!(listed[1].bytes, payload(40).len() as u64 + 8);
    assert_eq!(listed[1].url, format!("{}/ckpt-000000000040", store.url()));
    let (info, bytes) = store.latest().unwrap().unwrap();
    assert_eq!(info, listed[1]);
    assert_eq!(bytes, payload(40));
    assert_eq!(store.read(30).unwrap(), payload(30));
    let gone = store.read(10).unwrap_err().to_string();
    assert!(gone.contains("no complete checkpoint of step 10"), "{gone}");
    assert_eq!(objects(store), complete_objects(&[30, 40]));

    // A crashed write older than the newest and one newer: neither is listed nor read.
    make_incomplete(&dir_name(35));
    make_incomplete(&dir_name(50));
    assert_eq!(steps(store), [30, 40]);
    assert_eq!(store.latest().unwrap().unwrap().1, payload(40));
    // The next write removes both (both are older than it) and the oldest complete one.
    store.write(60, &payload(60)).unwrap();
    assert_eq!(steps(store), [40, 60]);
    assert_eq!(objects(store), complete_objects(&[40, 60]));
    // An incomplete one newer than the newest complete stays until a newer write.
    make_incomplete(&dir_name(70));
    store.write(65, &payload(65)).unwrap();
    let mut expected = complete_objects(&[60, 65]);
    expected.insert(format!("{}/{DATA}", dir_name(70)));
    assert_eq!(objects(store), expected);
    assert_eq!(store.latest().unwrap().unwrap().0.step, 65);
    // Rewriting a step replaces it.
    store.write(65, b"again").unwrap();
    assert_eq!(store.latest().unwrap().unwrap().1, b"again");
    assert_eq!(store.read(60).unwrap(), payload(60));
}

/// Damage the newest checkpoint in several ways; each is a clear error, never a fallback.
fn corruption(store: &CheckpointStore) {
    store.write(1, b"first").unwrap();
    store.write(2, b"second state").unwrap();
    let url = format!("{}/ckpt-000000000002", store.url());
    let data = format!("{}/{DATA}", dir_name(2));
    let good = get_raw(store, &data);
    let check = |what: &str| {
        let message = store.latest().unwrap_err().to_string();
        assert!(message.contains(&url), "{message}");
        assert!(message.contains("is damaged"), "{message}");
        assert!(message.contains(what), "{message}");
        assert!(message.contains("delete"), "{message}");
        assert!(
            message.contains("step 1") && message.contains("ckpt-000000000001"),
            "{message}"
        );
    };

    let mut flipped = good.clone();
    flipped[3] ^= 0x40;
    put_raw(store, &data, flipped);
    check("checksum mismatch");

    put_raw(store, &data, good[..good.len() - 3].to_vec());
    check("truncated");

    put_raw(store, &data, good.clone());
    put_raw(
        store,
        &format!("{}/{COMMIT}", dir_name(2)),
        b"{not json".to_vec(),
    );
    check("does not parse");

    // Rewriting the step repairs it; the older one was never touched.
    store.write(2, b"second state").unwrap();
    assert_eq!(store.latest().unwrap().unwrap().1, b"second state");
    assert_eq!(store.read(1).unwrap(), b"first");
}

#[test]
fn local_directory_lifecycle() {
    let dir = TempDir::new("lifecycle");
    let store = local_store(&dir, 2);
    assert_eq!(store.url(), dir.0.to_str().unwrap());
    lifecycle(&store, |name| {
        let folder = dir.0.join(name);
        fs::create_dir_all(&folder).unwrap();
        fs::write(folder.join(DATA), b"half written").unwrap();
    });
    // On disk: only the kept checkpoints and the newer incomplete one, no temp folders.
    let mut names: Vec<String> = fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "ckpt-000000000060",
            "ckpt-000000000065",
            "ckpt-000000000070"
        ]
    );
}

#[test]
fn local_temp_folders_and_empty_folders_are_ignored_then_removed() {
    let dir = TempDir::new("tmp");
    let store = local_store(&dir, 2);
    store.write(40, &payload(40)).unwrap();
    let tmp = dir.0.join(".tmp-50-0000");
    fs::create_dir_all(&tmp).unwrap();
    fs::write(tmp.join(DATA), b"crashed before the rename").unwrap();
    fs::write(tmp.join(COMMIT), b"{}").unwrap();
    let half = dir.0.join(dir_name(50));
    fs::create_dir_all(&half).unwrap();
    fs::write(half.join(DATA), b"no commit").unwrap();
    fs::create_dir_all(dir.0.join(dir_name(45))).unwrap();
    assert_eq!(steps(&store), [40]);
    let (info, bytes) = store.latest().unwrap().unwrap();
    assert_eq!((info.step, bytes), (40, payload(40)));

    store.write(60, &payload(60)).unwrap();
    assert!(!tmp.exists());
    assert!(!half.exists());
    assert!(!dir.0.join(dir_name(45)).exists());
    assert_eq!(steps(&store), [40, 60]);
}

#[test]
fn local_corruption_is_a_clear_error() {
    let dir = TempDir::new("corrupt");
    corruption(&local_store(&dir, 3));
    // A missing data.bin behind a COMMIT is damage too.
    let store = local_store(&dir, 3);
    fs::remove_file(dir.0.join(dir_name(2)).join(DATA)).unwrap();
    let message = store.latest().unwrap_err().to_string();
    assert!(message.contains("data.bin is missing"), "{message}");
    assert!(message.contains("rm -r"), "{message}");
}

#[test]
fn object_store_lifecycle() {
    let store = memory_store(2);
    lifecycle(&store, |name| {
        put_raw(&store, &format!("{name}/{DATA}"), b"half written".to_vec());
    });
}

#[test]
fn object_store_corruption_is_a_clear_error() {
    let store = memory_store(3);
    corruption(&store);
    block_on(store.location.store.delete(&store.file(1, COMMIT))).unwrap();
    block_on(store.location.store.delete(&store.file(2, DATA))).unwrap();
    let message = store.latest().unwrap_err().to_string();
    assert!(message.contains("data.bin is missing"), "{message}");
    assert!(
        message.contains("delete every object under memory://bucket/ckpts/job/ckpt-000000000002/"),
        "{message}"
    );
    assert!(message.contains("no earlier checkpoint"), "{message}");
}

#[test]
fn object_store_large_payloads_go_in_parts() {
    let store = memory_store(1);
    let big: Vec<u8> = (0..10_000u32).flat_map(|i| i.to_le_bytes()).collect();
    let upload = Upload {
        multipart_over: 1000,
        part_size: 4096,
    };
    let info = store.write_with(7, &big, upload).unwrap();
    assert_eq!(info.bytes, big.len() as u64 + 8);
    assert_eq!(store.latest().unwrap().unwrap().1, big);
}

#[test]
fn keep_is_at_least_one() {
    let store = memory_store(0);
    store.write(1, b"a").unwrap();
    store.write(2, b"b").unwrap();
    assert_eq!(steps(&store), [2]);
}

#[test]
fn directory_names_round_trip() {
    assert_eq!(dir_name(40), "ckpt-000000000040");
    assert_eq!(parse_dir_name("ckpt-000000000040"), Some(40));
    assert_eq!(
        parse_dir_name("ckpt-1234567890123"),
        Some(1_234_567_890_123)
    );
    assert_eq!(parse_dir_name("ckpt-40"), None);
    assert_eq!(parse_dir_name("ckpt-00000000004x"), None);
    assert_eq!(parse_dir_name(".tmp-40-abc"), None);
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct State {
    step: u64,
    weights: Vec<f32>,
    name: String,
}

#[test]
fn encode_decode_round_trip_and_refusals() {
    let state = State {
        step: 12,
        weights: vec![0.25, -1.5],
        name: "mlp".into(),
    };
    let bytes = encode("batch", 2, &state).unwrap();
    assert!(bytes.starts_with(b"MILLCKPT"));
    let back: State = decode("batch", 2, &bytes, "s3://b/ckpt-000000000012").unwrap();
    assert_eq!(back, state);

    let error = |result: Result<State>| result.unwrap_err().to_string();
    let wrong_kind = error(decode("streaming", 2, &bytes, "s3://b/c"));
    assert!(
        wrong_kind.contains("checkpoint s3://b/c was written by a batch job, not a streaming job"),
        "{wrong_kind}"
    );
    let newer = encode("batch", 3, &state).unwrap();
    let wrong_format = error(decode("batch", 2, &newer, "s3://b/c"));
    assert!(
        wrong_format.contains("format 3 is not 2: written by another millrace version"),
        "{wrong_format}"
    );
    for garbage in [
        &b"PAR1 not ours"[..],
        b"",
        b"MILLCKPT",
        b"MILLCKPT\x09\x00ba",
    ] {
        let message = error(decode("batch", 2, garbage, "/ckpt/x"));
        assert!(
            message.contains("/ckpt/x is not a millrace checkpoint"),
            "{message}"
        );
    }
    let cut = error(decode("batch", 2, &bytes[..bytes.len() - 3], "/ckpt/x"));
    assert!(cut.contains("does not decode"), "{cut}");
}

#[test]
fn typed_state_through_a_store() {
    let store = memory_store(2);
    let state = State {
        step: 3,
        weights: vec![1.0; 100],
        name: "w".into(),
    };
    store
        .write(3, &encode("batch-train", 1, &state).unwrap())
        .unwrap();
    let (info, bytes) = store.latest().unwrap().unwrap();
    let back: State = decode("batch-train", 1, &bytes, &info.url).unwrap();
    assert_eq!(back, state);
}
