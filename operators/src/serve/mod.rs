//! Serve: a trained model over HTTP.
//!
//! `POST /v1/predict` with `{"instances": [{raw fields}, …]}` answers
//! `{"predictions": [{"class": 1, "probabilities": [0.2, 0.8]}, …]}` (regression: `{"value": x}`),
//! applying the model's bundled SQL and fitted encoding, so requests carry raw records.
//! `GET /healthz` says the model is loaded. Bad requests get a 400 naming the instance and field.
//! The Open Inference Protocol (KServe v2) is served over REST (JSON, binary tensors, Arrow IPC) and,
//! with [`ServeOptions::grpc_addr`], over gRPC ([`grpc`]).

pub mod access;
pub mod arrow_io;
mod batcher;
mod fill;
mod forward;
pub mod grpc;
pub mod metrics;
mod model;
mod pipeline;
pub mod protocol;
mod registry;
mod server;
pub mod tls;

#[cfg(test)]
mod fuzz;

pub use batcher::{
    BatchError, BatchModel, BatchRunner, BatcherOptions, BatcherStats, DynamicBatcher,
    configure_runtime,
};
pub use fill::FeatureFill;
pub(crate) use forward::Forward;
pub use forward::ForwardDevice;
pub use model::{Predictions, RequestError, ServedModel, bundle_sql};
pub(crate) use model::{argmax, compiled_bundle_sql, sql_meta};
pub use protocol::v1::{instances_to_batch, schema_from_json, schema_to_json};
pub use protocol::v2;
pub use registry::{KEEP_VERSIONS, MetricsSource, ModelRegistry};
pub use server::{Bound, ServeOptions, router, serve, serve_until, serve_with};
