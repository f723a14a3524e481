//! Multi-process runs on loopback and resuming from checkpoints: the same model from threads and
//! processes, a killed process named by the others, exactly-once training after resuming on the
//! same, fewer or more workers, and half-written or damaged checkpoints.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::common::{kill_when, pipeline_toml, scratch, tabular};
use super::streaming::assert_counted;

fn millrace() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_millrace"));
    command.env("RUST_LOG", "warn");
    command
}

fn ok(mut command: Command) -> Output {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{command:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn summary(run_dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(run_dir.join("summary.json")).unwrap()).unwrap()
}

/// `millrace run PIPELINE --run-dir DIR` plus `args`.
fn run(pipeline: &Path, run_dir: &Path, args: &[&str]) -> Command {
    let mut command = millrace();
    command
        .arg("run")
        .arg(pipeline)
        .arg("--run-dir")
        .arg(run_dir)
        .args(args);
    command
}

/// `millrace cluster PIPELINE --processes P --workers W --run-dir DIR` plus `args`.
fn cluster(
    pipeline: &Path,
    processes: usize,
    workers: usize,
    run_dir: &Path,
    args: &[&str],
) -> Command {
    let mut command = millrace();
    command
        .arg("cluster")
        .arg(pipeline)
        .args(["--processes", &processes.to_string()])
        .args(["--workers", &workers.to_string()])
        .arg("--run-dir")
        .arg(run_dir)
        .args(args);
    command
}

/// The counting pipeline over the tabular fixture: linear regression with MAE, sum reduction and
/// SGD at lr 1 towards a target far above the output, so every trained row adds exactly 1 to the
/// bias. Rows differ (f0), so the batches are real batches.
fn counting(dir: &Path, checkpoints: &Path, epochs: usize, batch: usize) -> PathBuf {
    counting_at(dir, &checkpoints.display().to_string(), epochs, batch, "")
}

/// [`counting`] with its checkpoints at `location` (a path or URL) and `extra` TOML appended.
fn counting_at(dir: &Path, location: &str, epochs: usize, batch: usize, extra: &str) -> PathBuf {
    let (train, _) = tabular();
    let text = format!(
        r#"name = "counting"

[ingest]
path = "{}"

[preprocess]
sql = "SELECT f0, 1000000.0 AS y FROM input WHERE f0 IS NOT NULL"
standardize = ["f0"]
label = "y"

[train]
task = "regression"
model = {{ kind = "linear" }}
optimizer = {{ kind = "sgd" }}
loss = "mae"
reduction = "sum"
lr = 1.0
batch_size = {batch}
epochs = {epochs}
seed = 42

[checkpoint]
dir = "{}"
every_steps = 100
keep = 3

{extra}
"#,
        train.display(),
        location
    );
    let path = dir.join("counting.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Complete checkpoints (`ckpt-<step>` with its COMMIT), oldest first. A checkpoint is written
/// in a `.tmp-…` directory, COMMIT included, then renamed: that one is not complete yet.
fn complete(checkpoints: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(checkpoints)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("ckpt-"))
                .map(|e| e.path())
                .filter(|p| p.join("COMMIT").exists())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

fn step_of(checkpoint: &Path) -> u64 {
    let name = checkpoint.file_name().unwrap().to_str().unwrap();
    name.trim_start_matches("ckpt-").parse().unwrap()
}

/// Waits until `checkpoints` holds two complete checkpoints, then kills `victim` with SIGKILL.
fn kill_after_two_checkpoints(checkpoints: &Path, victim: &mut Child) {
    kill_when(
        victim,
        Duration::from_secs(300),
        &format!("two checkpoints in {}", checkpoints.display()),
        || complete(checkpoints).len() >= 2,
    );
}

/// Waits for `child` at most `limit`; its output.
fn wait_at_most(child: Child, limit: Duration) -> Output {
    let started = Instant::now();
    let mut child = child;
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            child.kill().ok();
            panic!("the process hung for {limit:?} after its peer died");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn processes_train_the_model_threads_train() {
    let dir = scratch("cluster-same-model");
    let (train, holdout) = tabular();
    let pipeline = dir.join("p.toml");
    std::fs::write(&pipeline, pipeline_toml(train, holdout, 1)).unwrap();
    let checksum = |d: &Path| {
        summary(d)["parameter_checksum"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let accuracy = |d: &Path| summary(d)["eval"]["accuracy"].as_f64().unwrap();

    ok(run(&pipeline, &dir.join("t2"), &["--workers", "2"]));
    ok(cluster(&pipeline, 2, 1, &dir.join("p2x1"), &[]));
    // The same split of the work (2 workers, same indexes): bit-identical.
    assert_eq!(checksum(&dir.join("p2x1")), checksum(&dir.join("t2")));
    let s = summary(&dir.join("p2x1"));
    assert_eq!(
        (s["workers"].as_u64(), s["processes"].as_u64()),
        (Some(2), Some(2))
    );
    // Process 0's summary counts the rows every process read.
    assert_eq!(s["rows_read"], summary(&dir.join("t2"))["rows_read"]);
    assert!(s["sync_ms_per_step"].as_f64().unwrap() > 0.0);

    ok(cluster(&pipeline, 2, 2, &dir.join("p2x2"), &[]));
    ok(run(&pipeline, &dir.join("t4"), &["--workers", "4"]));
    assert_eq!(checksum(&dir.join("p2x2")), checksum(&dir.join("t4")));

    // Another split: the same batches, so the same accuracy up to rounding.
    ok(run(&pipeline, &dir.join("t1"), &["--workers", "1"]));
    let (one, four) = (accuracy(&dir.join("t1")), accuracy(&dir.join("p2x2")));
    assert!(
        (one - four).abs() <= 0.005,
        "1 thread {one} vs 2×2 processes {four}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_killed_process_is_named_and_the_run_resumes_exactly_once() {
    let dir = scratch("cluster-kill");
    let reference = counting(&dir, &dir.join("ckpt-ref"), 3, 64);
    ok(cluster(&reference, 2, 1, &dir.join("ref"), &[]));
    let expected = summary(&dir.join("ref"));
    let visits = expected["rows_trained"].as_u64().unwrap();
    assert_eq!(visits, 3 * expected["train_rows"].as_u64().unwrap());
    assert_counted(&dir.join("ref/model"), visits);

    // The same run, killed: process 1 gets SIGKILL after two checkpoints.
    let checkpoints = dir.join("ckpts");
    let pipeline = counting(&dir, &checkpoints, 3, 64);
    let hosts = dir.join("hosts.txt");
    std::fs::write(
        &hosts,
        millrace::cluster::local_hosts(2).unwrap().join("\n"),
    )
    .unwrap();
    let start = |id: usize| {
        run(&pipeline, &dir.join("killed"), &[])
            .args(["--processes", "2", "--process-id", &id.to_string()])
            .arg("--hosts")
            .arg(&hosts)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (first, mut second) = (start(0), start(1));
    kill_after_two_checkpoints(&checkpoints, &mut second);
    let out = wait_at_most(first, Duration::from_secs(90));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("lost process 1 of the cluster"), "{stderr}");
    assert!(
        !dir.join("killed/model").exists(),
        "the run finished before the kill"
    );
    let newest = step_of(complete(&checkpoints).last().unwrap());
    copy_dir(&checkpoints, &dir.join("ckpts-one"));

    // Resumed on the same split: the uninterrupted run's model, bit for bit.
    ok(cluster(&pipeline, 2, 1, &dir.join("killed"), &["--resume"]));
    let resumed = summary(&dir.join("killed"));
    assert_eq!(resumed["resumed_from_step"].as_u64(), Some(newest));
    assert_eq!(
        resumed["parameter_checksum"],
        expected["parameter_checksum"]
    );
    assert_eq!(resumed["rows_trained"].as_u64(), Some(visits));
    assert_counted(&dir.join("killed/model"), visits);
    // The curve has every step once.
    let metrics = std::fs::read_to_string(dir.join("killed/metrics.jsonl")).unwrap();
    let steps: Vec<u64> = metrics
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["kind"] == "train")
        .map(|v| v["step"].as_u64().unwrap())
        .collect();
    assert!(
        steps.windows(2).all(|w| w[0] < w[1]),
        "steps repeat or go back"
    );

    // Resumed from 2 processes onto 1: every row still trained exactly once.
    let one = format!("checkpoint.dir={}", dir.join("ckpts-one").display());
    ok(run(
        &pipeline,
        &dir.join("one"),
        &["--resume", "--set", &one],
    ));
    assert_eq!(
        summary(&dir.join("one"))["resumed_from_step"].as_u64(),
        Some(newest)
    );
    assert_counted(&dir.join("one/model"), visits);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn one_process_resumes_on_three_skipping_a_half_written_checkpoint() {
    let dir = scratch("cluster-1-to-3");
    let checkpoints = dir.join("ckpts");
    let pipeline = counting(&dir, &checkpoints, 8, 32);
    let mut single = run(&pipeline, &dir.join("single"), &[])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    kill_after_two_checkpoints(&checkpoints, &mut single);
    assert!(
        !dir.join("single/model").exists(),
        "the run finished before the kill"
    );
    let newest = step_of(complete(&checkpoints).last().unwrap());

    // A crash while writing the next checkpoint left its data without a COMMIT.
    let half = checkpoints.join(format!("ckpt-{:012}", newest + 100));
    std::fs::create_dir_all(&half).unwrap();
    std::fs::write(half.join("data.bin"), b"half of a checkpoint").unwrap();
    // A copy whose newest complete checkpoint is damaged.
    copy_dir(&checkpoints, &dir.join("damaged"));
    let data = dir
        .join("damaged")
        .join(format!("ckpt-{newest:012}"))
        .join("data.bin");
    let mut bytes = std::fs::read(&data).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&data, bytes).unwrap();

    ok(cluster(&pipeline, 3, 1, &dir.join("three"), &["--resume"]));
    let s = summary(&dir.join("three"));
    assert_eq!(s["resumed_from_step"].as_u64(), Some(newest));
    assert_eq!(s["workers"].as_u64(), Some(3));
    let visits = 8 * s["train_rows"].as_u64().unwrap();
    assert_eq!(s["rows_trained"].as_u64(), Some(visits));
    assert_counted(&dir.join("three/model"), visits);

    let damaged = format!("checkpoint.dir={}", dir.join("damaged").display());
    let out = run(
        &pipeline,
        &dir.join("bad"),
        &["--resume", "--set", &damaged],
    )
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("damaged") && stderr.contains(&format!("ckpt-{newest:012}")),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// Checkpoints in an object store (a real S3-compatible server): a killed run resumes from them
/// on another number of workers.
#[test]
fn checkpoints_in_s3_resume_a_killed_run() {
    let Some(server) = super::services::s3() else {
        return;
    };
    server.create_bucket("checkpoints");
    let url = "s3://checkpoints/counting";
    let dir = scratch("cluster-s3");
    let pipeline = counting_at(&dir, url, 4, 32, &server.toml());
    let store =
        millrace::operators::checkpoint::CheckpointStore::open(url, &server.options(), 3).unwrap();
    let mut single = run(&pipeline, &dir.join("single"), &[])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    kill_when(
        &mut single,
        Duration::from_secs(300),
        &format!("two checkpoints in {url}"),
        || store.list().unwrap().len() >= 2,
    );
    let newest = store.list().unwrap().last().unwrap().step;

    ok(run(
        &pipeline,
        &dir.join("resumed"),
        &["--resume", "--workers", "2"],
    ));
    let s = summary(&dir.join("resumed"));
    assert_eq!(s["resumed_from_step"].as_u64(), Some(newest));
    assert_eq!(s["checkpoints"]["location"].as_str(), Some(url));
    let visits = 4 * s["train_rows"].as_u64().unwrap();
    assert_counted(&dir.join("resumed/model"), visits);
    // The newest `keep` checkpoints are left in the bucket.
    assert_eq!(store.list().unwrap().len(), 3);
    std::fs::remove_dir_all(&dir).ok();
}

/// The children of `pid` whose command line holds `needle` (Linux /proc).
fn children_with(pid: u32, needle: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        for child in children
            .split_whitespace()
            .filter_map(|c| c.parse::<u32>().ok())
        {
            let cmdline = std::fs::read(format!("/proc/{child}/cmdline")).unwrap_or_default();
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            if args.windows(2).any(|w| w.join(" ") == needle) {
                found.push(child);
            }
        }
    }
    found
}

/// `millrace cluster --restarts 1` supervises: when a process is killed, every process is
/// started again with --resume and the run finishes with every row trained exactly once.
#[test]
fn the_cluster_command_restarts_and_resumes_after_a_kill() {
    let dir = scratch("cluster-restart");
    let checkpoints = dir.join("ckpts");
    let pipeline = counting(&dir, &checkpoints, 3, 64);
    let supervisor = cluster(&pipeline, 2, 1, &dir.join("run"), &["--restarts", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while complete(&checkpoints).len() < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "no checkpoints"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let victims = children_with(supervisor.id(), "--process-id 1");
    assert_eq!(victims.len(), 1, "process 1 of the cluster");
    Command::new("kill")
        .args(["-9", &victims[0].to_string()])
        .status()
        .unwrap();
    let out = wait_at_most(supervisor, Duration::from_secs(300));
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("after 2 start(s)"), "{stdout}");
    assert!(
        stderr.contains("restarting all 2 processes with --resume"),
        "{stderr}"
    );
    let s = summary(&dir.join("run"));
    assert!(s["resumed_from_step"].as_u64().unwrap() > 0);
    let visits = 3 * s["train_rows"].as_u64().unwrap();
    assert_eq!(s["rows_trained"].as_u64(), Some(visits));
    assert_counted(&dir.join("run/model"), visits);
    std::fs::remove_dir_all(&dir).ok();
}
