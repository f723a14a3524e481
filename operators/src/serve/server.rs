//! The HTTP server (axum on tokio).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::model::ServedModel;
use crate::{Error, Result};

/// Server limits.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Most instances in one request.
    pub max_rows: usize,
    /// Largest request body, bytes.
    pub max_body_bytes: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            max_rows: 10_000,
            max_body_bytes: 16 * 1024 * 1024,
        }
    }
}

struct AppState {
    model: ServedModel,
    options: ServeOptions,
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({"error": message.into()}))).into_response()
}

async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    axum::Json(json!({"status": "ok", "model": state.model.name, "version": state.model.version}))
        .into_response()
}

async fn predict(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let request: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("request body is not valid JSON: {e}"),
            );
        }
    };
    let Some(instances) = request.get("instances").and_then(Value::as_array) else {
        return error(
            StatusCode::BAD_REQUEST,
            "request must be a JSON object with an \"instances\" list of records",
        );
    };
    if instances.len() > state.options.max_rows {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "{} instances in one request; the limit is {}",
                instances.len(),
                state.options.max_rows
            ),
        );
    }
    if instances.is_empty() {
        return axum::Json(json!({"predictions": []})).into_response();
    }
    match state.model.predict(instances).await {
        Ok(predictions) => axum::Json(json!({"predictions": predictions})).into_response(),
        Err(e) => error(
            StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            e.message,
        ),
    }
}

/// The server's routes for `model`.
pub fn router(model: ServedModel, options: ServeOptions) -> Router {
    let limit = options.max_body_bytes;
    let state = Arc::new(AppState { model, options });
    Router::new()
        .route("/v1/predict", post(predict))
        .route("/healthz", get(healthz))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// Serves `model` on `addr` until Ctrl-C or SIGTERM, then drains in-flight requests.
/// `on_ready` gets the bound address (useful with port 0).
pub async fn serve(
    model: ServedModel,
    addr: SocketAddr,
    options: ServeOptions,
    on_ready: impl FnOnce(SocketAddr),
) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        Error::Serve(format!(
            "cannot listen on {addr}: {e} (is another server using it? pick another --addr)"
        ))
    })?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::Serve(e.to_string()))?;
    tracing::info!(model = %model.name, version = model.version, addr = %local, "serving");
    on_ready(local);
    axum::serve(listener, router(model, options))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(|e| Error::Serve(e.to_string()))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: draining in-flight requests");
}
