//! Incremental features on differential dataflow: a stream of events joined with a table on a key,
//! plus per-key aggregates over event-time windows, each event seeing both as of its own time.
//!
//! A [`FeatureView`] is one differential dataflow on a worker. Every worker of a job builds it (in
//! the same order relative to its other dataflows), feeds it its share of the table and of the
//! events, and advances it to the job's watermark; differential exchanges the updates by key, so a
//! row comes out on the worker that owns its key.
//!
//! - **Tables are collections.** A table update is a difference (`+1` for a new row, `-1` for a
//!   removed one) at a time: a new table version is the rows it removed and the rows it added, not a
//!   reload. Rewritten files whose rows did not change cancel out inside the dataflow.
//! - **Point in time.** An event at time `t` sees the table with every update at or before `t` and
//!   the aggregates over the events of its key in `(t - window, t]`, itself and other events of the
//!   same millisecond included; never a later value, so a table version written after the event
//!   cannot leak into its training row.
//! - **Complete rows only.** An event's row is released once the watermark has passed its time:
//!   then no update at or before it can still arrive.
//! - **Exactly once.** [`FeatureView::state`] is the view's inputs compacted to the watermark
//!   ([`FeatureState`]); [`FeatureView::restore`] rebuilds the same arrangements from every old
//!   worker's state on any number of workers.

mod aggregate;
mod dataflow;
mod keyed;
mod running;
mod state;
mod store;
#[cfg(test)]
mod tests;
mod value;

use differential_dataflow::consolidation::consolidate_updates;
use timely::worker::Worker;

pub use aggregate::{AggKind, Aggregate};
pub use running::Running;
pub use state::{FeatureState, Row};
pub use store::FeatureStore;
pub use value::Value;

use crate::{Error, Result, WorkerContext};

/// What a view computes: the table's value columns and the aggregates, in output order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FeatureSpec {
    /// Names of the table's value columns, in the order of a table row's values.
    pub table_columns: Vec<String>,
    /// The per-key aggregates; each event brings one input value per aggregate.
    pub aggregates: Vec<Aggregate>,
    /// An inner join: an event whose key has no table row as of its time is dropped, not
    /// released with nulls (SQL's `JOIN` against `LEFT JOIN`). The aggregates still see every
    /// event of the key, dropped ones included.
    pub inner_join: bool,
}

impl FeatureSpec {
    /// The feature columns a released row gets, in order: the table's, then the aggregates'.
    pub fn feature_names(&self) -> Vec<String> {
        let aggregates = self.aggregates.iter().map(|a| a.name.clone());
        self.table_columns
            .iter()
            .cloned()
            .chain(aggregates)
            .collect()
    }

    /// The view in one line (`score, tier; n_1s = count over 1000 ms, …`): what a checkpoint's
    /// state must match to be restored into it.
    pub fn describe(&self) -> String {
        let aggregates: Vec<String> = (self.aggregates.iter())
            .map(|a| match a.window_ms {
                Some(w) => format!("{} = {} over {w} ms", a.name, a.kind),
                None => format!("{} = {} over all time", a.name, a.kind),
            })
            .collect();
        let join = if self.inner_join { " (inner join)" } else { "" };
        format!(
            "{}{join}; {}",
            self.table_columns.join(", "),
            aggregates.join(", ")
        )
    }

    /// Checks names (unique, non-empty) and windows (longer than 0 ms).
    pub fn validate(&self) -> Result<()> {
        let names = self.feature_names();
        for (i, name) in names.iter().enumerate() {
            if name.is_empty() {
                return Err(Error::Features(format!("feature {} has no name", i + 1)));
            }
            if names[..i].contains(name) {
                return Err(Error::Features(format!(
                    "two features are named `{name}`: give each column and aggregate its own name"
                )));
            }
        }
        if let Some(a) = self.aggregates.iter().find(|a| a.window_ms == Some(0)) {
            return Err(Error::Features(format!(
                "aggregate `{}` has a window of 0 ms: give it a positive window, or none for all time",
                a.name
            )));
        }
        Ok(())
    }

