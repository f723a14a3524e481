//! Tests of the parent module.
use super::*;
use arrow::array::{Array, AsArray};
use arrow::datatypes::{Field, Float32Type, Int32Type, TimeUnit, TimestampMicrosecondType};
use serde_json::json;

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("f0", DataType::Float32, false),
        Field::new("f3", DataType::Float32, true),
        Field::new("n", DataType::Int32, true),
        Field::new("cat", DataType::Utf8, false),
    ]))
}

fn request(inputs: Value) -> InferenceRequest {
    serde_json::from_value(json!({ "id": "r1", "inputs": inputs })).unwrap()
}

fn good_inputs() -> Value {
    json!([
        {"name": "f0", "shape": [3], "datatype": "FP32", "data": [1.5, -2, 0.25]},
        {"name": "f3", "shape": [3, 1], "datatype": "FP64", "data": [[0.5], [null], [3]]},
        {"name": "n", "shape": [3], "datatype": "INT64", "data": [7, null, -1]},
        {"name": "cat", "shape": [3, 1], "datatype": "BYTES", "data": ["c1", "c7", "c1"]},
    ])
}

fn err(inputs: Value) -> String {
    request_to_batch(&request(inputs), &schema()).unwrap_err()
}

/// `good_inputs` with input `i` changed by `f`.
fn with(i: usize, f: impl FnOnce(&mut Value)) -> Value {
    let mut v = good_inputs();
    f(&mut v[i]);
    v
}

#[test]
fn request_becomes_a_batch() {
    let req = request(good_inputs());
    assert_eq!(req.id.as_deref(), Some("r1"));
    let batch = request_to_batch(&req, &schema()).unwrap();
    assert_eq!(batch.num_rows(), 3);
    assert_eq!(batch.schema(), schema());
    let f0 = batch.column(0).as_primitive::<Float32Type>();
    assert_eq!(f0.values().as_ref(), &[1.5, -2.0, 0.25]);
    let f3 = batch.column(1).as_primitive::<Float32Type>();
    assert_eq!(f3.value(0), 0.5);
    assert!(f3.is_null(1));
    assert_eq!(f3.value(2), 3.0);
    let n = batch.column(2).as_primitive::<Int32Type>();
    assert_eq!(n.value(0), 7);
    assert!(n.is_null(1));
    assert_eq!(n.value(2), -1);
    let cat = batch.column(3).as_string::<i32>();
    assert_eq!(
        cat.iter().collect::<Vec<_>>(),
        [Some("c1"), Some("c7"), Some("c1")]
    );
    // Input order does not matter; INT into a float column and UINT into an int column cast.
    let batch = request_to_batch(
        &request(json!([
            {"name": "cat", "shape": [1], "datatype": "BYTES", "data": ["x"]},
            {"name": "n", "shape": [1], "datatype": "UINT8", "data": [200]},
            {"name": "f3", "shape": [1], "datatype": "INT32", "data": [4]},
            {"name": "f0", "shape": [1], "datatype": "FP16", "data": [1]},
        ])),
        &schema(),
    )
    .unwrap();
    assert_eq!(batch.column(1).as_primitive::<Float32Type>().value(0), 4.0);
    assert_eq!(batch.column(2).as_primitive::<Int32Type>().value(0), 200);
}

#[test]
fn timestamps_and_empty_requests() {
    let schema = Arc::new(Schema::new(vec![Field::new(
        "ts",
        DataType::Timestamp(TimeUnit::Microsecond, None),
        true,
    )]));
    let batch = request_to_batch(
        &request(json!([{"name": "ts", "shape": [2], "datatype": "BYTES",
            "data": ["2024-01-01T00:00:01Z", null]}])),
        &schema,
    )
    .unwrap();
    let ts = batch.column(0).as_primitive::<TimestampMicrosecondType>();
    assert_eq!(ts.value(0), 1_704_067_201_000_000);
    assert!(ts.is_null(1));
    let batch = request_to_batch(
        &request(json!([{"name": "ts", "shape": [0], "datatype": "BYTES", "data": []}])),
        &schema,
    )
    .unwrap();
    assert_eq!(batch.num_rows(), 0);
}

