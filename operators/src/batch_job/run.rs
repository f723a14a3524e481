//! Running a planned batch job on timely workers.
//!
//! Each worker runs the job as one dataflow: the ingest nodes (its share of the row groups → SQL →
//! split, fitting the preprocessing on its train rows) and a step node whose loop, once they are
//! done, merges the fitted statistics over all workers, encodes this worker's rows, trains
//! data-parallel with evaluation and totals the counters, one round per exchange; worker 0 writes
//! the model.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use millrace_engine::timely::worker::Worker;
use millrace_engine::{
    ClusterConfig, Counters, DeadLetter, MetricsRegistry, OperatorReport, Rounds, WorkerContext,
    execute, run_rounds_with,
};
use millrace_ml::Replica;
use millrace_ml::preprocess::{Features, FittedPreprocessor};

use super::checkpoint::{self as ckpt, BatchCheckpoint, SourceRecord};
use super::clock::{FinishedRun, Marks};
use super::encode::{Encoded, EncodedTrain, MemoryShare, fit_and_encode};
use super::ingest::{IngestNodes, ingest_nodes};
use super::output;
use super::plan::JobPlan;
use super::progress::Progress;
use super::summary::{
    BranchSummary, CheckpointStats, OperatorSummary, Phases, Summary, peak_rss_bytes,
};
use super::train::{Trained, save_bundle, train_branches, train_main};
use super::tune::{TuneCheckpoint, TuneCheckpoints, tune_trials};
use crate::checkpoint::CheckpointStore;
use crate::train::{JobMsg, OperatorRow, TrainReport, TrainRows, exchange};
use crate::{Error, Result};

/// How and where to run a job.
#[derive(Clone)]
pub struct RunOptions {
    /// Worker threads and processes.
    pub cluster: ClusterConfig,
    /// Directory for metrics.jsonl, summary.json, dead_letters.jsonl and model/.
    pub run_dir: PathBuf,
    /// Progress reporting.
    pub progress: Arc<dyn Progress>,
    /// Continue from the latest complete checkpoint of the pipeline's `[checkpoint]` store, if
    /// there is one (else start from the beginning).
    pub resume: bool,
    /// When the user started waiting (the process start for `millrace run`): `wall_s` and the
    /// plan phase count from here, so planning before [`run`] is included.
    pub started: Instant,
}

/// What every worker of the job shares besides the plan.
pub(super) struct Shared {
    pub(super) store: Option<CheckpointStore>,
    pub(super) resume: Option<BatchCheckpoint>,
    pub(super) sources: Vec<SourceRecord>,
    /// Each `[[branch]]`'s, in order.
    pub(super) branches: Vec<BranchCheckpoints>,
    /// A `[tune]` run's checkpoint to resume from (in `store`).
    pub(super) tune: Option<TuneCheckpoint>,
}

/// A branch's checkpoint store and the checkpoint it resumes from.
pub(super) struct BranchCheckpoints {
    pub(super) store: Option<CheckpointStore>,
    pub(super) resume: Option<BatchCheckpoint>,
}

struct WorkerOutcome {
    dead: Vec<DeadLetter>,
    eval_lines: Vec<serde_json::Value>,
    marks: Marks,
    train: Option<TrainReport>,
    branches: Vec<BranchSummary>,
    tune: Option<super::TuneSummary>,
    /// Over all processes: (dead-lettered rows, predictions written, evaluation rows, training
    /// rows spilled to disk).
    cluster_counts: (u64, u64, u64, u64),
    checkpoints: CheckpointStats,
}

/// Runs `plan`, writing the run directory, and returns the summary (also written as summary.json).
pub fn run(plan: JobPlan, options: RunOptions) -> Result<Summary> {
    run_without_summary(plan, options)?.write_summary()
}

