//! The Open Inference Protocol (KServe v2) over gRPC: `inference.GRPCInferenceService` with
//! ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata and ModelInfer, served with
//! tonic next to the REST server and sharing its models (hot swaps included), dynamic batcher,
//! limits, bearer-token auth (the `authorization` metadata) and Prometheus metrics (one route per
//! method, `/inference.GRPCInferenceService/ModelInfer`).
//!
//! ModelInfer takes inputs in `raw_input_contents` or in typed `contents` and answers in
//! `raw_output_contents`. Errors carry gRPC codes: INVALID_ARGUMENT for a bad request (the message
//! names the input), NOT_FOUND for an unknown model or version, UNAUTHENTICATED for a missing or
//! wrong token, UNAVAILABLE when load is shed, RESOURCE_EXHAUSTED past `max_rows`,
//! DEADLINE_EXCEEDED past the request timeout.
//!
//! The messages and the client code ([`proto`]) are generated from
//! `operators/proto/grpc_service.proto` by `scripts/gen-grpc.sh` and committed: building needs no
//! protoc.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tonic::{Code, Request, Response, Status};

use self::dispatch::{GrpcInferenceService, GrpcInferenceServiceServer};
use self::proto::*;
use super::model::RequestError;
use super::server::AppState;
use super::v2::{model_metadata, request_to_batch_filling};
use crate::{Error, Result};

pub(crate) mod decode;
pub mod dispatch;

/// The generated prost messages and tonic client of `inference.GRPCInferenceService`
/// (`scripts/gen-grpc.sh` writes the two files: messages, client; the server is [`dispatch`]).
#[allow(missing_docs, clippy::all, clippy::pedantic, clippy::unwrap_used)]
pub mod proto {
    include!("proto.rs");
    include!("proto_client.rs");
}

/// The gRPC status for a failure the REST server answers with HTTP `status`.
fn code_of(status: u16) -> Code {
    match status {
        400 | 422 => Code::InvalidArgument,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::NotFound,
        413 => Code::ResourceExhausted,
        429 | 503 => Code::Unavailable,
        504 => Code::DeadlineExceeded,
        _ => Code::Internal,
    }
}

/// The service over the server's shared state.
pub(crate) struct Service {
    state: Arc<AppState>,
}

const PREFIX: &str = "/inference.GRPCInferenceService/";

impl Service {
    /// Runs `call` as the REST guard runs a route: auth (unless `health`), the in-flight limit,
    /// the timeout, metrics and the access log.
    async fn guarded<T>(
        &self,
        method: &str,
        model: &str,
        health: bool,
        metadata: &tonic::metadata::MetadataMap,
        call: impl Future<Output = std::result::Result<T, RequestError>>,
    ) -> std::result::Result<Response<T>, Status> {
        let started = Instant::now();
        let state = &self.state;
        let given = metadata.get("authorization").map(|v| v.as_bytes());
        let result = match (&state.token, health) {
            (Some(token), false) if !token.authorizes(given) => Err(RequestError::with_status(
                401,
                "missing or wrong bearer token: send the metadata authorization: Bearer <token>",
            )),
            _ => self.limited(call).await,
        };
        let status = result.as_ref().map_or_else(|e| e.status, |_| 200);
        let latency = started.elapsed();
        let route = format!("{PREFIX}{method}");
        state
            .metrics
            .observe_request(&route, model, status, latency);
        if state.options.access_log {
            tracing::info!(target: "millrace::access", path = %route, status, latency_us = latency.as_micros() as u64, model = %model, "request");
        }
        result
            .map(Response::new)
            .map_err(|e| Status::new(code_of(e.status), e.message))
    }

