//! [`JsonRowDecoder`]: JSON objects, one record each, straight into Arrow column buffers.

use std::collections::HashMap;
use std::fmt;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};

use super::RecordError;
use super::columns::{Column, Kind, Reject, SUPPORTED};
use super::lists::{ListColumn, ListSeed, Slot};
use crate::{Error, Result};

/// Decodes JSON objects, one record each, into the columns of a declared schema, without building
/// a `serde_json::Value`: each value is parsed straight into its column's buffer.
///
/// - Keys are matched to the schema's field names (exactly, case-sensitive); unknown keys are
///   skipped; a key given twice is an error.
/// - A missing or `null` value is a null when the field is nullable, an error otherwise.
/// - Integer columns take integers, and floats that are integral (`2.0` → 2), range-checked; float
///   columns take any number (Float32 values are read as the nearest f64, then narrowed, like
///   every other JSON path here; out of Float32's range is an error); Boolean takes only `true`/`false`; Utf8, LargeUtf8, Utf8View and Binary take strings
///   (Binary stores the string's UTF-8 bytes); Timestamp takes an integer in the field's unit, or an
///   RFC 3339 string, or `YYYY-MM-DD HH:MM:SS[.f]` / `YYYY-MM-DDTHH:MM:SS[.f]` read as UTC; Date32
///   takes integer days since 1970-01-01 or `"YYYY-MM-DD"`.
/// - A record that fails, for any reason, leaves the decoder as it was, and the [`RecordError`]
///   names the field and what was wrong, ready for a dead-letter output.
/// - Unknown keys' values are read in full and dropped ([`super::Skipped`]): a record is valid
///   JSON or not as `serde_json::Value` would have it.
///
/// ```
/// use std::sync::Arc;
/// use arrow::array::{AsArray, Float64Array};
/// use arrow::datatypes::{DataType, Field, Float64Type, Schema};
/// use millrace_connectors::json::JsonRowDecoder;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let schema = Arc::new(Schema::new(vec![
///     Field::new("x", DataType::Float64, false),
///     Field::new("label", DataType::Utf8, true),
/// ]));
/// let mut decoder = JsonRowDecoder::new(schema)?;
/// decoder.push(br#"{"x": 1.5, "label": "a", "extra": [1, 2]}"#)?;
/// decoder.push(br#"{"x": 2}"#)?;
/// let err = decoder.push(br#"{"x": "abc"}"#).unwrap_err();
/// assert_eq!(err.to_string(), r#"field "x": expected a number, found a string "abc""#);
/// let batch = decoder.finish();
/// assert_eq!(batch.num_rows(), 2);
/// assert_eq!(batch.column(0).as_primitive::<Float64Type>(), &Float64Array::from(vec![1.5, 2.0]));
/// assert_eq!(batch.column(1).null_count(), 1);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct JsonRowDecoder {
    schema: SchemaRef,
    lookup: Lookup,
    columns: Vec<Slot>,
    rows: usize,
    /// `seen[i] == stamp` when column `i` got a value in the row being decoded.
    seen: Vec<u64>,
    stamp: u64,
    state: State,
}

/// Where the row being decoded stands, to word an error that serde_json reports.
#[derive(Debug, Default)]
struct State {
    /// Our own message for the error being returned (serde_json adds a position to it).
    error: Option<String>,
    /// The field whose value is being parsed.
    current: Option<usize>,
    /// Whether the input started with an object.
    in_object: bool,
}

/// Field name → column index: the next column in schema order is tried first, since most records
/// list their keys in that order.
#[derive(Debug)]
struct Lookup {
    names: Vec<String>,
    index: HashMap<String, usize>,
}

impl Lookup {
    #[inline]
    fn find(&self, key: &str, hint: usize) -> Option<usize> {
        match self.names.get(hint) {
            Some(name) if name == key => Some(hint),
            _ => self.index.get(key).copied(),
        }
    }
}

