//! A graph, not a fixed pipeline: Parquet → a registered Rust step → SQL calling registered Rust
//! functions → two train-steps (an MLP and a logistic regression) on the rows read once → both
//! evaluated → both served by one server in this binary.
//!
//!     cargo run --release --example graph
//!
//! It fails loudly unless:
//! 1. `rows_read` equals the dataset's rows (one read feeds both branches);
//! 2. both models are evaluated (the MLP beats the logistic regression);
//! 3. `/v2/models/{mlp,logistic}/infer` on raw records (the server applies the step and the
//!    functions) equals each model's in-process predictions within 1e-6.

#[path = "common/http.rs"]
mod http;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, ensure};
use arrow::array::{Array, ArrayRef, Float64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use millrace::ml::{ModelBundle, Predictor};
use millrace::operators::preprocess::SqlRunner;
use millrace::operators::serve::{Bound, ModelRegistry, ServeOptions, bundle_sql, serve_with};
use millrace::prelude::*;
use millrace::{Step, Udf};
use serde_json::{Value, json};

const TRAIN_ROWS: u64 = 60_000;

/// `f0` (mean -8, sd 1) clipped to [-10, -6] as the new column `f0_clip`: a batch-level step.
fn clip_f0(batch: &RecordBatch) -> Result<RecordBatch, String> {
    let f0 = batch.column_by_name("f0").ok_or("no column f0")?;
    let f0 = arrow::compute::cast(f0, &DataType::Float64).map_err(|e| e.to_string())?;
    let f0 = f0
        .as_any()
        .downcast_ref::<Float64Array>()
        .ok_or("f0 is not numeric")?;
    let clipped: Float64Array = f0.iter().map(|v| v.map(|v| v.clamp(-10.0, -6.0))).collect();
    let mut fields = batch.schema().fields().to_vec();
    fields.push(Arc::new(Field::new("f0_clip", DataType::Float64, true)));
    let mut columns = batch.columns().to_vec();
    columns.push(Arc::new(clipped) as ArrayRef);
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(|e| e.to_string())
}

fn main() -> anyhow::Result<()> {
    millrace::App::new()
        .step("clip_f0", Step::map(clip_f0).reads(&["f0"]))
        .udf("log_spread", Udf::float(|x| (x + 6.0).abs().ln_1p()))
        .udf(
            "bucket",
            Udf::float_to_string(|x| format!("b{}", ((x + 6.0) / 2.0).floor().clamp(-3.0, 3.0))),
        )
        .register()?;
    let data = Path::new("data/graph");
    if !data.join("train").exists() {
        millrace::data::generate_tabular(&data.join("train"), TRAIN_ROWS, 2, 1, false)?;
        millrace::data::generate_tabular(&data.join("holdout"), 10_000, 1, 2, true)?;
    }
    let run_dir = Path::new("data/graph/run");
    let _ = std::fs::remove_dir_all(run_dir);
    let report = Pipeline::new("graph")
        .ingest_parquet(data.join("train"))
        .step("clip_f0")
        .sql(
            "SELECT *, log_spread(f2) AS f2_log, bucket(f2) AS f2_bucket \
             FROM input WHERE f3 IS NOT NULL",
        )
        .standardize(
            ["f0_clip", "f1", "f2_log"]
                .into_iter()
                .map(String::from)
                .chain((3..16).map(|i| format!("f{i}"))),
        )
        .one_hot(["cat", "f2_bucket"])
        .label("label")
        .train(
            Train::mlp([64, 64])
                .adam()
                .lr(2e-3)
                .batch_size(256)
                .epochs(2)
                .seed(42),
        )
        .branch(
            "logistic",
            Train::logistic()
                .adam()
                .lr(2e-2)
                .batch_size(256)
                .epochs(2)
                .seed(7),
        )
        .evaluate_on(data.join("holdout"))
        .workers(2)
        .run_dir(run_dir)
        .run()?;
    let s = &report.summary;

    // 1. One read feeds both branches.
    ensure!(
        s.rows_read == TRAIN_ROWS,
        "rows_read {} but the dataset has {TRAIN_ROWS} rows",
        s.rows_read
    );
    // 2. Both evaluated.
    let accuracy = |eval: Option<&millrace::ml::metrics::EvalMetrics>| -> anyhow::Result<f64> {
        let eval = serde_json::to_value(eval.context("not evaluated")?)?;
        eval["accuracy"].as_f64().context("no accuracy")
    };
    let mlp = accuracy(s.eval.as_ref())?;
    let branch = s.branches.first().context("no branch in the summary")?;
    let logistic = accuracy(branch.eval.as_ref())?;
    println!(
        "1. read {} rows once; 2. holdout accuracy: mlp {mlp:.4}, logistic {logistic:.4}",
        s.rows_read
    );
    ensure!(
        mlp > 0.8 && mlp > logistic,
        "mlp {mlp}, logistic {logistic}"
    );

    // 3. One server in this binary serves both; it applies the step and the functions.
    let models = [
        ("mlp", report.run_dir.join("model")),
        ("logistic", report.run_dir.join("branches/logistic/model")),
    ];
    let options = ServeOptions::default();
    let registry = ModelRegistry::new(options.batching.clone());
    for (name, dir) in &models {
        registry.load_dir(Some(name), dir)?;
    }
    let (bound_tx, bound_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new()?;
        rt.block_on(serve_with(
            registry,
            "127.0.0.1:0".parse()?,
            options,
            move |bound: Bound| {
                let _ = bound_tx.send(bound.http);
            },
            async move {
                let _ = stop_rx.await;
            },
        ))?;
        anyhow::Ok(())
    });
    let addr = bound_rx.recv_timeout(std::time::Duration::from_secs(30))?;
    let rows = holdout_rows(&data.join("holdout"), 64)?;
    for (name, dir) in &models {
        let worst = compare(addr, name, dir, &rows)?;
        println!(
            "3. /v2/models/{name}/infer on {} raw rows: largest difference from in process {worst:e}",
            rows.num_rows()
        );
    }
    let _ = stop_tx.send(());
    server
        .join()
        .map_err(|_| anyhow::anyhow!("the server thread panicked"))??;
    Ok(())
}

