//! Preprocessing: fit/merge equivalence, transforms, nulls, schema errors.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, DictionaryArray, Float32Array, Float64Array, Int32Array, Int64Array,
    LargeStringArray, StringArray, StringViewArray, UInt8Array,
};
use arrow::datatypes::{DataType, Int8Type};
use arrow::record_batch::RecordBatch;
use millrace_ml::Error;
use millrace_ml::preprocess::{FeatureSpec, FitState, LabelKind, NullPolicy, RowError, Targets};
use millrace_ml::rng::Rng;

pub(crate) fn spec() -> FeatureSpec {
    FeatureSpec {
        standardize: vec!["a".into()],
        numeric: vec!["b".into()],
        one_hot: vec!["c".into()],
        index: vec!["d".into()],
        label: "y".into(),
        ..FeatureSpec::default()
    }
}

/// A random batch with nulls sprinkled in every column.
pub(crate) fn random_batch(rows: usize, seed: u64) -> RecordBatch {
    let mut rng = Rng::new(seed);
    let cats = ["red", "green", "blue", "cyan", "black", "white"];
    let mut a = Vec::new();
    let mut b = Vec::new();
    let mut c = Vec::new();
    let mut d = Vec::new();
    let mut y = Vec::new();
    for _ in 0..rows {
        let null = rng.below(20) == 0;
        a.push((!null).then(|| rng.normal_f64() * 3.0 + 1000.0));
        b.push((rng.below(25) != 0).then(|| rng.below(100) as i32 - 50));
        // skewed category frequencies so the vocabulary order is by count
        let pick = (rng.next_f64().powi(2) * cats.len() as f64) as usize;
        c.push((rng.below(30) != 0).then_some(cats[pick]));
        d.push(Some(cats[(pick + 1) % cats.len()]));
        y.push((rng.below(40) != 0).then(|| rng.below(3) as i64));
    }
    RecordBatch::try_from_iter([
        ("a", Arc::new(Float64Array::from(a)) as ArrayRef),
        ("b", Arc::new(Int32Array::from(b))),
        ("c", Arc::new(StringArray::from(c))),
        (
            "d",
            Arc::new(d.into_iter().collect::<DictionaryArray<Int8Type>>()),
        ),
        ("y", Arc::new(Int64Array::from(y))),
    ])
    .unwrap()
}

fn rel_close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1e-300)
}

#[test]
fn merged_parts_equal_fitting_the_whole() {
    let batches: Vec<RecordBatch> = (0..6)
        .map(|i| random_batch(100 + 37 * i, i as u64))
        .collect();
    // One worker sees everything.
    let mut whole = FitState::new(&spec(), LabelKind::Classification);
    for b in &batches {
        whole.update(b).unwrap();
    }
    // Three workers see two batches each, then merge in a tree.
    let mut parts: Vec<FitState> = (0..3)
        .map(|_| FitState::new(&spec(), LabelKind::Classification))
        .collect();
    for (i, b) in batches.iter().enumerate() {
        parts[i % 3].update(b).unwrap();
    }
    let mut merged = parts[2].clone();
    let mut left = parts[0].clone();
    left.merge(&parts[1]);
    merged.merge(&left);
    // Through serde, as it travels between workers.
    let merged: FitState = serde_json::from_str(&serde_json::to_string(&merged).unwrap()).unwrap();
    assert_eq!(merged.rows(), whole.rows());

    let (w, m) = (whole.finish().unwrap(), merged.finish().unwrap());
    for (x, y) in w
        .means()
        .iter()
        .zip(m.means())
        .chain(w.stds().iter().zip(m.stds()))
    {
        assert!(rel_close(*x, y), "{x} vs {y}");
    }
    for (x, y) in w.numeric_means().iter().zip(m.numeric_means()) {
        assert!(rel_close(*x, y), "{x} vs {y}");
    }
    assert_eq!(w.vocabulary("c"), m.vocabulary("c"));
    assert_eq!(w.vocabulary("d"), m.vocabulary("d"));
    assert_eq!(w.num_classes(), Some(3));
    assert_eq!(m.num_classes(), Some(3));
    assert_eq!(w.feature_names(), m.feature_names());
    assert_eq!(w.raw_columns(), m.raw_columns());

    // Stats agree with a direct computation.
    let mut values = Vec::new();
    for b in &batches {
        let col = b.column(0).as_any().downcast_ref::<Float64Array>().unwrap();
        values.extend(col.iter().flatten());
    }
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let std = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / values.len() as f64).sqrt();
    assert!(rel_close(w.means()[0], mean) && rel_close(w.stds()[0], std));

    // The same transform either way.
    let t = random_batch(50, 77);
    assert_eq!(
        w.transform(&t, true).unwrap(),
        m.transform(&t, true).unwrap()
    );
}

