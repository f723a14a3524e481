//! `[tune]`: trials drawn from a search space train side by side on one read of the data; ASHA
//! stops the weak ones; the best trial's model is served; a kill -9 and `--resume` skip the
//! finished trials and end exactly where an uninterrupted run ends; bad sections fail before
//! any work.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use millrace::connectors::parquet::ParquetDataset;
use millrace::operators::batch_job::{TrialStatus, TuneSummary};
use millrace::operators::serve::{ModelRegistry, ServeOptions};
use serde_json::Value;

use crate::common::{kill_when, pipeline_toml, scratch, tabular};
use crate::quickstart::try_run_toml;
use crate::serve_harness::{
    Server, close, post_json, predict_in_process, probabilities, v2_request,
};

/// Eight trials over the learning rate and the hidden layers, three epochs each, ASHA with
/// a rung at 1 epoch (keep the top third); checkpoints after every trial epoch.
fn tune_toml(checkpoints: &Path) -> String {
    let (train, holdout) = tabular();
    let base = pipeline_toml(train, holdout, 3).replace("hidden = [64, 64]", "hidden = [16]");
    format!(
        r#"{base}
[checkpoint]
dir = "{}"

[tune]
metric = "accuracy"
mode = "max"
num_trials = 8
seed = 3
scheduler = {{ kind = "asha", grace_period = 1, reduction_factor = 3 }}

[tune.space]
"train.lr" = {{ loguniform = [1e-4, 3e-2] }}
"train.model.hidden" = {{ choice = [[8], [32, 16]] }}
"#,
        checkpoints.display()
    )
}

fn tune_lines(run_dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(run_dir.join("tune.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The highest step of a complete checkpoint in `dir` (0 when there is none).
fn newest_checkpoint(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.path().join("COMMIT").exists())
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    name.strip_prefix("ckpt-")?.parse::<u64>().ok()
                })
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

fn millrace_tune(pipeline: &Path, run_dir: &Path, resume: bool) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_millrace"));
    command
        .env("RUST_LOG", "warn")
        .arg("tune")
        .arg(pipeline)
        .arg("--workers")
        .arg("2")
        .arg("--no-serve")
        .arg("--run-dir")
        .arg(run_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if resume {
        command.arg("--resume");
    }
    command
}

#[test]
fn trials_share_one_read_asha_stops_some_the_best_serves_and_a_killed_run_resumes_exactly() {
    let dir = scratch("tune");
    let text = tune_toml(&dir.join("ckpt-whole"));
    let summary = try_run_toml(&text, 2, &dir).unwrap();
    let (train, holdout) = tabular();
    // One read for all eight trials.
    let rows = ParquetDataset::open_path(train).unwrap().num_rows();
    assert_eq!(summary.rows_read, rows, "{summary:?}");
    let tune: &TuneSummary = summary.tune.as_ref().unwrap();
    assert_eq!(tune.trials.len(), 8);
    let stopped = tune
        .trials
        .iter()
        .filter(|t| t.status == TrialStatus::Stopped)
        .count();
    assert!(
        stopped >= 2 && stopped == tune.stopped_early,
        "ASHA should stop some of 8 trials at the 1-epoch rung: {tune:#?}"
    );
    for t in &tune.trials {
        // A report per epoch: stopped at the 1-epoch rung, or all three epochs.
        let expected = if t.status == TrialStatus::Stopped {
            1
        } else {
            3
        };
        assert_eq!(t.reports, expected, "{t:?}");
        assert_eq!(t.epochs, expected as f64, "{t:?}");
        assert_eq!(t.history.len(), t.reports);
    }
    assert_eq!(
        tune.reports,
        tune.trials.iter().map(|t| t.reports).sum::<usize>()
    );
    // The best trial is the one with the highest last accuracy, and it is the run's model.
    let best = tune
        .trials
        .iter()
        .max_by(|a, b| a.metric.total_cmp(&b.metric))
        .unwrap();
    assert_eq!(tune.best, best.trial);
    assert_eq!(summary.parameter_checksum, best.parameter_checksum);
    let accuracy = serde_json::to_value(summary.eval.as_ref().unwrap()).unwrap()["accuracy"]
        .as_f64()
        .unwrap();
    assert_eq!(accuracy, best.metric);
    assert!(accuracy > 0.8, "best accuracy {accuracy}");
    // tune.jsonl has every trial; the plot is drawn.
    let lines = tune_lines(&dir.join("run"));
    assert_eq!(lines.len(), 8);
    // The dashboard shows the trials as tune.jsonl has them.
    crate::ui::check_tune_page(&dir, tune);
    assert!(dir.join("run/tune.png").exists() && dir.join("run/tune.svg").exists());

    // best/model serves the in-process predictions.
    let model_dir = dir.join("run/best/model");
    assert_eq!(summary.model_path, model_dir.display().to_string());
    let options = ServeOptions::default();
    let registry = ModelRegistry::new(options.batching.clone());
    registry.load_dir(Some("best"), &model_dir).unwrap();
    let server = Server::start(registry, options);
    let (raw, _, expected) = predict_in_process(&model_dir, holdout);
    let reply = post_json(
        server.addr,
        "/v2/models/best/infer",
        &v2_request(&raw, 0..40),
    );
    assert_eq!(reply.status, 200);
    let got = probabilities(&reply.json());
    assert_eq!(got.len(), 80);
    for (g, w) in got.iter().zip(&expected) {
        assert!(close(*g, *w), "served {g}, in process {w}");
    }

    // The same run, killed by SIGKILL after 6 reports, then resumed.
    let checkpoints = dir.join("ckpt-killed");
    let pipeline = dir.join("killed.toml");
    std::fs::write(&pipeline, tune_toml(&checkpoints)).unwrap();
    let run_dir = dir.join("killed");
    let mut victim = millrace_tune(&pipeline, &run_dir, false).spawn().unwrap();
    kill_when(
        &mut victim,
        Duration::from_secs(600),
        "6 reports checkpointed",
        || newest_checkpoint(&checkpoints) >= 6,
    );
    assert!(
        !run_dir.join("summary.json").exists(),
        "the run ended before the kill"
    );
    let out = millrace_tune(&pipeline, &run_dir, true).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains(&format!("best {}", tune.best)), "{table}");
    let resumed: Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("summary.json")).unwrap())
            .unwrap();
    let resumed_tune: TuneSummary = serde_json::from_value(resumed["tune"].clone()).unwrap();
    assert!(
        resumed_tune.resumed_finished >= 1,
        "the kill came after trials had ended: {resumed_tune:#?}"
    );
    // Exactly the uninterrupted run's trials: decisions, metrics and parameters, bit for bit
    // (training times aside).
    let untimed = |trials: &[millrace::operators::batch_job::TrialSummary]| {
        let mut trials = trials.to_vec();
        trials.iter_mut().for_each(|t| t.train_s = 0.0);
        trials
    };
    assert_eq!(untimed(&resumed_tune.trials), untimed(&tune.trials));
    assert_eq!(resumed["parameter_checksum"], summary.parameter_checksum);
    // tune.jsonl lists each trial once; metrics.jsonl each report once.
    assert_eq!(tune_lines(&run_dir).len(), 8);
    let reports = std::fs::read_to_string(run_dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .count();
    assert_eq!(reports, tune.reports);
}

