//! User steps over Arrow batches around the preprocess SQL: a registered map before the SQL makes
//! a feature, a registered filter after it drops rows; training sees exactly what they keep, the
//! bundle records them, and the server applies the same steps to raw requests (its answers equal
//! the in-process predictions; a row the filter drops is a 400 naming the step). An unregistered
//! step is an error before work; a bundle using one this binary lacks does not load.

use std::sync::{Arc, Once};

use arrow::array::{Array, ArrayRef, BooleanArray, Float64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use millrace::Step;
use millrace::connectors::parquet::{ParquetDataset, ScanOptions};
use millrace::ml::bundle::{ModelBundle, Predictor};
use millrace::operators::preprocess::{SqlPlan, SqlRunner, StepNames};
use millrace::operators::serve::{ModelRegistry, ServeOptions};
use millrace::prelude::*;
use serde_json::{Value, json};

use crate::common::{edited_bundle, pipeline_toml, scratch, tabular};
use crate::quickstart::try_run_toml;
use crate::serve_harness::{Server, close, one_model, post_json, probabilities};

/// `f0` as a Float64 array, whatever its float type.
fn float_column(batch: &RecordBatch, name: &str) -> Result<Float64Array, String> {
    let column = batch
        .column_by_name(name)
        .ok_or_else(|| format!("no column `{name}`"))?;
    let cast = arrow::compute::cast(column, &DataType::Float64).map_err(|e| e.to_string())?;
    Ok(cast
        .as_any()
        .downcast_ref::<Float64Array>()
        .cloned()
        .ok_or("not numeric")?)
}

/// Adds `f0_clip`: `f0` (mean -8, sd 1) clamped to [-10, -6].
fn clip_f0(batch: &RecordBatch) -> Result<RecordBatch, String> {
    let f0 = float_column(batch, "f0")?;
    let clipped: Float64Array = f0.iter().map(|v| v.map(|v| v.clamp(-10.0, -6.0))).collect();
    let mut fields = batch.schema().fields().to_vec();
    fields.push(Arc::new(Field::new("f0_clip", DataType::Float64, true)));
    let mut columns = batch.columns().to_vec();
    columns.push(Arc::new(clipped) as ArrayRef);
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(|e| e.to_string())
}

/// Keeps rows whose `f2` (mean -6, sd 3) is above -12: drops ~2%.
fn f2_above(batch: &RecordBatch) -> Result<BooleanArray, String> {
    Ok(float_column(batch, "f2")?
        .iter()
        .map(|v| v.map(|v| v > -12.0))
        .collect())
}

fn register() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        millrace::App::new()
            .step("it_clip_f0", Step::map(clip_f0).reads(&["f0"]))
            .step("it_f2_above", Step::filter(f2_above).reads(&["f2"]))
            .register()
            .unwrap();
    });
}

const STANDARDIZE: &str = r#"standardize = ["f0", "#;

