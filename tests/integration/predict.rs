//! `millrace predict`: a dataset scored with a trained model into Spark-readable Parquet. Every
//! row is either written (with its carried columns) or a dead letter with the reason; the answers
//! equal the server's `/v2/models/{name}/infer` for the same rows, bit for bit; 1 and 2 workers
//! write the same rows; local and S3 in and out; bad inputs are refused before any work.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use arrow::array::{Array, AsArray, Float32Array, Float64Array, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Float32Type, Int64Type, Schema};
use millrace::connectors::parquet::{DatasetOptions, ParquetDataset, ScanOptions};
use millrace::connectors::storage::StorageOptions;
use millrace::operators::batch_job::NoProgress;
use millrace::operators::predict::{PredictPlan, PredictSpec, PredictSummary, run};
use millrace::operators::serve::ServeOptions;
use millrace::operators::spec::OutputMode;
use serde_json::Value;

use crate::common::{scratch, tabular};
use crate::serve_harness::{Server, fixture, one_model, post_json, v2_request};

/// Rows of the scoring input whose `f0` is set to null: the encoding rejects them.
const NULL_F0: [i64; 3] = [5, 777, 15_000];

/// The holdout rows with an `id` column (the row number) and `f0` null in [`NULL_F0`], in two
/// files; returned with the rows as one batch.
fn scoring_input() -> &'static (PathBuf, RecordBatch) {
    static INPUT: std::sync::OnceLock<(PathBuf, RecordBatch)> = std::sync::OnceLock::new();
    INPUT.get_or_init(|| {
        let (_, holdout) = tabular();
        let rows = read_all(&ParquetDataset::open_path(holdout).unwrap());
        let n = rows.num_rows();
        let id = Int64Array::from_iter_values(0..n as i64);
        let f0 = rows
            .column_by_name("f0")
            .unwrap()
            .as_primitive::<Float32Type>();
        let f0: Float32Array = (0..n)
            .map(|i| (!NULL_F0.contains(&(i as i64))).then(|| f0.value(i)))
            .collect();
        let mut fields = vec![Field::new("id", DataType::Int64, false)];
        let mut columns: Vec<Arc<dyn Array>> = vec![Arc::new(id)];
        for (field, column) in rows.schema().fields().iter().zip(rows.columns()) {
            fields.push(field.as_ref().clone().with_nullable(true));
            columns.push(match field.name().as_str() {
                "f0" => Arc::new(f0.clone()),
                _ => Arc::clone(column),
            });
        }
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
        let dir = scratch("predict-input");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let half = n / 2;
        for (i, part) in [batch.slice(0, half), batch.slice(half, n - half)]
            .iter()
            .enumerate()
        {
            let file = std::fs::File::create(dir.join(format!("part-{i}.parquet"))).unwrap();
            let mut writer =
                parquet::arrow::ArrowWriter::try_new(file, part.schema(), None).unwrap();
            writer.write(part).unwrap();
            writer.close().unwrap();
        }
        (dir, batch)
    })
}

fn read_all(dataset: &ParquetDataset) -> RecordBatch {
    let mut batches = Vec::new();
    for unit in dataset.plan(1).remove(0) {
        let options = ScanOptions {
            projection: None,
            batch_size: 65_536,
        };
        for item in dataset.read_unit(&unit, &options).unwrap() {
            batches.push(item.unwrap().1);
        }
    }
    arrow::compute::concat_batches(&dataset.schema(), &batches).unwrap()
}

fn spec(input: &str, output: &Path, workers: usize) -> PredictSpec {
    let mut spec = PredictSpec::new(&fixture().model_dir, input, &output.to_string_lossy());
    spec.columns = vec!["id".into(), "cat".into()];
    spec.workers = workers;
    spec.batch_rows = 4096;
    spec
}

fn predict(spec: PredictSpec) -> Result<PredictSummary, String> {
    let plan = PredictPlan::new(spec).map_err(|e| e.to_string())?;
    run(plan, Arc::new(NoProgress), std::time::Instant::now()).map_err(|e| e.to_string())
}

/// id → (class, probabilities) of a predictions dataset.
fn scored(dataset: &ParquetDataset) -> BTreeMap<i64, (i64, Vec<f32>)> {
    let rows = read_all(dataset);
    let id = rows
        .column_by_name("id")
        .unwrap()
        .as_primitive::<Int64Type>();
    let class = rows
        .column_by_name("class")
        .unwrap()
        .as_primitive::<Int64Type>();
    let p = rows
        .column_by_name("probabilities")
        .unwrap()
        .as_list::<i32>();
    (0..rows.num_rows())
        .map(|i| {
            let values = p.value(i);
            let values = values.as_primitive::<Float32Type>().values().to_vec();
            (id.value(i), (class.value(i), values))
        })
        .collect()
}