#[test]
fn vocabulary_is_by_count_then_name() {
    let batch = RecordBatch::try_from_iter([
        (
            "c",
            Arc::new(StringArray::from(vec!["b", "a", "c", "b", "a", "d", "b"])) as ArrayRef,
        ),
        ("y", Arc::new(Float32Array::from(vec![1.0; 7]))),
    ])
    .unwrap();
    let mut spec = FeatureSpec {
        one_hot: vec!["c".into()],
        label: "y".into(),
        ..FeatureSpec::default()
    };
    let mut st = FitState::new(&spec, LabelKind::Regression);
    st.update(&batch).unwrap();
    let fitted = st.finish().unwrap();
    assert_eq!(fitted.vocabulary("c").unwrap(), ["b", "a", "c", "d"]);
    assert_eq!(fitted.feature_names(), ["c=b", "c=a", "c=c", "c=d"]);

    spec.max_categories = Some(2);
    let mut st = FitState::new(&spec, LabelKind::Regression);
    st.update(&batch).unwrap();
    let fitted = st.finish().unwrap();
    assert_eq!(fitted.input_dim(), 2);
    let f = fitted.transform(&batch, true).unwrap();
    // b a c b a d b → [1,0] [0,1] [0,0] [1,0] [0,1] [0,0] [1,0]
    assert_eq!(
        f.x,
        vec![1., 0., 0., 1., 0., 0., 1., 0., 0., 1., 0., 0., 1., 0.]
    );
    assert_eq!(f.y, Some(Targets::Values(vec![1.0; 7])));
}

