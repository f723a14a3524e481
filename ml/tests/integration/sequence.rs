//! Sequence inputs: list columns padded and truncated to `max_len`, coded with lengths and masks.

use std::sync::Arc;

use arrow::array::{ArrayRef, Int32Array, Int64Array};
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use millrace_ml::preprocess::{FeatureSpec, FitState, LabelKind, NullPolicy};

use crate::preprocess::{random_batch, spec};

fn sequence_batch() -> RecordBatch {
    use arrow::array::{FixedSizeListArray, ListBuilder, StringBuilder};
    use arrow::datatypes::{Field, Float32Type};
    let readings = arrow::array::ListArray::from_iter_primitive::<Float32Type, _, _>(vec![
        Some(vec![Some(1.0), Some(2.0), Some(3.0), Some(4.0)]),
        Some(vec![Some(5.0)]),
        None,
        Some(vec![]),
        Some(vec![Some(2.0), None]),
    ]);
    let mut words = ListBuilder::new(StringBuilder::new());
    for row in [
        vec![Some("a"), Some("b")],
        vec![Some("a")],
        vec![Some("c"), Some("a"), Some("a")],
        vec![],
        vec![Some("zz"), None],
    ] {
        for w in row {
            words.values().append_option(w);
        }
        words.append(true);
    }
    let item = Arc::new(Field::new("item", DataType::Int32, true));
    let pairs = FixedSizeListArray::new(
        item,
        2,
        Arc::new(Int32Array::from(vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10])),
        None,
    );
    RecordBatch::try_from_iter([
        ("readings", Arc::new(readings) as ArrayRef),
        ("words", Arc::new(words.finish()) as ArrayRef),
        ("pairs", Arc::new(pairs) as ArrayRef),
        (
            "y",
            Arc::new(Int64Array::from(vec![0, 1, 0, 1, 0])) as ArrayRef,
        ),
    ])
    .unwrap()
}

fn sequence_spec(nulls: NullPolicy) -> FeatureSpec {
    use millrace_ml::preprocess::SequenceSpec;
    let seq = |column: &str, max_len| SequenceSpec {
        column: column.into(),
        max_len,
    };
    FeatureSpec {
        sequence: vec![seq("readings", 3), seq("words", 2), seq("pairs", 2)],
        label: "y".into(),
        nulls,
        ..FeatureSpec::default()
    }
}

