//! Model bundles (a directory holding a trained model) and CPU inference.

mod model_bundle;
mod predictor;
pub mod weights;

pub use model_bundle::{BundleMeta, MODEL_FILE, ModelBundle, PREPROCESS_FILE, WEIGHTS_FILE};
pub use predictor::Predictor;
