//! One worker of a streaming job: poll its partitions, decode, preprocess, score the records with
//! the current model (prequential), compute the gradient of its share, exchange one message with
//! every other worker, apply the summed gradient, and — on the steps worker 0 chose — publish a
//! model version or write a checkpoint and commit its offsets.
//!
//! Every decision that must be the same everywhere (publish, checkpoint, stop) is made by worker 0
//! before a step's exchange and travels in its message, so all workers act on the same step.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use arrow::array::{Array, RecordBatch, TimestampMillisecondArray};
use millrace_connectors::kafka::{
    KafkaProducer, KafkaSource, RawMessage, RecordDecoder, send_dead_letter,
};
use millrace_engine::timely::worker::Worker;
use millrace_engine::{Collective, DeadLetter, WorkerContext, row_to_json};
use millrace_ml::backend::CpuAutodiff;
use millrace_ml::preprocess::{FitState, FittedPreprocessor, Targets};
use millrace_ml::trainer::{Reduction, TargetsRef, Trainer};
use serde::{Deserialize, Serialize};

use super::checkpoint::Checkpoint;
use super::metrics::Totals;
use super::outputs::Outputs;
use super::prequential::{PrequentialState, StepScore, score};
use super::publish::Publisher;
use super::run::{Shared, WorkerOutcome};
use super::windows::WindowOutput;
use crate::preprocess::CompiledSql;
use crate::stream::window::{WindowResult, WindowState, Windower};
use crate::{Error, Result};

/// What each worker contributes to a step; every worker receives all of them.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct StepMsg {
    /// Gradient of the summed loss over this worker's rows (empty without rows).
    grads: Vec<f32>,
    loss_sum: f64,
    rows: u64,
    score: StepScore,
    read: u64,
    dead: u64,
    late: u64,
    /// Next offset of each partition this worker reads.
    positions: Vec<(i32, i64)>,
    /// Newest event time seen by this worker (ms).
    max_event_ms: Option<i64>,
    /// Worker 0's decisions for this step.
    publish: bool,
    checkpoint: bool,
    stop: bool,
    /// Worker 0: the stop ends the input (idle timeout, max records), so open windows are
    /// flushed; a stop by signal keeps them in the checkpoint instead.
    end_of_input: bool,
    /// This worker still holds warm-up records to train on (a stop waits for them).
    pending: bool,
    /// Worker 0: when the previous step's model version went live (epoch ms).
    published_at_ms: Option<i64>,
    /// Partial aggregates of the windows this worker closed after the previous step.
    windows: Vec<WindowResult>,
    /// On checkpoint steps: this worker's open windows.
    window_state: Option<WindowState>,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Records taken from the source but not trained yet (the warm-up window).
struct Pending {
    batches: Vec<(RecordBatch, Vec<i64>)>,
}

/// The decoded records of one poll, after SQL, with their produce timestamps.
#[derive(Clone)]
pub(crate) struct Prepared {
    pub(crate) batch: RecordBatch,
    pub(crate) produced_ms: Vec<i64>,
}

struct Counters {
    step: u64,
    read: u64,
    trained: u64,
    dead: u64,
    late: u64,
    version: u64,
}

/// The worker's connection to its partitions and everything that turns messages into rows.
struct Input {
    source: KafkaSource,
    decoder: RecordDecoder,
    sql: CompiledSql,
    dlq: Option<(KafkaProducer, String)>,
    topic: String,
    dead: Vec<DeadLetter>,
}

impl Input {
    /// Polls up to `max` messages; returns the prepared rows and how many messages were read,
    /// dead-lettered.
    fn poll(&mut self, max: usize, timeout: Duration) -> Result<(Option<Prepared>, u64, u64)> {
        if max == 0 {
            std::thread::sleep(timeout.min(Duration::from_millis(5)));
            return Ok((None, 0, 0));
        }
        let messages = self.source.poll(max, timeout)?;
        let read = messages.len() as u64;
        if messages.is_empty() {
            return Ok((None, 0, 0));
        }
        let decoded = self.decoder.decode(&self.topic, &messages);
        let mut dead = decoded.dead.len() as u64;
        for letter in &decoded.dead {
            self.dead_letter(letter, "stream/decode")?;
        }
        let batch = decoded.batch;
        if batch.num_rows() == 0 {
            return Ok((None, read, dead));
        }
        let produced_ms = produce_times(&batch, &messages);
        match self.sql.apply(&batch) {
            Ok(out) => Ok((
                Some(Prepared {
                    batch: out,
                    produced_ms,
                }),
                read,
                dead,
            )),
            Err(reason) => {
                // The SQL failed on the batch as a whole: every record of it is dead-lettered.
                dead += batch.num_rows() as u64;
                self.dead.push(DeadLetter {
                    operator: "stream/sql".into(),
                    reason,
                    origin: Some(format!("topic {}", self.topic)),
                    record: row_to_json(&batch, 0),
                    rows: batch.num_rows() as u64,
                });
                Ok((None, read, dead))
            }
        }
    }