    /// The distinct windows in order of first use, and for each aggregate (window, position in it).
    pub(crate) fn windows(&self) -> (Vec<Option<u64>>, Vec<(usize, usize)>) {
        let mut windows: Vec<Option<u64>> = Vec::new();
        let mut counts: Vec<usize> = Vec::new();
        let places = self
            .aggregates
            .iter()
            .map(|a| {
                let w = windows
                    .iter()
                    .position(|w| *w == a.window_ms)
                    .unwrap_or_else(|| {
                        windows.push(a.window_ms);
                        counts.push(0);
                        windows.len() - 1
                    });
                counts[w] += 1;
                (w, counts[w] - 1)
            })
            .collect();
        (windows, places)
    }
}

/// Where a view's aggregates sit: grouped by window in the dataflow, in spec order outside.
#[derive(Clone, Debug)]
pub(crate) struct Layout {
    /// The distinct windows, in order of first use.
    windows: Vec<Option<u64>>,
    /// For each aggregate, its window and its position there.
    places: Vec<(usize, usize)>,
    /// Per window, the kinds of its aggregates.
    kinds: Vec<Vec<AggKind>>,
}

impl Layout {
    fn of(spec: &FeatureSpec) -> Self {
        let (windows, places) = spec.windows();
        let kinds: Vec<Vec<AggKind>> = (0..windows.len())
            .map(|w| {
                let of_window = spec
                    .aggregates
                    .iter()
                    .zip(&places)
                    .filter(|(_, p)| p.0 == w);
                of_window.map(|(a, _)| a.kind).collect()
            })
            .collect();
        Layout {
            windows,
            places,
            kinds,
        }
    }
}

/// An event whose row has been released with its features.
#[derive(Clone, Debug, PartialEq)]
pub struct Released {
    /// The event's time (ms).
    pub time: u64,
    /// The event's row, as it was pushed.
    pub row: Row,
    /// Its features, in [`FeatureSpec::feature_names`] order.
    pub features: Row,
}

/// One worker's feature view: see the module documentation.
pub struct FeatureView {
    spec: FeatureSpec,
    layout: Layout,
    built: dataflow::Built,
    frontier: u64,
    store: Option<std::sync::Arc<FeatureStore>>,
}

impl FeatureView {
    /// Builds the view's dataflow on `worker` (every worker must, in the same order).
    pub fn new(worker: &mut Worker, name: &str, spec: FeatureSpec) -> Result<Self> {
        Self::with_store(worker, name, spec, None, 1)
    }

    /// As [`FeatureView::new`], keeping `store` up to date with the current features of this
    /// worker's keys (the workers of a process share one store). With several processes of
    /// `workers_per_process` workers each, every update also goes to the first worker of every
    /// other process, so that every process's store holds every key.
    pub fn with_store(
        worker: &mut Worker,
        name: &str,
        spec: FeatureSpec,
        store: Option<std::sync::Arc<FeatureStore>>,
        workers_per_process: usize,
    ) -> Result<Self> {
        spec.validate()?;
        let layout = Layout::of(&spec);
        let windows: Vec<(Option<u64>, Vec<AggKind>)> = (layout.windows.iter().copied())
            .zip(layout.kinds.iter().cloned())
            .collect();
        let per = workers_per_process.max(1);
        let (index, peers) = (worker.index(), worker.peers());
        let track = store.as_ref().map(|_| dataflow::Track {
            remote: (0..peers)
                .step_by(per)
                .filter(|w| w / per != index / per)
                .collect(),
        });
        let shape = keyed::Shape {
            spec: spec.clone(),
            layout: layout.clone(),
        };
        let built = dataflow::build(worker, name, shape, &windows, track);
        Ok(FeatureView {
            spec,
            layout,
            built,
            frontier: 0,
            store,
        })
    }

    /// What the view computes.
    pub fn spec(&self) -> &FeatureSpec {
        &self.spec
    }

    /// The time before which the view is complete: events before it are late.
    pub fn frontier(&self) -> u64 {
        self.frontier
    }

