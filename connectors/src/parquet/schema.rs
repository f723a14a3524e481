//! Schema comparison and column lookup shared by the reader, the writer and the dataset.

use std::path::Path;

use arrow::datatypes::Schema;

use crate::{Error, Result};

/// Describes the first difference between two schemas' fields (names, types, nullability, order),
/// or `None` when they agree. Schema- and field-level metadata are ignored.
pub(crate) fn field_difference(expected: &Schema, actual: &Schema) -> Option<String> {
    for (i, want) in expected.fields().iter().enumerate() {
        let Some(got) = actual.fields().get(i) else {
            return Some(format!("field `{}` (position {i}) is missing", want.name()));
        };
        if got.name() != want.name() {
            return Some(format!(
                "field at position {i} is `{}`, expected `{}`",
                got.name(),
                want.name()
            ));
        }
        if got.data_type() != want.data_type() {
            return Some(format!(
                "field `{}` has type {}, expected {}",
                want.name(),
                got.data_type(),
                want.data_type()
            ));
        }
        if got.is_nullable() != want.is_nullable() {
            return Some(format!(
                "field `{}` is {}, expected {}",
                want.name(),
                nullability(got.is_nullable()),
                nullability(want.is_nullable())
            ));
        }
    }
    let extra = actual.fields().iter().skip(expected.fields().len());
    let extra: Vec<&str> = extra.map(|f| f.name().as_str()).collect();
    if extra.is_empty() {
        None
    } else {
        Some(format!(
            "unexpected extra field(s) `{}`",
            extra.join("`, `")
        ))
    }
}

fn nullability(nullable: bool) -> &'static str {
    if nullable { "nullable" } else { "non-nullable" }
}

/// Indices (in schema order, deduplicated) of the named columns, or an error naming the first
/// missing column and listing the available ones.
pub(crate) fn column_indices(
    schema: &Schema,
    columns: &[String],
    path: &Path,
) -> Result<Vec<usize>> {
    let mut indices = Vec::with_capacity(columns.len());
    for column in columns {
        match schema.index_of(column) {
            Ok(i) => indices.push(i),
            Err(_) => {
                let available: Vec<&str> =
                    schema.fields().iter().map(|f| f.name().as_str()).collect();
                return Err(Error::MissingColumn {
                    column: column.clone(),
                    path: path.to_path_buf(),
                    available: available.join(", "),
                });
            }
        }
    }
    indices.sort_unstable();
    indices.dedup();
    Ok(indices)
}

#[cfg(test)]
mod tests {
    use arrow::datatypes::{DataType, Field};

    use super::*;

    fn schema(fields: Vec<Field>) -> Schema {
        Schema::new(fields)
    }

    #[test]
    fn differences_are_described() {
        let a = schema(vec![
            Field::new("x", DataType::Int32, false),
            Field::new("y", DataType::Utf8, true),
        ]);
        assert_eq!(field_difference(&a, &a.clone()), None);
        let b = schema(vec![
            Field::new("x", DataType::Int64, false),
            Field::new("y", DataType::Utf8, true),
        ]);
        assert_eq!(
            field_difference(&a, &b).as_deref(),
            Some("field `x` has type Int64, expected Int32")
        );
        let c = schema(vec![
            Field::new("x", DataType::Int32, true),
            Field::new("y", DataType::Utf8, true),
        ]);
        assert_eq!(
            field_difference(&a, &c).as_deref(),
            Some("field `x` is nullable, expected non-nullable")
        );
        let d = schema(vec![Field::new("x", DataType::Int32, false)]);
        assert_eq!(
            field_difference(&a, &d).as_deref(),
            Some("field `y` (position 1) is missing")
        );
        assert_eq!(
            field_difference(&d, &a).as_deref(),
            Some("unexpected extra field(s) `y`")
        );
        let e = schema(vec![
            Field::new("y", DataType::Utf8, true),
            Field::new("x", DataType::Int32, false),
        ]);
        assert_eq!(
            field_difference(&a, &e).as_deref(),
            Some("field at position 0 is `y`, expected `x`")
        );
    }

    #[test]
    fn column_indices_are_sorted_and_missing_named() {
        let s = schema(vec![
            Field::new("a", DataType::Int32, false),
            Field::new("b", DataType::Int32, false),
            Field::new("c", DataType::Int32, false),
        ]);
        let cols = vec!["c".to_string(), "a".to_string(), "c".to_string()];
        assert_eq!(
            column_indices(&s, &cols, Path::new("/d")).ok(),
            Some(vec![0, 2])
        );
        let err = column_indices(&s, &["zz".to_string()], Path::new("/d/f.parquet"));
        let msg = err.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            msg.contains("`zz`") && msg.contains("/d/f.parquet") && msg.contains("a, b, c"),
            "{msg}"
        );
    }
}
