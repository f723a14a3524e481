#![allow(clippy::unwrap_used, missing_docs)]
//! End-to-end tests of the millrace facade: pipeline files, the DSL, runs on 1 and 2 workers, the
//! served model, and the errors a user sees.

mod branches;
mod clocks;
mod cluster;
mod common;
mod config_errors;
mod deploy;
mod faulty_proxy;
mod features_kafka_table;
mod features_scale;
mod features_sql;
mod features_stream;
mod models;
mod pipeline_fuzz;
mod predict;
mod quickstart;
mod s3;
mod sequence;
mod sequence_clients;
mod serve;
mod serve_clients;
mod serve_harness;
mod serve_safety;
mod services;
mod serving;
mod sinks;
mod spark;
mod steps;
mod streaming;
mod streaming_features;
mod tracking;
mod tune;
mod udf;
mod ui;
mod watermarks;
