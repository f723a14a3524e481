//! The differential dataflow of a feature view.
//!
//! ```text
//! table (key, row) ──reduce: one row per key──┐
//! pending (key, (t, row)) ──left join on key───┴──▶ join aggregates(window 1) ▶ … ▶ released rows
//! window w (key, (t, inputs)) ──reduce (all time: a running fold): aggregates per key──┘
//! ```
//!
//! Times are event-time milliseconds. An event enters `pending` at its time `t` and leaves it at
//! `t + 1`, so it meets the table and the aggregates as they stand at `t` and never a later
//! version. It enters each window's input at `t` and leaves it at `t + w` (never, for all time):
//! at time `t'` a window holds the events with `t' - w < t <= t'`, the event itself included.

use std::cell::RefCell;
use std::rc::Rc;

use differential_dataflow::input::Input;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::InputHandle;
use timely::dataflow::ProbeHandle;
use timely::dataflow::operators::Input as _;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::{Exchange, Inspect, Probe};
use timely::worker::Worker;

use super::aggregate::AggKind;
use super::running;
use super::state::{Logged, Row};
use super::store::SlotUpdate;
use super::value::Value;
use differential_dataflow::VecCollection;

/// What the view releases: (event time, the event's row, its features), at an output time, with
/// a multiplicity.
pub(super) type Output = Rc<RefCell<Vec<((u64, Row, Row), u64, isize)>>>;

/// The updates of the table's rows and of each window's aggregates, when a store follows them.
pub(super) type Current = Rc<RefCell<Vec<SlotUpdate>>>;

/// An all-time window's operator state and the input that restores it (open until the view's
/// first move: a restore comes before).
pub(super) struct AllTimeHandles {
    pub(super) shared: running::Shared,
    pub(super) restore: Option<InputHandle<u64, CapacityContainerBuilder<Vec<running::KeyState>>>>,
}

/// The handles a worker keeps to a built view.
pub(super) struct Built {
    pub(super) table: Logged<(Value, Row)>,
    pub(super) pending: Logged<(Value, (u64, Row))>,
    pub(super) windows: Vec<Logged<(Value, (u64, Row))>>,
    /// Per window: for an all-time one, its running values.
    pub(super) all_time: Vec<Option<AllTimeHandles>>,
    pub(super) probe: ProbeHandle<u64>,
    pub(super) output: Output,
    /// With a store: the updates it has not taken yet.
    pub(super) current: Option<Current>,
}

/// How the table's rows and the aggregates are followed for a [`super::FeatureStore`]: on this
/// worker, and on the workers of other processes that keep theirs (`remote`), which get a copy
/// of every update.
pub(super) struct Track {
    pub(super) remote: Vec<usize>,
}

