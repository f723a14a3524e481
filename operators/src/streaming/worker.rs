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
use millrace_ml::Replica;
use millrace_ml::preprocess::{FitState, FittedPreprocessor, Targets};
use millrace_ml::trainer::TargetsRef;
use serde::{Deserialize, Serialize};

use super::checkpoint::Checkpoint;
use super::fit::{fit_on_dataset, share, warm_up};
use super::input::{Input, Pending};
use super::late::EventTime;
use super::metrics::Totals;
use super::outputs::Outputs;
use super::prequential::{PrequentialState, StepScore, score};
use super::publish::Publisher;
use super::run::{Shared, StepLog, WorkerOutcome};
use super::watermark::{PartitionWatermarks, WorkerMark, job_watermark};
use super::windows::WindowOutput;
use crate::preprocess::CompiledSql;
use crate::stream::window::{LatePolicy, WindowResult, WindowState, Windower};
use crate::train::apply_summed_gradient;
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

/// Runs one worker until worker 0 decides to stop: each step is a local part (poll, score,
/// gradient), worker 0's decisions, one exchange, and the same update on every worker.
pub(crate) fn run_worker(
    worker: &mut Worker,
    ctx: &WorkerContext,
    shared: &Shared,
) -> Result<WorkerOutcome> {
    let mut steps = Collective::<StepMsg>::new(worker, "stream/steps");
    let mut fits = Collective::<FitState>::new(worker, "stream/fit");
    let mut job = StreamWorker::open(worker, ctx, shared, &mut steps, &mut fits)?;
    loop {
        if ctx.aborted() {
            return Err(Error::Engine(millrace_engine::Error::Aborted));
        }
        let mut msg = job.local_step(ctx, shared)?;
        if ctx.index == 0 {
            job.decide(shared, &mut msg);
        }
        let all = steps.all_gather(worker, ctx, msg)?;
        if !job.apply_step(ctx, shared, &all)? {
            break;
        }
    }
    job.finish(worker, ctx, &mut steps)
}

/// When to publish, checkpoint and stop. Checkpoints and stops are decided one step ahead, so
/// every worker knows to send its open windows with the step whose end the checkpoint captures.
struct Schedule {
    checkpoint_now: bool,
    stop_now: bool,
    end_of_input: bool,
    last_publish: Instant,
    last_checkpoint: Instant,
    steps_since_publish: u64,
    steps_since_checkpoint: u64,
    idle_since: Option<Instant>,
}

/// Event-time windows: this worker's open windows, worker 0's output, and the partial
/// aggregates closed after the previous step (sent with the next one).
struct Windows {
    windower: Option<Windower>,
    output: Option<WindowOutput>,
    closed: Vec<WindowResult>,
}

/// Model freshness: produce times of trained records not yet in a published version, of those
/// in the version published last (waiting for worker 0 to say when it went live), and the
/// measured delays.
#[derive(Default)]
struct Freshness {
    unpublished: Vec<i64>,
    awaiting_publish: Vec<i64>,
    delays_ms: Vec<u32>,
    /// Worker 0: when the last version went live, not yet told to the others.
    published_at: Option<i64>,
}

impl Freshness {
    /// Records the delays of the records in the version that went live `at`.
    fn went_live(&mut self, at: i64) {
        self.delays_ms.extend(
            self.awaiting_publish
                .drain(..)
                .map(|t| (at - t).max(0) as u32),
        );
    }
}

/// One worker's state across the steps of a streaming job.
struct StreamWorker {
    input: Input,
    pending: Pending,
    counters: Counters,
    fitted: FittedPreprocessor,
    trainer: Replica,
    prequential: PrequentialState,
    publisher: Publisher,
    classification: bool,
    outputs: Outputs,
    windows: Windows,
    schedule: Schedule,
    /// The job's watermark (the same on every worker).
    watermark: Option<i64>,
    /// This worker's partitions' clocks, with an event-time column.
    event_time: Option<EventTime>,
    freshness: Freshness,
    log: Option<StepLog>,
    /// The clock of `rows_per_s`: every record this run reads, the warm-up too.
    started: Instant,
}

