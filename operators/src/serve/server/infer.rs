//! `POST /v2/models/NAME[/versions/V]/infer`: Arrow IPC or JSON bodies, through the fast paths
//! when the request has the common form, else the general path that names any problem.

use super::*;

/// What the request body is, read from the headers in place (extracting the whole `HeaderMap`
/// would copy it for every request): an Arrow IPC stream (Content-Type), a JSON header with
/// binary tensors after it (`Inference-Header-Content-Length`), or JSON.
pub(super) enum BodyKind {
    Arrow,
    Binary(String),
    Json,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for BodyKind {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> std::result::Result<Self, Self::Rejection> {
        if is_arrow(&parts.headers) {
            return Ok(BodyKind::Arrow);
        }
        Ok(match parts.headers.get(HEADER_LENGTH) {
            Some(v) => BodyKind::Binary(String::from_utf8_lossy(v.as_bytes()).into_owned()),
            None => BodyKind::Json,
        })
    }
}

fn is_arrow(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(ARROW_STREAM))
}

async fn infer(
    state: &AppState,
    model: Arc<ServedModel>,
    kind: BodyKind,
    body: &Bytes,
) -> Response {
    if let BodyKind::Binary(header_len) = kind {
        return infer_binary(state, model, &header_len, body).await;
    }
    if let BodyKind::Arrow = kind {
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
    if let Some(rows) = crate::serve::protocol::v2::fast::common_rows(body, state.options.max_rows)
    {
        match model.predict_v2_body(body.clone(), rows).await {
            Ok(Some(predictions)) => return v2_answer(&model, &predictions, None),
            Ok(None) => {}
            Err(e) => return request_error(e),
        }
    } else if let Some((raw, id)) =
        crate::serve::protocol::v2::fast::decode(body, model.input_schema(), state.options.max_rows)
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
    infer_request(state, model, &request, &[]).await
}

/// A body with binary tensors: the JSON header of `header_len` bytes, then the tensors' bytes.
async fn infer_binary(
    state: &AppState,
    model: Arc<ServedModel>,
    header_len: &str,
    body: &Bytes,
) -> Response {
    let decoded = split_body(body, header_len)
        .and_then(|(request, tail)| binary_inputs(&request, tail).map(|raw| (request, raw)));
    match decoded {
        Ok((request, raw)) => infer_request(state, model, &request, &raw).await,
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

/// The general path: a parsed request (with the bytes of its binary inputs) → its answer, with
/// outputs in binary where it asks for them.
async fn infer_request(
    state: &AppState,
    model: Arc<ServedModel>,
    request: &InferenceRequest,
    raw: &[Option<&[u8]>],
) -> Response {
    let raw_batch =
        match request_to_batch_filling(request, raw, model.input_schema(), model.fillable_inputs())
        {
            Ok(b) => b,
            Err(e) => return error(StatusCode::BAD_REQUEST, e),
        };
    if let Err(r) = check_rows(state, raw_batch.num_rows()) {
        return r;
    }
    let predictions: Predictions = match model.predict_batch(raw_batch).await {
        Ok(p) => p,
        Err(e) => return request_error(e),
    };
    let body = match response_body(
        request,
        (&model.name, model.version),
        &predictions.values,
        predictions.rows,
        model.num_classes(),
        model.class_names(),
    ) {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    match body.header_len {
        Some(len) => (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                ),
                (
                    header::HeaderName::from_static(HEADER_LENGTH),
                    HeaderValue::from(len),
                ),
            ],
            body.bytes,
        )
            .into_response(),
        None => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body.bytes,
        )
            .into_response(),
    }
}

/// The v2 JSON answer with every output, written directly (the general rendering when the
/// predictions do not fit the model's shape, which then names the problem).
fn v2_answer(model: &ServedModel, predictions: &Predictions, id: Option<String>) -> Response {
    if let Some(bytes) = crate::serve::protocol::v2::fast::response(
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
    kind: BodyKind,
    body: Bytes,
) -> Response {
    match state.registry.get(&name, None) {
        Some(model) => infer(&state, model, kind, &body).await,
        None => unknown_model(&state, &name, None),
    }
}

pub(super) async fn infer_version(
    State(state): State<Arc<AppState>>,
    Path((name, version)): Path<(String, String)>,
    kind: BodyKind,
    body: Bytes,
) -> Response {
    let version = match parse_version(&version) {
        Ok(v) => v,
        Err(r) => return r,
    };
    match state.registry.get(&name, Some(version)) {
        Some(model) => infer(&state, model, kind, &body).await,
        None => unknown_model(&state, &name, Some(version)),
    }
}