#[test]
fn transform_by_hand() {
    let batch = RecordBatch::try_from_iter([
        (
            "a",
            Arc::new(Float64Array::from(vec![1.0, 3.0, 5.0])) as ArrayRef,
        ),
        ("b", Arc::new(UInt8Array::from(vec![7, 8, 9]))),
        ("c", Arc::new(LargeStringArray::from(vec!["x", "y", "x"]))),
        ("d", Arc::new(StringViewArray::from(vec!["p", "q", "q"]))),
        ("y", Arc::new(StringArray::from(vec!["no", "yes", "no"]))),
    ])
    .unwrap();
    let mut st = FitState::new(&spec(), LabelKind::Classification);
    st.update(&batch).unwrap();
    let pre = st.finish().unwrap();
    assert_eq!(pre.input_dim(), 1 + 1 + 2 + 1);
    assert_eq!(pre.feature_names(), ["a", "b", "c=x", "c=y", "d"]);
    assert_eq!(
        pre.class_names(),
        Some(vec!["no".to_string(), "yes".to_string()])
    );
    assert_eq!(pre.num_classes(), Some(2));
    assert_eq!(pre.required_columns(true), ["a", "b", "c", "d", "y"]);
    assert_eq!(pre.required_columns(false), ["a", "b", "c", "d"]);
    let schema = pre.raw_schema();
    assert_eq!(schema.field(2).data_type(), &DataType::LargeUtf8);
    assert_eq!(schema.field(3).data_type(), &DataType::Utf8View);

    let f = pre.transform(&batch, true).unwrap();
    let s = (8.0f64 / 3.0).sqrt(); // population std of 1, 3, 5
    let z = |v: f64| ((v - 3.0) / s) as f32;
    // d vocabulary: q (2) then p (1) → p = 2, q = 1
    assert_eq!(
        f.x,
        vec![
            z(1.0),
            7.0,
            1.0,
            0.0,
            2.0,
            z(3.0),
            8.0,
            0.0,
            1.0,
            1.0,
            z(5.0),
            9.0,
            1.0,
            0.0,
            1.0
        ]
    );
    assert_eq!(f.y, Some(Targets::Classes(vec![0, 1, 0])));
    assert_eq!(f.accepted, vec![0, 1, 2]);

    // Unseen categories: one-hot all zeros, index 0; unseen label: rejected.
    let serve = RecordBatch::try_from_iter([
        (
            "a",
            Arc::new(Float32Array::from(vec![3.0, 3.0])) as ArrayRef,
        ),
        ("b", Arc::new(Int64Array::from(vec![1, 2]))),
        ("c", Arc::new(StringArray::from(vec!["zzz", "y"]))),
        ("d", Arc::new(StringArray::from(vec!["new", "p"]))),
        ("y", Arc::new(StringArray::from(vec!["maybe", "yes"]))),
    ])
    .unwrap();
    let f = pre.transform(&serve, false).unwrap();
    assert_eq!(f.x, vec![0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 2.0, 0.0, 1.0, 2.0]);
    assert_eq!(f.y, None);
    let f = pre.transform(&serve, true).unwrap();
    assert_eq!(f.rows, 1);
    assert_eq!(f.accepted, vec![1]);
    assert_eq!(f.y, Some(Targets::Classes(vec![1])));
    assert_eq!(f.rejected.len(), 1);
    assert_eq!((f.rejected[0].row, f.rejected[0].column.as_str()), (0, "y"));
    assert!(
        f.rejected[0].reason.contains("unseen label `maybe`"),
        "{:?}",
        f.rejected
    );
}

fn null_batch() -> RecordBatch {
    RecordBatch::try_from_iter([
        (
            "a",
            Arc::new(Float64Array::from(vec![
                Some(2.0),
                None,
                Some(f64::NAN),
                Some(4.0),
                Some(6.0),
            ])) as ArrayRef,
        ),
        (
            "c",
            Arc::new(StringArray::from(vec![
                Some("u"),
                Some("u"),
                Some("v"),
                None,
                Some("v"),
            ])),
        ),
        (
            "y",
            Arc::new(Int32Array::from(vec![
                Some(0),
                Some(1),
                Some(1),
                Some(0),
                None,
            ])),
        ),
    ])
    .unwrap()
}

fn null_spec(nulls: NullPolicy) -> FeatureSpec {
    FeatureSpec {
        standardize: vec!["a".into()],
        one_hot: vec!["c".into()],
        label: "y".into(),
        nulls,
        ..FeatureSpec::default()
    }
}

#[test]
fn null_policies() {
    let batch = null_batch();
    let fit = |nulls| {
        let mut st = FitState::new(&null_spec(nulls), LabelKind::Classification);
        st.update(&batch).unwrap();
        st.finish().unwrap()
    };
    // Stats skip null and NaN: a = {2, 4, 6} → mean 4, std sqrt(8/3).
    let pre = fit(NullPolicy::DeadLetter);
    assert_eq!(pre.means(), vec![4.0]);
    assert!((pre.stds()[0] - (8.0f64 / 3.0).sqrt()).abs() < 1e-12);
    assert_eq!(pre.vocabulary("c").unwrap(), ["u", "v"]);

    let f = pre.transform(&batch, true).unwrap();
    assert_eq!(f.accepted, vec![0]);
    let expect = vec![
        RowError {
            row: 1,
            column: "a".into(),
            reason: "null or non-finite value".into(),
        },
        RowError {
            row: 2,
            column: "a".into(),
            reason: "null or non-finite value".into(),
        },
        RowError {
            row: 3,
            column: "c".into(),
            reason: "null value".into(),
        },
        RowError {
            row: 4,
            column: "y".into(),
            reason: "label is null".into(),
        },
    ];
    assert_eq!(f.rejected, expect);
    let s = (8.0f64 / 3.0).sqrt();
    assert_eq!(f.x, vec![((2.0 - 4.0) / s) as f32, 1.0, 0.0]);

    let f = fit(NullPolicy::Mean).transform(&batch, false).unwrap();
    assert_eq!(f.rows, 5);
    assert_eq!(f.row(1).unwrap(), [0.0, 1.0, 0.0]); // mean → 0 after standardising
    assert_eq!(f.row(3).unwrap(), [0.0, 0.0, 0.0]); // null category → all zeros
    let f = fit(NullPolicy::Zero).transform(&batch, false).unwrap();
    assert_eq!(f.row(2).unwrap(), [((0.0 - 4.0) / s) as f32, 0.0, 1.0]);
    // The label is still required to be valid when asked for.
    let f = fit(NullPolicy::Zero).transform(&batch, true).unwrap();
    assert_eq!(f.accepted, vec![0, 1, 2, 3]);
}

