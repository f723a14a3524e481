//! Model bundles: exact round trips, damage detection, and Predictor == Trainer.

use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray};
use arrow::record_batch::RecordBatch;
use millrace_ml::Error;
use millrace_ml::backend::{CpuAutodiff, cpu_device};
use millrace_ml::bundle::{BundleMeta, ModelBundle, Predictor};
use millrace_ml::model::{Activation, ModelSpec, Task};
use millrace_ml::optim::OptimizerSpec;
use millrace_ml::preprocess::{FeatureSpec, FitState, LabelKind};
use millrace_ml::rng::Rng;
use millrace_ml::trainer::{Loss, Trainer};

/// A fresh empty directory under the target dir's temp area.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("millrace-ml-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn batch(rows: usize) -> RecordBatch {
    let mut rng = Rng::new(4);
    let a: Vec<f64> = (0..rows).map(|_| rng.normal_f64()).collect();
    let c: Vec<&str> = (0..rows).map(|i| ["x", "y", "z"][i % 3]).collect();
    let y: Vec<i64> = a
        .iter()
        .zip(&c)
        .map(|(a, c)| i64::from(*a > 0.0 || *c == "z"))
        .collect();
    RecordBatch::try_from_iter([
        ("a", Arc::new(Float64Array::from(a)) as ArrayRef),
        ("c", Arc::new(StringArray::from(c))),
        ("y", Arc::new(Int64Array::from(y))),
    ])
    .unwrap()
}

/// A briefly trained bundle plus the trainer that produced it.
pub(crate) fn trained() -> (ModelBundle, Trainer<CpuAutodiff>) {
    let spec = FeatureSpec {
        standardize: vec!["a".into()],
        one_hot: vec!["c".into()],
        label: "y".into(),
        ..FeatureSpec::default()
    };
    let data = batch(300);
    let mut st = FitState::new(&spec, LabelKind::Classification);
    st.update(&data).unwrap();
    let pre = st.finish().unwrap();
    let task = Task::Classification {
        num_classes: pre.num_classes().unwrap(),
    };
    let model = ModelSpec::mlp([8], Activation::Tanh);
    let mut t = Trainer::<CpuAutodiff>::new(
        &model,
        &OptimizerSpec::default(),
        Loss::for_task(&task),
        &task,
        pre.input_dim(),
        5,
        &cpu_device(),
    )
    .unwrap();
    let f = pre.transform(&data, true).unwrap();
    for _ in 0..20 {
        let (_, g) = t
            .gradients(
                &f.x,
                f.y.as_ref().unwrap().as_ref(),
                f.rows,
                1.0 / f.rows as f32,
            )
            .unwrap();
        t.apply(&g, 0.05).unwrap();
    }
    let bundle = ModelBundle {
        model: (&model).into(),
        task,
        preprocess: pre,
        weights: t.to_bundle_weights(),
        meta: BundleMeta {
            name: "churn".into(),
            version: 3,
            created_at: "2026-11-25T12:00:00Z".into(),
            transform_sql: Some("SELECT * FROM input".into()),
            extra: serde_json::json!({"accuracy": 0.9}),
        },
    };
    (bundle, t)
}

#[test]
fn save_load_round_trips_exactly() {
    let (bundle, _) = trained();
    let dir = scratch("roundtrip").join("model");
    bundle.save(&dir).unwrap();
    for file in ["model.json", "preprocess.json", "weights.safetensors"] {
        assert!(dir.join(file).is_file(), "{file} missing");
    }
    let loaded = ModelBundle::load(&dir).unwrap();
    assert_eq!(loaded, bundle);
    let bits = |w: &[f32]| w.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&loaded.weights), bits(&bundle.weights));

    // Saving again replaces the directory atomically; no temp dirs are left behind.
    let mut newer = bundle.clone();
    newer.meta.version = 4;
    newer.save(&dir).unwrap();
    assert_eq!(ModelBundle::load(&dir).unwrap().meta.version, 4);
    let leftovers: Vec<_> = std::fs::read_dir(dir.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(leftovers, vec!["model".to_string()]);
}

