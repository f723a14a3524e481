//! The fast path of `/v1/predict`: `{"instances": [{…}, …], "model": "…"}` parsed straight into
//! the model's input columns (no `serde_json::Value` per field), with a pool of decoders per model
//! version. Anything unusual (an error, an unknown model, too many rows) returns `None` and the
//! request takes the general path, which names the problem.

use std::fmt;
use std::sync::Mutex;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use millrace_connectors::json::JsonRowDecoder;
use millrace_connectors::json::Skipped;
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// Reusable decoders for one input schema.
pub(crate) struct DecoderPool {
    schema: SchemaRef,
    idle: Mutex<Vec<JsonRowDecoder>>,
}

impl DecoderPool {
    /// A pool for `schema`, or `None` when a column type has no fast decoder.
    pub(crate) fn new(schema: &SchemaRef) -> Option<Self> {
        let first = JsonRowDecoder::new(schema.clone()).ok()?;
        Some(DecoderPool {
            schema: schema.clone(),
            idle: Mutex::new(vec![first]),
        })
    }

    /// Decodes a `/v1/predict` body of at most `max_rows` instances: the batch and the `model`
    /// the body names, if any.
    pub(crate) fn decode(
        &self,
        body: &[u8],
        max_rows: usize,
    ) -> Option<(RecordBatch, Option<String>)> {
        let taken = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut decoder = match taken {
            Some(d) => d,
            None => JsonRowDecoder::new(self.schema.clone()).ok()?,
        };
        let mut de = serde_json::Deserializer::from_slice(body);
        let parsed = Body {
            decoder: &mut decoder,
            max_rows,
        }
        .deserialize(&mut de)
        .and_then(|model| de.end().map(|()| model));
        let result = match parsed {
            Ok(Some(model)) => Some((decoder.finish(), model)),
            _ => {
                decoder.clear();
                None
            }
        };
        self.idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(decoder);
        result
    }
}

/// The outer object: `Some(model)` once `instances` was decoded, `None` when it is missing.
struct Body<'a> {
    decoder: &'a mut JsonRowDecoder,
    max_rows: usize,
}

impl<'de> DeserializeSeed<'de> for Body<'_> {
    type Value = Option<Option<String>>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Body<'_> {
    type Value = Option<Option<String>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object with an \"instances\" list")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut model = None;
        let mut seen = false;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match key.as_ref() {
                // Given twice: the general path decides (serde_json keeps the last).
                "instances" if seen => {
                    return Err(serde::de::Error::custom("instances given twice"));
                }
                "instances" => {
                    map.next_value_seed(Instances {
                        decoder: &mut *self.decoder,
                        max_rows: self.max_rows,
                    })?;
                    seen = true;
                }
                "model" => model = Some(map.next_value::<String>()?),
                _ => {
                    // Read in full, so that a body is valid JSON or not as on the general path.
                    map.next_value::<Skipped>()?;
                }
            }
        }
        Ok(seen.then_some(model))
    }
}

struct Instances<'a> {
    decoder: &'a mut JsonRowDecoder,
    max_rows: usize,
}

impl<'de> DeserializeSeed<'de> for Instances<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Instances<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of records")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(self.decoder.seed())?.is_some() {
            if self.decoder.len() > self.max_rows {
                return Err(serde::de::Error::custom("too many rows"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Array, Float32Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn pool() -> DecoderPool {
        let schema = Arc::new(Schema::new(vec![
            Field::new("x", DataType::Float32, false),
            Field::new("c", DataType::Utf8, true),
        ]));
        DecoderPool::new(&schema).unwrap()
    }

    #[test]
    fn decodes_instances_and_the_model_name() {
        let pool = pool();
        let (batch, model) = pool
            .decode(
                br#"{"model": "m", "instances": [{"x": 1, "c": "a", "extra": [1]}, {"x": 2.5}]}"#,
                10,
            )
            .unwrap();
        assert_eq!(model.as_deref(), Some("m"));
        let x = batch
            .column(0)
            .as_any()
            .downcast_ref::<Float32Array>()
            .unwrap();
        assert_eq!(x.values().to_vec(), vec![1.0, 2.5]);
        let c = batch
            .column(1)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert_eq!((c.value(0), c.is_null(1)), ("a", true));
        // The decoder goes back to the pool clean: the next request sees only its own rows.
        let (batch, model) = pool.decode(br#"{"instances": [{"x": 3}]}"#, 10).unwrap();
        assert_eq!((batch.num_rows(), model), (1, None));
    }

    #[test]
    fn anything_unusual_takes_the_general_path() {
        let pool = pool();
        for body in [
            &b"not json"[..],
            br#"{"instances": [{"c": "missing x"}]}"#,
            br#"{"instances": [{"x": "a string"}]}"#,
            br#"{"rows": []}"#,
            br#"{"instances": [{"x": 1}]} trailing"#,
            br#"{"instances": [{"x": 1}, {"x": 2}, {"x": 3}]}"#,
            // Found by the fuzz tests: serde_json keeps the last of two "instances", the fast
            // path read the first; and values the general path's parse refuses (a number past
            // f64, a lone surrogate) went through where they were skipped.
            br#"{"instances": [{"x": 1}], "instances": [{"x": 2}, {"x": 3}]}"#,
            br#"{"other": -1e400, "instances": [{"x": 1}]}"#,
            br#"{"instances": [{"x": 1, "extra": "\ud800"}]}"#,
        ] {
            assert!(
                pool.decode(body, 2).is_none(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        // A failed request leaves nothing behind.
        let (batch, _) = pool.decode(br#"{"instances": [{"x": 1}]}"#, 2).unwrap();
        assert_eq!(batch.num_rows(), 1);
    }
}
