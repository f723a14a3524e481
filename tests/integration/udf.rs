//! User functions in the preprocess SQL: registered Rust functions make features in training, the
//! bundle records their names, and the server runs the same functions on raw requests (its answers
//! equal the in-process predictions); an unregistered function is an error before any work, and a
//! bundle that calls one fails to load with its name.

use std::sync::Once;

use millrace::Udf;
use millrace::ml::bundle::ModelBundle;
use millrace::operators::serve::{ModelRegistry, ServeOptions};
use serde_json::json;

use crate::common::{edited_bundle, pipeline_toml, scratch, tabular};
use crate::quickstart::try_run_toml;
use crate::serve_harness::assert_v2_answers_in_process;

pub(super) fn register() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        millrace::App::new()
            .udf("it_log1p", Udf::float(|x| x.abs().ln_1p()))
            .udf(
                "it_band",
                Udf::float_to_string(|x| {
                    match x {
                        x if x < -1.0 => "low",
                        x if x < 1.0 => "mid",
                        _ => "high",
                    }
                    .to_string()
                }),
            )
            .register()
            .unwrap();
    });
}

const SQL: &str = r#"sql = "SELECT * FROM input WHERE f3 IS NOT NULL""#;

/// The tabular pipeline with `f0` as `it_log1p(f0)` and `f1` as a one-hot `it_band(f1)`.
fn pipeline() -> String {
    let (train, holdout) = tabular();
    let text = pipeline_toml(train, holdout, 1);
    assert!(text.contains(SQL) && text.contains(r#"standardize = ["f0", "f1", "#));
    text.replace(
        SQL,
        r#"sql = "SELECT *, it_log1p(f0) AS f0_log, it_band(f1) AS f1_band FROM input WHERE f3 IS NOT NULL""#,
    )
    .replace(
        r#"standardize = ["f0", "f1", "#,
        r#"standardize = ["f0_log", "#,
    )
    .replace(r#"one_hot = ["cat"]"#, r#"one_hot = ["cat", "f1_band"]"#)
}

#[test]
fn registered_functions_make_features_and_the_server_runs_them_on_requests() {
    register();
    let dir = scratch("udf-train");
    let summary = try_run_toml(&pipeline(), 1, &dir).unwrap();
    let eval = serde_json::to_value(summary.eval.as_ref().unwrap()).unwrap();
    let accuracy = eval["accuracy"].as_f64().unwrap();
    assert!(accuracy > 0.8, "accuracy {accuracy}");

    let model_dir = dir.join("run/model");
    let bundle = ModelBundle::load(&model_dir).unwrap();
    assert_eq!(bundle.meta.extra["udfs"], json!(["it_band", "it_log1p"]));
    let vocabulary = bundle.preprocess.vocabulary("f1_band").unwrap();
    let mut bands = vocabulary.to_vec();
    bands.sort();
    assert_eq!(bands, ["high", "low", "mid"]);

    // The server runs the functions on raw rows: its answers are the in-process predictions.
    let (_, holdout) = tabular();
    assert_v2_answers_in_process("udf", &model_dir, holdout);

    // A bundle whose query calls a function this binary lacks does not load, and says which.
    let copy = edited_bundle(
        &model_dir,
        "udf-missing-bundle",
        "\"it_log1p\"",
        "\"it_not_registered\"",
    );
    let registry = ModelRegistry::new(ServeOptions::default().batching);
    let err = registry.load_dir(Some("m"), &copy).unwrap_err().to_string();
    assert!(
        err.contains("`it_not_registered`")
            && err.contains("App::new().udf(\"it_not_registered\"")
            && !err.contains("`it_band`"),
        "{err}"
    );
}

#[test]
fn an_unregistered_function_in_the_sql_is_an_error_before_work() {
    register();
    let text = pipeline().replace("it_log1p(f0)", "log_amount(f0)");
    let dir = scratch("udf-unknown");
    let err = try_run_toml(&text, 1, &dir).unwrap_err();
    assert!(
        err.contains("log_amount")
            && err.contains("App::new().udf(")
            && err.contains("it_band, it_log1p"),
        "{err}"
    );
    assert!(!dir.join("run/metrics.jsonl").exists());
}
