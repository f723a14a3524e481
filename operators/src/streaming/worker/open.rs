//! Opening a streaming worker: its partitions, its preprocessing and model (from a checkpoint,
//! a dataset or the warm-up window), and its windows.

use super::*;
use crate::sink::SinkWriter;

impl StreamWorker {
    /// Opens the partitions, and gets the preprocessing (from the checkpoint, a dataset, or the
    /// warm-up window), the model and the windows.
    pub(super) fn open(
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
        let mut features = match &plan.feature_view {
            Some(view) => Some(FeatureStage::open(
                worker,
                ctx,
                shared,
                view,
                input.keep_keys,
            )?),
            None => None,
        };
        let mut event_time = open_event_time(shared, &input);
        let mut watermark = resume.and_then(|c| c.watermark_ms);
        let (fitted, pending) = match resume {
            Some(c) => (c.preprocess.clone(), no_pending()),
            None if plan.fit_on.is_some() => {
                (fit_on_dataset(worker, ctx, shared, fits)?, no_pending())
            }
            None => {
                let mut warm = super::super::fit::WarmUp {
                    input: &mut input,
                    counters: &mut counters,
                    features: features.as_mut(),
                    event_time: event_time.as_mut(),
                    watermark: &mut watermark,
                };
                warm_up(worker, ctx, shared, steps, fits, &mut warm)?
            }
        };
        let mut trainer = plan
            .spec
            .train
            .trainer(&fitted, ctx.index % shared.workers_per_process)?;
        if let Some(c) = resume {
            trainer.set_parameters(&c.parameters)?;
            trainer.restore_optimizer(c.optimizer.clone())?;
        }
        let mut job = StreamWorker {
            input,
            pending,
            counters,
            prequential: resume.map_or_else(PrequentialState::default, |c| c.prequential.clone()),
            versions: Vec::new(),
            emitted: 0,
            published: Rc::default(),
            branches: super::branches::open_branches(ctx, shared, &fitted)?,
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
                published_at_trained: None,
                steps_since_checkpoint: 0,
                idle_since: None,
                idle_steps: 0,
                checkpointed: None,
            },
            watermark,
            event_time,
            features,
            released: Vec::new(),
            drained: None,
            freshness: Freshness::default(),
            log: shared.log.clone(),
            started,
            fitted,
            trainer,
        };
        // A resumed job is where its checkpoint left it.
        job.schedule.checkpointed = resume.map(|_| job.progress());
        Ok(job)
    }
}

impl StreamWorker {
    /// The publishers of the job's models for the publish node: the `[train]` model's, then each
    /// `[[branch]]`'s (worker 0 publishes; the others' node has none).
    pub(super) fn publishers(&self, ctx: &WorkerContext, shared: &Shared) -> Vec<Publisher> {
        if ctx.index != 0 {
            return Vec::new();
        }
        let branches =
            (self.branches.iter()).map(|b| Publisher::for_branch(shared, &self.fitted, &b.spec));
        std::iter::once(Publisher::new(shared, &self.fitted))
            .chain(branches)
            .collect()
    }
}

/// The event-time bookkeeping of this worker's partitions (from the checkpoint on a resume).
fn open_event_time(shared: &Shared, input: &Input) -> Option<EventTime> {
    let plan = &shared.plan;
    let stream = &plan.stream;
    let resume = shared.resume.as_ref();
    stream.event_time.as_ref().map(|column| EventTime {
        column: column.clone(),
        watermarks: PartitionWatermarks::new(
            &input.source.assignment(),
            &resume
                .map(|c| c.partition_events.clone())
                .unwrap_or_default(),
            plan.lateness_ms,
            i64::try_from(stream.idle_timeout.get().as_millis()).ok(),
            now_ms(),
        ),
        dead_letter: stream.late == LatePolicy::DeadLetter,
        bound: stream.max_out_of_orderness.to_string(),
        topic: stream.topic.clone(),
    })
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
        stream.start,
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
        sinks: (plan.spec.sink.iter())
            .map(|sink| {
                let spec = &plan.spec;
                SinkWriter::new(sink, &spec.storage, spec.output.compression, ctx.index, "")
            })
            .collect(),
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
