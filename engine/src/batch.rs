//! The unit of data: an Arrow [`RecordBatch`] with where it came from.
//!
//! Inside a process batches move between worker threads without copying. Crossing a process boundary
//! serialises them as Arrow IPC stream bytes (see the `Serialize` impl), which is what timely's
//! networking sends.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A batch of rows flowing through a millrace dataflow.
#[derive(Clone, Debug)]
pub struct Batch {
    /// The rows.
    pub data: RecordBatch,
    /// Where the rows came from (e.g. `data/part-00003.parquet row group 2`), for dead-letter messages.
    pub origin: Option<Arc<str>>,
}

impl Batch {
    /// A batch with no recorded origin.
    pub fn new(data: RecordBatch) -> Self {
        Batch { data, origin: None }
    }

    /// A batch that remembers where it came from.
    pub fn with_origin(data: RecordBatch, origin: impl Into<Arc<str>>) -> Self {
        Batch {
            data,
            origin: Some(origin.into()),
        }
    }

    /// Number of rows.
    pub fn num_rows(&self) -> usize {
        self.data.num_rows()
    }

    /// Replaces the rows, keeping the origin.
    pub fn map(self, data: RecordBatch) -> Self {
        Batch {
            data,
            origin: self.origin,
        }
    }

    /// Encodes the rows as an Arrow IPC stream.
    pub fn to_ipc(&self) -> crate::Result<Vec<u8>> {
        let mut buf = Vec::with_capacity(self.data.get_array_memory_size() + 1024);
        let mut writer = StreamWriter::try_new(&mut buf, &self.data.schema())?;
        writer.write(&self.data)?;
        writer.finish()?;
        drop(writer);
        Ok(buf)
    }

    /// Decodes rows written by [`Batch::to_ipc`].
    pub fn from_ipc(bytes: &[u8], origin: Option<Arc<str>>) -> crate::Result<Self> {
        let mut reader = StreamReader::try_new(bytes, None)?;
        let data = match reader.next() {
            Some(batch) => batch?,
            None => RecordBatch::new_empty(reader.schema()),
        };
        Ok(Batch { data, origin })
    }
}

#[derive(Serialize, Deserialize)]
struct WireBatch<'a> {
    #[serde(borrow)]
    origin: Option<&'a str>,
    #[serde(with = "serde_bytes")]
    ipc: Vec<u8>,
}

impl Serialize for Batch {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let ipc = self.to_ipc().map_err(serde::ser::Error::custom)?;
        WireBatch {
            origin: self.origin.as_deref(),
            ipc,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Batch {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Owned {
            origin: Option<String>,
            #[serde(with = "serde_bytes")]
            ipc: Vec<u8>,
        }
        let wire = Owned::deserialize(deserializer)?;
        Batch::from_ipc(&wire.ipc, wire.origin.map(Arc::from)).map_err(serde::de::Error::custom)
    }
}

/// A record (or a whole batch) that could not be processed, with the reason and where it came from.
///
/// Dead letters are data: they flow to a dead-letter output and never stop a worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The operator that rejected the record.
    pub operator: String,
    /// Why, in words that say what to fix.
    pub reason: String,
    /// Where the record came from (file and row group, topic/partition/offset, ...).
    pub origin: Option<String>,
    /// The rejected record as JSON, where it could be rendered.
    pub record: Option<String>,
    /// How many rows this dead letter stands for (1 for a record, more for a rejected batch).
    pub rows: u64,
}

/// Renders row `row` of `batch` as a JSON object (for dead-letter records).
pub fn row_to_json(batch: &RecordBatch, row: usize) -> Option<String> {
    if row >= batch.num_rows() {
        return None;
    }
    let slice = batch.slice(row, 1);
    let mut writer = arrow::json::LineDelimitedWriter::new(Vec::new());
    writer.write(&slice).ok()?;
    writer.finish().ok()?;
    let text = String::from_utf8(writer.into_inner()).ok()?;
    Some(text.trim_end().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float32Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    fn sample() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("x", DataType::Float32, true),
            Field::new("s", DataType::Utf8, false),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Float32Array::from(vec![Some(1.5), None, Some(-2.0)])),
                Arc::new(StringArray::from(vec!["a", "b", "c"])),
            ],
        )
        .unwrap()
    }

    #[test]
    fn ipc_round_trip_keeps_rows_and_origin() {
        let batch = Batch::with_origin(sample(), "f.parquet row group 0");
        let bytes = bincode_like(&batch);
        let back: Batch = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back.data, batch.data);
        assert_eq!(back.origin.as_deref(), Some("f.parquet row group 0"));
        let raw = batch.to_ipc().unwrap();
        assert_eq!(Batch::from_ipc(&raw, None).unwrap().data, batch.data);
    }

    fn bincode_like(batch: &Batch) -> Vec<u8> {
        serde_json::to_vec(batch).unwrap()
    }

    #[test]
    fn row_to_json_renders_one_row() {
        assert_eq!(
            row_to_json(&sample(), 2).as_deref(),
            Some(r#"{"x":-2.0,"s":"c"}"#)
        );
        assert_eq!(row_to_json(&sample(), 3), None);
    }
}