#[test]
fn names_what_is_wrong() {
    assert_eq!(
        err(with(1, |v| v["data"] = json!([0.5, 1, 2, 3]))),
        "input 'f3': expected 3 values for shape [3, 1], got 4"
    );
    let mut missing = good_inputs();
    missing.as_array_mut().unwrap().remove(1);
    assert_eq!(
        err(missing),
        "missing input 'f3' (FP32); given: 'f0', 'n', 'cat'"
    );
    let mut extra = good_inputs();
    for name in ["zz", "yy"] {
        extra
            .as_array_mut()
            .unwrap()
            .push(json!({"name": name, "shape": [3], "datatype": "FP32", "data": [1, 2, 3]}));
    }
    assert_eq!(
        err(extra),
        "unknown inputs 'zz', 'yy'; the model's inputs are: 'f0', 'f3', 'n', 'cat'"
    );
    let mut twice = good_inputs();
    let first = twice[0].clone();
    twice.as_array_mut().unwrap().push(first);
    assert_eq!(err(twice), "input 'f0' is given more than once");
    assert_eq!(
        err(with(2, |v| v["shape"] = json!([2]))),
        "input 'n': shape [2] says 2 rows, but input 'f0' has 3"
    );
    assert_eq!(
        err(with(0, |v| v["shape"] = json!([3, 2]))),
        "input 'f0': shape [3, 2] is not supported; each input is one column, so its shape must be [N] or [N, 1]"
    );
    assert_eq!(
        err(with(0, |v| v["shape"] = json!([-1]))),
        "input 'f0': shape [-1] has a negative dimension"
    );
    assert_eq!(
        err(with(0, |v| v["datatype"] = json!("FLOAT"))),
        format!("input 'f0': unknown datatype 'FLOAT'; expected one of {DATATYPES}")
    );
    assert_eq!(
        err(with(2, |v| v["datatype"] = json!("FP32"))),
        "input 'n': datatype FP32 does not fit column type Int32; send INT32"
    );
    assert_eq!(
        err(with(3, |v| v["datatype"] = json!("INT64"))),
        "input 'cat': datatype INT64 does not fit column type Utf8; send BYTES"
    );
    assert_eq!(
        err(with(0, |v| v["datatype"] = json!("BYTES"))),
        "input 'f0': datatype BYTES does not fit column type Float32; send FP32"
    );
    assert_eq!(
        err(with(0, |v| v["data"] = json!([1, null, 2]))),
        "input 'f0': data[1] is null, but the input is required (Float32)"
    );
    assert_eq!(
        err(with(0, |v| v["data"] = json!([1, "x", 2]))),
        "input 'f0': data[1]: expected a number for FP32, got a string"
    );
    assert_eq!(
        err(with(3, |v| v["data"] = json!(["a", 2, "c"]))),
        "input 'cat': data[1]: expected a string for BYTES, got a number"
    );
    assert_eq!(
        err(with(2, |v| v["data"] = json!([1, 2.5, 3]))),
        "input 'n': data[1]: expected an integer for INT64, got 2.5"
    );
    assert_eq!(
        err(with(2, |v| {
            v["datatype"] = json!("INT8");
            v["data"] = json!([1, 300, 3]);
        })),
        "input 'n': data[1]: 300 is out of range for INT8"
    );
    assert_eq!(
        err(with(2, |v| v["data"] = json!([1, 2, 3_000_000_000_i64]))),
        "input 'n': INT64 values do not fit column type Int32: Cast error: Can't cast value 3000000000 to type Int32"
    );
    assert_eq!(
        err(with(0, |v| v["data"] = json!([[1, [2]], 3]))),
        "input 'f0': data is nested more than one level deep"
    );
    assert_eq!(
        err(with(0, |v| v["data"] = json!("1,2,3"))),
        "input 'f0': data must be a list of values, got a string"
    );
}

#[test]
fn metadata_lists_inputs_and_outputs() {
    let m = model_metadata("churn", &[1, 3], &schema(), Some(2), true);
    assert_eq!(m.name, "churn");
    assert_eq!(m.versions, ["1", "3"]);
    assert_eq!(m.platform, "millrace");
    let inputs: Vec<(&str, &str, &[i64])> = m
        .inputs
        .iter()
        .map(|t| (t.name.as_str(), t.datatype.as_str(), t.shape.as_slice()))
        .collect();
    assert_eq!(
        inputs,
        [
            ("f0", "FP32", &[-1][..]),
            ("f3", "FP32", &[-1]),
            ("n", "INT32", &[-1]),
            ("cat", "BYTES", &[-1]),
        ]
    );
    assert_eq!(
        serde_json::to_value(&m.outputs).unwrap(),
        json!([
            {"name": "class", "datatype": "BYTES", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]},
        ])
    );
    let m = model_metadata("c", &[1], &schema(), Some(3), false);
    assert_eq!(m.outputs[0].datatype, "INT64");
    assert_eq!(m.outputs[1].shape, [-1, 3]);
    let m = model_metadata("r", &[], &schema(), None, false);
    assert_eq!(
        serde_json::to_value(&m.outputs).unwrap(),
        json!([{"name": "value", "datatype": "FP32", "shape": [-1]}])
    );
    assert_eq!(datatype_of(&DataType::UInt16), Some("UINT16"));
    assert_eq!(datatype_of(&DataType::LargeUtf8), Some("BYTES"));
    assert_eq!(datatype_of(&DataType::Date32), None);
}