impl JsonRowDecoder {
    /// A decoder for records of `schema`. Fails with [`Error::InvalidOption`] naming each field
    /// whose type is not supported, or a field name given twice.
    pub fn new(schema: SchemaRef) -> Result<Self> {
        let mut columns = Vec::with_capacity(schema.fields().len());
        let mut problems = Vec::new();
        let mut index = HashMap::new();
        for (i, field) in schema.fields().iter().enumerate() {
            if index.insert(field.name().clone(), i).is_some() {
                problems.push(format!("field {:?} appears twice", field.name()));
            }
            match (Kind::of(field.data_type()), ListColumn::of(field)) {
                (Some(kind), _) => {
                    columns.push(Slot::Value(Column::new(kind, field.is_nullable())))
                }
                (None, Some(list)) => columns.push(Slot::List(list)),
                (None, None) => problems.push(format!(
                    "field {:?} has type {}, which JSON decoding does not support",
                    field.name(),
                    field.data_type()
                )),
            }
        }
        if !problems.is_empty() {
            return Err(Error::InvalidOption {
                option: "JsonRowDecoder schema",
                reason: format!(
                    "{}; supported types: {SUPPORTED}, and List of those; cast the column upstream or declare it Utf8",
                    problems.join("; ")
                ),
            });
        }
        let names = schema.fields().iter().map(|f| f.name().clone()).collect();
        Ok(JsonRowDecoder {
            seen: vec![0; columns.len()],
            schema,
            lookup: Lookup { names, index },
            columns,
            rows: 0,
            stamp: 0,
            state: State::default(),
        })
    }

    /// The schema of the batches [`JsonRowDecoder::finish`] returns.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// The number of rows decoded since the last [`JsonRowDecoder::finish`].
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Whether no row was decoded since the last [`JsonRowDecoder::finish`].
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Decodes one record: a JSON object, with nothing after it but whitespace. On error the
    /// decoder is unchanged and the error says what was wrong, naming the field where one is
    /// involved.
    pub fn push(&mut self, record: &[u8]) -> std::result::Result<(), RecordError> {
        self.state = State::default();
        let start = self.rows;
        let mut input = serde_json::Deserializer::from_slice(record);
        if let Err(e) = self.seed().deserialize(&mut input) {
            return Err(self.describe(&e));
        }
        if let Err(e) = input.end() {
            self.truncate(start);
            return Err(RecordError(format!("invalid JSON after the object: {e}")));
        }
        Ok(())
    }

