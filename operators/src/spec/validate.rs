//! [`PipelineSpec::validate`]: every check that needs no data, each error naming the key to
//! change — the sections against each other, the branches, a tune section, the sinks.

use millrace_ml::model::Task;
use millrace_ml::trainer::LossChoice;

use super::{PipelineSpec, TaskKind};
use crate::{Error, Result};

impl PipelineSpec {
    /// Checks everything that can be checked without reading data; errors name the key to change.
    pub fn validate(&self) -> Result<()> {
        match &self.stream {
            Some(stream) => stream.validate()?,
            None if !self.ingest.is_set() => {
                return Err(Error::config(
                    "ingest.path",
                    "missing: name the dataset to train on (or add a [stream] section to train on a Kafka topic)",
                ));
            }
            None => {}
        }
        self.ingest.dataset_options(&self.storage)?;
        if let Some(c) = &self.checkpoint {
            if self.stream.is_some() {
                return Err(Error::config(
                    "checkpoint",
                    "a streaming job checkpoints with [stream] checkpoint_dir / checkpoint_every_steps; remove [checkpoint]",
                ));
            }
            c.validate()?;
        }
        self.validate_branches()?;
        self.validate_tune()?;
        if let Some(t) = &self.tracking {
            t.resolved_uri()?;
        }
        self.validate_sinks()?;
        self.validate_data()?;
        self.validate_train()?;
        let e = &self.evaluate;
        if e.path.is_none() && !(e.split > 0.0 && e.split < 1.0) {
            return Err(Error::config(
                "evaluate.split",
                format!(
                    "must be between 0 and 1 (exclusive) when evaluate.path is not set, got {}",
                    e.split
                ),
            ));
        }
        // Last: these may load the GPU driver, after every cheaper check passed.
        self.train.validate_device()?;
        if let Some(serve) = &self.serve {
            serve.validate()?;
            serve.validate_device()?;
        }
        Ok(())
    }

    /// Checks the outputs, the generated datasets, the ingest and the preprocessing's columns.
    fn validate_data(&self) -> Result<()> {
        let o = &self.output;
        if let Some(c) = o.partition_by.iter().find(|c| !o.columns.contains(c)) {
            return Err(Error::config(
                "output.partition_by",
                format!("'{c}' must also be listed in output.columns"),
            ));
        }
        if o.predictions.is_none() && (!o.columns.is_empty() || !o.partition_by.is_empty()) {
            return Err(Error::config(
                "output.columns",
                "needs output.predictions: where to write the predictions",
            ));
        }
        for (key, g) in [
            ("ingest.generate", &self.ingest.generate),
            ("evaluate.generate", &self.evaluate.generate),
        ] {
            if let Some(g) = g {
                if g.dataset != "tabular" {
                    return Err(Error::config(
                        key,
                        format!("unknown dataset '{}'; available: tabular", g.dataset),
                    ));
                }
                if g.rows == 0 || g.files == 0 {
                    return Err(Error::config(key, "rows and files must be at least 1"));
                }
            }
        }
        if self.evaluate.generate.is_some() && self.evaluate.path.is_none() {
            return Err(Error::config(
                "evaluate.generate",
                "needs evaluate.path: where to write the generated holdout",
            ));
        }
        if self.ingest.batch_rows == 0 {
            return Err(Error::config("ingest.batch_rows", "must be at least 1"));
        }
        let p = &self.preprocess;
        if p.standardize.is_empty()
            && p.numeric.is_empty()
            && p.one_hot.is_empty()
            && p.index.is_empty()
            && p.sequence.is_empty()
        {
            return Err(Error::config(
                "preprocess",
                "no feature columns: list columns under standardize, numeric, one_hot, index or \
                 sequence",
            ));
        }
        Ok(())
    }

