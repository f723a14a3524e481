//! `GET /v1/features/{view}/{key}`: a key's current features from a feature view's store (a
//! streaming job with `[features]` and `[serve]`): the table's columns and the aggregates as the
//! view stands at its watermark. `POST /v1/features/{view}` with `{"keys": [7, 8, …]}` answers
//! many keys at once, all as of the same millisecond.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use millrace_engine::features::{FeatureStore, Value as Feature};
use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};
use serde_json::Value;

use super::{AppState, error, json_response};

/// Keys one batch lookup may ask for.
const MAX_KEYS: usize = 10_000;

/// The store of `view`, or a 404 that names the views served.
fn store_of(state: &AppState, view: &str) -> Result<Arc<FeatureStore>, Response> {
    state.registry.features(view).ok_or_else(|| {
        let views = state.registry.feature_views();
        error(
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
        )
    })
}

/// One feature value as JSON (a non-finite float as null, bytes as lossy UTF-8), serialized
/// straight from the value, without building a JSON tree: a single lookup is answered tens of
/// thousands of times a second.
struct FeatureJson<'a>(&'a Feature);

impl Serialize for FeatureJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Feature::Null => serializer.serialize_none(),
            Feature::Bool(b) => serializer.serialize_bool(*b),
            Feature::Int(i) => serializer.serialize_i64(*i),
            Feature::Float(f) if f.is_finite() => serializer.serialize_f64(*f),
            Feature::Float(_) => serializer.serialize_none(),
            Feature::Str(s) => serializer.serialize_str(s),
            Feature::Bytes(b) => serializer.serialize_str(&String::from_utf8_lossy(b)),
        }
    }
}

/// A key's features as a JSON object, by name.
struct NamedJson<'a> {
    names: &'a [String],
    values: &'a [Feature],
}

impl Serialize for NamedJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.values.len()))?;
        for (name, value) in self.names.iter().zip(self.values) {
            map.serialize_entry(name, &FeatureJson(value))?;
        }
        map.end()
    }
}

/// The answer to a single lookup.
#[derive(Serialize)]
struct LookupJson<'a> {
    view: &'a str,
    key: FeatureJson<'a>,
    as_of_ms: u64,
    features: NamedJson<'a>,
}

/// One key of a batch lookup's answer.
#[derive(Serialize)]
struct RowJson<'a> {
    key: FeatureJson<'a>,
    features: NamedJson<'a>,
}

/// The answer to a batch lookup.
#[derive(Serialize)]
struct BatchJson<'a> {
    view: &'a str,
    as_of_ms: u64,
    rows: Vec<RowJson<'a>>,
}

pub(super) async fn lookup(
    State(state): State<Arc<AppState>>,
    Path((view, key)): Path<(String, String)>,
) -> Response {
    let store = match store_of(&state, &view) {
        Ok(store) => store,
        Err(response) => return response,
    };
    let key = match store.parse_key(&key) {
        Ok(key) => key,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let (as_of, values) = store.lookup(&key);
    json_response(&LookupJson {
        view: &view,
        key: FeatureJson(&key),
        as_of_ms: as_of,
        features: NamedJson {
            names: store.names(),
            values: &values,
        },
    })
}

/// `POST /v1/features/{view}`: `{"keys": [k, …]}` (numbers or strings) answered as
/// `{"view", "as_of_ms", "rows": [{"key", "features"}, …]}` in the order asked, one snapshot.
pub(super) async fn lookup_many(
    State(state): State<Arc<AppState>>,
    Path(view): Path<String>,
    body: Bytes,
) -> Response {
    let store = match store_of(&state, &view) {
        Ok(store) => store,
        Err(response) => return response,
    };
    let request: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("the body is not JSON: {e}"),
            );
        }
    };
    let Some(asked) = request.get("keys").and_then(Value::as_array) else {
        return error(
            StatusCode::BAD_REQUEST,
            r#"send {"keys": [7, 8, …]}: a list of keys"#,
        );
    };
    if asked.len() > MAX_KEYS {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("{} keys asked; at most {MAX_KEYS} per request", asked.len()),
        );
    }
    let mut keys = Vec::with_capacity(asked.len());
    for (i, key) in asked.iter().enumerate() {
        let text = match key {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            other => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("keys[{i}] is {other}: give a number or a string"),
                );
            }
        };
        match store.parse_key(&text) {
            Ok(key) => keys.push(key),
            Err(message) => {
                return error(StatusCode::BAD_REQUEST, format!("keys[{i}]: {message}"));
            }
        }
    }
    let (as_of, rows) = store.lookup_many(&keys);
    let rows = (keys.iter().zip(&rows))
        .map(|(key, values)| RowJson {
            key: FeatureJson(key),
            features: NamedJson {
                names: store.names(),
                values,
            },
        })
        .collect();
    json_response(&BatchJson {
        view: &view,
        as_of_ms: as_of,
        rows,
    })
}