/// The sums of one step over every worker's message, in worker order.
struct StepSums {
    grads: Vec<f32>,
    rows: u64,
    loss_sum: f64,
    read: u64,
    score: StepScore,
    positions: BTreeMap<i32, i64>,
    partition_events: BTreeMap<i32, i64>,
}

impl StreamWorker {
    /// Opens the partitions, and gets the preprocessing (from the checkpoint, a dataset, or the
    /// warm-up window), the model and the windows.
    fn open(
        worker: &mut Worker,
        ctx: &WorkerContext,
        shared: &Shared,
        steps: &mut Collective<StepMsg>,
        fits: &mut Collective<FitState>,
    ) -> Result<Self> {
        let plan = &shared.plan;
        let stream = &plan.stream;
        let resume = shared.resume.as_ref();
        let mut input = open_input(ctx, shared)?;
        let mut counters = Counters {
            step: resume.map_or(0, |c| c.step),
            read: resume.map_or(0, |c| c.rows_read),
            trained: resume.map_or(0, |c| c.rows_trained),
            dead: resume.map_or(0, |c| c.rows_dead_lettered),
            late: resume.map_or(0, |c| c.rows_late),
            version: resume.map_or(0, |c| c.model_version),
        };
        let started = Instant::now();
        let no_pending = || Pending {
            batches: Vec::new(),
        };
        let (fitted, pending) = match resume {
            Some(c) => (c.preprocess.clone(), no_pending()),
            None if plan.fit_on.is_some() => {
                (fit_on_dataset(worker, ctx, shared, fits)?, no_pending())
            }
            None => warm_up(worker, ctx, shared, steps, fits, &mut input, &mut counters)?,
        };
        let mut trainer = plan
            .spec
            .train
            .trainer(&fitted, ctx.index % shared.workers_per_process)?;
        if let Some(c) = resume {
            trainer.set_parameters(&c.parameters)?;
            trainer.restore_optimizer(c.optimizer.clone())?;
        }
        let event_time = stream.event_time.as_ref().map(|column| EventTime {
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
            dead_letter: stream.late == LatePolicy::DeadLetter,
            bound: stream.max_out_of_orderness.clone(),
            topic: stream.topic.clone(),
        });
        Ok(StreamWorker {
            input,
            pending,
            counters,
            prequential: resume.map_or_else(PrequentialState::default, |c| c.prequential.clone()),
            publisher: Publisher::new(shared, &fitted, ctx.index == 0),
            classification: fitted.num_classes().is_some(),
            outputs: Outputs::new(
                stream,
                &stream.kafka_options(),
                fitted.class_names(),
                ctx.index,
            )?,
            windows: open_windows(ctx, shared)?,
            schedule: Schedule {
                checkpoint_now: false,
                stop_now: false,
                end_of_input: false,
                last_publish: Instant::now(),
                last_checkpoint: Instant::now(),
                steps_since_publish: 0,
                steps_since_checkpoint: 0,
                idle_since: None,
            },
            watermark: resume.and_then(|c| c.watermark_ms),
            event_time,
            freshness: Freshness::default(),
            log: shared.log.clone(),
            started,
            fitted,
            trainer,
        })
    }