/// Runs `plan` and writes every file of the run directory but summary.json, which the returned
/// run writes (stopping the clock) once the caller has added its own files.
pub fn run_without_summary(plan: JobPlan, options: RunOptions) -> Result<FinishedRun> {
    std::fs::create_dir_all(&options.run_dir).map_err(|e| Error::io(&options.run_dir, e))?;
    output::prepare_outputs(&plan.spec, options.cluster.process_id)?;
    let shared = Arc::new(shared_state(&plan, &options)?);
    let resumed_from_step = shared.resume.as_ref().map(|c| c.position.global_step);
    let plan = Arc::new(plan);
    let metrics = MetricsRegistry::new();
    let outcomes = {
        let plan = Arc::clone(&plan);
        let options = options.clone();
        let shared = Arc::clone(&shared);
        execute(
            &options.cluster.clone(),
            Arc::clone(&metrics),
            move |worker, ctx| run_worker(worker, &ctx, &plan, &options, &shared),
        )?
    };
    // Files of processes other than the first go to process-<i>/ of the run directory.
    let own_dir = match options.cluster.process_id {
        0 => options.run_dir.clone(),
        i => options.run_dir.join(format!("process-{i}")),
    };
    std::fs::create_dir_all(&own_dir).map_err(|e| Error::io(&own_dir, e))?;

    let dead: Vec<&DeadLetter> = outcomes.iter().flat_map(|o| o.dead.iter()).collect();
    write_dead_letters(&own_dir.join("dead_letters.jsonl"), &dead)?;
    let prom = own_dir.join("metrics.prom");
    std::fs::write(&prom, metrics.to_prometheus()).map_err(|e| Error::io(&prom, e))?;

    let first = outcomes
        .first()
        .ok_or_else(|| Error::Internal("no worker ran in this process".into()))?;
    if options.cluster.process_id == 0 {
        output::write_evaluation(&plan.spec, &first.eval_lines)?;
        output::finish_outputs(&plan.spec.output, &plan.spec.storage)?;
        crate::sink::publish(&plan.spec.sink, &plan.spec.storage)?;
    }
    let train = first
        .train
        .clone()
        .ok_or_else(|| Error::Internal("worker 0 returned no training report".into()))?;
    let totals = metrics.totals();
    let total = |name: &str| {
        totals
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, c)| c.clone())
            .unwrap_or_default()
    };
    let rows_read = total("ingest").rows_out;
    let eval_rows_read = total("ingest/holdout").rows_out;
    let sql = total("preprocess/sql");
    let sql_holdout = total("preprocess/sql/holdout");
    let rows_filtered = (sql.rows_in - sql.rows_out - sql.dead_letters)
        + (sql_holdout.rows_in - sql_holdout.rows_out - sql_holdout.dead_letters);
    let (rows_dead_lettered, predictions_written, eval_rows, train_rows_spilled) =
        first.cluster_counts;
    // The times are completed when summary.json is written.
    let summary = Summary {
        name: plan.spec.name.clone(),
        workers: options.cluster.total_workers(),
        processes: options.cluster.processes,
        device: plan.spec.train.device.for_worker(0),
        rows_read,
        eval_rows_read,
        predictions_written,
        train_rows: train.rows,
        rows_trained: train.rows_trained,
        eval_rows,
        rows_dead_lettered,
        train_rows_spilled,
        rows_filtered,
        steps: train.steps,
        final_loss: train.last_epoch_loss,
        wall_s: 0.0,
        phases: Phases::default(),
        ingest_s: 0.0,
        train_s: train.train_s,
        train_rows_per_s: train.rows_trained as f64 / train.train_s.max(1e-9),
        e2e_rows_per_s: 0.0,
        eval: train.eval.clone(),
        model_path: options
            .run_dir
            .join(model_dir_name(&plan.spec))
            .display()
            .to_string(),
        parameter_checksum: format!("{:016x}", train.parameter_checksum),
        sync_ms_per_step: train.sync_s * 1e3 / train.steps.max(1) as f64,
        resumed_from_step,
        checkpoints: first.checkpoints.clone(),
        branches: first.branches.clone(),
        tune: first.tune.clone(),
        peak_rss_bytes: peak_rss_bytes(),
        operators: totals
            .into_iter()
            .map(|(operator, c)| OperatorSummary {
                operator,
                rows_in: c.rows_in,
                rows_out: c.rows_out,
                dead_letters: c.dead_letters,
                busy_s: c.busy_s,
            })
            .collect(),
    };
    Ok(FinishedRun {
        summary,
        clock: options.started,
        marks: first.marks,
        path: own_dir.join("summary.json"),
    })
}

pub(crate) fn write_dead_letters(path: &Path, dead: &[&DeadLetter]) -> Result<()> {
    let file = File::create(path).map_err(|e| Error::io(path, e))?;
    let mut out = BufWriter::new(file);
    for letter in dead {
        let line = serde_json::to_string(letter).map_err(|e| Error::Internal(e.to_string()))?;
        writeln!(out, "{line}").map_err(|e| Error::io(path, e))?;
    }
    out.flush().map_err(|e| Error::io(path, e))
}

