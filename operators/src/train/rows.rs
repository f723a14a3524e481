//! A worker's training rows, indexed once for every run that trains on them: each row's content
//! hash (which places it in every epoch's order), the fingerprint of all workers' rows, and the
//! epoch orders made so far. The main model, each branch and each tune trial (many short runs,
//! one per report) share one index instead of hashing and sorting the rows again.
//!
//! Rows past `train.memory_budget` are on disk instead ([`Buckets`]): an epoch streams them
//! back bucket by bucket, in the same order.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::mpsc::Receiver;

use millrace_engine::timely::worker::Worker;
use millrace_engine::{Rounds, WorkerContext, run_rounds};
use millrace_ml::preprocess::{Features, Targets};

use super::buffer::BatchBuffer;
use super::message::{JobMsg, exchange};
use super::order::{epoch_order, mix, row_hashes};
use super::position::DataFingerprint;
use super::spill::{Buckets, Loaded};
use crate::{Error, Result};

/// The epoch orders kept (each 16 bytes a row); the oldest is dropped first.
const ORDERS_KEPT: usize = 4;

/// A worker's rows in one epoch's global order: (key, row index), by key.
type Order = Rc<[(u64, u32)]>;

/// One worker's training rows and their index.
pub struct TrainRows<'a> {
    storage: Storage<'a>,
    pub(super) dim: usize,
    pub(super) data: DataFingerprint,
}

enum Storage<'a> {
    Memory {
        features: &'a Features,
        targets: &'a Targets,
        hashes: Vec<u64>,
        orders: RefCell<Vec<(u64, Order)>>,
    },
    /// On disk, bucketed for the order of the last seed asked for (`None` only while being
    /// bucketed again).
    Spilled(RefCell<Option<Buckets>>),
}

impl<'a> TrainRows<'a> {
    /// Indexes this worker's `features`; every worker calls this at the same point (the
    /// fingerprint is gathered from all of them).
    pub fn new(worker: &mut Worker, ctx: &WorkerContext, features: &'a Features) -> Result<Self> {
        run_rounds(worker, ctx, "train/data", |rounds| async move {
            Self::in_loop(&rounds, features).await
        })?
    }

    /// [`TrainRows::new`] in a step loop that does more (the batch job's): the fingerprint is
    /// the loop's next round.
    pub(crate) async fn in_loop(rounds: &Rounds<JobMsg>, features: &'a Features) -> Result<Self> {
        let dim = features.x.len().checked_div(features.rows).unwrap_or(0);
        let targets = features
            .y
            .as_ref()
            .ok_or_else(|| Error::Internal("training features have no labels".into()))?;
        let hashes = row_hashes(&features.x, dim, targets);
        let local_hash = hashes.iter().fold(0u64, |sum, h| sum.wrapping_add(mix(*h)));
        let data = fingerprint(rounds, features.rows as u64, local_hash).await?;
        Ok(TrainRows {
            storage: Storage::Memory {
                features,
                targets,
                hashes,
                orders: RefCell::new(Vec::new()),
            },
            dim,
            data,
        })
    }

