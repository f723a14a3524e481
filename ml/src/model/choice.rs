//! [`ModelChoice`]: the `model` table of a pipeline, for any registered model.

use serde::{Deserialize, Serialize};

use super::spec::ModelSpec;
use crate::error::Result;
use crate::registry::FAST_PATH_KINDS;

/// Which model to train, and its own keys: `{ kind = "mlp", hidden = [64, 64] }` or
/// `{ kind = "two_tower", dim = 32 }` for a model a user's binary registered.
///
/// ```
/// use millrace_ml::model::{ModelChoice, ModelKind};
/// let choice: ModelChoice =
///     serde_json::from_str(r#"{"kind": "mlp", "hidden": [8]}"#).unwrap();
/// assert_eq!(choice.builtin().unwrap().unwrap().kind, ModelKind::Mlp);
/// let choice: ModelChoice = serde_json::from_str(r#"{"kind": "two_tower", "dim": 8}"#).unwrap();
/// assert!(choice.builtin().unwrap().is_none());
/// assert_eq!(choice.keys["dim"], 8);
/// ```
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ModelChoice {
    /// The registered name of the model.
    pub kind: String,
    /// The model's own keys.
    #[serde(flatten)]
    pub keys: serde_json::Map<String, serde_json::Value>,
}

impl ModelChoice {
    /// A choice of `kind` with no keys.
    pub fn new(kind: impl Into<String>) -> Self {
        ModelChoice {
            kind: kind.into(),
            keys: serde_json::Map::new(),
        }
    }

    /// Sets key `key`.
    pub fn with(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.keys.insert(key.to_owned(), value.into());
        self
    }

    /// The keys as one JSON object (what a model's config is parsed from).
    pub fn keys_value(&self) -> serde_json::Value {
        serde_json::Value::Object(self.keys.clone())
    }

    /// True for `mlp`, `logistic` and `linear`, which train and serve on the built-in fast paths.
    pub fn is_builtin(&self) -> bool {
        FAST_PATH_KINDS.contains(&self.kind.as_str())
    }

    /// The built-in model's spec, or `None` for another kind. A key the built-in models do not
    /// have is an error naming `train.model.<key>`.
    pub fn builtin(&self) -> Result<Option<ModelSpec>> {
        if !self.is_builtin() {
            return Ok(None);
        }
        let mut object = self.keys.clone();
        object.insert("kind".into(), self.kind.clone().into());
        serde_json::from_value(serde_json::Value::Object(object))
            .map(Some)
            .map_err(|e| crate::registry::key_error(&self.kind, &e))
    }
}

impl From<&ModelSpec> for ModelChoice {
    fn from(spec: &ModelSpec) -> Self {
        let mut choice = match serde_json::to_value(spec) {
            Ok(serde_json::Value::Object(keys)) => ModelChoice {
                kind: String::new(),
                keys,
            },
            // A struct always serialises to an object.
            _ => ModelChoice::new(""),
        };
        choice.kind = match choice.keys.remove("kind") {
            Some(serde_json::Value::String(kind)) => kind,
            _ => String::new(),
        };
        choice
    }
}

impl From<ModelSpec> for ModelChoice {
    fn from(spec: ModelSpec) -> Self {
        ModelChoice::from(&spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Activation, ModelKind};

    #[test]
    fn round_trips_builtin_specs_and_names_bad_keys() {
        let spec = ModelSpec::mlp([4, 2], Activation::Tanh);
        let choice = ModelChoice::from(&spec);
        assert_eq!(choice.kind, "mlp");
        assert_eq!(choice.builtin().unwrap(), Some(spec));
        let choice: ModelChoice =
            serde_json::from_str(r#"{"kind": "logistic", "hiden": [3]}"#).unwrap();
        let err = choice.builtin().unwrap_err().to_string();
        assert!(err.contains("train.model.hiden"), "{err}");
        let choice = ModelChoice::new("linear");
        assert_eq!(
            choice.builtin().unwrap().unwrap(),
            ModelSpec::new(ModelKind::Linear)
        );
    }
}
