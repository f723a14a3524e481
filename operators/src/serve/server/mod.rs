//! The HTTP server (axum on tokio): the Open Inference Protocol (KServe v2) and `/v1/predict`,
//! with limits, bearer-token auth, Prometheus metrics and graceful shutdown.

// Handlers return early with a ready `Response` as the error (axum responses are large by design).
#![allow(clippy::result_large_err)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::access::{BearerToken, exposure_refused};
use super::arrow_io::{ARROW_STREAM, decode_stream, encode_predictions};
use super::batcher::BatcherOptions;
use super::metrics::ServeMetrics;
use super::model::{Predictions, RequestError, ServedModel};
use super::protocol::v1::v1_request_to_batch;
use super::registry::ModelRegistry;
use super::tls::{HANDSHAKE_TIMEOUT, TlsFiles, incoming};
use super::v2::{
    HEADER_LENGTH, InferenceRequest, InferenceResponse, binary_inputs, model_metadata,
    request_to_batch_filling, response_body, response_outputs, split_body,
};
use crate::{Error, Result};

mod features;
mod guard;
mod infer;

use self::guard::guard;
use self::infer::{infer_latest, infer_version};

/// Server limits and behaviour.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Most rows (instances) in one request (more: 413).
    pub max_rows: usize,
    /// Largest request body in bytes (more: 413).
    pub max_body_bytes: usize,
    /// Requests handled at once; more get 503 with `Retry-After` instead of queueing without bound.
    pub max_concurrent: usize,
    /// A request taking longer gets 504.
    pub request_timeout: Duration,
    /// When set, every route but the health checks needs `Authorization: Bearer <token>`.
    pub auth_token: Option<String>,
    /// Serve without a token on a non-loopback address. Off by default: such a server refuses to
    /// start (anyone who can reach the address could use the models).
    pub allow_unauthenticated: bool,
    /// Serve HTTPS, and gRPC over TLS on [`ServeOptions::grpc_addr`], with this certificate and
    /// key (PEM); checked before the listeners bind.
    pub tls: Option<TlsFiles>,
    /// Log every request with `tracing` (target `millrace::access`).
    pub access_log: bool,
    /// Dynamic batching of each model version.
    pub batching: BatcherOptions,
    /// Poll the model directories for new versions this often (None: no hot swap from disk).
    pub watch_interval: Option<Duration>,
    /// Also serve the v2 gRPC protocol (`inference.GRPCInferenceService`) on this address, with
    /// the same models, limits, auth and metrics.
    pub grpc_addr: Option<SocketAddr>,
    /// The runs the dashboard at `/ui` shows next to the server page (None: the server page only).
    pub ui_runs: Option<crate::ui::RunsSource>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            max_rows: 10_000,
            max_body_bytes: 16 * 1024 * 1024,
            max_concurrent: 4096,
            request_timeout: Duration::from_secs(30),
            auth_token: None,
            allow_unauthenticated: false,
            tls: None,
            access_log: false,
            batching: BatcherOptions::default(),
            watch_interval: Some(Duration::from_millis(500)),
            grpc_addr: None,
            ui_runs: None,
        }
    }
}

/// What every route of both protocols shares: the models, the limits, the metrics, the count of
/// requests in flight and the bearer token.
pub(crate) struct AppState {
    pub(crate) registry: Arc<ModelRegistry>,
    pub(crate) options: ServeOptions,
    pub(crate) metrics: ServeMetrics,
    pub(crate) in_flight: AtomicUsize,
    pub(crate) token: Option<BearerToken>,
}

impl AppState {
    pub(crate) fn new(registry: Arc<ModelRegistry>, options: ServeOptions) -> Arc<Self> {
        let token = options.auth_token.as_deref().map(BearerToken::new);
        Arc::new(AppState {
            registry,
            options,
            metrics: ServeMetrics::new(),
            in_flight: AtomicUsize::new(0),
            token,
        })
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({"error": message.into()}))).into_response()
}

