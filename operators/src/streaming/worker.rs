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

use millrace_connectors::kafka::{KafkaProducer, KafkaSource, RecordDecoder};
use millrace_engine::timely::worker::Worker;
use millrace_engine::{Collective, DeadLetter, WorkerContext, row_to_json};
use millrace_ml::preprocess::{FitState, Targets};
use millrace_ml::trainer::{Reduction, TargetsRef};
use serde::{Deserialize, Serialize};

use super::checkpoint::Checkpoint;
use super::fit::{fit_on_dataset, share, warm_up};
use super::input::{Input, Pending};
use super::late::EventTime;
use super::metrics::Totals;
use super::outputs::Outputs;
use super::prequential::{PrequentialState, StepScore, score};
use super::publish::Publisher;
use super::run::{Shared, WorkerOutcome};
use super::watermark::{PartitionWatermarks, WorkerMark, job_watermark};
use super::windows::WindowOutput;
use crate::preprocess::CompiledSql;
use crate::stream::window::{WindowResult, WindowState, Windower};
use crate::{Error, Result};

/// What each worker contributes to a step; every worker receives all of them.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct StepMsg {
    /// Gradient of the summed loss over this worker's rows (empty without rows).
    pub(super) grads: Vec<f32>,
    pub(super) loss_sum: f64,
    pub(super) rows: u64,
    pub(super) score: StepScore,
    pub(super) read: u64,
    pub(super) dead: u64,
    pub(super) late: u64,
    /// Next offset of each partition this worker reads.
    pub(super) positions: Vec<(i32, i64)>,
    /// This worker's watermark: the minimum over its partitions that are not idle.
    pub(super) watermark: WorkerMark,
    /// On checkpoint steps: the newest event time of each partition this worker reads.
    pub(super) partition_events: Vec<(i32, i64)>,
    /// Worker 0's decisions for this step.
    pub(super) publish: bool,
    pub(super) checkpoint: bool,
    pub(super) stop: bool,
    /// Worker 0: the stop ends the input (idle timeout, max records), so open windows are
    /// flushed; a stop by signal keeps them in the checkpoint instead.
    pub(super) end_of_input: bool,
    /// This worker still holds warm-up records to train on (a stop waits for them).
    pub(super) pending: bool,
    /// Worker 0: when the previous step's model version went live (epoch ms).
    pub(super) published_at_ms: Option<i64>,
    /// Partial aggregates of the windows this worker closed after the previous step.
    pub(super) windows: Vec<WindowResult>,
    /// On checkpoint steps: this worker's open windows.
    pub(super) window_state: Option<WindowState>,
}

pub(super) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

pub(super) struct Counters {
    pub(super) step: u64,
    pub(super) read: u64,
    pub(super) trained: u64,
    pub(super) dead: u64,
    pub(super) late: u64,
    pub(super) version: u64,
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
        keep_keys: stream.predictions_topic.is_some(),
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

    // The clock of `rows_per_s` covers every record this run reads: the warm-up too.
    let started = Instant::now();
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
    let mut trainer = spec
        .train
        .trainer(&fitted, ctx.index % shared.workers_per_process)?;
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
    let mut last_publish = Instant::now();
    let mut last_checkpoint = Instant::now();
    let mut steps_since_publish = 0u64;
    let mut steps_since_checkpoint = 0u64;
    let mut idle_since: Option<Instant> = None;
    // The job's watermark (the same on every worker), and this worker's partitions' clocks.
    let mut watermark: Option<i64> = resume.and_then(|c| c.watermark_ms);
    let mut event_time = stream.event_time.as_ref().map(|column| EventTime {
        column: column.clone(),
        watermarks: PartitionWatermarks::new(
            &input.source.assignment(),
            &resume
                .map(|c| c.partition_events.clone())
                .unwrap_or_default(),
            plan.lateness_ms,
            i64::try_from(stream.idle_timeout.as_millis()).ok(),
            now_ms(),
        ),
        dead_letter: stream.late == "dead_letter",
        bound: stream.max_out_of_orderness.clone(),
        topic: stream.topic.clone(),
    });
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
            .map(|n| share(n.saturating_sub(counters.read), ctx.peers));
        let (prepared, read, mut dead) = match pending.batches.pop() {
            Some(prepared) => (Some(prepared), 0, 0),
            None => input.poll(
                remaining.map_or(max_batch, |r| r.min(max_batch)),
                poll_timeout,
            )?,
        };
        // 2. Late records, scoring, gradients.
        let mut late = 0u64;
        let mut msg = StepMsg::default();
        if let Some(mut prepared) = prepared {
            if let Some(event_time) = event_time.as_mut() {
                let (kept, behind) =
                    event_time.split(prepared, watermark, now_ms(), &mut input.dead)?;
                late = behind;
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
                    origin: Some(prepared.origins.describe(&stream.topic, bad.row as usize)),
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
                    &prepared,
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
        if let Some(e) = &event_time {
            msg.watermark = e.watermarks.mark(now_ms());
            if checkpoint_now {
                msg.partition_events = e.watermarks.max_events();
            }
        }
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
        let mut partition_events = BTreeMap::new();
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
            partition_events.extend(part.partition_events.iter().copied());
        }
        if let (Some(out), Some(w)) = (window_output.as_mut(), windower.as_ref()) {
            out.write(w, all.iter().map(|m| m.windows.clone()).collect())?;
        }
        // The job's watermark: the minimum over the workers that are not idle.
        watermark = job_watermark(watermark, all.iter().map(|m| m.watermark));
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
                    watermark_ms: watermark,
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
        if let (Some(w), Some(at), false) = (windower.as_mut(), watermark, stop_now) {
            closed_windows = w.close(at)?;
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
                parameters: trainer.try_parameters()?,
                optimizer: trainer.optimizer_state()?,
                preprocess: fitted.clone(),
                prequential: prequential.clone(),
                watermark_ms: watermark,
                partition_events: std::mem::take(&mut partition_events),
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
        watermark_ms: watermark,
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
