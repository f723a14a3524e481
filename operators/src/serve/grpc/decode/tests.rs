use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use prost::Message;

use super::*;
use crate::serve::v2::request_to_batch;
use crate::serve::v2::request_to_batch_with;
use crate::serve::v2::testgen::{self, Rng, Tensor, Values};

fn decode(message: &ModelInferRequest, schema: &SchemaRef) -> Result<RecordBatch, String> {
    let (request, bytes) = to_request(message)?;
    let raw: Vec<Option<&[u8]>> = bytes.iter().map(|b| Some(b.as_slice())).collect();
    request_to_batch_with(&request, &raw, schema)
}

fn typed(t: &Tensor) -> InferTensorContents {
    let mut c = InferTensorContents::default();
    match (&t.values, t.datatype) {
        (Values::Int(v), "INT64") => c.int64_contents = v.clone(),
        (Values::Int(v), _) => c.int_contents = v.iter().map(|x| *x as i32).collect(),
        (Values::UInt(v), "UINT64") => c.uint64_contents = v.clone(),
        (Values::UInt(v), _) => c.uint_contents = v.iter().map(|x| *x as u32).collect(),
        (Values::Float(v), "FP32") => c.fp32_contents = v.iter().map(|x| *x as f32).collect(),
        (Values::Float(v), _) => c.fp64_contents = v.clone(),
        (Values::Text(v), _) => {
            c.bytes_contents = v.iter().map(|s| s.as_bytes().to_vec()).collect()
        }
        (Values::Bool(v), _) => c.bool_contents = v.clone(),
    }
    c
}

/// The tensors as a ModelInferRequest, in raw_input_contents or typed contents.
fn message(tensors: &[Tensor], raw: bool) -> ModelInferRequest {
    let mut m = ModelInferRequest {
        model_name: "m".to_owned(),
        ..Default::default()
    };
    for t in tensors {
        m.inputs.push(InferInputTensor {
            name: t.name.clone(),
            datatype: t.datatype.to_owned(),
            shape: t.shape.clone(),
            contents: (!raw).then(|| typed(t)),
            ..Default::default()
        });
        if raw {
            m.raw_input_contents.push(t.bytes());
        }
    }
    m
}

#[test]
fn raw_and_typed_contents_decode_like_json() {
    let schema = testgen::schema();
    let mut rng = Rng(7);
    let mut checked = 0;
    for _ in 0..200 {
        let tensors = testgen::tensors(&mut rng);
        let Ok(json) = request_to_batch(&testgen::json_request(&tensors), &schema) else {
            continue;
        };
        assert_eq!(decode(&message(&tensors, true), &schema).unwrap(), json);
        assert_eq!(decode(&message(&tensors, false), &schema).unwrap(), json);
        checked += 1;
    }
    assert!(checked > 100);
}

/// Generated tensors with every column once, under its own name, with at least one row.
fn full_tensors() -> Vec<Tensor> {
    let names = ["f", "g", "i", "u", "s", "b"];
    (0u64..)
        .map(|seed| testgen::tensors(&mut Rng(seed)))
        .find(|t| {
            t.len() == 6
                && t.iter().zip(names).all(|(t, n)| t.name == n)
                && t[0].shape[0] > 0
                && t[1].shape[0] == t[0].shape[0]
        })
        .unwrap()
}

#[test]
fn bad_messages_are_named() {
    let schema = testgen::schema();
    let tensors = full_tensors();
    let mut m = message(&tensors, true);
    m.raw_input_contents.pop();
    let e = decode(&m, &schema).unwrap_err();
    assert!(
        e.contains("raw_input_contents has 5 entries for 6 inputs"),
        "{e}"
    );

    let mut m = message(&tensors, false);
    m.inputs[0].datatype = "FP32".to_owned();
    m.inputs[0].contents = Some(InferTensorContents {
        int64_contents: vec![1],
        ..Default::default()
    });
    let e = decode(&m, &schema).unwrap_err();
    assert!(
        e.contains("input 'f': datatype FP32 takes fp32_contents, but int64_contents is given"),
        "{e}"
    );

    let mut m = message(&tensors, false);
    m.inputs[2].datatype = "INT8".to_owned();
    m.inputs[2].shape = vec![1];
    m.inputs[2].contents = Some(InferTensorContents {
        int_contents: vec![300],
        ..Default::default()
    });
    let e = decode(&m, &schema).unwrap_err();
    assert!(
        e.contains("input 'i': value 0 (300) is out of range for INT8"),
        "{e}"
    );

    let mut m = message(&tensors, false);
    m.inputs[0].datatype = "FP16".to_owned();
    let e = decode(&m, &schema).unwrap_err();
    assert!(
        e.contains("input 'f': FP16 has no typed contents field"),
        "{e}"
    );

    let mut m = message(&tensors, false);
    m.inputs[0].datatype = "COMPLEX".to_owned();
    let e = decode(&m, &schema).unwrap_err();
    assert!(e.contains("unknown datatype 'COMPLEX'"), "{e}");

    let mut m = message(&tensors, true);
    m.inputs[1].contents = Some(InferTensorContents {
        fp64_contents: vec![1.0],
        ..Default::default()
    });
    let e = decode(&m, &schema).unwrap_err();
    assert!(
        e.contains("input 'g' has contents, but the request also has raw_input_contents"),
        "{e}"
    );
}

