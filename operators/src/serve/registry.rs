//! The models a server answers for, by name and version, and hot swapping.
//!
//! A model comes from a directory: either one bundle (`model.json` inside; a run's `model/`) or a
//! directory of numbered version bundles (`1/`, `2/`, …, as in a KServe/Triton model repository).
//! A model repository is a directory of such model directories, one per name.
//!
//! New versions arrive two ways, both atomically: [`ModelRegistry::publish`] (a running pipeline's
//! train-step pushes a bundle), or [`ModelRegistry::watch`] noticing a new version directory or a
//! rewritten bundle (bundles are written to a temporary directory and renamed into place). The
//! newest version becomes the default with one pointer swap; requests already running keep the
//! version they started with, so none fails and none sees a mix. The last few versions stay
//! addressable by number.

use millrace_engine::features::FeatureStore;

use super::fill::FeatureFill;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use millrace_ml::bundle::ModelBundle;

use super::batcher::BatcherOptions;
use super::forward::ForwardDevice;
use super::model::ServedModel;
use crate::{Error, Result};

/// Versions kept loaded per model (older ones are dropped when a newer one arrives).
pub const KEEP_VERSIONS: usize = 3;

/// Where a model's bundles come from on disk.
#[derive(Clone, Debug)]
enum Source {
    /// Pushed in process; nothing to watch.
    Pushed,
    /// One bundle directory; a rewrite is a new version.
    Bundle(PathBuf),
    /// A directory of numbered version directories.
    Versions(PathBuf),
}

/// What the watcher last saw of a source, to notice changes cheaply.
type Stamp = Vec<(String, Option<SystemTime>)>;

struct Entry {
    source: Source,
    /// Loaded versions, oldest first.
    versions: BTreeMap<u64, Arc<ServedModel>>,
    stamp: Stamp,
}

impl Entry {
    fn latest(&self) -> Option<&Arc<ServedModel>> {
        self.versions.values().next_back()
    }
}

/// The served models.
pub struct ModelRegistry {
    models: RwLock<BTreeMap<String, Entry>>,
    batching: BatcherOptions,
    /// Where every model's forward pass runs.
    device: ForwardDevice,
    /// More Prometheus text for `GET /metrics` (e.g. a streaming job's counters).
    metrics_sources: RwLock<Vec<MetricsSource>>,
    /// Feature views whose current features `GET /v1/features/{view}/{key}` serves.
    features: RwLock<BTreeMap<String, Arc<FeatureStore>>>,
    /// Per model name: the features its requests get filled in.
    fills: RwLock<BTreeMap<String, FeatureFill>>,
}

/// Renders Prometheus text exposition lines.
pub type MetricsSource = Arc<dyn Fn() -> String + Send + Sync>;

impl std::fmt::Debug for ModelRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelRegistry")
            .field("models", &self.names())
            .finish()
    }
}

fn is_bundle(dir: &Path) -> bool {
    dir.join("model.json").is_file()
}

/// The numbered version directories of `dir`, ascending.
fn version_dirs(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut versions = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let path = entry.path();
        if let Some(v) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse::<u64>().ok())
            && is_bundle(&path)
        {
            versions.push((v, path));
        }
    }
    versions.sort();
    Ok(versions)
}

fn stamp_of(source: &Source) -> Stamp {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    match source {
        Source::Pushed => Vec::new(),
        Source::Bundle(dir) => vec![("model.json".to_string(), modified(&dir.join("model.json")))],
        Source::Versions(dir) => version_dirs(dir)
            .unwrap_or_default()
            .into_iter()
            .map(|(v, p)| (v.to_string(), modified(&p.join("model.json"))))
            .collect(),
    }
}

impl ModelRegistry {
    /// An empty registry whose models batch as `batching` says and run on the CPU.
    pub fn new(batching: BatcherOptions) -> Arc<Self> {
        Self::on_device(batching, ForwardDevice::default())
    }

    /// An empty registry whose models batch as `batching` says and run their forward passes on
    /// `device` (check it first with [`ForwardDevice::check`]: loading a model fails otherwise).
    pub fn on_device(batching: BatcherOptions, device: ForwardDevice) -> Arc<Self> {
        Arc::new(ModelRegistry {
            models: RwLock::new(BTreeMap::new()),
            batching,
            device,
            metrics_sources: RwLock::new(Vec::new()),
            features: RwLock::new(BTreeMap::new()),
            fills: RwLock::new(BTreeMap::new()),
        })
    }

    /// Where the models' forward passes run.
    pub fn device(&self) -> &ForwardDevice {
        &self.device
    }