    /// A [`DeserializeSeed`] that decodes one object from any serde `Deserializer` into the next
    /// row, e.g. for each element of `{"instances": [{...}, {...}]}` with
    /// `seq.next_element_seed(decoder.seed())`. Rollback is as for [`JsonRowDecoder::push`]: when
    /// the object fails, its partial row is removed (rows decoded before it stay; the caller's
    /// whole parse fails anyway, so it usually drops them too, with [`JsonRowDecoder::clear`]).
    /// The error names the field, and serde_json adds the position.
    pub fn seed(&mut self) -> RowSeed<'_> {
        RowSeed { decoder: self }
    }

    /// Drops every row decoded since the last [`JsonRowDecoder::finish`].
    pub fn clear(&mut self) {
        self.truncate(0);
    }

    /// Drains the decoded rows into a batch of exactly [`JsonRowDecoder::schema`] (zero rows: an
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
            .expect("JsonRowDecoder columns match the schema by construction")
    }

    fn truncate(&mut self, rows: usize) {
        for column in &mut self.columns {
            column.truncate(rows);
        }
        self.rows = rows;
    }

    /// The message for a failed [`JsonRowDecoder::push`].
    fn describe(&mut self, error: &serde_json::Error) -> RecordError {
        if let Some(message) = self.state.error.take() {
            return RecordError(message);
        }
        let bare = without_position(error);
        let message = if !self.state.in_object {
            match invalid_type(&bare) {
                Some((_, found)) => format!("not a JSON object: found {found}"),
                None => format!("not a JSON object: {error}"),
            }
        } else if let Some(i) = self.state.current {
            let name = &self.lookup.names[i];
            match invalid_type(&bare) {
                Some((expected, found)) => {
                    format!("field {name:?}: expected {expected}, found {found}")
                }
                None => format!("field {name:?}: {error}"),
            }
        } else {
            format!("invalid JSON: {error}")
        };
        RecordError(message)
    }

    /// Decodes the entries of one object into the next row; on error some columns may hold one
    /// row more than `self.rows` (the caller truncates).
    fn fill_row<'de, A: MapAccess<'de>>(&mut self, map: &mut A) -> Result<(), A::Error> {
        let JsonRowDecoder {
            lookup,
            columns,
            seen,
            stamp,
            state,
            ..
        } = self;
        *stamp += 1;
        let stamp = *stamp;
        let mut found = 0;
        let mut hint = 0;
        while let Some(key) = map.next_key_seed(KeySeed { lookup, hint })? {
            let Some(i) = key else {
                // Read in full: a value `serde_json::Value` refuses is refused here too.
                map.next_value::<super::Skipped>()?;
                continue;
            };
            let name = &lookup.names[i];
            if seen[i] == stamp {
                return Err(fail(state, format!("field {name:?} appears twice")));
            }
            seen[i] = stamp;
            found += 1;
            hint = i + 1;
            state.current = Some(i);
            match &mut columns[i] {
                Slot::Value(column) => map.next_value_seed(ValueSeed {
                    column,
                    name,
                    element: None,
                    error: &mut state.error,
                })?,
                Slot::List(list) => map.next_value_seed(ListSeed {
                    list,
                    name,
                    error: &mut state.error,
                })?,
            }
            state.current = None;
        }
        if found < columns.len() {
            for (i, column) in columns.iter_mut().enumerate() {
                if seen[i] != stamp && column.push_null().is_err() {
                    let name = &lookup.names[i];
                    return Err(fail(state, format!("missing required field {name:?}")));
                }
            }
        }
        Ok(())
    }
}

/// Records `message` as the error being returned and makes it a serde error.
fn fail<E: de::Error>(state: &mut State, message: String) -> E {
    let error = E::custom(&message);
    state.error = Some(message);
    error
}

/// serde_json's message without its " at line L column C" suffix.
fn without_position(error: &serde_json::Error) -> String {
    let text = error.to_string();
    let suffix = format!(" at line {} column {}", error.line(), error.column());
    match text.strip_suffix(&suffix) {
        Some(bare) => bare.to_owned(),
        None => text,
    }
}

/// Splits serde's "invalid type: X, expected Y" into (Y, X reworded), e.g. `("a number",
/// "a string \"abc\"")`.
fn invalid_type(message: &str) -> Option<(&str, String)> {
    let rest = message.strip_prefix("invalid type: ")?;
    let split = rest.rfind(", expected ")?;
    let (unexpected, expected) = (&rest[..split], &rest[split + ", expected ".len()..]);
    let found = if let Some(text) = unexpected.strip_prefix("string ") {
        format!("a string {}", shorten(text))
    } else if let Some(value) = unexpected.strip_prefix("boolean ") {
        format!("a boolean {}", value.trim_matches('`'))
    } else if let Some(value) = unexpected
        .strip_prefix("integer ")
        .or_else(|| unexpected.strip_prefix("floating point "))
    {
        format!("a number {}", value.trim_matches('`'))
    } else {
        match unexpected {
            "map" => "an object".to_owned(),
            "sequence" => "an array".to_owned(),
            "unit value" => "null".to_owned(),
            other => other.to_owned(),
        }
    };
    Some((expected, found))
}

