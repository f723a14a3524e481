use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::json;

use super::*;
use crate::serve::v2::testgen::{self, Rng, Tensor, Values};

/// Decodes a binary body as the server does.
fn decode(header_len: &str, body: &[u8], schema: &SchemaRef) -> Result<RecordBatch, String> {
    let (request, tail) = split_body(body, header_len)?;
    let raw = binary_inputs(&request, tail)?;
    request_to_batch_with(&request, &raw, schema)
}

fn tensor(name: &str, datatype: &'static str, shape: Vec<i64>, values: Values) -> Tensor {
    Tensor {
        name: name.to_owned(),
        datatype,
        shape,
        values,
    }
}

fn one_column(name: &str, t: DataType) -> SchemaRef {
    Arc::new(Schema::new(vec![arrow::datatypes::Field::new(
        name, t, false,
    )]))
}

#[test]
fn binary_and_json_give_the_same_batch_for_n_and_n_by_1() {
    let schema = testgen::schema();
    for shape2 in [false, true] {
        let n = 3i64;
        let shape = |n: i64| if shape2 { vec![n, 1] } else { vec![n] };
        let tensors = vec![
            tensor("f", "FP32", shape(n), Values::Float(vec![0.5, -1.25, 3.0])),
            tensor(
                "g",
                "FP64",
                shape(n),
                Values::Float(vec![1e10, 2.5, -0.125]),
            ),
            tensor("i", "INT16", shape(n), Values::Int(vec![-300, 0, 7])),
            tensor("u", "UINT8", shape(n), Values::UInt(vec![0, 255, 9])),
            tensor(
                "s",
                "BYTES",
                shape(n),
                Values::Text(vec!["a".into(), "".into(), "日本".into()]),
            ),
            tensor("b", "BOOL", shape(n), Values::Bool(vec![true, false, true])),
        ];
        let json = request_to_batch(&testgen::json_request(&tensors), &schema).unwrap();
        let (len, body) = testgen::binary_body(&tensors, &[true; 6]);
        let binary = decode(&len.to_string(), &body, &schema).unwrap();
        assert_eq!(binary, json);
        assert_eq!(binary.num_rows(), 3);
        let s = binary
            .column(4)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert_eq!(s.value(2), "日本");
        // Half in binary, half in JSON.
        let (len, body) = testgen::binary_body(&tensors, &[true, false, true, false, true, false]);
        assert_eq!(decode(&len.to_string(), &body, &schema).unwrap(), json);
    }
}

#[test]
fn fp16_values_are_read_exactly() {
    let schema = one_column("x", DataType::Float32);
    let bits: [u16; 4] = [0x3C00, 0xC100, 0x3800, 0x0001];
    let bytes: Vec<u8> = bits.iter().flat_map(|b| b.to_le_bytes()).collect();
    let header = br#"{"inputs":[{"name":"x","shape":[4],"datatype":"FP16","parameters":{"binary_data_size":8}}]}"#;
    let mut body = header.to_vec();
    body.extend_from_slice(&bytes);
    let batch = decode(&header.len().to_string(), &body, &schema).unwrap();
    let x = batch
        .column(0)
        .as_any()
        .downcast_ref::<arrow::array::Float32Array>()
        .unwrap();
    assert_eq!(x.values(), &[1.0, -2.5, 0.5, 2f32.powi(-24)]);
}

/// The error for a one-input FP32 body with `header` and binary part `tail`.
fn error_of(header: &str, tail: &[u8], header_len: Option<&str>) -> String {
    let schema = one_column("x", DataType::Float32);
    let mut body = header.as_bytes().to_vec();
    body.extend_from_slice(tail);
    let len = header_len.map_or_else(|| header.len().to_string(), str::to_owned);
    decode(&len, &body, &schema).unwrap_err()
}

