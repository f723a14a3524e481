//! Training a batch job's models on a worker's encoded rows: the main model (`[train]`) and
//! each `[[branch]]`, data-parallel, evaluated and checkpointed, and saving their bundles.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use millrace_engine::{Rounds, WorkerContext};
use millrace_ml::bundle::{BundleMeta, ModelBundle};
use millrace_ml::preprocess::{Features, FittedPreprocessor};
use serde_json::json;

use super::checkpoint::{self as ckpt, BatchCheckpoint};
use super::metrics_log::MetricsLog;
use super::plan::JobPlan;
use super::run::{RunOptions, Shared, now_rfc3339};
use super::summary::CheckpointStats;
use crate::Result;
use crate::evaluate::Evaluator;
use crate::train::{JobMsg, TrainControl, TrainEvent, TrainReport, TrainRows, train_in_loop};

/// A branch's trained model, where it was saved, and its report.
pub(super) struct BranchOutcome {
    pub(super) name: String,
    pub(super) model_dir: PathBuf,
    pub(super) report: TrainReport,
}

impl From<BranchOutcome> for super::BranchSummary {
    fn from(b: BranchOutcome) -> Self {
        super::BranchSummary {
            name: b.name,
            model_path: b.model_dir.display().to_string(),
            steps: b.report.steps,
            train_s: b.report.train_s,
            final_loss: b.report.last_epoch_loss,
            eval: b.report.eval,
            parameter_checksum: format!("{:016x}", b.report.parameter_checksum),
        }
    }
}

/// The main model after training, with its checkpoint stats and the open metrics log.
pub(super) struct Trained {
    pub(super) trainer: millrace_ml::Replica,
    pub(super) report: TrainReport,
    pub(super) checkpoints: CheckpointStats,
    pub(super) log: MetricsLog,
}

/// A worker's replica of the model `train` describes, at the checkpoint's parameters and
/// optimiser state when resuming.
pub(super) fn replica(
    train: &crate::spec::TrainSpec,
    fitted: &FittedPreprocessor,
    ctx: &WorkerContext,
    options: &RunOptions,
    resume: Option<&BatchCheckpoint>,
) -> Result<millrace_ml::Replica> {
    let mut trainer = train.trainer(fitted, ctx.index % options.cluster.workers.max(1))?;
    if let Some(c) = resume {
        trainer.set_parameters(&c.parameters)?;
        trainer.restore_optimizer(c.optimizer.clone())?;
    }
    Ok(trainer)
}

/// Trains the main model (`[train]`): data-parallel, evaluated and checkpointed as configured,
/// its metrics logged.
#[allow(clippy::too_many_arguments)]
pub(super) async fn train_main(
    rounds: &Rounds<JobMsg>,
    ctx: &WorkerContext,
    plan: &JobPlan,
    options: &RunOptions,
    shared: &Shared,
    fitted: &FittedPreprocessor,
    train: &TrainRows<'_>,
    eval: Features,
) -> Result<Trained> {
    let spec = &plan.spec;
    let progress = &options.progress;
    let mut trainer = replica(&spec.train, fitted, ctx, options, shared.resume.as_ref())?;
    let mut evaluator = Evaluator::new(Some(eval), fitted.num_classes());

    let mut log = MetricsLog::open(
        ctx.index == 0,
        &options.run_dir,
        shared.resume.as_ref(),
        (
            spec.train.log_every as u64,
            !spec.train.lr_schedule.is_constant(),
        ),
        Arc::clone(progress),
    )?;
    let mut on_event = |event: TrainEvent| log.on_event(event);
    let mut saver = ckpt::Saver::new(
        shared.store.as_ref(),
        ckpt::model_name(spec, None),
        ctx,
        fitted,
        &shared.sources,
    );
    let mut save = |position: &crate::train::TrainPosition, trainer: &millrace_ml::Replica| {
        saver.save(position, trainer)
    };
    let mut control = TrainControl {
        evaluate_every_epoch: spec.evaluate.every_epoch,
        on_event: Some(&mut on_event),
        resume: shared.resume.as_ref().map(|c| c.position.clone()),
        every_steps: spec.checkpoint.as_ref().map_or(0, |c| c.every_steps),
        every_s: spec.checkpoint.as_ref().map_or(0.0, |c| c.every_s),
        on_checkpoint: Some(&mut save),
        stop_after_step: None,
    };
    let report = train_in_loop(
        rounds,
        ctx,
        &mut trainer,
        train,
        &mut evaluator,
        &spec.train,
        &mut control,
    )
    .await?;
    drop(control);
    let checkpoints = saver.stats;
    Ok(Trained {
        trainer,
        report,
        checkpoints,
        log,
    })
}

