//! A worker's part of a batch job before training: reading its share of the sources through
//! the SQL into train and evaluation rows (fitting the preprocessing on the way), and encoding
//! them with the fitted preprocessing.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{BooleanArray, RecordBatch};
use arrow::compute::{filter_record_batch, not};
use millrace_connectors::parquet::ScanOptions;
use millrace_engine::timely::dataflow::ProbeHandle;
use millrace_engine::timely::dataflow::Scope;
use millrace_engine::timely::dataflow::channels::pact::Pipeline;
use millrace_engine::timely::dataflow::operators::Probe;
use millrace_engine::timely::dataflow::operators::generic::operator::Operator;
use millrace_engine::{Batch, DeadLetter, Flow, FlowContext, WorkerContext, row_to_json};
use millrace_ml::preprocess::{Features, FitState, FittedPreprocessor, LabelKind, Targets};

use super::plan::JobPlan;
use super::progress::Progress;
use crate::ingest::parquet_source;
use crate::preprocess::{HashSplit, SqlRunner};
use crate::sink::SinkWriter;
use crate::spec::SinkPoint;
use crate::train::spill::Spool;
use crate::{Error, Result};

/// What the ingest dataflow leaves on a worker.
pub(super) struct Ingested {
    /// The training batches, on disk past `spool_limit` bytes.
    pub(super) train: Spool,
    pub(super) eval: Vec<Batch>,
    pub(super) dead: Vec<DeadLetter>,
    pub(super) fit: Option<FitState>,
    /// The first error of the fit or of the spill.
    pub(super) error: Option<Error>,
}

/// The ingest nodes of a worker, built in the job's dataflow: done once every probe is, then
/// [`IngestNodes::finish`] hands over what they left.
pub(super) struct IngestNodes {
    probes: Vec<ProbeHandle<u64>>,
    state: Rc<RefCell<Ingested>>,
    sinks: Vec<Rc<RefCell<SinkWriter>>>,
}

impl IngestNodes {
    /// Every source is read and every batch taken.
    pub(super) fn done(&self) -> bool {
        self.probes.iter().all(ProbeHandle::done)
    }

    /// Finishes the sinks after ingest and returns what the nodes left.
    pub(super) fn finish(self, ctx: &WorkerContext) -> Result<Ingested> {
        for sink in &self.sinks {
            let rows = sink.borrow_mut().finish()?;
            tracing::debug!(rows, worker = ctx.index, "sink finished");
        }
        let empty = Ingested {
            train: Spool::new(u64::MAX, "unused"),
            eval: Vec::new(),
            dead: Vec::new(),
            fit: None,
            error: None,
        };
        Ok(std::mem::replace(&mut *self.state.borrow_mut(), empty))
    }
}