    async fn limited<T>(
        &self,
        call: impl Future<Output = std::result::Result<T, RequestError>>,
    ) -> std::result::Result<T, RequestError> {
        let state = &self.state;
        let in_flight = state.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
        state.metrics.inc_in_flight();
        let result = if in_flight > state.options.max_concurrent {
            Err(RequestError::with_status(
                503,
                format!(
                    "too many requests in flight (limit {}); retry shortly",
                    state.options.max_concurrent
                ),
            ))
        } else {
            match tokio::time::timeout(state.options.request_timeout, call).await {
                Ok(r) => r,
                Err(_) => Err(RequestError::with_status(
                    504,
                    format!(
                        "the request took longer than {:.1} s",
                        state.options.request_timeout.as_secs_f64()
                    ),
                )),
            }
        };
        state.in_flight.fetch_sub(1, Ordering::AcqRel);
        state.metrics.dec_in_flight();
        result
    }

    /// The model `name` at `version` (latest when empty), or NOT_FOUND naming what is served.
    fn model(
        &self,
        name: &str,
        version: &str,
    ) -> std::result::Result<Arc<super::ServedModel>, RequestError> {
        let registry = &self.state.registry;
        let wanted = if version.is_empty() {
            None
        } else {
            Some(version.parse::<u64>().map_err(|_| {
                RequestError::bad(format!("model version '{version}' is not a number"))
            })?)
        };
        registry.get(name, wanted).ok_or_else(|| {
            let names = registry.names();
            let message = match wanted {
                Some(v) if names.iter().any(|n| n == name) => format!(
                    "model '{name}' has no version {v}; loaded versions: {:?}",
                    registry.versions(name)
                ),
                _ => format!(
                    "no model named '{name}'; served models: {}",
                    names.join(", ")
                ),
            };
            RequestError::with_status(404, message)
        })
    }

    async fn infer(&self, message: ModelInferRequest) -> Result<ModelInferResponse, RequestError> {
        let model = self.model(&message.model_name, &message.model_version)?;
        let (request, bytes) = decode::to_request(&message).map_err(RequestError::bad)?;
        let raw: Vec<Option<&[u8]>> = bytes.iter().map(|b| Some(b.as_slice())).collect();
        let batch = request_to_batch_filling(
            &request,
            &raw,
            model.input_schema(),
            model.fillable_inputs(),
        )
        .map_err(RequestError::bad)?;
        let max_rows = self.state.options.max_rows;
        if batch.num_rows() > max_rows {
            return Err(RequestError::with_status(
                413,
                format!(
                    "{} rows in one request; the limit is {max_rows} (split the request)",
                    batch.num_rows()
                ),
            ));
        }
        let predictions = model.predict_batch(batch).await?;
        decode::to_response(
            &request,
            (&model.name, model.version),
            &predictions.values,
            predictions.rows,
            model.num_classes(),
            model.class_names(),
        )
        .map_err(RequestError::bad)
    }
}

#[tonic::async_trait]
impl GrpcInferenceService for Service {
    async fn server_live(
        &self,
        request: Request<ServerLiveRequest>,
    ) -> std::result::Result<Response<ServerLiveResponse>, Status> {
        self.guarded("ServerLive", "", true, request.metadata(), async {
            Ok(ServerLiveResponse { live: true })
        })
        .await
    }

    async fn server_ready(
        &self,
        request: Request<ServerReadyRequest>,
    ) -> std::result::Result<Response<ServerReadyResponse>, Status> {
        let ready = !self.state.registry.names().is_empty();
        self.guarded("ServerReady", "", true, request.metadata(), async move {
            Ok(ServerReadyResponse { ready })
        })
        .await
    }

    async fn model_ready(
        &self,
        request: Request<ModelReadyRequest>,
    ) -> std::result::Result<Response<ModelReadyResponse>, Status> {
        let m = request.get_ref();
        self.guarded("ModelReady", &m.name, false, request.metadata(), async {
            self.model(&m.name, &m.version)
                .map(|_| ModelReadyResponse { ready: true })
        })
        .await
    }