#[test]
fn outputs_from_predictions() {
    let probs = [0.2, 0.8, 0.6, 0.4, 0.5, 0.5];
    let all = response_outputs(&probs, 3, Some(2), None, None).unwrap();
    assert_eq!(
        serde_json::to_value(&all).unwrap(),
        json!([
            {"name": "class", "shape": [3], "datatype": "INT64", "data": [1, 0, 0]},
            {"name": "probabilities", "shape": [3, 2], "datatype": "FP32",
             "data": [0.2, 0.8, 0.6, 0.4, 0.5, 0.5]},
        ])
    );
    let names = ["no".to_owned(), "yes".to_owned()];
    let want = |names: &[&str]| -> Vec<RequestOutput> {
        names
            .iter()
            .map(|n| RequestOutput {
                name: (*n).to_owned(),
                parameters: None,
            })
            .collect()
    };
    let class = response_outputs(
        &probs,
        3,
        Some(2),
        Some(&names),
        Some(&want(&["class", "class"])),
    )
    .unwrap();
    assert_eq!(
        serde_json::to_value(&class).unwrap(),
        json!([{"name": "class", "shape": [3], "datatype": "BYTES", "data": ["yes", "no", "no"]}])
    );
    let order = response_outputs(
        &probs,
        3,
        Some(2),
        Some(&names),
        Some(&want(&["probabilities", "class"])),
    )
    .unwrap();
    assert_eq!(order[0].name, "probabilities");
    assert_eq!(order[1].name, "class");
    assert_eq!(
        response_outputs(&probs, 3, Some(2), None, Some(&want(&["value"]))).unwrap_err(),
        "unknown output 'value'; the model's outputs are: 'class', 'probabilities'"
    );
    let reg = response_outputs(&[1.5, -0.1], 2, None, None, Some(&[])).unwrap();
    assert_eq!(
        serde_json::to_value(&reg).unwrap(),
        json!([{"name": "value", "shape": [2], "datatype": "FP32", "data": [1.5, -0.1]}])
    );
    assert_eq!(
        response_outputs(&[1.0, 2.0, 3.0], 2, None, None, None).unwrap_err(),
        "the model returned 3 values for 2 rows of 1"
    );
    assert_eq!(
        response_outputs(&[0.1, 0.2, 0.7], 1, Some(3), Some(&names), None).unwrap_err(),
        "class 2 has no name: the model has 2 class names"
    );
}

#[test]
fn bodies_round_trip_through_serde() {
    let body = json!({
        "inputs": [{"name": "f0", "shape": [1], "datatype": "FP32", "data": [1.0]}],
        "outputs": [{"name": "class"}]
    });
    let req: InferenceRequest = serde_json::from_value(body.clone()).unwrap();
    assert_eq!(req.id, None);
    assert_eq!(req.outputs.as_ref().unwrap()[0].name, "class");
    assert_eq!(serde_json::to_value(&req).unwrap(), body);
    let resp = InferenceResponse {
        model_name: "m".into(),
        model_version: Some("2".into()),
        id: None,
        parameters: None,
        outputs: vec![],
    };
    assert_eq!(
        serde_json::to_value(&resp).unwrap(),
        json!({"model_name": "m", "model_version": "2", "outputs": []})
    );
    assert_eq!(
        serde_json::to_value(ErrorBody {
            error: "bad".into()
        })
        .unwrap(),
        json!({"error": "bad"})
    );
}

