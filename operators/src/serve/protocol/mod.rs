//! The wire protocols of the model server: v1 (`/v1/predict`, JSON instances) and KServe v2
//! (`/v2/models/…/infer`: JSON or binary tensors over HTTP; the gRPC service in `../grpc`). Each
//! has a general decoder and a fast path for the common request shapes.

pub mod v1;
pub mod v2;