    /// This step's local part: its rows (the warm-up window first, then fresh polls), late
    /// records, scoring with the current model, and the gradient of its rows.
    fn local_step(&mut self, ctx: &WorkerContext, shared: &Shared) -> Result<StepMsg> {
        let stream = &shared.plan.stream;
        let remaining = shared
            .max_records
            .map(|n| share(n.saturating_sub(self.counters.read), ctx.peers));
        let max_batch = stream.max_batch_records;
        let (prepared, read, mut dead) = match self.pending.batches.pop() {
            Some(prepared) => (Some(prepared), 0, 0),
            None => self.input.poll(
                remaining.map_or(max_batch, |r| r.min(max_batch)),
                Duration::from_millis(stream.poll_timeout_ms),
            )?,
        };
        let mut late = 0u64;
        let mut msg = StepMsg::default();
        if let Some(mut prepared) = prepared {
            if let Some(event_time) = self.event_time.as_mut() {
                let (kept, behind) =
                    event_time.split(prepared, self.watermark, now_ms(), &mut self.input.dead)?;
                late = behind;
                prepared = kept;
                if let Some(w) = self.windows.windower.as_mut() {
                    let pushed = w.push(&prepared.batch)?;
                    late += pushed.late_rows as u64;
                }
            }
            dead += self.train_on(&prepared, stream, &mut msg)?;
        }
        msg.pending = !self.pending.batches.is_empty();
        msg.read = read;
        msg.dead = dead;
        msg.late = late;
        if let Some(e) = &self.event_time {
            msg.watermark = e.watermarks.mark(now_ms());
            if self.schedule.checkpoint_now {
                msg.partition_events = e.watermarks.max_events();
            }
        }
        msg.positions = self.input.source.positions().into_iter().collect();
        if let (true, true, Some(w)) = (
            self.schedule.stop_now,
            self.schedule.end_of_input,
            self.windows.windower.as_mut(),
        ) {
            self.windows.closed.extend(w.flush_all()?);
        }
        msg.windows = std::mem::take(&mut self.windows.closed);
        if self.schedule.checkpoint_now {
            msg.window_state = self.windows.windower.as_ref().map(Windower::snapshot);
        }
        Ok(msg)
    }

    /// Encodes `prepared`, dead-letters the rows that do not encode, scores the others with the
    /// current model (predictions out, prequential score into `msg`) and puts the gradient of
    /// their summed loss into `msg`. Returns the rows dead-lettered.
    fn train_on(
        &mut self,
        prepared: &super::input::Prepared,
        stream: &super::StreamSpec,
        msg: &mut StepMsg,
    ) -> Result<u64> {
        let features = self.fitted.transform(&prepared.batch, true)?;
        for bad in &features.rejected {
            self.input.dead.push(DeadLetter {
                operator: "stream/encode".into(),
                reason: format!("{}: {}", bad.column, bad.reason),
                origin: Some(prepared.origins.describe(&stream.topic, bad.row as usize)),
                record: row_to_json(&prepared.batch, bad.row as usize),
                rows: 1,
            });
        }
        if features.rows == 0 {
            return Ok(features.rejected.len() as u64);
        }
        let targets = features
            .y
            .as_ref()
            .ok_or_else(|| Error::Internal("streaming features have no labels".into()))?;
        let predictions = self.trainer.predict(&features.x, features.rows)?;
        self.outputs.predictions(
            prepared,
            &features.accepted,
            &predictions,
            predictions.len() / features.rows,
            self.counters.version,
        )?;
        let (y, score) = match targets {
            Targets::Classes(c) => (TargetsRef::Classes(c), score(&predictions, Some(c), None)),
            Targets::Values(v) => (TargetsRef::Values(v), score(&predictions, None, Some(v))),
        };
        msg.score = score;
        let (loss_sum, grads) = self.trainer.gradients(&features.x, y, features.rows, 1.0)?;
        msg.grads = grads;
        msg.loss_sum = loss_sum;
        msg.rows = features.rows as u64;
        self.freshness.unpublished.extend(
            features
                .accepted
                .iter()
                .map(|&r| prepared.produced_ms[r as usize]),
        );
        Ok(features.rejected.len() as u64)
    }

