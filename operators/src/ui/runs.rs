//! What the dashboard shows of run directories, read from their files as they are written: the
//! list of runs and one run in detail (its summary, curves, dead letters, trials and versions).

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

/// At most this many points of a curve are sent (evenly strided, the last one kept).
const MAX_POINTS: usize = 2_000;
/// Dead letters sent as a sample.
const DEAD_SAMPLE: usize = 50;
/// A run without a summary whose files changed this recently is taken to be running.
const LIVE_WITHIN: Duration = Duration::from_secs(30);

/// Where runs are: a directory of run directories, or one run directory.
#[derive(Clone, Debug)]
pub struct RunsSource {
    root: PathBuf,
    /// The run this process is running (its directory name), always shown as running until its
    /// summary is written.
    live: Option<String>,
}

impl RunsSource {
    /// The runs under `root` (or `root` itself when it is a run directory).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        RunsSource {
            root: root.into(),
            live: None,
        }
    }

    /// The runs of the directory that holds `run_dir`, with `run_dir` the one this process runs.
    pub fn live(run_dir: &Path) -> Self {
        let root = run_dir
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        let root = if root.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            root
        };
        RunsSource {
            root,
            live: run_dir.file_name().map(|n| n.to_string_lossy().to_string()),
        }
    }

    /// The run directories, newest first, by their id (directory name).
    fn dirs(&self) -> Vec<(String, PathBuf)> {
        // The root is one run once it has written more than its pipeline.
        if ["summary.json", "metrics.jsonl"]
            .iter()
            .any(|f| self.root.join(f).is_file())
        {
            let id = (self.root.file_name())
                .map_or_else(|| "run".into(), |n| n.to_string_lossy().to_string());
            return vec![(id, self.root.clone())];
        }
        let Ok(entries) = fs::read_dir(&self.root) else {
            return Vec::new();
        };
        let mut dirs: Vec<(SystemTime, String, PathBuf)> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir() && is_run(p))
            .filter_map(|p| {
                let id = p.file_name()?.to_string_lossy().to_string();
                Some((modified(&p), id, p))
            })
            .collect();
        dirs.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        dirs.into_iter().map(|(_, id, p)| (id, p)).collect()
    }

    /// The directory of run `id`, if it is one of the runs (ids are directory names, never paths).
    pub fn dir(&self, id: &str) -> Option<PathBuf> {
        self.dirs()
            .into_iter()
            .find(|(i, _)| i == id)
            .map(|(_, p)| p)
    }

    /// One line per run for the runs page.
    pub fn list(&self) -> Value {
        let runs: Vec<Value> = (self.dirs().into_iter())
            .map(|(id, dir)| {
                let summary = read_json(&dir.join("summary.json"));
                self.row(&id, &dir, summary.as_ref(), &pipeline_text(&dir))
            })
            .collect();
        json!({ "root": self.root.display().to_string(), "runs": runs })
    }

    /// A run's line: what it is, how it stands, its headline numbers and its files; from its
    /// `summary.json` (if written) and `pipeline.toml` text (empty if none).
    fn row(&self, id: &str, dir: &Path, summary: Option<&Value>, pipeline: &str) -> Value {
        let pipeline: toml::Table = toml::from_str(pipeline).unwrap_or_default();
        let section = |name: &str| {
            summary.is_some_and(|s| s.get(name).is_some_and(|v| !v.is_null()))
                || pipeline.contains_key(name)
        };
        let kind = if section("tune") {
            "tune"
        } else if section("stream") || summary.is_some_and(|s| s.get("topic").is_some()) {
            "stream"
        } else {
            "batch"
        };
        let status = match summary {
            Some(_) => "finished",
            None if self.live.as_deref() == Some(id) => "running",
            None if SystemTime::now()
                .duration_since(modified(dir))
                .is_ok_and(|d| d < LIVE_WITHIN) =>
            {
                "running"
            }
            None => "incomplete",
        };
        let s = summary.unwrap_or(&Value::Null);
        let name = (s.get("name").and_then(Value::as_str).map(str::to_string))
            .or_else(|| {
                pipeline
                    .get("name")
                    .and_then(|n| n.as_str())
                    .map(str::to_string)
            })
            .unwrap_or_else(|| id.to_string());
        let rows_per_s = s
            .get("e2e_rows_per_s")
            .or_else(|| s.get("rows_per_s"))
            .cloned();
        let metrics = match s.get("eval").filter(|e| !e.is_null()) {
            Some(eval) => eval.clone(),
            None => s.get("prequential").cloned().unwrap_or(Value::Null),
        };
        json!({
            "id": id,
            "name": name,
            "kind": kind,
            "status": status,
            "modified_s": modified(dir).duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            "wall_s": s.get("wall_s"),
            "rows_read": s.get("rows_read"),
            "rows_per_s": rows_per_s,
            "metrics": metrics,
            "artifacts": artifacts(dir),
        })
    }

    /// Everything the run page shows of run `id`; `None` when there is no such run.
    pub fn detail(&self, id: &str) -> Option<Value> {
        let dir = self.dir(id)?;
        let summary = read_json(&dir.join("summary.json"));
        let pipeline = pipeline_text(&dir);
        let mut out = self.row(id, &dir, summary.as_ref(), &pipeline);
        let summary = summary.unwrap_or(Value::Null);
        let curves = Curves::read(&dir.join("metrics.jsonl"));
        let (dead_total, dead_sample) = dead_letters(&dir.join("dead_letters.jsonl"));
        let fields = [
            ("summary", summary.clone()),
            ("pipeline", Value::from(pipeline)),
            ("train", Value::from(thin(curves.train))),
            ("throughput", Value::from(thin(curves.throughput))),
            ("freshness", Value::from(thin(curves.freshness))),
            ("eval", Value::from(thin(curves.eval))),
            (
                "dead_letters",
                json!({ "total": dead_total, "sample": dead_sample }),
            ),
            (
                "operators",
                summary.get("operators").cloned().unwrap_or(Value::Null),
            ),
            (
                "checkpoints",
                summary.get("checkpoints").cloned().unwrap_or(Value::Null),
            ),
            (
                "trials",
                Value::from(json_lines(&dir.join("tune.jsonl"), usize::MAX)),
            ),
            ("versions", Value::from(versions(&dir.join("models")))),
        ];
        if let Value::Object(map) = &mut out {
            for (key, value) in fields {
                map.insert(key.to_string(), value);
            }
        }
        Some(out)
    }
}