#[test]
fn sequences_are_padded_truncated_and_coded_with_lengths() {
    use millrace_ml::model::{FeatureLayout, SequenceInput};
    use millrace_ml::preprocess::SequenceEncoding;
    let batch = sequence_batch();
    let mut state = FitState::new(&sequence_spec(NullPolicy::Zero), LabelKind::Classification);
    state.update(&batch).unwrap();
    // Fitting on two halves and merging gives the same statistics.
    let mut halves = FitState::new(&sequence_spec(NullPolicy::Zero), LabelKind::Classification);
    halves.update(&batch.slice(0, 2)).unwrap();
    let mut second = FitState::new(&sequence_spec(NullPolicy::Zero), LabelKind::Classification);
    second.update(&batch.slice(2, 3)).unwrap();
    halves.merge(&second);
    // Workers send fit states, and checkpoints hold the fitted preprocessing, in bincode: a
    // format without field names, so every field must be written.
    let sent: FitState = bincode::deserialize(&bincode::serialize(&halves).unwrap()).unwrap();
    assert_eq!(sent, halves);
    let fitted = state.finish().unwrap();
    let merged = halves.finish().unwrap();
    assert_eq!(fitted.sequence_encodings(), merged.sequence_encodings());
    let stored: millrace_ml::preprocess::FittedPreprocessor =
        bincode::deserialize(&bincode::serialize(&fitted).unwrap()).unwrap();
    assert_eq!(stored, fitted);
    let mut plain = FitState::new(&spec(), LabelKind::Classification);
    plain.update(&random_batch(50, 3)).unwrap();
    let plain = plain.finish().unwrap();
    let stored: millrace_ml::preprocess::FittedPreprocessor =
        bincode::deserialize(&bincode::serialize(&plain).unwrap()).unwrap();
    assert_eq!(stored, plain);

    // Readings 1, 2, 3, 4, 5, 2: mean 17/6.
    let SequenceEncoding::Values { mean, std } = &fitted.sequence_encodings()[0] else {
        panic!("readings are numbers");
    };
    assert!((mean - 17.0 / 6.0).abs() < 1e-12, "{mean}");
    // Words by count: a (4), then b, c, zz by name.
    assert_eq!(fitted.vocabulary("words").unwrap(), ["a", "b", "c", "zz"]);
    assert_eq!(fitted.input_dim(), 4 + 3 + 3);
    assert_eq!(
        &fitted.feature_names()[..5],
        [
            "readings.len",
            "readings[0]",
            "readings[1]",
            "readings[2]",
            "words.len"
        ]
    );
    let layout = FeatureLayout::of(&fitted).unwrap();
    assert_eq!(layout.dense, 0);
    assert_eq!(
        layout.sequence[1],
        SequenceInput {
            name: "words".into(),
            offset: 4,
            max_len: 2,
            cardinality: Some(5),
        }
    );

    let features = fitted.transform(&batch, true).unwrap();
    assert_eq!(features.rows, 5);
    let z = |v: f64| ((v - mean) / std) as f32;
    let row = |i: usize| features.row(i).unwrap().to_vec();
    // The last three readings of four; "a b" coded 1 2; the pair (1, 2) standardised.
    let pair = |v: f64| {
        let SequenceEncoding::Values { mean, std } = &fitted.sequence_encodings()[2] else {
            panic!("pairs are numbers");
        };
        ((v - mean) / std) as f32
    };
    assert_eq!(
        row(0),
        vec![
            3.0,
            z(2.0),
            z(3.0),
            z(4.0),
            2.0,
            1.0,
            2.0,
            2.0,
            pair(1.0),
            pair(2.0)
        ]
    );
    // Shorter rows are padded with zeros after their length.
    assert_eq!(&row(1)[..6], &[1.0, z(5.0), 0.0, 0.0, 1.0, 1.0]);
    // A null list (nulls = zero) is empty; the last two of "c a a" are "a a".
    assert_eq!(&row(2)[..7], &[0.0, 0.0, 0.0, 0.0, 2.0, 1.0, 1.0]);
    // A null element is the raw value 0, standardised; a null word is code 0; an unseen one too.
    assert_eq!(&row(4)[..7], &[2.0, z(2.0), z(0.0), 0.0, 2.0, 4.0, 0.0]);

    // Dead-lettered: the null list and the null elements, each with its reason.
    let strict = sequence_spec(NullPolicy::DeadLetter);
    let mut state = FitState::new(&strict, LabelKind::Classification);
    state.update(&batch).unwrap();
    let features = state.finish().unwrap().transform(&batch, true).unwrap();
    assert_eq!(features.accepted, vec![0, 1, 3]);
    let reasons: Vec<(u32, &str, &str)> = features
        .rejected
        .iter()
        .map(|e| (e.row, e.column.as_str(), e.reason.as_str()))
        .collect();
    assert_eq!(
        reasons,
        vec![
            (2, "readings", "null list"),
            (4, "readings", "element 1 is null or non-finite"),
        ]
    );

    // A column that is not a list, and a list whose elements changed type, are errors.
    let mut spec = sequence_spec(NullPolicy::Zero);
    spec.sequence[0].column = "y".into();
    spec.label = "readings".into();
    let err = FitState::new(&spec, LabelKind::Classification)
        .update(&batch)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("column `y`") && err.contains("a list"),
        "{err}"
    );
    let fitted = {
        let mut s = FitState::new(&sequence_spec(NullPolicy::Zero), LabelKind::Classification);
        s.update(&batch).unwrap();
        s.finish().unwrap()
    };
    let swapped = RecordBatch::try_from_iter([
        ("readings", batch.column(1).clone()),
        ("words", batch.column(0).clone()),
        ("pairs", batch.column(2).clone()),
        ("y", batch.column(3).clone()),
    ])
    .unwrap();
    let err = fitted.transform(&swapped, true).unwrap_err().to_string();
    assert!(
        err.contains("column `readings`") && err.contains("a list of numbers"),
        "{err}"
    );
}
