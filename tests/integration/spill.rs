//! `train.memory_budget`: training rows past the budget spill to local disk and train the same
//! model, bit for bit; the spill files are gone when the job ends.

use crate::common::{pipeline_toml, scratch, tabular};
use crate::quickstart::{run_toml, try_run_toml};

/// This process's spill directories (named `<pid>-…` under `$TMPDIR/millrace-spill`).
fn own_spill_dirs() -> Vec<String> {
    let root = std::env::temp_dir().join("millrace-spill");
    let prefix = format!("{}-", std::process::id());
    std::fs::read_dir(root)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn rows_past_the_memory_budget_spill_and_train_the_same_model() {
    let (train, holdout) = tabular();
    // Two shuffled epochs: the second re-buckets the spilled rows for its own order; a branch
    // with another seed trains on the same spilled rows, re-bucketed for its orders.
    let text = format!(
        "{}\n[[branch]]\nname = \"small\"\n[branch.train]\nmodel = {{ kind = \"mlp\", hidden = [16] }}\nlr = 0.003\nbatch_size = 128\nepochs = 2\nseed = 7\n",
        pipeline_toml(train, holdout, 2)
    );
    let dir = scratch("spill");
    let memory = run_toml(&text, 2, &dir.join("memory"));
    assert_eq!(
        memory.train_rows_spilled, 0,
        "the default budget holds 60k rows"
    );

    let tight = text.replace("seed = 42", "seed = 42\nmemory_budget = \"1MiB\"");
    let spilled = run_toml(&tight, 2, &dir.join("spilled"));
    assert_eq!(spilled.train_rows_spilled, spilled.train_rows);
    assert!(spilled.train_rows > 50_000, "{}", spilled.train_rows);
    assert_eq!(spilled.train_rows, memory.train_rows);
    assert_eq!(spilled.rows_trained, memory.rows_trained);
    assert_eq!(spilled.steps, memory.steps);
    assert_eq!(
        spilled.parameter_checksum, memory.parameter_checksum,
        "spilled rows train the same model bit for bit"
    );
    assert_eq!(spilled.eval, memory.eval);
    assert_eq!(spilled.branches.len(), 1);
    assert_eq!(
        spilled.branches[0].parameter_checksum, memory.branches[0].parameter_checksum,
        "the branch, trained on re-bucketed spilled rows, is the same model too"
    );
    assert_eq!(spilled.rows_dead_lettered, memory.rows_dead_lettered);
    assert!(
        own_spill_dirs().is_empty(),
        "spill files left: {:?}",
        own_spill_dirs()
    );

    // One worker with a budget that spills only part of the way through: the same batches.
    let one = run_toml(
        &text.replace("seed = 42", "seed = 42\nmemory_budget = \"3MiB\""),
        1,
        &dir.join("one"),
    );
    assert_eq!(one.train_rows_spilled, one.train_rows);
    let one_memory = run_toml(&text, 1, &dir.join("one-memory"));
    assert_eq!(one.parameter_checksum, one_memory.parameter_checksum);
}

#[test]
fn a_bad_memory_budget_fails_before_work() {
    let (train, holdout) = tabular();
    let text = pipeline_toml(train, holdout, 1);
    let dir = scratch("spill-bad");
    for (value, says) in [
        ("\"lots\"", "not a size"),
        ("\"2 parsecs\"", "unknown unit 'parsecs'"),
        ("0", "0 bytes"),
    ] {
        let bad = text.replace("seed = 42", &format!("seed = 42\nmemory_budget = {value}"));
        let err = try_run_toml(&bad, 1, &dir.join("run")).unwrap_err();
        assert!(
            err.contains(":20:17:") && err.contains(says),
            "{value}: {err}"
        );
    }
}

/// The spill directories under `tmp` (a `TMPDIR`), by name.
fn spill_dirs(tmp: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(tmp.join("millrace-spill"))
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn the_spill_files_of_a_killed_run_are_removed_by_the_next_run() {
    use std::process::{Command, Stdio};
    use std::time::Duration;

    let (train, holdout) = tabular();
    let dir = scratch("spill-kill");
    let tmp = dir.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let text = pipeline_toml(train, holdout, 20)
        .replace("seed = 42", "seed = 42\nmemory_budget = \"1MiB\"");
    let pipeline = dir.join("pipeline.toml");
    std::fs::write(&pipeline, &text).unwrap();
    let run = |run_dir: &str| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_millrace"));
        command
            .env("TMPDIR", &tmp)
            .env("RUST_LOG", "warn")
            .args(["run", "--no-ui", "--run-dir"])
            .arg(dir.join(run_dir))
            .arg(&pipeline)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        command
    };
    let mut victim = run("killed").spawn().unwrap();
    let pid = victim.id();
    // Killed while it trains from its bucket files.
    crate::common::kill_when(
        &mut victim,
        Duration::from_secs(120),
        "bucket files",
        || {
            spill_dirs(&tmp).iter().any(|d| {
                d.starts_with(&format!("{pid}-"))
                    && std::fs::read_dir(tmp.join("millrace-spill").join(d))
                        .map(|files| {
                            files
                                .flatten()
                                .any(|f| f.file_name().to_string_lossy().starts_with("rows-"))
                        })
                        .unwrap_or(false)
            })
        },
    );
    let left = spill_dirs(&tmp);
    assert!(
        left.iter().any(|d| d.starts_with(&format!("{pid}-"))),
        "SIGKILL leaves the files: {left:?}"
    );
    let next = run("next")
        .args(["--set", "train.epochs=1"])
        .status()
        .unwrap();
    assert!(next.success());
    assert_eq!(
        spill_dirs(&tmp),
        Vec::<String>::new(),
        "the next spilling run removed the killed run's files and its own"
    );
}