/// A run directory holds at least one of the files a run writes first or last.
fn is_run(dir: &Path) -> bool {
    ["pipeline.toml", "summary.json", "metrics.jsonl"]
        .iter()
        .any(|f| dir.join(f).is_file())
}

/// The newest modification time of the directory and the files a run keeps writing.
fn modified(dir: &Path) -> SystemTime {
    ["", "metrics.jsonl", "summary.json", "tune.jsonl"]
        .iter()
        .filter_map(|f| fs::metadata(dir.join(f)).and_then(|m| m.modified()).ok())
        .max()
        .unwrap_or(UNIX_EPOCH)
}

/// The run's `pipeline.toml`, or nothing.
fn pipeline_text(dir: &Path) -> String {
    fs::read_to_string(dir.join("pipeline.toml")).unwrap_or_default()
}

fn read_json(path: &Path) -> Option<Value> {
    serde_json::from_str(&fs::read_to_string(path).ok()?).ok()
}

/// The run's files (and folders) a user may open, by name.
fn artifacts(dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let dir = e.path().is_dir();
            (!name.starts_with('.')).then(|| if dir { format!("{name}/") } else { name })
        })
        .collect();
    names.sort();
    names
}

/// The first `limit` lines of a JSON-lines file that parse.
fn json_lines(path: &Path, limit: usize) -> Vec<Value> {
    let Ok(file) = fs::File::open(path) else {
        return Vec::new();
    };
    (BufReader::new(file).lines())
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str(&l).ok())
        .take(limit)
        .collect()
}

/// A run's `metrics.jsonl` as the charts' points.
#[derive(Default)]
struct Curves {
    /// Training loss, `[step, loss]`.
    train: Vec<Value>,
    /// Each evaluation line's numbers.
    eval: Vec<Value>,
    /// Rows trained per second between training lines, `[step, rows/s]`: from a stream's
    /// `rows_total`, or a batch run's rows since the previous line.
    throughput: Vec<Value>,
    /// A stream's event-to-live delays of the versions that went live since the line before,
    /// `[step, p50 ms, max ms]`.
    freshness: Vec<Value>,
}

impl Curves {
    fn read(path: &Path) -> Curves {
        let mut curves = Curves::default();
        // The previous training line's `elapsed_s` and `rows_total`.
        let mut last: Option<(f64, f64)> = None;
        for line in json_lines(path, usize::MAX) {
            let number = |k: &str| line.get(k).and_then(Value::as_f64);
            let step = line.get("step").cloned().unwrap_or(Value::Null);
            // On a stream's train lines, or on freshness lines of their own.
            if let (Some(p50), Some(max)) = (number("freshness_ms_p50"), number("freshness_ms_max"))
            {
                curves.freshness.push(json!([step, p50, max]));
            }
            match line.get("kind").and_then(Value::as_str) {
                Some("train") => {
                    if let Some(loss) = line.get("loss") {
                        curves.train.push(json!([step, loss]));
                    }
                    let Some(t) = number("elapsed_s") else {
                        continue;
                    };
                    let (t0, total0) = last.unwrap_or((0.0, 0.0));
                    let rows = match number("rows_total") {
                        Some(total) => total - total0,
                        None => number("rows").unwrap_or(0.0),
                    };
                    if t > t0 {
                        curves.throughput.push(json!([step, rows / (t - t0)]));
                    }
                    last = Some((t, number("rows_total").unwrap_or(0.0)));
                }
                Some("eval") => {
                    let numbers: Map<String, Value> = (line.as_object().into_iter().flatten())
                        .filter(|(_, v)| v.is_number())
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    curves.eval.push(Value::Object(numbers));
                }
                _ => {}
            }
        }
        curves
    }
}