    /// Adds (`diff` 1) or removes (`diff` -1) a table row at `time`; a time before the frontier
    /// takes effect at the frontier (the view cannot change its past).
    pub fn update_table(&mut self, key: Value, row: Row, time: u64, diff: isize) -> Result<()> {
        if row.len() != self.spec.table_columns.len() {
            return Err(Error::Features(format!(
                "a table row has {} values, the view's table has {} columns ({})",
                row.len(),
                self.spec.table_columns.len(),
                crate::list(&self.spec.table_columns)
            )));
        }
        self.built
            .table
            .update_at((key, row), time.max(self.frontier), diff);
        Ok(())
    }

    /// Adds an event of `key` at `time` with its `row` and one input value per aggregate. An event
    /// before the frontier is late, and an aggregate input of the wrong kind is an error naming the
    /// aggregate: both leave the view unchanged.
    pub fn push_event(&mut self, key: Value, time: u64, row: Row, inputs: Row) -> Result<()> {
        self.check_event(time, &inputs)?;
        let mut per_window = vec![Vec::new(); self.layout.windows.len()];
        for ((w, _), value) in self.layout.places.iter().zip(inputs) {
            per_window[*w].push(value);
        }
        for ((input, window), values) in self
            .built
            .windows
            .iter_mut()
            .zip(&self.layout.windows)
            .zip(per_window)
        {
            let until = window.map(|w| time.saturating_add(w));
            input.insert_until((key.clone(), (time, values)), time, until);
        }
        // It waits for its features for one millisecond of event time (the view ignores its
        // leaving: only a checkpoint needs to know).
        (self.built.pending).insert_logged_until((key, (time, row)), time, time + 1);
        Ok(())
    }

    fn check_event(&self, time: u64, inputs: &[Value]) -> Result<()> {
        if time < self.frontier {
            return Err(Error::Features(format!(
                "late event: its time {time} ms is before the watermark {} ms",
                self.frontier
            )));
        }
        if inputs.len() != self.spec.aggregates.len() {
            return Err(Error::Features(format!(
                "an event brings {} aggregate inputs, the view has {} aggregates",
                inputs.len(),
                self.spec.aggregates.len()
            )));
        }
        let wrong = self
            .spec
            .aggregates
            .iter()
            .zip(inputs)
            .find(|(a, v)| a.kind.numeric() && !v.is_null() && v.as_f64().is_none());
        match wrong {
            Some((a, v)) => Err(Error::Features(format!(
                "aggregate `{}` ({}) needs numbers, the event has {v:?}",
                a.name, a.kind
            ))),
            None => Ok(()),
        }
    }

    /// Moves the frontier to `time` (it never goes back): events before it are complete once
    /// [`FeatureView::complete`] returns.
    pub fn advance_to(&mut self, time: u64) {
        let time = time.max(self.frontier);
        self.frontier = time;
        let built = &mut self.built;
        // A restore comes before the first move: no running values can come in after it.
        for at in built.all_time.iter_mut().flatten() {
            at.restore.take();
        }
        built.table.advance_to(time);
        built.pending.advance_to(time);
        for input in &mut built.windows {
            input.advance_to(time);
        }
    }

    /// Steps `worker` until every time before the frontier is complete (every worker must call it
    /// for the same frontier).
    pub fn complete(&self, worker: &mut Worker, ctx: &WorkerContext) -> Result<()> {
        let probe = self.built.probe.clone();
        let frontier = self.frontier;
        ctx.step_while(worker, || probe.less_than(&frontier))
    }

    /// Whether every time before the frontier is complete: what [`FeatureView::complete`] steps
    /// the worker for, to wait on from a node of another dataflow while the worker steps.
    pub fn is_complete(&self) -> bool {
        !self.built.probe.less_than(&self.frontier)
    }

    /// The events of this worker's keys whose time is complete, with their features, by time and
    /// row; each only once.
    pub fn released(&mut self) -> Vec<Released> {
        self.update_store();
        let probe = &self.built.probe;
        let mut output = self.built.output.borrow_mut();
        // What stays waits in place (an idle job calls this every step with the same few open).
        let mut done: Vec<_> =
            (output.extract_if(.., |(_, time, _)| !probe.less_equal(time))).collect();
        consolidate_updates(&mut done);
        let mut rows = Vec::new();
        for ((time, row, features), at, n) in done {
            // A restored event's leaving comes back too: only its arrival is a row.
            if at != time || n <= 0 {
                continue;
            }
            for _ in 1..n {
                rows.push(Released {
                    time,
                    row: row.clone(),
                    features: features.clone(),
                });
            }
            rows.push(Released {
                time,
                row,
                features,
            });
        }
        rows
    }