/// Builds the view on `worker`: `table_width` values per table row (with `inner`, an event whose
/// key has none is dropped), and per window its length (`None`: all time) and the kinds of its
/// aggregates (one input value each, in that order); with `track`, the table's rows and the
/// aggregates are followed for a [`super::FeatureStore`].
pub(super) fn build(
    worker: &mut Worker,
    name: &str,
    table_width: usize,
    inner: bool,
    windows: &[(Option<u64>, Vec<AggKind>)],
    track: Option<Track>,
) -> Built {
    let output: Output = Rc::new(RefCell::new(Vec::new()));
    let sink = Rc::clone(&output);
    let current: Option<Current> = track.as_ref().map(|_| Rc::new(RefCell::new(Vec::new())));
    let remote = track.map(|t| t.remote).unwrap_or_default();
    let probe = ProbeHandle::new();
    let windows = windows.to_vec();
    let (table, pending, window_inputs, all_time) =
        worker.dataflow_named::<u64, _, _>(name, |scope| {
            let (table_input, table) = scope.new_collection::<(Value, Row), isize>();
            let (pending_input, pending) = scope.new_collection::<(Value, (u64, Row)), isize>();
            // A key with two rows keeps the greatest, so that a duplicate key never doubles an event.
            let table = table.reduce_named("features: one row per key", |_key, rows, out| {
                if let Some((row, _)) = rows.iter().rev().find(|(_, n)| *n > 0) {
                    out.push(((*row).clone(), 1isize));
                }
            });
            let table = follow(table, None, &current, &remote, &probe);
            let nulls = vec![Value::Null; table_width];
            let matched = pending
                .clone()
                .join_map(table.clone(), |key, (t, row), values: &Row| {
                    (key.clone(), (*t, row.clone(), values.clone()))
                });
            let mut joined = if inner {
                matched
            } else {
                let unmatched = pending
                    .antijoin(table.map(|(key, _)| key))
                    .map(move |(key, (t, row))| (key, (t, row, nulls.clone())));
                matched.concat(unmatched)
            };
            let mut window_inputs = Vec::new();
            let mut all_time = Vec::new();
            for (w, (window, kinds)) in windows.into_iter().enumerate() {
                let (input, events) = scope.new_collection::<(Value, (u64, Row)), isize>();
                let mut handles = None;
                let aggregates = match window {
                    None => {
                        let (restore, restored) = scope.new_input::<Vec<running::KeyState>>();
                        let shared = running::Shared::default();
                        let aggregates =
                            running::all_time(events, restored, kinds, Rc::clone(&shared));
                        handles = Some(AllTimeHandles {
                            shared,
                            restore: Some(restore),
                        });
                        aggregates
                    }
                    Some(_) => {
                        events.reduce_named("features: aggregates", move |_key, events, out| {
                            let row: Row = kinds
                                .iter()
                                .enumerate()
                                .map(|(j, kind)| {
                                    kind.compute(
                                        events.iter().map(|((t, inputs), n)| (*t, &inputs[j], *n)),
                                    )
                                })
                                .collect();
                            out.push((row, 1isize));
                        })
                    }
                };
                let aggregates = follow(aggregates, Some(w), &current, &remote, &probe);
                joined =
                    joined.join_map(aggregates, |key, (t, row, features), aggregates: &Row| {
                        let mut features = features.clone();
                        features.extend(aggregates.iter().cloned());
                        (key.clone(), (*t, row.clone(), features))
                    });
                window_inputs.push(input);
                all_time.push(handles);
            }
            joined
                .map(|(_, released)| released)
                .inspect(move |(data, time, diff)| {
                    sink.borrow_mut().push((data.clone(), *time, *diff))
                })
                .probe_with(&probe);
            (table_input, pending_input, window_inputs, all_time)
        });
    Built {
        table: Logged::new(table),
        pending: Logged::new(pending),
        windows: (window_inputs.into_iter().zip(&all_time))
            .map(|(input, at)| match at {
                Some(at) => Logged::folded_by(input, Rc::clone(&at.shared)),
                None => Logged::new(input),
            })
            .collect(),
        all_time,
        probe,
        output,
        current,
    }
}

/// `collection` (a table's rows, or window `window`'s aggregates), its updates also pushed to
/// `current` when a store follows the view, and sent to the `remote` workers' `current` (which
/// `probe` then also waits for).
fn follow<'s>(
    collection: VecCollection<'s, u64, (Value, Row), isize>,
    window: Option<usize>,
    current: &Option<Current>,
    remote: &[usize],
    probe: &ProbeHandle<u64>,
) -> VecCollection<'s, u64, (Value, Row), isize> {
    let Some(current) = current else {
        return collection;
    };
    if !remote.is_empty() {
        let (to, here) = (remote.to_vec(), Rc::clone(current));
        collection
            .inner
            .clone()
            .flat_map(move |update| to.clone().into_iter().map(move |w| (w, update.clone())))
            .exchange(|(w, _)| *w as u64)
            .inspect(move |(_, ((key, row), time, diff))| {
                here.borrow_mut()
                    .push(((key.clone(), window, row.clone()), *time, *diff));
            })
            .probe_with(probe);
    }
    let current = Rc::clone(current);
    collection.inspect(move |((key, row), time, diff)| {
        current
            .borrow_mut()
            .push(((key.clone(), window, row.clone()), *time, *diff));
    })
}
