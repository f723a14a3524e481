//! List columns (`train.features.sequence`): which element types they may hold, and their rows
//! as ranges into one flat array of elements.

use std::ops::Range;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::DataType;

use super::columns::{is_numeric, is_string, type_error};
use crate::error::Result;

/// What a sequence column may be.
pub(crate) const LIST: &str = "a list of numbers or of strings (List, LargeList or FixedSizeList)";

/// The kind of a list column's elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Element {
    /// Numbers: standardised values.
    Number,
    /// Strings: codes over a fitted vocabulary.
    String,
}

/// The element kind of a list type; `None` for anything that is not a list of numbers or strings.
pub(crate) fn list_element(dt: &DataType) -> Option<Element> {
    let item = match dt {
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => f.data_type(),
        _ => return None,
    };
    if is_numeric(item) {
        Some(Element::Number)
    } else if is_string(item) {
        Some(Element::String)
    } else {
        None
    }
}

/// A list column taken apart: row `i` is `values[ranges[i]]`, or null when `ranges[i]` is `None`.
#[derive(Debug)]
pub(crate) struct ListRows {
    pub ranges: Vec<Option<Range<usize>>>,
    /// The elements of the rows, and nothing before or after them.
    pub values: ArrayRef,
}

/// Takes a List, LargeList or FixedSizeList column apart into row ranges over its elements.
pub(crate) fn list_rows(array: &dyn Array, column: &str) -> Result<ListRows> {
    let n = array.len();
    let valid = |i: usize| array.nulls().is_none_or(|nulls| nulls.is_valid(i));
    let (bounds, values): (Vec<usize>, ArrayRef) = match array.data_type() {
        DataType::List(_) => {
            let a = array.as_list::<i32>();
            let offsets = a.value_offsets().iter().map(|&o| o as usize).collect();
            (offsets, a.values().clone())
        }
        DataType::LargeList(_) => {
            let a = array.as_list::<i64>();
            let offsets = a.value_offsets().iter().map(|&o| o as usize).collect();
            (offsets, a.values().clone())
        }
        DataType::FixedSizeList(_, size) => {
            let a = array.as_fixed_size_list();
            let size = *size as usize;
            let start = a.value_offset(0).max(0) as usize;
            let offsets = (0..=n).map(|i| start + i * size).collect();
            (offsets, a.values().clone())
        }
        other => return Err(type_error(column, LIST, other)),
    };
    // Only the elements the rows use: a sliced list shares its parent's elements.
    let (lo, hi) = (bounds[0], bounds[n]);
    let values = values.slice(lo, hi - lo);
    let ranges = (0..n)
        .map(|i| valid(i).then(|| bounds[i] - lo..bounds[i + 1] - lo))
        .collect();
    Ok(ListRows { ranges, values })
}

/// The last `max_len` positions of `range` (a sequence keeps its most recent elements).
pub(crate) fn last(range: &Range<usize>, max_len: usize) -> Range<usize> {
    range.end.saturating_sub(max_len).max(range.start)..range.end
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{FixedSizeListArray, Float32Array, ListArray, StringArray};
    use arrow::datatypes::{Field, Float32Type};

    use super::*;

    #[test]
    fn rows_of_every_list_layout() {
        let list = ListArray::from_iter_primitive::<Float32Type, _, _>(vec![
            Some(vec![Some(1.0), Some(2.0)]),
            None,
            Some(vec![]),
            Some(vec![Some(3.0), None, Some(4.0)]),
        ]);
        assert_eq!(list_element(list.data_type()), Some(Element::Number));
        let rows = list_rows(&list, "x").unwrap();
        assert_eq!(rows.ranges, vec![Some(0..2), None, Some(2..2), Some(2..5)]);
        assert_eq!(rows.values.len(), 5);
        // A slice sees only its own elements.
        let rows = list_rows(&list.slice(3, 1), "x").unwrap();
        assert_eq!(rows.ranges, vec![Some(0..3)]);
        assert_eq!(rows.values.len(), 3);

        let item = Arc::new(Field::new("item", DataType::Utf8, true));
        let words = StringArray::from(vec!["a", "b", "c", "d"]);
        let fixed = FixedSizeListArray::new(item, 2, Arc::new(words), None);
        assert_eq!(list_element(fixed.data_type()), Some(Element::String));
        let rows = list_rows(&fixed.slice(1, 1), "w").unwrap();
        assert_eq!(rows.ranges, vec![Some(0..2)]);
        assert_eq!(rows.values.as_string::<i32>().value(0), "c");

        let err = list_rows(&Float32Array::from(vec![1.0]), "x").unwrap_err();
        assert!(err.to_string().contains("column `x`"), "{err}");
        assert_eq!(last(&(2..10), 3), 7..10);
        assert_eq!(last(&(2..4), 3), 2..4);
    }
}