    /// Worker 0 decides for everyone: publish now, checkpoint and stop at the next step.
    fn decide(&mut self, shared: &Shared, msg: &mut StepMsg) {
        let stream = &shared.plan.stream;
        let schedule = &self.schedule;
        let signalled = shared.stop.load(Ordering::Relaxed);
        let reached = shared.max_records.is_some_and(|n| self.counters.read >= n);
        let idle_out = match (shared.idle_timeout, schedule.idle_since) {
            (Some(limit), Some(since)) => since.elapsed() >= limit,
            _ => false,
        };
        msg.stop = !schedule.stop_now && (signalled || reached || idle_out);
        msg.end_of_input = msg.stop && !signalled;
        msg.publish = schedule.stop_now
            || (stream.publish_every_steps > 0
                && schedule.steps_since_publish + 1 >= stream.publish_every_steps)
            || (stream.publish_every_s > 0.0
                && schedule.last_publish.elapsed().as_secs_f64() >= stream.publish_every_s);
        msg.checkpoint = !schedule.checkpoint_now
            && ((stream.checkpoint_every_steps > 0
                && schedule.steps_since_checkpoint + 1 >= stream.checkpoint_every_steps)
                || (stream.checkpoint_every_s > 0.0
                    && schedule.last_checkpoint.elapsed().as_secs_f64()
                        >= stream.checkpoint_every_s));
        msg.published_at_ms = self.freshness.published_at.take();
    }

    /// Every worker's messages in, the same update everywhere: sums, the gradient step,
    /// metrics, then publish, checkpoint and the next step's decisions. False once the job
    /// stops.
    fn apply_step(
        &mut self,
        ctx: &WorkerContext,
        shared: &Shared,
        all: &[StepMsg],
    ) -> Result<bool> {
        let spec = &shared.plan.spec;
        let mut decision = all
            .first()
            .cloned()
            .ok_or_else(|| Error::Internal("a step without worker 0".into()))?;
        // Records taken in the warm-up are trained before the job stops.
        if all.iter().any(|m| m.pending) {
            decision.stop = false;
            decision.checkpoint = false;
        }
        if let Some(at) = decision.published_at_ms {
            self.freshness.went_live(at);
        }
        let sums = self.sum(all)?;
        if let (Some(out), Some(w)) = (self.windows.output.as_mut(), self.windows.windower.as_ref())
        {
            out.write(w, all.iter().map(|m| m.windows.clone()).collect())?;
        }
        // The job's watermark: the minimum over the workers that are not idle.
        self.watermark = job_watermark(self.watermark, all.iter().map(|m| m.watermark));
        self.counters.read += sums.read;
        self.counters.step += 1;
        self.schedule.steps_since_publish += 1;
        self.schedule.steps_since_checkpoint += 1;
        let mut grads = sums.grads;
        if apply_summed_gradient(
            &mut self.trainer,
            &mut grads,
            sums.rows,
            spec.train.reduction,
            spec.train.lr,
        )? {
            self.counters.trained += sums.rows;
            self.schedule.idle_since = None;
        } else if sums.read == 0 {
            self.schedule.idle_since.get_or_insert_with(Instant::now);
        }
        self.prequential
            .push(sums.score, shared.plan.stream.prequential_window);
        self.report(ctx, shared, sums.rows, sums.loss_sum)?;
        self.publish_and_checkpoint(
            ctx,
            shared,
            &decision,
            all,
            sums.positions,
            sums.partition_events,
        )?;
        if self.schedule.stop_now {
            return Ok(false);
        }
        let schedule = &mut self.schedule;
        if decision.checkpoint || decision.stop {
            schedule.steps_since_checkpoint = 0;
            schedule.last_checkpoint = Instant::now();
        }
        schedule.checkpoint_now = decision.checkpoint || decision.stop;
        schedule.stop_now = decision.stop;
        schedule.end_of_input = decision.end_of_input;
        Ok(true)
    }

