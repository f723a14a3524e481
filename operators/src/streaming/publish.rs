//! Publishing model versions while training: into the in-process model server (hot swap), and as
//! numbered version directories (`<run dir>/models/<version>/`) that `millrace serve --model`
//! watches from another process.

use std::path::PathBuf;
use std::sync::Arc;

use millrace_ml::Replica;
use millrace_ml::bundle::{BundleMeta, ModelBundle};
use millrace_ml::preprocess::FittedPreprocessor;
use serde_json::json;

use super::run::Shared;
use crate::serve::ModelRegistry;
use crate::{Error, Result};

/// Version directories kept on disk.
const KEEP_ON_DISK: usize = 3;

/// Worker 0's publisher (a no-op on other workers).
pub(crate) struct Publisher {
    active: bool,
    name: String,
    template: Option<ModelBundle>,
    registry: Option<Arc<ModelRegistry>>,
    on_publish: Option<super::run::OnPublish>,
    dir: PathBuf,
    written: Vec<PathBuf>,
}

impl Publisher {
    pub(crate) fn new(shared: &Shared, fitted: &FittedPreprocessor, active: bool) -> Self {
        let plan = &shared.plan;
        let spec = &plan.spec;
        let task = fitted.task();
        let template = ModelBundle {
            model: spec.train.model.clone(),
            task,
            preprocess: fitted.clone(),
            weights: Vec::new(),
            meta: BundleMeta {
                name: spec.name.clone(),
                version: 0,
                created_at: String::new(),
                transform_sql: Some(plan.serve_sql.wrapped_sql.clone()),
                extra: {
                    let mut extra = crate::serve::sql_meta(&plan.serve_sql, &plan.sql.user_sql);
                    extra.insert("topic".into(), json!(plan.stream.topic));
                    serde_json::Value::Object(extra)
                },
            },
        };
        Publisher {
            active,
            name: spec.name.clone(),
            template: Some(template),
            registry: shared.registry.clone(),
            on_publish: shared.on_publish.clone(),
            dir: shared.run_dir.join("models"),
            written: Vec::new(),
        }
    }

    /// The publisher of `[[branch]]` `branch`: its model under the branch's name, versions in
    /// `branches/<name>/models/` of the run directory.
    pub(crate) fn for_branch(
        shared: &Shared,
        fitted: &FittedPreprocessor,
        active: bool,
        branch: &crate::spec::BranchSpec,
    ) -> Self {
        let mut publisher = Self::new(shared, fitted, active);
        if let Some(template) = &mut publisher.template {
            template.model = branch.train.model.clone();
            template.meta.name = branch.name.clone();
        }
        publisher.name = branch.name.clone();
        publisher.dir = shared
            .run_dir
            .join("branches")
            .join(&branch.name)
            .join("models");
        publisher
    }

    /// The bundle of the trainer's current parameters as version `version`.
    pub(crate) fn bundle(&self, trainer: &Replica, version: u64) -> Result<ModelBundle> {
        let mut bundle = self
            .template
            .clone()
            .ok_or_else(|| Error::Internal("publisher without a template".into()))?;
        bundle.weights = trainer.try_parameters()?;
        bundle.meta.version = version;
        bundle.meta.created_at = chrono::Utc::now().to_rfc3339();
        Ok(bundle)
    }

    /// Publishes the trainer's parameters as `version`: swapped into the server first (freshness
    /// counts from there), then written to disk.
    pub(crate) fn publish(&mut self, trainer: &Replica, version: u64) -> Result<()> {
        if !self.active {
            return Ok(());
        }
        let bundle = self.bundle(trainer, version)?;
        if let Some(registry) = &self.registry {
            registry.publish(&self.name, bundle.clone())?;
        }
        let tmp = self.dir.join(format!(".tmp-{version}"));
        bundle.save(&tmp)?;
        let done = self.dir.join(version.to_string());
        if done.exists() {
            std::fs::remove_dir_all(&done).map_err(|e| Error::io(&done, e))?;
        }
        std::fs::rename(&tmp, &done).map_err(|e| Error::io(&done, e))?;
        if let Some(hook) = &self.on_publish {
            hook(&done);
        }
        self.written.push(done);
        while self.written.len() > KEEP_ON_DISK {
            let old = self.written.remove(0);
            let _ = std::fs::remove_dir_all(&old);
        }
        tracing::debug!(model = %self.name, version, "published a model version");
        Ok(())
    }
}