/// Opens the checkpoint stores (the main model's and each branch's) and, with `--resume`, reads
/// the checkpoints to continue from.
fn shared_state(plan: &JobPlan, options: &RunOptions) -> Result<Shared> {
    let spec = &plan.spec;
    let sources = BatchCheckpoint::sources(&plan.dataset, plan.holdout.as_ref());
    let store = ckpt::store(spec)?;
    if let Some(tune) = &spec.tune {
        // The store holds the tune run's checkpoints; there is no main model to resume.
        let resume = match (&store, options.resume) {
            (Some(store), true) => TuneCheckpoint::load(store, &spec.name, tune, &sources)?,
            (None, true) => return Err(ckpt::no_store()),
            (_, false) => None,
        };
        return Ok(Shared {
            store,
            resume: None,
            sources,
            branches: Vec::new(),
            tune: resume,
        });
    }
    let resume = ckpt::resume_from(
        store.as_ref(),
        options.resume,
        &ckpt::model_name(spec, None),
        &sources,
    )?;
    let mut branches = Vec::with_capacity(spec.branch.len());
    for branch in &spec.branch {
        let store = ckpt::branch_store(spec, &branch.name)?;
        let name = ckpt::model_name(spec, Some(&branch.name));
        let resume = ckpt::resume_from(store.as_ref(), options.resume, &name, &sources)?;
        branches.push(BranchCheckpoints { store, resume });
    }
    Ok(Shared {
        store,
        resume,
        sources,
        branches,
        tune: None,
    })
}

/// One worker's job, one dataflow: the ingest nodes, and the step node whose loop waits for them,
/// fits the preprocessing over every worker, encodes, trains, evaluates and totals, a round for
/// each exchange.
fn run_worker(
    worker: &mut Worker,
    ctx: &WorkerContext,
    plan: &JobPlan,
    options: &RunOptions,
    shared: &Shared,
) -> Result<WorkerOutcome> {
    let marks = Marks::new(Instant::now());
    let progress = &options.progress;
    if ctx.index == 0 {
        let rows = plan.dataset.num_rows() + plan.holdout.as_ref().map_or(0, |h| h.num_rows());
        progress.ingest_start(rows);
    }
    let memory = MemoryShare::of(&plan.spec, &options.cluster);
    run_rounds_with(
        worker,
        ctx,
        "job",
        |scope| ingest_nodes(scope, ctx, plan, progress, memory.raw_bytes()),
        |rounds, ingest| async move {
            let job = WorkerJob {
                rounds: &rounds,
                ctx,
                plan,
                options,
                shared,
            };
            job.run(ingest?, memory, marks).await
        },
    )?
}

/// What the step loop of a worker's job works with.
struct WorkerJob<'a> {
    rounds: &'a Rounds<JobMsg>,
    ctx: &'a WorkerContext,
    plan: &'a JobPlan,
    options: &'a RunOptions,
    shared: &'a Shared,
}

