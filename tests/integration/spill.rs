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
    // Two shuffled epochs: the second re-buckets the spilled rows for its own order.
    let text = pipeline_toml(train, holdout, 2);
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