#[test]
fn malformed_bodies_are_named() {
    let h = |size: usize, shape: &str, dt: &str| {
        format!(
            r#"{{"inputs":[{{"name":"x","shape":{shape},"datatype":"{dt}","parameters":{{"binary_data_size":{size}}}}}]}}"#
        )
    };
    let e = error_of(&h(8, "[2]", "FP32"), &[0; 8], Some("9999"));
    assert!(e.contains("9999") && e.contains("past the end"), "{e}");
    let e = error_of(&h(8, "[2]", "FP32"), &[0; 8], Some("abc"));
    assert!(e.contains("'abc' is not a byte count"), "{e}");
    let e = error_of(&h(12, "[2]", "FP32"), &[0; 8], None);
    assert!(
        e.contains("input 'x'") && e.contains("runs past the end"),
        "{e}"
    );
    let e = error_of(&h(4, "[2]", "FP32"), &[0; 8], None);
    assert!(
        e.contains("binary data is 8 bytes") && e.contains("add up to 4"),
        "{e}"
    );
    let e = error_of(&h(8, "[3]", "FP32"), &[0; 8], None);
    assert!(
        e.contains("input 'x'") && e.contains("needs 12 bytes") && e.contains("got 8"),
        "{e}"
    );
    let e = error_of(
        &h(8, "[2]", "FP32"),
        &f32::NAN.to_le_bytes().repeat(2),
        None,
    );
    assert!(e.contains("input 'x': value 0 is NaN"), "{e}");
    let e = error_of(&h(2, "[2]", "BOOL"), &[1, 7], None);
    assert!(
        e.contains("input 'x'") && e.contains("datatype BOOL does not fit"),
        "{e}"
    );
    let e = error_of(
        &h(8, "[2]", "FP32").replace(r#""parameters""#, r#""data":[1,2],"parameters""#),
        &[0; 8],
        None,
    );
    assert!(e.contains("both binary_data_size and 'data'"), "{e}");
    let e = error_of(&h(8, "[2]", "FP32").replace("8}", "-8}"), &[0; 8], None);
    assert!(e.contains("binary_data_size must be a byte count"), "{e}");
    // Without the header, a binary_data_size cannot be served.
    let schema = one_column("x", DataType::Float32);
    let req: InferenceRequest = serde_json::from_str(&h(8, "[2]", "FP32")).unwrap();
    let e = request_to_batch(&req, &schema).unwrap_err();
    assert!(e.contains("Inference-Header-Content-Length"), "{e}");
}

#[test]
fn bytes_elements_are_checked() {
    let schema = one_column("s", DataType::Utf8);
    let h = |size: usize, n: usize| {
        format!(
            r#"{{"inputs":[{{"name":"s","shape":[{n}],"datatype":"BYTES","parameters":{{"binary_data_size":{size}}}}}]}}"#
        )
    };
    let run = |header: String, tail: &[u8]| {
        let mut body = header.as_bytes().to_vec();
        body.extend_from_slice(tail);
        decode(&header.len().to_string(), &body, &schema)
    };
    let mut good = 2u32.to_le_bytes().to_vec();
    good.extend_from_slice(b"hi");
    let batch = run(h(6, 1), &good).unwrap();
    assert_eq!(
        batch
            .column(0)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap()
            .value(0),
        "hi"
    );
    let e = run(h(6, 2), &good).unwrap_err();
    assert!(
        e.contains("input 's'") && e.contains("holds 2 BYTES elements, the data has 1"),
        "{e}"
    );
    let e = run(h(3, 1), &good[..3]).unwrap_err();
    assert!(e.contains("element 0: its 4-byte length is cut off"), "{e}");
    let e = run(h(5, 1), &good[..5]).unwrap_err();
    assert!(
        e.contains("element 0 says 2 bytes, but only 1 remain"),
        "{e}"
    );
    let mut extra = good.clone();
    extra.push(9);
    let e = run(h(7, 1), &extra).unwrap_err();
    assert!(e.contains("1 bytes are left over"), "{e}");
    let mut bad = 2u32.to_le_bytes().to_vec();
    bad.extend_from_slice(&[0xff, 0xfe]);
    let e = run(h(6, 1), &bad).unwrap_err();
    assert!(e.contains("input 's': element 0 is not valid UTF-8"), "{e}");
    // A Binary column takes any bytes.
    let schema = one_column("s", DataType::Binary);
    let header = h(6, 1);
    let mut body = header.as_bytes().to_vec();
    body.extend_from_slice(&bad);
    let batch = decode(&header.len().to_string(), &body, &schema).unwrap();
    let col = batch
        .column(0)
        .as_any()
        .downcast_ref::<arrow::array::BinaryArray>()
        .unwrap();
    assert_eq!(col.value(0), &[0xff, 0xfe]);
}

fn request(json: Value) -> InferenceRequest {
    serde_json::from_value(json).unwrap()
}

#[test]
fn outputs_go_in_binary_when_asked() {
    let predictions = [0.25f32, 0.75, 0.9, 0.1];
    let names = vec!["no".to_owned(), "yes".to_owned()];
    let req = request(json!({"inputs": [], "parameters": {"binary_data_output": true}}));
    let body = response_body(&req, ("m", 3), &predictions, 2, Some(2), Some(&names)).unwrap();
    let len = body.header_len.unwrap();
    let header: Value = serde_json::from_slice(&body.bytes[..len]).unwrap();
    assert_eq!(header["model_version"], "3");
    assert_eq!(header["outputs"][0]["name"], "class");
    assert_eq!(header["outputs"][0]["datatype"], "BYTES");
    assert!(header["outputs"][0].get("data").is_none());
    let class_size = header["outputs"][0]["parameters"]["binary_data_size"]
        .as_u64()
        .unwrap() as usize;
    let prob_size = header["outputs"][1]["parameters"]["binary_data_size"]
        .as_u64()
        .unwrap() as usize;
    assert_eq!(class_size, 4 + 3 + 4 + 2);
    assert_eq!(prob_size, 16);
    let tail = &body.bytes[len..];
    assert_eq!(tail.len(), class_size + prob_size);
    let classes = bytes_elements("class", &tail[..class_size], 2).unwrap();
    assert_eq!(classes, vec![b"yes".as_slice(), b"no".as_slice()]);
    let probs: Vec<f32> = tail[class_size..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_eq!(probs, predictions);

    // Per output: INT64 classes in binary, probabilities as JSON.
    let req = request(json!({"inputs": [], "outputs": [
        {"name": "class", "parameters": {"binary_data": true}},
        {"name": "probabilities", "parameters": {"binary_data": false}}]}));
    let body = response_body(&req, ("m", 1), &predictions, 2, Some(2), None).unwrap();
    let len = body.header_len.unwrap();
    let header: Value = serde_json::from_slice(&body.bytes[..len]).unwrap();
    assert_eq!(header["outputs"][0]["parameters"]["binary_data_size"], 16);
    assert_eq!(header["outputs"][1]["data"], json!([0.25, 0.75, 0.9, 0.1]));
    let tail = &body.bytes[len..];
    assert_eq!(i64::from_le_bytes(tail[..8].try_into().unwrap()), 1);
    assert_eq!(i64::from_le_bytes(tail[8..].try_into().unwrap()), 0);

    // Nothing asked: plain JSON.
    let req = request(json!({"inputs": []}));
    let body = response_body(&req, ("m", 1), &[2.5], 1, None, None).unwrap();
    assert_eq!(body.header_len, None);
    let v: Value = serde_json::from_slice(&body.bytes).unwrap();
    assert_eq!(v["outputs"][0]["data"], json!([2.5]));
}

/// A mutation of a valid body: overwrite, cut, insert, or change the header length.
#[derive(Clone, Debug)]
enum Mutation {
    Set(usize, u8),
    Cut(usize),
    Insert(usize, u8),
    HeaderLen(i64),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(a, b)| Mutation::Set(a, b)),
        any::<usize>().prop_map(Mutation::Cut),
        (any::<usize>(), any::<u8>()).prop_map(|(a, b)| Mutation::Insert(a, b)),
        (-4i64..8).prop_map(Mutation::HeaderLen),
    ]
}