fn request_error(e: RequestError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = error(status, e.message);
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

fn json_response(value: &impl serde::Serialize) -> Response {
    match serde_json::to_vec(value) {
        Ok(bytes) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            bytes,
        )
            .into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

fn unknown_model(state: &AppState, name: &str, version: Option<u64>) -> Response {
    let names = state.registry.names();
    match version {
        Some(v) if names.iter().any(|n| n == name) => error(
            StatusCode::NOT_FOUND,
            format!(
                "model '{name}' has no version {v}; loaded versions: {:?}",
                state.registry.versions(name)
            ),
        ),
        _ => error(
            StatusCode::NOT_FOUND,
            format!(
                "no model named '{name}'; served models: {}",
                names.join(", ")
            ),
        ),
    }
}

fn parse_version(text: &str) -> std::result::Result<u64, Response> {
    text.parse::<u64>().map_err(|_| {
        error(
            StatusCode::BAD_REQUEST,
            format!("model version '{text}' is not a number"),
        )
    })
}

fn check_rows(state: &AppState, rows: usize) -> std::result::Result<(), Response> {
    if rows > state.options.max_rows {
        Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "{rows} rows in one request; the limit is {} (split the request)",
                state.options.max_rows
            ),
        ))
    } else {
        Ok(())
    }
}

// ---- health and metadata ----

async fn live() -> Response {
    json_response(&json!({"live": true}))
}

async fn ready(State(state): State<Arc<AppState>>) -> Response {
    let ready = !state.registry.names().is_empty();
    let body = json!({"ready": ready});
    if ready {
        json_response(&body)
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
    }
}

async fn server_metadata() -> Response {
    json_response(&json!({
        "name": "millrace",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": ["binary_tensor_data", "binary_arrow_stream"],
    }))
}

async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    let models: Vec<Value> = state
        .registry
        .latest_all()
        .iter()
        .map(|m| json!({"name": m.name, "version": m.version}))
        .collect();
    match models.as_slice() {
        [one] => {
            json_response(&json!({"status": "ok", "model": one["name"], "version": one["version"]}))
        }
        _ => json_response(&json!({"status": "ok", "models": models})),
    }
}

fn metadata_of(state: &AppState, model: &ServedModel) -> Response {
    let versions = state.registry.versions(&model.name);
    json_response(&model_metadata(
        &model.name,
        &versions,
        model.input_schema(),
        model.num_classes(),
        model.class_names().is_some(),
    ))
}

async fn model_metadata_latest(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Response {
    match state.registry.get(&name, None) {
        Some(model) => metadata_of(&state, &model),
        None => unknown_model(&state, &name, None),
    }
}

async fn model_metadata_version(
    State(state): State<Arc<AppState>>,
    Path((name, version)): Path<(String, String)>,
) -> Response {
    let version = match parse_version(&version) {
        Ok(v) => v,
        Err(r) => return r,
    };
    match state.registry.get(&name, Some(version)) {
        Some(model) => metadata_of(&state, &model),
        None => unknown_model(&state, &name, Some(version)),
    }
}

async fn model_ready(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Response {
    match state.registry.get(&name, None) {
        Some(_) => json_response(&json!({"name": name, "ready": true})),
        None => unknown_model(&state, &name, None),
    }
}

// ---- inference ----

async fn v1_predict_model(state: &AppState, model: Arc<ServedModel>, request: &Value) -> Response {
    match v1_request_to_batch(request, model.input_schema(), state.options.max_rows) {
        Ok(raw) => v1_answer(model, raw).await,
        Err(e) => request_error(e),
    }
}

fn parse_json(body: &Bytes) -> std::result::Result<Value, Response> {
    serde_json::from_slice(body).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            format!("request body is not valid JSON: {e}"),
        )
    })
}

/// Answers a decoded `/v1/predict` batch.
async fn v1_answer(model: Arc<ServedModel>, raw: arrow::array::RecordBatch) -> Response {
    match model.predict_batch(raw).await {
        Ok(p) => json_response(&json!({
            "model": model.name,
            "version": model.version,
            "predictions": model.to_json(&p),
        })),
        Err(e) => request_error(e),
    }
}

