//! List columns: arrays of numbers and of strings, null lists and elements, bad elements named by
//! index, and a failed record leaving the decoder as it was.

use std::sync::Arc;

use arrow::array::{Array, AsArray, ListArray};
use arrow::datatypes::{DataType, Field, Float32Type, Schema};

use crate::json::JsonRowDecoder;

fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new(
            "readings",
            DataType::List(Arc::new(Field::new("item", DataType::Float32, true))),
            true,
        ),
        Field::new(
            "tags",
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, false))),
            false,
        ),
    ]))
}

#[test]
fn arrays_decode_to_list_columns() {
    let mut decoder = JsonRowDecoder::new(schema()).unwrap();
    decoder
        .push(br#"{"readings": [0.5, 1.25, null], "tags": ["a", "b"]}"#)
        .unwrap();
    decoder.push(br#"{"readings": null, "tags": []}"#).unwrap();
    // A bad element fails the record, naming the field and the element, and leaves nothing.
    let err = decoder
        .push(br#"{"readings": [1, "x"], "tags": ["c"]}"#)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"field "readings" element 1: expected a number, found a string "x""#
    );
    let err = decoder.push(br#"{"readings": 3, "tags": []}"#).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"field "readings": expected an array of numbers, found a number 3"#
    );
    let err = decoder
        .push(br#"{"readings": [], "tags": ["a", null]}"#)
        .unwrap_err();
    assert!(
        err.to_string().contains(r#"field "tags" element 1"#),
        "{err}"
    );
    let err = decoder.push(br#"{"readings": []}"#).unwrap_err();
    assert_eq!(err.to_string(), r#"missing required field "tags""#);
    // Missing nullable list: null.
    decoder.push(br#"{"tags": ["z"]}"#).unwrap();
    let batch = decoder.finish();
    assert_eq!(batch.num_rows(), 3);
    let readings = batch
        .column(0)
        .as_any()
        .downcast_ref::<ListArray>()
        .unwrap();
    assert_eq!(readings.value_offsets(), &[0, 3, 3, 3]);
    assert!(readings.is_valid(0) && readings.is_null(1) && readings.is_null(2));
    let first = readings.value(0);
    let first = first.as_primitive::<Float32Type>();
    assert_eq!(first.len(), 3);
    assert_eq!((first.value(0), first.value(1)), (0.5, 1.25));
    assert!(first.is_null(2));
    let tags = batch
        .column(1)
        .as_any()
        .downcast_ref::<ListArray>()
        .unwrap();
    assert_eq!(tags.value_offsets(), &[0, 2, 2, 3]);
    assert_eq!(tags.values().as_string::<i32>().value(2), "z");
    // Reusable after finish.
    decoder
        .push(br#"{"readings": [2], "tags": ["q"]}"#)
        .unwrap();
    assert_eq!(decoder.finish().num_rows(), 1);
}

#[test]
fn list_columns_encode_as_arrays_and_read_back() {
    use crate::json::JsonRowEncoder;
    let mut decoder = JsonRowDecoder::new(schema()).unwrap();
    let records: [&[u8]; 3] = [
        br#"{"readings":[0.5,1.25,null],"tags":["a","b"]}"#,
        br#"{"readings":null,"tags":[]}"#,
        br#"{"readings":[],"tags":["z"]}"#,
    ];
    for record in records {
        decoder.push(record).unwrap();
    }
    let batch = decoder.finish();
    let encoder = JsonRowEncoder::new(&schema()).unwrap();
    let encoded = encoder.encode_batch(&batch).unwrap();
    for (got, want) in encoded.iter().zip(records) {
        assert_eq!(
            std::str::from_utf8(got).unwrap(),
            std::str::from_utf8(want).unwrap()
        );
    }
    // What it writes, the decoder reads back to the same batch.
    for record in &encoded {
        decoder.push(record).unwrap();
    }
    assert_eq!(decoder.finish(), batch);
    // A sliced batch (offsets not starting at 0) writes its own rows.
    let encoded = encoder.encode_batch(&batch.slice(2, 1)).unwrap();
    assert_eq!(encoded[0], records[2]);
}
