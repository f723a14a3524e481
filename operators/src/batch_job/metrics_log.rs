//! `metrics.jsonl` of a batch run, written by worker 0 as training reports its events.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::checkpoint::BatchCheckpoint;
use super::progress::Progress;
use crate::train::TrainEvent;
use crate::{Error, Result};

/// The metrics log: a `train` line every `log_every` steps (and at the last step) with the mean
/// loss over the rows since the previous line, and an `eval` line per evaluation; each event is
/// also reported to the progress. Only worker 0 has a file; the others only keep the evaluation
/// lines of the run they resume.
pub(super) struct MetricsLog {
    file: Option<(BufWriter<File>, PathBuf)>,
    /// The first write error (training goes on; the run fails at the end).
    error: Option<Error>,
    eval_lines: Vec<Value>,
    progress: Arc<dyn Progress>,
    log_every: u64,
    /// Whether train lines carry the learning rate (a `train.lr_schedule` moves it).
    log_lr: bool,
    total_steps: u64,
    window_loss: f64,
    window_rows: u64,
    started: Instant,
    /// When the file was last flushed.
    flushed: Instant,
}

impl MetricsLog {
    /// Opens `run_dir/metrics.jsonl` on worker 0 (`write`). A resumed run appends to the lines
    /// of the run it continues, up to its checkpoint's step.
    pub(super) fn open(
        write: bool,
        run_dir: &Path,
        resume: Option<&BatchCheckpoint>,
        (log_every, log_lr): (u64, bool),
        progress: Arc<dyn Progress>,
    ) -> Result<Self> {
        let file = if write {
            let path = run_dir.join("metrics.jsonl");
            if let Some(c) = resume {
                keep_metrics_until(&path, c.position.global_step)?;
            }
            let file = OpenOptions::new()
                .create(true)
                .write(true)
                .append(resume.is_some())
                .truncate(resume.is_none())
                .open(&path)
                .map_err(|e| Error::io(&path, e))?;
            Some((BufWriter::new(file), path))
        } else {
            None
        };
        let eval_lines = resume.map(|c| c.position.eval_lines()).unwrap_or_default();
        Ok(MetricsLog {
            file,
            error: None,
            eval_lines,
            progress,
            log_every,
            log_lr,
            total_steps: 0,
            window_loss: 0.0,
            window_rows: 0,
            started: Instant::now(),
            flushed: Instant::now(),
        })
    }

    /// Reports `event` (worker 0 only) and writes its line, if it has one.
    pub(super) fn on_event(&mut self, event: TrainEvent) {
        if self.file.is_none() {
            return;
        }
        let line = match &event {
            TrainEvent::Start { total_steps, rows } => {
                self.total_steps = *total_steps;
                self.progress.train_start(*total_steps, *rows);
                None
            }
            TrainEvent::Step {
                epoch,
                step,
                loss,
                rows,
                lr,
            } => {
                self.progress.train_step(*step, *loss);
                self.window_loss += loss * *rows as f64;
                self.window_rows += rows;
                (step.is_multiple_of(self.log_every) || *step == self.total_steps).then(|| {
                    let mean = self.window_loss / self.window_rows.max(1) as f64;
                    let mut line = json!({"kind": "train", "epoch": epoch, "step": step, "loss": mean,
                        "rows": self.window_rows, "elapsed_s": self.started.elapsed().as_secs_f64()});
                    if self.log_lr {
                        line["lr"] = json!(lr);
                    }
                    (self.window_loss, self.window_rows) = (0.0, 0);
                    line
                })
            }
            TrainEvent::Checkpoint { .. } => {
                if let Some((out, path)) = self.file.as_mut()
                    && let Err(e) = out.flush()
                {
                    self.error.get_or_insert_with(|| Error::io(path.clone(), e));
                }
                None
            }
            TrainEvent::Eval {
                epoch,
                step,
                metrics,
            } => {
                self.progress.eval(*epoch, metrics);
                let mut v = json!({"kind": "eval", "epoch": epoch, "step": step});
                if let (Some(obj), Ok(Value::Object(m))) =
                    (v.as_object_mut(), serde_json::to_value(metrics))
                {
                    obj.extend(m);
                }
                self.eval_lines.push(v.clone());
                Some(v)
            }
        };
        if let (Some(line), Some((out, path))) = (line, self.file.as_mut()) {
            // Flushed at most every quarter second, so a dashboard follows the run live.
            let flush = self.flushed.elapsed() >= Duration::from_millis(250);
            let written = writeln!(out, "{line}").and_then(|()| match flush {
                true => out.flush(),
                false => Ok(()),
            });
            if flush {
                self.flushed = Instant::now();
            }
            if let Err(e) = written {
                self.error.get_or_insert_with(|| Error::io(path.clone(), e));
            }
        }
    }

    /// Flushes the file; the evaluation lines, or the first write error.
    pub(super) fn close(self) -> Result<Vec<Value>> {
        if let Some((mut out, path)) = self.file {
            out.flush().map_err(|e| Error::io(&path, e))?;
        }
        match self.error {
            Some(e) => Err(e),
            None => Ok(self.eval_lines),
        }
    }
}

/// Drops the lines of `metrics.jsonl` past `step` (written after the checkpoint a run resumes
/// from, by the run that failed), so the resumed run's lines follow without repeats.
fn keep_metrics_until(path: &Path, step: u64) -> Result<()> {
    keep_lines(path, |v| v["step"].as_u64().is_some_and(|s| s <= step))
}

/// Rewrites the JSON lines file at `path` with only the lines `keep` accepts (nothing when the
/// file does not exist: a resumed run may write to another run directory).
pub(super) fn keep_lines(path: &Path, keep: impl Fn(&Value) -> bool) -> Result<()> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(path, e)),
    };
    let kept: String = text
        .lines()
        .filter(|l| serde_json::from_str::<Value>(l).is_ok_and(|v| keep(&v)))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(path, kept).map_err(|e| Error::io(path, e))
}