async fn v1_predict(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    // The fast path: one model served, the body decoded straight into its columns.
    if let Some(model) = state.registry.single()
        && let Some((raw, named)) = model.decode_v1(&body, state.options.max_rows)
        && named.as_ref().is_none_or(|n| *n == model.name)
    {
        return v1_answer(model, raw).await;
    }
    let request = match parse_json(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let model = match request.get("model").and_then(Value::as_str) {
        Some(name) => match state.registry.get(name, None) {
            Some(m) => m,
            None => return unknown_model(&state, name, None),
        },
        None => match state.registry.single() {
            Some(m) => m,
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "this server serves several models ({}); name one with \"model\" or POST /v1/models/NAME/predict",
                        state.registry.names().join(", ")
                    ),
                );
            }
        },
    };
    v1_predict_model(&state, model, &request).await
}

async fn v1_predict_named(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    if let Some(model) = state.registry.get(&name, None)
        && let Some((raw, _)) = model.decode_v1(&body, state.options.max_rows)
    {
        return v1_answer(model, raw).await;
    }
    let request = match parse_json(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    match state.registry.get(&name, None) {
        Some(model) => v1_predict_model(&state, model, &request).await,
        None => unknown_model(&state, &name, None),
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    for model in state.registry.latest_all() {
        let stats = model.batcher_stats();
        state
            .metrics
            .set_queue_depth(&model.name, stats.queued_rows);
        state.metrics.set_model_version(&model.name, model.version);
        state
            .metrics
            .set_batches(&model.name, &stats.batch_size_buckets, stats.batched_rows);
    }
    let mut text = state.metrics.render();
    text.push_str(&state.registry.extra_metrics());
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}

async fn not_found(request: Request) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!(
            "no route for {} {}; see /v2/models/NAME, /v2/models/NAME/infer, /v1/predict, /metrics",
            request.method(),
            request.uri().path()
        ),
    )
}

/// The server's routes over `registry`.
pub fn router(registry: Arc<ModelRegistry>, options: ServeOptions) -> Router {
    router_with(AppState::new(registry, options))
}

fn router_with(state: Arc<AppState>) -> Router {
    let limit = state.options.max_body_bytes;
    Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .route("/v2/models/{name}", get(model_metadata_latest))
        .route("/v2/models/{name}/ready", get(model_ready))
        .route(
            "/v2/models/{name}/versions/{version}",
            get(model_metadata_version),
        )
        .route("/v2/models/{name}/infer", post(infer_latest))
        .route(
            "/v2/models/{name}/versions/{version}/infer",
            post(infer_version),
        )
        .route("/v1/predict", post(v1_predict))
        .route("/v1/models/{name}/predict", post(v1_predict_named))
        .route("/v1/features/{view}/{key}", get(features::lookup))
        .route("/v1/features/{view}", post(features::lookup_many))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(Arc::clone(&state), guard))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(Arc::clone(&state))
        // The dashboard: its pages hold no data and need no token; its data does.
        .merge(crate::ui::pages())
        .merge(
            crate::ui::api(crate::ui::UiSource {
                runs: state.options.ui_runs.clone(),
                server: true,
            })
            .route_layer(middleware::from_fn_with_state(state, guard)),
        )
}

/// Serves `registry` on `addr` (and gRPC on [`ServeOptions::grpc_addr`]) until Ctrl-C or
/// SIGTERM, then drains in-flight requests. `on_ready` gets the bound addresses (useful with
/// port 0).
pub async fn serve(
    registry: Arc<ModelRegistry>,
    addr: SocketAddr,
    options: ServeOptions,
    on_ready: impl FnOnce(Bound),
) -> Result<()> {
    serve_with(registry, addr, options, on_ready, shutdown_signal()).await
}

/// The addresses a server listens on (with their real ports when port 0 was asked for).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bound {
    /// The HTTP (REST) address.
    pub http: SocketAddr,
    /// The gRPC address, when [`ServeOptions::grpc_addr`] is set.
    pub grpc: Option<SocketAddr>,
}

