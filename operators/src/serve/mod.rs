//! Serve: a trained model over HTTP.
//!
//! `POST /v1/predict` with `{"instances": [{raw fields}, …]}` answers
//! `{"predictions": [{"class": 1, "probabilities": [0.2, 0.8]}, …]}` (regression: `{"value": x}`),
//! applying the model's bundled SQL and fitted encoding, so requests carry raw records.
//! `GET /healthz` says the model is loaded. Bad requests get a 400 naming the instance and field.

mod json;
mod model;
mod server;

pub use json::{instances_to_batch, schema_from_json, schema_to_json};
pub use model::{RequestError, ServedModel};
pub use server::{ServeOptions, router, serve};