/// Builds, in `scope`, the nodes that read this worker's share of the sources through the SQL
/// into train and evaluation rows (fitting on the way); the training batches past `spool_limit`
/// bytes go to disk.
pub(super) fn ingest_nodes(
    scope: Scope<'_, u64>,
    ctx: &WorkerContext,
    plan: &JobPlan,
    progress: &Arc<dyn Progress>,
    spool_limit: u64,
) -> Result<IngestNodes> {
    let state = Rc::new(RefCell::new(Ingested {
        train: Spool::new(spool_limit, &format!("worker-{}", ctx.index)),
        eval: Vec::new(),
        dead: Vec::new(),
        fit: Some(FitState::new(&plan.features, plan.label_kind)),
        error: None,
    }));
    let batch_size = plan.spec.ingest.batch_rows;
    let runner = SqlRunner::new(plan.sql.clone())?;
    let units = plan.dataset.plan(ctx.peers).swap_remove(ctx.index);
    let options = ScanOptions {
        projection: Some(plan.ingest_columns.clone()),
        batch_size,
    };
    let sinks = sink_writers(plan, ctx);
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
    let probes: Vec<ProbeHandle<u64>> = {
        let fc = FlowContext::new(ctx.clone());
        let mut probes = Vec::new();
        let p = Arc::clone(progress);
        let train_state = Rc::clone(&state);
        let source = parquet_source(scope, &fc, "ingest", plan.dataset.clone(), units, options)
            .inspect("ingest/progress", move |b| p.ingested(b.num_rows() as u64));
        let preprocessed = attach(source, &sinks, SinkPoint::Ingest)
            .map_batches("preprocess/sql", move |b| runner.apply(b));
        let probe = attach(preprocessed, &sinks, SinkPoint::Preprocess)
            .sink("preprocess/split+fit", move |batch| {
                split_and_fit(&mut train_state.borrow_mut(), split.as_ref(), batch)
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
    };
    Ok(IngestNodes {
        probes,
        state,
        sinks,
    })
}

/// Splits a preprocessed batch into train and evaluation rows, fits the preprocessing on the
/// train rows and keeps both (a batch the split cannot read is a dead letter).
fn split_and_fit(st: &mut Ingested, split: Option<&HashSplit>, batch: Batch) {
    let (train, eval) = match split {
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
    if st.error.is_none() {
        let result = st.fit.as_mut().map(|f| f.update(&train));
        if let Some(Err(e)) = result {
            st.error = Some(e.into());
        }
    }
    if eval.num_rows() > 0 {
        st.eval.push(batch.clone().map(eval));
    }
    if train.num_rows() > 0
        && let Err(e) = st.train.push(batch.map(train))
    {
        st.error.get_or_insert(e);
    }
}

/// This worker's writers of the `[[sink]]`s.
fn sink_writers(plan: &JobPlan, ctx: &WorkerContext) -> Vec<Rc<RefCell<SinkWriter>>> {
    let job_id = super::output::job_id(&plan.spec);
    (plan.spec.sink.iter())
        .map(|spec| {
            let writer = SinkWriter::new(
                spec,
                &plan.spec.storage,
                plan.spec.output.compression,
                ctx.index,
                &job_id,
            );
            Rc::new(RefCell::new(writer))
        })
        .collect()
}

/// `flow` with every sink taken at `point` written from it.
fn attach<'scope>(
    mut flow: Flow<'scope, u64>,
    sinks: &[Rc<RefCell<SinkWriter>>],
    point: SinkPoint,
) -> Flow<'scope, u64> {
    for sink in sinks {
        if sink.borrow().point() != point {
            continue;
        }
        let name = sink.borrow().operator();
        let writer = Rc::clone(sink);
        flow = flow.inspect(&name, move |batch| writer.borrow_mut().write(&batch.data));
    }
    flow
}

fn split_batch(
    batch: &RecordBatch,
    split: &HashSplit,
) -> Result<(RecordBatch, RecordBatch), String> {
    let eval_mask: BooleanArray = split.eval_mask(batch)?;
    let train_mask = not(&eval_mask).map_err(|e| e.to_string())?;
    let train = filter_record_batch(batch, &train_mask).map_err(|e| e.to_string())?;
    let eval = filter_record_batch(batch, &eval_mask).map_err(|e| e.to_string())?;
    Ok((train, eval))
}

/// Encodes batches with the fitted preprocessing; rejected rows become dead letters.
pub(super) fn encode(
    fitted: &FittedPreprocessor,
    batches: Vec<Batch>,
    op: &str,
    ctx: &WorkerContext,
    dead: &mut Vec<DeadLetter>,
) -> Result<Features> {
    let mut x = Vec::new();
    let mut classes = Vec::new();
    let mut values = Vec::new();
    let mut rows = 0;
    encode_each(fitted, batches.into_iter().map(Ok), op, ctx, dead, |f| {
        rows += f.rows;
        x.extend_from_slice(&f.x);
        match f.y {
            Some(Targets::Classes(c)) => classes.extend(c),
            Some(Targets::Values(v)) => values.extend(v),
            None => {}
        }
        Ok(())
    })?;
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

/// Encodes `batches` one at a time, handing each one's accepted rows to `each`; rejected rows
/// become dead letters.
pub(super) fn encode_each(
    fitted: &FittedPreprocessor,
    batches: impl Iterator<Item = Result<Batch>>,
    op: &str,
    ctx: &WorkerContext,
    dead: &mut Vec<DeadLetter>,
    mut each: impl FnMut(Features) -> Result<()>,
) -> Result<()> {
    let stats = ctx.metrics.operator(op, ctx.index);
    let started = Instant::now();
    for batch in batches {
        let batch = batch?;
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
        each(f)?;
    }
    stats.record_busy(started.elapsed());
    Ok(())
}
