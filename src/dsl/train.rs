//! The DSL's train-step: model, loss, optimiser and schedule.

use millrace_ml::model::{Activation, ModelChoice, ModelKind, ModelSpec};
use millrace_ml::optim::{LrSchedule, OptimizerSpec};
use millrace_ml::trainer::{Loss, LossChoice, Reduction};
use millrace_ml::{Device, Precision};
use millrace_operators::spec::{ByteSize, TaskKind, TrainSpec};

/// The train-step of a pipeline: model, optimiser and schedule.
#[derive(Clone, Debug)]
pub struct Train {
    pub(super) spec: TrainSpec,
}

impl Train {
    fn with_model(task: TaskKind, kind: ModelKind, hidden: Vec<usize>) -> Self {
        Self::with_choice(
            task,
            ModelChoice::from(&ModelSpec {
                kind,
                hidden,
                activation: Activation::default(),
            }),
        )
    }

    fn with_choice(task: TaskKind, model: ModelChoice) -> Self {
        Train {
            spec: TrainSpec {
                task,
                model,
                optimizer: OptimizerSpec::default(),
                loss: None,
                reduction: Default::default(),
                lr: 1e-3,
                lr_schedule: Default::default(),
                batch_size: 512,
                epochs: 1,
                seed: 42,
                shuffle: true,
                log_every: 10,
                device: Device::Cpu,
                precision: Precision::F32,
                kernel_cache: None,
                memory_budget: None,
            },
        }
    }

    /// An MLP classifier with these hidden layer sizes.
    pub fn mlp(hidden: impl IntoIterator<Item = usize>) -> Self {
        Self::with_model(
            TaskKind::Classification,
            ModelKind::Mlp,
            hidden.into_iter().collect(),
        )
    }

    /// An MLP regressor with these hidden layer sizes.
    pub fn mlp_regressor(hidden: impl IntoIterator<Item = usize>) -> Self {
        Self::with_model(
            TaskKind::Regression,
            ModelKind::Mlp,
            hidden.into_iter().collect(),
        )
    }

    /// Logistic regression (classification): `model = { kind = "logistic" }`.
    pub fn logistic() -> Self {
        Self::with_choice(TaskKind::Classification, ModelChoice::new("logistic"))
    }

    /// Linear regression: `model = { kind = "linear" }`.
    pub fn linear() -> Self {
        Self::with_choice(TaskKind::Regression, ModelChoice::new("linear"))
    }

    /// Any registered model by its `kind` (built in, like `embedding_mlp`, or registered in
    /// this binary with [`App::model`](crate::App::model)), classifying; set its keys with
    /// [`Train::key`].
    pub fn model(kind: &str) -> Self {
        Self::with_choice(TaskKind::Classification, ModelChoice::new(kind))
    }

    /// Any registered model by its `kind`, regressing.
    pub fn model_regressor(kind: &str) -> Self {
        Self::with_choice(TaskKind::Regression, ModelChoice::new(kind))
    }

    /// Sets one of the model's own keys (`hidden`, `embedding_dim`, a user model's `dim`, …),
    /// checked against the model's config type before any data is read.
    pub fn key(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.spec.model.keys.insert(key.to_owned(), value.into());
        self
    }

    /// Hidden-layer activation.
    pub fn activation(self, activation: Activation) -> Self {
        let name = serde_json::to_value(activation).unwrap_or_default();
        self.key("activation", name)
    }

    /// The loss: a built-in one.
    pub fn loss(mut self, loss: Loss) -> Self {
        self.spec.loss = Some(LossChoice::Builtin(loss));
        self
    }

    /// The loss: one registered in this binary ([`App::loss`](crate::App::loss)).
    pub fn user_loss(mut self, name: &str) -> Self {
        self.spec.loss = Some(LossChoice::User(name.to_owned()));
        self
    }

    /// Whether a step's loss is the mean (default) or the sum over its rows.
    pub fn reduction(mut self, reduction: Reduction) -> Self {
        self.spec.reduction = reduction;
        self
    }

    /// Adam with default betas.
    pub fn adam(mut self) -> Self {
        self.spec.optimizer = OptimizerSpec::default();
        self
    }

    /// SGD with momentum.
    pub fn sgd(mut self, momentum: f64) -> Self {
        self.spec.optimizer = OptimizerSpec::Sgd {
            momentum,
            weight_decay: 0.0,
            nesterov: false,
        };
        self
    }

    /// Any optimiser.
    pub fn optimizer(mut self, optimizer: OptimizerSpec) -> Self {
        self.spec.optimizer = optimizer;
        self
    }

    /// Learning rate.
    pub fn lr(mut self, lr: f64) -> Self {
        self.spec.lr = lr;
        self
    }

    /// How the learning rate moves over the run (`train.lr_schedule`), e.g.
    /// `LrSchedule { warmup_steps: 100, ..LrSchedule::new(Decay::Cosine) }`.
    pub fn lr_schedule(mut self, schedule: LrSchedule) -> Self {
        self.spec.lr_schedule = schedule;
        self
    }

    /// How much memory the training rows may take in this process before they are spilled to
    /// local disk (`train.memory_budget`), e.g. `ByteSize::mib(512)`.
    pub fn memory_budget(mut self, budget: ByteSize) -> Self {
        self.spec.memory_budget = Some(budget);
        self
    }

    /// Global batch size.
    pub fn batch_size(mut self, rows: usize) -> Self {
        self.spec.batch_size = rows;
        self
    }

    /// Epochs.
    pub fn epochs(mut self, epochs: usize) -> Self {
        self.spec.epochs = epochs;
        self
    }

    /// Seed of initialisation and shuffling.
    pub fn seed(mut self, seed: u64) -> Self {
        self.spec.seed = seed;
        self
    }

    /// Shuffle between epochs (default on).
    pub fn shuffle(mut self, shuffle: bool) -> Self {
        self.spec.shuffle = shuffle;
        self
    }

    /// Where the replicas train (default: the CPU); a GPU needs the `cuda` feature.
    pub fn device(mut self, device: Device) -> Self {
        self.spec.device = device;
        self
    }

    /// Precision of a GPU's matrix products (default f32; bf16 needs a GPU).
    pub fn precision(mut self, precision: Precision) -> Self {
        self.spec.precision = precision;
        self
    }
}
