//! Shared fixtures: small generated datasets, cached per test process.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Runs `command` to the end; its output, after asserting it succeeded (its stderr otherwise).
pub fn succeed(command: &mut std::process::Command) -> std::process::Output {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A scratch directory unique to this test process.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("millrace-it-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Train (60k rows, 3 files) and holdout (20k rows) tabular datasets, generated once.
pub fn tabular() -> &'static (PathBuf, PathBuf) {
    static DATA: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    DATA.get_or_init(|| {
        let dir = scratch("tabular");
        let train = dir.join("train");
        let holdout = dir.join("holdout");
        millrace::data::generate_tabular(&train, 60_000, 3, 11, false).unwrap();
        millrace::data::generate_tabular(&holdout, 20_000, 1, 12, true).unwrap();
        (train, holdout)
    })
}

/// A pipeline file over the tabular fixture.
pub fn pipeline_toml(train: &Path, holdout: &Path, epochs: usize) -> String {
    format!(
        r#"name = "it"

[ingest]
path = "{}"
batch_rows = 8192

[preprocess]
sql = "SELECT * FROM input WHERE f3 IS NOT NULL"
standardize = ["f0", "f1", "f2", "f3", "f4", "f5", "f6", "f7", "f8", "f9", "f10", "f11", "f12", "f13", "f14", "f15"]
one_hot = ["cat"]
label = "label"

[train]
model = {{ kind = "mlp", hidden = [64, 64], activation = "relu" }}
optimizer = {{ kind = "adam" }}
lr = 0.002
batch_size = 256
epochs = {epochs}
seed = 42

[evaluate]
path = "{}"
"#,
        train.display(),
        holdout.display()
    )
}

/// Polls `ready` until it holds, then kills `victim` with SIGKILL (no chance to clean up). Fails
/// when `limit` passes first (`waiting_for` says for what) or when the victim ends first.
pub fn kill_when(
    victim: &mut Child,
    limit: Duration,
    waiting_for: &str,
    mut ready: impl FnMut() -> bool,
) {
    let started = Instant::now();
    while !ready() {
        assert!(
            started.elapsed() < limit,
            "{waiting_for}: not within {limit:?}"
        );
        assert!(
            victim.try_wait().unwrap().is_none(),
            "the run ended before {waiting_for}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    victim.kill().unwrap();
    victim.wait().unwrap();
}

/// A copy of the bundle in `model_dir` (under a fresh scratch directory named `name`) whose
/// `model.json` has `from` replaced by `to`, e.g. to name a function the binary lacks.
pub fn edited_bundle(model_dir: &Path, name: &str, from: &str, to: &str) -> PathBuf {
    let copy = scratch(name);
    std::fs::create_dir_all(&copy).unwrap();
    for entry in std::fs::read_dir(model_dir).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), copy.join(entry.file_name())).unwrap();
    }
    let model_json = copy.join("model.json");
    let text = std::fs::read_to_string(&model_json).unwrap();
    assert!(text.contains(from), "model.json has no {from}");
    std::fs::write(&model_json, text.replace(from, to)).unwrap();
    copy
}