    /// Hands the store the updates of this worker's keys whose time is complete.
    fn update_store(&mut self) {
        let (Some(store), Some(current)) = (&self.store, &self.built.current) else {
            return;
        };
        let probe = &self.built.probe;
        let mut current = current.borrow_mut();
        let done: Vec<_> =
            (current.extract_if(.., |(_, time, _)| !probe.less_equal(time))).collect();
        // Each key's slot has one producer, whose updates need no consolidation: the store
        // applies them by time, retractions first.
        store.apply(done, self.frontier.saturating_sub(1));
    }

    /// This worker's share of the view's state: the events waiting for their features (all at or
    /// after the frontier), and the table and the windows compacted to the last complete
    /// millisecond, the time a restore brings them back at: that time is complete as soon as the
    /// restored view reaches the frontier, so its store serves the restored features before any
    /// new event moves the watermark (a job resumed on a quiet stream).
    pub fn state(&mut self) -> FeatureState {
        let frontier = self.frontier;
        let complete = frontier.saturating_sub(1);
        let built = &mut self.built;
        FeatureState {
            view: self.spec.describe(),
            frontier,
            table: built.table.state(complete),
            pending: built.pending.state(frontier),
            windows: built
                .windows
                .iter_mut()
                .map(|w| w.state(complete))
                .collect(),
            running: built.windows.iter().map(|w| w.running()).collect(),
        }
    }

    /// Loads the state every old worker saved (in worker order) into this new view, as worker
    /// `ctx.index` of `ctx.peers`: call it on every worker before anything else is pushed.
    pub fn restore(&mut self, states: &[FeatureState], ctx: &WorkerContext) -> Result<()> {
        let Some(first) = states.first() else {
            return Ok(());
        };
        let here = self.spec.describe();
        if let Some(other) = states.iter().find(|s| s.view != here) {
            return Err(Error::Features(format!(
                "the checkpoint holds the feature view `{}`, this job defines `{here}`: resume with the view the checkpoint was written with, or start from a new checkpoint location",
                other.view
            )));
        }
        let windows = self.layout.windows.len();
        if states.iter().any(|s| {
            s.frontier != first.frontier
                || s.windows.len() != windows
                || !(s.running.is_empty() || s.running.len() == windows)
        }) {
            return Err(Error::Features(format!(
                "the checkpoint's feature state does not fit this view ({} windows here); the checkpoint is damaged",
                self.layout.windows.len()
            )));
        }
        let (index, peers) = (ctx.index, ctx.peers);
        for (w, at) in self.built.all_time.iter_mut().enumerate() {
            let Some(mut restore) = at.as_mut().and_then(|at| at.restore.take()) else {
                continue;
            };
            // The running values hold the events before the frontier: they are of the last
            // complete millisecond, as the table and the windows are.
            restore.advance_to(first.frontier.saturating_sub(1));
            let parts = states.iter().flat_map(|s| s.running.get(w).cloned());
            for (i, key) in parts.flatten().enumerate() {
                if i % peers == index {
                    restore.send(key);
                }
            }
        }
        for (data, t, n) in state::deal(states.iter().map(|s| s.table.clone()), index, peers) {
            self.built.table.update_at(data, t, n);
        }
        for (data, t, n) in state::deal(states.iter().map(|s| s.pending.clone()), index, peers) {
            self.built.pending.update_at(data, t, n);
        }
        for (w, input) in self.built.windows.iter_mut().enumerate() {
            let parts = states.iter().map(|s| s.windows[w].clone());
            for (data, t, n) in state::deal(parts, index, peers) {
                input.update_at(data, t, n);
            }
        }
        self.advance_to(first.frontier);
        Ok(())
    }
}
