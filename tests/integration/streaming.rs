//! Streaming pipelines against a real Kafka-protocol broker (tansu, started by the test setup):
//! two workers over four partitions, dead letters, exactly-once across `kill -9`, and the served
//! model version advancing while requests flow.
//!
//! Exactly-once is checked with a model whose parameters count the records it trained on: a
//! linear regression of a target far above its output, trained with the absolute error summed
//! over the batch and SGD at learning rate 1 — every record adds exactly 1 to the bias.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use millrace::connectors::kafka::{
    KafkaOptions, KafkaProducer, KafkaSource, StartFrom, create_topic,
};
use millrace::engine::ClusterConfig;
use millrace::ml::bundle::ModelBundle;
use millrace::run::{StreamRunConfig, run_stream};

use super::common::kill_when;
use super::serve_harness::{get, post_json};
use super::services::{free_port, kafka};

pub(super) fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

pub(super) fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(unique(name));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Generates `rows` tabular rows and sends them to a new `partitions`-partition topic.
pub(super) fn fill_topic(broker: &str, topic: &str, partitions: i32, rows: u64, dir: &Path) {
    let data = dir.join("rows");
    millrace::data::generate_tabular(&data, rows, 1, 3, false).unwrap();
    let options = KafkaOptions::new(broker);
    let sent =
        millrace::produce::produce(&data, &options, topic, Some(partitions), None, None).unwrap();
    assert_eq!(sent.records, rows);
}

/// The counting pipeline: every trained record adds exactly 1 to the bias.
pub(super) fn counting_pipeline(
    broker: &str,
    topic: &str,
    checkpoints: &Path,
    extra: &str,
) -> String {
    format!(
        r#"
name = "counting"

[stream]
bootstrap_servers = "{broker}"
topic = "{topic}"
group_id = "{topic}-group"
columns = ["f0", "f3", "cat", "ts", "label"]
schema = {{ f0 = "float32", f3 = "float32?", cat = "string", ts = "timestamp_us", label = "int8" }}
warmup_records = 200
max_batch_records = 97
poll_timeout_ms = 10
publish_every_steps = 5
publish_every_s = 0
checkpoint_every_steps = 4
checkpoint_every_s = 0
checkpoint_dir = "{checkpoints}"
{extra}

[preprocess]
sql = "SELECT 0.0 AS zero, 1000000.0 AS y FROM input"
numeric = ["zero"]
label = "y"

[train]
task = "regression"
model = {{ kind = "linear" }}
optimizer = {{ kind = "sgd" }}
loss = "mae"
reduction = "sum"
lr = 1.0
"#,
        checkpoints = checkpoints.display()
    )
}

pub(super) fn bias(model_dir: &Path) -> f32 {
    let bundle = ModelBundle::load(model_dir).unwrap();
    *bundle.weights.last().unwrap()
}

/// Asserts that the counting model at `model_dir` trained on exactly `records` records: its bias
/// moved from the initial value by `records` (each step adds a whole number; f32 rounding of the
/// sum stays far below the 1 that a lost or repeated record would add).
pub(super) fn assert_counted(model_dir: &Path, records: u64) {
    use millrace::ml::trainer::{Loss, Trainer};
    let bundle = ModelBundle::load(model_dir).unwrap();
    let fresh = Trainer::<millrace::ml::backend::CpuAutodiff>::new(
        &bundle.builtin_spec().unwrap(),
        &millrace::ml::optim::OptimizerSpec::Sgd {
            momentum: 0.0,
            weight_decay: 0.0,
            nesterov: false,
        },
        Loss::Mae,
        &bundle.task,
        1,
        42, // the pipeline's train.seed (the default)
        &Default::default(),
    )
    .unwrap();
    let initial = *fresh.parameters().last().unwrap();
    let counted = f64::from(bias(model_dir)) - f64::from(initial);
    assert!(
        (counted - records as f64).abs() < 0.25,
        "the bias counted {counted} records, expected {records}"
    );
}

