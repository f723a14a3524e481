//! A worker's rows after ingest: the fit merged over every worker, then this worker's train and
//! evaluation rows encoded with it (the training rows into memory, or, past its share of
//! `train.memory_budget`, into bucket files on disk).

use std::time::Instant;

use millrace_engine::{Batch, ClusterConfig, DeadLetter, Rounds, WorkerContext};
use millrace_ml::preprocess::{Features, FittedPreprocessor, LabelKind};

use super::clock::Marks;
use super::ingest::{Ingested, encode, encode_each};
use super::plan::JobPlan;
use super::run::Shared;
use crate::preprocess::merge_in_worker_order;
use crate::train::spill::{self, BucketWriter, Buckets, Spool};
use crate::train::{JobMsg, exchange};
use crate::{Error, Result};

/// This worker's share of `train.memory_budget` (the process's budget over its workers): half
/// for the raw batches, a sixth for each bucket of spilled rows read back (up to three are in
/// memory at once: the one training, the one read ahead and the one being read).
#[derive(Clone, Copy, Debug)]
pub(super) struct MemoryShare(u64);

impl MemoryShare {
    pub(super) fn of(spec: &crate::spec::PipelineSpec, cluster: &ClusterConfig) -> Self {
        let budget = (spec.train.memory_budget.map(|b| b.0)).unwrap_or_else(spill::default_budget);
        MemoryShare(budget / cluster.workers.max(1) as u64)
    }

    pub(super) fn raw_bytes(self) -> u64 {
        self.0 / 2
    }

    fn bucket_bytes(self) -> u64 {
        (self.0 / 6).max(1 << 20)
    }
}

/// A worker's encoded training rows: in memory, or spilled to disk when the raw batches did
/// not fit in its share of the memory budget.
pub(super) enum EncodedTrain {
    Memory(Features),
    Spilled(Buckets),
}

/// This worker's rows, encoded with the preprocessing every worker shares.
pub(super) struct Encoded {
    pub(super) fitted: FittedPreprocessor,
    pub(super) train: EncodedTrain,
    pub(super) eval: Features,
    /// The raw evaluation batches, kept when predictions are written.
    pub(super) eval_batches: Vec<Batch>,
    pub(super) dead: Vec<DeadLetter>,
}

/// Fits the preprocessing — every worker's statistics merged in worker order, so every worker
/// gets the same fit; a resumed run takes the checkpoint's fit — and encodes this worker's
/// train and evaluation rows with it.
pub(super) async fn fit_and_encode(
    rounds: &Rounds<JobMsg>,
    ctx: &WorkerContext,
    plan: &JobPlan,
    shared: &Shared,
    mut ingested: Ingested,
    memory: MemoryShare,
    marks: &mut Marks,
) -> Result<Encoded> {
    if let Some(e) = ingested.error.take() {
        return Err(e);
    }
    let local = ingested
        .fit
        .take()
        .ok_or_else(|| Error::Internal("fit state missing".into()))?;
    let resumed = (shared.resume.as_ref().map(|c| &c.preprocess))
        .or(shared.tune.as_ref().map(|t| &t.preprocess));
    let fitted = match resumed {
        Some(fit) => fit.clone(),
        None => {
            let states = exchange(rounds, JobMsg::Fit(Box::new(local)), |m| match m {
                JobMsg::Fit(state) => Some(*state),
                _ => None,
            })
            .await?;
            merge_in_worker_order(states)?.finish()?
        }
    };
    marks.fitted = Instant::now();
    let mut dead = std::mem::take(&mut ingested.dead);
    let eval_batches = if plan.spec.output.predictions.is_some() {
        ingested.eval.clone()
    } else {
        Vec::new()
    };
    let train = encode_train(&fitted, plan, ctx, ingested.train, memory, &mut dead)?;
    let eval = encode(
        &fitted,
        ingested.eval,
        "preprocess/encode/eval",
        ctx,
        &mut dead,
    )?;
    marks.encoded = Instant::now();
    Ok(Encoded {
        fitted,
        train,
        eval,
        eval_batches,
        dead,
    })
}

/// Encodes the training batches: into memory, or, when they were spilled, into bucket files
/// for the order of the first epoch.
fn encode_train(
    fitted: &FittedPreprocessor,
    plan: &JobPlan,
    ctx: &WorkerContext,
    batches: Spool,
    memory: MemoryShare,
    dead: &mut Vec<DeadLetter>,
) -> Result<EncodedTrain> {
    const OP: &str = "preprocess/encode";
    let Some(dir) = batches.dir() else {
        let batches = batches.into_memory().unwrap_or_default();
        return Ok(EncodedTrain::Memory(encode(
            fitted, batches, OP, ctx, dead,
        )?));
    };
    let classes = fitted.label_kind() == LabelKind::Classification;
    let rows = batches.rows() as u64;
    let seed = plan.spec.train.seed;
    let mut writer = BucketWriter::new(
        dir,
        seed,
        fitted.input_dim(),
        classes,
        rows,
        memory.bucket_bytes(),
    );
    encode_each(fitted, batches.drain()?, OP, ctx, dead, |f| {
        let y =
            (f.y.as_ref()).ok_or_else(|| Error::Internal("training rows have no labels".into()))?;
        writer.add(&f.x, y, None)
    })?;
    let buckets = writer.finish()?;
    tracing::info!(
        worker = ctx.index,
        rows = buckets.rows(),
        "training rows spilled to disk in buckets; each epoch reads them back in order"
    );
    Ok(EncodedTrain::Spilled(buckets))
}
