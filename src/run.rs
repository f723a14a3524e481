//! Running a pipeline end to end: plan, run on workers, write the run directory (pipeline as run,
//! metrics.jsonl, summary.json, dead_letters.jsonl, metrics.prom, model/, curves.png/svg).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use millrace_engine::ClusterConfig;
use millrace_operators::batch_job::{self, JobPlan, Progress, RunOptions, Summary};
use millrace_operators::spec::PipelineSpec;
use millrace_operators::streaming::{StreamOptions, StreamPlan, StreamSummary};
use serde_json::Value;

use crate::curves::{Figure, Panel, Series};
use crate::pipeline_file::locate_key;
use crate::tracking::Tracker;
use crate::{Error, Result};

/// How to run a pipeline.
#[derive(Clone)]
pub struct RunConfig {
    /// Worker threads and processes.
    pub cluster: ClusterConfig,
    /// The run directory; `None` means `runs/<name>-<timestamp>`.
    pub run_dir: Option<PathBuf>,
    /// Progress reporting.
    pub progress: Arc<dyn Progress>,
    /// Continue from the latest checkpoint of the pipeline's `[checkpoint]` store, if any.
    pub resume: bool,
    /// When the user started waiting, for `wall_s` and the plan phase: the process start for
    /// `millrace run`, the call for `Pipeline::run`; `None` starts the clock when
    /// [`run_planned`] is called (planning then goes uncounted).
    pub started: Option<Instant>,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            cluster: ClusterConfig::local(1),
            run_dir: None,
            progress: Arc::new(batch_job::NoProgress),
            resume: false,
            started: None,
        }
    }
}

/// The default run directory of a pipeline: `runs/<name>-<YYYYmmdd-HHMMSS>`.
pub fn default_run_dir(name: &str) -> PathBuf {
    PathBuf::from("runs").join(format!(
        "{name}-{}",
        chrono::Local::now().format("%Y%m%d-%H%M%S")
    ))
}

/// Creates the run directory (`run_dir`, else `runs/<name>-<time>`) and keeps the pipeline in it
/// as `pipeline.toml` (its text as given, else rendered from `spec`).
fn prepare_run_dir(
    run_dir: Option<PathBuf>,
    spec: &PipelineSpec,
    pipeline_text: Option<&str>,
) -> Result<PathBuf> {
    let run_dir = run_dir.unwrap_or_else(|| default_run_dir(&spec.name));
    std::fs::create_dir_all(&run_dir).map_err(|source| Error::Io {
        path: run_dir.clone(),
        source,
    })?;
    let text = match pipeline_text {
        Some(t) => t.to_string(),
        None => toml::to_string(spec)
            .map_err(|e| Error::Curves(format!("cannot render the pipeline as TOML: {e}")))?,
    };
    let path = run_dir.join("pipeline.toml");
    std::fs::write(&path, text).map_err(|source| Error::Io { path, source })?;
    Ok(run_dir)
}

/// Plans `spec`; a configuration error is located in `source` (the pipeline file's path and text)
/// when given.
pub fn plan(spec: PipelineSpec, source: Option<(&Path, &str)>) -> Result<JobPlan> {
    JobPlan::new(spec).map_err(|e| locate(e, source))
}

fn locate(e: millrace_operators::Error, source: Option<(&Path, &str)>) -> Error {
    let key = match &e {
        millrace_operators::Error::Config { key, .. } => Some(key.clone()),
        millrace_operators::Error::Sql(_) => Some("preprocess.sql".to_string()),
        millrace_operators::Error::Ml(millrace_ml::Error::Config { key, .. }) => Some(key.clone()),
        _ => None,
    };
    match (key, source) {
        (Some(key), Some((path, text))) => match locate_key(text, &key) {
            Some((line, column)) => Error::Located {
                path: path.to_path_buf(),
                line,
                column,
                error: Box::new(e),
            },
            None => Error::Pipeline(e),
        },
        _ => Error::Pipeline(e),
    }
}

/// Runs a planned pipeline and writes its run directory. `pipeline_text` is kept as `pipeline.toml`.
/// summary.json is the last file written: its `wall_s` runs from `config.started` to it.
pub fn run_planned(
    plan: JobPlan,
    pipeline_text: Option<&str>,
    config: RunConfig,
) -> Result<(Summary, PathBuf)> {
    let started = config.started.unwrap_or_else(Instant::now);
    let run_dir = prepare_run_dir(config.run_dir.clone(), &plan.spec, pipeline_text)?;
    let process_id = config.cluster.process_id;
    let tracker = match process_id {
        0 => Tracker::start(&plan.spec, &run_dir)?,
        _ => None,
    };
    let ran = batch_job::run_without_summary(
        plan,
        RunOptions {
            cluster: config.cluster,
            run_dir: run_dir.clone(),
            progress: config.progress,
            resume: config.resume,
            started,
        },
    )
    .map_err(Error::from)
    .and_then(|finished| {
        if process_id == 0 {
            match &finished.summary().tune {
                Some(tune) => crate::tune::write_curves(&run_dir, tune)?,
                None => write_curves(&run_dir)?,
            }
        }
        finished.write_summary().map_err(Error::from)
    });
    if let Some(tracker) = tracker {
        tracker.finish(ran.is_ok())?;
    }
    Ok((ran?, run_dir))
}

