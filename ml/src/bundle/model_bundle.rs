//! [`ModelBundle`]: everything needed to serve a model, saved as a directory.
//!
//! ```text
//! dir/model.json           format_version (2), model (kind + its keys), task, input_dim,
//!                          num_params, meta
//! dir/preprocess.json      the FittedPreprocessor
//! dir/weights.safetensors  the parameters as named tensors (see the `tensors` module)
//! ```
//!
//! Bundles of format 1 (`spec` in model.json, flat weights in `weights.bin`) are still read.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{tensors, weights};
use crate::error::{Error, Result};
use crate::model::params::ParamShape;
use crate::model::{FeatureLayout, ModelChoice, ModelShape, ModelSpec, Task};
use crate::preprocess::FittedPreprocessor;

/// Current `model.json` format version.
pub const BUNDLE_FORMAT_VERSION: u32 = 2;

/// File names inside a bundle directory.
pub const MODEL_FILE: &str = "model.json";
/// Preprocessor file name.
pub const PREPROCESS_FILE: &str = "preprocess.json";
/// Weights file name.
pub const WEIGHTS_FILE: &str = "weights.safetensors";
/// Weights file name of format 1 bundles.
pub const LEGACY_WEIGHTS_FILE: &str = "weights.bin";

/// Descriptive metadata stored with a model.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default)]
pub struct BundleMeta {
    /// Model name.
    pub name: String,
    /// Model version (e.g. a training run counter).
    pub version: u64,
    /// Creation time, as the caller formats it (RFC 3339 recommended).
    pub created_at: String,
    /// SQL applied to the input before preprocessing, if any.
    pub transform_sql: Option<String>,
    /// Anything else (metrics, lineage, …).
    pub extra: serde_json::Value,
}

/// A trained model: which model with which keys, task, fitted preprocessing, weights and
/// metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelBundle {
    /// The model: its registered kind and its keys.
    pub model: ModelChoice,
    /// What it predicts.
    pub task: Task,
    /// How raw batches become features.
    pub preprocess: FittedPreprocessor,
    /// Flat weights: the model's parameters in its visiting order (for the built-in MLP, the
    /// order documented on [`Mlp`](crate::model::Mlp)).
    pub weights: Vec<f32>,
    /// Metadata.
    pub meta: BundleMeta,
}

/// `model.json` contents.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelFile {
    format_version: u32,
    /// Format 1: the built-in model's spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    spec: Option<ModelSpec>,
    /// Format 2: the model's kind and keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    model: Option<ModelChoice>,
    task: Task,
    input_dim: usize,
    num_params: usize,
    meta: BundleMeta,
}

impl ModelBundle {
    /// A bundle of a built-in model.
    pub fn builtin(
        spec: &ModelSpec,
        task: Task,
        preprocess: FittedPreprocessor,
        weights: Vec<f32>,
        meta: BundleMeta,
    ) -> Self {
        ModelBundle {
            model: ModelChoice::from(spec),
            task,
            preprocess,
            weights,
            meta,
        }
    }

    /// Number of features the model takes.
    pub fn input_dim(&self) -> usize {
        self.preprocess.input_dim()
    }

    /// The spec of a built-in model (`mlp`, `logistic`, `linear`), `None` for another kind.
    pub fn spec(&self) -> Result<Option<ModelSpec>> {
        self.model.builtin()
    }

    /// The built-in model's spec; an error naming the kind for another model (which the
    /// built-in fast paths cannot run).
    pub fn builtin_spec(&self) -> Result<ModelSpec> {
        self.spec()?.ok_or_else(|| {
            Error::Input(format!(
                "model kind `{}` is not a built-in MLP; it runs through its registered model",
                self.model.kind
            ))
        })
    }

    /// What the model was built for.
    pub fn shape(&self) -> Result<ModelShape> {
        Ok(ModelShape {
            layout: FeatureLayout::of(&self.preprocess)?,
            task: self.task,
            seed: 0,
        })
    }