    /// Sums the step's messages in worker order: the same sums, bit for bit, on every worker.
    fn sum(&mut self, all: &[StepMsg]) -> Result<StepSums> {
        let num_params = self.trainer.num_params();
        let mut sums = StepSums {
            grads: vec![0f32; num_params],
            rows: 0,
            loss_sum: 0.0,
            read: 0,
            score: StepScore::default(),
            positions: BTreeMap::new(),
            partition_events: BTreeMap::new(),
        };
        for part in all {
            if part.rows > 0 {
                if part.grads.len() != num_params {
                    return Err(Error::Internal(format!(
                        "a worker sent {} gradient values, the model has {num_params}",
                        part.grads.len()
                    )));
                }
                for (g, v) in sums.grads.iter_mut().zip(&part.grads) {
                    *g += v;
                }
            }
            sums.rows += part.rows;
            sums.loss_sum += part.loss_sum;
            sums.read += part.read;
            self.counters.dead += part.dead;
            self.counters.late += part.late;
            sums.score.add(&part.score);
            sums.positions.extend(part.positions.iter().copied());
            sums.partition_events
                .extend(part.partition_events.iter().copied());
        }
        Ok(sums)
    }

    /// Metrics (worker 0), the step log and the metrics lines.
    fn report(
        &mut self,
        ctx: &WorkerContext,
        shared: &Shared,
        rows: u64,
        loss_sum: f64,
    ) -> Result<()> {
        let spec = &shared.plan.spec;
        let counters = &self.counters;
        if ctx.index == 0 {
            shared.metrics.update(
                &Totals {
                    read: counters.read,
                    trained: counters.trained,
                    dead: counters.dead,
                    late: counters.late,
                    step: counters.step,
                    version: counters.version,
                    watermark_ms: self.watermark,
                },
                self.prequential.metrics(self.classification).as_ref(),
            );
        }
        if let Some(log) = self.log.as_mut().filter(|_| ctx.index == 0) {
            log.step(
                counters.step,
                rows,
                loss_sum,
                &self.prequential,
                self.classification,
            )?;
        }
        if rows > 0
            && counters
                .step
                .is_multiple_of(spec.train.log_every.max(1) as u64)
        {
            self.outputs.metrics(
                counters.step,
                counters.version,
                self.prequential.metrics(self.classification).as_ref(),
            )?;
        }
        Ok(())
    }

    /// Publishes a version when `decision` says so, closes the windows the watermark passed,
    /// and on a checkpoint step writes the checkpoint (worker 0) and then commits the offsets.
    fn publish_and_checkpoint(
        &mut self,
        ctx: &WorkerContext,
        shared: &Shared,
        decision: &StepMsg,
        all: &[StepMsg],
        positions: BTreeMap<i32, i64>,
        partition_events: BTreeMap<i32, i64>,
    ) -> Result<()> {
        let spec = &shared.plan.spec;
        if decision.publish && self.counters.trained > 0 {
            self.counters.version += 1;
            if ctx.index == 0 {
                self.publisher
                    .publish(&self.trainer, self.counters.version)?;
                self.freshness.published_at = Some(now_ms());
            }
            let freshness = &mut self.freshness;
            freshness
                .awaiting_publish
                .append(&mut freshness.unpublished);
            self.schedule.steps_since_publish = 0;
            self.schedule.last_publish = Instant::now();
        }
        if let (Some(w), Some(at), false) = (
            self.windows.windower.as_mut(),
            self.watermark,
            self.schedule.stop_now,
        ) {
            self.windows.closed = w.close(at)?;
        }
        if self.schedule.checkpoint_now && ctx.index == 0 {
            let counters = &self.counters;
            let checkpoint = Checkpoint {
                format: super::checkpoint::FORMAT,
                pipeline: spec.name.clone(),
                topic: shared.plan.stream.topic.clone(),
                step: counters.step,
                optimizer_steps: self.trainer.steps(),
                model_version: counters.version,
                offsets: positions.clone(),
                rows_read: counters.read,
                rows_trained: counters.trained,
                rows_dead_lettered: counters.dead,
                rows_late: counters.late,
                parameters: self.trainer.try_parameters()?,
                optimizer: self.trainer.optimizer_state()?,
                preprocess: self.fitted.clone(),
                prequential: self.prequential.clone(),
                watermark_ms: self.watermark,
                partition_events,
                windows: all.iter().filter_map(|m| m.window_state.clone()).collect(),
            };
            shared.checkpoint(&checkpoint)?;
            // Only now may Kafka learn these offsets: a checkpoint holds them.
            self.input.source.commit(&positions)?;
        }
        Ok(())
    }