#[test]
fn predictor_matches_trainer_bit_for_bit() {
    let (bundle, trainer) = trained();
    let dir = scratch("predictor").join("m");
    bundle.save(&dir).unwrap();
    let predictor = Predictor::new(&ModelBundle::load(&dir).unwrap()).unwrap();
    let data = batch(97);
    let f = predictor.preprocess().transform(&data, false).unwrap();
    let a = predictor.predict(&f.x, f.rows).unwrap();
    assert_eq!(a.len(), 97 * 2);
    // The trainer predicts with its dense step: the same to float rounding.
    let dense = trainer.predict(&f.x, f.rows).unwrap();
    assert_eq!(dense.len(), a.len());
    for (x, y) in dense.iter().zip(&a) {
        assert!((x - y).abs() <= 1e-6, "dense {x} vs bundle {y}");
    }
    // Through burn, as the bundle's predictor: bit for bit.
    let b = trainer.with_burn_gradients().predict(&f.x, f.rows).unwrap();
    assert_eq!(
        a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        b.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
    let (features, c) = predictor.predict_batch(&data).unwrap();
    assert_eq!((features.rows, c), (97, a.clone()));
    assert_eq!(predictor.task(), &bundle.task);

    // Shared across threads without a lock.
    let predictor = Arc::new(predictor);
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let (p, x) = (predictor.clone(), f.x.clone());
            std::thread::spawn(move || p.predict(&x, 97).unwrap())
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), a);
    }
}

#[test]
fn damaged_bundles_give_clear_errors() {
    let (bundle, _) = trained();
    let root = scratch("damage");

    let missing = root.join("nothing-here");
    let err = ModelBundle::load(&missing).unwrap_err().to_string();
    assert!(
        err.contains("model.json") && err.contains("missing"),
        "{err}"
    );

    let dir = root.join("bad-json");
    bundle.save(&dir).unwrap();
    std::fs::write(dir.join("preprocess.json"), "{ not json").unwrap();
    let err = ModelBundle::load(&dir).unwrap_err();
    assert!(
        matches!(&err, Error::Json { path, .. } if path.ends_with("preprocess.json")),
        "{err}"
    );
    assert!(err.to_string().contains("line 1"), "{err}");

    let dir = root.join("bad-weights");
    bundle.save(&dir).unwrap();
    let mut bytes = std::fs::read(dir.join("weights.safetensors")).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 0x40;
    std::fs::write(dir.join("weights.safetensors"), &bytes).unwrap();
    let err = ModelBundle::load(&dir).unwrap_err().to_string();
    assert!(
        err.contains("checksum mismatch") && err.contains("weights.safetensors"),
        "{err}"
    );

    let dir = root.join("wrong-count");
    let mut short = bundle.clone();
    short.weights.pop();
    assert!(
        short.save(&dir).is_err(),
        "inconsistent bundles are not written"
    );
    bundle.save(&dir).unwrap();
    let mut shapes = bundle.param_shapes().unwrap();
    shapes.last_mut().unwrap().shape = vec![1];
    std::fs::write(
        dir.join("weights.safetensors"),
        millrace_ml::bundle::tensors::encode("logistic", &shapes, &short.weights).unwrap(),
    )
    .unwrap();
    let err = ModelBundle::load(&dir).unwrap_err().to_string();
    assert!(err.contains("num_params"), "{err}");

    let dir = root.join("no-weights");
    bundle.save(&dir).unwrap();
    std::fs::remove_file(dir.join("weights.safetensors")).unwrap();
    let err = ModelBundle::load(&dir).unwrap_err().to_string();
    assert!(
        err.contains("weights.safetensors") && err.contains("missing"),
        "{err}"
    );

    // A bundle of a kind this program has not registered names the kind and how to register it.
    let dir = root.join("unregistered");
    bundle.save(&dir).unwrap();
    let path = dir.join("model.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let kind = format!("\"kind\": \"{}\"", bundle.model.kind);
    assert!(text.contains(&kind), "{text}");
    std::fs::write(&path, text.replace(&kind, "\"kind\": \"two_tower\"")).unwrap();
    let err = ModelBundle::load(&dir).unwrap_err().to_string();
    assert!(
        err.contains("`two_tower`") && err.contains("App::new().model::<"),
        "{err}"
    );
}