fn mutate(header: usize, body: &mut Vec<u8>, m: &Mutation) -> String {
    let at = |a: usize, len: usize| if len == 0 { 0 } else { a % len };
    match *m {
        Mutation::Set(a, b) => {
            let i = at(a, body.len());
            if let Some(x) = body.get_mut(i) {
                *x = b;
            }
        }
        Mutation::Cut(a) => body.truncate(at(a, body.len() + 1)),
        Mutation::Insert(a, b) => body.insert(at(a, body.len() + 1), b),
        Mutation::HeaderLen(d) => return (header as i64 + d).to_string(),
    }
    header.to_string()
}

fn count(counter: &AtomicUsize) -> usize {
    counter.load(Relaxed)
}

/// 100,000 generated bodies (binary and JSON encodings of the same tensors must decode to the
/// same batch, or both fail) and 100,000 mutated ones (accepted, or an error with a message).
#[test]
fn fuzz_binary_bodies() {
    let schema = testgen::schema();
    let config = Config {
        cases: 100_000,
        failure_persistence: None,
        ..Config::default()
    };
    let (same, both_failed) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let mut runner = TestRunner::new(config.clone());
    runner
        .run(&(any::<u64>(), any::<u8>()), |(seed, mask)| {
            let tensors = testgen::tensors(&mut Rng(seed));
            let binary: Vec<bool> = (0..8).map(|i| mask & (1 << i) != 0).collect();
            let json = request_to_batch(&testgen::json_request(&tensors), &schema);
            let (len, body) = testgen::binary_body(&tensors, &binary);
            let bin = decode(&len.to_string(), &body, &schema);
            match (&json, &bin) {
                (Ok(a), Ok(b)) => {
                    prop_assert_eq!(a, b);
                    same.fetch_add(1, Relaxed);
                }
                (Err(a), Err(b)) => {
                    prop_assert!(!a.is_empty() && !b.is_empty());
                    both_failed.fetch_add(1, Relaxed);
                }
                _ => prop_assert!(false, "JSON {json:?} but binary {bin:?} for {tensors:?}"),
            }
            Ok(())
        })
        .unwrap();
    let (accepted, rejected) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let mut runner = TestRunner::new(config);
    let strategy = (
        any::<u64>(),
        any::<u8>(),
        proptest::collection::vec(mutation(), 1..4),
    );
    runner
        .run(&strategy, |(seed, mask, mutations)| {
            let tensors = testgen::tensors(&mut Rng(seed));
            let binary: Vec<bool> = (0..8).map(|i| mask & (1 << i) != 0).collect();
            let (header, mut body) = testgen::binary_body(&tensors, &binary);
            let mut len = header.to_string();
            for m in &mutations {
                len = mutate(header, &mut body, m);
            }
            match decode(&len, &body, &schema) {
                Ok(batch) => {
                    prop_assert_eq!(batch.num_columns(), 6);
                    accepted.fetch_add(1, Relaxed);
                }
                Err(e) => {
                    prop_assert!(!e.is_empty());
                    rejected.fetch_add(1, Relaxed);
                }
            }
            Ok(())
        })
        .unwrap();
    let _ = writeln!(
        std::io::stderr(),
        "v2 binary bodies: {} generated ({} decoded identically to JSON, {} rejected by both); {} mutated ({} accepted, {} rejected with a message)",
        count(&same) + count(&both_failed),
        count(&same),
        count(&both_failed),
        count(&accepted) + count(&rejected),
        count(&accepted),
        count(&rejected)
    );
    assert!(
        count(&same) > 50_000,
        "too few valid cases: {}",
        count(&same)
    );
    assert_eq!(count(&accepted) + count(&rejected), 100_000);
}
