//! The dashboard: a web UI at `/ui`, served by `millrace serve` (the server page: models,
//! versions, request rates, latency by route, batch sizes, from its own `/metrics`), by
//! `millrace ui RUNS_DIR` (finished runs) and by a running job (`millrace run --ui ADDR`, or its
//! `[serve]` server): runs, and one run with its curves, operators, dead letters, checkpoints,
//! trials and published versions, polled while it runs.
//!
//! The pages are one static shell and one script; charts are uPlot (MIT, vendored at 1.6.32 in
//! `assets/`, embedded in the binary, so nothing is fetched from the network). Data comes as JSON
//! from `/ui/api/…`; the script puts every string from data on the page as text (`textContent`),
//! never as markup, and the pages forbid inline scripts (Content-Security-Policy).

mod runs;

use std::path::{Component, Path};

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

pub use runs::RunsSource;

const INDEX: &str = include_str!("assets/index.html");

/// The embedded files: name, content type, bytes.
const ASSETS: [(&str, &str, &[u8]); 4] = [
    (
        "ui.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/ui.js"),
    ),
    (
        "ui.css",
        "text/css; charset=utf-8",
        include_bytes!("assets/ui.css"),
    ),
    (
        "uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/uPlot.iife.min.js"),
    ),
    (
        "uPlot.min.css",
        "text/css; charset=utf-8",
        include_bytes!("assets/uPlot.min.css"),
    ),
];

/// The pages' policy: scripts and data only from this server, no inline scripts.
const PAGE_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";
/// A run's files are shown, never run: an SVG with a script in it stays inert.
const FILE_POLICY: &str = "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; sandbox";

/// What a dashboard shows: runs (from run directories) and/or the server it is part of.
#[derive(Clone, Debug, Default)]
pub struct UiSource {
    /// The runs; `None`: no runs pages.
    pub runs: Option<RunsSource>,
    /// Whether this is a model server (its page reads the server's own `/metrics` and `/v2`).
    pub server: bool,
}

/// The pages and the embedded assets: no data, so they need no token (the script sends the
/// token it is given in the page's `#token=` fragment with every data request).
pub fn pages() -> Router {
    Router::new()
        .route("/ui", get(page))
        .route("/ui/", get(page))
        .route("/ui/runs/{id}", get(page))
        .route("/ui/server", get(page))
        .route("/ui/assets/{name}", get(asset))
}

/// The data the pages read: `/ui/api/config`, `/ui/api/runs`, `/ui/api/runs/{id}` and a run's
/// files.
pub fn api(source: UiSource) -> Router {
    Router::new()
        .route("/ui/api/config", get(config))
        .route("/ui/api/runs", get(list))
        .route("/ui/api/runs/{id}", get(detail))
        .route("/ui/api/runs/{id}/files/{*path}", get(file))
        .with_state(source)
}

/// [`pages`] and [`api`] together: the whole dashboard, for a process with no server of its own
/// (`millrace ui`, `millrace run --ui`).
pub fn router(source: UiSource) -> Router {
    pages().merge(api(source))
}

async fn page() -> Response {
    let mut response =
        ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX).into_response();
    secure(&mut response, PAGE_POLICY);
    response
}

async fn asset(UrlPath(name): UrlPath<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, kind, bytes)) => {
            let mut response = (
                [
                    (header::CONTENT_TYPE, *kind),
                    (header::CACHE_CONTROL, "max-age=3600"),
                ],
                *bytes,
            )
                .into_response();
            secure(&mut response, PAGE_POLICY);
            response
        }
        None => not_found(format!("no asset `{name}`")),
    }
}

fn secure(response: &mut Response, policy: &'static str) {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(policy),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

fn not_found(message: String) -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(json!({ "error": message })),
    )
        .into_response()
}

async fn config(State(source): State<UiSource>) -> Response {
    axum::Json(json!({ "runs": source.runs.is_some(), "server": source.server })).into_response()
}

/// Runs `f` off the async threads (it reads files) and answers its JSON, or 404 with `missing`.
async fn blocking_json(
    f: impl FnOnce() -> Option<Value> + Send + 'static,
    missing: String,
) -> Response {
    match tokio::task::spawn_blocking(f).await {
        Ok(Some(value)) => {
            let mut response = axum::Json(value).into_response();
            (response.headers_mut())
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Ok(None) => not_found(missing),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(json!({ "error": e.to_string() })),
        )
            .into_response(),
    }
}

async fn list(State(source): State<UiSource>) -> Response {
    let missing = "this dashboard shows no runs: start it with `millrace ui RUNS_DIR` or `millrace serve --runs RUNS_DIR`".to_string();
    blocking_json(move || source.runs.map(|r| r.list()), missing).await
}

async fn detail(State(source): State<UiSource>, UrlPath(id): UrlPath<String>) -> Response {
    let missing = format!("no run `{id}`");
    blocking_json(move || source.runs?.detail(&id), missing).await
}

async fn file(
    State(source): State<UiSource>,
    UrlPath((id, path)): UrlPath<(String, String)>,
) -> Response {
    let Some(dir) = source.runs.as_ref().and_then(|r| r.dir(&id)) else {
        return not_found(format!("no run `{id}`"));
    };
    let relative = Path::new(&path);
    if !relative
        .components()
        .all(|c| matches!(c, Component::Normal(_)))
    {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({ "error": format!("`{path}` is not a file of the run") })),
        )
            .into_response();
    }
    let full = dir.join(relative);
    match tokio::fs::read(&full).await {
        Ok(bytes) => {
            let kind = match full.extension().and_then(|e| e.to_str()) {
                Some("png") => "image/png",
                Some("svg") => "image/svg+xml",
                Some("json") => "application/json",
                _ => "text/plain; charset=utf-8",
            };
            let mut response = ([(header::CONTENT_TYPE, kind)], bytes).into_response();
            secure(&mut response, FILE_POLICY);
            response
        }
        Err(_) => not_found(format!("run `{id}` has no file `{path}`")),
    }
}

/// Serves the dashboard over `source` on `addr` until `shutdown` completes; `on_ready` gets the
/// bound address. For processes without a model server (`millrace ui`, `millrace run --ui`).
pub async fn serve_ui(
    source: UiSource,
    addr: std::net::SocketAddr,
    on_ready: impl FnOnce(std::net::SocketAddr),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> crate::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        crate::Error::Serve(format!(
            "cannot listen on {addr} for the dashboard: {e} (is another process using it? pick another --ui address)"
        ))
    })?;
    let bound = listener
        .local_addr()
        .map_err(|e| crate::Error::Serve(e.to_string()))?;
    on_ready(bound);
    axum::serve(listener, router(source))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| crate::Error::Serve(format!("dashboard: {e}")))
}
