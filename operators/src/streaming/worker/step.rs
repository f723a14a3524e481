//! One step of a streaming worker: its local part, worker 0's decisions, and the same update
//! on every worker once all messages are in (what it publishes and checkpoints: `commit.rs`).

use millrace_engine::Rounds;

use super::*;

impl StreamWorker {
    /// This step's local part: its rows (the warm-up window first, then fresh polls), late
    /// records, scoring with the current model, and the gradient of its rows.
    pub(super) fn local_step(&mut self, ctx: &WorkerContext, shared: &Shared) -> Result<StepMsg> {
        let stream = &shared.plan.stream;
        let remaining = shared
            .max_records
            .map(|n| share(n.saturating_sub(self.counters.read), ctx.peers));
        let max_batch = stream.max_batch_records;
        // Draining the features at the end of the input: no more records are taken.
        let drained =
            self.features.is_some() && self.schedule.stop_now && self.schedule.end_of_input;
        let mut msg = StepMsg {
            freshness: self.freshness.take_new(),
            ..StepMsg::default()
        };
        let (prepared, read, mut dead) = match self.pending.batches.pop() {
            // With features, the warm-up kept records that already have theirs.
            Some(prepared) if self.features.is_some() => {
                let dead = self.train_on(&prepared, stream, &mut msg)?;
                (None, 0, dead)
            }
            Some(prepared) => (Some(prepared), 0, 0),
            None if drained => (None, 0, 0),
            None => self.input.poll(
                remaining.map_or(max_batch, |r| r.min(max_batch)),
                idle_poll_timeout(stream.poll_timeout_ms, self.schedule.idle_steps),
            )?,
        };
        let mut late = 0u64;
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
            match self.features.as_mut() {
                Some(stage) => dead += stage.push(&prepared, &mut self.input.dead)?,
                None => dead += self.train_on(&prepared, stream, &mut msg)?,
            }
        }
        dead += self.train_released(stream, &mut msg)?;
        if let Some(stage) = self.features.as_mut() {
            if ctx.index == 0 {
                // A Kafka table's bad messages go to the dead letters; they are not records.
                stage.poll_table(&mut self.input.dead)?;
                msg.table_version = stage.newer_table()?;
            }
            if self.schedule.checkpoint_now {
                msg.features = Some(match self.drained.take() {
                    Some(state) => state,
                    None => stage.state(),
                });
            }
        }
        msg.pending = !self.pending.batches.is_empty();
        msg.read = read;
        msg.dead = dead;
        msg.late = late;
        if let Some(e) = self.event_time.as_mut() {
            e.keep_unread(&self.input.source, now_ms());
            let hold = self.features.as_ref().and_then(FeatureStage::table_hold);
            msg.watermark = e.watermarks.mark(now_ms()).held(hold);
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
            // What this worker wrote for the records the checkpoint counts as done must be
            // durable before worker 0 writes it: a crash after it must not lose those outputs.
            self.flush_outputs()?;
        }
        Ok(msg)
    }

    /// Watermark alignment: pauses this worker's partitions whose watermark runs more than
    /// `stream.watermark_alignment` ahead of the job's, and resumes them when it catches up. A
    /// step in which no worker read anything resumes every partition, so that a job whose other
    /// partitions are done never waits on a paused one.
    fn align_partitions(&mut self, shared: &Shared, read: u64) -> Result<()> {
        let (Some(align), Some(e)) = (shared.plan.alignment_ms, self.event_time.as_ref()) else {
            return Ok(());
        };
        let ahead = match self.watermark {
            Some(w) if read > 0 => e.watermarks.ahead(w, align),
            _ => std::collections::BTreeSet::new(),
        };
        self.input.source.set_paused(&ahead)?;
        Ok(())
    }

    /// Trains on the records the features released after the previous step (when no warm-up
    /// batch was trained in this one: a step trains one batch).
    fn train_released(
        &mut self,
        stream: &crate::streaming::StreamSpec,
        msg: &mut StepMsg,
    ) -> Result<u64> {
        if msg.rows > 0 || self.released.is_empty() {
            return Ok(0);
        }
        match crate::streaming::input::Prepared::concat(std::mem::take(&mut self.released))? {
            Some(rows) => self.train_on(&rows, stream, msg),
            None => Ok(0),
        }
    }

    /// After every worker applied the step: the feature table moves to the version worker 0
    /// chose, the view to the job's watermark (to the end when the input ended), and the records
    /// whose features are complete are kept for the next step.
    pub(super) async fn advance_features(
        &mut self,
        rounds: &Rounds<StepMsg, ModelVersion>,
        ctx: &WorkerContext,
        all: &[StepMsg],
    ) -> Result<()> {
        let Some(stage) = self.features.as_mut() else {
            return Ok(());
        };
        if let Some(version) = all.first().and_then(|m| m.table_version) {
            stage.move_table(version, ctx)?;
        }
        let drain = self.schedule.stop_now && self.schedule.end_of_input;
        if drain {
            // The checkpoint of the stop keeps the view as it stands, less the records the drain
            // trains: a resumed job goes on from the watermark, not from the end of time.
            let mut state = stage.state();
            state.pending.clear();
            self.drained = Some(state);
        }
        stage.advance_to(self.watermark, drain);
        rounds.until(|| stage.is_complete()).await;
        if let Some(rows) = stage.released()? {
            self.input
                .write_sinks(crate::spec::SinkPoint::Features, &rows.batch);
            self.released.push(rows);
        }
        Ok(())
    }

    /// Encodes `prepared`, dead-letters the rows that do not encode, scores the others with the
    /// current model (predictions out, prequential score into `msg`) and puts the gradient of
    /// their summed loss into `msg`. Returns the rows dead-lettered.
    fn train_on(
        &mut self,
        prepared: &crate::streaming::input::Prepared,
        stream: &crate::streaming::StreamSpec,
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
        msg.branches = (self.branches.iter_mut())
            .map(|b| b.part(&features.x, targets, features.rows))
            .collect::<Result<_>>()?;
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

    /// Where the job stands, for skipping the checkpoints of an idle job.
    pub(super) fn progress(&self) -> Progress {
        let c = &self.counters;
        (c.read, c.trained, c.dead, c.late, self.watermark)
    }

    /// Worker 0 decides for everyone: publish now, checkpoint and stop at the next step.
    pub(super) fn decide(&mut self, shared: &Shared, msg: &mut StepMsg) {
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
        // An idle job's periodic checkpoints would write the same state again and again (and,
        // with [features], take the CPU from the server between them).
        let moved = schedule.checkpointed != Some(self.progress());
        msg.checkpoint = !schedule.checkpoint_now
            && moved
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
    pub(super) fn apply_step(
        &mut self,
        ctx: &WorkerContext,
        shared: &Shared,
        all: &[StepMsg],
    ) -> Result<bool> {
        let spec = &shared.plan.spec;
        // Only worker 0's decisions, not its message (which holds a whole gradient).
        let mut decision = Decision::of(
            all.first()
                .ok_or_else(|| Error::Internal("a step without worker 0".into()))?,
        );
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
        self.align_partitions(shared, all.iter().map(|m| m.read).sum())?;
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
        self.schedule.idle_steps = match sums.read {
            0 => self.schedule.idle_steps.saturating_add(1),
            _ => 0,
        };
        self.prequential
            .push(sums.score, shared.plan.stream.prequential_window);
        for (i, branch) in self.branches.iter_mut().enumerate() {
            branch.apply(i, all, sums.rows, shared.plan.stream.prequential_window)?;
        }
        // Worker 0 logs the freshness; the others only send theirs.
        let fresh = (ctx.index == 0)
            .then(|| DelaySummary::merge(all.iter().filter_map(|m| m.freshness.as_ref())))
            .flatten();
        self.report(ctx, shared, (sums.rows, sums.loss_sum), fresh)?;
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
        let progress = self.progress();
        let schedule = &mut self.schedule;
        if decision.checkpoint || decision.stop {
            schedule.steps_since_checkpoint = 0;
            schedule.last_checkpoint = Instant::now();
            schedule.checkpointed = Some(progress);
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

    /// Metrics (worker 0), the step log (with `fresh`, the freshness of the versions that went
    /// live since the last step, over every worker) and the metrics lines.
    fn report(
        &mut self,
        ctx: &WorkerContext,
        shared: &Shared,
        (rows, loss_sum): (u64, f64),
        fresh: Option<(f64, u32)>,
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
                fresh,
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
}