/// The first `n` holdout rows with every feature present.
fn holdout_rows(holdout: &Path, n: usize) -> anyhow::Result<RecordBatch> {
    let file = std::fs::read_dir(holdout)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "parquet"))
        .context("no holdout file")?;
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        std::fs::File::open(&file)?,
    )?
    .with_batch_size(4 * n)
    .build()?;
    let batch = reader.into_iter().next().context("empty holdout")??;
    let keep = arrow::compute::is_not_null(batch.column_by_name("f3").context("f3")?)?;
    let batch = arrow::compute::filter_record_batch(&batch, &keep)?;
    Ok(batch.slice(0, n.min(batch.num_rows())))
}

/// Serves `rows` to model `name` and compares with the bundle in `dir` run in process (its SQL
/// and step, encoding and forward pass); returns the largest difference.
fn compare(addr: SocketAddr, name: &str, dir: &Path, rows: &RecordBatch) -> anyhow::Result<f64> {
    let bundle = ModelBundle::load(dir)?;
    let (input_schema, plan) = bundle_sql(&bundle, name)?;
    let prepared = SqlRunner::new(plan.context("the bundle has no SQL")?)?.apply(rows.clone());
    let prepared = prepared.map_err(anyhow::Error::msg)?;
    let (_, want) = Predictor::new(&bundle)?.predict_batch(&prepared)?;
    // The request: the raw columns the bundle reads, as the client has them.
    let mut inputs = Vec::new();
    for field in input_schema.fields() {
        let column = rows.column_by_name(field.name()).context("column")?;
        let data: Vec<Value> = (0..rows.num_rows())
            .map(|r| millrace::connectors::inspect::json_value(column.as_ref(), r))
            .collect();
        let datatype = millrace::operators::serve::v2::datatype_of(field.data_type())
            .context("a column type v2 cannot send")?;
        inputs.push(json!({"name": field.name(), "datatype": datatype,
                           "shape": [rows.num_rows()], "data": data}));
    }
    let body = json!({ "inputs": inputs }).to_string();
    let (code, answer) = http::http(addr, "POST", &format!("/v2/models/{name}/infer"), &body)?;
    ensure!(code == 200, "{name}: infer answered {code}: {answer}");
    let got = http::v2_probabilities(&answer)?;
    ensure!(
        got.len() == want.len() && !want.is_empty(),
        "{name}: {} values served, {} predicted",
        got.len(),
        want.len()
    );
    let worst = http::worst_difference(&got, &want);
    ensure!(
        worst <= 1e-6,
        "{name}: served and in-process differ by {worst}"
    );
    Ok(worst)
}