    /// This worker's rows spilled to disk; every worker calls this (or [`TrainRows::new`]) at
    /// the same point.
    #[cfg(test)]
    pub(crate) fn spilled(
        worker: &mut Worker,
        ctx: &WorkerContext,
        buckets: Buckets,
    ) -> Result<TrainRows<'static>> {
        run_rounds(worker, ctx, "train/data", |rounds| async move {
            TrainRows::spilled_in_loop(&rounds, buckets).await
        })?
    }

    /// [`TrainRows::spilled`] in a step loop that does more.
    pub(crate) async fn spilled_in_loop(
        rounds: &Rounds<JobMsg>,
        buckets: Buckets,
    ) -> Result<TrainRows<'static>> {
        let data = fingerprint(rounds, buckets.rows(), buckets.hash_sum()).await?;
        Ok(TrainRows {
            dim: buckets.dim(),
            storage: Storage::Spilled(RefCell::new(Some(buckets))),
            data,
        })
    }

    /// Training rows over all workers.
    pub fn total(&self) -> u64 {
        self.data.rows
    }

    /// This worker's rows in the global order of an epoch seeded `seed`, from key `from` on.
    pub(crate) fn epoch(&self, seed: u64, from: u128) -> Result<EpochRows<'_>> {
        match &self.storage {
            Storage::Memory {
                features,
                targets,
                hashes,
                orders,
            } => {
                let order = {
                    let mut orders = orders.borrow_mut();
                    match orders.iter().find(|(s, _)| *s == seed) {
                        Some((_, order)) => Rc::clone(order),
                        None => {
                            let order: Order = epoch_order(hashes, seed).into();
                            if orders.len() == ORDERS_KEPT {
                                orders.remove(0);
                            }
                            orders.push((seed, Rc::clone(&order)));
                            order
                        }
                    }
                };
                let next = order.partition_point(|(key, _)| u128::from(*key) < from);
                Ok(EpochRows::Memory {
                    order,
                    next,
                    x: &features.x,
                    dim: self.dim,
                    targets,
                })
            }
            Storage::Spilled(cell) => {
                let mut slot = cell.borrow_mut();
                let buckets = slot
                    .take()
                    .ok_or_else(|| Error::Internal("spilled rows lost while re-bucketed".into()))?;
                let buckets = if buckets.seed() == seed {
                    buckets
                } else {
                    buckets.rebucket(seed)?
                };
                let stream = buckets.stream(from);
                *slot = Some(buckets);
                Ok(EpochRows::Spilled {
                    stream,
                    current: None,
                    next: 0,
                    skip: Some(from),
                    dim: self.dim,
                })
            }
        }
    }
}

/// Gathers every worker's row count and hash sum into the data's fingerprint.
async fn fingerprint(
    rounds: &Rounds<JobMsg>,
    rows: u64,
    local_hash: u64,
) -> Result<DataFingerprint> {
    let parts = exchange(rounds, JobMsg::Data(rows, local_hash), |m| match m {
        JobMsg::Data(rows, hash) => Some((rows, hash)),
        _ => None,
    })
    .await?;
    Ok(DataFingerprint {
        rows: parts.iter().map(|p| p.0).sum(),
        hash: parts.iter().fold(0u64, |sum, p| sum.wrapping_add(p.1)),
    })
}

/// An epoch's rows on this worker, handed out step by step in key order.
pub(crate) enum EpochRows<'r> {
    Memory {
        order: Order,
        next: usize,
        x: &'r [f32],
        dim: usize,
        targets: &'r Targets,
    },
    Spilled {
        stream: Receiver<Result<Loaded>>,
        current: Option<Loaded>,
        next: usize,
        /// The key to start from, applied to the first bucket read.
        skip: Option<u128>,
        dim: usize,
    },
}

impl EpochRows<'_> {
    /// Gathers into `buf` the rows whose key is below `end` (the end of the step's slice) and
    /// not handed out yet; returns how many.
    pub(crate) fn next_step(&mut self, end: u128, buf: &mut BatchBuffer) -> Result<usize> {
        buf.clear();
        match self {
            EpochRows::Memory {
                order,
                next,
                x,
                dim,
                targets,
            } => {
                let lo = *next;
                while *next < order.len() && u128::from(order[*next].0) < end {
                    *next += 1;
                }
                buf.extend(x, *dim, targets, &order[lo..*next]);
                Ok(*next - lo)
            }
            EpochRows::Spilled {
                stream,
                current,
                next,
                skip,
                dim,
            } => {
                let mut taken = 0;
                loop {
                    if current.is_none() {
                        // No bucket left: the epoch's last rows were handed out.
                        let Ok(loaded) = stream.recv() else {
                            return Ok(taken);
                        };
                        let loaded = loaded?;
                        *next = match skip.take() {
                            Some(from) => loaded
                                .order
                                .partition_point(|(key, _)| u128::from(*key) < from),
                            None => 0,
                        };
                        *current = Some(loaded);
                    }
                    let bucket = current.as_ref().expect("loaded above");
                    let lo = *next;
                    while *next < bucket.order.len() && u128::from(bucket.order[*next].0) < end {
                        *next += 1;
                    }
                    buf.extend(&bucket.x, *dim, &bucket.targets, &bucket.order[lo..*next]);
                    taken += *next - lo;
                    let exhausted = *next == bucket.order.len();
                    let step_ends_here = end <= bucket.range_end;
                    if exhausted {
                        *current = None;
                    }
                    if !exhausted || step_ends_here {
                        return Ok(taken);
                    }
                }
            }
        }
    }
}
