//! [`Predictor`]: inference from a [`ModelBundle`] on the CPU backend.

use arrow::record_batch::RecordBatch;

use super::model_bundle::ModelBundle;
use crate::backend::{Cpu, cpu_device};
use crate::error::{Error, Result};
use crate::model::{Mlp, MlpConfig, Task};
use crate::preprocess::{Features, FittedPreprocessor};
use crate::registry::DynPredictor;
use crate::trainer::predict_with;

/// Serves predictions for one model on the CPU ([`Cpu`], burn's `NdArray`).
///
/// `Send + Sync`: burn's `NdArray` modules are `Sync` (parameters sit in thread-safe cells and
/// tensors in `Arc`s), and the forward pass only reads them, so one `Predictor` can be shared by
/// many threads without a lock. This is checked at compile time.
#[derive(Debug)]
pub struct Predictor {
    model: Net,
    task: Task,
    preprocess: FittedPreprocessor,
    input_dim: usize,
}

/// The built-in MLP, or a registered model behind its erased predictor.
#[derive(Debug)]
enum Net {
    Mlp(Mlp<Cpu>),
    Module(Box<dyn DynPredictor>),
}

const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Predictor>();
};

impl Predictor {
    /// Builds the model from the bundle's model and weights (a kind other than the built-in
    /// ones must be registered).
    pub fn new(bundle: &ModelBundle) -> Result<Self> {
        bundle.validate()?;
        let input_dim = bundle.input_dim();
        let model = match bundle.spec()? {
            Some(spec) => {
                let config = MlpConfig::from_spec(&spec, &bundle.task, input_dim);
                Net::Mlp(config.init_from_flat::<Cpu>(&bundle.weights, &cpu_device())?)
            }
            None => Net::Module(bundle.module_predictor()?),
        };
        Ok(Self {
            model,
            task: bundle.task,
            preprocess: bundle.preprocess.clone(),
            input_dim,
        })
    }

    /// Predictions for `rows` rows of features (`x` row-major): softmax probabilities
    /// (`rows * num_classes`) for classification, one value per row for regression.
    /// Bit-identical to [`Trainer::predict`](crate::trainer::Trainer::predict) on the CPU
    /// backend with the same weights.
    pub fn predict(&self, x: &[f32], rows: usize) -> Result<Vec<f32>> {
        if rows.checked_mul(self.input_dim) != Some(x.len()) {
            return Err(Error::Input(format!(
                "feature buffer has {} values, expected {rows} rows x {} features",
                x.len(),
                self.input_dim
            )));
        }
        if rows == 0 {
            return Ok(Vec::new());
        }
        match &self.model {
            Net::Mlp(mlp) => {
                let input = burn::tensor::Tensor::from_data(
                    burn::tensor::TensorData::new(x.to_vec(), [rows, self.input_dim]),
                    &cpu_device(),
                );
                predict_with(mlp, &self.task, input)
            }
            Net::Module(module) => module.predict(x, rows),
        }
    }

    /// Preprocesses a raw batch (no label needed) and predicts its accepted rows.
    pub fn predict_batch(&self, batch: &RecordBatch) -> Result<(Features, Vec<f32>)> {
        let features = self.preprocess.transform(batch, false)?;
        let predictions = self.predict(&features.x, features.rows)?;
        Ok((features, predictions))
    }

    /// The fitted preprocessing.
    pub fn preprocess(&self) -> &FittedPreprocessor {
        &self.preprocess
    }

    /// What the model predicts.
    pub fn task(&self) -> &Task {
        &self.task
    }

    /// Number of input features.
    pub fn input_dim(&self) -> usize {
        self.input_dim
    }
}