impl WorkerJob<'_> {
    /// The step loop's body: everything after the ingest nodes.
    async fn run(
        &self,
        ingest: IngestNodes,
        memory: MemoryShare,
        mut marks: Marks,
    ) -> Result<WorkerOutcome> {
        let (rounds, ctx, plan, options, shared) =
            (self.rounds, self.ctx, self.plan, self.options, self.shared);
        let spec = &plan.spec;
        let progress = &options.progress;
        rounds.until(|| ingest.done()).await;
        let ingested = ingest.finish(ctx)?;
        marks.ingested = Instant::now();
        let Encoded {
            fitted,
            train,
            eval,
            eval_batches,
            dead,
        } = fit_and_encode(rounds, ctx, plan, shared, ingested, memory, &mut marks).await?;
        let eval_rows = eval.rows as u64;
        if ctx.index == 0 {
            progress.ingest_done();
        }

        let branch_eval = (!spec.branch.is_empty()).then(|| eval.clone());
        let in_memory;
        let (train, spilled_rows) = match train {
            EncodedTrain::Memory(features) => {
                in_memory = features;
                (TrainRows::in_loop(rounds, &in_memory).await?, 0)
            }
            EncodedTrain::Spilled(buckets) => {
                let rows = buckets.rows();
                (TrainRows::spilled_in_loop(rounds, buckets).await?, rows)
            }
        };
        let MainModel {
            trainer,
            train_spec,
            report,
            checkpoints,
            eval_lines,
            tune,
        } = self.train_model(&fitted, &train, eval).await?;
        let branches = match branch_eval {
            Some(eval) => {
                train_branches(rounds, ctx, plan, options, shared, &fitted, &train, eval).await?
            }
            None => Vec::new(),
        };
        marks.trained = Instant::now();
        marks.eval_s = report.eval_s + branches.iter().map(|b| b.report.eval_s).sum::<f64>();
        let predictions_written =
            output::write_predictions(spec, ctx.index, &fitted, &trainer, &eval_batches)?;
        let cluster_counts = cluster_totals(
            rounds,
            ctx,
            [
                dead.iter().map(|d| d.rows).sum(),
                predictions_written,
                eval_rows,
                spilled_rows,
            ],
        )
        .await?;
        if ctx.index == 0 {
            progress.train_done();
            let model_dir = options.run_dir.join(model_dir_name(spec));
            save_bundle(
                plan,
                &model_dir,
                &spec.name,
                &train_spec,
                fitted,
                &trainer,
                &report,
            )?;
        }
        Ok(WorkerOutcome {
            dead,
            eval_lines,
            marks,
            train: Some(report),
            branches: branches.into_iter().map(BranchSummary::from).collect(),
            tune,
            cluster_counts,
            checkpoints,
        })
    }

    /// Trains the job's model on `train`: the pipeline's `[train]`, or the trials of its
    /// `[tune]` (the best one's model).
    async fn train_model(
        &self,
        fitted: &FittedPreprocessor,
        train: &TrainRows<'_>,
        eval: Features,
    ) -> Result<MainModel> {
        let (rounds, ctx, plan, options, shared) =
            (self.rounds, self.ctx, self.plan, self.options, self.shared);
        let Some(tune) = &plan.spec.tune else {
            let Trained {
                trainer,
                report,
                checkpoints,
                log,
            } = train_main(rounds, ctx, plan, options, shared, fitted, train, eval).await?;
            return Ok(MainModel {
                trainer,
                train_spec: plan.spec.train.clone(),
                report,
                checkpoints,
                eval_lines: log.close()?,
                tune: None,
            });
        };
        let checkpoints = TuneCheckpoints {
            store: shared.store.as_ref(),
            resume: shared.tune.as_ref(),
            sources: &shared.sources,
        };
        let tuned = tune_trials(
            rounds,
            ctx,
            plan,
            options,
            tune,
            fitted,
            train,
            eval,
            checkpoints,
        )
        .await?;
        Ok(MainModel {
            eval_lines: tuned.report.position.eval_lines(),
            trainer: tuned.trainer,
            train_spec: tuned.train,
            report: tuned.report,
            checkpoints: CheckpointStats::default(),
            tune: Some(tuned.summary),
        })
    }
}

/// The job's model, trained: the main `[train]`, or a `[tune]` run's best trial.
struct MainModel {
    trainer: Replica,
    /// The `[train]` it trained with (a tune trial's drawn values set).
    train_spec: crate::spec::TrainSpec,
    report: TrainReport,
    checkpoints: CheckpointStats,
    eval_lines: Vec<serde_json::Value>,
    tune: Option<super::TuneSummary>,
}

/// The run directory's model: `model`, or a tune run's best trial's, `best/model`.
fn model_dir_name(spec: &crate::spec::PipelineSpec) -> PathBuf {
    match spec.tune {
        Some(_) => Path::new("best").join("model"),
        None => PathBuf::from("model"),
    }
}

/// Sums `counts` over every worker of the cluster and brings the other processes' operator
/// counters into this process's registry (so process 0's summary and metrics.prom cover the
/// whole run).
async fn cluster_totals(
    rounds: &Rounds<JobMsg>,
    ctx: &WorkerContext,
    counts: [u64; 4],
) -> Result<(u64, u64, u64, u64)> {
    let mine: Vec<OperatorRow> = ctx
        .metrics
        .snapshot()
        .into_iter()
        .filter(|r| r.worker == ctx.index)
        .map(|r| {
            let c = &r.counters;
            let n = [
                c.batches_in,
                c.rows_in,
                c.batches_out,
                c.rows_out,
                c.dead_letters,
            ];
            (r.operator, r.worker, n, c.busy_s)
        })
        .collect();
    let all = exchange(rounds, JobMsg::Totals(mine, counts), |m| match m {
        JobMsg::Totals(rows, counts) => Some((rows, counts)),
        _ => None,
    })
    .await?;
    let reports = all
        .iter()
        .flat_map(|(rows, _)| rows)
        .map(|(operator, w, n, busy_s)| OperatorReport {
            operator: operator.clone(),
            worker: *w,
            counters: Counters {
                batches_in: n[0],
                rows_in: n[1],
                batches_out: n[2],
                rows_out: n[3],
                dead_letters: n[4],
                busy_s: *busy_s,
            },
        });
    ctx.metrics.absorb(reports);
    Ok(all.iter().fold((0, 0, 0, 0), |t, (_, c)| {
        (t.0 + c[0], t.1 + c[1], t.2 + c[2], t.3 + c[3])
    }))
}

pub(super) fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339()
}
