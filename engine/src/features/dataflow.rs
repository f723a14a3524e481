//! The dataflow of a feature view.
//!
//! ```text
//! table (key, row) ──reduce: one row per key──────────────────────────┐
//! window w (key, (t, inputs)) ──aggregates per key (sliding or all time)─┴─▶ slot updates
//! pending (key, (t, row)) ──half join with the slots as of t──────────────▶ released rows
//! ```
//!
//! Times are event-time milliseconds. An event enters `pending` at its time `t` (and is logged as
//! leaving it at `t + 1`, for a checkpoint) and is released once the frontier passes `t`, with its
//! key's table row and aggregates after every update at or before `t` and none later. It enters
//! each window's input at `t` and leaves it at `t + w` (never, for all time): at time `t'` a
//! window holds the events with `t' - w < t <= t'`, the event itself included.

use std::cell::RefCell;
use std::rc::Rc;

use differential_dataflow::input::Input;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::InputHandle;
use timely::dataflow::ProbeHandle;
use timely::dataflow::Stream;
use timely::dataflow::operators::Input as _;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::{Concatenate, Exchange, Inspect, Probe};
use timely::worker::Worker;

use super::aggregate::AggKind;
use super::keyed;
use super::running;
use super::state::{Logged, Row};
use super::store::SlotUpdate;
use super::value::Value;

/// What the view releases: (event time, the event's row, its features), at an output time, with
/// a multiplicity.
pub(super) type Output = Rc<RefCell<Vec<(keyed::ReleasedRow, u64, isize)>>>;

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

/// Builds the view on `worker` of `shape`: per window its length (`None`: all time) and the kinds
/// of its aggregates (one input value each, in that order); with `track`, the table's rows and the
/// aggregates are followed for a [`super::FeatureStore`].
pub(super) fn build(
    worker: &mut Worker,
    name: &str,
    shape: keyed::Shape,
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
            let mut slots = vec![
                table
                    .inner
                    .map(|((key, row), time, diff)| ((key, None, row), time, diff)),
            ];
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
                    Some(_) => keyed::windowed(events, kinds),
                };
                slots.push(
                    (aggregates.inner)
                        .map(move |((key, row), time, diff)| ((key, Some(w), row), time, diff)),
                );
                window_inputs.push(input);
                all_time.push(handles);
            }
            let slots = follow(scope.concatenate(slots), &current, &remote, &probe);
            keyed::release(pending.inner, slots, shape, sink).probe_with(&probe);
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

/// `slots` (the updates of the table's rows and of the windows' aggregates), also pushed to
/// `current` when a store follows the view, and sent to the `remote` workers' `current` (which
/// `probe` then also waits for).
fn follow<'s>(
    slots: Stream<'s, u64, Vec<SlotUpdate>>,
    current: &Option<Current>,
    remote: &[usize],
    probe: &ProbeHandle<u64>,
) -> Stream<'s, u64, Vec<SlotUpdate>> {
    let Some(current) = current else {
        return slots;
    };
    if !remote.is_empty() {
        let (to, here) = (remote.to_vec(), Rc::clone(current));
        slots
            .clone()
            .flat_map(move |update| to.clone().into_iter().map(move |w| (w, update.clone())))
            .exchange(|(w, _)| *w as u64)
            .inspect(move |(_, update)| here.borrow_mut().push(update.clone()))
            .probe_with(probe);
    }
    let current = Rc::clone(current);
    slots.inspect(move |update| current.borrow_mut().push(update.clone()))
}
