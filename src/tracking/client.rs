//! A client of the MLflow tracking server's REST API (`/api/2.0/mlflow/…`): experiments, runs,
//! batched parameters and metrics, artifacts through the server (`mlflow-artifacts:`), and the
//! model registry. A request that fails for want of the server is tried again, the wait
//! doubling; one the server refuses (4xx) fails at once with the server's message.

use std::time::Duration;

use serde_json::{Value, json};

use crate::{Error, Result};

/// MLflow's limits per `runs/log-batch` request.
const MAX_METRICS: usize = 1000;
const MAX_PARAMS: usize = 100;
/// MLflow's longest parameter value.
pub const MAX_PARAM_VALUE: usize = 6000;

/// One metric point.
#[derive(Clone, Debug, PartialEq)]
pub struct Metric {
    /// The metric's name.
    pub key: String,
    /// Its value.
    pub value: f64,
    /// The step it was measured at.
    pub step: i64,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
}

/// A run as the server describes it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RunInfo {
    /// The run's id.
    pub run_id: String,
    /// Its experiment's id.
    pub experiment_id: String,
    /// Where its artifacts go (`mlflow-artifacts:/…` when the server proxies them).
    pub artifact_uri: String,
}

/// Why a call failed: the server could not be reached (worth trying later), or it refused.
#[derive(Debug)]
pub enum CallError {
    /// No answer, or a 5xx, after every try.
    Unreachable(String),
    /// The server answered with an error.
    Refused(String),
}

impl From<CallError> for Error {
    fn from(e: CallError) -> Self {
        match e {
            CallError::Unreachable(m) | CallError::Refused(m) => Error::Tracking(m),
        }
    }
}

/// The REST client of one tracking server.
pub struct Mlflow {
    base: String,
    http: reqwest::Client,
    rt: tokio::runtime::Runtime,
    tries: u32,
    backoff: Duration,
}