#[test]
fn reports_inside_epochs_leave_the_trial_model_of_its_own_run_bit_for_bit() {
    // One trial, reporting every 50 steps (an epoch is 233), never stopped: its model is the
    // model the same [train] trains without tune.
    let (train, holdout) = tabular();
    let base = pipeline_toml(train, holdout, 2);
    let tuned = format!(
        "{base}\n[tune]\nmetric = \"loss\"\nmode = \"min\"\nsearch = \"grid\"\n\
         report_every_steps = 50\nreport_eval_rows = 2000\nscheduler = {{ kind = \"fifo\" }}\n\
         [tune.space]\n\
         \"train.lr\" = {{ choice = [0.004] }}\n"
    );
    let dir = scratch("tune-steps");
    let tuned = try_run_toml(&tuned, 2, &dir).unwrap();
    let alone = try_run_toml(
        &base.replace("lr = 0.002", "lr = 0.004"),
        2,
        &scratch("tune-steps-alone"),
    )
    .unwrap();
    let trial = &tuned.tune.as_ref().unwrap().trials[0];
    // 466 steps in two epochs: reports at 50, 100, …, 450 and at the end.
    assert_eq!(trial.reports, 10, "{trial:?}");
    assert_eq!(trial.steps, 466);
    assert_eq!(trial.epochs, 2.0);
    assert!(trial.history.iter().all(|l| l.is_finite() && *l > 0.0));
    assert!(trial.history[9] < trial.history[0], "{:?}", trial.history);
    assert_eq!(trial.parameter_checksum, alone.parameter_checksum);
    // The reports before the last are evaluated on a sample of about 2,000 of the 19,800
    // holdout rows; the last on all of them, as the plain run's evaluation.
    assert_eq!(tuned.eval, alone.eval);
    let rows: Vec<u64> = std::fs::read_to_string(dir.join("run/metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["rows"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(rows.len(), 10);
    assert!(
        rows[..9]
            .iter()
            .all(|r| *r == rows[0] && (1700..2300).contains(r)),
        "{rows:?}"
    );
    assert_eq!(rows[9], 19_800);
}

fn tune_error(section: &str) -> String {
    let (train, holdout) = tabular();
    let text = format!("{}\n{section}", pipeline_toml(train, holdout, 1));
    let dir: PathBuf = scratch("tune-bad");
    let err = try_run_toml(&text, 1, &dir).unwrap_err();
    assert!(
        !dir.join("run/metrics.jsonl").exists(),
        "work started: {err}"
    );
    err
}

#[test]
fn bad_tune_sections_fail_before_work_naming_what_to_change() {
    let space = |domain: &str| {
        format!("[tune]\nmetric = \"accuracy\"\nmode = \"max\"\n[tune.space]\n{domain}\n")
    };
    let err = tune_error(&space(r#""train.lrr" = { uniform = [0.001, 0.01] }"#));
    assert!(
        err.contains("train.lrr") && err.contains("unknown field `lrr`"),
        "{err}"
    );
    let err = tune_error(&space(r#""train.lr" = { uniform = [0.01, 0.01] }"#));
    assert!(err.contains("uniform [0.01, 0.01] is empty"), "{err}");
    let err = tune_error(&space(r#""train.lr" = { loguniform = [0.0, 0.01] }"#));
    assert!(err.contains("needs 0 < lo < hi"), "{err}");
    let err = tune_error(&space(r#""train.model.hidden" = { choice = [] }"#));
    assert!(err.contains("choice is empty"), "{err}");
    let err = tune_error(&space(r#""preprocess.sql" = { choice = ["SELECT 1"] }"#));
    assert!(err.contains("tune searches [train] keys"), "{err}");
    let err = tune_error(
        &space(r#""train.lr" = { uniform = [0.001, 0.01] }"#).replace("accuracy", "rmse"),
    );
    assert!(
        err.contains("'rmse' is not a metric a Classification pipeline produces")
            && err.contains("accuracy, log_loss, roc_auc, loss"),
        "{err}"
    );
    let err = tune_error(
        &space(r#""train.lr" = { uniform = [0.001, 0.01] }"#)
            .replace("[tune.space]", "search = \"grid\"\n[tune.space]"),
    );
    assert!(
        err.contains("a grid search takes `choice` domains only"),
        "{err}"
    );
    // A model the preprocessing cannot feed, in one trial only.
    let err = tune_error(&space(
        r#""train.model" = { choice = [{ kind = "mlp", hidden = [4] }, { kind = "embedding_mlp", columns = ["region"] }] }"#,
    ));
    assert!(
        err.contains("trial-") && err.contains("index:region"),
        "{err}"
    );
}

#[test]
fn the_dsl_writes_the_same_tune_section_as_the_file() {
    use millrace::dsl::{Pipeline, Train, Tune};
    use millrace::prelude::{Decay, LrSchedule};
    let (train, _) = tabular();
    let file = millrace::pipeline_file::parse(
        &format!(
            "{}\n[tune]\nmetric = \"log_loss\"\nmode = \"min\"\nnum_trials = 4\nmax_concurrent = 2\n\
             scheduler = {{ kind = \"median\", grace_period = 2, min_samples = 2 }}\n[tune.space]\n\
             \"train.lr\" = {{ loguniform = [0.0001, 0.1] }}\n\
             \"train.model.hidden\" = {{ choice = [[8], [16, 16]] }}\n\
             \"train.batch_size\" = {{ int = [64, 512] }}\n",
            pipeline_toml(train, train, 1).replace(
                "lr = 0.002",
                "lr = 0.002\nlr_schedule = { kind = \"cosine\", warmup_steps = 50, min_lr = 1e-5 }"
            )
        ),
        Path::new("t.toml"),
    )
    .unwrap();
    let dsl = Pipeline::new("it")
        .ingest_parquet(train)
        .label("label")
        .train(Train::mlp([64, 64]).lr_schedule(LrSchedule {
            warmup_steps: 50,
            min_lr: 1e-5,
            ..LrSchedule::new(Decay::Cosine)
        }))
        .tune(
            Tune::minimize("log_loss")
                .loguniform("train.lr", 1e-4, 0.1)
                .choice("train.model.hidden", [vec![8], vec![16, 16]])
                .int("train.batch_size", 64, 512)
                .num_trials(4)
                .max_concurrent(2)
                .median(2, 2),
        )
        .build()
        .unwrap();
    assert_eq!(dsl.tune, file.tune);
    // The trials' schedule too.
    assert_eq!(dsl.train.lr_schedule, file.train.lr_schedule);
    assert!(!file.train.lr_schedule.is_constant());
}
