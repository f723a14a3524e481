//! The tonic server side of `inference.GRPCInferenceService`: the methods a service implements,
//! and the HTTP/2 service that routes each request path to its method. (tonic-build writes one
//! hand-unrolled service struct per method; here one generic unary method serves all six.)

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::codegen::{BoxFuture, StdError, async_trait, http};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Request, Response, Status};
use tonic_prost::ProstCodec;

use super::proto::*;

/// The gRPC methods of the KServe v2 inference service.
#[async_trait]
pub trait GrpcInferenceService: Send + Sync + 'static {
    /// The server is live (answers requests).
    async fn server_live(
        &self,
        request: Request<ServerLiveRequest>,
    ) -> Result<Response<ServerLiveResponse>, Status>;
    /// The server is ready (serves at least one model).
    async fn server_ready(
        &self,
        request: Request<ServerReadyRequest>,
    ) -> Result<Response<ServerReadyResponse>, Status>;
    /// A model is ready for inferencing.
    async fn model_ready(
        &self,
        request: Request<ModelReadyRequest>,
    ) -> Result<Response<ModelReadyResponse>, Status>;
    /// Server name, version and extensions.
    async fn server_metadata(
        &self,
        request: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status>;
    /// A model's versions, inputs and outputs.
    async fn model_metadata(
        &self,
        request: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status>;
    /// Runs a model on the given input tensors.
    async fn model_infer(
        &self,
        request: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status>;
}

/// The service's name, the first part of every method's path.
pub const SERVICE_NAME: &str = "inference.GRPCInferenceService";

/// `T` served over gRPC: routes each request by its path to `T`'s method.
#[derive(Debug)]
pub struct GrpcInferenceServiceServer<T> {
    inner: Arc<T>,
    max_decoding_message_size: Option<usize>,
}

impl<T> GrpcInferenceServiceServer<T> {
    /// Serves `inner`.
    pub fn new(inner: T) -> Self {
        GrpcInferenceServiceServer {
            inner: Arc::new(inner),
            max_decoding_message_size: None,
        }
    }

    /// Limits the size of a decoded request message (default: tonic's 4 MB).
    #[must_use]
    pub fn max_decoding_message_size(mut self, limit: usize) -> Self {
        self.max_decoding_message_size = Some(limit);
        self
    }
}

impl<T> Clone for GrpcInferenceServiceServer<T> {
    fn clone(&self) -> Self {
        GrpcInferenceServiceServer {
            inner: Arc::clone(&self.inner),
            max_decoding_message_size: self.max_decoding_message_size,
        }
    }
}

impl<T> NamedService for GrpcInferenceServiceServer<T> {
    const NAME: &'static str = SERVICE_NAME;
}

/// One unary method of `T`: `method` called with the service and the decoded request.
struct Method<T, M> {
    inner: Arc<T>,
    method: M,
}

impl<T, M, Req, Resp, F> UnaryService<Req> for Method<T, M>
where
    M: Fn(Arc<T>, Request<Req>) -> F,
    F: Future<Output = Result<Response<Resp>, Status>> + Send + 'static,
{
    type Response = Resp;
    type Future = BoxFuture<Response<Resp>, Status>;

    fn call(&mut self, request: Request<Req>) -> Self::Future {
        Box::pin((self.method)(Arc::clone(&self.inner), request))
    }
}

impl<T: GrpcInferenceService> GrpcInferenceServiceServer<T> {
    /// Decodes `req` as a `Req`, answers it with `method` and encodes the `Resp`.
    fn unary<B, Req, Resp, F>(
        &self,
        req: http::Request<B>,
        method: impl Fn(Arc<T>, Request<Req>) -> F + Send + 'static,
    ) -> BoxFuture<http::Response<Body>, Infallible>
    where
        B: tonic::codegen::Body + Send + 'static,
        B::Error: Into<StdError> + Send + 'static,
        Req: prost::Message + Default + Send + 'static,
        Resp: prost::Message + Send + 'static,
        F: Future<Output = Result<Response<Resp>, Status>> + Send + 'static,
    {
        let method = Method {
            inner: Arc::clone(&self.inner),
            method,
        };
        let limit = self.max_decoding_message_size;
        Box::pin(async move {
            let mut grpc = Grpc::new(ProstCodec::<Resp, Req>::default())
                .apply_max_message_size_config(limit, None);
            Ok(grpc.unary(method, req).await)
        })
    }
}

/// The answer to a path that names no method: gRPC status UNIMPLEMENTED.
fn unimplemented() -> http::Response<Body> {
    let mut response = http::Response::new(Body::default());
    let headers = response.headers_mut();
    headers.insert(
        Status::GRPC_STATUS,
        (tonic::Code::Unimplemented as i32).into(),
    );
    headers.insert(
        http::header::CONTENT_TYPE,
        tonic::metadata::GRPC_CONTENT_TYPE,
    );
    response
}

impl<T, B> tonic::codegen::Service<http::Request<B>> for GrpcInferenceServiceServer<T>
where
    T: GrpcInferenceService,
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let path = req.uri().path();
        let Some(name) = path
            .strip_prefix("/")
            .and_then(|p| p.strip_prefix(SERVICE_NAME))
            .and_then(|p| p.strip_prefix("/"))
        else {
            return Box::pin(async { Ok(unimplemented()) });
        };
        match name {
            "ServerLive" => self.unary(req, |s: Arc<T>, r| async move { s.server_live(r).await }),
            "ServerReady" => self.unary(req, |s: Arc<T>, r| async move { s.server_ready(r).await }),
            "ModelReady" => self.unary(req, |s: Arc<T>, r| async move { s.model_ready(r).await }),
            "ServerMetadata" => {
                self.unary(
                    req,
                    |s: Arc<T>, r| async move { s.server_metadata(r).await },
                )
            }
            "ModelMetadata" => {
                self.unary(req, |s: Arc<T>, r| async move { s.model_metadata(r).await })
            }
            "ModelInfer" => self.unary(req, |s: Arc<T>, r| async move { s.model_infer(r).await }),
            _ => Box::pin(async { Ok(unimplemented()) }),
        }
    }
}
