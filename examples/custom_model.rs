//! A model and a loss that are not in millrace, trained, resumed and served through it.
//!
//!     cargo run --release --example custom_model                      # the walk-through below
//!     cargo run --release --example custom_model -- run examples/custom_model.toml --workers 2
//!     cargo run --release --example custom_model -- serve --model RUN_DIR/model
//!
//! With arguments, this binary is the `millrace` command line with `entity_net` and `focal`
//! registered (`millrace::App`). Without, it checks what a user relies on, and fails loudly if
//! any of it is false:
//!
//! 1. the DSL trains `entity_net` with `focal` on 2 workers (the replicas are checked
//!    bit-identical at the end of training);
//! 2. the pipeline file trains it with this binary; a run killed with SIGKILL after a checkpoint
//!    and restarted with `--resume` ends with the uninterrupted run's model, bit for bit;
//! 3. this binary serves the bundle, and `/v2/models/custom_model/infer` answers what the model
//!    predicts in process (within 1e-6).

#[path = "common/http.rs"]
mod http;
#[path = "custom_model/model.rs"]
mod model;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use millrace::ml::{ModelBundle, Predictor};
use millrace::prelude::*;
use serde_json::{Value, json};

use http::http;
use model::{EntityNet, Focal};

fn app() -> millrace::App {
    millrace::App::new()
        .model::<EntityNet>("entity_net")
        .loss::<Focal>("focal")
}

fn main() -> ExitCode {
    if std::env::args().len() > 1 {
        return app().main();
    }
    match walk_through() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("custom_model: FAILED: {e:#}");
            ExitCode::FAILURE
        }
    }
}

const PIPELINE: &str = "examples/custom_model.toml";

fn walk_through() -> anyhow::Result<()> {
    app().register()?;
    let work = PathBuf::from("data/custom_model/runs");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;

    // 1. The DSL, 2 workers.
    let data = Path::new("data/custom_model");
    if !data.join("train").exists() {
        millrace::data::generate_tabular_with_entities(
            &data.join("train"),
            60_000,
            2,
            1,
            false,
            1000,
        )?;
        millrace::data::generate_tabular_with_entities(
            &data.join("holdout"),
            10_000,
            1,
            2,
            true,
            1000,
        )?;
    }
    let report = Pipeline::new("custom_model_dsl")
        .ingest_parquet(data.join("train"))
        .sql("SELECT * FROM input WHERE f3 IS NOT NULL")
        .standardize((0..16).map(|i| format!("f{i}")))
        .index(["entity", "cat"])
        .label("label")
        .train(
            Train::model("entity_net")
                .key("hidden", 32)
                .key("entity_dim", 8)
                .user_loss("focal")
                .lr(0.003)
                .epochs(2),
        )
        .evaluate_on(data.join("holdout"))
        .workers(2)
        .run_dir(work.join("dsl"))
        .run()?;
    let accuracy = serde_json::to_value(&report.summary.eval)?["accuracy"]
        .as_f64()
        .unwrap_or(0.0);
    println!("1. DSL, 2 workers: holdout accuracy {accuracy:.4}");
    ensure!(accuracy > 0.75, "the DSL run reached accuracy {accuracy}");

    // 2. The pipeline file with this binary: uninterrupted, then killed and resumed.
    let exe = std::env::current_exe()?;
    let reference = work.join("ref");
    run_cli(&exe, &reference, &[])?;
    let want = summary(&reference)?;
    let checkpoints = work.join("checkpoints");
    let checkpointed = [
        format!("checkpoint.dir=\"{}\"", checkpoints.display()),
        "checkpoint.every_steps=20".to_owned(),
    ];
    let killed = work.join("killed");
    let mut victim = cli(&exe, &killed, &checkpointed)?
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    kill_after_a_checkpoint(&mut victim, &checkpoints)?;
    ensure!(
        !killed.join("model").exists(),
        "the run finished before it was killed; nothing was resumed"
    );
    let mut resumed = checkpointed.to_vec();
    resumed.push("--resume".into());
    run_cli(&exe, &killed, &resumed)?;
    let got = summary(&killed)?;
    ensure!(
        got["resumed_from_step"].as_u64().unwrap_or(0) > 0,
        "the second start did not resume: {got}"
    );
    ensure!(
        got["parameter_checksum"] == want["parameter_checksum"],
        "resumed {} != uninterrupted {}",
        got["parameter_checksum"],
        want["parameter_checksum"]
    );
    let weights = |dir: &Path| std::fs::read(dir.join("model/weights.safetensors"));
    ensure!(
        weights(&killed)? == weights(&reference)?,
        "resumed weights differ"
    );
    println!(
        "2. pipeline file: killed after step {}, resumed: the same model bit for bit (checksum {})",
        got["resumed_from_step"], got["parameter_checksum"]
    );

    // 3. This binary serves the bundle; the server answers what the model predicts in process.
    serve_and_compare(&exe, &reference.join("model"), &data.join("holdout"))?;
    Ok(())
}