/// How to run a streaming pipeline.
#[derive(Clone)]
pub struct StreamRunConfig {
    /// Worker threads and processes.
    pub cluster: ClusterConfig,
    /// The run directory; `None` means `runs/<name>-<timestamp>`.
    pub run_dir: Option<PathBuf>,
    /// Set to stop after the current step, with a last checkpoint (the CLI sets it on SIGTERM).
    pub stop: Arc<std::sync::atomic::AtomicBool>,
    /// Stop after this many records.
    pub max_records: Option<u64>,
    /// Stop once no record arrived for this long.
    pub idle_timeout: Option<std::time::Duration>,
    /// When the user started waiting, for `wall_s` and the plan phase (the process start for
    /// `millrace run`); `None` starts the clock when [`run_stream`] is called.
    pub started: Option<Instant>,
}

/// Plans a streaming pipeline (reads the feature table's and the fit dataset's schemas, plans its
/// SQL and its features, checks the model) without reading a record; errors are located in
/// `source` when given.
pub fn plan_stream(spec: PipelineSpec, source: Option<(&Path, &str)>) -> Result<StreamPlan> {
    StreamPlan::new(spec).map_err(|e| locate(e, source))
}

/// Plans and runs a streaming pipeline (one with a `[stream]` section) until it stops, writing
/// its run directory; errors in the pipeline are located in `source` when given.
pub fn run_stream(
    spec: PipelineSpec,
    source: Option<(&Path, &str)>,
    config: StreamRunConfig,
) -> Result<(StreamSummary, PathBuf)> {
    let started = config.started.unwrap_or_else(Instant::now);
    let plan = plan_stream(spec, source)?;
    let run_dir = prepare_run_dir(
        config.run_dir.clone(),
        &plan.spec,
        source.map(|(_, text)| text),
    )?;
    let mut tracker = match config.cluster.process_id {
        0 => Tracker::start(&plan.spec, &run_dir)?,
        _ => None,
    };
    let on_publish = match tracker.as_mut() {
        Some(t) => t.on_publish()?,
        None => None,
    };
    let ran = millrace_operators::streaming::run_stream_without_summary(
        plan,
        StreamOptions {
            cluster: config.cluster,
            run_dir: run_dir.clone(),
            stop: config.stop,
            max_records: config.max_records,
            idle_timeout: config.idle_timeout,
            on_serving: Some(Arc::new(|addr| {
                eprintln!(
                    "serving the model while it trains on http://{addr} (POST /v2/models/NAME/infer, /v1/predict)"
                );
            })),
            on_publish,
            started,
        },
    )
    .map_err(Error::from)
    .and_then(|finished| {
        if run_dir.join("metrics.jsonl").exists() {
            write_curves(&run_dir)?;
        }
        finished.write_summary().map_err(Error::from)
    });
    if let Some(tracker) = tracker {
        tracker.finish(ran.is_ok())?;
    }
    Ok((ran?, run_dir))
}

/// Draws `curves.png` and `curves.svg` from a run directory's `metrics.jsonl`.
pub fn write_curves(run_dir: &Path) -> Result<()> {
    let path = run_dir.join("metrics.jsonl");
    let text = std::fs::read_to_string(&path).map_err(|source| Error::Io { path, source })?;
    let mut loss = Vec::new();
    let mut evals: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let step = v["step"].as_f64().unwrap_or(f64::NAN);
        match v["kind"].as_str() {
            Some("train") => loss.push((step, v["loss"].as_f64().unwrap_or(f64::NAN))),
            Some("eval") => {
                for metric in ["accuracy", "roc_auc", "rmse", "r2"] {
                    if let Some(x) = v[metric].as_f64() {
                        match evals.iter_mut().find(|(n, _)| n == metric) {
                            Some((_, pts)) => pts.push((step, x)),
                            None => evals.push((metric.to_string(), vec![(step, x)])),
                        }
                    }
                }
            }
            _ => {}
        }
    }
    let figure = Figure {
        title: format!("training curves: {}", run_dir.display()),
        panels: vec![
            Panel {
                title: "training loss".into(),
                x_label: "step".into(),
                y_label: "loss".into(),
                series: vec![Series {
                    name: "train loss".into(),
                    points: loss,
                }],
            },
            Panel {
                title: "evaluation".into(),
                x_label: "step".into(),
                y_label: "metric".into(),
                series: evals
                    .into_iter()
                    .map(|(name, points)| Series { name, points })
                    .collect(),
            },
        ],
    };
    figure
        .write(
            &run_dir.join("curves.png"),
            Some(&run_dir.join("curves.svg")),
        )
        .map_err(|e| Error::Curves(e.to_string()))
}