    /// One last exchange tells every worker when the final version went live; then the outputs
    /// are flushed and the worker reports.
    fn finish(
        mut self,
        worker: &mut Worker,
        ctx: &WorkerContext,
        steps: &mut Collective<StepMsg>,
    ) -> Result<WorkerOutcome> {
        let mut last = StepMsg::default();
        if ctx.index == 0 {
            last.published_at_ms = self.freshness.published_at.take();
        }
        let all = steps.all_gather(worker, ctx, last)?;
        if let Some(at) = all.first().and_then(|m| m.published_at_ms) {
            self.freshness.went_live(at);
        }
        if let Some((producer, _)) = &self.input.dlq {
            producer.flush(Duration::from_secs(30))?;
        }
        self.outputs.flush()?;
        if let Some(out) = &self.windows.output {
            out.flush()?;
        }
        let counters = &self.counters;
        Ok(WorkerOutcome {
            dead: std::mem::take(&mut self.input.dead),
            freshness_ms: self.freshness.delays_ms,
            rows_read: counters.read,
            rows_trained: counters.trained,
            rows_dead_lettered: counters.dead,
            rows_late: counters.late,
            watermark_ms: self.watermark,
            steps: counters.step,
            model_versions: counters.version,
            prequential: self.prequential.metrics(self.classification),
            train_s: self.started.elapsed().as_secs_f64(),
            parameter_checksum: millrace_engine::stable_hash(
                &self
                    .trainer
                    .parameters()
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect::<Vec<u8>>(),
            ),
        })
    }
}

/// This worker's share of the topic's partitions (from the checkpoint's offsets on a resume),
/// its decoder, SQL and dead-letter producer.
fn open_input(ctx: &WorkerContext, shared: &Shared) -> Result<Input> {
    let plan = &shared.plan;
    let stream = &plan.stream;
    let options = stream.kafka_options();
    let source = KafkaSource::open(
        &options,
        &stream.topic,
        &plan.group,
        ctx.index,
        ctx.peers,
        stream.start_from(),
        shared.resume.as_ref().map(|c| &c.offsets),
    )?;
    let dlq = match &stream.dead_letter_topic {
        Some(topic) => Some((KafkaProducer::new(&options, true)?, topic.clone())),
        None => None,
    };
    Ok(Input {
        source,
        decoder: RecordDecoder::new(plan.format.clone(), plan.metadata)?,
        sql: CompiledSql::compile(&plan.sql)?,
        dlq,
        topic: stream.topic.clone(),
        dead: Vec::new(),
        keep_keys: stream.predictions_topic.is_some(),
    })
}

/// The windows, restored from the checkpoint (worker 0 takes every worker's open windows; the
/// others only the watermark), and worker 0's window output.
fn open_windows(ctx: &WorkerContext, shared: &Shared) -> Result<Windows> {
    let plan = &shared.plan;
    let mut windower = match &plan.window {
        Some(w) => Some(Windower::new(w.clone(), plan.sql.output_schema.clone())?),
        None => None,
    };
    if let (Some(w), Some(c)) = (windower.as_mut(), shared.resume.as_ref()) {
        for state in &c.windows {
            let mut state = state.clone();
            if ctx.index != 0 {
                state.open.clear();
            }
            w.restore(state)?;
        }
    }
    let output = match (&windower, ctx.index) {
        (Some(_), 0) => Some(WindowOutput::new(
            shared.run_dir.join("windows.jsonl"),
            plan.stream.window.as_ref().and_then(|w| w.topic.as_deref()),
            &plan.stream.kafka_options(),
        )?),
        _ => None,
    };
    Ok(Windows {
        windower,
        output,
        closed: Vec::new(),
    })
}