#[test]
fn responses_carry_raw_outputs() {
    let request = InferenceRequest {
        id: Some("r1".to_owned()),
        parameters: None,
        inputs: vec![],
        outputs: None,
    };
    let r = to_response(&request, ("m", 2), &[0.2, 0.8, 0.6, 0.4], 2, Some(2), None).unwrap();
    assert_eq!(
        (
            r.model_name.as_str(),
            r.model_version.as_str(),
            r.id.as_str()
        ),
        ("m", "2", "r1")
    );
    assert_eq!(r.outputs.len(), 2);
    assert_eq!(
        (r.outputs[0].name.as_str(), r.outputs[0].datatype.as_str()),
        ("class", "INT64")
    );
    assert_eq!(r.outputs[0].shape, vec![2]);
    assert_eq!(r.outputs[1].shape, vec![2, 2]);
    let classes: Vec<i64> = r.raw_output_contents[0]
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(classes, vec![1, 0]);
    let probs: Vec<f32> = r.raw_output_contents[1]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(probs, vec![0.2, 0.8, 0.6, 0.4]);
}

/// 100,000 generated messages (raw and typed: the same batch as the JSON encoding, or all fail)
/// and 100,000 mutated encoded messages (a prost decode error, or accepted, or an error with a
/// message).
#[test]
fn fuzz_model_infer_messages() {
    let schema = testgen::schema();
    let config = Config {
        cases: 100_000,
        failure_persistence: None,
        ..Config::default()
    };
    let (same, both_failed) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let mut runner = TestRunner::new(config.clone());
    runner
        .run(&(any::<u64>(), any::<bool>()), |(seed, raw)| {
            let tensors = testgen::tensors(&mut Rng(seed));
            let json = request_to_batch(&testgen::json_request(&tensors), &schema);
            let grpc = decode(&message(&tensors, raw), &schema);
            match (&json, &grpc) {
                (Ok(a), Ok(b)) => {
                    prop_assert_eq!(a, b);
                    same.fetch_add(1, Relaxed);
                }
                (Err(a), Err(b)) => {
                    prop_assert!(!a.is_empty() && !b.is_empty());
                    both_failed.fetch_add(1, Relaxed);
                }
                _ => prop_assert!(false, "JSON {json:?} but gRPC {grpc:?} for {tensors:?}"),
            }
            Ok(())
        })
        .unwrap();
    let (not_proto, accepted, rejected) = (
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    );
    let mut runner = TestRunner::new(config);
    let strategy = (
        any::<u64>(),
        any::<bool>(),
        proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 1..4),
    );
    runner
        .run(&strategy, |(seed, raw, mutations)| {
            let tensors = testgen::tensors(&mut Rng(seed));
            let mut bytes = message(&tensors, raw).encode_to_vec();
            for (at, b, op) in mutations {
                let i = at % (bytes.len() + 1);
                match op {
                    0 if i < bytes.len() => bytes[i] = b,
                    1 => bytes.truncate(i),
                    _ => bytes.insert(i, b),
                }
            }
            match ModelInferRequest::decode(bytes.as_slice()) {
                Err(_) => {
                    not_proto.fetch_add(1, Relaxed);
                }
                Ok(m) => match decode(&m, &schema) {
                    Ok(batch) => {
                        prop_assert_eq!(batch.num_columns(), 6);
                        accepted.fetch_add(1, Relaxed);
                    }
                    Err(e) => {
                        prop_assert!(!e.is_empty());
                        rejected.fetch_add(1, Relaxed);
                    }
                },
            }
            Ok(())
        })
        .unwrap();
    let n = |c: &AtomicUsize| c.load(Relaxed);
    let _ = writeln!(
        std::io::stderr(),
        "gRPC ModelInfer messages: {} generated ({} decoded identically to JSON, {} rejected by both); {} mutated ({} not protobuf, {} accepted, {} rejected with a message)",
        n(&same) + n(&both_failed),
        n(&same),
        n(&both_failed),
        n(&not_proto) + n(&accepted) + n(&rejected),
        n(&not_proto),
        n(&accepted),
        n(&rejected)
    );
    assert!(n(&same) > 50_000);
    assert_eq!(n(&not_proto) + n(&accepted) + n(&rejected), 100_000);
}
