//! `POST /v2/models/NAME[/versions/V]/infer`: Arrow IPC or JSON bodies, through the fast paths
//! when the request has the common form, else the general path that names any problem.

use super::*;

/// Whether the request body is an Arrow IPC stream, read from the Content-Type header in place
/// (extracting the whole `HeaderMap` would copy it for every request).
pub(super) struct ArrowBody(bool);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ArrowBody {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> std::result::Result<Self, Self::Rejection> {
        Ok(ArrowBody(is_arrow(&parts.headers)))
    }
}

fn is_arrow(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(ARROW_STREAM))
}

async fn infer(state: &AppState, model: Arc<ServedModel>, arrow: bool, body: &Bytes) -> Response {
    if arrow {
        let raw = match decode_stream(body, model.input_schema(), state.options.max_rows) {
            Ok(b) => b,
            Err(e) => {
                return request_error(RequestError::with_status(
                    e.status,
                    format!("Arrow body: {}", e.message),
                ));
            }
        };
        if let Err(r) = check_rows(state, raw.num_rows()) {
            return r;
        }
        return match model.predict_batch(raw).await {
            Ok(p) => match encode_predictions(
                &p.values,
                p.rows,
                model.num_classes(),
                model.class_names(),
            ) {
                Ok(bytes) => (
                    [
                        (header::CONTENT_TYPE, HeaderValue::from_static(ARROW_STREAM)),
                        (
                            header::HeaderName::from_static("x-model-version"),
                            HeaderValue::from(model.version),
                        ),
                    ],
                    bytes,
                )
                    .into_response(),
                Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
            },
            Err(e) => request_error(e),
        };
    }
    // The fast paths: a body of the common form without an id is decoded on the inference thread,
    // with the batch it joins; one with an id is decoded here. Anything else: the general path.
    if let Some(rows) = crate::serve::v2_fast::common_rows(body, state.options.max_rows) {
        match model.predict_v2_body(body.clone(), rows).await {
            Ok(Some(predictions)) => return v2_answer(&model, &predictions, None),
            Ok(None) => {}
            Err(e) => return request_error(e),
        }
    } else if let Some((raw, id)) =
        crate::serve::v2_fast::decode(body, model.input_schema(), state.options.max_rows)
    {
        return match model.predict_batch(raw).await {
            Ok(predictions) => v2_answer(&model, &predictions, id),
            Err(e) => request_error(e),
        };
    }
    let request: InferenceRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("request body is not a valid inference request: {e}"),
            );
        }
    };
    let raw = match request_to_batch(&request, model.input_schema()) {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    if let Err(r) = check_rows(state, raw.num_rows()) {
        return r;
    }
    let predictions: Predictions = match model.predict_batch(raw).await {
        Ok(p) => p,
        Err(e) => return request_error(e),
    };
    let outputs = match response_outputs(
        &predictions.values,
        predictions.rows,
        model.num_classes(),
        model.class_names(),
        request.outputs.as_deref(),
    ) {
        Ok(o) => o,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    json_response(&InferenceResponse {
        model_name: model.name.clone(),
        model_version: Some(model.version.to_string()),
        id: request.id,
        parameters: None,
        outputs,
    })
}

/// The v2 JSON answer with every output, written directly (the general rendering when the
/// predictions do not fit the model's shape, which then names the problem).
fn v2_answer(model: &ServedModel, predictions: &Predictions, id: Option<String>) -> Response {
    if let Some(bytes) = crate::serve::v2_fast::response(
        &model.name,
        model.version,
        id.as_deref(),
        &predictions.values,
        predictions.rows,
        model.num_classes(),
        model.class_names(),
    ) {
        return (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            bytes,
        )
            .into_response();
    }
    match response_outputs(
        &predictions.values,
        predictions.rows,
        model.num_classes(),
        model.class_names(),
        None,
    ) {
        Ok(outputs) => json_response(&InferenceResponse {
            model_name: model.name.clone(),
            model_version: Some(model.version.to_string()),
            id,
            parameters: None,
            outputs,
        }),
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

pub(super) async fn infer_latest(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    ArrowBody(arrow): ArrowBody,
    body: Bytes,
) -> Response {
    match state.registry.get(&name, None) {
        Some(model) => infer(&state, model, arrow, &body).await,
        None => unknown_model(&state, &name, None),
    }
}

pub(super) async fn infer_version(
    State(state): State<Arc<AppState>>,
    Path((name, version)): Path<(String, String)>,
    ArrowBody(arrow): ArrowBody,
    body: Bytes,
) -> Response {
    let version = match parse_version(&version) {
        Ok(v) => v,
        Err(r) => return r,
    };
    match state.registry.get(&name, Some(version)) {
        Some(model) => infer(&state, model, arrow, &body).await,
        None => unknown_model(&state, &name, Some(version)),
    }
}