/// At most [`MAX_POINTS`] of `points`, evenly strided, keeping the last.
fn thin(points: Vec<Value>) -> Vec<Value> {
    if points.len() <= MAX_POINTS {
        return points;
    }
    let stride = points.len().div_ceil(MAX_POINTS);
    let last = points.len() - 1;
    (points.into_iter().enumerate())
        .filter(|(i, _)| i % stride == 0 || *i == last)
        .map(|(_, p)| p)
        .collect()
}

/// How many dead letters a run wrote and the first [`DEAD_SAMPLE`] of them.
fn dead_letters(path: &Path) -> (u64, Vec<Value>) {
    let Ok(file) = fs::File::open(path) else {
        return (0, Vec::new());
    };
    let mut total = 0;
    let mut sample = Vec::new();
    for line in BufReader::new(file).lines().map_while(Result::ok) {
        total += 1;
        if sample.len() < DEAD_SAMPLE
            && let Ok(v) = serde_json::from_str(&line)
        {
            sample.push(v);
        }
    }
    (total, sample)
}

/// The model versions a streaming run has published (`models/<version>/`), in order.
fn versions(dir: &Path) -> Vec<u64> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut versions: Vec<u64> = entries
        .flatten()
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().to_string_lossy().parse().ok())
        .collect();
    versions.sort_unstable();
    versions
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thinning_keeps_the_last_point_and_the_bound() {
        let points: Vec<Value> = (0..4_321).map(Value::from).collect();
        let kept = thin(points);
        assert!(kept.len() <= MAX_POINTS + 1);
        assert_eq!(kept.first(), Some(&Value::from(0)));
        assert_eq!(kept.last(), Some(&Value::from(4_320)));
    }

    #[test]
    fn a_run_directory_is_listed_with_its_curves_and_dead_letters() {
        let root = std::env::temp_dir().join(format!("millrace-ui-runs-{}", std::process::id()));
        let run = root.join("r1");
        fs::create_dir_all(run.join("models/2")).unwrap();
        fs::create_dir_all(run.join("models/1")).unwrap();
        fs::write(run.join("pipeline.toml"), "name = \"fraud\"\n\n[stream]\n").unwrap();
        fs::write(
            run.join("metrics.jsonl"),
            "{\"kind\":\"train\",\"step\":10,\"loss\":0.5,\"elapsed_s\":2.0,\"rows_total\":100}\n\
             {\"kind\":\"eval\",\"step\":10,\"accuracy\":0.9,\"note\":\"x\"}\nnot json\n\
             {\"kind\":\"train\",\"step\":20,\"loss\":0.4,\"elapsed_s\":4.0,\"rows_total\":400,\"freshness_ms_p50\":30,\"freshness_ms_max\":90}\n\
             {\"kind\":\"freshness\",\"step\":23,\"freshness_ms_p50\":40,\"freshness_ms_max\":50}\n",
        )
        .unwrap();
        fs::write(
            run.join("dead_letters.jsonl"),
            "{\"reason\":\"a\"}\n{\"reason\":\"b\"}\n",
        )
        .unwrap();
        let source = RunsSource::new(&root);
        let list = source.list();
        assert_eq!(list["runs"][0]["id"], "r1");
        assert_eq!(list["runs"][0]["name"], "fraud");
        assert_eq!(list["runs"][0]["kind"], "stream");
        assert_eq!(list["runs"][0]["status"], "running");
        let detail = source.detail("r1").unwrap();
        assert_eq!(detail["train"], json!([[10, 0.5], [20, 0.4]]));
        // 300 rows in the 2 s between the two lines.
        assert_eq!(detail["throughput"], json!([[10, 50.0], [20, 150.0]]));
        assert_eq!(
            detail["freshness"],
            json!([[20, 30.0, 90.0], [23, 40.0, 50.0]])
        );
        assert_eq!(detail["eval"], json!([{"step": 10, "accuracy": 0.9}]));
        assert_eq!(detail["dead_letters"]["total"], 2);
        assert_eq!(detail["versions"], json!([1, 2]));
        assert!(source.detail("../r1").is_none() && source.detail("r2").is_none());
        fs::write(
            run.join("summary.json"),
            "{\"name\":\"fraud\",\"topic\":\"t\",\"rows_per_s\":5.0}",
        )
        .unwrap();
        assert_eq!(source.list()["runs"][0]["status"], "finished");
        assert_eq!(source.list()["runs"][0]["rows_per_s"], 5.0);
        fs::remove_dir_all(&root).unwrap();
    }
}
