//! What a streaming step leaves behind: the model versions it emits to the publish node, the
//! windows it closes, the checkpoint and the offsets it commits; and the loop's last rounds,
//! after which the outputs are flushed and the worker reports.

use millrace_engine::Rounds;

use super::*;

impl StreamWorker {
    /// Emits the step's model versions to the publish node and waits until it has published
    /// them: the next step's message tells every worker when they went live.
    pub(super) async fn publish(&mut self, rounds: &Rounds<StepMsg, ModelVersion>) -> Result<()> {
        if self.versions.is_empty() {
            return Ok(());
        }
        for version in self.versions.drain(..) {
            rounds.emit(version);
            self.emitted += 1;
        }
        let (published, emitted) = (&self.published, self.emitted);
        rounds.until(|| published.reached(emitted)).await;
        if let Some(at) = published.take()? {
            self.freshness.published_at = Some(at);
        }
        Ok(())
    }

    /// Publishes a version when `decision` says so, closes the windows the watermark passed,
    /// and on a checkpoint step writes the checkpoint (worker 0) and then commits the offsets.
    pub(super) fn publish_and_checkpoint(
        &mut self,
        ctx: &WorkerContext,
        shared: &Shared,
        decision: &Decision,
        all: &[StepMsg],
        positions: BTreeMap<i32, i64>,
        partition_events: BTreeMap<i32, i64>,
    ) -> Result<()> {
        let spec = &shared.plan.spec;
        // A version holds what was trained since the last one: an idle job publishes nothing
        // (the first version of a run, a resumed one's too, is published once anything was
        // ever trained).
        let trained = self.counters.trained;
        if decision.publish && trained > 0 && self.schedule.published_at_trained != Some(trained) {
            self.schedule.published_at_trained = Some(trained);
            self.counters.version += 1;
            if ctx.index == 0 {
                let version = self.counters.version;
                let trainers =
                    std::iter::once(&self.trainer).chain(self.branches.iter().map(|b| &b.trainer));
                for (model, trainer) in trainers.enumerate() {
                    self.versions.push(ModelVersion {
                        model,
                        version,
                        weights: trainer.try_parameters()?,
                    });
                }
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
                format: crate::streaming::checkpoint::FORMAT,
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
                branches: (self.branches.iter())
                    .map(BranchRun::state)
                    .collect::<Result<_>>()?,
                features: self.features.as_ref().map(|stage| {
                    crate::streaming::FeaturesCheckpoint {
                        views: all.iter().filter_map(|m| m.features.clone()).collect(),
                        table_version: stage.table_version(),
                        kafka_table: stage.kafka_table_state(),
                    }
                }),
            };
            if let Some(out) = &self.windows.output {
                out.flush()?;
            }
            shared.checkpoint(&checkpoint)?;
            // Only now may Kafka learn these offsets: a checkpoint holds them.
            self.input.source.commit(&positions)?;
        }
        Ok(())
    }

    /// The loop's last rounds: one tells every worker when the final version went live, one
    /// more carries the delays no step sent; then the outputs are flushed and the worker
    /// reports.
    pub(super) async fn finish(
        mut self,
        rounds: &Rounds<StepMsg, ModelVersion>,
        ctx: &WorkerContext,
    ) -> Result<WorkerOutcome> {
        let mut last = StepMsg::default();
        if ctx.index == 0 {
            last.published_at_ms = self.freshness.published_at.take();
        }
        let all = rounds.all_gather(last).await?;
        if let Some(at) = all.first().and_then(|m| m.published_at_ms) {
            self.freshness.went_live(at);
        }
        // One more exchange for the delays no step sent (the final version's among them),
        // logged on a line of their own (no rows are trained now).
        let tail = StepMsg {
            freshness: self.freshness.take_new(),
            ..StepMsg::default()
        };
        let tails = rounds.all_gather(tail).await?;
        if let Some(log) = self.log.as_mut().filter(|_| ctx.index == 0) {
            let parts = tails.iter().filter_map(|m| m.freshness.as_ref());
            log.step(
                self.counters.step,
                0,
                0.0,
                &self.prequential,
                self.classification,
                DelaySummary::merge(parts),
            )?;
        }
        self.flush_outputs()?;
        for sink in &mut self.input.sinks {
            sink.finish()?;
        }
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
            branches: (self.branches.iter())
                .map(|b| BranchOutcome {
                    name: b.spec.name.clone(),
                    prequential: b.prequential.metrics(self.classification),
                    parameter_checksum: b.checksum(),
                })
                .collect(),
            train_s: self.started.elapsed().as_secs_f64(),
            parameter_checksum: crate::train::parameter_checksum(&self.trainer.parameters()),
        })
    }

    /// Waits until the dead letters, predictions, metrics and Kafka sink rows this worker sent are
    /// acknowledged.
    pub(super) fn flush_outputs(&mut self) -> Result<()> {
        if let Some((producer, _)) = &self.input.dlq {
            producer.flush(Duration::from_secs(30))?;
        }
        self.outputs.flush()?;
        for sink in &mut self.input.sinks {
            sink.flush()?;
        }
        Ok(())
    }
}
