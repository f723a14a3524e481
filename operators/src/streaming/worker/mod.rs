//! One worker of a streaming job: poll its partitions, decode, preprocess, score the records with
//! the current model (prequential), compute the gradient of its share, exchange one message with
//! every other worker, apply the summed gradient, and — on the steps worker 0 chose — publish a
//! model version or write a checkpoint and commit its offsets.
//!
//! Every decision that must be the same everywhere (publish, checkpoint, stop) is made by worker 0
//! before a step's exchange and travels in its message, so all workers act on the same step.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use millrace_connectors::kafka::{KafkaProducer, KafkaSource, RecordDecoder};
use millrace_engine::timely::worker::Worker;
use millrace_engine::{
    Collective, DeadLetter, Rounds, WorkerContext, row_to_json, run_rounds_into,
};
use millrace_ml::Replica;
use millrace_ml::preprocess::{FitState, FittedPreprocessor, Targets};
use millrace_ml::trainer::TargetsRef;
use serde::{Deserialize, Serialize};

use super::checkpoint::Checkpoint;
use super::features::FeatureStage;
use super::fit::{fit_on_dataset, share, warm_up};
use super::input::{Input, Pending};
use super::late::EventTime;
use super::metrics::Totals;
use super::outputs::Outputs;
use super::prequential::{PrequentialState, StepScore, score};
use super::publish::{ModelVersion, Published, Publisher, publish_node};
use super::run::{BranchOutcome, Shared, StepLog, WorkerOutcome};
use super::watermark::{PartitionWatermarks, WorkerMark, job_watermark};
use super::window_output::WindowOutput;
use crate::preprocess::CompiledSql;
use crate::streaming::window::{LatePolicy, WindowResult, WindowState, Windower};
use crate::train::apply_summed_gradient;
use crate::{Error, Result};
use millrace_engine::features::FeatureState;

mod branches;
mod commit;
mod freshness;
mod open;
mod step;

use branches::{BranchPart, BranchRun};
use freshness::{DelaySummary, Freshness};

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
    /// Each `[[branch]]`'s gradient and scores of this worker's rows (empty without rows).
    pub(super) branches: Vec<BranchPart>,
    /// On checkpoint steps: this worker's `[features]` view state.
    pub(super) features: Option<FeatureState>,
    /// Worker 0: the feature table's version every worker moves to after this step.
    pub(super) table_version: Option<i64>,
    /// The freshness delays of this worker's records in the versions that went live since its
    /// previous message (worker 0 logs their merge).
    pub(super) freshness: Option<DelaySummary>,
}

/// Worker 0's decisions for a step, as every worker acts on them.
#[derive(Clone, Copy, Debug)]
struct Decision {
    publish: bool,
    checkpoint: bool,
    stop: bool,
    end_of_input: bool,
    published_at_ms: Option<i64>,
}

