//! A bad configuration fails before work starts, naming the key, line and column.

use std::path::Path;

use millrace::run::plan;

use crate::common::{pipeline_toml, scratch, tabular};

fn plan_error(text: &str, name: &str) -> String {
    let dir = scratch(name);
    let path = dir.join("pipeline.toml");
    std::fs::write(&path, text).unwrap();
    let err = match millrace::pipeline_file::load(&path, &[]) {
        Err(e) => {
            return e
                .to_string()
                .replace(&path.display().to_string(), "pipeline.toml");
        }
        Ok((spec, text)) => plan(spec, Some((&path, &text))).unwrap_err(),
    };
    err.to_string()
        .replace(&path.display().to_string(), "pipeline.toml")
}

fn good() -> String {
    let (train, holdout) = tabular();
    pipeline_toml(train, holdout, 1)
}

#[test]
fn unknown_key_names_line_and_column() {
    let err = plan_error(
        &good().replace("batch_size = 256", "batch_size = 256\nbatchsize = 3"),
        "unknown-key",
    );
    assert!(
        err.starts_with("pipeline.toml:18:1: unknown field `batchsize`"),
        "{err}"
    );
}

#[test]
fn wrong_type_names_line_and_column() {
    let err = plan_error(
        &good().replace("epochs = 1", "epochs = \"one\""),
        "wrong-type",
    );
    assert!(
        err.starts_with("pipeline.toml:18:10: invalid type: string \"one\""),
        "{err}"
    );
}

#[test]
fn invalid_value_names_the_key() {
    let err = plan_error(&good().replace("lr = 0.002", "lr = -1.0"), "bad-lr");
    assert_eq!(
        err,
        "pipeline.toml:16:1: [train.lr] must be a positive number, got -1"
    );
}

#[test]
fn missing_column_names_the_key_and_the_column() {
    let err = plan_error(
        &good().replace("one_hot = [\"cat\"]", "one_hot = [\"category\"]"),
        "missing-col",
    );
    assert!(err.starts_with("pipeline.toml:10:1: [preprocess.one_hot] column 'category' is not produced by the preprocess SQL"), "{err}");
    let err = plan_error(
        &good().replace(
            "one_hot = [\"cat\"]",
            "one_hot = [\"cat\"]\nnumeric = [\"ts\"]",
        ),
        "wrong-col-type",
    );
    assert!(
        err.starts_with("pipeline.toml:11:1: [preprocess.numeric] column 'ts' has type Timestamp(µs), expected a number"),
        "{err}"
    );
    let err = plan_error(
        &good().replace(
            "one_hot = [\"cat\"]",
            "one_hot = [\"cat\"]\nindex = [\"cat\"]",
        ),
        "twice",
    );
    assert!(err.contains("column 'cat' is listed twice"), "{err}");
}

#[test]
fn sql_errors_say_what_is_wrong() {
    let err = plan_error(
        &good().replace("WHERE f3 IS NOT NULL", "WHERE f33 IS NOT NULL"),
        "bad-sql",
    );
    assert!(err.contains("[preprocess.sql]"), "{err}");
    assert!(err.contains("f33"), "{err}");
    let err = plan_error(
        &good().replace(
            "SELECT * FROM input WHERE f3 IS NOT NULL",
            "SELECT * FROM input ORDER BY f0",
        ),
        "sort-sql",
    );
    assert!(err.contains("row-wise"), "{err}");
}

#[test]
fn a_truncated_parquet_file_is_named() {
    let (train, holdout) = tabular();
    let dir = scratch("truncated");
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    for entry in std::fs::read_dir(train).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, data.join(p.file_name().unwrap())).unwrap();
    }
    let victim = data.join("part-00001.parquet");
    let bytes = std::fs::read(&victim).unwrap();
    std::fs::write(&victim, &bytes[..bytes.len() / 2]).unwrap();
    let err = plan_error(&pipeline_toml(&data, holdout, 1), "truncated-run");
    assert!(
        err.contains(&victim.display().to_string()) || err.contains("part-00001.parquet"),
        "{err}"
    );
    let _ = Path::new(&victim);
}