/// `text` cut to about 60 characters, for messages.
fn shorten(text: &str) -> String {
    const MAX: usize = 60;
    match text.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// A string value as a message shows it: `a string "abc"`.
fn quoted(text: &str) -> String {
    format!("a string {}", shorten(&format!("{text:?}")))
}

/// Decodes one JSON object into the next row of a [`JsonRowDecoder`]; see
/// [`JsonRowDecoder::seed`].
#[derive(Debug)]
pub struct RowSeed<'a> {
    decoder: &'a mut JsonRowDecoder,
}

impl<'de> DeserializeSeed<'de> for RowSeed<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RowSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let decoder = self.decoder;
        decoder.state.in_object = true;
        decoder.state.error = None;
        let start = decoder.rows;
        match decoder.fill_row(&mut map) {
            Ok(()) => {
                decoder.rows += 1;
                Ok(())
            }
            Err(e) => {
                decoder.truncate(start);
                Err(e)
            }
        }
    }
}

/// Reads a key into its column index (`None`: not in the schema).
struct KeySeed<'a> {
    lookup: &'a Lookup,
    hint: usize,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Option<usize>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        Ok(self.lookup.find(key, self.hint))
    }
}

/// Parses one value into its column (a list's element `k` into the list's values when
/// `element` is `Some(k)`).
pub(super) struct ValueSeed<'a> {
    pub(super) column: &'a mut Column,
    pub(super) name: &'a str,
    pub(super) element: Option<usize>,
    pub(super) error: &'a mut Option<String>,
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        // Float32 columns too: the number is read as the nearest f64, then narrowed, as every
        // other JSON path does (a `serde_json::Value`, the v2 tensors), so that one body gives
        // one value whichever path decodes it. (Parsing straight to f32 differs from that only
        // for decimals of more than 17 digits on an f32 rounding midpoint; the shortest decimal
        // of every f32 reads back exactly either way.)
        deserializer.deserialize_any(ValueVisitor { seed: self })
    }
}

struct ValueVisitor<'a> {
    seed: ValueSeed<'a>,
}

impl ValueVisitor<'_> {
    fn done<E: de::Error>(
        self,
        result: Result<(), Reject>,
        found: impl FnOnce() -> String,
    ) -> Result<(), E> {
        let ValueSeed {
            column,
            name,
            element,
            error,
        } = self.seed;
        let reject = match result {
            Ok(()) => return Ok(()),
            Err(reject) => reject,
        };
        // Only a failed value pays for naming it.
        let at = match element {
            None => format!("field {name:?}"),
            Some(k) => format!("field {name:?} element {k}"),
        };
        let message = match reject {
            Reject::Type => format!(
                "{at}: expected {}, found {}",
                column.kind().expected(),
                found()
            ),
            Reject::Value(why) => format!("{at}: {why}"),
        };
        let e = E::custom(&message);
        *error = Some(message);
        Err(e)
    }
}

impl<'de> Visitor<'de> for ValueVisitor<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.seed.column.kind().expected())
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        let r = self.seed.column.push_bool(v);
        self.done(r, || format!("a boolean {v}"))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        let r = self.seed.column.push_i64(v);
        self.done(r, || format!("a number {v}"))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        let r = self.seed.column.push_u64(v);
        self.done(r, || format!("a number {v}"))
    }

    fn visit_f32<E: de::Error>(self, v: f32) -> Result<(), E> {
        let r = self.seed.column.push_f32(v);
        self.done(r, || format!("a number {v}"))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        let r = self.seed.column.push_f64(v);
        self.done(r, || format!("a number {v}"))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        let r = self.seed.column.push_str(v);
        self.done(r, || quoted(v))
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<(), E> {
        let r = self.seed.column.push_bytes(v);
        self.done(r, || format!("{} bytes", v.len()))
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        let r = self.seed.column.push_null();
        self.done(r, || "null".to_owned())
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.visit_unit()
    }

    fn visit_some<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_map<A: MapAccess<'de>>(self, _map: A) -> Result<(), A::Error> {
        self.done(Err(Reject::Type), || "an object".to_owned())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _seq: A) -> Result<(), A::Error> {
        self.done(Err(Reject::Type), || "an array".to_owned())
    }
}
