//! Model bundles (a directory holding a trained model) and CPU inference.

pub(crate) mod dense;
mod model_bundle;
mod predictor;
pub mod tensors;
pub mod weights;

pub use dense::{DensePredictor, DenseScratch};
pub use model_bundle::{
    BundleMeta, LEGACY_WEIGHTS_FILE, MODEL_FILE, ModelBundle, PREPROCESS_FILE, WEIGHTS_FILE,
};
pub use predictor::Predictor;
