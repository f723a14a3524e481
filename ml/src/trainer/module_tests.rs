//! Tests of the generic [`ModuleTrainer`]: the built-in MLP through it is bit-identical to the
//! fast path, replicas stay bit-identical under data parallelism, `embedding_mlp` learns what a
//! one-hot MLP cannot, user losses plug in, and the errors come before any data.

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use super::{
    Loss, ModuleTrainer, Objective, TargetTensor, TargetsRef, Trainer, UserLoss, UserLossFn,
};
use crate::backend::{CpuAutodiff, cpu_device};
use crate::model::{
    Activation, EmbeddingMlp, EmbeddingMlpConfig, FeatureLayout, IndexInput, Inputs, MlpKeys,
    MlpModel, Model, ModelShape, Task,
};
use crate::optim::OptimizerSpec;
use crate::rng::Rng;

const BINARY: Task = Task::Classification { num_classes: 2 };

fn data(rows: usize, dim: usize, seed: u64) -> (Vec<f32>, Vec<i64>) {
    let mut rng = Rng::new(seed);
    let x: Vec<f32> = (0..rows * dim)
        .map(|_| rng.uniform_f32(-1.0, 1.0))
        .collect();
    let y = (0..rows)
        .map(|r| i64::from(x[r * dim] + 0.5 * x[r * dim + 1] > 0.0))
        .collect();
    (x, y)
}

fn adam() -> OptimizerSpec {
    OptimizerSpec::default()
}

fn mlp_shape(dim: usize, seed: u64) -> ModelShape {
    ModelShape {
        layout: FeatureLayout::dense(dim),
        task: BINARY,
        seed,
    }
}

#[test]
fn builtin_mlp_through_the_generic_path_is_bit_identical_to_the_builtin_burn_path() {
    let (x, y) = data(256, 6, 1);
    let keys = MlpKeys {
        hidden: vec![8, 8],
        activation: Activation::Relu,
    };
    // The built-in trainer on burn's autodiff (its dense step equals it to float rounding, see
    // dense_tests).
    let mut fast = Trainer::<CpuAutodiff>::new(
        &MlpModel::spec(&keys),
        &adam(),
        Loss::CrossEntropy,
        &BINARY,
        6,
        42,
        &cpu_device(),
    )
    .unwrap()
    .with_burn_gradients();
    let mut generic = ModuleTrainer::<CpuAutodiff, MlpModel>::new(
        "mlp",
        keys,
        mlp_shape(6, 42),
        Loss::CrossEntropy.into(),
        &adam(),
        42,
        &cpu_device(),
    )
    .unwrap();
    assert_eq!(generic.try_parameters().unwrap(), fast.parameters());
    for step in 0..20 {
        let rows = 64;
        let at = (step % 4) * rows;
        let (xs, ys) = (&x[at * 6..(at + rows) * 6], &y[at..at + rows]);
        let (la, ga) = fast
            .gradients(xs, TargetsRef::Classes(ys), rows, 1.0 / rows as f32)
            .unwrap();
        let (lb, gb) = generic
            .gradients(xs, TargetsRef::Classes(ys), rows, 1.0 / rows as f32)
            .unwrap();
        assert_eq!(la.to_bits(), lb.to_bits(), "loss, step {step}");
        assert_eq!(ga, gb, "gradients, step {step}");
        fast.apply(&ga, 0.01).unwrap();
        generic.apply(&gb, 0.01).unwrap();
    }
    assert_eq!(generic.try_parameters().unwrap(), fast.parameters());
    assert_eq!(
        generic.predict(&x, 256).unwrap(),
        fast.predict(&x, 256).unwrap()
    );
    assert_eq!(generic.optimizer_state(), fast.optimizer_state());
}

/// Rows with a dense block of 2 and an `entity` code whose own effect sets the label.
fn entity_data(rows: usize, entities: usize, seed: u64) -> (Vec<f32>, Vec<i64>) {
    // Each entity's hidden bias, the same in every set: half push towards class 1, half to 0.
    let mut world = Rng::new(1234);
    let bias: Vec<f32> = (0..entities)
        .map(|_| {
            if world.uniform_f32(0.0, 1.0) < 0.5 {
                -2.0
            } else {
                2.0
            }
        })
        .collect();
    let mut rng = Rng::new(seed);
    let mut x = Vec::with_capacity(rows * 3);
    let mut y = Vec::with_capacity(rows);
    for _ in 0..rows {
        let a = rng.uniform_f32(-1.0, 1.0);
        let b = rng.uniform_f32(-1.0, 1.0);
        let e = (rng.uniform_f32(0.0, 1.0) * entities as f32) as usize % entities;
        x.extend_from_slice(&[a, b, (e + 1) as f32]);
        y.push(i64::from(a + bias[e] > 0.0));
    }
    (x, y)
}

