//! Features filled into requests from a feature view's store: a request to a model trained with
//! `[features]` names the key and its own fields; each feature column it leaves out (or null)
//! gets the key's current features, the values a record of that key would be trained with.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch};
use arrow::compute::is_not_null;
use arrow::compute::kernels::zip::zip;
use millrace_engine::features::{FeatureStore, Row, Value};

use crate::streaming::features::column;

/// Which store fills which of a model's request columns.
#[derive(Clone, Debug)]
pub struct FeatureFill {
    store: Arc<FeatureStore>,
    /// The request column holding the key.
    key: String,
    /// The store's feature names, in the order of its values.
    names: Vec<String>,
}

impl FeatureFill {
    /// Fills the feature columns of `store` by the request column `key`.
    pub fn new(store: Arc<FeatureStore>, key: &str) -> Self {
        FeatureFill {
            names: store.names().to_vec(),
            store,
            key: key.to_string(),
        }
    }

    /// The names of the features it fills, in the store's order.
    pub fn feature_names(&self) -> Vec<String> {
        self.names.clone()
    }

    /// `raw` with every feature column's nulls replaced by the store's values for each row's key.
    pub(crate) fn fill(&self, raw: &RecordBatch) -> Result<RecordBatch, String> {
        let keys = raw.column_by_name(&self.key).ok_or_else(|| {
            format!(
                "the request has no `{}`, the key its features are looked up by",
                self.key
            )
        })?;
        let looked_up: Vec<Row> = (0..raw.num_rows())
            .map(|row| {
                let key = Value::from_array(keys.as_ref(), row)
                    .map_err(|e| format!("`{}`: {e}", self.key))?;
                Ok(self.store.lookup(&key).1)
            })
            .collect::<Result<_, String>>()?;
        let schema = raw.schema();
        let mut columns: Vec<ArrayRef> = raw.columns().to_vec();
        for (j, name) in self.names.iter().enumerate() {
            let Ok(at) = schema.index_of(name) else {
                continue;
            };
            let given = &columns[at];
            if given.null_count() == 0 {
                continue;
            }
            let stored = column(looked_up.iter().map(|r| &r[j]), given.data_type())
                .map_err(|e| format!("feature `{name}`: {e}"))?;
            let keep = is_not_null(given.as_ref()).map_err(|e| e.to_string())?;
            columns[at] = zip(&keep, given, &stored).map_err(|e| e.to_string())?;
        }
        RecordBatch::try_new(schema, columns).map_err(|e| e.to_string())
    }
}
