//! What a run directory holds, as MLflow wants it: the pipeline's keys as parameters,
//! `metrics.jsonl` as metric points, the files to upload, the model bundles to register.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::client::{CallError, Metric, Mlflow, RunInfo};
use super::now_ms;

/// Where versions that could not be recorded while the job ran wait for the end (or for
/// `millrace track push`), in the run directory.
pub(super) const PENDING: &str = "tracking-pending";

/// Every key of the pipeline file as an MLflow parameter: `section.key` → its value (strings
/// bare, everything else as TOML writes it).
pub(super) fn params(text: &str) -> Vec<(String, String)> {
    fn walk(prefix: &str, value: &toml::Value, out: &mut Vec<(String, String)>) {
        match value {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, v, out);
                }
            }
            toml::Value::String(s) => out.push((prefix.to_owned(), s.clone())),
            other => out.push((prefix.to_owned(), other.to_string())),
        }
    }
    let mut out = Vec::new();
    if let Ok(doc) = toml::from_str::<toml::Table>(text) {
        walk("", &toml::Value::Table(doc), &mut out);
    }
    out
}

pub(super) fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub(super) fn metrics_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// A line's numeric fields but `step` as metric points at the line's step, keyed
/// `<prefix><field>`.
fn points(line: &Value, prefix: &str, skip: &[&str], at: i64, out: &mut Vec<Metric>) {
    let step = line["step"].as_i64().unwrap_or(0);
    for (field, value) in line.as_object().into_iter().flatten() {
        if field == "step" || skip.contains(&field.as_str()) {
            continue;
        }
        if let Some(x) = value.as_f64().filter(|x| x.is_finite()) {
            out.push(Metric {
                key: format!("{prefix}{field}"),
                value: x,
                step,
                timestamp: at,
            });
        }
    }
}

/// The run's own lines of `metrics.jsonl` (all but a tune run's trial lines): `train/loss`,
/// `eval/accuracy`, … at each line's step.
pub(super) fn run_metrics(lines: &[Value]) -> Vec<Metric> {
    let at = now_ms();
    let mut out = Vec::new();
    for line in lines {
        let kind = line["kind"].as_str().unwrap_or("metric");
        if kind != "trial" {
            points(line, &format!("{kind}/"), &[], at, &mut out);
        }
    }
    out
}

/// A tune run's best trial: its final evaluation (`summary.json`'s `eval`) as `best/<field>` at
/// step 0.
pub(super) fn best_metrics(summary: &Value) -> Vec<Metric> {
    let mut out = Vec::new();
    points(&summary["eval"], "best/", &["rows"], now_ms(), &mut out);
    out
}

/// A tune trial's lines of `metrics.jsonl`: its metric, loss and evaluation at each report.
pub(super) fn trial_metrics(lines: &[Value], trial: &str) -> Vec<Metric> {
    let at = now_ms();
    let mut out = Vec::new();
    for line in lines
        .iter()
        .filter(|l| l["kind"] == "trial" && l["trial"] == trial)
    {
        points(line, "", &[], at, &mut out);
    }
    out
}

/// The run directory's files to upload, with their artifact paths: the pipeline, the summary,
/// the curves, a tune run's log and plot (the models go with their registration).
pub(super) fn artifacts(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    for name in [
        "pipeline.toml",
        "summary.json",
        "curves.png",
        "curves.svg",
        "tune.jsonl",
        "tune.png",
        "tune.svg",
    ] {
        if dir.join(name).is_file() {
            out.push((dir.join(name), name.to_owned()));
        }
    }
    out
}