    async fn server_metadata(
        &self,
        request: Request<ServerMetadataRequest>,
    ) -> std::result::Result<Response<ServerMetadataResponse>, Status> {
        self.guarded("ServerMetadata", "", false, request.metadata(), async {
            Ok(ServerMetadataResponse {
                name: "millrace".to_owned(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
                extensions: vec!["binary_tensor_data".to_owned()],
            })
        })
        .await
    }

    async fn model_metadata(
        &self,
        request: Request<ModelMetadataRequest>,
    ) -> std::result::Result<Response<ModelMetadataResponse>, Status> {
        let m = request.get_ref();
        self.guarded("ModelMetadata", &m.name, false, request.metadata(), async {
            let model = self.model(&m.name, &m.version)?;
            let meta = model_metadata(
                &model.name,
                &self.state.registry.versions(&model.name),
                model.input_schema(),
                model.num_classes(),
                model.class_names().is_some(),
            );
            let tensor = |t: super::v2::TensorMetadata| model_metadata_response::TensorMetadata {
                name: t.name,
                datatype: t.datatype,
                shape: t.shape,
            };
            Ok(ModelMetadataResponse {
                name: meta.name,
                versions: meta.versions,
                platform: meta.platform,
                inputs: meta.inputs.into_iter().map(tensor).collect(),
                outputs: meta.outputs.into_iter().map(tensor).collect(),
            })
        })
        .await
    }

    async fn model_infer(
        &self,
        request: Request<ModelInferRequest>,
    ) -> std::result::Result<Response<ModelInferResponse>, Status> {
        let (metadata, _, message) = request.into_parts();
        let name = message.model_name.clone();
        self.guarded("ModelInfer", &name, false, &metadata, self.infer(message))
            .await
    }
}

/// The tonic service over the shared state, with the REST body limit as the message limit.
fn service(state: Arc<AppState>) -> GrpcInferenceServiceServer<Service> {
    let limit = state.options.max_body_bytes;
    GrpcInferenceServiceServer::new(Service { state }).max_decoding_message_size(limit)
}

/// Serves gRPC on the connections of `incoming` (plain TCP, or [`TlsConnection`]s) until
/// `shutdown`, then drains.
pub(crate) async fn serve_incoming<I, IO, IE>(
    state: Arc<AppState>,
    incoming: I,
    shutdown: impl Future<Output = ()>,
) -> Result<()>
where
    I: futures::Stream<Item = std::result::Result<IO, IE>>,
    IO: tokio::io::AsyncRead
        + tokio::io::AsyncWrite
        + tonic::transport::server::Connected
        + Unpin
        + Send
        + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    tonic::transport::Server::builder()
        .add_service(service(state))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| Error::Serve(format!("gRPC server: {e}")))
}

/// A TLS connection to the gRPC server: tonic's [`Connected`](tonic::transport::server::Connected)
/// over a rustls stream (tonic implements it for rustls streams only with its own TLS feature,
/// which would bring a second TLS stack; the handshakes here are ours, see [`crate::serve::tls`]).
pub(crate) struct TlsConnection(crate::serve::tls::TlsStream<tokio::net::TcpStream>);

impl tonic::transport::server::Connected for TlsConnection {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.0.get_ref().0.connect_info()
    }
}

impl tokio::io::AsyncRead for TlsConnection {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for TlsConnection {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Serves gRPC over TLS on `listener` until `shutdown`: each connection's handshake runs in its
/// own task with [`HANDSHAKE_TIMEOUT`](crate::serve::tls::HANDSHAKE_TIMEOUT), offering HTTP/2 by
/// ALPN as gRPC clients require.
pub(crate) async fn serve_tls_listener(
    state: Arc<AppState>,
    listener: tokio::net::TcpListener,
    acceptor: crate::serve::tls::TlsAcceptor,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    use futures::StreamExt;
    let connections =
        crate::serve::tls::incoming(listener, acceptor, crate::serve::tls::HANDSHAKE_TIMEOUT)
            .map(|connection| connection.map(TlsConnection));
    serve_incoming(state, connections, shutdown).await
}

/// Serves gRPC on `listener` until `shutdown`.
pub(crate) async fn serve_listener(
    state: Arc<AppState>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    serve_incoming(state, incoming, shutdown).await
}