#[cfg(not(feature = "cuda"))]
#[test]
fn a_gpu_in_a_build_without_gpu_support_fails_before_work_starts() {
    let err = plan_error(
        &good().replace("batch_size = 256", "batch_size = 256\ndevice = \"cuda\""),
        "gpu-without-feature",
    );
    assert!(err.contains("train.device"), "{err}");
    assert!(err.contains("--features cuda"), "{err}");
}

#[test]
fn bf16_on_the_cpu_is_refused() {
    let err = plan_error(
        &good().replace("batch_size = 256", "batch_size = 256\nprecision = \"bf16\""),
        "bf16-on-cpu",
    );
    assert!(err.contains("train.precision"), "{err}");
    assert!(err.contains("needs device = \"cuda\""), "{err}");
}

#[test]
fn settings_with_a_fixed_set_of_values_name_the_value_line_and_column() {
    // [ingest] format, [output] mode and [stream] start / format / avro_framing / late are
    // read as enums with the file: a value outside the set is named where it is.
    let text = good().replace("batch_rows = 8192", "batch_rows = 8192\nformat = \"orc\"");
    let err = plan_error(&text, "bad-ingest-format");
    assert!(
        err.starts_with(
            "pipeline.toml:6:10: unknown variant `orc`, expected one of `auto`, `parquet`, `delta`"
        ),
        "{err}"
    );
    let text = format!("{}\n[output]\nmode = \"append\"\n", good());
    let line = text.lines().position(|l| l.starts_with("mode =")).unwrap() + 1;
    let err = plan_error(&text, "bad-output-mode");
    assert!(
        err.starts_with(&format!(
            "pipeline.toml:{line}:8: unknown variant `append`, expected `error` or `overwrite`"
        )),
        "{err}"
    );
    let stream = |setting: &str| {
        format!(
            "{}\n[stream]\nbootstrap_servers = \"127.0.0.1:1\"\ntopic = \"t\"\nschema = {{ f0 = \"float32\" }}\n{setting}\n",
            good()
        )
    };
    for (setting, expected) in [
        (
            "start = \"yesterday\"",
            "unknown start 'yesterday'; use committed, earliest, latest or timestamp:<epoch ms>",
        ),
        (
            "late = \"keep\"",
            "unknown variant `keep`, expected `drop` or `dead_letter`",
        ),
        (
            "format = \"protobuf\"",
            "unknown variant `protobuf`, expected one of `json`, `avro`, `raw`",
        ),
        (
            "avro_framing = \"magic\"",
            "unknown variant `magic`, expected `raw` or `confluent`",
        ),
    ] {
        let text = stream(setting);
        let line = text.lines().position(|l| l == setting).unwrap() + 1;
        let err = plan_error(&text, "bad-stream-setting");
        assert!(
            err.starts_with(&format!("pipeline.toml:{line}:")) && err.contains(expected),
            "{setting}: {err}"
        );
    }
}

#[test]
fn a_learning_rate_schedule_is_checked_before_work() {
    let schedule =
        |s: &str| good().replace("lr = 0.002", &format!("lr = 0.002\nlr_schedule = {s}"));
    let line = 17;
    for (setting, expected) in [
        (
            "{ kind = \"step\" }",
            "unknown variant `step`, expected one of `constant`, `linear`, `cosine`",
        ),
        (
            "{ kind = \"cosine\", min_lr = 0.01 }",
            "`train.lr_schedule.min_lr`: 0.01 is above lr (0.002): a decay goes down to min_lr",
        ),
        (
            "{ min_lr = 0.001 }",
            "`train.lr_schedule.min_lr`: a constant rate has no decay to end at: set kind = \"linear\"",
        ),
    ] {
        let err = plan_error(&schedule(setting), "bad-lr-schedule");
        assert!(
            err.starts_with(&format!("pipeline.toml:{line}:")) && err.contains(expected),
            "{setting}: {err}"
        );
    }
    // A stream has no last step to decay towards.
    let text = format!(
        "{}\n[stream]\nbootstrap_servers = \"127.0.0.1:1\"\ntopic = \"t\"\nschema = {{ f0 = \"float32\" }}\n",
        schedule("{ kind = \"linear\" }")
    );
    let err = plan_error(&text, "stream-lr-schedule");
    assert!(
        err.starts_with(&format!("pipeline.toml:{line}:"))
            && err.contains("a streaming job trains at a constant lr"),
        "{err}"
    );
}
