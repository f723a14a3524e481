//! Fitting a streaming job's preprocessing before it trains: on the first records of the stream
//! (the warm-up window, kept to be trained on first) or on an `[ingest]` dataset.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use millrace_engine::timely::worker::Worker;
use millrace_engine::{Collective, WorkerContext};
use millrace_ml::preprocess::{FitState, FittedPreprocessor};

use super::features::FeatureStage;
use super::input::{Input, Pending};
use super::late::EventTime;
use super::run::Shared;
use super::watermark::job_watermark;
use super::worker::now_ms;
use super::worker::{Counters, StepMsg};
use crate::preprocess::{CompiledSql, merge_fits};
use crate::{Error, Result};

/// How many of the `n` records still wanted one worker of `peers` may read this step: an even
/// share, rounded up, so a worker whose partitions hold the last records can always read them
/// (the job may then read up to `peers − 1` records more than asked).
pub(super) fn share(n: u64, peers: usize) -> usize {
    let peers = peers.max(1) as u64;
    usize::try_from(n.div_ceil(peers)).unwrap_or(usize::MAX)
}

/// Fits the preprocessing on the `[ingest]` dataset: each worker reads its share through the
/// preprocess SQL; the fit states are merged in worker order.
pub(super) fn fit_on_dataset(
    worker: &mut Worker,
    ctx: &WorkerContext,
    shared: &Shared,
    fits: &mut Collective<FitState>,
) -> Result<FittedPreprocessor> {
    let plan = &shared.plan;
    let (dataset, sql_plan) = plan
        .fit_on
        .as_ref()
        .ok_or_else(|| Error::Internal("no dataset to fit on".into()))?;
    let sql = CompiledSql::compile(sql_plan)?;
    let mut fit = FitState::new(&plan.features, plan.label_kind);
    let scan = millrace_connectors::parquet::ScanOptions {
        projection: Some(sql_plan.input_columns.clone()),
        batch_size: plan.spec.ingest.batch_rows,
    };
    let units = dataset.plan(ctx.peers).swap_remove(ctx.index);
    for unit in &units {
        for item in dataset.read_unit(unit, &scan)? {
            let (origin, batch) = item?;
            let prepared = sql.apply(&batch).map_err(|reason| {
                Error::config(
                    "ingest.path",
                    format!("the preprocess SQL failed on {origin:?}: {reason}"),
                )
            })?;
            fit.update(&prepared)?;
        }
    }
    let merged = merge_fits(worker, ctx, fits, fit)?;
    if merged.rows() == 0 {
        return Err(Error::config(
            "ingest.path",
            "no rows to fit the preprocessing on are left after the preprocess SQL",
        ));
    }
    Ok(merged.finish()?)
}

/// The error of a stream that stopped before the warm-up had a record to fit on.
fn stopped_early(topic: &str, features: bool) -> Error {
    let waiting = if features {
        " (with [features], a record counts once the watermark has passed it: lower stream.max_out_of_orderness or fit on an [ingest] dataset)"
    } else {
        ""
    };
    Error::config(
        "stream.warmup_records",
        format!(
            "the stream stopped before any record arrived to fit the preprocessing on (topic '{topic}'){waiting}"
        ),
    )
}

/// What the warm-up reads with and moves on.
pub(super) struct WarmUp<'a> {
    pub(super) input: &'a mut Input,
    pub(super) counters: &'a mut Counters,
    /// With `[features]`, the preprocessing is fitted on the records the view released (they
    /// have their feature columns), so the warm-up keeps the watermark moving.
    pub(super) features: Option<&'a mut FeatureStage>,
    pub(super) event_time: Option<&'a mut EventTime>,
    pub(super) watermark: &'a mut Option<i64>,
}