/// `exe run PIPELINE --run-dir DIR --workers 2`, each of `sets` as `--set KEY=VALUE` (or as
/// is when it is a flag, like `--resume`).
fn cli(exe: &Path, run_dir: &Path, sets: &[String]) -> anyhow::Result<Command> {
    let mut command = Command::new(exe);
    command
        .args(["run", PIPELINE, "--workers", "2", "--run-dir"])
        .arg(run_dir);
    for set in sets {
        if set.starts_with("--") {
            command.arg(set);
        } else {
            command.args(["--set", set]);
        }
    }
    Ok(command)
}

fn run_cli(exe: &Path, run_dir: &Path, sets: &[String]) -> anyhow::Result<()> {
    let out = cli(exe, run_dir, sets)?.output()?;
    ensure!(
        out.status.success(),
        "{exe:?} run failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

fn summary(run_dir: &Path) -> anyhow::Result<Value> {
    let path = run_dir.join("summary.json");
    Ok(serde_json::from_slice(
        &std::fs::read(&path).with_context(|| path.display().to_string())?,
    )?)
}

/// Whether `dir` holds a complete checkpoint: a `ckpt-<step>` directory with its `COMMIT` marker.
/// (A checkpoint is written in a temporary directory, `COMMIT` included, and renamed into place:
/// a `COMMIT` elsewhere is not a checkpoint yet.)
fn has_checkpoint(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        e.file_name().to_string_lossy().starts_with("ckpt-") && e.path().join("COMMIT").exists()
    })
}

fn kill_after_a_checkpoint(victim: &mut Child, checkpoints: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    while !has_checkpoint(checkpoints) {
        if victim.try_wait()?.is_some() {
            bail!("the run ended before its first checkpoint");
        }
        if started.elapsed() > Duration::from_secs(300) {
            bail!(
                "no checkpoint in {} within 5 minutes",
                checkpoints.display()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    victim.kill()?; // SIGKILL: no chance to clean up
    victim.wait()?;
    Ok(())
}

fn serve_and_compare(exe: &Path, model_dir: &Path, holdout: &Path) -> anyhow::Result<()> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let mut server = Command::new(exe)
        .args([
            "serve",
            "--no-watch",
            "--addr",
            &addr.to_string(),
            "--model",
        ])
        .arg(model_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let result = (|| {
        let started = Instant::now();
        while http(addr, "GET", "/v2/health/ready", "")
            .ok()
            .map(|(code, _)| code)
            != Some(200)
        {
            ensure!(server.try_wait()?.is_none(), "the server exited");
            ensure!(
                started.elapsed() < Duration::from_secs(60),
                "not ready in 60 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        compare(addr, model_dir, holdout)
    })();
    let _ = server.kill();
    let _ = server.wait();
    result
}

fn compare(addr: SocketAddr, model_dir: &Path, holdout: &Path) -> anyhow::Result<()> {
    use arrow::array::{Array, Float32Array, StringArray};
    let bundle = ModelBundle::load(model_dir)?;
    let predictor = Predictor::new(&bundle)?;
    let file = std::fs::read_dir(holdout)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "parquet"))
        .context("no holdout file")?;
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        std::fs::File::open(&file)?,
    )?
    .with_batch_size(32)
    .build()?;
    let batch = reader.into_iter().next().context("empty holdout")??;
    // Rows with every feature present (the server and the predictor both reject nulls).
    let f3 = batch.column_by_name("f3").context("f3")?;
    let rows: Vec<usize> = (0..batch.num_rows()).filter(|&r| f3.is_valid(r)).collect();
    let take = arrow::array::UInt32Array::from_iter_values(rows.iter().map(|&r| r as u32));
    let batch = arrow::compute::take_record_batch(&batch, &take)?;
    let (features, want) = predictor.predict_batch(&batch)?;
    let mut inputs = Vec::new();
    for i in 0..16 {
        let name = format!("f{i}");
        let col = batch.column_by_name(&name).context("column")?;
        let values = col.as_any().downcast_ref::<Float32Array>().context("f32")?;
        inputs.push(
            json!({"name": name, "datatype": "FP32", "shape": [batch.num_rows()],
                           "data": values.values().to_vec()}),
        );
    }
    for name in ["entity", "cat"] {
        let col = batch.column_by_name(name).context("column")?;
        let values = col.as_any().downcast_ref::<StringArray>().context("utf8")?;
        let data: Vec<&str> = values.iter().map(|v| v.unwrap_or_default()).collect();
        inputs.push(
            json!({"name": name, "datatype": "BYTES", "shape": [batch.num_rows()],
                           "data": data}),
        );
    }
    let body = json!({"inputs": inputs}).to_string();
    let name = &bundle.meta.name;
    let (code, answer) = http(addr, "POST", &format!("/v2/models/{name}/infer"), &body)?;
    ensure!(code == 200, "infer answered {code}: {answer}");
    let got = http::v2_probabilities(&answer)?;
    ensure!(
        got.len() == want.len() && want.len() == features.rows * 2,
        "{} values served, {} predicted",
        got.len(),
        want.len()
    );
    let worst = http::worst_difference(&got, &want);
    ensure!(
        worst <= 1e-6,
        "served and in-process predictions differ by {worst}"
    );
    println!(
        "3. served by this binary: {} rows via /v2/models/{name}/infer, largest difference from the in-process predictions {worst:e}",
        features.rows
    );
    Ok(())
}
