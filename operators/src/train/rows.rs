//! A worker's training rows, indexed once for every run that trains on them: each row's content
//! hash (which places it in every epoch's order), the fingerprint of all workers' rows, and the
//! epoch orders made so far. The main model, each branch and each tune trial (many short runs,
//! one per report) share one index instead of hashing and sorting the rows again.

use std::cell::RefCell;
use std::rc::Rc;

use millrace_engine::timely::worker::Worker;
use millrace_engine::{Collective, WorkerContext};
use millrace_ml::preprocess::{Features, Targets};

use super::order::{epoch_order, mix, row_hashes};
use super::position::DataFingerprint;
use crate::{Error, Result};

/// The epoch orders kept (each 16 bytes a row); the oldest is dropped first.
const ORDERS_KEPT: usize = 4;

/// A worker's rows in one epoch's global order: (key, row index), by key.
type Order = Rc<[(u64, u32)]>;

/// One worker's training rows and their index.
pub struct TrainRows<'a> {
    pub(super) features: &'a Features,
    pub(super) dim: usize,
    pub(super) targets: &'a Targets,
    pub(super) data: DataFingerprint,
    hashes: Vec<u64>,
    orders: RefCell<Vec<(u64, Order)>>,
}

impl<'a> TrainRows<'a> {
    /// Indexes this worker's `features`; every worker calls this at the same point (the
    /// fingerprint is gathered from all of them).
    pub fn new(worker: &mut Worker, ctx: &WorkerContext, features: &'a Features) -> Result<Self> {
        let dim = features.x.len().checked_div(features.rows).unwrap_or(0);
        let targets = features
            .y
            .as_ref()
            .ok_or_else(|| Error::Internal("training features have no labels".into()))?;
        let hashes = row_hashes(&features.x, dim, targets);
        let local_hash = hashes.iter().fold(0u64, |sum, h| sum.wrapping_add(mix(*h)));
        let mut channel = Collective::<(u64, u64)>::new(worker, "train/data");
        let parts = channel.all_gather(worker, ctx, (features.rows as u64, local_hash))?;
        let data = DataFingerprint {
            rows: parts.iter().map(|p| p.0).sum(),
            hash: parts.iter().fold(0u64, |sum, p| sum.wrapping_add(p.1)),
        };
        Ok(TrainRows {
            features,
            dim,
            targets,
            data,
            hashes,
            orders: RefCell::new(Vec::new()),
        })
    }

    /// Training rows over all workers.
    pub fn total(&self) -> u64 {
        self.data.rows
    }

    /// This worker's rows in the global order of an epoch seeded `seed`.
    pub(super) fn order(&self, seed: u64) -> Order {
        let mut orders = self.orders.borrow_mut();
        if let Some((_, order)) = orders.iter().find(|(s, _)| *s == seed) {
            return Rc::clone(order);
        }
        let order: Order = epoch_order(&self.hashes, seed).into();
        if orders.len() == ORDERS_KEPT {
            orders.remove(0);
        }
        orders.push((seed, Rc::clone(&order)));
        order
    }
}