impl Mlflow {
    /// A client of the server at `base` (`http://host:port`).
    pub fn new(base: &str, tries: u32, backoff: Duration) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Tracking(format!("cannot start the tracking client: {e}")))?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| Error::Tracking(format!("cannot start the tracking client: {e}")))?;
        Ok(Mlflow {
            base: base.trim_end_matches('/').to_owned(),
            http,
            rt,
            tries: tries.max(1),
            backoff,
        })
    }

    /// The server's address.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `method path` with a JSON body (or raw bytes), tried again while the server is away.
    fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Body<'_>,
    ) -> std::result::Result<Value, CallError> {
        let url = format!("{}{path}", self.base);
        let mut wait = self.backoff;
        let mut last = String::new();
        for attempt in 1..=self.tries {
            let mut request = self.http.request(method.clone(), &url);
            request = match body {
                Body::None => request,
                Body::Json(v) => request.json(v),
                Body::Bytes(b) => request.body(b.to_vec()),
            };
            let answer = self.rt.block_on(async {
                let response = request.send().await?;
                let status = response.status();
                let text = response.text().await?;
                Ok::<_, reqwest::Error>((status, text))
            });
            match answer {
                Ok((status, text)) if status.is_success() => {
                    return Ok(serde_json::from_str(&text).unwrap_or(Value::Null));
                }
                Ok((status, text)) if status.is_client_error() => {
                    return Err(CallError::Refused(format!(
                        "{method} {url}: {status}: {}",
                        server_message(&text)
                    )));
                }
                Ok((status, text)) => last = format!("{status}: {}", server_message(&text)),
                Err(e) => last = e.to_string(),
            }
            if attempt < self.tries {
                tracing::warn!(url = %url, attempt, error = %last, "tracking server: trying again in {wait:?}");
                std::thread::sleep(wait);
                wait *= 2;
            }
        }
        Err(CallError::Unreachable(format!(
            "{method} {url}: {last} ({} tries)",
            self.tries
        )))
    }

    fn get(&self, path: &str) -> std::result::Result<Value, CallError> {
        self.call(reqwest::Method::GET, path, Body::None)
    }

    fn post(&self, path: &str, body: &Value) -> std::result::Result<Value, CallError> {
        self.call(reqwest::Method::POST, path, Body::Json(body))
    }

    /// The id of experiment `name`, created when it does not exist.
    pub fn experiment(&self, name: &str) -> std::result::Result<String, CallError> {
        let path = format!(
            "/api/2.0/mlflow/experiments/get-by-name?experiment_name={}",
            encode(name)
        );
        match self.get(&path) {
            Ok(v) => id_of(&v["experiment"]["experiment_id"]),
            Err(CallError::Refused(m)) if m.contains("RESOURCE_DOES_NOT_EXIST") => {
                let v = self.post(
                    "/api/2.0/mlflow/experiments/create",
                    &json!({ "name": name }),
                )?;
                id_of(&v["experiment_id"])
            }
            Err(e) => Err(e),
        }
    }

    /// Creates a run in `experiment` (`RUNNING`).
    pub fn create_run(
        &self,
        experiment: &str,
        name: &str,
        tags: &[(String, String)],
        start_ms: i64,
    ) -> std::result::Result<RunInfo, CallError> {
        let tags: Vec<Value> = tags
            .iter()
            .map(|(k, v)| json!({"key": k, "value": v}))
            .collect();
        let v = self.post(
            "/api/2.0/mlflow/runs/create",
            &json!({"experiment_id": experiment, "run_name": name, "start_time": start_ms, "tags": tags}),
        )?;
        let info = &v["run"]["info"];
        Ok(RunInfo {
            run_id: id_of(&info["run_id"])?,
            experiment_id: id_of(&info["experiment_id"])?,
            artifact_uri: id_of(&info["artifact_uri"])?,
        })
    }

    /// Logs parameters (values cut at MLflow's limit) in batches.
    pub fn log_params(
        &self,
        run: &str,
        params: &[(String, String)],
    ) -> std::result::Result<(), CallError> {
        for chunk in params.chunks(MAX_PARAMS) {
            let params: Vec<Value> = chunk
                .iter()
                .map(|(k, v)| json!({"key": k, "value": clip(v)}))
                .collect();
            self.post(
                "/api/2.0/mlflow/runs/log-batch",
                &json!({"run_id": run, "params": params}),
            )?;
        }
        Ok(())
    }

    /// Logs metric points in batches; `done` counts the points already logged (kept by the
    /// caller so that a retry after an outage logs none twice).
    pub fn log_metrics(
        &self,
        run: &str,
        metrics: &[Metric],
        done: &mut usize,
    ) -> std::result::Result<(), CallError> {
        while *done < metrics.len() {
            let chunk = &metrics[*done..(*done + MAX_METRICS).min(metrics.len())];
            let points: Vec<Value> = chunk
                .iter()
                .map(|m| json!({"key": m.key, "value": m.value, "step": m.step, "timestamp": m.timestamp}))
                .collect();
            self.post(
                "/api/2.0/mlflow/runs/log-batch",
                &json!({"run_id": run, "metrics": points}),
            )?;
            *done += chunk.len();
        }
        Ok(())
    }

    /// Sets tags on a run.
    pub fn set_tags(
        &self,
        run: &str,
        tags: &[(String, String)],
    ) -> std::result::Result<(), CallError> {
        let tags: Vec<Value> = tags
            .iter()
            .map(|(k, v)| json!({"key": k, "value": v}))
            .collect();
        self.post(
            "/api/2.0/mlflow/runs/log-batch",
            &json!({"run_id": run, "tags": tags}),
        )?;
        Ok(())
    }

    /// Uploads `bytes` as the artifact `path` of the run whose artifacts are at `artifact_uri`
    /// (`mlflow-artifacts:/…`, the server's proxied store).
    pub fn upload(
        &self,
        artifact_uri: &str,
        path: &str,
        bytes: &[u8],
    ) -> std::result::Result<(), CallError> {
        let Some(root) = artifact_uri.strip_prefix("mlflow-artifacts:") else {
            return Err(CallError::Refused(format!(
                "the server keeps this run's artifacts at {artifact_uri}, which its REST API does \
                 not write; start it with artifact proxying (`mlflow server \
                 --artifacts-destination …`, the default)"
            )));
        };
        let root = root.trim_start_matches('/');
        self.call(
            reqwest::Method::PUT,
            &format!("/api/2.0/mlflow-artifacts/artifacts/{root}/{path}"),
            Body::Bytes(bytes),
        )?;
        Ok(())
    }

    /// Registers the artifacts at `source` (of run `run`) as a new version of model `name`
    /// (created when missing); returns the version.
    pub fn register(
        &self,
        name: &str,
        source: &str,
        run: &str,
    ) -> std::result::Result<String, CallError> {
        match self.post(
            "/api/2.0/mlflow/registered-models/create",
            &json!({"name": name}),
        ) {
            Ok(_) => {}
            Err(CallError::Refused(m)) if m.contains("RESOURCE_ALREADY_EXISTS") => {}
            Err(e) => return Err(e),
        }
        let v = self.post(
            "/api/2.0/mlflow/model-versions/create",
            &json!({"name": name, "source": source, "run_id": run}),
        )?;
        id_of(&v["model_version"]["version"])
    }

    /// Ends a run with `status` (`FINISHED` or `FAILED`).
    pub fn end_run(
        &self,
        run: &str,
        status: &str,
        end_ms: i64,
    ) -> std::result::Result<(), CallError> {
        self.post(
            "/api/2.0/mlflow/runs/update",
            &json!({"run_id": run, "status": status, "end_time": end_ms}),
        )?;
        Ok(())
    }
}

/// A request's body.
#[derive(Clone, Copy)]
enum Body<'a> {
    None,
    Json(&'a Value),
    Bytes(&'a [u8]),
}

fn id_of(v: &Value) -> std::result::Result<String, CallError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        other => Err(CallError::Refused(format!(
            "the tracking server answered without an id: {other}"
        ))),
    }
}

/// The server's `message` (with its `error_code`), else the body.
fn server_message(body: &str) -> String {
    match serde_json::from_str::<Value>(body) {
        Ok(v) if v["message"].is_string() => format!(
            "{} {}",
            v["error_code"].as_str().unwrap_or(""),
            v["message"].as_str().unwrap_or("")
        ),
        _ => body.chars().take(300).collect(),
    }
}

/// `value` cut to MLflow's longest parameter value.
fn clip(value: &str) -> String {
    if value.len() <= MAX_PARAM_VALUE {
        return value.to_owned();
    }
    let mut end = MAX_PARAM_VALUE - 3;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &value[..end])
}

/// Percent-encodes a query value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