    fn serve(&self, bundle: ModelBundle, name: String, version: u64) -> Result<ServedModel> {
        let fill = self
            .fills
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&name)
            .cloned();
        ServedModel::with_fill(
            bundle,
            name,
            version,
            self.batching.clone(),
            &self.device,
            fill,
        )
    }

    /// Requests to the model `name` (its versions loaded from now on) get the features they leave
    /// out from `fill`.
    pub fn add_feature_fill(&self, name: &str, fill: FeatureFill) {
        let mut fills = self.fills.write().unwrap_or_else(|e| e.into_inner());
        fills.insert(name.to_string(), fill);
    }

    /// Adds Prometheus text that `GET /metrics` serves after the server's own metrics.
    pub fn add_metrics_source(&self, source: MetricsSource) {
        self.metrics_sources
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(source);
    }

    /// Serves the current features of `store` as the view `name`.
    pub fn add_features(&self, name: &str, store: Arc<FeatureStore>) {
        self.features
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), store);
    }

    /// The feature view `name`, if one is served.
    pub fn features(&self, name: &str) -> Option<Arc<FeatureStore>> {
        let views = self.features.read().unwrap_or_else(|e| e.into_inner());
        views.get(name).cloned()
    }

    /// The names of the feature views served.
    pub fn feature_views(&self) -> Vec<String> {
        let views = self.features.read().unwrap_or_else(|e| e.into_inner());
        views.keys().cloned().collect()
    }

    /// The text of every added metrics source.
    pub fn extra_metrics(&self) -> String {
        self.metrics_sources
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|source| source())
            .collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Entry>> {
        self.models.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Entry>> {
        self.models.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Loads the model in `dir` (a bundle, or numbered version bundles) as `name` (default: the
    /// bundle's own name).
    pub fn load_dir(&self, name: Option<&str>, dir: &Path) -> Result<String> {
        let (source, bundles) = if is_bundle(dir) {
            let bundle = ModelBundle::load(dir)?;
            let version = bundle.meta.version;
            (Source::Bundle(dir.to_path_buf()), vec![(version, bundle)])
        } else {
            let versions = version_dirs(dir)?;
            if versions.is_empty() {
                return Err(Error::Serve(format!(
                    "{} holds no model: expected model.json (a run's model/ directory) or numbered \
                     version directories (1/, 2/, …) each holding one",
                    dir.display()
                )));
            }
            let start = versions.len().saturating_sub(KEEP_VERSIONS);
            let mut bundles = Vec::new();
            for (v, path) in &versions[start..] {
                bundles.push((*v, ModelBundle::load(path)?));
            }
            (Source::Versions(dir.to_path_buf()), bundles)
        };
        let name = match name {
            Some(n) => n.to_string(),
            None => bundles
                .last()
                .map(|(_, b)| b.meta.name.clone())
                .unwrap_or_default(),
        };
        let mut versions = BTreeMap::new();
        for (version, bundle) in bundles {
            let model = self.serve(bundle, name.clone(), version)?;
            versions.insert(version, Arc::new(model));
        }
        let stamp = stamp_of(&source);
        let mut models = self.write();
        if models.contains_key(&name) {
            return Err(Error::Serve(format!(
                "two models are named '{name}'; give them distinct names with --model NAME=DIR"
            )));
        }
        models.insert(
            name.clone(),
            Entry {
                source,
                versions,
                stamp,
            },
        );
        Ok(name)
    }

    /// Loads every model directory of a model repository (each subdirectory is a model, named
    /// after it).
    pub fn load_repository(&self, dir: &Path) -> Result<Vec<String>> {
        let mut names = Vec::new();
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        entries.sort();
        for path in entries {
            let Some(name) = path
                .file_name()
                .and_then(|n| n.to_str())
                .map(str::to_string)
            else {
                continue;
            };
            if name.starts_with('.') || name.starts_with('_') {
                continue;
            }
            names.push(self.load_dir(Some(&name), &path)?);
        }
        if names.is_empty() {
            return Err(Error::Serve(format!(
                "model repository {} holds no model directories",
                dir.display()
            )));
        }
        Ok(names)
    }

    /// Publishes `bundle` as the newest version of `name` (created if new): the version is the
    /// bundle's, or one more than the newest loaded when that is not higher. Returns the version.
    pub fn publish(&self, name: &str, bundle: ModelBundle) -> Result<u64> {
        let newest = self.get(name, None).map(|m| m.version);
        let version = match newest {
            Some(v) if bundle.meta.version <= v => v + 1,
            _ => bundle.meta.version,
        };
        let model = Arc::new(self.serve(bundle, name.to_string(), version)?);
        self.install(name, version, model, Source::Pushed);
        Ok(version)
    }

    fn install(&self, name: &str, version: u64, model: Arc<ServedModel>, source: Source) {
        let mut models = self.write();
        let entry = models.entry(name.to_string()).or_insert_with(|| Entry {
            source,
            versions: BTreeMap::new(),
            stamp: Vec::new(),
        });
        entry.versions.insert(version, model);
        while entry.versions.len() > KEEP_VERSIONS {
            if let Some((_, old)) = entry.versions.pop_first() {
                // Requests holding it finish; new ones cannot reach it.
                old.close();
            }
        }
        tracing::info!(model = name, version, "model version live");
    }

    /// The model `name` at `version` (the newest when None).
    pub fn get(&self, name: &str, version: Option<u64>) -> Option<Arc<ServedModel>> {
        let models = self.read();
        let entry = models.get(name)?;
        match version {
            Some(v) => entry.versions.get(&v).cloned(),
            None => entry.latest().cloned(),
        }
    }

    /// The only model, when exactly one is served (for `/v1/predict` without a name).
    pub fn single(&self) -> Option<Arc<ServedModel>> {
        let models = self.read();
        if models.len() == 1 {
            models.values().next().and_then(Entry::latest).cloned()
        } else {
            None
        }
    }

    /// Served model names.
    pub fn names(&self) -> Vec<String> {
        self.read().keys().cloned().collect()
    }

    /// Loaded versions of `name`, ascending.
    pub fn versions(&self, name: &str) -> Vec<u64> {
        self.read()
            .get(name)
            .map(|e| e.versions.keys().copied().collect())
            .unwrap_or_default()
    }

    /// The newest version of every model, for metrics.
    pub fn latest_all(&self) -> Vec<Arc<ServedModel>> {
        self.read()
            .values()
            .filter_map(|e| e.latest().cloned())
            .collect()
    }

    /// Looks at every watched directory once and loads what changed. A bundle that does not load
    /// (half-copied, corrupt) is skipped with a warning and tried again next time.
    pub fn poll(&self) {
        let watched: Vec<(String, Source, Stamp)> = self
            .read()
            .iter()
            .filter(|(_, e)| !matches!(e.source, Source::Pushed))
            .map(|(n, e)| (n.clone(), e.source.clone(), e.stamp.clone()))
            .collect();
        for (name, source, old) in watched {
            let stamp = stamp_of(&source);
            if stamp == old {
                continue;
            }
            let loaded: Result<Vec<(Option<u64>, ModelBundle)>> = match &source {
                Source::Pushed => continue,
                Source::Bundle(dir) => ModelBundle::load(dir)
                    .map(|b| vec![(None, b)])
                    .map_err(Error::from),
                Source::Versions(dir) => {
                    let newest = self.versions(&name).last().copied();
                    version_dirs(dir).and_then(|found| {
                        found
                            .into_iter()
                            .filter(|(v, _)| newest.is_none_or(|n| *v > n))
                            .map(|(v, p)| {
                                ModelBundle::load(&p)
                                    .map(|b| (Some(v), b))
                                    .map_err(Error::from)
                            })
                            .collect()
                    })
                }
            };
            match loaded {
                Ok(bundles) => {
                    for (version, bundle) in bundles {
                        let result = match version {
                            Some(v) => self
                                .serve(bundle, name.clone(), v)
                                .map(|m| self.install(&name, v, Arc::new(m), source.clone())),
                            None => self.publish(&name, bundle).map(|_| ()),
                        };
                        if let Err(e) = result {
                            tracing::warn!(model = %name, error = %e, "new model version not loaded");
                        }
                    }
                    if let Some(entry) = self.write().get_mut(&name) {
                        entry.stamp = stamp;
                    }
                }
                Err(e) => {
                    tracing::warn!(model = %name, error = %e, "new model version not loaded yet; retrying");
                }
            }
        }
    }

    /// Polls the model directories every `interval` on a background thread, for as long as the
    /// registry lives.
    pub fn watch(self: &Arc<Self>, interval: Duration) {
        let weak = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("millrace-model-watch".into())
            .spawn(move || {
                while let Some(registry) = weak.upgrade() {
                    registry.poll();
                    drop(registry);
                    std::thread::sleep(interval);
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the model watcher; hot swap from disk is off");
        }
    }

    /// Stops every model's batcher (queued requests are still answered).
    pub fn close(&self) {
        for entry in self.read().values() {
            for model in entry.versions.values() {
                model.close();
            }
        }
    }
}
