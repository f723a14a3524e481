//! A tune run's results for people: the table printed at the end and `tune.png`/`tune.svg`, each
//! trial's metric and training loss by epoch.

use std::fmt::Write as _;
use std::path::Path;

use millrace_operators::batch_job::{TrialStatus, TuneSummary};

use crate::curves::{Figure, Panel, Series};
use crate::{Error, Result};

/// The trials as a table, best first, then the best trial and where its model is.
pub fn table(tune: &TuneSummary, model_path: &str) -> String {
    let keys: Vec<&String> = tune
        .trials
        .first()
        .map(|t| t.config.keys().collect())
        .unwrap_or_default();
    let mut rows: Vec<Vec<String>> = vec![
        ["trial", "status", "reports", "epochs", tune.metric.as_str()]
            .iter()
            .map(|s| s.to_string())
            .chain(keys.iter().map(|k| k.to_string()))
            .collect(),
    ];
    let mut order: Vec<_> = tune.trials.iter().collect();
    order.sort_by(|a, b| {
        let (ra, rb) = (tune.mode.reward(a.metric), tune.mode.reward(b.metric));
        rb.total_cmp(&ra).then(a.trial.cmp(&b.trial))
    });
    for t in order {
        let status = match t.status {
            TrialStatus::Completed => "completed",
            TrialStatus::Stopped => "stopped",
        };
        let mut row = vec![
            t.trial.clone(),
            status.to_string(),
            t.reports.to_string(),
            format!("{:.2}", t.epochs),
            format!("{:.4}", t.metric),
        ];
        row.extend(keys.iter().map(|k| match t.config.get(*k) {
            Some(serde_json::Value::Number(n)) if n.is_f64() => {
                format!("{:.4e}", n.as_f64().unwrap_or(f64::NAN))
            }
            Some(v) => v.to_string(),
            None => String::new(),
        }));
        rows.push(row);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", cells.join("  ").trim_end());
    }
    let best = tune.trials.iter().find(|t| t.trial == tune.best);
    let _ = writeln!(
        out,
        "{} trials, {} stopped early, {} reports, {:.2} epochs trained; best {} ({} {:.4}), model: {model_path}",
        tune.trials.len(),
        tune.stopped_early,
        tune.reports,
        tune.epochs_trained,
        tune.best,
        tune.metric,
        best.map_or(f64::NAN, |t| t.metric),
    );
    out
}

/// Draws `tune.png` and `tune.svg` in `run_dir`: the tuned metric and the training loss of every
/// trial, by report (a stopped trial's line ends where it stopped).
pub fn write_curves(run_dir: &Path, tune: &TuneSummary) -> Result<()> {
    let series = |f: &dyn Fn(&millrace_operators::batch_job::TrialSummary) -> &Vec<f64>| {
        tune.trials
            .iter()
            .map(|t| {
                let points = f(t)
                    .iter()
                    .enumerate()
                    .map(|(e, v)| ((e + 1) as f64, *v))
                    .collect();
                Series::new(t.trial.clone(), points)
            })
            .collect::<Vec<_>>()
    };
    let mut metric = Panel::new(format!("{} ({:?}) by trial", tune.metric, tune.mode))
        .with_axes("report", tune.metric.clone());
    for s in series(&|t| &t.history) {
        metric = metric.with_series(s);
    }
    let mut loss = Panel::new("training loss by trial").with_axes("report", "loss");
    for s in series(&|t| &t.loss) {
        loss = loss.with_series(s);
    }
    Figure::new(format!("tune: {}", run_dir.display()))
        .with_panel(metric)
        .with_panel(loss)
        .write(&run_dir.join("tune.png"), Some(&run_dir.join("tune.svg")))
        .map_err(|e| Error::Curves(e.to_string()))
}
