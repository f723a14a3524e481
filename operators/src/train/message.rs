//! What a worker sends in a round of a batch job's step loop: the job is one dataflow whose step
//! node carries, round by round, the preprocessing's statistics, the training data's fingerprint,
//! each training step's gradient, each evaluation's predictions, the final checksums and the
//! job's counters.

use millrace_engine::Rounds;
use millrace_ml::preprocess::FitState;
use serde::{Deserialize, Serialize};

use crate::evaluate::Shard;
use crate::{Error, Result};

/// One operator's counters on one worker: (operator, worker, [batches in, rows in, batches out,
/// rows out, dead letters], busy seconds).
pub(crate) type OperatorRow = (String, usize, [u64; 5], f64);

/// A worker's message of one round of the step loop.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum JobMsg {
    /// A step: [gradient of the summed loss..., loss sum, rows, checkpoint?].
    Step(Vec<f32>),
    /// An evaluation: this worker's predictions and labels.
    Eval(Shard),
    /// The end of a training run: the checksum of this replica's parameters.
    Checksum(u64),
    /// The preprocessing's statistics over this worker's training rows.
    Fit(Box<FitState>),
    /// This worker's training rows: how many, and the sum of their hashes.
    Data(u64, u64),
    /// A count every worker adds up (a tune run's evaluation rows).
    Count(u64),
    /// This worker's operator counters and the job's counts, for the summary.
    Totals(Vec<OperatorRow>, [u64; 4]),
}

impl JobMsg {
    fn kind(&self) -> &'static str {
        match self {
            JobMsg::Step(_) => "a step's gradient",
            JobMsg::Eval(_) => "an evaluation",
            JobMsg::Checksum(_) => "a checksum",
            JobMsg::Fit(_) => "the preprocessing's statistics",
            JobMsg::Data(..) => "the training data's fingerprint",
            JobMsg::Count(_) => "a count",
            JobMsg::Totals(..) => "the job's counters",
        }
    }
}

/// Every worker's message of the next round, each taken apart by `take` (None: another kind of
/// message, which means the workers' loops went apart).
pub(crate) async fn exchange<T>(
    rounds: &Rounds<JobMsg>,
    message: JobMsg,
    take: impl Fn(JobMsg) -> Option<T>,
) -> Result<Vec<T>> {
    let expected = message.kind();
    let all = rounds.all_gather(message).await?;
    all.into_iter()
        .enumerate()
        .map(|(w, m)| {
            let kind = m.kind();
            take(m).ok_or_else(|| {
                Error::Internal(format!(
                    "step loop round {}: worker {w} sent {kind} where {expected} was due",
                    rounds.rounds()
                ))
            })
        })
        .collect()
}