    fn dead_letter(
        &mut self,
        letter: &millrace_connectors::kafka::DeadLetter,
        operator: &str,
    ) -> Result<()> {
        if let Some((producer, topic)) = &self.dlq {
            send_dead_letter(producer, topic, letter)?;
        }
        self.dead.push(DeadLetter {
            operator: operator.into(),
            reason: letter.error.clone(),
            origin: Some(format!(
                "topic {} partition {} offset {}",
                letter.topic, letter.partition, letter.offset
            )),
            record: letter
                .payload
                .as_ref()
                .map(|p| String::from_utf8_lossy(p).into_owned()),
            rows: 1,
        });
        Ok(())
    }
}

/// The produce timestamps of the decoded rows (the `_timestamp` column; now when missing).
fn produce_times(batch: &RecordBatch, _messages: &[RawMessage]) -> Vec<i64> {
    let now = now_ms();
    match batch
        .column_by_name("_timestamp")
        .and_then(|c| c.as_any().downcast_ref::<TimestampMillisecondArray>())
    {
        Some(ts) => (0..ts.len())
            .map(|i| if ts.is_null(i) { now } else { ts.value(i) })
            .collect(),
        None => vec![now; batch.num_rows()],
    }
}

/// Runs one worker until worker 0 decides to stop.
pub(crate) fn run_worker(
    worker: &mut Worker,
    ctx: &WorkerContext,
    shared: &Shared,
) -> Result<WorkerOutcome> {
    let plan = &shared.plan;
    let stream = &plan.stream;
    let spec = &plan.spec;
    let mut steps = Collective::<StepMsg>::new(worker, "stream/steps");
    let mut fits = Collective::<FitState>::new(worker, "stream/fit");
    let options = stream.kafka_options();
    let resume = shared.resume.as_ref();
    let source = KafkaSource::open(
        &options,
        &stream.topic,
        &plan.group,
        ctx.index,
        ctx.peers,
        stream.start_from()?,
        resume.map(|c| &c.offsets),
    )?;
    let dlq = match &stream.dead_letter_topic {
        Some(topic) => Some((KafkaProducer::new(&options, true)?, topic.clone())),
        None => None,
    };
    let mut input = Input {
        source,
        decoder: RecordDecoder::new(plan.format.clone(), plan.metadata)?,
        sql: CompiledSql::compile(&plan.sql)?,
        dlq,
        topic: stream.topic.clone(),
        dead: Vec::new(),
    };
    let mut counters = Counters {
        step: resume.map_or(0, |c| c.step),
        read: resume.map_or(0, |c| c.rows_read),
        trained: resume.map_or(0, |c| c.rows_trained),
        dead: resume.map_or(0, |c| c.rows_dead_lettered),
        late: resume.map_or(0, |c| c.rows_late),
        version: resume.map_or(0, |c| c.model_version),
    };
    let poll_timeout = Duration::from_millis(stream.poll_timeout_ms);

    // The preprocessing: from the checkpoint, or fitted on the warm-up window.
    let (fitted, mut pending) = match resume {
        Some(c) => (
            c.preprocess.clone(),
            Pending {
                batches: Vec::new(),
            },
        ),
        None if plan.fit_on.is_some() => (
            fit_on_dataset(worker, ctx, shared, &mut fits)?,
            Pending {
                batches: Vec::new(),
            },
        ),
        None => warm_up(
            worker,
            ctx,
            shared,
            &mut steps,
            &mut fits,
            &mut input,
            &mut counters,
        )?,
    };
    let task = fitted.task();
    let device = Default::default();
    let mut trainer = Trainer::<CpuAutodiff>::new(
        &spec.train.model,
        &spec.train.optimizer,
        spec.train.loss_for(&task)?,
        &task,
        fitted.input_dim(),
        spec.train.seed,
        &device,
    )?;
    if let Some(c) = resume {
        trainer.set_parameters(&c.parameters)?;
        trainer.restore_optimizer(c.optimizer.clone())?;
    }
    let mut prequential = resume.map_or_else(PrequentialState::default, |c| c.prequential.clone());
    let mut publisher = Publisher::new(shared, &fitted, ctx.index == 0);
    let classification = fitted.num_classes().is_some();
    let mut outputs = Outputs::new(stream, &options, fitted.class_names(), ctx.index)?;
    let mut windower = match &plan.window {
        Some(w) => Some(Windower::new(w.clone(), plan.sql.output_schema.clone())?),
        None => None,
    };
    if let (Some(w), Some(c)) = (windower.as_mut(), resume) {
        // Worker 0 takes every worker's open windows; the others only the watermark.
        for state in &c.windows {
            let mut state = state.clone();
            if ctx.index != 0 {
                state.open.clear();
            }
            w.restore(state)?;
        }
    }
    let mut window_output = match (&windower, ctx.index) {
        (Some(_), 0) => Some(WindowOutput::new(
            shared.run_dir.join("windows.jsonl"),
            stream.window.as_ref().and_then(|w| w.topic.as_deref()),
            &options,
        )?),
        _ => None,
    };
    let mut closed_windows: Vec<WindowResult> = Vec::new();
    // Checkpoints and stops are decided one step ahead, so every worker knows to send its open
    // windows with the step whose end the checkpoint captures.
    let mut checkpoint_now = false;
    let mut stop_now = false;
    let mut end_of_input = false;

    let max_batch = stream.max_batch_records;
    let started = Instant::now();
    let mut last_publish = Instant::now();
    let mut last_checkpoint = Instant::now();
    let mut steps_since_publish = 0u64;
    let mut steps_since_checkpoint = 0u64;
    let mut idle_since: Option<Instant> = None;
    let mut global_max_event: Option<i64> = resume.and_then(|c| c.max_event_ms);
    let mut local_max_event: Option<i64> = None;
    // Produce times of trained records not yet in a published version, and of those in the
    // version published last (waiting for worker 0 to say when it went live).
    let mut unpublished: Vec<i64> = Vec::new();
    let mut awaiting_publish: Vec<i64> = Vec::new();
    let mut freshness_ms: Vec<u32> = Vec::new();
    let mut published_at: Option<i64> = None;
    let mut log = shared.log.clone();

    loop {
        if ctx.aborted() {
            return Err(Error::Engine(millrace_engine::Error::Aborted));
        }
        // 1. This step's rows: the warm-up window first, then fresh polls.
        let remaining = shared
            .max_records
            .map(|n| share(n.saturating_sub(counters.read), ctx.index, ctx.peers));
        let (prepared, read, mut dead) = match pending.batches.pop() {
            Some((batch, produced_ms)) => (Some(Prepared { batch, produced_ms }), 0, 0),
            None => input.poll(
                remaining.map_or(max_batch, |r| r.min(max_batch)),
                poll_timeout,
            )?,
        };
        // 2. Late records, scoring, gradients.
        let mut late = 0u64;
        let mut msg = StepMsg::default();
        if let Some(mut prepared) = prepared {
            if let Some(column) = &stream.event_time {
                let (kept, late_rows, max_event) = super::late::split_late(
                    &prepared,
                    column,
                    global_max_event.map(|m| m - plan.lateness_ms),
                )?;
                late = late_rows.num_rows() as u64;
                if late > 0 && stream.late == "dead_letter" {
                    for row in 0..late_rows.num_rows() {
                        input.dead.push(DeadLetter {
                            operator: "stream/late".into(),
                            reason: format!(
                                "event time behind the watermark (max_out_of_orderness = {})",
                                stream.max_out_of_orderness
                            ),
                            origin: Some(format!("topic {}", stream.topic)),
                            record: row_to_json(&late_rows, row),
                            rows: 1,
                        });
                    }
                }
                local_max_event = local_max_event.max(max_event);
                prepared = kept;
                if let Some(w) = windower.as_mut() {
                    let pushed = w.push(&prepared.batch)?;
                    late += pushed.late_rows as u64;
                }
            }
            let features = fitted.transform(&prepared.batch, true)?;
            for bad in &features.rejected {
                dead += 1;
                input.dead.push(DeadLetter {
                    operator: "stream/encode".into(),
                    reason: format!("{}: {}", bad.column, bad.reason),
                    origin: Some(format!("topic {}", stream.topic)),
                    record: row_to_json(&prepared.batch, bad.row as usize),
                    rows: 1,
                });
            }
            if features.rows > 0 {
                let targets = features
                    .y
                    .as_ref()
                    .ok_or_else(|| Error::Internal("streaming features have no labels".into()))?;
                let predictions = trainer.predict(&features.x, features.rows)?;
                outputs.predictions(
                    &prepared.batch,
                    &features.accepted,
                    &predictions,
                    predictions.len() / features.rows,
                    counters.version,
                )?;
                msg.score = match targets {
                    Targets::Classes(c) => score(&predictions, Some(c), None),
                    Targets::Values(v) => score(&predictions, None, Some(v)),
                };
                let y = match targets {
                    Targets::Classes(c) => TargetsRef::Classes(c),
                    Targets::Values(v) => TargetsRef::Values(v),
                };
                let (loss_sum, grads) = trainer.gradients(&features.x, y, features.rows, 1.0)?;
                msg.grads = grads;
                msg.loss_sum = loss_sum;
                msg.rows = features.rows as u64;
                unpublished.extend(
                    features
                        .accepted
                        .iter()
                        .map(|&r| prepared.produced_ms[r as usize]),
                );
            }
        }
        msg.pending = !pending.batches.is_empty();
        msg.read = read;
        msg.dead = dead;
        msg.late = late;
        msg.max_event_ms = local_max_event;
        msg.positions = input.source.positions().into_iter().collect();
        if let (true, true, Some(w)) = (stop_now, end_of_input, windower.as_mut()) {
            closed_windows.extend(w.flush_all()?);
        }
        msg.windows = std::mem::take(&mut closed_windows);
        if checkpoint_now {
            msg.window_state = windower.as_ref().map(Windower::snapshot);
        }
        // 3. Worker 0 decides for everyone (checkpoint and stop for the next step).
        if ctx.index == 0 {
            let signalled = shared.stop.load(Ordering::Relaxed);
            let reached = shared.max_records.is_some_and(|n| counters.read >= n);
            let idle_out = match (shared.idle_timeout, idle_since) {
                (Some(limit), Some(since)) => since.elapsed() >= limit,
                _ => false,
            };
            msg.stop = !stop_now && (signalled || reached || idle_out);
            msg.end_of_input = msg.stop && !signalled;
            msg.publish = stop_now
                || (stream.publish_every_steps > 0
                    && steps_since_publish + 1 >= stream.publish_every_steps)
                || (stream.publish_every_s > 0.0
                    && last_publish.elapsed().as_secs_f64() >= stream.publish_every_s);
            msg.checkpoint = !checkpoint_now
                && ((stream.checkpoint_every_steps > 0
                    && steps_since_checkpoint + 1 >= stream.checkpoint_every_steps)
                    || (stream.checkpoint_every_s > 0.0
                        && last_checkpoint.elapsed().as_secs_f64() >= stream.checkpoint_every_s));
            msg.published_at_ms = published_at.take();
        }
        let all = steps.all_gather(worker, ctx, msg)?;
        let mut decision = all
            .first()
            .cloned()
            .ok_or_else(|| Error::Internal("a step without worker 0".into()))?;
        // Records taken in the warm-up are trained before the job stops.
        if all.iter().any(|m| m.pending) {
            decision.stop = false;
            decision.checkpoint = false;
        }
        // 4. Combine in worker order: the same sums, bit for bit, on every worker.
        if let Some(at) = decision.published_at_ms {
            freshness_ms.extend(awaiting_publish.drain(..).map(|t| (at - t).max(0) as u32));
        }
        let num_params = trainer.num_params();
        let mut grads = vec![0f32; num_params];
        let (mut rows, mut loss_sum, mut step_read) = (0u64, 0f64, 0u64);
        let mut step_score = StepScore::default();
        let mut positions = BTreeMap::new();
        let mut max_events = Vec::with_capacity(all.len());
        for part in &all {
            if part.rows > 0 {
                if part.grads.len() != num_params {
                    return Err(Error::Internal(format!(
                        "a worker sent {} gradient values, the model has {num_params}",
                        part.grads.len()
                    )));
                }
                for (g, v) in grads.iter_mut().zip(&part.grads) {
                    *g += v;
                }
            }
            rows += part.rows;
            loss_sum += part.loss_sum;
            step_read += part.read;
            counters.dead += part.dead;
            counters.late += part.late;
            step_score.add(&part.score);
            positions.extend(part.positions.iter().copied());
            max_events.push(part.max_event_ms);
        }
        if let (Some(out), Some(w)) = (window_output.as_mut(), windower.as_ref()) {
            out.write(w, all.iter().map(|m| m.windows.clone()).collect())?;
        }
        // The watermark waits for the slowest worker that has seen events.
        global_max_event = max_events
            .iter()
            .flatten()
            .min()
            .copied()
            .or(global_max_event);
        counters.read += step_read;
        counters.step += 1;
        steps_since_publish += 1;
        steps_since_checkpoint += 1;
        if rows > 0 {
            if spec.train.reduction != Reduction::Sum {
                let scale = 1.0 / rows as f32;
                for g in &mut grads {
                    *g *= scale;
                }
            }
            trainer.apply(&grads, spec.train.lr)?;
            counters.trained += rows;
            idle_since = None;
        } else if step_read == 0 {
            idle_since.get_or_insert_with(Instant::now);
        }
        prequential.push(step_score, stream.prequential_window);
        if ctx.index == 0 {
            shared.metrics.update(
                &Totals {
                    read: counters.read,
                    trained: counters.trained,
                    dead: counters.dead,
                    late: counters.late,
                    step: counters.step,
                    version: counters.version,
                },
                prequential.metrics(classification).as_ref(),
            );
        }
        if let Some(log) = log.as_mut().filter(|_| ctx.index == 0) {
            log.step(counters.step, rows, loss_sum, &prequential, classification)?;
        }
        if rows > 0
            && counters
                .step
                .is_multiple_of(spec.train.log_every.max(1) as u64)
        {
            outputs.metrics(
                counters.step,
                counters.version,
                prequential.metrics(classification).as_ref(),
            )?;
        }
        // 5. Publish, checkpoint, stop.
        if decision.publish && counters.trained > 0 {
            counters.version += 1;
            if ctx.index == 0 {
                publisher.publish(&trainer, counters.version)?;
                published_at = Some(now_ms());
            }
            awaiting_publish.append(&mut unpublished);
            steps_since_publish = 0;
            last_publish = Instant::now();
        }
        if let (Some(w), Some(max_event), false) = (windower.as_mut(), global_max_event, stop_now) {
            closed_windows = w.close(max_event.saturating_sub(plan.lateness_ms))?;
        }
        if checkpoint_now && ctx.index == 0 {
            let checkpoint = Checkpoint {
                format: super::checkpoint::FORMAT,
                pipeline: spec.name.clone(),
                topic: stream.topic.clone(),
                step: counters.step,
                optimizer_steps: trainer.steps(),
                model_version: counters.version,
                offsets: positions.clone(),
                rows_read: counters.read,
                rows_trained: counters.trained,
                rows_dead_lettered: counters.dead,
                rows_late: counters.late,
                parameters: trainer.parameters(),
                optimizer: trainer.optimizer_state(),
                preprocess: fitted.clone(),
                prequential: prequential.clone(),
                max_event_ms: global_max_event,
                windows: all.iter().filter_map(|m| m.window_state.clone()).collect(),
            };
            shared.checkpoint(&checkpoint)?;
            // Only now may Kafka learn these offsets: a checkpoint holds them.
            input.source.commit(&positions)?;
        }
        if stop_now {
            break;
        }
        if decision.checkpoint || decision.stop {
            steps_since_checkpoint = 0;
            last_checkpoint = Instant::now();
        }
        checkpoint_now = decision.checkpoint || decision.stop;
        stop_now = decision.stop;
        end_of_input = decision.end_of_input;
    }
    // One last exchange tells every worker when the final version went live.
    let mut last = StepMsg::default();
    if ctx.index == 0 {
        last.published_at_ms = published_at.take();
    }
    let all = steps.all_gather(worker, ctx, last)?;
    if let Some(at) = all.first().and_then(|m| m.published_at_ms) {
        freshness_ms.extend(awaiting_publish.drain(..).map(|t| (at - t).max(0) as u32));
    }
    if let Some((producer, _)) = &input.dlq {
        producer.flush(Duration::from_secs(30))?;
    }
    outputs.flush()?;
    if let Some(out) = &window_output {
        out.flush()?;
    }
    Ok(WorkerOutcome {
        dead: std::mem::take(&mut input.dead),
        freshness_ms,
        rows_read: counters.read,
        rows_trained: counters.trained,
        rows_dead_lettered: counters.dead,
        rows_late: counters.late,
        steps: counters.step,
        model_versions: counters.version,
        prequential: prequential.metrics(classification),
        train_s: started.elapsed().as_secs_f64(),
        parameter_checksum: millrace_engine::stable_hash(
            &trainer
                .parameters()
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<u8>>(),
        ),
    })
}

