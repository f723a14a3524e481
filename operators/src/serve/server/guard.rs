//! The middleware around every route: bearer-token auth, the in-flight limit, the per-request
//! timeout, metrics and the access log.

use super::*;

/// Auth, the concurrency limit, the timeout, metrics and the access log, around every route.
pub(super) async fn guard(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let path = request.uri().path().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let model = path
        .strip_prefix("/v2/models/")
        .or_else(|| path.strip_prefix("/v1/models/"))
        .and_then(|rest| rest.split('/').next())
        .unwrap_or("")
        .to_string();
    let is_health = path.starts_with("/v2/health") || path == "/healthz";
    let response = if let (Some(token), false) = (&state.token, is_health) {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes);
        if !token.authorizes(given) {
            let mut r = error(
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token: send Authorization: Bearer <token>",
            );
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            r
        } else {
            limited(&state, request, next).await
        }
    } else {
        limited(&state, request, next).await
    };
    let status = response.status().as_u16();
    let latency = started.elapsed();
    state
        .metrics
        .observe_request(&route, &model, status, latency);
    if state.options.access_log {
        tracing::info!(target: "millrace::access", %path, status, latency_us = latency.as_micros() as u64, model = %model, "request");
    }
    response
}

async fn limited(state: &AppState, request: Request, next: Next) -> Response {
    let in_flight = state.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
    state.metrics.inc_in_flight();
    let response = if in_flight > state.options.max_concurrent {
        let mut r = error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "too many requests in flight (limit {}); retry shortly",
                state.options.max_concurrent
            ),
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        r
    } else {
        match tokio::time::timeout(state.options.request_timeout, next.run(request)).await {
            Ok(r) => r,
            Err(_) => error(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "the request took longer than {:.1} s",
                    state.options.request_timeout.as_secs_f64()
                ),
            ),
        }
    };
    state.in_flight.fetch_sub(1, Ordering::AcqRel);
    state.metrics.dec_in_flight();
    response
}
