//! Avro records ⇄ Arrow rows: one Avro binary datum per message, as Kafka topics carry them (raw,
//! or in the Confluent wire format).
//!
//! - [`parse_schema`] / [`load_schema`] read an Avro schema (JSON text or an `.avsc` file);
//!   [`arrow_schema`] maps a flat record schema onto Arrow fields.
//! - [`AvroRowDecoder`] decodes messages straight into column buffers; a bad message yields a
//!   [`RecordError`](crate::json::RecordError) naming the field, and leaves the decoder unchanged.
//! - [`AvroRowEncoder`] writes each row of a batch as one message.
//!
//! Only flat records are supported: primitive fields, enums, dates, timestamps and their
//! `["null", T]` unions. Nested records, arrays and maps must be flattened upstream.
//!
//! ```text
//!  .avsc ──load_schema──▶ apache_avro::Schema ──arrow_schema──▶ SchemaRef
//!  message ──AvroRowDecoder::push──▶ column buffers ──finish──▶ RecordBatch
//!  RecordBatch ──AvroRowEncoder::encode_batch──▶ one message per row
//! ```

mod binary;
mod decoder;
mod encoder;
#[cfg(test)]
mod fuzz;
mod schema;
#[cfg(test)]
mod tests;

pub use decoder::AvroRowDecoder;
pub use encoder::AvroRowEncoder;
pub use schema::{arrow_schema, load_schema, parse_schema};

/// How an Avro datum sits in a message (`raw` or `confluent` in a pipeline file).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AvroFraming {
    /// The message is exactly one binary datum of the schema.
    #[default]
    Raw,
    /// The Confluent wire format: magic byte 0, a 4-byte big-endian schema id, then the datum.
    Confluent,
}

impl AvroFraming {
    /// The datum inside `message`, or why the message does not have this framing.
    fn datum(self, message: &[u8]) -> Result<&[u8], String> {
        match self {
            AvroFraming::Raw => Ok(message),
            AvroFraming::Confluent => match message {
                [0, _, _, _, _, datum @ ..] => Ok(datum),
                [magic, ..] if message.len() >= 5 => Err(format!(
                    "the magic byte is 0x{magic:02x}, not 0x00: the message is not in the \
                     Confluent wire format (is the topic raw Avro, or JSON?)"
                )),
                _ => Err(format!(
                    "the message has {} bytes, too few for the Confluent wire format (a magic \
                     byte and a 4-byte schema id, then the datum)",
                    message.len()
                )),
            },
        }
    }
}