#[test]
fn list_columns_take_n_by_l_tensors_with_rows_ended_by_nulls() {
    let item = |dt: DataType| Arc::new(Field::new("item", dt, true));
    let schema: SchemaRef = Arc::new(Schema::new(vec![
        Field::new("readings", DataType::List(item(DataType::Float32)), true),
        Field::new("tags", DataType::LargeList(item(DataType::Utf8)), true),
        Field::new(
            "pair",
            DataType::FixedSizeList(item(DataType::Float64), 2),
            true,
        ),
    ]));
    let inputs = json!([
        {"name": "readings", "shape": [3, 3], "datatype": "FP32",
         "data": [[1, 2, 3], [4, null, null], [null, null, null]]},
        {"name": "tags", "shape": [3, 2], "datatype": "BYTES",
         "data": ["a", "b", "c", null, "d", null]},
        {"name": "pair", "shape": [3, 2], "datatype": "FP32", "data": [[1, 2], [3, 4], [5, 6]]},
    ]);
    let batch = request_to_batch(&request(inputs.clone()), &schema).unwrap();
    assert_eq!(batch.num_rows(), 3);
    let readings = batch.column(0).as_list::<i32>();
    let lengths: Vec<usize> = (0..3).map(|r| readings.value(r).len()).collect();
    assert_eq!(lengths, vec![3, 1, 0]);
    let values = readings.values().as_primitive::<Float32Type>();
    assert_eq!(values.values().to_vec(), vec![1.0, 2.0, 3.0, 4.0]);
    let tags = batch.column(1).as_list::<i64>();
    assert_eq!(tags.value(1).as_string::<i32>().value(0), "c");
    assert_eq!(tags.value(2).len(), 1);
    let pair = batch.column(2).as_fixed_size_list();
    assert_eq!(pair.value_length(), 2);
    assert_eq!(pair.len(), 3);

    let meta = model_metadata("m", &[1], &schema, None, false);
    assert_eq!(meta.inputs[0].shape, vec![-1, -1]);
    assert_eq!(meta.inputs[0].datatype, "FP32");
    assert_eq!(meta.inputs[1].datatype, "BYTES");

    let with_input = |i: usize, f: &dyn Fn(&mut Value)| {
        let mut v = inputs.clone();
        f(&mut v[i]);
        request_to_batch(&request(v), &schema).unwrap_err()
    };
    let err = with_input(0, &|v| v["shape"] = json!([9]));
    assert!(
        err.contains("'readings'") && err.contains("[N, L]"),
        "{err}"
    );
    // A null inside a row is a null element (the preprocessing's null policy decides), where
    // the list's items may be null.
    let mut v = inputs.clone();
    v[0]["data"][0] = json!([1, null, 3]);
    let batch = request_to_batch(&request(v.clone()), &schema).unwrap();
    let row = batch.column(0).as_list::<i32>().value(0);
    assert_eq!((row.len(), row.null_count()), (3, 1));
    let strict: SchemaRef = Arc::new(Schema::new(vec![
        Field::new(
            "readings",
            DataType::List(Arc::new(Field::new("item", DataType::Float32, false))),
            true,
        ),
        schema.field(1).clone(),
        schema.field(2).clone(),
    ]));
    let err = request_to_batch(&request(v), &strict).unwrap_err();
    assert!(err.contains("row 0") && err.contains("element 1"), "{err}");
    let err = with_input(0, &|v| v["shape"] = json!([3, 4]));
    assert!(err.contains("expected 12 values"), "{err}");
    // A fixed-size list needs full rows.
    let err = with_input(2, &|v| v["data"][2] = json!([5, null]));
    assert!(err.contains("'pair'"), "{err}");
}

#[test]
fn list_columns_take_binary_tensors_of_full_rows() {
    let item = Arc::new(Field::new("item", DataType::Float32, true));
    let schema: SchemaRef = Arc::new(Schema::new(vec![Field::new(
        "readings",
        DataType::List(item),
        true,
    )]));
    let values: Vec<f32> = vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let req = request(json!([
        {"name": "readings", "shape": [2, 3], "datatype": "FP32",
         "parameters": {"binary_data_size": bytes.len()}},
    ]));
    let batch = request_to_batch_with(&req, &[Some(&bytes)], &schema).unwrap();
    let list = batch.column(0).as_list::<i32>();
    assert_eq!(list.len(), 2);
    let row = list.value(1);
    let row = row.as_primitive::<Float32Type>();
    assert_eq!(row.values().to_vec(), vec![4.0, 5.0, 6.0]);
    // The byte count must fit the [N, L] shape.
    let err = request_to_batch_with(&req, &[Some(&bytes[..20])], &schema).unwrap_err();
    assert!(err.contains("readings"), "{err}");
}