/// The model bundles as (artifact folder, local folder), in the order they were made: each
/// version a streaming job published (`models/<v>`, `branches/<name>/models/<v>`; on disk, or
/// waiting in `tracking-pending/`), then `model` (the final one; a tune run's best).
pub(super) fn models(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut versions: BTreeMap<(String, u64), PathBuf> = BTreeMap::new();
    let mut scan = |root: &Path| {
        let mut folders = vec![("models".to_owned(), root.join("models"))];
        for b in std::fs::read_dir(root.join("branches"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = b.file_name().to_string_lossy().into_owned();
            folders.push((format!("branches/{name}/models"), b.path().join("models")));
        }
        for (prefix, folder) in folders {
            for e in std::fs::read_dir(&folder).into_iter().flatten().flatten() {
                let v = e.file_name().to_string_lossy().parse::<u64>();
                if let (Ok(v), true) = (v, e.path().join("model.json").is_file()) {
                    versions.entry((prefix.clone(), v)).or_insert(e.path());
                }
            }
        }
    };
    scan(dir);
    scan(&dir.join(PENDING));
    let mut out: Vec<(String, PathBuf)> = versions
        .into_iter()
        .map(|((prefix, v), local)| (format!("{prefix}/{v}"), local))
        .collect();
    for local in [dir.join("model"), dir.join("best/model")] {
        if local.join("model.json").is_file() {
            out.push(("model".to_owned(), local));
            break;
        }
    }
    out
}

/// The files of a folder (not recursive), by name.
pub(super) fn read_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_file())
        .filter_map(|e| {
            Some((
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).ok()?,
            ))
        })
        .collect();
    files.sort_by(|a, b| a.0.cmp(&b.0));
    files
}

/// Uploads a model bundle's `files` as the artifact folder `path` of `run` and registers it as
/// a version of `name`, when there is one (a branch's versions, `branches/<b>/models/<v>`, as
/// `<name>-<b>`).
pub(super) fn record_version(
    client: &Mlflow,
    run: &RunInfo,
    name: Option<&str>,
    path: &str,
    files: &[(String, Vec<u8>)],
) -> std::result::Result<(), CallError> {
    for (file, bytes) in files {
        client.upload(&run.artifact_uri, &format!("{path}/{file}"), bytes)?;
    }
    let Some(name) = name else {
        return Ok(());
    };
    let model = match path
        .strip_prefix("branches/")
        .and_then(|p| p.split('/').next())
    {
        Some(branch) => format!("{name}-{branch}"),
        None => name.to_owned(),
    };
    let source = format!("{}/{path}", run.artifact_uri);
    let version = client.register(&model, &source, &run.run_id)?;
    tracing::info!(model = %model, version = %version, source = %source, "registered");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pipeline_key_is_a_parameter() {
        let p = params(
            "name = \"q\"\n[train]\nlr = 0.01\nmodel = { kind = \"mlp\", hidden = [8, 4] }\n[tune.space]\n\"train.lr\" = { uniform = [0.1, 0.2] }\n",
        );
        let get = |k: &str| p.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
        assert_eq!(get("name"), Some("q"));
        assert_eq!(get("train.lr"), Some("0.01"));
        assert_eq!(get("train.model.kind"), Some("mlp"));
        assert_eq!(get("train.model.hidden"), Some("[8, 4]"));
        assert_eq!(get("tune.space.train.lr.uniform"), Some("[0.1, 0.2]"));
    }

    #[test]
    fn metrics_lines_become_points_at_their_steps() {
        let lines = vec![
            serde_json::json!({"kind": "train", "step": 50, "loss": 0.5, "rows": 100}),
            serde_json::json!({"kind": "eval", "step": 100, "epoch": 0, "accuracy": 0.9}),
            serde_json::json!({"kind": "trial", "trial": "trial-001", "step": 7, "metric": 0.8}),
        ];
        let m = run_metrics(&lines);
        let keys: Vec<(&str, i64, f64)> = m
            .iter()
            .map(|m| (m.key.as_str(), m.step, m.value))
            .collect();
        assert_eq!(
            keys,
            vec![
                ("train/loss", 50, 0.5),
                ("train/rows", 50, 100.0),
                ("eval/accuracy", 100, 0.9),
                ("eval/epoch", 100, 0.0)
            ]
        );
        let t = trial_metrics(&lines, "trial-001");
        assert_eq!(t.len(), 1);
        assert_eq!(
            (t[0].key.as_str(), t[0].step, t[0].value),
            ("metric", 7, 0.8)
        );
    }
}
