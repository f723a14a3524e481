//! Running a planned batch job on timely workers.
//!
//! Each worker: ingest its share of the row groups → SQL → split (and fit the preprocessing on its
//! train rows) in one dataflow; the fitted statistics are merged over all workers; each worker encodes
//! its rows; then synchronous data-parallel training with evaluation; worker 0 writes the model.

use std::cell::RefCell;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{BooleanArray, RecordBatch};
use arrow::compute::{filter_record_batch, not};
use millrace_connectors::parquet::ScanOptions;
use millrace_engine::timely::dataflow::ProbeHandle;
use millrace_engine::timely::dataflow::channels::pact::Pipeline;
use millrace_engine::timely::dataflow::operators::Probe;
use millrace_engine::timely::dataflow::operators::generic::operator::Operator;
use millrace_engine::timely::worker::Worker;
use millrace_engine::{
    Batch, ClusterConfig, Collective, DeadLetter, FlowContext, MetricsRegistry, WorkerContext,
    execute, row_to_json,
};
use millrace_ml::bundle::{BundleMeta, ModelBundle};
use millrace_ml::preprocess::{Features, FitState, FittedPreprocessor, LabelKind, Targets};
use serde_json::json;

use super::output;
use super::plan::JobPlan;
use super::progress::Progress;
use super::summary::{OperatorSummary, Summary, peak_rss_bytes};
use crate::evaluate::Evaluator;
use crate::ingest::parquet_source;
use crate::preprocess::SqlRunner;
use crate::train::{TrainEvent, TrainReport, train_data_parallel};
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
}

struct WorkerOutcome {
    dead: Vec<DeadLetter>,
    predictions_written: u64,
    eval_lines: Vec<serde_json::Value>,
    eval_rows: u64,
    ingest_s: f64,
    train: Option<TrainReport>,
}