pub(super) fn config(workers: usize, run_dir: &Path) -> StreamRunConfig {
    StreamRunConfig {
        cluster: ClusterConfig::local(workers),
        run_dir: Some(run_dir.to_path_buf()),
        stop: Arc::new(AtomicBool::new(false)),
        max_records: None,
        idle_timeout: Some(Duration::from_secs(2)),
        started: None,
    }
}

pub(super) fn parse(text: &str) -> millrace::operators::spec::PipelineSpec {
    millrace::pipeline_file::parse(text, Path::new("test.toml")).unwrap()
}

#[test]
fn two_workers_train_every_record_once_and_dead_letter_bad_messages() {
    let Some(broker) = kafka() else { return };
    let dir = scratch("stream-two-workers");
    let topic = unique("two-workers");
    fill_topic(broker, &topic, 4, 3000, &dir);
    // Three bad messages: not JSON, a string where a number belongs, no label.
    let options = KafkaOptions::new(broker);
    let producer = KafkaProducer::new(&options, true).unwrap();
    for bad in [
        &b"not json"[..],
        br#"{"f0": "abc", "cat": "a", "ts": 0, "label": 1}"#,
        br#"{"f0": 1.0, "cat": "a", "ts": 0}"#,
    ] {
        producer.send(&topic, None, bad, &[]).unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    let dlq = format!("{topic}-dlq");
    create_topic(&options, &dlq, 1, Duration::from_secs(30)).unwrap();

    // A version due at every step, and every step that trains in the step log.
    let text = counting_pipeline(
        broker,
        &topic,
        &dir.join("checkpoints"),
        &format!("dead_letter_topic = \"{dlq}\""),
    )
    .replace("publish_every_steps = 5", "publish_every_steps = 1")
    .replace("lr = 1.0", "lr = 1.0\nlog_every = 1");
    let (summary, run_dir) = run_stream(parse(&text), None, config(2, &dir.join("run"))).unwrap();
    // A version holds what was trained since the one before: the idle steps before the job
    // stops (its 2 s idle timeout) publish none.
    let trained_steps = std::fs::read_to_string(run_dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter(|l| l.contains(r#""kind":"train""#))
        .count() as u64;
    assert!(
        summary.model_versions <= trained_steps && summary.steps > trained_steps + 5,
        "{} versions, {trained_steps} steps that trained, {} steps: {summary:?}",
        summary.model_versions,
        summary.steps
    );
    assert_eq!(summary.workers, 2);
    assert_eq!(summary.rows_read, 3003);
    assert_eq!(summary.rows_dead_lettered, 3);
    assert_eq!(summary.rows_trained, 3000);
    assert!(summary.model_versions >= 2, "{summary:?}");
    assert!(summary.checkpoints >= 2, "{summary:?}");
    // The bias counted every record exactly once, over both workers.
    assert_counted(&run_dir.join("model"), 3000);

    // The dead letters, with their origin in headers.
    let mut source = KafkaSource::open(
        &options,
        &dlq,
        &unique("reader"),
        0,
        1,
        StartFrom::Earliest,
        None,
    )
    .unwrap();
    let mut letters = Vec::new();
    let started = Instant::now();
    while letters.len() < 3 && started.elapsed() < Duration::from_secs(30) {
        letters.extend(source.poll(10, Duration::from_millis(200)).unwrap());
    }
    assert_eq!(letters.len(), 3);
    let payloads: Vec<String> = letters
        .iter()
        .map(|m| String::from_utf8_lossy(m.payload.as_deref().unwrap_or_default()).into_owned())
        .collect();
    assert!(payloads.contains(&"not json".to_string()), "{payloads:?}");
    let dead = std::fs::read_to_string(run_dir.join("dead_letters.jsonl")).unwrap();
    assert_eq!(dead.lines().count(), 3);
    assert!(dead.contains(r#"field \"f0\""#), "{dead}");
    assert!(dead.contains("label"), "{dead}");
}

#[test]
fn a_killed_job_resumes_from_its_checkpoint_without_losing_or_repeating_a_record() {
    let Some(broker) = kafka() else { return };
    let dir = scratch("stream-kill");
    let topic = unique("kill");
    let rows = 12_000;
    fill_topic(broker, &topic, 4, rows, &dir);
    let checkpoints = dir.join("checkpoints");
    let pipeline = dir.join("counting.toml");
    std::fs::write(
        &pipeline,
        counting_pipeline(broker, &topic, &checkpoints, "max_batch_records = 50"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let text = std::fs::read_to_string(&pipeline).unwrap();
    // `max_batch_records` appears twice in that file: keep the smaller one only.
    std::fs::write(&pipeline, text.replace("max_batch_records = 97\n", "")).unwrap();
    let run = |run_dir: &Path| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_millrace"));
        command
            .arg("run")
            .arg(&pipeline)
            .args(["--workers", "2", "--idle-timeout-s", "2", "--run-dir"])
            .arg(run_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        command
    };
    // First run: killed (SIGKILL, no chance to clean up) once two checkpoints exist.
    let mut first = run(&dir.join("run1")).spawn().unwrap();
    kill_when(
        &mut first,
        Duration::from_secs(120),
        "two checkpoints written",
        || {
            std::fs::read_dir(&checkpoints)
                .map(|d| {
                    d.flatten()
                        .filter(|e| e.file_name().to_string_lossy().starts_with("ckpt-"))
                        .count()
                })
                .unwrap_or(0)
                >= 2
        },
    );
    // Second run: resumes from the last complete checkpoint and reads to the end.
    let status = run(&dir.join("run2")).status().unwrap();
    assert!(status.success());
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("run2/summary.json")).unwrap())
            .unwrap();
    assert!(summary["resumed_from_step"].as_u64().is_some(), "{summary}");
    assert_eq!(summary["rows_read"], rows);
    assert_eq!(summary["rows_trained"], rows);
    // Every record trained exactly once across the kill: the bias is the record count.
    assert_counted(&dir.join("run2/model"), rows);
    // And Kafka holds the final offsets as committed (a fresh group member resumes at the end).
    let options = KafkaOptions::new(broker);
    let mut after = KafkaSource::open(
        &options,
        &topic,
        &format!("{topic}-group"),
        0,
        1,
        StartFrom::Committed,
        None,
    )
    .unwrap();
    assert!(
        after
            .poll(100, Duration::from_millis(500))
            .unwrap()
            .is_empty(),
        "records after the committed offsets"
    );
}

fn wait_finished<T>(job: &std::thread::JoinHandle<T>) -> bool {
    let started = Instant::now();
    while !job.is_finished() && started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(10));
    }
    job.is_finished()
}

#[test]
fn the_served_version_advances_while_requests_flow() {
    let Some(broker) = kafka() else { return };
    let dir = scratch("stream-serve");
    let topic = unique("serve");
    fill_topic(broker, &topic, 2, 20_000, &dir);
    let port = free_port();
    let text = format!(
        "{}\n[serve]\naddr = \"127.0.0.1:{port}\"\n",
        counting_pipeline(broker, &topic, &dir.join("checkpoints"), "")
    );
    let spec = parse(&text);
    let run_dir = dir.join("run");
    let job = std::thread::spawn(move || run_stream(spec, None, config(2, &run_dir)));
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let body = serde_json::json!({"instances": [{"f0": 1.0, "f3": 0.5, "cat": "a", "ts": "2024-01-01T00:00:00Z", "label": 1}]});
    let mut seen = Vec::new();
    let mut metrics_checked = false;
    let started = Instant::now();
    while !job.is_finished() && started.elapsed() < Duration::from_secs(120) {
        if std::net::TcpStream::connect(addr).is_err() {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        // The server stops with the job: a request cut off then ends the loop.
        let Ok(reply) =
            std::panic::catch_unwind(|| post_json(addr, "/v1/models/counting/predict", &body))
        else {
            assert!(
                wait_finished(&job),
                "a request failed while the job was running"
            );
            break;
        };
        let status = reply.status;
        let text = String::from_utf8_lossy(&reply.body).into_owned();
        if status == 404 && seen.is_empty() {
            // No version published yet.
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        assert_eq!(status, 200, "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        // The prediction is the bias: it grows with the records the served version trained on.
        let value = v["predictions"][0]["value"].as_f64().unwrap();
        seen.push(value);
        if seen.len() == 5 {
            // The job's own counters are on the same /metrics as the serving metrics.
            if let Ok(reply) = std::panic::catch_unwind(|| get(addr, "/metrics")) {
                let text = String::from_utf8_lossy(&reply.body).into_owned();
                assert!(
                    text.contains("millrace_stream_rows_trained_total{job=\"counting\"}"),
                    "{text}"
                );
                assert!(text.contains("millrace_stream_model_version"), "{text}");
                assert!(text.contains("millrace_serve_requests_total"), "{text}");
                metrics_checked = true;
            }
        }
    }
    let (summary, _) = job.join().unwrap().unwrap();
    assert!(seen.len() > 10, "only {} answers", seen.len());
    assert!(
        seen.windows(2).all(|w| w[0] <= w[1]),
        "a request saw an older version after a newer one"
    );
    let distinct = {
        let mut d = seen.clone();
        d.dedup();
        d.len()
    };
    assert!(
        distinct >= 3,
        "the served version advanced only {distinct} times"
    );
    assert_eq!(summary.rows_trained, 20_000);
    assert!(metrics_checked, "GET /metrics was not checked");
}

/// A user step: adds a Float64 column `one` of ones.
fn add_one(batch: &arrow::array::RecordBatch) -> Result<arrow::array::RecordBatch, String> {
    use arrow::datatypes::{DataType, Field, Schema};
    let mut fields = batch.schema().fields().to_vec();
    fields.push(std::sync::Arc::new(Field::new(
        "one",
        DataType::Float64,
        false,
    )));
    let mut columns = batch.columns().to_vec();
    columns.push(std::sync::Arc::new(arrow::array::Float64Array::from(
        vec![1.0; batch.num_rows()],
    )));
    arrow::array::RecordBatch::try_new(std::sync::Arc::new(Schema::new(fields)), columns)
        .map_err(|e| e.to_string())
}

/// The counting job as the DSL writes it: the same spec as [`counting_pipeline`] with `sql`.
fn counting_dsl(
    broker: &str,
    topic: &str,
    checkpoints: &Path,
    sql: &str,
) -> millrace::dsl::Pipeline {
    use millrace::dsl::{Pipeline, Train};
    use millrace::ml::optim::OptimizerSpec;
    use millrace::ml::trainer::{Loss, Reduction};
    let checkpoints = checkpoints.to_path_buf();
    let group = format!("{topic}-group");
    Pipeline::new("counting")
        .kafka(broker, topic)
        .stream_options(move |s| {
            s.group_id = Some(group);
            s.columns = ["f0", "f3", "cat", "ts", "label"]
                .map(String::from)
                .to_vec();
            s.schema = [
                ("f0", "float32"),
                ("f3", "float32?"),
                ("cat", "string"),
                ("ts", "timestamp_us"),
                ("label", "int8"),
            ]
            .into_iter()
            .map(|(c, t)| (c.to_string(), t.parse().unwrap()))
            .collect();
            s.warmup_records = 200;
            s.max_batch_records = 97;
            s.poll_timeout_ms = 10;
            s.publish_every_steps = 5;
            s.publish_every_s = 0.0;
            s.checkpoint_every_steps = 4;
            s.checkpoint_every_s = 0.0;
            s.checkpoint_dir = Some(checkpoints);
        })
        .map_batches("it_stream_one", add_one)
        .sql(sql)
        .numeric(["zero"])
        .label("y")
        .train(
            Train::linear()
                .optimizer(OptimizerSpec::Sgd {
                    momentum: 0.0,
                    weight_decay: 0.0,
                    nesterov: false,
                })
                .loss(Loss::Mae)
                .reduction(Reduction::Sum)
                .lr(1.0),
        )
}

#[test]
fn the_dsl_builds_and_runs_the_pipeline_files_streaming_job() {
    let Some(broker) = kafka() else { return };
    super::udf::register();
    let dir = scratch("stream-dsl");
    let topic = unique("dsl");
    fill_topic(broker, &topic, 4, 1500, &dir);
    // A user function in the stream's SQL: it_log1p(f0) * 0 is 0, so the model still counts;
    // and a user step before it (`.map_batches`) makes the column `one` the label comes from:
    // without the step the query would not plan.
    let user_sql = "SELECT it_log1p(f0) * 0.0 AS zero, one * 1000000.0 AS y FROM input";
    let file_text = counting_pipeline(broker, &topic, &dir.join("file-ckpt"), "")
        .replace("SELECT 0.0 AS zero, 1000000.0 AS y FROM input", user_sql)
        .replace(
            "[preprocess]\n",
            "[preprocess]\nsteps_before_sql = [\"it_stream_one\"]\n",
        );
    assert!(file_text.contains("steps_before_sql"));
    // One-to-one: the DSL builds exactly the spec the file says.
    let dsl = counting_dsl(broker, &topic, &dir.join("file-ckpt"), user_sql);
    assert_eq!(dsl.build().unwrap(), parse(&file_text));

    // Both run on the same topic (each with its own group and checkpoints) to the same result.
    let file_text = file_text.replace(&format!("{topic}-group"), &format!("{topic}-file"));
    let (from_file, _) =
        run_stream(parse(&file_text), None, config(2, &dir.join("file-run"))).unwrap();
    let (from_dsl, dsl_run) = counting_dsl(broker, &topic, &dir.join("dsl-ckpt"), user_sql)
        .stream_options(|s| s.group_id = Some(format!("{}-dsl", s.topic)))
        .workers(2)
        .run_dir(dir.join("dsl-run"))
        .stop_when_idle(Duration::from_secs(2))
        .run_stream()
        .unwrap();
    for (what, file, dsl) in [
        ("rows_read", from_file.rows_read, from_dsl.rows_read),
        (
            "rows_trained",
            from_file.rows_trained,
            from_dsl.rows_trained,
        ),
        (
            "rows_dead_lettered",
            from_file.rows_dead_lettered,
            from_dsl.rows_dead_lettered,
        ),
    ] {
        assert_eq!(file, dsl, "{what}");
    }
    assert_eq!(from_dsl.rows_trained, 1500, "{from_dsl:?}");
    assert_counted(&dsl_run.join("model"), 1500);
    // A batch run refuses a streaming pipeline, and says what to call.
    let err = counting_dsl(broker, &topic, &dir.join("x"), user_sql)
        .run()
        .unwrap_err()
        .to_string();
    assert!(err.contains(".run_stream()"), "{err}");
}

/// `[[branch]]` in a streaming job: a second counting model at twice the learning rate trains on
/// the same records. Stopped after about 600 records and resumed from its checkpoint, both models
/// have counted every record exactly once (the branch twice as fast), and both are published.
#[test]
fn stream_branches_train_every_record_once_across_a_restart() {
    let Some(broker) = kafka() else { return };
    let dir = scratch("stream-branches");
    let topic = unique("stream-branches");
    fill_topic(broker, &topic, 4, 1500, &dir);
    let text = format!(
        r#"{}
[[branch]]
name = "double"
[branch.train]
task = "regression"
model = {{ kind = "linear" }}
optimizer = {{ kind = "sgd" }}
loss = "mae"
reduction = "sum"
lr = 2.0
"#,
        counting_pipeline(broker, &topic, &dir.join("ckpt"), "")
    );
    let mut first = config(2, &dir.join("run"));
    first.max_records = Some(600);
    let (stopped, _) = run_stream(parse(&text), None, first).unwrap();
    assert!(
        stopped.rows_trained > 0 && stopped.rows_trained < 1500,
        "{stopped:?}"
    );
    let (summary, run) = run_stream(parse(&text), None, config(2, &dir.join("run"))).unwrap();
    assert!(summary.resumed_from_step.is_some());
    assert_eq!(summary.rows_trained, 1500, "{summary:?}");
    assert_counted(&run.join("model"), 1500);
    assert_counted(&run.join("branches/double/model"), 3000);
    assert_eq!(summary.branches.len(), 1);
    let branch = &summary.branches[0];
    assert_eq!(branch.name, "double");
    assert!(branch.prequential.is_some());
    assert_ne!(branch.parameter_checksum, summary.parameter_checksum);
    let bundle = ModelBundle::load(&run.join("branches/double/model")).unwrap();
    assert_eq!(bundle.meta.name, "double");
}