    /// The parameters' dotted paths and shapes, in flat order. Needs the model registered
    /// (the built-in ones always are).
    pub fn param_shapes(&self) -> Result<Vec<ParamShape>> {
        let entry = crate::registry::model(&self.model.kind)?;
        entry.param_shapes(&self.model.kind, &self.model.keys_value(), &self.shape()?)
    }

    /// A CPU predictor of this bundle's registered model (for a kind that is not a built-in
    /// MLP) holding its weights.
    pub fn module_predictor(&self) -> Result<Box<dyn crate::registry::DynPredictor>> {
        let entry = crate::registry::model(&self.model.kind)?;
        entry.predictor(
            &self.model.kind,
            &self.model.keys_value(),
            self.shape()?,
            &self.weights,
        )
    }

    /// Checks that model, task, preprocessor and weights agree with each other.
    pub fn validate(&self) -> Result<()> {
        let expected = match self.spec()? {
            Some(spec) => {
                spec.validate(&self.task)?;
                spec.num_params(self.input_dim(), &self.task)
            }
            None => {
                let entry = crate::registry::model(&self.model.kind)?;
                entry.check(&self.model.kind, &self.model.keys_value(), &self.shape()?)?;
                self.param_shapes()?.iter().map(ParamShape::numel).sum()
            }
        };
        if self.weights.len() != expected {
            return Err(Error::Input(format!(
                "bundle has {} weights but a `{}` model with {} inputs and task {:?} has {expected}",
                self.weights.len(),
                self.model.kind,
                self.input_dim(),
                self.task
            )));
        }
        Ok(())
    }

    /// Writes the bundle to directory `dir`, atomically: files go to a temporary sibling
    /// directory that is renamed into place. An existing `dir` is replaced (moved aside, then
    /// deleted after the new one is in place).
    pub fn save(&self, dir: &Path) -> Result<()> {
        self.validate()?;
        let model = ModelFile {
            format_version: BUNDLE_FORMAT_VERSION,
            spec: None,
            model: Some(self.model.clone()),
            task: self.task,
            input_dim: self.input_dim(),
            num_params: self.weights.len(),
            meta: self.meta.clone(),
        };
        let model_json = to_json(&model, &dir.join(MODEL_FILE))?;
        let preprocess_json = to_json(&self.preprocess, &dir.join(PREPROCESS_FILE))?;
        let weights_bin = tensors::encode(&self.model.kind, &self.param_shapes()?, &self.weights)?;

        let parent = match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        fs::create_dir_all(&parent)
            .map_err(|e| Error::io("cannot create directory", &parent, e))?;
        let tmp = sibling(dir, "tmp");
        fs::create_dir(&tmp).map_err(|e| Error::io("cannot create directory", &tmp, e))?;
        let written = (|| {
            write_file(&tmp.join(WEIGHTS_FILE), &weights_bin)?;
            write_file(&tmp.join(PREPROCESS_FILE), &preprocess_json)?;
            write_file(&tmp.join(MODEL_FILE), &model_json)?;
            install(&tmp, dir)
        })();
        if written.is_err() {
            let _ = fs::remove_dir_all(&tmp);
        }
        written
    }