/// Trains every `[[branch]]` on this worker's already encoded rows, one after the other, each in
/// lock-step with the other workers, and saves each model (worker 0).
#[allow(clippy::too_many_arguments)]
pub(super) async fn train_branches(
    rounds: &Rounds<JobMsg>,
    ctx: &WorkerContext,
    plan: &JobPlan,
    options: &RunOptions,
    shared: &Shared,
    fitted: &FittedPreprocessor,
    train: &TrainRows<'_>,
    eval: Features,
) -> Result<Vec<BranchOutcome>> {
    let spec = &plan.spec;
    let mut out = Vec::with_capacity(spec.branch.len());
    for (branch, checkpoints) in spec.branch.iter().zip(&shared.branches) {
        let mut trainer = replica(
            &branch.train,
            fitted,
            ctx,
            options,
            checkpoints.resume.as_ref(),
        )?;
        let mut evaluator = Evaluator::new(Some(eval.clone()), fitted.num_classes());
        let mut saver = ckpt::Saver::new(
            checkpoints.store.as_ref(),
            ckpt::model_name(spec, Some(&branch.name)),
            ctx,
            fitted,
            &shared.sources,
        );
        let mut save = |position: &crate::train::TrainPosition, trainer: &millrace_ml::Replica| {
            saver.save(position, trainer)
        };
        let mut control = TrainControl {
            evaluate_every_epoch: spec.evaluate.every_epoch,
            resume: checkpoints.resume.as_ref().map(|c| c.position.clone()),
            every_steps: spec.checkpoint.as_ref().map_or(0, |c| c.every_steps),
            every_s: spec.checkpoint.as_ref().map_or(0.0, |c| c.every_s),
            on_checkpoint: Some(&mut save),
            ..TrainControl::default()
        };
        let report = train_in_loop(
            rounds,
            ctx,
            &mut trainer,
            train,
            &mut evaluator,
            &branch.train,
            &mut control,
        )
        .await?;
        let model_dir = options
            .run_dir
            .join("branches")
            .join(&branch.name)
            .join("model");
        if ctx.index == 0 {
            save_bundle(
                plan,
                &model_dir,
                &branch.name,
                &branch.train,
                fitted.clone(),
                &trainer,
                &report,
            )?;
        }
        out.push(BranchOutcome {
            name: branch.name.clone(),
            model_dir,
            report,
        });
    }
    Ok(out)
}

/// Writes a model bundle to `model_dir`: the model `train` describes, its fitted preprocessing,
/// the SQL a server applies to raw requests, and the final evaluation.
pub(super) fn save_bundle(
    plan: &JobPlan,
    model_dir: &Path,
    name: &str,
    train: &crate::spec::TrainSpec,
    fitted: FittedPreprocessor,
    trainer: &millrace_ml::Replica,
    report: &TrainReport,
) -> Result<()> {
    let bundle = ModelBundle {
        model: train.model.clone(),
        task: fitted.task(),
        preprocess: fitted,
        weights: trainer.try_parameters()?,
        meta: BundleMeta {
            name: name.to_owned(),
            version: 1,
            created_at: now_rfc3339(),
            transform_sql: Some(plan.serve_sql.wrapped_sql.clone()),
            extra: {
                let mut extra = crate::serve::sql_meta(&plan.serve_sql, &plan.sql.user_sql);
                extra.insert("eval".into(), json!(report.eval));
                serde_json::Value::Object(extra)
            },
        },
    };
    bundle.save(model_dir)?;
    Ok(())
}
