//! What a tune run reports: each trial's summary, the run's summary, and the files worker 0
//! writes as trials train (`tune.jsonl`, `metrics.jsonl`).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use millrace_ml::metrics::EvalMetrics;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::super::metrics_log::keep_lines;
use crate::train::TrainReport;
use crate::{Error, Result};

/// How a trial ended.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TrialStatus {
    /// It trained its whole budget.
    Completed,
    /// The scheduler stopped it early.
    Stopped,
}

/// One trial of a tune run, as `tune.jsonl` and `summary.json` keep it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TrialSummary {
    /// `trial-000`, …
    pub trial: String,
    /// The values drawn for it, by pipeline key.
    pub config: BTreeMap<String, Value>,
    /// How it ended.
    pub status: TrialStatus,
    /// Why the scheduler stopped it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<String>,
    /// Reports made (evaluations the scheduler heard).
    pub reports: usize,
    /// Epochs trained (steps over steps per epoch).
    pub epochs: f64,
    /// Optimiser steps applied.
    pub steps: u64,
    /// Seconds in its training loop (evaluations excluded).
    pub train_s: f64,
    /// The tuned metric at its last report.
    pub metric: f64,
    /// The tuned metric at each report.
    pub history: Vec<f64>,
    /// The mean training loss of the steps before each report.
    pub loss: Vec<f64>,
    /// Its final evaluation.
    pub eval: Option<EvalMetrics>,
    /// FNV-1a of its final parameters (equal on every worker).
    pub parameter_checksum: String,
}

/// What a tune run did, in `summary.json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TuneSummary {
    /// The metric tuned.
    pub metric: String,
    /// `max` or `min`.
    pub mode: crate::tune::Mode,
    /// The best trial's name (by its last metric); its model is `best/model`.
    pub best: String,
    /// Trials the scheduler stopped before their budget.
    pub stopped_early: usize,
    /// Reports over all trials (by this run and the runs it resumed).
    pub reports: usize,
    /// Epochs trained over all trials.
    pub epochs_trained: f64,
    /// Trials a resumed run took as finished from its checkpoint (not trained again).
    #[serde(default)]
    pub resumed_finished: usize,
    /// Every trial, in order.
    pub trials: Vec<TrialSummary>,
}

/// The tuned metric at a report: the training `loss` since the last one, or a field of the
/// evaluation.
pub(super) fn metric_of(report: &TrainReport, metric: &str, loss: f64) -> Result<f64> {
    if metric == "loss" {
        return Ok(loss);
    }
    let eval = report.eval.as_ref().ok_or_else(|| {
        Error::config(
            "tune.metric",
            format!("'{metric}' needs evaluation rows, and none were left after preprocessing"),
        )
    })?;
    serde_json::to_value(eval)
        .ok()
        .and_then(|v| v.get(metric).and_then(Value::as_f64))
        .ok_or_else(|| {
            Error::config(
                "tune.metric",
                format!("the evaluation has no '{metric}': {}", json!(eval)),
            )
        })
}

/// Whether a resumed run's checkpoint covers a trial's report (by trial name, 1-based report).
pub(super) type Covered<'a> = dyn Fn(&str, usize) -> bool + 'a;

/// `tune.jsonl` (a line per trial as it ends) and `metrics.jsonl` (a line per trial report),
/// written by worker 0 and flushed line by line, so a run can be watched. A resumed run appends.
pub(super) struct TuneLog {
    files: Option<(LineFile, LineFile)>,
}

struct LineFile {
    out: BufWriter<File>,
    path: PathBuf,
}

impl LineFile {
    fn open(path: PathBuf, append: bool) -> Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        Ok(LineFile {
            out: BufWriter::new(file),
            path,
        })
    }

    fn line(&mut self, value: &impl Serialize) -> Result<()> {
        let text = serde_json::to_string(value).map_err(|e| Error::Internal(e.to_string()))?;
        writeln!(self.out, "{text}")
            .and_then(|()| self.out.flush())
            .map_err(|e| Error::io(&self.path, e))
    }
}

impl TuneLog {
    /// Opens the files on worker 0 (`write`). A resumed run passes the trials its checkpoint
    /// finished (`tune.jsonl` is written afresh with them) and which trial epochs it covers
    /// (`metrics.jsonl` keeps those lines and drops the ones to be trained again).
    pub(super) fn open(
        write: bool,
        run_dir: &Path,
        resumed: Option<(&[TrialSummary], &Covered<'_>)>,
    ) -> Result<Self> {
        if !write {
            return Ok(TuneLog { files: None });
        }
        let metrics = run_dir.join("metrics.jsonl");
        if let Some((_, covered)) = &resumed {
            keep_lines(&metrics, |v| {
                let report = v["report"].as_u64().map_or(usize::MAX, |e| e as usize);
                covered(v["trial"].as_str().unwrap_or(""), report)
            })?;
        }
        let mut log = TuneLog {
            files: Some((
                LineFile::open(run_dir.join("tune.jsonl"), false)?,
                LineFile::open(metrics, resumed.is_some())?,
            )),
        };
        for summary in resumed.map(|(ended, _)| ended).unwrap_or_default() {
            log.trial(summary)?;
        }
        Ok(log)
    }

    /// The line of `trial`'s report `n` (1-based).
    pub(super) fn report(
        &mut self,
        trial: &str,
        n: usize,
        metric: f64,
        loss: f64,
        report: &TrainReport,
    ) -> Result<()> {
        let Some((_, metrics)) = &mut self.files else {
            return Ok(());
        };
        let mut line = json!({
            "kind": "trial",
            "trial": trial,
            "report": n,
            "epoch": report.position.epoch,
            "step": report.steps,
            "metric": metric,
            "loss": loss,
        });
        if let (Some(obj), Some(Value::Object(eval))) = (
            line.as_object_mut(),
            report
                .eval
                .as_ref()
                .and_then(|e| serde_json::to_value(e).ok()),
        ) {
            obj.extend(eval);
        }
        metrics.line(&line)
    }

    /// The line of a trial that ended.
    pub(super) fn trial(&mut self, summary: &TrialSummary) -> Result<()> {
        match &mut self.files {
            Some((tune, _)) => tune.line(summary),
            None => Ok(()),
        }
    }
}
