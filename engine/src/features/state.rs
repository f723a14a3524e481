//! A feature view's state in a checkpoint: every input's updates, compacted to the view's frontier.
//!
//! A differential collection is a function of its inputs, so the inputs' updates, with every time
//! before the frontier advanced to it and the updates that cancel out removed, rebuild arrangements
//! that answer every time at or after the frontier exactly as the uninterrupted ones do: the table as
//! it stands, the events still inside a window (those that left it cancel: each was inserted at its
//! time and retracted when its window passed), and the events still waiting for their features.

use differential_dataflow::consolidation::consolidate_updates;
use differential_dataflow::input::InputSession;
use serde::{Deserialize, Serialize};

use super::running::{Running, Shared};
use super::value::Value;

/// A row of values.
pub type Row = Vec<Value>;

/// The updates one input received: (data, time, diff).
type Updates<D> = Vec<(D, u64, isize)>;

/// What a worker's inputs hold at a checkpoint. A job's state is every worker's; a restore on any
/// number of workers deals the updates out again (they are re-keyed inside the dataflow).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FeatureState {
    /// The view the state is of, as [`super::FeatureSpec::describe`] writes it.
    pub view: String,
    /// The view's frontier at the checkpoint (the job's watermark). The waiting events are at or
    /// after it; the table and the windows are compacted to the millisecond before it (states
    /// written before that was so are compacted to it: restored, their features are served once
    /// the frontier has moved on).
    pub frontier: u64,
    /// The table: (key, row).
    pub table: Updates<(Value, Row)>,
    /// Events waiting for their features: (key, (event time, row)).
    pub pending: Updates<(Value, (u64, Row))>,
    /// Per window, in the view's window order: (key, (event time, aggregate inputs)). For an
    /// all-time window, only the events not yet folded into `running`.
    pub windows: Vec<Updates<(Value, (u64, Row))>>,
    /// Per window: for an all-time one, each key's running values (empty for the others).
    #[serde(default)]
    pub running: Vec<Vec<(Value, Vec<Running>)>>,
}

impl FeatureState {
    /// Updates held, over all inputs.
    pub fn len(&self) -> usize {
        self.table.len()
            + self.pending.len()
            + self.windows.iter().map(Vec::len).sum::<usize>()
            + self.running.iter().map(Vec::len).sum::<usize>()
    }

    /// True when no input holds an update.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An input session that remembers what it was given, so that it can be written to a checkpoint.
pub(super) struct Logged<D: differential_dataflow::ExchangeData> {
    pub(super) session: InputSession<u64, D, isize>,
    /// Updates given one by one.
    log: Updates<D>,
    /// Data inserted at a time and retracted at a later one (or never), kept once rather than as
    /// two updates: (data, from, until).
    lived: Vec<(D, u64, Option<u64>)>,
    /// Log length after the last compaction: the log is compacted again when it doubles.
    compacted_len: usize,
    /// For an all-time window: its operator, whose running values hold every event before
    /// `folded_before`, which the log then drops.
    folded: Option<Shared>,
}

impl<D: differential_dataflow::ExchangeData> Logged<D> {
    pub(super) fn new(session: InputSession<u64, D, isize>) -> Self {
        Logged {
            session,
            log: Vec::new(),
            lived: Vec::new(),
            compacted_len: 0,
            folded: None,
        }
    }

    /// The input of an all-time window whose operator is `folded`.
    pub(super) fn folded_by(session: InputSession<u64, D, isize>, folded: Shared) -> Self {
        Logged {
            folded: Some(folded),
            ..Logged::new(session)
        }
    }

    /// Sends `data` with `diff` at `time` (at or after the session's time).
    pub(super) fn update_at(&mut self, data: D, time: u64, diff: isize) {
        self.session.update_at(data.clone(), time, diff);
        self.log.push((data, time, diff));
    }

    /// Inserts `data` at `from` and retracts it at `until` (never, when `None`).
    pub(super) fn insert_until(&mut self, data: D, from: u64, until: Option<u64>) {
        if let Some(until) = until {
            self.session.update_at(data.clone(), until, -1);
        }
        self.session.update_at(data.clone(), from, 1);
        self.lived.push((data, from, until));
    }

    /// Inserts `data` at `from`, logged as retracted at `until`, for an input whose operator
    /// lets data go by itself (a checkpoint keeps it only until then).
    pub(super) fn insert_logged_until(&mut self, data: D, from: u64, until: u64) {
        self.session.update_at(data.clone(), from, 1);
        self.lived.push((data, from, Some(until)));
    }

    /// Moves the session to `time` and releases what it holds to the dataflow. The logs are
    /// compacted to `time` when they have doubled since their last compaction.
    pub(super) fn advance_to(&mut self, time: u64) {
        self.session.advance_to(time);
        self.session.flush();
        if self.log.len() + self.lived.len() > 2 * self.compacted_len.max(1024) {
            self.compact(time);
        }
    }

    fn compact(&mut self, frontier: u64) {
        // Data retracted by the frontier is gone for good.
        self.lived
            .retain(|(_, _, until)| until.is_none_or(|u| u > frontier));
        match &self.folded {
            // Folded events are in the running values; the others keep their own times (which
            // tell later whether they are folded).
            Some(folded) => {
                let before = folded.borrow().folded_before;
                self.log.retain(|(_, t, _)| *t >= before);
                self.lived.retain(|(_, from, _)| *from >= before);
            }
            None => {
                for (_, t, _) in self.log.iter_mut() {
                    *t = (*t).max(frontier);
                }
                consolidate_updates(&mut self.log);
            }
        }
        self.compacted_len = self.log.len() + self.lived.len();
    }

    /// The updates given, compacted to `frontier`.
    pub(super) fn state(&mut self, frontier: u64) -> Updates<D> {
        self.compact(frontier);
        let mut log = self.log.clone();
        for (data, from, until) in &self.lived {
            if let Some(until) = until {
                log.push((data.clone(), *until, -1));
            }
            log.push((data.clone(), *from, 1));
        }
        for (_, t, _) in log.iter_mut() {
            *t = (*t).max(frontier);
        }
        consolidate_updates(&mut log);
        log
    }

    /// For an all-time window: each key's running values, by key.
    pub(super) fn running(&self) -> Vec<(Value, Vec<Running>)> {
        let Some(folded) = &self.folded else {
            return Vec::new();
        };
        let mut keys: Vec<(Value, Vec<Running>)> = (folded.borrow().keys.iter())
            .map(|(k, r)| (k.clone(), r.clone()))
            .collect();
        keys.sort_by(|a, b| a.0.cmp(&b.0));
        keys
    }
}

/// The updates of worker `index` of `peers` when `parts` (every old worker's updates, in worker
/// order) are dealt out again.
pub(super) fn deal<D: Clone>(
    parts: impl IntoIterator<Item = Vec<(D, u64, isize)>>,
    index: usize,
    peers: usize,
) -> Vec<(D, u64, isize)> {
    parts
        .into_iter()
        .flatten()
        .enumerate()
        .filter(|(i, _)| i % peers == index)
        .map(|(_, u)| u)
        .collect()
}