#[test]
fn class_labels_out_of_range_are_rejected() {
    let fit_batch = RecordBatch::try_from_iter([
        (
            "x",
            Arc::new(Float32Array::from(vec![1.0, 2.0, 3.0])) as ArrayRef,
        ),
        ("y", Arc::new(Int64Array::from(vec![0, 2, 1]))),
    ])
    .unwrap();
    let spec = FeatureSpec {
        numeric: vec!["x".into()],
        label: "y".into(),
        ..FeatureSpec::default()
    };
    let mut st = FitState::new(&spec, LabelKind::Classification);
    st.update(&fit_batch).unwrap();
    let pre = st.finish().unwrap();
    assert_eq!(pre.num_classes(), Some(3));
    assert_eq!(pre.class_names(), None);
    let batch = RecordBatch::try_from_iter([
        (
            "x",
            Arc::new(Float32Array::from(vec![1.0, 2.0, 3.0])) as ArrayRef,
        ),
        ("y", Arc::new(Int64Array::from(vec![3, -1, 2]))),
    ])
    .unwrap();
    let f = pre.transform(&batch, true).unwrap();
    assert_eq!(f.accepted, vec![2]);
    assert_eq!(f.rejected[0].reason, "label 3 outside 0..3");
    assert_eq!(f.rejected[1].reason, "label -1 outside 0..3");

    // Boolean labels are classes 0 and 1; a single seen class still means binary.
    let bools = RecordBatch::try_from_iter([
        (
            "x",
            Arc::new(Float32Array::from(vec![1.0, 2.0])) as ArrayRef,
        ),
        ("y", Arc::new(BooleanArray::from(vec![false, false]))),
    ])
    .unwrap();
    let mut st = FitState::new(&spec, LabelKind::Classification);
    st.update(&bools).unwrap();
    assert_eq!(st.finish().unwrap().num_classes(), Some(2));
}

#[test]
fn schema_problems_are_errors_naming_the_column() {
    let batch = null_batch();
    let mut st = FitState::new(&null_spec(NullPolicy::DeadLetter), LabelKind::Regression);
    st.update(&batch).unwrap();
    let pre = st.finish().unwrap();

    let missing = RecordBatch::try_from_iter([("a", batch.column(0).clone())]).unwrap();
    let err = pre.transform(&missing, false).unwrap_err();
    assert!(
        matches!(&err, Error::MissingColumn { column, .. } if column == "c"),
        "{err}"
    );
    assert!(err.to_string().contains("columns present: a"), "{err}");

    let wrong = RecordBatch::try_from_iter([
        ("a", Arc::new(StringArray::from(vec!["1"])) as ArrayRef),
        ("c", Arc::new(StringArray::from(vec!["u"]))),
    ])
    .unwrap();
    let err = pre.transform(&wrong, false).unwrap_err().to_string();
    assert!(
        err.contains("column `a` has type Utf8, expected a numeric type"),
        "{err}"
    );

    let mut st = FitState::new(&null_spec(NullPolicy::DeadLetter), LabelKind::Regression);
    let string_label = RecordBatch::try_from_iter([
        ("a", Arc::new(Float64Array::from(vec![1.0])) as ArrayRef),
        ("c", Arc::new(StringArray::from(vec!["u"]))),
        ("y", Arc::new(StringArray::from(vec!["u"]))),
    ])
    .unwrap();
    let err = st.update(&string_label).unwrap_err().to_string();
    assert!(
        err.contains("column `y` has type Utf8, expected a numeric type"),
        "{err}"
    );
    assert_eq!(st.rows(), 0);
    assert!(
        st.finish()
            .unwrap_err()
            .to_string()
            .contains("no batch was seen")
    );
}

