//! List columns of the JSON row decoder: a JSON array per row (`"readings": [0.5, 1.25]`) into an
//! Arrow `List` of a supported element type, elements parsed as scalar fields are (a bad element
//! names its index), `null` a null list where the field is nullable.

use std::fmt;
use std::sync::Arc;

use arrow::array::{ArrayRef, ListArray};
use arrow::buffer::{NullBuffer, OffsetBuffer};
use arrow::datatypes::{DataType, Field, FieldRef};
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};

use super::columns::{Column, Kind, Reject};
use super::decoder::ValueSeed;

/// One column of the decoder: a scalar or a list.
#[derive(Debug)]
pub(super) enum Slot {
    Value(Column),
    List(ListColumn),
}

impl Slot {
    pub(super) fn finish(&mut self, field: &Field) -> ArrayRef {
        match self {
            Slot::Value(column) => column.finish(field),
            Slot::List(list) => list.finish(),
        }
    }

    pub(super) fn truncate(&mut self, rows: usize) {
        match self {
            Slot::Value(column) => column.truncate(rows),
            Slot::List(list) => list.truncate(rows),
        }
    }

    pub(super) fn push_null(&mut self) -> Result<(), Reject> {
        match self {
            Slot::Value(column) => column.push_null(),
            Slot::List(list) => list.push_null(),
        }
    }
}

/// A `List` column being built: offsets into the elements' column, and validity.
#[derive(Debug)]
pub(super) struct ListColumn {
    item: FieldRef,
    nullable: bool,
    /// One more than the rows; `offsets[0] == 0`.
    offsets: Vec<i32>,
    valid: Vec<bool>,
    values: Column,
}

impl ListColumn {
    /// The list column of `field`, when it is a `List` of a supported element type.
    pub(super) fn of(field: &Field) -> Option<ListColumn> {
        let DataType::List(item) = field.data_type() else {
            return None;
        };
        let kind = Kind::of(item.data_type())?;
        Some(ListColumn {
            item: Arc::clone(item),
            nullable: field.is_nullable(),
            offsets: vec![0],
            valid: Vec::new(),
            values: Column::new(kind, item.is_nullable()),
        })
    }

    fn end_row(&mut self, valid: bool) -> Result<(), Reject> {
        let end = i32::try_from(self.values.len()).map_err(|_| {
            Reject::Value("the column would hold more than 2^31 list elements in one batch".into())
        })?;
        self.offsets.push(end);
        self.valid.push(valid);
        Ok(())
    }

    fn push_null(&mut self) -> Result<(), Reject> {
        if !self.nullable {
            return Err(Reject::Value(
                "null is not allowed: the field is not nullable".into(),
            ));
        }
        self.end_row(false)
    }

    fn truncate(&mut self, rows: usize) {
        if let Some(&end) = self.offsets.get(rows) {
            self.offsets.truncate(rows + 1);
            self.valid.truncate(rows);
            self.values.truncate(end as usize);
        }
    }

    fn finish(&mut self) -> ArrayRef {
        let rows = self.offsets.len() - 1;
        // A row that failed half-way may have left elements past the last offset.
        self.values.truncate(self.offsets[rows] as usize);
        let offsets = std::mem::replace(&mut self.offsets, vec![0]);
        let valid = std::mem::take(&mut self.valid);
        let nulls = NullBuffer::from(valid);
        let nulls = (nulls.null_count() > 0).then_some(nulls);
        let values = self.values.finish(&self.item);
        Arc::new(ListArray::new(
            Arc::clone(&self.item),
            OffsetBuffer::new(offsets.into()),
            values,
            nulls,
        ))
    }
}

/// Parses one JSON array (or null) into a list column.
pub(super) struct ListSeed<'a> {
    pub(super) list: &'a mut ListColumn,
    pub(super) name: &'a str,
    pub(super) error: &'a mut Option<String>,
}

impl<'de> DeserializeSeed<'de> for ListSeed<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl ListSeed<'_> {
    fn fail<E: de::Error>(self, message: String) -> E {
        let e = E::custom(&message);
        *self.error = Some(message);
        e
    }

    fn not_a_list<E: de::Error>(self, found: &str) -> E {
        let message = format!(
            "field {:?}: expected an array of {}s, found {found}",
            self.name,
            self.list
                .values
                .kind()
                .expected()
                .trim_start_matches("a ")
                .trim_start_matches("an ")
        );
        self.fail(message)
    }
}

impl<'de> Visitor<'de> for ListSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut k = 0;
        while seq
            .next_element_seed(ValueSeed {
                column: &mut self.list.values,
                name: self.name,
                element: Some(k),
                error: &mut *self.error,
            })?
            .is_some()
        {
            k += 1;
        }
        match self.list.end_row(true) {
            Ok(()) => Ok(()),
            Err(Reject::Value(why)) => {
                let message = format!("field {:?}: {why}", self.name);
                Err(self.fail(message))
            }
            Err(Reject::Type) => Err(self.not_a_list("an array")),
        }
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        match self.list.push_null() {
            Ok(()) => Ok(()),
            Err(_) => {
                let message = format!(
                    "field {:?}: null is not allowed: the field is not nullable",
                    self.name
                );
                Err(self.fail(message))
            }
        }
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.visit_unit()
    }

    fn visit_some<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        Err(self.not_a_list(&format!("a boolean {v}")))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        Err(self.not_a_list(&format!("a number {v}")))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        Err(self.not_a_list(&format!("a number {v}")))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        Err(self.not_a_list(&format!("a number {v}")))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        Err(self.not_a_list(&format!("a string {v:?}")))
    }

    fn visit_map<A: MapAccess<'de>>(self, _map: A) -> Result<(), A::Error> {
        Err(self.not_a_list("an object"))
    }
}
