//! `[tracking]`: where a run is recorded — an MLflow tracking server.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The `[tracking]` section: one MLflow run per pipeline run (a tune run's trials as its child
/// runs), the pipeline's keys as parameters, `metrics.jsonl` as metric histories, the model, the
/// curves, the summary and the pipeline as artifacts, the model as a registered model version.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrackingSpec {
    /// The tracking server, `http://host:port` (default: `$MLFLOW_TRACKING_URI`).
    #[serde(default)]
    pub uri: Option<String>,
    /// The MLflow experiment (created when missing; default: the pipeline's name).
    #[serde(default)]
    pub experiment: Option<String>,
    /// The registered model the run's model becomes a version of (default: the pipeline's
    /// name); `register = false` registers nothing.
    #[serde(default)]
    pub model_name: Option<String>,
    /// Register the model (each published version, in a streaming job).
    #[serde(default = "super::default_true")]
    pub register: bool,
    /// Tries of a request that fails for want of the server (doubling the wait from
    /// `backoff_ms` between tries) before the run's record is spooled in the run directory for
    /// `millrace track push`.
    #[serde(default = "default_tries")]
    pub tries: u32,
    /// The first wait between tries, milliseconds.
    #[serde(default = "default_backoff_ms")]
    pub backoff_ms: u64,
}

fn default_tries() -> u32 {
    5
}

fn default_backoff_ms() -> u64 {
    500
}

impl TrackingSpec {
    /// The server to record to: `uri`, else `$MLFLOW_TRACKING_URI`.
    pub fn resolved_uri(&self) -> Result<String> {
        let uri = self
            .uri
            .clone()
            .or_else(|| std::env::var("MLFLOW_TRACKING_URI").ok())
            .filter(|u| !u.trim().is_empty())
            .ok_or_else(|| {
                Error::config(
                    "tracking.uri",
                    "no tracking server: set [tracking] uri = \"http://host:5000\" or the \
                     MLFLOW_TRACKING_URI environment variable",
                )
            })?;
        if !uri.starts_with("http://") && !uri.starts_with("https://") {
            return Err(Error::config(
                "tracking.uri",
                format!(
                    "'{uri}' is not an http(s) URL of an MLflow tracking server (millrace talks \
                     to the server's REST API; a file store needs `mlflow server` in front of it)"
                ),
            ));
        }
        if self.tries == 0 {
            return Err(Error::config("tracking.tries", "must be at least 1"));
        }
        Ok(uri.trim_end_matches('/').to_owned())
    }
}
