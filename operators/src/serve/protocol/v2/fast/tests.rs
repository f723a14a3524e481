use std::sync::Arc;

use arrow::array::{Array, Float32Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};

use super::*;

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("x", DataType::Float32, false),
        Field::new("c", DataType::Utf8, true),
    ]))
}

#[test]
fn decodes_the_common_form() {
    let body = br#"{"id": "r1", "inputs": [
        {"name": "c", "shape": [2, 1], "datatype": "BYTES", "data": ["a", null]},
        {"name": "x", "shape": [2], "datatype": "FP32", "data": [1, 2.5]}]}"#;
    let (batch, id) = decode(body, &schema(), 10).unwrap();
    assert_eq!(id.as_deref(), Some("r1"));
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
}

#[test]
fn everything_else_takes_the_general_path() {
    let s = schema();
    for body in [
        &br#"{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}"#[..],
        br#"{"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1]}, {"name": "c", "shape": [1], "datatype": "BYTES", "data": ["a"]}]}"#,
        br#"{"inputs": [{"name": "x", "shape": [1], "datatype": "INT64", "data": [1]}, {"name": "c", "shape": [1], "datatype": "BYTES", "data": ["a"]}]}"#,
        br#"{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [null]}, {"name": "c", "shape": [1], "datatype": "BYTES", "data": ["a"]}]}"#,
        br#"{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [[1]]}, {"name": "c", "shape": [1], "datatype": "BYTES", "data": ["a"]}]}"#,
        br#"{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}, {"name": "c", "shape": [1], "datatype": "BYTES", "data": ["a"]}], "outputs": []}"#,
        br#"{"inputs": [{"name": "y", "shape": [1], "datatype": "FP32", "data": [1]}]}"#,
        b"not json",
        // Found by the fuzz tests: a key given twice in a tensor was taken (the cells of two
        // "data" lists appended into one column), where the general path refuses the body.
        br#"{"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1], "data": [2]}, {"name": "c", "shape": [2], "datatype": "BYTES", "data": ["a", "b"]}]}"#,
        br#"{"inputs": [{"name": "x", "name": "x", "shape": [1], "datatype": "FP32", "data": [1]}, {"name": "c", "shape": [1], "datatype": "BYTES", "data": ["a"]}]}"#,
        // And an FP32 value past f32's range became an infinity.
        br#"{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [-2.4e263]}, {"name": "c", "shape": [1], "datatype": "BYTES", "data": ["a"]}]}"#,
        br#"{"id": "a", "id": "b", "inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}, {"name": "c", "shape": [1], "datatype": "BYTES", "data": ["a"]}]}"#,
    ] {
        assert!(decode(body, &s, 10).is_none(), "{}", String::from_utf8_lossy(body));
    }
    let ok = br#"{"inputs": [{"name": "x", "shape": [3], "datatype": "FP32", "data": [1, 2, 3]}, {"name": "c", "shape": [3], "datatype": "BYTES", "data": ["a", "b", "c"]}]}"#;
    assert!(decode(ok, &s, 3).is_some());
    assert!(decode(ok, &s, 2).is_none(), "over max_rows");
}

#[test]
fn reads_the_rows_of_the_common_form_only() {
    let body =
        br#"{"inputs": [{"name": "x", "shape": [3, 1], "datatype": "FP32", "data": [1, 2, 3]}]}"#;
    assert_eq!(common_rows(body, 10), Some(3));
    assert_eq!(common_rows(body, 2), None);
    assert_eq!(
        common_rows(br#"{"id": "a", "inputs": [{"shape": [1]}]}"#, 10),
        None
    );
    assert_eq!(
        common_rows(br#"{"inputs": [{"shape": [1]}], "outputs": []}"#, 10),
        None
    );
    assert_eq!(
        common_rows(br#"{"inputs": [{"shape" : [ 12 ]}]}"#, 100),
        Some(12)
    );
    assert_eq!(common_rows(br#"{"inputs": [{"shape": [0]}]}"#, 10), None);
    assert_eq!(common_rows(b"nothing", 10), None);
}

/// Bodies decoded into one set of buffers: a bad one in the middle leaves no trace, and the
/// rows of the good ones come out in order (nulls and empty text kept apart).
#[test]
fn appends_bodies_and_rolls_back_a_bad_one() {
    let mut columns = Columns::new(&schema(), 4).unwrap();
    let one = br#"{"inputs": [{"data": [1, 2], "datatype": "FP32", "name": "x", "shape": [2]},
        {"data": ["a", ""], "datatype": "BYTES", "name": "c", "shape": [2, 1]}]}"#;
    // x fills, then c is the wrong type: x's row must go again.
    let bad = br#"{"inputs": [{"data": [9], "datatype": "FP32", "name": "x", "shape": [1]},
        {"data": [5], "datatype": "FP32", "name": "c", "shape": [1]}]}"#;
    let nulls = br#"{"inputs": [{"data": [3], "datatype": "FP64", "name": "x", "shape": [1]},
        {"data": [null], "datatype": "BYTES", "name": "c", "shape": [1]}]}"#;
    assert_eq!(columns.append(one, 2, true), Some((2, None)));
    assert_eq!(columns.append(bad, 1, true), None);
    assert_eq!(columns.append(nulls, 2, true), None, "one row, not two");
    assert_eq!(columns.append(nulls, 1, true), Some((1, None)));
    let batch = columns.finish().unwrap();
    assert_eq!(batch.num_rows(), 3);
    let x = batch
        .column(0)
        .as_any()
        .downcast_ref::<Float32Array>()
        .unwrap();
    assert_eq!(x.values().to_vec(), vec![1.0, 2.0, 3.0]);
    let c = batch
        .column(1)
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap();
    assert_eq!(
        (c.value(0), c.value(1), c.is_null(1), c.is_null(2)),
        ("a", "", false, true)
    );
}
