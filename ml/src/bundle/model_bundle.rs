//! [`ModelBundle`]: everything needed to serve a model, saved as a directory.
//!
//! ```text
//! dir/model.json       format_version (1), spec, task, input_dim, num_params, meta
//! dir/preprocess.json  the FittedPreprocessor
//! dir/weights.bin      flat f32 weights (see the `weights` module for the layout)
//! ```

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::weights;
use crate::error::{Error, Result};
use crate::model::{ModelSpec, Task};
use crate::preprocess::FittedPreprocessor;

/// Current `model.json` format version.
pub const BUNDLE_FORMAT_VERSION: u32 = 1;

/// File names inside a bundle directory.
pub const MODEL_FILE: &str = "model.json";
/// Preprocessor file name.
pub const PREPROCESS_FILE: &str = "preprocess.json";
/// Weights file name.
pub const WEIGHTS_FILE: &str = "weights.bin";

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

/// A trained model: spec, task, fitted preprocessing, weights and metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelBundle {
    /// The model architecture.
    pub spec: ModelSpec,
    /// What it predicts.
    pub task: Task,
    /// How raw batches become features.
    pub preprocess: FittedPreprocessor,
    /// Flat weights in the order documented on [`Mlp`](crate::model::Mlp).
    pub weights: Vec<f32>,
    /// Metadata.
    pub meta: BundleMeta,
}

/// `model.json` contents.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelFile {
    format_version: u32,
    spec: ModelSpec,
    task: Task,
    input_dim: usize,
    num_params: usize,
    meta: BundleMeta,
}

impl ModelBundle {
    /// Number of features the model takes.
    pub fn input_dim(&self) -> usize {
        self.preprocess.input_dim()
    }

    /// Checks that spec, task, preprocessor and weights agree with each other.
    pub fn validate(&self) -> Result<()> {
        self.spec.validate(&self.task)?;
        let expected = self.spec.num_params(self.input_dim(), &self.task);
        if self.weights.len() != expected {
            return Err(Error::Input(format!(
                "bundle has {} weights but a {:?} model with {} inputs and task {:?} has {expected}",
                self.weights.len(),
                self.spec.kind,
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
            spec: self.spec.clone(),
            task: self.task,
            input_dim: self.input_dim(),
            num_params: self.weights.len(),
            meta: self.meta.clone(),
        };
        let model_json = to_json(&model, &dir.join(MODEL_FILE))?;
        let preprocess_json = to_json(&self.preprocess, &dir.join(PREPROCESS_FILE))?;
        let weights_bin = weights::encode(&self.weights);

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

    /// Reads a bundle directory written by [`ModelBundle::save`], checking it thoroughly.
    pub fn load(dir: &Path) -> Result<Self> {
        let model_path = dir.join(MODEL_FILE);
        let model: ModelFile = read_json(&model_path)?;
        if model.format_version != BUNDLE_FORMAT_VERSION {
            return Err(Error::Bundle {
                path: model_path,
                message: format!(
                    "format_version {} is not supported (this build reads {BUNDLE_FORMAT_VERSION})",
                    model.format_version
                ),
            });
        }
        let preprocess: FittedPreprocessor = read_json(&dir.join(PREPROCESS_FILE))?;
        let weights_path = dir.join(WEIGHTS_FILE);
        let weights = weights::decode(&read_file(&weights_path)?, &weights_path)?;

        let inconsistent = |message: String| Error::Bundle {
            path: model_path.clone(),
            message,
        };
        if preprocess.input_dim() != model.input_dim {
            return Err(inconsistent(format!(
                "input_dim is {} but {PREPROCESS_FILE} produces {} features",
                model.input_dim,
                preprocess.input_dim()
            )));
        }
        let expected = model.spec.num_params(model.input_dim, &model.task);
        if model.num_params != expected {
            return Err(inconsistent(format!(
                "num_params is {} but the spec describes {expected} parameters",
                model.num_params
            )));
        }
        if weights.len() != model.num_params {
            return Err(Error::Bundle {
                path: weights_path,
                message: format!(
                    "holds {} values but {MODEL_FILE} says num_params = {}",
                    weights.len(),
                    model.num_params
                ),
            });
        }
        model
            .spec
            .validate(&model.task)
            .map_err(|e| inconsistent(format!("invalid model spec: {e}")))?;
        Ok(Self {
            spec: model.spec,
            task: model.task,
            preprocess,
            weights,
            meta: model.meta,
        })
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
