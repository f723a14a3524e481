//! [`AvroRowDecoder`]: Avro binary records, one per message, into Arrow column buffers.

use apache_avro::Schema as AvroSchema;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::{RecordBatch, RecordBatchOptions};

use super::AvroFraming;
use super::binary::Reader;
use super::schema::{AvroField, AvroType, arrow_schema, plan};
use crate::Result;
use crate::json::RecordError;
use crate::json::columns::{Column, Kind, Reject};

/// Decodes Avro records of one flat record schema, one per message (Kafka style: no container
/// file), into the columns of [`arrow_schema`]'s schema.
///
/// Each message is one binary datum of the schema ([`AvroFraming::Raw`]), or that datum after
/// the Confluent header ([`AvroFraming::Confluent`]: magic byte 0, then a 4-byte schema id, which
/// is not checked). A message that fails (truncated, a wrong magic byte, a bad union index or
/// enum index, a string that is not UTF-8, bytes left after the datum) leaves the decoder as it
/// was, and the [`RecordError`] names the field where decoding broke.
///
/// ```
/// use millrace_connectors::avro::{AvroFraming, AvroRowDecoder, parse_schema};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let schema = parse_schema(
///     r#"{"type": "record", "name": "r", "fields": [
///         {"name": "id", "type": "long"},
///         {"name": "tag", "type": ["null", "string"]}]}"#,
/// )?;
/// let mut decoder = AvroRowDecoder::new(schema, AvroFraming::Raw)?;
/// // id = 3 (zig-zag 6), tag = union branch 1 (zig-zag 2), "ab" (length 2 → 4)
/// decoder.push(&[6, 2, 4, b'a', b'b'])?;
/// assert!(decoder.push(&[6, 2, 4, b'a']).is_err()); // truncated: nothing is kept
/// let batch = decoder.finish();
/// assert_eq!(batch.num_rows(), 1);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct AvroRowDecoder {
    avro: AvroSchema,
    fields: Vec<AvroField>,
    framing: AvroFraming,
    schema: SchemaRef,
    columns: Vec<Column>,
    rows: usize,
}

impl AvroRowDecoder {
    /// A decoder for records of `avro_schema` (a flat record; see [`arrow_schema`], whose errors
    /// this returns).
    pub fn new(avro_schema: AvroSchema, framing: AvroFraming) -> Result<Self> {
        let fields = plan(&avro_schema)?;
        let schema = arrow_schema(&avro_schema)?;
        let columns = schema
            .fields()
            .iter()
            .map(|field| {
                // `arrow_schema` only builds supported types.
                let kind = Kind::of(field.data_type()).unwrap_or(Kind::Binary);
                Column::new(kind, field.is_nullable())
            })
            .collect();
        Ok(AvroRowDecoder {
            avro: avro_schema,
            fields,
            framing,
            schema,
            columns,
            rows: 0,
        })
    }

    /// The schema of the batches [`AvroRowDecoder::finish`] returns.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// The Avro schema the messages are read with.
    pub fn avro_schema(&self) -> &AvroSchema {
        &self.avro
    }

    /// The framing the messages are expected in.
    pub fn framing(&self) -> AvroFraming {
        self.framing
    }

    /// The number of rows decoded since the last [`AvroRowDecoder::finish`].
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Whether no row was decoded since the last [`AvroRowDecoder::finish`].
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Decodes one message into a row; on error the decoder is unchanged.
    pub fn push(&mut self, message: &[u8]) -> std::result::Result<(), RecordError> {
        let datum = self.framing.datum(message).map_err(RecordError)?;
        let mut reader = Reader::new(datum);
        let start = self.rows;
        for (field, column) in self.fields.iter().zip(&mut self.columns) {
            if let Err(why) = decode_field(field, column, &mut reader) {
                for column in &mut self.columns {
                    column.truncate(start);
                }
                return Err(RecordError(format!("field {:?}: {why}", field.name)));
            }
        }
        if reader.remaining() > 0 {
            for column in &mut self.columns {
                column.truncate(start);
            }
            return Err(RecordError(format!(
                "{} bytes left after the Avro datum (the schema read {} of its {} bytes); the \
                 message was written with another schema, or is not a single datum",
                reader.remaining(),
                reader.position(),
                datum.len()
            )));
        }
        self.rows += 1;
        Ok(())
    }

    /// Drops every row decoded since the last [`AvroRowDecoder::finish`].
    pub fn clear(&mut self) {
        for column in &mut self.columns {
            column.truncate(0);
        }
        self.rows = 0;
    }

    /// Drains the decoded rows into a batch of exactly [`AvroRowDecoder::schema`] (zero rows: an
    /// empty batch); the decoder is empty and reusable afterwards.
    pub fn finish(&mut self) -> RecordBatch {
        let arrays = self
            .columns
            .iter_mut()
            .zip(self.schema.fields().iter())
            .map(|(column, field)| column.finish(field))
            .collect();
        let rows = std::mem::take(&mut self.rows);
        let options = RecordBatchOptions::new().with_row_count(Some(rows));
        // Each column was built for its field's type and nullability, with `rows` rows.
        RecordBatch::try_new_with_options(self.schema.clone(), arrays, &options)
            .expect("AvroRowDecoder columns match the schema by construction")
    }
}

fn decode_field(
    field: &AvroField,
    column: &mut Column,
    reader: &mut Reader<'_>,
) -> std::result::Result<(), String> {
    if let Some(null_index) = field.null_index {
        let at = reader.position();
        match reader.read_long()? {
            branch if branch == null_index => return column.push_null().map_err(reason),
            branch if branch == 1 - null_index => {}
            branch => {
                return Err(format!(
                    "union index {branch} at byte {at} does not exist (the union has 2 branches)"
                ));
            }
        }
    }
    let pushed = match &field.ty {
        AvroType::Boolean => column.push_bool(reader.read_bool()?),
        AvroType::Int | AvroType::Date => column.push_i64(reader.read_int()?.into()),
        AvroType::Long | AvroType::Timestamp { .. } => column.push_i64(reader.read_long()?),
        AvroType::Float => column.push_f32(reader.read_f32()?),
        AvroType::Double => column.push_f64(reader.read_f64()?),
        AvroType::String | AvroType::Bytes => column.push_bytes(reader.read_bytes()?),
        AvroType::Enum(symbols) => {
            let at = reader.position();
            let index = reader.read_int()?;
            let symbol = usize::try_from(index)
                .ok()
                .and_then(|i| symbols.get(i))
                .ok_or_else(|| {
                    format!(
                        "enum index {index} at byte {at} does not exist (the enum has {} symbols)",
                        symbols.len()
                    )
                })?;
            column.push_str(symbol)
        }
    };
    pushed.map_err(reason)
}

fn reason(reject: Reject) -> String {
    match reject {
        Reject::Value(why) => why,
        Reject::Type => "the column's type does not match the Avro type (a bug)".into(),
    }
}
