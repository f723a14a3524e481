//! Publishing model versions while training: into the in-process model server (hot swap), and as
//! numbered version directories (`<run dir>/models/<version>/`) that `millrace serve --model`
//! watches from another process.
//!
//! Publishing is a node of the step loop's dataflow: on the steps worker 0 chose, the step node
//! emits a [`ModelVersion`] of each model, and the publish node downstream of it swaps each into
//! the server and writes it to disk.
//!
//! ```text
//!   step node (stream/step-loop) ── ModelVersion ──▶ stream/publish ──▶ registry, models/<v>/
//! ```

use std::cell::{Cell, RefCell};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use millrace_engine::timely::dataflow::channels::pact::Pipeline;
use millrace_engine::timely::dataflow::operators::Probe;
use millrace_engine::timely::dataflow::operators::generic::Operator;
use millrace_engine::{Downstream, OperatorStats};
use millrace_ml::bundle::{BundleMeta, ModelBundle};
use millrace_ml::preprocess::FittedPreprocessor;
use serde_json::json;

use super::run::Shared;
use crate::serve::ModelRegistry;
use crate::{Error, Result};

/// Version directories kept on disk.
const KEEP_ON_DISK: usize = 3;

/// A model version for the publish node.
#[derive(Clone, Debug)]
pub(crate) struct ModelVersion {
    /// Which publisher: 0 is the job's `[train]` model, `i + 1` its `i`-th `[[branch]]`.
    pub(crate) model: usize,
    pub(crate) version: u64,
    pub(crate) weights: Vec<f32>,
}

/// One model's publisher (worker 0's; the publish node holds them).
pub(crate) struct Publisher {
    name: String,
    template: Option<ModelBundle>,
    registry: Option<Arc<ModelRegistry>>,
    on_publish: Option<super::run::OnPublish>,
    dir: PathBuf,
    written: Vec<PathBuf>,
}

impl Publisher {
    pub(crate) fn new(shared: &Shared, fitted: &FittedPreprocessor) -> Self {
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
        branch: &crate::spec::BranchSpec,
    ) -> Self {
        let mut publisher = Self::new(shared, fitted);
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

    /// The bundle of `weights` as version `version`.
    fn bundle(&self, weights: Vec<f32>, version: u64) -> Result<ModelBundle> {
        let mut bundle = self
            .template
            .clone()
            .ok_or_else(|| Error::Internal("publisher without a template".into()))?;
        bundle.weights = weights;
        bundle.meta.version = version;
        bundle.meta.created_at = chrono::Utc::now().to_rfc3339();
        Ok(bundle)
    }

    /// Publishes `weights` as `version`: swapped into the server first (freshness counts from
    /// there), then written to disk.
    fn publish(&mut self, weights: Vec<f32>, version: u64) -> Result<()> {
        let bundle = self.bundle(weights, version)?;
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

/// What the publish node tells the step loop: how many model versions it has taken, when the
/// last went live, or why it failed.
#[derive(Default)]
pub(crate) struct Published {
    taken: Cell<u64>,
    at_ms: Cell<Option<i64>>,
    failed: RefCell<Option<Error>>,
}

impl Published {
    /// The node has taken the first `emitted` versions (or failed): the loop may go on.
    pub(crate) fn reached(&self, emitted: u64) -> bool {
        self.taken.get() >= emitted || self.failed.borrow().is_some()
    }

    /// When the last version went live (epoch ms), once; the node's error if it failed.
    pub(crate) fn take(&self) -> Result<Option<i64>> {
        match self.failed.borrow_mut().take() {
            Some(e) => Err(e),
            None => Ok(self.at_ms.take()),
        }
    }
}

/// The publish node: each [`ModelVersion`] the step node emits goes to its model's publisher, in
/// the order emitted; `published` hears each go live.
pub(crate) fn publish_node(
    mut publishers: Vec<Publisher>,
    published: Rc<Published>,
    stats: Arc<OperatorStats>,
) -> Downstream<ModelVersion> {
    Box::new(move |stream| {
        let (probe, stream) = stream.probe();
        stream.sink(Pipeline, "stream/publish", move |(input, _)| {
            input.for_each_stamp(|_, data| {
                let started = Instant::now();
                for versions in data {
                    for v in versions.drain(..) {
                        stats.record_in(1);
                        published.taken.set(published.taken.get() + 1);
                        if published.failed.borrow().is_some() {
                            continue;
                        }
                        let done = match publishers.get_mut(v.model) {
                            Some(publisher) => publisher.publish(v.weights, v.version),
                            None => Err(Error::Internal(format!(
                                "a version of model {} for {} publishers",
                                v.model,
                                publishers.len()
                            ))),
                        };
                        match done {
                            Ok(()) => published
                                .at_ms
                                .set(Some(chrono::Utc::now().timestamp_millis())),
                            Err(e) => *published.failed.borrow_mut() = Some(e),
                        }
                    }
                }
                stats.record_busy(started.elapsed());
            });
        });
        probe
    })
}