#[test]
fn fit_state_round_trips_through_serde() {
    // FitState travels between workers and FittedPreprocessor is saved as JSON: both exactly.
    let mut st = FitState::new(&spec(), LabelKind::Classification);
    st.update(&random_batch(64, 3)).unwrap();
    let json = serde_json::to_string(&st).unwrap();
    let back: FitState = serde_json::from_str(&json).unwrap();
    assert_eq!(back, st);
    let pre = st.finish().unwrap();
    let json = serde_json::to_string(&pre).unwrap();
    let back: millrace_ml::FittedPreprocessor = serde_json::from_str(&json).unwrap();
    assert_eq!(back, pre);
    let b = random_batch(20, 9);
    assert_eq!(
        back.transform(&b, true).unwrap(),
        pre.transform(&b, true).unwrap()
    );
}

#[test]
fn one_big_batch_equals_its_slices() {
    // Crosses the transform's internal row blocks, with rejections scattered everywhere.
    let big = random_batch(5000, 42);
    let mut st = FitState::new(&spec(), LabelKind::Classification);
    st.update(&big).unwrap();
    let pre = st.finish().unwrap();
    let whole = pre.transform(&big, true).unwrap();
    assert!(
        !whole.rejected.is_empty() && whole.rows > 4000,
        "{} rows",
        whole.rows
    );

    let (mut x, mut y, mut accepted, mut rejected) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (start, len) in [(0, 1), (1, 2047), (2048, 1999), (4047, 953)] {
        let part = pre.transform(&big.slice(start, len), true).unwrap();
        x.extend(part.x);
        let Some(Targets::Classes(c)) = part.y else {
            panic!("classes expected")
        };
        y.extend(c);
        accepted.extend(part.accepted.iter().map(|r| r + start as u32));
        rejected.extend(part.rejected.into_iter().map(|mut e| {
            e.row += start as u32;
            e
        }));
    }
    assert_eq!(whole.x, x);
    assert_eq!(whole.y, Some(Targets::Classes(y)));
    assert_eq!(whole.accepted, accepted);
    assert_eq!(whole.rejected, rejected);
    assert_eq!(whole.rows + whole.rejected.len(), 5000);
}

#[test]
fn states_cross_workers_with_bincode() {
    // timely sends data between workers with bincode 1.x (no self-describing formats).
    let mut st = FitState::new(&spec(), LabelKind::Classification);
    st.update(&random_batch(64, 3)).unwrap();
    let back: FitState = bincode::deserialize(&bincode::serialize(&st).unwrap()).unwrap();
    assert_eq!(back, st);
    let pre = st.finish().unwrap();
    let back: millrace_ml::FittedPreprocessor =
        bincode::deserialize(&bincode::serialize(&pre).unwrap()).unwrap();
    assert_eq!(back, pre);
    let f = pre.transform(&random_batch(10, 1), true).unwrap();
    let back: millrace_ml::Features =
        bincode::deserialize(&bincode::serialize(&f).unwrap()).unwrap();
    assert_eq!(back, f);
    let task = millrace_ml::Task::Classification { num_classes: 3 };
    let back: millrace_ml::Task =
        bincode::deserialize(&bincode::serialize(&task).unwrap()).unwrap();
    assert_eq!(back, task);
}