/// Like [`serve`], stopping when `shutdown` completes (then draining in-flight requests).
///
/// Before binding: a server on a non-loopback address without [`ServeOptions::auth_token`]
/// refuses to start unless [`ServeOptions::allow_unauthenticated`] is set, and the TLS files of
/// [`ServeOptions::tls`] must load (errors name the file).
pub async fn serve_until(
    registry: Arc<ModelRegistry>,
    addr: SocketAddr,
    options: ServeOptions,
    on_ready: impl FnOnce(SocketAddr),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    serve_with(registry, addr, options, |b| on_ready(b.http), shutdown).await
}

async fn bind(addr: SocketAddr, flag: &str) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        Error::Serve(format!(
            "cannot listen on {addr}: {e} (is another server using it? pick another {flag})"
        ))
    })
}

/// Like [`serve_until`], also serving gRPC when [`ServeOptions::grpc_addr`] is set; `on_ready`
/// gets both bound addresses.
pub async fn serve_with(
    registry: Arc<ModelRegistry>,
    addr: SocketAddr,
    options: ServeOptions,
    on_ready: impl FnOnce(Bound),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    use futures::FutureExt;
    let addrs = std::iter::once(addr).chain(options.grpc_addr);
    for addr in addrs {
        if let Some(why) = exposure_refused(
            &addr,
            options.auth_token.is_some(),
            options.allow_unauthenticated,
        ) {
            return Err(Error::Serve(format!(
                "{why}; set an auth token (millrace serve --auth-token-file FILE, or serve.auth_token_file in a pipeline), listen on 127.0.0.1, or allow it explicitly (--allow-unauthenticated, or serve.allow_unauthenticated = true)"
            )));
        }
    }
    let acceptor = options.tls.as_ref().map(TlsFiles::acceptor).transpose()?;
    // gRPC clients require HTTP/2 by ALPN over TLS; the HTTP listener offers HTTP/1.1.
    let grpc_acceptor = match (&options.tls, options.grpc_addr) {
        (Some(files), Some(_)) => Some(files.grpc_acceptor()?),
        _ => None,
    };
    let listener = bind(addr, "--addr").await?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::Serve(e.to_string()))?;
    let grpc_listener = match options.grpc_addr {
        Some(a) => Some(bind(a, "--grpc-addr").await?),
        None => None,
    };
    let grpc_local = match &grpc_listener {
        Some(l) => Some(l.local_addr().map_err(|e| Error::Serve(e.to_string()))?),
        None => None,
    };
    if let Some(interval) = options.watch_interval {
        registry.watch(interval);
    }
    tracing::info!(models = ?registry.names(), addr = %local, grpc = ?grpc_local, "serving");
    on_ready(Bound {
        http: local,
        grpc: grpc_local,
    });
    let shutdown = shutdown.shared();
    let state = AppState::new(Arc::clone(&registry), options);
    let grpc = grpc_listener.map(|l| {
        let state = Arc::clone(&state);
        let shutdown = shutdown.clone();
        match grpc_acceptor {
            Some(acceptor) => tokio::spawn(super::grpc::serve_tls_listener(
                state, l, acceptor, shutdown,
            )),
            None => tokio::spawn(super::grpc::serve_listener(state, l, shutdown)),
        }
    });
    let app = router_with(state);
    let mut result = match acceptor {
        Some(acceptor) => {
            axum::serve(incoming(listener, acceptor, HANDSHAKE_TIMEOUT), app)
                .with_graceful_shutdown(shutdown)
                .await
        }
        None => {
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
        }
    }
    .map_err(|e| Error::Serve(e.to_string()));
    if let Some(task) = grpc {
        let grpc_result = task
            .await
            .map_err(|e| Error::Serve(format!("the gRPC server stopped: {e}")))
            .and_then(|r| r);
        result = result.and(grpc_result);
    }
    registry.close();
    result
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
