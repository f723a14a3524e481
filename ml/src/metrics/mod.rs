//! Evaluation metrics: accuracy, log-loss and ROC AUC for classification; RMSE, MAE and R² for
//! regression.

mod auc;
mod evaluate;

pub use auc::roc_auc;
pub use evaluate::{EvalMetrics, evaluate_classification, evaluate_regression};
