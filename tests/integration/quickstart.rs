//! The quickstart pipeline end to end, on 1 and 2 workers.

use std::path::Path;
use std::sync::Arc;

use millrace::engine::ClusterConfig;
use millrace::ml::bundle::ModelBundle;
use millrace::operators::batch_job::{NoProgress, Summary};
use millrace::run::{RunConfig, plan, run_planned};
use serde_json::Value;

use crate::common::{pipeline_toml, scratch, tabular};

pub fn run_toml(text: &str, workers: usize, dir: &Path) -> Summary {
    try_run_toml(text, workers, dir).unwrap()
}

/// Runs a pipeline file's text; the error as the CLI would print it.
pub fn try_run_toml(text: &str, workers: usize, dir: &Path) -> Result<Summary, String> {
    try_run_toml_with(text, workers, dir, false)
}

/// [`try_run_toml`], with `--resume` when `resume`.
pub fn try_run_toml_with(
    text: &str,
    workers: usize,
    dir: &Path,
    resume: bool,
) -> Result<Summary, String> {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("pipeline.toml");
    std::fs::write(&path, text).unwrap();
    let (spec, text) = millrace::pipeline_file::load(&path, &[]).map_err(|e| e.to_string())?;
    let planned = plan(spec, Some((&path, &text))).map_err(|e| e.to_string())?;
    let config = RunConfig {
        cluster: ClusterConfig::local(workers),
        run_dir: Some(dir.join("run")),
        progress: Arc::new(NoProgress),
        resume,
        started: None,
    };
    run_planned(planned, Some(&text), config)
        .map(|r| r.0)
        .map_err(|e| e.to_string())
}

fn accuracy(s: &Summary) -> f64 {
    let v = serde_json::to_value(s.eval.as_ref().unwrap()).unwrap();
    v["accuracy"].as_f64().unwrap()
}

/// Compares two JSON documents, numbers within a relative tolerance.
fn assert_close(a: &Value, b: &Value, path: &str) {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            assert!(
                (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1e-12),
                "{path}: {x} != {y}"
            );
        }
        (Value::Array(x), Value::Array(y)) => {
            assert_eq!(x.len(), y.len(), "{path}: lengths differ");
            for (i, (x, y)) in x.iter().zip(y).enumerate() {
                assert_close(x, y, &format!("{path}[{i}]"));
            }
        }
        (Value::Object(x), Value::Object(y)) => {
            assert_eq!(
                x.keys().collect::<Vec<_>>(),
                y.keys().collect::<Vec<_>>(),
                "{path}: keys differ"
            );
            for (k, v) in x {
                assert_close(v, &y[k], &format!("{path}.{k}"));
            }
        }
        _ => assert_eq!(a, b, "{path}"),
    }
}

#[test]
fn one_and_two_workers_train_the_same_quality_model() {
    let (train, holdout) = tabular();
    let text = pipeline_toml(train, holdout, 3);
    let dir = scratch("quickstart");
    let one = run_toml(&text, 1, &dir.join("w1"));
    let two = run_toml(&text, 2, &dir.join("w2"));

    // Every row read exactly once; the SQL dropped the rows with a null f3 (about 1%).
    for s in [&one, &two] {
        assert_eq!(s.rows_read, 60_000);
        assert_eq!(s.eval_rows_read, 20_000);
        assert_eq!(s.rows_dead_lettered, 0);
        assert!(
            (300..900).contains(&s.rows_filtered),
            "filtered {}",
            s.rows_filtered
        );
        assert!(s.eval_rows > 19_000);
        assert_eq!(s.rows_trained, s.train_rows * 3);
        assert!(s.steps > 0 && s.train_rows_per_s > 0.0 && s.e2e_rows_per_s > 0.0);
    }
    assert_eq!(one.train_rows, two.train_rows);
    assert_eq!(
        one.train_rows + one.rows_filtered - (20_000 - one.eval_rows),
        60_000
    );
    assert_eq!(one.steps, two.steps);
    let (a1, a2) = (accuracy(&one), accuracy(&two));
    assert!(a1 >= 0.85, "1-worker holdout accuracy {a1}");
    assert!((a1 - a2).abs() <= 0.005, "1 worker {a1} vs 2 workers {a2}");

    // Preprocessing fitted across 2 workers equals the 1-worker fit.
    let b1 = ModelBundle::load(&dir.join("w1/run/model")).unwrap();
    let b2 = ModelBundle::load(&dir.join("w2/run/model")).unwrap();
    assert_close(
        &serde_json::to_value(&b1.preprocess).unwrap(),
        &serde_json::to_value(&b2.preprocess).unwrap(),
        "preprocess",
    );
    assert_eq!(b1.preprocess.input_dim(), 24);

    // The run directory has everything a user looks at.
    let run = dir.join("w2/run");
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let evals: Vec<Value> = metrics
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["kind"] == "eval")
        .collect();
    assert_eq!(evals.len(), 3, "one evaluation per epoch");
    assert!(evals[2]["roc_auc"].as_f64().unwrap() > 0.9);
    let png = std::fs::read(run.join("curves.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    for key in [
        "rows_read",
        "rows_trained",
        "rows_dead_lettered",
        "wall_s",
        "train_rows_per_s",
        "e2e_rows_per_s",
        "eval",
        "model_path",
    ] {
        assert!(!summary[key].is_null(), "summary.json lacks {key}");
    }
    assert_eq!(
        summary["device"], "cpu",
        "the summary says where the model trained"
    );
    assert!(
        std::fs::read_to_string(run.join("pipeline.toml"))
            .unwrap()
            .contains("[preprocess]")
    );
    assert!(
        std::fs::read_to_string(run.join("metrics.prom"))
            .unwrap()
            .contains("millrace_operator_rows_in_total{operator=\"preprocess/sql\"")
    );
}

