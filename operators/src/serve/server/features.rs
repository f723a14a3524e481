//! `GET /v1/features/{view}/{key}`: a key's current features from a feature view's store (a
//! streaming job with `[features]` and `[serve]`): the table's columns and the aggregates as the
//! view stands at its watermark.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use millrace_engine::features::Value as Feature;
use serde_json::{Map, Value, json};

use super::{AppState, error, json_response};

/// One feature value as JSON (a non-finite float as null, bytes as lossy UTF-8).
fn to_json(value: &Feature) -> Value {
    match value {
        Feature::Null => Value::Null,
        Feature::Bool(b) => json!(b),
        Feature::Int(i) => json!(i),
        Feature::Float(f) if f.is_finite() => json!(f),
        Feature::Float(_) => Value::Null,
        Feature::Str(s) => json!(s),
        Feature::Bytes(b) => json!(String::from_utf8_lossy(b)),
    }
}

pub(super) async fn lookup(
    State(state): State<Arc<AppState>>,
    Path((view, key)): Path<(String, String)>,
) -> Response {
    let Some(store) = state.registry.features(&view) else {
        let views = state.registry.feature_views();
        return error(
            StatusCode::NOT_FOUND,
            if views.is_empty() {
                format!(
                    "no feature view `{view}`: this server serves none (a streaming job with [features] and [serve] does)"
                )
            } else {
                format!(
                    "no feature view `{view}`; served: {}",
                    millrace_engine::list(&views)
                )
            },
        );
    };
    let key = match store.parse_key(&key) {
        Ok(key) => key,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let (as_of, values) = store.lookup(&key);
    let features: Map<String, Value> = store
        .names()
        .into_iter()
        .zip(values.iter().map(to_json))
        .collect();
    json_response(&json!({
        "view": view,
        "key": to_json(&key),
        "as_of_ms": as_of,
        "features": features,
    }))
}