/// Runs `plan`, writing the run directory, and returns the summary (also written as summary.json).
pub fn run(plan: JobPlan, options: RunOptions) -> Result<Summary> {
    let started = Instant::now();
    std::fs::create_dir_all(&options.run_dir).map_err(|e| Error::io(&options.run_dir, e))?;
    output::prepare_outputs(&plan.spec, options.cluster.process_id)?;
    let plan = Arc::new(plan);
    let metrics = MetricsRegistry::new();
    let outcomes = {
        let plan = Arc::clone(&plan);
        let options = options.clone();
        execute(
            &options.cluster.clone(),
            Arc::clone(&metrics),
            move |worker, ctx| run_worker(worker, &ctx, &plan, &options),
        )?
    };

    let dead: Vec<&DeadLetter> = outcomes.iter().flat_map(|o| o.dead.iter()).collect();
    write_dead_letters(&options.run_dir.join("dead_letters.jsonl"), &dead)?;
    let prom = options.run_dir.join("metrics.prom");
    std::fs::write(&prom, metrics.to_prometheus()).map_err(|e| Error::io(&prom, e))?;

    let first = outcomes
        .first()
        .ok_or_else(|| Error::Internal("no worker ran in this process".into()))?;
    if options.cluster.process_id == 0 {
        output::write_evaluation(&plan.spec, &first.eval_lines)?;
        output::finish_outputs(&plan.spec.output, &plan.spec.storage)?;
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
    let rows_dead_lettered: u64 = dead.iter().map(|d| d.rows).sum();
    let wall_s = started.elapsed().as_secs_f64();
    let summary = Summary {
        name: plan.spec.name.clone(),
        workers: options.cluster.total_workers(),
        rows_read,
        eval_rows_read,
        predictions_written: outcomes.iter().map(|o| o.predictions_written).sum(),
        train_rows: train.rows,
        rows_trained: train.rows_trained,
        eval_rows: outcomes.iter().map(|o| o.eval_rows).sum(),
        rows_dead_lettered,
        rows_filtered,
        steps: train.steps,
        final_loss: train.last_epoch_loss,
        wall_s,
        ingest_s: first.ingest_s,
        train_s: train.train_s,
        train_rows_per_s: train.rows_trained as f64 / train.train_s.max(1e-9),
        e2e_rows_per_s: rows_read as f64 / wall_s.max(1e-9),
        eval: train.eval.clone(),
        model_path: options.run_dir.join("model").display().to_string(),
        parameter_checksum: format!("{:016x}", train.parameter_checksum),
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
    let path = options.run_dir.join("summary.json");
    let text =
        serde_json::to_string_pretty(&summary).map_err(|e| Error::Internal(e.to_string()))?;
    std::fs::write(&path, text + "\n").map_err(|e| Error::io(&path, e))?;
    Ok(summary)
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

/// What the ingest dataflow leaves on a worker.
#[derive(Default)]
struct Ingested {
    train: Vec<Batch>,
    eval: Vec<Batch>,
    dead: Vec<DeadLetter>,
    fit: Option<FitState>,
    fit_error: Option<Error>,
}

fn ingest(
    worker: &mut Worker,
    ctx: &WorkerContext,
    plan: &JobPlan,
    progress: &Arc<dyn Progress>,
) -> Result<Ingested> {
    let state = Rc::new(RefCell::new(Ingested {
        fit: Some(FitState::new(&plan.features, plan.label_kind)),
        ..Ingested::default()
    }));
    let batch_size = plan.spec.ingest.batch_rows;
    let runner = SqlRunner::new(plan.sql.clone())?;
    let units = plan.dataset.plan(ctx.peers).swap_remove(ctx.index);
    let options = ScanOptions {
        projection: Some(plan.sql.input_columns.clone()),
        batch_size,
    };
    let holdout = match (&plan.holdout, &plan.holdout_sql) {
        (Some(h), Some(sql)) => Some((
            h.clone(),
            h.plan(ctx.peers).swap_remove(ctx.index),
            ScanOptions {
                projection: Some(sql.input_columns.clone()),
                batch_size,
            },
            SqlRunner::new(sql.clone())?,
        )),
        _ => None,
    };
    let split = plan.split.clone();
    let probes: Vec<ProbeHandle<u64>> = worker.dataflow_named::<u64, _, _>("ingest", |scope| {
        let fc = FlowContext::new(ctx.clone());
        let mut probes = Vec::new();
        let p = Arc::clone(progress);
        let train_state = Rc::clone(&state);
        let probe = parquet_source(scope, &fc, "ingest", plan.dataset.clone(), units, options)
            .inspect("ingest/progress", move |b| p.ingested(b.num_rows() as u64))
            .map_batches("preprocess/sql", move |b| runner.apply(b))
            .sink("preprocess/split+fit", move |batch| {
                let mut st = train_state.borrow_mut();
                let (train, eval) = match &split {
                    Some(split) => match split_batch(&batch.data, split) {
                        Ok(parts) => parts,
                        Err(reason) => {
                            st.dead.push(DeadLetter {
                                operator: "preprocess/split".into(),
                                reason,
                                origin: batch.origin.as_deref().map(str::to_string),
                                record: None,
                                rows: batch.num_rows() as u64,
                            });
                            return;
                        }
                    },
                    None => (
                        batch.data.clone(),
                        RecordBatch::new_empty(batch.data.schema()),
                    ),
                };
                if st.fit_error.is_none() {
                    let result = st.fit.as_mut().map(|f| f.update(&train));
                    if let Some(Err(e)) = result {
                        st.fit_error = Some(e.into());
                    }
                }
                if eval.num_rows() > 0 {
                    st.eval.push(batch.clone().map(eval));
                }
                if train.num_rows() > 0 {
                    st.train.push(batch.map(train));
                }
            });
        probes.push(probe);
        if let Some((dataset, units, options, runner)) = holdout {
            let p = Arc::clone(progress);
            let eval_state = Rc::clone(&state);
            probes.push(
                parquet_source(scope, &fc, "ingest/holdout", dataset, units, options)
                    .inspect("ingest/holdout/progress", move |b| {
                        p.ingested(b.num_rows() as u64)
                    })
                    .map_batches("preprocess/sql/holdout", move |b| runner.apply(b))
                    .sink("preprocess/holdout", move |batch| {
                        eval_state.borrow_mut().eval.push(batch)
                    }),
            );
        }
        if let Some(dead) = fc.dead_letters(scope) {
            let dead_state = Rc::clone(&state);
            let (probe, stream) = dead.probe();
            stream.sink(Pipeline, "dead-letters", move |(input, _)| {
                input.for_each(|_, data| dead_state.borrow_mut().dead.append(data));
            });
            probes.push(probe);
        }
        probes
    });
    ctx.step_while(worker, || probes.iter().any(|p| !p.done()))?;
    let taken = std::mem::take(&mut *state.borrow_mut());
    Ok(taken)
}

fn split_batch(
    batch: &RecordBatch,
    split: &crate::preprocess::HashSplit,
) -> Result<(RecordBatch, RecordBatch), String> {
    let eval_mask: BooleanArray = split.eval_mask(batch)?;
    let train_mask = not(&eval_mask).map_err(|e| e.to_string())?;
    let train = filter_record_batch(batch, &train_mask).map_err(|e| e.to_string())?;
    let eval = filter_record_batch(batch, &eval_mask).map_err(|e| e.to_string())?;
    Ok((train, eval))
}

/// Encodes batches with the fitted preprocessing; rejected rows become dead letters.
fn encode(
    fitted: &FittedPreprocessor,
    batches: Vec<Batch>,
    op: &str,
    ctx: &WorkerContext,
    dead: &mut Vec<DeadLetter>,
) -> Result<Features> {
    let stats = ctx.metrics.operator(op, ctx.index);
    let started = Instant::now();
    let mut x = Vec::new();
    let mut classes = Vec::new();
    let mut values = Vec::new();
    let mut rows = 0;
    for batch in batches {
        stats.record_in(batch.num_rows());
        let f = fitted.transform(&batch.data, true)?;
        for rejected in &f.rejected {
            dead.push(DeadLetter {
                operator: op.to_string(),
                reason: format!("column '{}': {}", rejected.column, rejected.reason),
                origin: batch.origin.as_deref().map(str::to_string),
                record: row_to_json(&batch.data, rejected.row as usize),
                rows: 1,
            });
        }
        stats.record_dead(f.rejected.len());
        stats.record_out(f.rows);
        rows += f.rows;
        x.extend_from_slice(&f.x);
        match f.y {
            Some(Targets::Classes(c)) => classes.extend(c),
            Some(Targets::Values(v)) => values.extend(v),
            None => {}
        }
    }
    stats.record_busy(started.elapsed());
    let y = match fitted.label_kind() {
        LabelKind::Classification => Targets::Classes(classes),
        LabelKind::Regression => Targets::Values(values),
    };
    Ok(Features {
        x,
        y: Some(y),
        rows,
        accepted: Vec::new(),
        rejected: Vec::new(),
    })
}

fn run_worker(
    worker: &mut Worker,
    ctx: &WorkerContext,
    plan: &JobPlan,
    options: &RunOptions,
) -> Result<WorkerOutcome> {
    let started = Instant::now();
    let spec = &plan.spec;
    let progress = &options.progress;
    if ctx.index == 0 {
        let rows = plan.dataset.num_rows() + plan.holdout.as_ref().map_or(0, |h| h.num_rows());
        progress.ingest_start(rows);
    }
    let mut ingested = ingest(worker, ctx, plan, progress)?;
    if let Some(e) = ingested.fit_error.take() {
        return Err(e);
    }

    // Fit: merge every worker's statistics, in worker order, so every worker gets the same fit.
    let local = ingested
        .fit
        .take()
        .ok_or_else(|| Error::Internal("fit state missing".into()))?;
    let mut channel = Collective::<FitState>::new(worker, "preprocess/fit");
    let mut states = channel.all_gather(worker, ctx, local)?.into_iter();
    let mut merged = states
        .next()
        .ok_or_else(|| Error::Internal("no fit states gathered".into()))?;
    for state in states {
        merged.merge(&state);
    }
    let fitted = merged.finish()?;

    let mut dead = std::mem::take(&mut ingested.dead);
    let eval_batches = if spec.output.predictions.is_some() {
        ingested.eval.clone()
    } else {
        Vec::new()
    };
    let train = encode(
        &fitted,
        std::mem::take(&mut ingested.train),
        "preprocess/encode",
        ctx,
        &mut dead,
    )?;
    let eval = encode(
        &fitted,
        std::mem::take(&mut ingested.eval),
        "preprocess/encode/eval",
        ctx,
        &mut dead,
    )?;
    let eval_rows = eval.rows as u64;
    let ingest_s = started.elapsed().as_secs_f64();
    if ctx.index == 0 {
        progress.ingest_done();
    }

    let mut trainer = spec.train.trainer(&fitted)?;
    let mut evaluator = Evaluator::new(worker, Some(eval), fitted.num_classes());

    let mut log = if ctx.index == 0 {
        let path = options.run_dir.join("metrics.jsonl");
        Some((
            BufWriter::new(File::create(&path).map_err(|e| Error::io(&path, e))?),
            path,
        ))
    } else {
        None
    };
    let mut log_error: Option<Error> = None;
    let mut eval_lines = Vec::new();
    let log_every = spec.train.log_every as u64;
    let mut total_steps = 0;
    // Loss lines in metrics.jsonl are the mean over the rows since the previous line.
    let (mut window_loss, mut window_rows) = (0.0f64, 0u64);
    let train_started = Instant::now();
    let mut on_event = |event: TrainEvent| {
        let Some((out, path)) = log.as_mut() else {
            return;
        };
        let line = match &event {
            TrainEvent::Start {
                total_steps: t,
                rows,
            } => {
                total_steps = *t;
                progress.train_start(*t, *rows);
                None
            }
            TrainEvent::Step {
                epoch,
                step,
                loss,
                rows,
            } => {
                progress.train_step(*step, *loss);
                window_loss += loss * *rows as f64;
                window_rows += rows;
                (step.is_multiple_of(log_every) || *step == total_steps).then(|| {
                    let mean = window_loss / window_rows.max(1) as f64;
                    let line = json!({"kind": "train", "epoch": epoch, "step": step, "loss": mean, "rows": window_rows,
                           "elapsed_s": train_started.elapsed().as_secs_f64()});
                    (window_loss, window_rows) = (0.0, 0);
                    line
                })
            }
            TrainEvent::Eval {
                epoch,
                step,
                metrics,
            } => {
                progress.eval(*epoch, metrics);
                let mut v = json!({"kind": "eval", "epoch": epoch, "step": step});
                if let (Some(obj), Ok(serde_json::Value::Object(m))) =
                    (v.as_object_mut(), serde_json::to_value(metrics))
                {
                    obj.extend(m);
                }
                eval_lines.push(v.clone());
                Some(v)
            }
        };
        if let Some(line) = line
            && let Err(e) = writeln!(out, "{line}")
            && log_error.is_none()
        {
            log_error = Some(Error::io(path.clone(), e));
        }
    };
    let report = train_data_parallel(
        worker,
        ctx,
        &mut trainer,
        &train,
        &mut evaluator,
        &spec.train,
        spec.evaluate.every_epoch,
        &mut on_event,
    )?;
    if let Some((mut out, path)) = log {
        out.flush().map_err(|e| Error::io(&path, e))?;
    }
    if let Some(e) = log_error {
        return Err(e);
    }
    let predictions_written =
        output::write_predictions(spec, ctx.index, &fitted, &trainer, &eval_batches)?;
    if ctx.index == 0 {
        progress.train_done();
        let bundle = ModelBundle {
            spec: spec.train.model.clone(),
            task: fitted.task(),
            preprocess: fitted,
            weights: trainer.parameters(),
            meta: BundleMeta {
                name: spec.name.clone(),
                version: 1,
                created_at: now_rfc3339(),
                transform_sql: Some(plan.serve_sql.wrapped_sql.clone()),
                extra: json!({
                    "input_schema": crate::serve::schema_to_json(&plan.serve_sql.input_schema),
                    "user_sql": plan.sql.user_sql,
                    "eval": report.eval,
                }),
            },
        };
        bundle.save(&options.run_dir.join("model"))?;
    }
    Ok(WorkerOutcome {
        dead,
        predictions_written,
        eval_lines,
        eval_rows,
        ingest_s,
        train: Some(report),
    })
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339()
}
