//! JSON records ⇄ Arrow rows: one JSON object per record, as Kafka messages and HTTP requests
//! carry them.
//!
//! - [`JsonRowDecoder`] parses objects straight into the column buffers of a declared schema (no
//!   `serde_json::Value` in between); [`JsonRowDecoder::push`] takes one message,
//!   [`JsonRowDecoder::seed`] decodes objects nested in a larger document (`{"instances": [...]}`),
//!   and [`JsonRowDecoder::finish`] drains the rows into a `RecordBatch`.
//! - [`JsonRowEncoder`] writes each row of a batch as one object.
//!
//! A record that cannot be decoded is data, not a crash: it yields a [`RecordError`] that names the
//! field and what was wrong, for the caller's dead-letter output, and leaves the decoder unchanged.
//!
//! ```text
//!  message bytes ──push──▶ JsonRowDecoder (column buffers) ──finish──▶ RecordBatch
//!            └──▶ RecordError (dead letter: field and reason)
//!  RecordBatch ──JsonRowEncoder::encode_batch──▶ one JSON object per row
//! ```

pub(crate) mod cells;
pub(crate) mod columns;
mod decoder;
mod encoder;
mod lists;
mod skip;
#[cfg(test)]
mod tests;

use std::fmt;

pub use decoder::{JsonRowDecoder, RowSeed};
pub use encoder::JsonRowEncoder;
pub use skip::Skipped;

/// Why one record could not be decoded (a bad record, not a failure of the stream): a message
/// naming the field and what was wrong, e.g. `field "f3": expected a number, found a string "abc"`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordError(pub String);

impl RecordError {
    /// The message.
    pub fn message(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RecordError {}