    /// Checks `[train]`'s numbers, its schedule and its loss.
    fn validate_train(&self) -> Result<()> {
        let t = &self.train;
        if t.batch_size == 0 {
            return Err(Error::config("train.batch_size", "must be at least 1"));
        }
        if t.epochs == 0 {
            return Err(Error::config("train.epochs", "must be at least 1"));
        }
        if !(t.lr.is_finite() && t.lr > 0.0) {
            return Err(Error::config(
                "train.lr",
                format!("must be a positive number, got {}", t.lr),
            ));
        }
        t.lr_schedule.validate("train.lr_schedule", t.lr)?;
        if self.stream.is_some() && !t.lr_schedule.is_constant() {
            return Err(Error::config(
                "train.lr_schedule",
                "a streaming job trains at a constant lr (a stream has no last step to decay \
                 towards, and its idle steps apply no update to warm up with): remove lr_schedule",
            ));
        }
        if t.log_every == 0 {
            return Err(Error::config("train.log_every", "must be at least 1"));
        }
        if t.loss.is_some() {
            // Only the kind of task matters here; the class count is known after preprocessing.
            let task = match t.task {
                TaskKind::Classification => Task::Classification { num_classes: 2 },
                TaskKind::Regression => Task::Regression,
            };
            if let LossChoice::User(name) = t.loss_choice(&task)? {
                millrace_ml::registry::loss(&name)?.validate(&task)?;
            }
        }
        if self.stream.is_some() && t.memory_budget.is_some() {
            return Err(Error::config(
                "train.memory_budget",
                "a streaming job keeps only its current step's records; memory_budget bounds a batch job's training rows: remove it",
            ));
        }
        Ok(())
    }

    /// Checks the `[[sink]]`s: each valid, distinct names, and a streaming job's sinks are
    /// Kafka topics.
    fn validate_sinks(&self) -> Result<()> {
        for (i, sink) in self.sink.iter().enumerate() {
            sink.validate(i)?;
            if self.sink[..i].iter().any(|o| o.name == sink.name) {
                return Err(Error::config(
                    "sink.name",
                    format!("two sinks are called '{}'", sink.name),
                ));
            }
            if self.stream.is_some() && sink.parquet.is_some() {
                return Err(Error::config(
                    "sink.parquet",
                    format!(
                        "sink '{}': a streaming job's sinks write Kafka topics (a Parquet sink \
                         would need exactly-once files per checkpoint, not built yet); use \
                         `kafka = {{ bootstrap_servers, topic }}`",
                        sink.name
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Checks `[tune]`: a batch job without branches, and a space whose every
    /// trial makes a valid `[train]`.
    fn validate_tune(&self) -> Result<()> {
        let Some(tune) = &self.tune else {
            return Ok(());
        };
        let refuse = |key: &str, why: &str| Err(Error::config(key, why.to_owned()));
        if self.stream.is_some() {
            return refuse(
                "tune",
                "tunes batch jobs only; a streaming job trains [[branch]]es side by side instead",
            );
        }
        if !self.branch.is_empty() {
            return refuse(
                "tune",
                "and [[branch]] cannot be combined: the trials are the job's branches; put the \
                 branches' settings in the search space",
            );
        }
        let has_eval_rows = self.evaluate.path.is_some() || self.evaluate.split > 0.0;
        tune.validate(&self.train, has_eval_rows)
    }

    /// Checks the `[[branch]]` train-steps: distinct valid names, the main task, a batch job
    /// without checkpoints (a resumed run would have to retrain them).
    fn validate_branches(&self) -> Result<()> {
        for (i, b) in self.branch.iter().enumerate() {
            let key = |k: &str| format!("branch.{k}");
            let valid = !b.name.is_empty()
                && b.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !valid {
                return Err(Error::config(
                    key("name"),
                    format!(
                        "branch {} has name '{}': use letters, digits, _ and -",
                        i + 1,
                        b.name
                    ),
                ));
            }
            if b.name == self.name {
                return Err(Error::config(
                    key("name"),
                    format!(
                        "branch '{}' has the pipeline's name: its model would be served under the \
                         main model's name; pick another",
                        b.name
                    ),
                ));
            }
            if self.branch[..i].iter().any(|o| o.name == b.name) {
                return Err(Error::config(
                    key("name"),
                    format!("two branches are called '{}'", b.name),
                ));
            }
            if b.train.task != self.train.task {
                return Err(Error::config(
                    key("train.task"),
                    format!(
                        "branch '{}' is {:?} but [train] is {:?}: branches share the label and its \
                         preprocessing",
                        b.name, b.train.task, self.train.task
                    ),
                ));
            }
            b.train
                .lr_schedule
                .validate(&key("train.lr_schedule"), b.train.lr)?;
            if self.stream.is_some() && !b.train.lr_schedule.is_constant() {
                return Err(Error::config(
                    key("train.lr_schedule"),
                    format!(
                        "branch '{}': a streaming job trains at a constant lr; remove lr_schedule",
                        b.name
                    ),
                ));
            }
            if b.train.memory_budget.is_some() {
                return Err(Error::config(
                    key("train.memory_budget"),
                    format!(
                        "branch '{}': branches train on the rows of [train]; set memory_budget there",
                        b.name
                    ),
                ));
            }
            b.train
                .validate_device()
                .map_err(|e| Error::config(key("train.device"), e.to_string()))?;
        }
        Ok(())
    }
}