/// Bundles of format 1 (`spec` in model.json, `weights.bin`) still load, with the same model.
#[test]
fn format_1_bundles_still_load() {
    let (bundle, _) = trained();
    let dir = scratch("format-1").join("model");
    std::fs::create_dir_all(&dir).unwrap();
    let model = serde_json::json!({
        "format_version": 1,
        "spec": bundle.builtin_spec().unwrap(),
        "task": bundle.task,
        "input_dim": bundle.input_dim(),
        "num_params": bundle.weights.len(),
        "meta": bundle.meta,
    });
    std::fs::write(dir.join("model.json"), model.to_string()).unwrap();
    std::fs::write(
        dir.join("preprocess.json"),
        serde_json::to_vec(&bundle.preprocess).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.join("weights.bin"),
        millrace_ml::bundle::weights::encode(&bundle.weights),
    )
    .unwrap();
    assert_eq!(ModelBundle::load(&dir).unwrap(), bundle);
}

/// `embedding_mlp` (a model on the open interface) trains through the generic replica, saves as
/// named tensors, loads, and predicts exactly what the replica predicted.
#[test]
fn an_embedding_model_bundles_and_predicts_like_its_trainer() {
    use millrace_ml::model::{FeatureLayout, ModelChoice, ModelShape};
    use millrace_ml::registry;
    let spec = FeatureSpec {
        standardize: vec!["a".into()],
        index: vec!["c".into()],
        label: "y".into(),
        ..FeatureSpec::default()
    };
    let data = batch(300);
    let mut st = FitState::new(&spec, LabelKind::Classification);
    st.update(&data).unwrap();
    let pre = st.finish().unwrap();
    let task = Task::Classification {
        num_classes: pre.num_classes().unwrap(),
    };
    let choice = ModelChoice::new("embedding_mlp")
        .with("hidden", serde_json::json!([8]))
        .with("embedding_dim", 3);
    let shape = ModelShape {
        layout: FeatureLayout::of(&pre).unwrap(),
        task,
        seed: 5,
    };
    let mut t = registry::model("embedding_mlp")
        .unwrap()
        .trainer(
            &choice.kind,
            &choice.keys_value(),
            shape,
            registry::loss("cross_entropy").unwrap(),
            &OptimizerSpec::default(),
            5,
        )
        .unwrap();
    let f = pre.transform(&data, true).unwrap();
    for _ in 0..30 {
        let y = f.y.as_ref().unwrap().as_ref();
        let (_, g) = t.gradients(&f.x, y, f.rows, 1.0 / f.rows as f32).unwrap();
        t.apply(&g, 0.05).unwrap();
    }
    let bundle = ModelBundle {
        model: choice,
        task,
        preprocess: pre,
        weights: t.try_parameters().unwrap(),
        meta: BundleMeta::default(),
    };
    let dir = scratch("embedding-bundle").join("m");
    bundle.save(&dir).unwrap();
    let loaded = ModelBundle::load(&dir).unwrap();
    assert_eq!(loaded, bundle);
    // Named tensors: the embedding table (4 codes: unseen + x, y, z) and the MLP's layers.
    let shapes = loaded.param_shapes().unwrap();
    let names: Vec<(&str, &[usize])> = shapes
        .iter()
        .map(|s| (s.path.as_str(), s.shape.as_slice()))
        .collect();
    assert_eq!(
        names,
        [
            ("embeddings.0.weight", &[4, 3][..]),
            ("mlp.layers.0.weight", &[4, 8][..]),
            ("mlp.layers.0.bias", &[8][..]),
            ("mlp.layers.1.weight", &[8, 2][..]),
            ("mlp.layers.1.bias", &[2][..]),
        ]
    );
    let predictor = Predictor::new(&loaded).unwrap();
    let (features, got) = predictor.predict_batch(&data).unwrap();
    let want = t.predict(&features.x, features.rows).unwrap();
    assert_eq!(got, want);
    let accuracy = millrace_ml::metrics::evaluate_classification(
        &got,
        2,
        match f.y.as_ref().unwrap() {
            millrace_ml::Targets::Classes(c) => c,
            millrace_ml::Targets::Values(_) => unreachable!(),
        },
    )
    .headline()
    .1;
    assert!(accuracy > 0.8, "{accuracy}");
}
