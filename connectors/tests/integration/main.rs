//! Integration tests of millrace-connectors (one binary; one module per area).

mod dataset;
mod fixtures;
mod plan;
mod read;
mod tabular;
mod write;