/// How many of the `n` records still wanted one worker of `peers` may read this step: an even
/// share, rounded up, so a worker whose partitions hold the last records can always read them
/// (the job may then read up to `peers − 1` records more than asked).
fn share(n: u64, _index: usize, peers: usize) -> usize {
    let peers = peers.max(1) as u64;
    usize::try_from(n.div_ceil(peers)).unwrap_or(usize::MAX)
}

/// Every worker's fit state, merged in worker order (the same result on every worker).
fn merge_fits(
    worker: &mut Worker,
    ctx: &WorkerContext,
    fits: &mut Collective<FitState>,
    fit: FitState,
) -> Result<FitState> {
    let mut states = fits.all_gather(worker, ctx, fit)?.into_iter();
    let mut merged = states
        .next()
        .ok_or_else(|| Error::Internal("no fit state from worker 0".into()))?;
    for state in states {
        merged.merge(&state);
    }
    Ok(merged)
}

/// Fits the preprocessing on the `[ingest]` dataset: each worker reads its share through the
/// preprocess SQL; the fit states are merged in worker order.
fn fit_on_dataset(
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

/// Reads records until `warmup_records` have arrived over all workers (or the stream stops or
/// idles out), fits the preprocessing on them, and keeps them to be trained on first.
fn warm_up(
    worker: &mut Worker,
    ctx: &WorkerContext,
    shared: &Shared,
    steps: &mut Collective<StepMsg>,
    fits: &mut Collective<FitState>,
    input: &mut Input,
    counters: &mut Counters,
) -> Result<(FittedPreprocessor, Pending)> {
    let plan = &shared.plan;
    let stream = &plan.stream;
    let mut fit = FitState::new(&plan.features, plan.label_kind);
    let mut batches = Vec::new();
    let mut seen = 0u64;
    let mut idle_since: Option<Instant> = None;
    let poll_timeout = Duration::from_millis(stream.poll_timeout_ms);
    loop {
        let remaining = shared
            .max_records
            .map(|n| share(n.saturating_sub(counters.read), ctx.index, ctx.peers));
        let want = stream
            .max_batch_records
            .min(remaining.unwrap_or(usize::MAX));
        let (prepared, read, dead) = input.poll(want, poll_timeout)?;
        let mut msg = StepMsg {
            read,
            dead,
            ..StepMsg::default()
        };
        if let Some(p) = prepared {
            fit.update(&p.batch)?;
            msg.rows = p.batch.num_rows() as u64;
            batches.push((p.batch, p.produced_ms));
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
        seen += step_rows;
        if all.iter().all(|m| m.read == 0) {
            idle_since.get_or_insert_with(Instant::now);
        } else {
            idle_since = None;
        }
        let stop = all.first().is_some_and(|m| m.stop);
        if seen >= stream.warmup_records || (stop && seen > 0) {
            break;
        }
        if stop {
            return Err(Error::config(
                "stream.warmup_records",
                format!(
                    "the stream stopped before any record arrived to fit the preprocessing on (topic '{}')",
                    stream.topic
                ),
            ));
        }
    }
    let merged = merge_fits(worker, ctx, fits, fit)?;
    let fitted = merged.finish()?;
    // Trained oldest first: `pop` takes from the end.
    batches.reverse();
    Ok((fitted, Pending { batches }))
}