fn pipeline() -> String {
    let (train, holdout) = tabular();
    let text = pipeline_toml(train, holdout, 1);
    assert!(text.contains(STANDARDIZE));
    text.replace(
        STANDARDIZE,
        r#"steps_before_sql = ["it_clip_f0"]
steps_after_sql = ["it_f2_above"]
standardize = ["f0_clip", "#,
    )
}

/// Rows of `path` the pipeline keeps (f3 not null, f2 > -12), and the first `limit` of them.
fn kept_rows(path: &std::path::Path, limit: usize) -> (u64, RecordBatch) {
    let dataset = ParquetDataset::open_path(path).unwrap();
    let mut kept = 0u64;
    let mut first = Vec::new();
    for unit in dataset.plan(1).remove(0) {
        let options = ScanOptions {
            projection: None,
            batch_size: 8192,
        };
        for item in dataset.read_unit(&unit, &options).unwrap() {
            let (_, batch) = item.unwrap();
            let f3 = arrow::compute::is_not_null(batch.column_by_name("f3").unwrap()).unwrap();
            let f2 = f2_above(&batch).unwrap();
            // A null flag keeps nothing: `filter` drops rows whose flag is null.
            let keep = arrow::compute::and(&f3, &f2).unwrap();
            let batch = arrow::compute::filter_record_batch(&batch, &keep).unwrap();
            kept += batch.num_rows() as u64;
            first.push(batch);
        }
    }
    let all = arrow::compute::concat_batches(&first[0].schema(), &first).unwrap();
    (kept, all.slice(0, limit))
}

/// The v2 request of the raw columns the bundle reads, for `rows`.
fn v2_request(bundle: &ModelBundle, rows: &RecordBatch) -> Value {
    let schema =
        millrace::operators::serve::schema_from_json(&bundle.meta.extra["input_schema"]).unwrap();
    let inputs: Vec<Value> = schema
        .fields()
        .iter()
        .map(|field| {
            let column = rows.column_by_name(field.name()).unwrap();
            let values: Vec<Value> = (0..rows.num_rows())
                .map(|r| millrace::connectors::inspect::json_value(column.as_ref(), r))
                .collect();
            let datatype = millrace::operators::serve::v2::datatype_of(field.data_type()).unwrap();
            json!({"name": field.name(), "shape": [rows.num_rows()], "datatype": datatype, "data": values})
        })
        .collect();
    json!({"inputs": inputs})
}

#[test]
fn steps_around_the_sql_train_and_serve_the_same_rows() {
    register();
    let dir = scratch("steps-train");
    let summary = try_run_toml(&pipeline(), 1, &dir).unwrap();
    let (train, holdout) = tabular();
    let (train_kept, _) = kept_rows(train, 1);
    let (holdout_kept, rows) = kept_rows(holdout, 60);
    // Training and evaluation saw exactly the rows the SQL and the filter keep.
    assert_eq!(
        summary.rows_read + summary.eval_rows_read - summary.rows_filtered,
        train_kept + holdout_kept
    );
    assert!(summary.rows_filtered > 0);
    assert_eq!(summary.eval_rows, holdout_kept);
    let eval = serde_json::to_value(summary.eval.as_ref().unwrap()).unwrap();
    let accuracy = eval["accuracy"].as_f64().unwrap();
    assert!(accuracy > 0.8, "accuracy {accuracy}");

    let model_dir = dir.join("run/model");
    let bundle = ModelBundle::load(&model_dir).unwrap();
    assert_eq!(bundle.meta.extra["steps_before_sql"], json!(["it_clip_f0"]));
    assert_eq!(bundle.meta.extra["steps_after_sql"], json!(["it_f2_above"]));
    // Requests carry only what the steps and the query read: not the label.
    let input_schema =
        millrace::operators::serve::schema_from_json(&bundle.meta.extra["input_schema"]).unwrap();
    assert!(input_schema.field_with_name("f0").is_ok());
    assert!(input_schema.field_with_name("label").is_err());

    // In process: the same steps, query and encoding on the raw rows.
    let steps = StepNames {
        before: vec!["it_clip_f0".into()],
        after: vec!["it_f2_above".into()],
    };
    let plan = SqlPlan::plan_steps(
        bundle.meta.transform_sql.as_deref(),
        &steps,
        &rows.schema(),
        &bundle.preprocess.required_columns(false),
    )
    .unwrap();
    let prepared = SqlRunner::new(plan).unwrap().apply(rows.clone()).unwrap();
    assert_eq!(prepared.num_rows(), rows.num_rows());
    let features = bundle.preprocess.transform(&prepared, false).unwrap();
    let expected = Predictor::new(&bundle)
        .unwrap()
        .predict(&features.x, features.rows)
        .unwrap();

    let options = ServeOptions::default();
    let server = Server::start(one_model("steps", &model_dir, &options), options);
    let reply = post_json(
        server.addr,
        "/v2/models/steps/infer",
        &v2_request(&bundle, &rows),
    );
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let got = probabilities(&reply.json());
    assert_eq!(got.len(), expected.len());
    for (g, w) in got.iter().zip(&expected) {
        assert!(close(*g, *w), "served {g}, in process {w}");
    }
    // The clip is applied: a huge f0 scores as f0 = 1.5 does.
    let mut columns = rows.slice(0, 2).columns().to_vec();
    let f0 = rows.schema().index_of("f0").unwrap();
    let f0_type = rows.schema().field(f0).data_type().clone();
    let big = arrow::compute::cast(&Float64Array::from(vec![-6.0, 1_000.0]), &f0_type).unwrap();
    columns[f0] = big;
    let pair = RecordBatch::try_new(rows.schema(), columns).unwrap();
    let mut same_row = pair.slice(0, 1).columns().to_vec();
    same_row[f0] = pair.column(f0).slice(1, 1);
    let same = RecordBatch::try_new(rows.schema(), same_row).unwrap();
    let both = arrow::compute::concat_batches(&rows.schema(), &[pair.slice(0, 1), same]).unwrap();
    let reply = post_json(
        server.addr,
        "/v2/models/steps/infer",
        &v2_request(&bundle, &both),
    );
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let p = probabilities(&reply.json());
    assert_eq!(p[0..2], p[2..4], "f0 = 1000 is clipped to -6");
    // A row the filter drops is refused, naming the step.
    let mut columns = rows.slice(0, 1).columns().to_vec();
    let f2 = rows.schema().index_of("f2").unwrap();
    let f2_type = rows.schema().field(f2).data_type().clone();
    columns[f2] = arrow::compute::cast(&Float64Array::from(vec![-20.0]), &f2_type).unwrap();
    let low = RecordBatch::try_new(rows.schema(), columns).unwrap();
    let reply = post_json(
        server.addr,
        "/v2/models/steps/infer",
        &v2_request(&bundle, &low),
    );
    assert_eq!(reply.status, 400);
    assert!(
        String::from_utf8_lossy(&reply.body).contains("it_f2_above"),
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    drop(server);

    // A bundle using a step this binary lacks does not load, and says which.
    let copy = edited_bundle(
        &model_dir,
        "steps-missing-bundle",
        "\"it_f2_above\"",
        "\"it_not_registered\"",
    );
    let registry = ModelRegistry::new(ServeOptions::default().batching);
    let err = registry.load_dir(Some("m"), &copy).unwrap_err().to_string();
    assert!(
        err.contains("`it_not_registered`")
            && err.contains("App::new().step(\"it_not_registered\""),
        "{err}"
    );
}

#[test]
fn the_dsl_places_steps_around_its_sql_as_the_file_does() {
    register();
    let (train, holdout) = tabular();
    let spec = Pipeline::new("it")
        .ingest_parquet(train)
        .map_batches("it_dsl_clip", clip_f0)
        .sql("SELECT * FROM input WHERE f3 IS NOT NULL")
        .step("it_f2_above")
        .standardize(["f0_clip", "f1"])
        .label("label")
        .train(Train::logistic())
        .evaluate_on(holdout)
        .build()
        .unwrap();
    assert_eq!(spec.preprocess.steps_before_sql, ["it_dsl_clip"]);
    assert_eq!(spec.preprocess.steps_after_sql, ["it_f2_above"]);
    // Building registered the closure: the file's key can name it now.
    let text = pipeline().replace("\"it_clip_f0\"", "\"it_dsl_clip\"");
    let from_file = millrace::pipeline_file::parse(&text, std::path::Path::new("it.toml")).unwrap();
    assert_eq!(from_file.preprocess.steps(), spec.preprocess.steps());
    let plan = millrace::prelude::plan(from_file, None);
    assert!(plan.is_ok(), "{:?}", plan.err());
}

#[test]
fn an_unregistered_or_failing_step_is_an_error_before_work() {
    register();
    let dir = scratch("steps-unknown");
    let text = pipeline().replace("\"it_f2_above\"", "\"it_no_such_step\"");
    let err = try_run_toml(&text, 1, &dir).unwrap_err();
    assert!(
        err.contains("steps_after_sql")
            && err.contains("`it_no_such_step` is not a registered step")
            && err.contains("it_clip_f0"),
        "{err}"
    );
    assert!(!dir.join("run/metrics.jsonl").exists());
    // A step whose output lacks what the pipeline uses names the steps.
    let text = pipeline().replace(
        "standardize = [\"f0_clip\", ",
        "standardize = [\"f0_nope\", ",
    );
    let err = try_run_toml(&text, 1, &scratch("steps-missing-column")).unwrap_err();
    assert!(err.contains("f0_nope"), "{err}");
}