/// The dead letters of a run: (row id, reason).
fn dead_letters(summary: &PredictSummary) -> Vec<(i64, String)> {
    let Some(url) = &summary.dead_letters else {
        return Vec::new();
    };
    let text = std::fs::read_to_string(url).unwrap();
    let mut letters: Vec<(i64, String)> = text
        .lines()
        .map(|line| {
            let letter: Value = serde_json::from_str(line).unwrap();
            let record: Value = serde_json::from_str(letter["record"].as_str().unwrap()).unwrap();
            (
                record["id"].as_i64().unwrap(),
                letter["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    letters.sort();
    letters
}

#[test]
fn predict_scores_every_row_as_the_server_answers_it() {
    let (input, rows) = scoring_input();
    let input = input.to_string_lossy().to_string();
    let out = scratch("predict-out");
    let _ = std::fs::remove_dir_all(&out);
    let two = predict(spec(&input, &out.join("two"), 2)).unwrap();
    let n = rows.num_rows() as u64;
    assert_eq!(two.rows_read, n);
    assert_eq!(two.rows_written + two.dead_letter_rows, n);
    assert!(out.join("two/_SUCCESS").exists());
    assert!(two.files >= 2, "each worker writes its own part files");

    // Every row is written or a dead letter with its reason: f3 nulls are filtered by the
    // model's SQL, f0 nulls rejected by the encoding.
    let f3 = rows.column_by_name("f3").unwrap();
    let filtered: Vec<i64> = (0..rows.num_rows())
        .filter(|&i| f3.is_null(i))
        .map(|i| i as i64)
        .collect();
    assert!(!filtered.is_empty());
    let letters = dead_letters(&two);
    assert_eq!(letters.len() as u64, two.dead_letter_rows);
    for (id, reason) in &letters {
        if filtered.contains(id) {
            assert!(
                reason.contains("filtered out by the model's preprocess SQL"),
                "{reason}"
            );
        } else {
            assert!(NULL_F0.contains(id), "row {id} is a dead letter: {reason}");
            assert!(reason.contains("f0"), "{reason}");
        }
    }
    let rejected = NULL_F0.iter().filter(|i| !filtered.contains(i)).count();
    assert_eq!(letters.len(), filtered.len() + rejected);
    let written = ParquetDataset::open_path(out.join("two")).unwrap();
    let two_rows = scored(&written);
    assert_eq!(two_rows.len() as u64, two.rows_written);
    assert!(letters.iter().all(|(id, _)| !two_rows.contains_key(id)));
    // The carried `cat` is the input's.
    let all = read_all(&written);
    let (ids, cats) = (
        all.column_by_name("id")
            .unwrap()
            .as_primitive::<Int64Type>(),
        all.column_by_name("cat").unwrap().as_string::<i32>(),
    );
    let input_cat = rows.column_by_name("cat").unwrap().as_string::<i32>();
    for i in 0..all.num_rows() {
        assert_eq!(cats.value(i), input_cat.value(ids.value(i) as usize));
    }

    // One worker, partitioned by the carried `cat`: the same rows, bit for bit.
    let mut one_spec = spec(&input, &out.join("one"), 1);
    one_spec.partition_by = vec!["cat".into()];
    let one = predict(one_spec).unwrap();
    assert_eq!(one.rows_written, two.rows_written);
    assert!(out.join("one/cat=c0").is_dir(), "partition directories");
    assert_eq!(
        scored(&ParquetDataset::open_path(out.join("one")).unwrap()),
        two_rows
    );

    // The server answers the same rows with the same classes and probabilities, exactly.
    let server = Server::start(
        one_model("predicted", &fixture().model_dir, &ServeOptions::default()),
        ServeOptions::default(),
    );
    let ids: Vec<i64> = two_rows.keys().copied().take(64).collect();
    let indices = arrow::array::UInt32Array::from_iter_values(ids.iter().map(|&i| i as u32));
    let sample = arrow::compute::take_record_batch(rows, &indices).unwrap();
    let reply = post_json(
        server.addr,
        "/v2/models/predicted/infer",
        &v2_request(&sample, 0..ids.len()),
    );
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let body = reply.json();
    let output = |name: &str| -> Vec<f64> {
        let outputs = body["outputs"].as_array().unwrap();
        let o = outputs.iter().find(|o| o["name"] == name).unwrap();
        o["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect()
    };
    let (classes, probabilities) = (output("class"), output("probabilities"));
    for (k, id) in ids.iter().enumerate() {
        let (class, p) = &two_rows[id];
        assert_eq!(classes[k] as i64, *class, "row {id}");
        let served: Vec<f32> = probabilities[2 * k..2 * k + 2]
            .iter()
            .map(|&v| v as f32)
            .collect();
        assert_eq!(&served, p, "row {id}: served vs predict");
    }
}

#[test]
fn predict_refuses_bad_input_before_any_work() {
    let (input, rows) = scoring_input();
    let input = input.to_string_lossy().to_string();
    let out = scratch("predict-refused");
    let _ = std::fs::remove_dir_all(&out);

    // A dataset without a column the model reads: named, nothing written.
    let lacking = scratch("predict-lacking");
    let _ = std::fs::remove_dir_all(&lacking);
    std::fs::create_dir_all(&lacking).unwrap();
    let keep: Vec<usize> = (0..rows.num_columns())
        .filter(|&i| rows.schema().field(i).name() != "f5")
        .collect();
    let part = rows.project(&keep).unwrap().slice(0, 100);
    let file = std::fs::File::create(lacking.join("part-0.parquet")).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, part.schema(), None).unwrap();
    writer.write(&part).unwrap();
    writer.close().unwrap();
    let err = predict(spec(&lacking.to_string_lossy(), &out.join("a"), 2)).unwrap_err();
    assert!(err.contains("`f5`") && err.contains("lacks"), "{err}");
    assert!(!out.join("a").exists());

    // Carried and partition columns must exist.
    let mut bad = spec(&input, &out.join("b"), 2);
    bad.columns = vec!["id".into(), "region".into()];
    let err = predict(bad).unwrap_err();
    assert!(err.contains("no column `region`"), "{err}");
    let mut bad = spec(&input, &out.join("b"), 2);
    bad.partition_by = vec!["ts".into()];
    let err = predict(bad).unwrap_err();
    assert!(err.contains("partition column `ts`"), "{err}");
    assert!(!out.join("b").exists());

    // A location that holds data is refused without --mode overwrite (from the CLI, as a user
    // runs it), then replaced with it.
    std::fs::create_dir_all(out.join("c")).unwrap();
    std::fs::write(out.join("c/old.txt"), "keep me").unwrap();
    let cli = |mode: &str| {
        Command::new(env!("CARGO_BIN_EXE_millrace"))
            .args(["predict", "--model"])
            .arg(&fixture().model_dir)
            .args(["--input", &input, "--output"])
            .arg(out.join("c"))
            .args(["--columns", "id", "--mode", mode, "--json"])
            .output()
            .unwrap()
    };
    let refused = cli("error");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        stderr.contains("already holds data") && stderr.contains("--mode overwrite"),
        "{stderr}"
    );
    assert!(out.join("c/old.txt").exists());
    let replaced = cli("overwrite");
    assert!(
        replaced.status.success(),
        "{}",
        String::from_utf8_lossy(&replaced.stderr)
    );
    let summary: Value = serde_json::from_slice(&replaced.stdout).unwrap();
    assert_eq!(summary["rows_read"], rows.num_rows());
    assert!(!out.join("c/old.txt").exists() && out.join("c/_SUCCESS").exists());

    // A column stored as a double where the model read a float is cast, value for value.
    let wide = scratch("predict-wide");
    let _ = std::fs::remove_dir_all(&wide);
    std::fs::create_dir_all(&wide).unwrap();
    let part = rows.slice(0, 2000);
    let f1 = part
        .column_by_name("f1")
        .unwrap()
        .as_primitive::<Float32Type>();
    let f1: Float64Array = f1.iter().map(|v| v.map(f64::from)).collect();
    let index = part.schema().index_of("f1").unwrap();
    let mut fields: Vec<Field> = part
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields[index] = Field::new("f1", DataType::Float64, true);
    let mut columns = part.columns().to_vec();
    columns[index] = Arc::new(f1);
    let part = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
    let file = std::fs::File::create(wide.join("part-0.parquet")).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, part.schema(), None).unwrap();
    writer.write(&part).unwrap();
    writer.close().unwrap();
    predict(spec(&wide.to_string_lossy(), &out.join("d"), 1)).unwrap();
    predict(spec(&input, &out.join("e"), 1)).unwrap();
    let cast = scored(&ParquetDataset::open_path(out.join("d")).unwrap());
    let plain = scored(&ParquetDataset::open_path(out.join("e")).unwrap());
    assert!(cast.len() > 1900);
    for (id, answer) in &cast {
        assert_eq!(&plain[id], answer, "row {id}");
    }
}

#[test]
fn predict_reads_from_and_writes_to_s3() {
    let Some(s3) = crate::services::s3() else {
        return;
    };
    s3.create_bucket("predict");
    let (input, rows) = scoring_input();
    let options: StorageOptions = s3.options();
    millrace::inspect::copy(&input.to_string_lossy(), "s3://predict/in", &options).unwrap();
    let mut remote = spec("s3://predict/in", Path::new("s3://predict/out"), 2);
    remote.storage = options.clone();
    remote.mode = OutputMode::Overwrite;
    let summary = predict(remote).unwrap();
    assert_eq!(summary.rows_read, rows.num_rows() as u64);
    assert_eq!(summary.output, "s3://predict/out");
    let opened = ParquetDataset::open_with(
        "s3://predict/out",
        &DatasetOptions {
            storage: options,
            wait_for_success: Some(std::time::Duration::from_secs(5)),
            ..DatasetOptions::default()
        },
    )
    .unwrap();
    let out = scratch("predict-s3-local");
    let _ = std::fs::remove_dir_all(&out);
    predict(spec(&input.to_string_lossy(), &out, 2)).unwrap();
    let local = scored(&ParquetDataset::open_path(&out).unwrap());
    assert_eq!(local.len() as u64, summary.rows_written);
    assert_eq!(scored(&opened), local);
}

#[test]
fn predict_scores_a_delta_table_written_by_spark_into_partitions() {
    let table = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/delta/events");
    let dir = scratch("predict-delta");
    let _ = std::fs::remove_dir_all(&dir);
    let pipeline = format!(
        r#"name = "delta-it"
[ingest]
path = "{}"
[preprocess]
sql = "SELECT x, CAST(amount AS DOUBLE) AS amount_d, region, CAST(amount > 1000 AS INT) AS label FROM input"
standardize = ["x", "amount_d"]
one_hot = ["region"]
label = "label"
[train]
model = {{ kind = "logistic" }}
epochs = 2
batch_size = 32
"#,
        table.display()
    );
    crate::quickstart::run_toml(&pipeline, 1, &dir);
    let out = dir.join("scores");
    let mut delta = PredictSpec::new(
        dir.join("run/model"),
        &table.to_string_lossy(),
        &out.to_string_lossy(),
    );
    delta.columns = vec!["id".into(), "region".into()];
    delta.partition_by = vec!["region".into()];
    let summary = predict(delta).unwrap();
    // The latest version's 260 rows; the 73 without a region cannot be one-hot encoded.
    let source = read_all(&ParquetDataset::open_path(&table).unwrap());
    assert_eq!(summary.rows_read, source.num_rows() as u64);
    let no_region = source.column_by_name("region").unwrap().null_count() as u64;
    assert_eq!(
        (summary.dead_letter_rows, summary.rows_written),
        (no_region, 260 - no_region)
    );
    let letters = std::fs::read_to_string(summary.dead_letters.as_ref().unwrap()).unwrap();
    assert!(
        letters
            .lines()
            .all(|l| l.contains("column `region`: null value"))
    );
    // Partition directories by region (a value with a slash escaped as Hive does), and every
    // written row carries its own id's region.
    assert!(out.join("region=eu").is_dir() && out.join("region=ap%2Fsouth").is_dir());
    let written = read_all(&ParquetDataset::open_path(&out).unwrap());
    let regions: BTreeMap<i64, String> = {
        let id = source
            .column_by_name("id")
            .unwrap()
            .as_primitive::<Int64Type>();
        let region = source.column_by_name("region").unwrap().as_string::<i32>();
        (0..source.num_rows())
            .filter(|&i| region.is_valid(i))
            .map(|i| (id.value(i), region.value(i).to_string()))
            .collect()
    };
    let id = written
        .column_by_name("id")
        .unwrap()
        .as_primitive::<Int64Type>();
    let region = written.column_by_name("region").unwrap().as_string::<i32>();
    assert_eq!(written.num_rows() as u64, summary.rows_written);
    for i in 0..written.num_rows() {
        assert_eq!(regions[&id.value(i)], region.value(i));
    }
}