#[test]
fn same_seed_and_workers_reproduce_the_model_bit_for_bit() {
    let (train, holdout) = tabular();
    let text = pipeline_toml(train, holdout, 1);
    let dir = scratch("reproducible");
    let a = run_toml(&text, 2, &dir.join("a"));
    let b = run_toml(&text, 2, &dir.join("b"));
    assert_eq!(a.parameter_checksum, b.parameter_checksum);
    assert_eq!(a.eval, b.eval);
    let c = run_toml(&text.replace("seed = 42", "seed = 43"), 2, &dir.join("c"));
    assert_ne!(a.parameter_checksum, c.parameter_checksum);
}

#[test]
fn rows_with_null_features_are_dead_lettered_with_their_origin() {
    let (train, holdout) = tabular();
    let text = pipeline_toml(train, holdout, 1)
        .replace("sql = \"SELECT * FROM input WHERE f3 IS NOT NULL\"\n", "");
    let dir = scratch("dead-letters");
    let s = run_toml(&text, 2, &dir);
    assert_eq!(s.rows_filtered, 0);
    assert!(
        (300..900).contains(&s.rows_dead_lettered),
        "{}",
        s.rows_dead_lettered
    );
    let lines = std::fs::read_to_string(dir.join("run/dead_letters.jsonl")).unwrap();
    assert_eq!(lines.lines().count() as u64, s.rows_dead_lettered);
    let first: Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
    assert!(first["reason"].as_str().unwrap().contains("f3"), "{first}");
    assert!(
        first["origin"]
            .as_str()
            .unwrap()
            .contains(".parquet row group"),
        "{first}"
    );
    assert!(
        first["record"].as_str().unwrap().contains("\"cat\""),
        "{first}"
    );
    assert_eq!(s.train_rows + s.eval_rows + s.rows_dead_lettered, 80_000);
}

#[test]
fn linear_regression_recovers_a_sql_derived_target() {
    let (train, holdout) = tabular();
    let text = format!(
        r#"name = "regression"
[ingest]
path = "{}"
[preprocess]
sql = "SELECT f0, f2, cat, 2.0 * f0 - 0.5 * f2 + CASE WHEN cat = 'c0' THEN 3.0 ELSE 0.0 END AS y FROM input"
numeric = ["f0", "f2"]
one_hot = ["cat"]
label = "y"
[train]
task = "regression"
model = {{ kind = "linear" }}
optimizer = {{ kind = "sgd", momentum = 0.9 }}
lr = 0.01
batch_size = 128
epochs = 2
[evaluate]
split = 0.2
"#,
        train.display()
    );
    let _ = holdout;
    let dir = scratch("regression");
    let s = run_toml(&text, 2, &dir);
    let eval = serde_json::to_value(s.eval.as_ref().unwrap()).unwrap();
    let (rmse, r2, mae) = (
        eval["rmse"].as_f64().unwrap(),
        eval["r2"].as_f64().unwrap(),
        eval["mae"].as_f64().unwrap(),
    );
    assert!(r2 > 0.999, "r2 {r2}");
    assert!(rmse < 0.05 && mae < 0.05, "rmse {rmse} mae {mae}");
    // The split holds out about 20% of the rows, the same ones on any worker count.
    assert!((11_000..13_000).contains(&s.eval_rows), "{}", s.eval_rows);
    assert_eq!(s.train_rows + s.eval_rows, 60_000);
}

#[test]
fn a_cosine_schedule_logs_its_rate_and_trains_alike_on_one_and_two_workers() {
    let (train, holdout) = tabular();
    let text = pipeline_toml(train, holdout, 2).replace(
        "lr = 0.002",
        "lr = 0.002\nlr_schedule = { kind = \"cosine\", warmup_steps = 20, min_lr = 0.0001 }\nlog_every = 5",
    );
    let dir = scratch("lr-schedule");
    let one = run_toml(&text, 1, &dir.join("one"));
    let two = run_toml(&text, 2, &dir.join("two"));
    // The same batches at the same rates: the same model up to the order of the sums.
    assert_eq!(one.steps, two.steps);
    assert!(accuracy(&two) > 0.8, "{:?}", two.eval);
    assert!((accuracy(&one) - accuracy(&two)).abs() < 0.005);
    // The train lines carry the rate of their step: warmup, the top, then down to the floor.
    let lines = std::fs::read_to_string(dir.join("two/run/metrics.jsonl")).unwrap();
    let rates: Vec<(u64, f64)> = lines
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["kind"] == "train")
        .map(|v| (v["step"].as_u64().unwrap(), v["lr"].as_f64().unwrap()))
        .collect();
    let (first, last) = (rates[0], rates[rates.len() - 1]);
    let near = |(step, lr): (u64, f64), (s, l): (u64, f64)| step == s && (lr - l).abs() < 1e-12;
    assert!(near(first, (5, 0.0005)), "{rates:?}");
    assert!(rates.iter().any(|&r| near(r, (20, 0.002))), "{rates:?}");
    assert_eq!(last.0, two.steps, "{rates:?}");
    assert!(last.1 >= 0.0001 && last.1 < 0.0002, "{rates:?}");
    assert!(rates.windows(2).all(|w| w[0].0 < 20 || w[1].1 <= w[0].1));
    // Without a schedule the lines have no rate.
    let plain = run_toml(&pipeline_toml(train, holdout, 1), 1, &dir.join("plain"));
    assert!(plain.steps > 0);
    let lines = std::fs::read_to_string(dir.join("plain/run/metrics.jsonl")).unwrap();
    assert!(lines.contains("\"kind\":\"train\"") && !lines.contains("\"lr\""));
}