/// Reads records until `warmup_records` have arrived over all workers (or the stream stops or
/// idles out), fits the preprocessing on them, and keeps them to be trained on first.
pub(super) fn warm_up(
    worker: &mut Worker,
    ctx: &WorkerContext,
    shared: &Shared,
    steps: &mut Collective<StepMsg>,
    fits: &mut Collective<FitState>,
    warm: &mut WarmUp<'_>,
) -> Result<(FittedPreprocessor, Pending)> {
    let WarmUp {
        input, counters, ..
    } = warm;
    let plan = &shared.plan;
    let stream = &plan.stream;
    let mut fit = FitState::new(&plan.features, plan.label_kind);
    let mut batches = Vec::new();
    let mut seen = 0u64;
    let mut released = 0u64;
    let mut idle_since: Option<Instant> = None;
    let poll_timeout = Duration::from_millis(stream.poll_timeout_ms);
    loop {
        let remaining = shared
            .max_records
            .map(|n| share(n.saturating_sub(counters.read), ctx.peers));
        let want = stream
            .max_batch_records
            .min(remaining.unwrap_or(usize::MAX));
        let (prepared, read, dead) = input.poll(want, poll_timeout)?;
        let mut msg = StepMsg {
            read,
            dead,
            // With features: the records released after the previous exchange.
            rows: std::mem::take(&mut released),
            ..StepMsg::default()
        };
        match (prepared, warm.features.as_deref_mut()) {
            (Some(p), None) => {
                fit.update(&p.batch)?;
                msg.rows = p.batch.num_rows() as u64;
                batches.push(p);
            }
            (Some(mut p), Some(stage)) => {
                if let Some(e) = warm.event_time.as_deref_mut() {
                    let (kept, late) = e.split(p, *warm.watermark, now_ms(), &mut input.dead)?;
                    msg.late = late;
                    p = kept;
                }
                msg.dead += stage.push(&p, &mut input.dead)?;
            }
            (None, _) => {}
        }
        let mut hold = None;
        if let Some(stage) = warm.features.as_deref_mut() {
            if ctx.index == 0 {
                stage.poll_table(&mut input.dead)?;
            }
            hold = stage.table_hold();
        }
        if let Some(e) = warm.event_time.as_deref_mut() {
            e.keep_unread(&input.source, now_ms());
            msg.watermark = e.watermarks.mark(now_ms()).held(hold);
        }
        if ctx.index == 0 {
            let idle_out = match (shared.idle_timeout, idle_since) {
                (Some(limit), Some(since)) => since.elapsed() >= limit,
                _ => false,
            };
            let reached = shared.max_records.is_some_and(|n| counters.read >= n);
            msg.stop = shared.stop.load(Ordering::Relaxed) || idle_out || reached;
        }
        let all = steps.all_gather(worker, ctx, msg)?;
        let step_rows: u64 = all.iter().map(|m| m.rows).sum();
        counters.read += all.iter().map(|m| m.read).sum::<u64>();
        counters.dead += all.iter().map(|m| m.dead).sum::<u64>();
        counters.late += all.iter().map(|m| m.late).sum::<u64>();
        seen += step_rows;
        if let Some(stage) = warm.features.as_deref_mut() {
            *warm.watermark = job_watermark(*warm.watermark, all.iter().map(|m| m.watermark));
            stage.advance(worker, ctx, *warm.watermark, false)?;
            if let Some(r) = stage.released()? {
                input.write_sinks(crate::spec::SinkPoint::Features, &r.batch);
                fit.update(&r.batch)?;
                released += r.batch.num_rows() as u64;
                batches.push(r);
            }
        }
        if all.iter().all(|m| m.read == 0) {
            idle_since.get_or_insert_with(Instant::now);
        } else {
            idle_since = None;
        }
        let stop = all.first().is_some_and(|m| m.stop);
        if seen >= stream.warmup_records || (stop && seen > 0) {
            break;
        }
        if stop && warm.features.is_some() {
            // Records released after the last exchange: one more tells every worker (all of
            // them take it: `stop` is worker 0's word).
            let msg = StepMsg {
                rows: std::mem::take(&mut released),
                ..StepMsg::default()
            };
            if steps
                .all_gather(worker, ctx, msg)?
                .iter()
                .any(|m| m.rows > 0)
            {
                break;
            }
        }
        if stop {
            return Err(stopped_early(&stream.topic, warm.features.is_some()));
        }
    }
    let merged = merge_fits(worker, ctx, fits, fit)?;
    let fitted = merged.finish()?;
    // Trained oldest first: `pop` takes from the end.
    batches.reverse();
    Ok((fitted, Pending { batches }))
}