fn entity_layout(entities: usize) -> FeatureLayout {
    FeatureLayout {
        dense: 2,
        index: vec![IndexInput {
            name: "entity".into(),
            offset: 2,
            cardinality: entities + 1,
        }],
        ..FeatureLayout::default()
    }
}

fn accuracy(probs: &[f32], y: &[i64]) -> f64 {
    let right = y
        .iter()
        .enumerate()
        .filter(|(r, c)| i64::from(probs[r * 2 + 1] > probs[r * 2]) == **c)
        .count();
    right as f64 / y.len() as f64
}

fn embedding_trainer(seed: u64) -> ModuleTrainer<CpuAutodiff, EmbeddingMlp> {
    let config = EmbeddingMlpConfig {
        hidden: vec![16],
        embedding_dim: Some(4),
        ..EmbeddingMlpConfig::default()
    };
    ModuleTrainer::new(
        "embedding_mlp",
        config,
        ModelShape {
            layout: entity_layout(50),
            task: BINARY,
            seed,
        },
        Loss::CrossEntropy.into(),
        &adam(),
        seed,
        &cpu_device(),
    )
    .unwrap()
}

#[test]
fn embedding_mlp_learns_per_entity_effects_and_replicas_stay_identical() {
    let (x, y) = entity_data(4096, 50, 3);
    let (tx, ty) = entity_data(2048, 50, 4);
    // Two data-parallel replicas built on two threads, each on half of every batch.
    let (mut a, mut b) = std::thread::scope(|s| {
        let a = s.spawn(|| embedding_trainer(9));
        let b = s.spawn(|| embedding_trainer(9));
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_eq!(a.try_parameters().unwrap(), b.try_parameters().unwrap());
    assert_eq!(
        a.num_params(),
        51 * 4 + (2 + 4) * 16 + 16 + 16 * 2 + 2,
        "embedding table, then the MLP"
    );
    let before = accuracy(&a.predict(&tx, 2048).unwrap(), &ty);
    for epoch in 0..6 {
        for batch in 0..16 {
            let rows = 256;
            let at = batch * rows;
            let half = rows / 2;
            let scale = 1.0 / rows as f32;
            let (_, ga) = a
                .gradients(
                    &x[at * 3..(at + half) * 3],
                    TargetsRef::Classes(&y[at..at + half]),
                    half,
                    scale,
                )
                .unwrap();
            let (_, gb) = b
                .gradients(
                    &x[(at + half) * 3..(at + rows) * 3],
                    TargetsRef::Classes(&y[at + half..at + rows]),
                    half,
                    scale,
                )
                .unwrap();
            let sum: Vec<f32> = ga.iter().zip(&gb).map(|(p, q)| p + q).collect();
            a.apply(&sum, 0.02).unwrap();
            b.apply(&sum, 0.02).unwrap();
        }
        assert_eq!(
            a.try_parameters().unwrap(),
            b.try_parameters().unwrap(),
            "epoch {epoch}"
        );
    }
    let after = accuracy(&a.predict(&tx, 2048).unwrap(), &ty);
    // The label is a + bias(entity) > 0 with |a| <= 1 < |bias| = 2: the entity alone decides,
    // which an untrained model cannot know and a learned per-entity embedding can.
    assert!(before < 0.8, "before training: {before}");
    assert!(after > 0.93, "after training: {after} (before {before})");
}

#[test]
fn checkpoint_restores_exactly() {
    let (x, y) = entity_data(512, 50, 5);
    let mut a = embedding_trainer(1);
    let step = |t: &mut ModuleTrainer<CpuAutodiff, EmbeddingMlp>, i: usize| {
        let at = (i % 4) * 128;
        let (_, g) = t
            .gradients(
                &x[at * 3..(at + 128) * 3],
                TargetsRef::Classes(&y[at..at + 128]),
                128,
                1.0 / 128.0,
            )
            .unwrap();
        t.apply(&g, 0.01).unwrap();
    };
    for i in 0..5 {
        step(&mut a, i);
    }
    // A replica built with another seed, given the checkpoint, continues identically.
    let mut b = embedding_trainer(77);
    assert_ne!(a.try_parameters().unwrap(), b.try_parameters().unwrap());
    b.set_parameters(&a.try_parameters().unwrap()).unwrap();
    b.restore_optimizer(a.optimizer_state()).unwrap();
    for i in 5..10 {
        step(&mut a, i);
        step(&mut b, i);
    }
    assert_eq!(a.try_parameters().unwrap(), b.try_parameters().unwrap());
    assert_eq!(a.predict(&x, 512).unwrap(), b.predict(&x, 512).unwrap());
    assert!(b.set_parameters(&[1.0]).is_err());
    assert_eq!(a.try_parameters().unwrap(), b.try_parameters().unwrap());
}

/// Focal loss, γ = 2.
struct Focal;

impl UserLoss for Focal {
    fn validate(task: &Task) -> crate::Result<()> {
        match task {
            Task::Classification { .. } => Ok(()),
            Task::Regression => Err(crate::Error::config(
                "train.loss",
                "focal: classification only",
            )),
        }
    }
    fn per_row<B: Backend>(output: Tensor<B, 2>, targets: TargetTensor<B>) -> Tensor<B, 1> {
        let TargetTensor::Classes(classes) = targets else {
            unreachable!("validated")
        };
        let [rows, _] = output.dims();
        let log_p = burn::tensor::activation::log_softmax(output, 1)
            .gather(1, classes.reshape([rows, 1]))
            .reshape([rows]);
        let p = log_p.clone().exp();
        p.neg().add_scalar(1.0).powi_scalar(2).mul(log_p).neg()
    }
}

#[test]
fn a_user_loss_trains_and_is_checked_against_the_task() {
    let (x, y) = data(512, 4, 2);
    let focal = || Objective::User(UserLossFn::<CpuAutodiff>::of::<Focal>("focal"));
    let keys = MlpKeys {
        hidden: vec![8],
        activation: Activation::Tanh,
    };
    let mut t = ModuleTrainer::<CpuAutodiff, MlpModel>::new(
        "mlp",
        keys.clone(),
        mlp_shape(4, 1),
        focal(),
        &adam(),
        1,
        &cpu_device(),
    )
    .unwrap();
    let first = t
        .gradients(&x, TargetsRef::Classes(&y), 512, 1.0 / 512.0)
        .unwrap()
        .0;
    // Focal loss of a row is at most its cross-entropy; at p = 0.5 it is ln 2 / 4.
    assert!(first / 512.0 < 0.25, "{first}");
    for _ in 0..100 {
        let (_, g) = t
            .gradients(&x, TargetsRef::Classes(&y), 512, 1.0 / 512.0)
            .unwrap();
        t.apply(&g, 0.02).unwrap();
    }
    let last = t
        .gradients(&x, TargetsRef::Classes(&y), 512, 1.0 / 512.0)
        .unwrap()
        .0;
    assert!(last < first / 4.0, "focal loss {first} -> {last}");
    assert!(accuracy(&t.predict(&x, 512).unwrap(), &y) > 0.95);
    let err = ModuleTrainer::<CpuAutodiff, MlpModel>::new(
        "mlp",
        keys,
        ModelShape {
            layout: FeatureLayout::dense(4),
            task: Task::Regression,
            seed: 1,
        },
        focal(),
        &adam(),
        1,
        &cpu_device(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("train.loss") && err.contains("focal"), "{err}");
}

/// A model whose forward returns the wrong width.
struct Wrong;

impl Model for Wrong {
    type Config = MlpKeys;
    type Module<B: Backend> = crate::model::Mlp<B>;
    fn inputs(_: &MlpKeys, _: &FeatureLayout) -> Vec<crate::model::Input> {
        vec![crate::model::Input::Index("region".into())]
    }
    fn init<B: Backend>(_: &MlpKeys, shape: &ModelShape, device: &B::Device) -> Self::Module<B> {
        crate::model::MlpConfig::new(shape.layout.width(), 3).init(device)
    }
    fn forward<B: Backend>(m: &Self::Module<B>, inputs: &Inputs<B>) -> crate::Result<Tensor<B, 2>> {
        Ok(m.forward(inputs.all()))
    }
}

#[test]
fn errors_name_the_model_and_the_tensor() {
    let build = |layout: FeatureLayout| {
        ModuleTrainer::<CpuAutodiff, Wrong>::new(
            "wrong",
            MlpKeys::default(),
            ModelShape {
                layout,
                task: BINARY,
                seed: 0,
            },
            Loss::CrossEntropy.into(),
            &adam(),
            0,
            &cpu_device(),
        )
    };
    let err = build(FeatureLayout::dense(3)).unwrap_err().to_string();
    assert!(
        err.contains("`wrong`") && err.contains("index:region"),
        "{err}"
    );
    let mut t = build(FeatureLayout {
        dense: 1,
        index: vec![IndexInput {
            name: "region".into(),
            offset: 1,
            cardinality: 3,
        }],
        ..FeatureLayout::default()
    })
    .unwrap();
    let err = t
        .gradients(&[0.5, 1.0], TargetsRef::Classes(&[1]), 1, 1.0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("[1, 3]") && err.contains("[1, 2]"), "{err}");
    let err = t
        .gradients(&[0.5, 1.0, 2.0], TargetsRef::Classes(&[1]), 1, 1.0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("3 values"), "{err}");
}