    /// Reads a bundle directory written by [`ModelBundle::save`], checking it thoroughly. A
    /// bundle of a model kind this binary has not registered is an error naming the kind.
    pub fn load(dir: &Path) -> Result<Self> {
        let model_path = dir.join(MODEL_FILE);
        let file: ModelFile = read_json(&model_path)?;
        let inconsistent = |message: String| Error::Bundle {
            path: model_path.clone(),
            message,
        };
        let (choice, weights_path) = match (file.format_version, &file.spec, &file.model) {
            (1, Some(spec), None) => (ModelChoice::from(spec), dir.join(LEGACY_WEIGHTS_FILE)),
            (2, None, Some(model)) => (model.clone(), dir.join(WEIGHTS_FILE)),
            (1 | 2, _, _) => {
                return Err(inconsistent(format!(
                    "format_version {} needs `{}`",
                    file.format_version,
                    if file.format_version == 1 {
                        "spec"
                    } else {
                        "model"
                    }
                )));
            }
            (other, _, _) => {
                return Err(inconsistent(format!(
                    "format_version {other} is not supported (this build reads 1 and {BUNDLE_FORMAT_VERSION})"
                )));
            }
        };
        let preprocess: FittedPreprocessor = read_json(&dir.join(PREPROCESS_FILE))?;
        let bytes = read_file(&weights_path)?;
        let weights = if file.format_version == 1 {
            weights::decode(&bytes, &weights_path)?
        } else {
            tensors::decode(&bytes, &weights_path)?.0
        };
        if preprocess.input_dim() != file.input_dim {
            return Err(inconsistent(format!(
                "input_dim is {} but {PREPROCESS_FILE} produces {} features",
                file.input_dim,
                preprocess.input_dim()
            )));
        }
        if weights.len() != file.num_params {
            return Err(Error::Bundle {
                path: weights_path,
                message: format!(
                    "holds {} values but {MODEL_FILE} says num_params = {}",
                    weights.len(),
                    file.num_params
                ),
            });
        }
        let bundle = ModelBundle {
            model: choice,
            task: file.task,
            preprocess,
            weights,
            meta: file.meta,
        };
        bundle.validate().map_err(|e| match e {
            // Not registered: the registry's message says how to register it.
            e @ Error::Config { .. } if crate::registry::model(&bundle.model.kind).is_err() => {
                inconsistent(format!("{e}"))
            }
            e => inconsistent(format!("invalid model: {e}")),
        })?;
        Ok(bundle)
    }
}

/// A unique sibling path of `dir`, e.g. `.model.tmp-1234-5678`.
fn sibling(dir: &Path, tag: &str) -> PathBuf {
    let name = dir
        .file_name()
        .map_or_else(|| "bundle".into(), |n| n.to_string_lossy().into_owned());
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    dir.with_file_name(format!(".{name}.{tag}-{}-{nanos}", std::process::id()))
}

/// Moves the finished `tmp` directory to `dir`, replacing any existing one.
fn install(tmp: &Path, dir: &Path) -> Result<()> {
    if fs::symlink_metadata(dir).is_err() {
        return fs::rename(tmp, dir)
            .map_err(|e| Error::io("cannot move the new bundle into", dir, e));
    }
    let old = sibling(dir, "old");
    fs::rename(dir, &old).map_err(|e| Error::io("cannot move the old bundle aside", dir, e))?;
    if let Err(e) = fs::rename(tmp, dir) {
        let _ = fs::rename(&old, dir);
        return Err(Error::io("cannot move the new bundle into", dir, e));
    }
    if let Err(e) = fs::remove_dir_all(&old) {
        tracing::warn!(path = %old.display(), error = %e, "could not delete the replaced model bundle");
    }
    Ok(())
}

fn to_json<T: Serialize>(value: &T, path: &Path) -> Result<Vec<u8>> {
    serde_json::to_vec_pretty(value).map_err(|source| Error::Json {
        path: path.to_path_buf(),
        source,
    })
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = fs::File::create(path).map_err(|e| Error::io("cannot create", path, e))?;
    file.write_all(bytes)
        .map_err(|e| Error::io("cannot write", path, e))?;
    file.sync_all()
        .map_err(|e| Error::io("cannot sync", path, e))
}

fn read_file(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::Bundle {
            path: path.to_path_buf(),
            message: "missing: is this a millrace model directory (written by ModelBundle::save)?"
                .into(),
        },
        _ => Error::io("cannot read", path, e),
    })
}

fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = read_file(path)?;
    serde_json::from_slice(&bytes).map_err(|source| Error::Json {
        path: path.to_path_buf(),
        source,
    })
}