impl Decision {
    /// The decisions worker 0's message `msg` carries.
    fn of(msg: &StepMsg) -> Self {
        Decision {
            publish: msg.publish,
            checkpoint: msg.checkpoint,
            stop: msg.stop,
            end_of_input: msg.end_of_input,
            published_at_ms: msg.published_at_ms,
        }
    }
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
    shared: &Arc<Shared>,
) -> Result<WorkerOutcome> {
    let mut steps = Collective::<StepMsg>::new(worker, "stream/steps");
    let mut fits = Collective::<FitState>::new(worker, "stream/fit");
    let mut job = StreamWorker::open(worker, ctx, shared, &mut steps, &mut fits)?;
    // The steps run as the step node of a loop dataflow, one round per step (and two to finish);
    // the model versions it emits go to the publish node downstream of it.
    let publish = publish_node(
        job.publishers(ctx, shared),
        Rc::clone(&job.published),
        ctx.metrics.operator("stream/publish", ctx.index),
    );
    let (ctx_in, shared_in) = (ctx.clone(), Arc::clone(shared));
    run_rounds_into(
        worker,
        ctx,
        "stream/step-loop",
        publish,
        move |rounds: Rounds<StepMsg, ModelVersion>| async move {
            let (ctx, shared) = (&ctx_in, &*shared_in);
            loop {
                if ctx.aborted() {
                    return Err(Error::Engine(millrace_engine::Error::Aborted));
                }
                let mut msg = job.local_step(ctx, shared)?;
                if ctx.index == 0 {
                    job.decide(shared, &mut msg);
                }
                let all = rounds.all_gather(msg).await?;
                let go_on = job.apply_step(ctx, shared, &all)?;
                job.publish(&rounds).await?;
                if !go_on {
                    break;
                }
                job.advance_features(&rounds, ctx, &all).await?;
            }
            job.finish(&rounds, ctx).await
        },
    )?
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
    /// Records trained (over the run, resumed ones included) when this run last published.
    published_at_trained: Option<u64>,
    steps_since_checkpoint: u64,
    idle_since: Option<Instant>,
    /// Steps in a row in which no worker read a record: the polls wait longer (see
    /// [`idle_poll_timeout`]).
    idle_steps: u32,
    /// The job's progress when the last checkpoint was decided (or resumed from): a periodic
    /// checkpoint is skipped while nothing moved since.
    checkpointed: Option<Progress>,
}

/// What a checkpoint would capture that moves: records read, trained, dead-lettered and late,
/// and the watermark. An idle job's state does not change while these stand still.
type Progress = (u64, u64, u64, u64, Option<i64>);

/// The longest an idle job's poll waits for a message (a message that arrives ends the wait).
const IDLE_POLL_CAP: Duration = Duration::from_millis(50);

/// How long a poll waits: `poll_timeout_ms`, doubled with every step in a row in which no worker
/// read a record, up to [`IDLE_POLL_CAP`] (or `poll_timeout_ms` when that is longer). An idle job
/// then steps 20 times a second instead of 200, and a record that arrives waits at most the cap
/// for the other workers' polls.
fn idle_poll_timeout(poll_timeout_ms: u64, idle_steps: u32) -> Duration {
    let base = Duration::from_millis(poll_timeout_ms);
    let grown = base.saturating_mul(1u32 << idle_steps.min(8));
    grown.min(IDLE_POLL_CAP.max(base))
}

/// Event-time windows: this worker's open windows, worker 0's output, and the partial
/// aggregates closed after the previous step (sent with the next one).
struct Windows {
    windower: Option<Windower>,
    output: Option<WindowOutput>,
    closed: Vec<WindowResult>,
}

/// One worker's state across the steps of a streaming job.
struct StreamWorker {
    input: Input,
    pending: Pending,
    counters: Counters,
    fitted: FittedPreprocessor,
    trainer: Replica,
    prequential: PrequentialState,
    /// Worker 0: the model versions of the last step, for the publish node; versions emitted so
    /// far, and what the node says of them.
    versions: Vec<ModelVersion>,
    emitted: u64,
    published: Rc<Published>,
    /// The `[[branch]]` models trained on the same records.
    branches: Vec<BranchRun>,
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
    /// `[features]`: the view the records wait in for their features, and the records it
    /// released after the previous step (trained in this one).
    features: Option<FeatureStage>,
    released: Vec<crate::streaming::input::Prepared>,
    /// The view's state taken before the end-of-input drain, for the stop's checkpoint.
    drained: Option<FeatureState>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_job_polls_longer_up_to_the_cap() {
        let ms = |steps| idle_poll_timeout(5, steps).as_millis();
        assert_eq!(
            [ms(0), ms(1), ms(2), ms(3), ms(4), ms(30)],
            [5, 10, 20, 40, 50, 50]
        );
        // A configured timeout above the cap is kept.
        assert_eq!(idle_poll_timeout(200, 3).as_millis(), 200);
    }
}
