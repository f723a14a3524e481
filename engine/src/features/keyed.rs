//! Keyed operators of a view that keep their own per-key state instead of differential
//! arrangements: a window's aggregates over the events inside it, and the half join that releases
//! each event with its key's table row and aggregates as of its time.
//!
//! Both hold their input until the frontier has passed its time and then handle every update of
//! a key in time order. What they emit is what differential's `reduce` and `join` would give (the
//! tests compare the released rows with a recomputation), without arranging every event, its
//! retraction a millisecond later and every intermediate join result.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use differential_dataflow::hashable::Hashable;
use differential_dataflow::{AsCollection, VecCollection};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::{Operator, OutputBuilderSession};
use timely::dataflow::operators::{Capability, InputCapability};
use timely::progress::frontier::MutableAntichain;

use super::aggregate::AggKind;
use super::state::Row;
use super::store::{self, KeyMap, SlotUpdate, Slots};
use super::value::Value;
use super::{FeatureSpec, Layout};

/// Updates of `D` at times.
type Updates<D> = Vec<(D, u64, isize)>;

/// Keyed updates: (key, value).
type Keyed<V> = (Value, V);

/// One update of a window's input: (key, (event time, one input per aggregate)) at a time.
pub(super) type EventUpdate = (Keyed<(u64, Row)>, u64, isize);

/// A released event: (event time, its row, its features in spec order).
pub(super) type ReleasedRow = (u64, Row, Row);

/// Updates that wait until the frontier passes their time, and a capability at a time no later
/// than any of them (so that everything becoming ready goes out in one session).
///
/// Each input batch is kept sorted by time, latest first, so that what becomes ready is split off
/// its end without touching the updates that still wait (a view holds tens of thousands of
/// records waiting for the watermark, and the frontier moves every step).
pub(super) struct Waiting<D> {
    batches: Vec<Updates<D>>,
    held: Option<Capability<u64>>,
}

impl<D> Default for Waiting<D> {
    fn default() -> Self {
        Waiting {
            batches: Vec::new(),
            held: None,
        }
    }
}

impl<D> Waiting<D> {
    /// Takes a batch of input updates (each at or after `cap`'s time).
    pub(super) fn push(&mut self, cap: InputCapability<u64>, data: &mut Updates<D>) {
        if data.is_empty() {
            return;
        }
        if let Some(cap) = cap.retain_least(0)
            && self
                .held
                .as_ref()
                .is_none_or(|held| cap.time() < held.time())
        {
            self.held = Some(cap);
        }
        let mut batch = std::mem::take(data);
        // Input batches mostly come in time order: reversed, they are sorted at once.
        batch.reverse();
        if !batch.is_sorted_by(|a, b| a.1 >= b.1) {
            batch.sort_by_key(|u| std::cmp::Reverse(u.1));
        }
        self.batches.push(batch);
    }

    /// The updates before `bound` (the inputs' frontier), with a capability to send what they
    /// give; the capability held moves to the earliest update still waiting.
    pub(super) fn ready(&mut self, bound: u64) -> Option<(Capability<u64>, Updates<D>)> {
        let held = self.held.as_ref()?;
        if *held.time() >= bound {
            return None;
        }
        let cap = held.clone();
        let mut ready = Vec::new();
        for batch in &mut self.batches {
            let waits = batch.partition_point(|(_, time, _)| *time >= bound);
            if waits < batch.len() {
                if ready.is_empty() && waits == 0 {
                    std::mem::swap(&mut ready, batch);
                } else {
                    ready.append(&mut batch.split_off(waits));
                }
            }
        }
        self.batches.retain(|batch| !batch.is_empty());
        let least = (self.batches.iter()).filter_map(|batch| batch.last().map(|(_, t, _)| *t));
        match least.min() {
            Some(least) => self.held.as_mut().expect("held").downgrade(&least),
            None => self.held = None,
        }
        (!ready.is_empty()).then_some((cap, ready))
    }

    /// The earliest time an update may still wait at (`u64::MAX`: none waits).
    pub(super) fn least(&self) -> u64 {
        self.held.as_ref().map_or(u64::MAX, |held| *held.time())
    }
}

/// The first time of `frontier` (`u64::MAX` once the input has ended).
pub(super) fn bound(frontier: &MutableAntichain<u64>) -> u64 {
    frontier
        .frontier()
        .iter()
        .min()
        .copied()
        .unwrap_or(u64::MAX)
}

/// Sorts keyed updates by key, then time, then value, and calls `each` with every key's updates
/// of one time, in that order. Keys are compared by hash first (keys are strings more often than
/// not, and a sort compares each many times); only the order within a key matters.
pub(super) fn by_key_and_time<V: Ord>(
    updates: Updates<Keyed<V>>,
    mut each: impl FnMut(&Value, u64, &[(Keyed<V>, u64, isize)]),
) {
    let mut hashed: Updates<(u64, Keyed<V>)> = (updates.into_iter())
        .map(|((key, value), time, diff)| ((key.hashed(), (key, value)), time, diff))
        .collect();
    hashed.sort_unstable_by(|((ha, (ka, va)), ta, _), ((hb, (kb, vb)), tb, _)| {
        (ha.cmp(hb))
            .then_with(|| ka.cmp(kb))
            .then(ta.cmp(tb))
            .then_with(|| va.cmp(vb))
    });
    let updates: Updates<Keyed<V>> = (hashed.into_iter())
        .map(|((_, keyed), time, diff)| (keyed, time, diff))
        .collect();
    for group in updates.chunk_by(|((ka, _), ta, _), ((kb, _), tb, _)| ta == tb && ka == kb) {
        each(&group[0].0.0, group[0].1, group);
    }
}

/// The output of an operator giving (key, aggregates) updates.
type AggregatesOutput<'a> =
    OutputBuilderSession<'a, u64, CapacityContainerBuilder<Vec<((Value, Row), u64, isize)>>>;

/// The aggregates of `kinds` over each key's events in a sliding window: the collection a
/// `reduce` with [`AggKind::compute`] gives. `events` are (key, (event time, one input per
/// aggregate)), each inserted when it enters the window and retracted when it leaves; each key
/// keeps its events in (event time, inputs) order, the order `reduce` sees them in, so that float
/// sums are bit for bit a recomputation's.
pub(super) fn windowed<'s>(
    events: VecCollection<'s, u64, Keyed<(u64, Row)>, isize>,
    kinds: Vec<AggKind>,
) -> VecCollection<'s, u64, Keyed<Row>, isize> {
    let by_key = Exchange::new(|((key, _), _, _): &EventUpdate| key.hashed());
    events
        .inner
        .unary_frontier(by_key, "features: window aggregates", move |_, _| {
            let mut waiting = Waiting::default();
            let mut keys: KeyMap<BTreeMap<(u64, Row), isize>> = KeyMap::default();
            move |(input, frontier), output: &mut AggregatesOutput<'_>| {
                input.for_each(|cap, data| waiting.push(cap, data));
                let Some((cap, ready)) = waiting.ready(bound(frontier)) else {
                    return;
                };
                let mut session = output.session(&cap);
                by_key_and_time(ready, |key, time, updates| {
                    let aggregates = |events: &BTreeMap<(u64, Row), isize>| -> Row {
                        kinds
                            .iter()
                            .enumerate()
                            .map(|(j, kind)| {
                                kind.compute(events.iter().map(|((t, v), n)| (*t, &v[j], *n)))
                            })
                            .collect()
                    };
                    let events = keys.entry(key.clone()).or_default();
                    let before = (!events.is_empty()).then(|| aggregates(events));
                    for ((_, event), _, diff) in updates {
                        let n = events.entry(event.clone()).or_insert(0);
                        *n += diff;
                        if *n == 0 {
                            events.remove(event);
                        }
                    }
                    let after = (!events.is_empty()).then(|| aggregates(events));
                    if after.is_none() {
                        keys.remove(key);
                    }
                    if before == after {
                        return;
                    }
                    if let Some(before) = before {
                        session.give(((key.clone(), before), time, -1isize));
                    }
                    if let Some(after) = after {
                        session.give(((key.clone(), after), time, 1isize));
                    }
                });
            }
        })
        .as_collection()
}

/// How the half join builds a released row's features.
#[derive(Clone)]
pub(super) struct Shape {
    pub(super) spec: FeatureSpec,
    pub(super) layout: Layout,
}

/// The half join: each pending event (key, (event time, row)) released once the frontier has
/// passed its time, with its key's table row and aggregates (`slots`: their updates, as
/// [`SlotUpdate`]s) as they stand at that time, every update at or before it applied and none
/// after. With `shape.spec.inner_join`, an event whose key has no table row is dropped.
/// Retractions of pending events (an event leaving at `t + 1`) are ignored. The released rows go
/// straight into `sink` (no copy for a downstream operator); the output stream carries no data,
/// only the operator's progress, for a probe: a row at time `t` is in `sink` once its frontier
/// has passed `t`.
pub(super) fn release<'s>(
    pending: Stream<'s, u64, Updates<Keyed<(u64, Row)>>>,
    slots: Stream<'s, u64, Vec<SlotUpdate>>,
    shape: Shape,
    sink: Rc<RefCell<Updates<ReleasedRow>>>,
) -> Stream<'s, u64, Vec<()>> {
    let by_event_key = Exchange::new(|((key, _), _, _): &EventUpdate| key.hashed());
    let by_slot_key = Exchange::new(|((key, _, _), _, _): &SlotUpdate| key.hashed());
    let windows = shape.layout.windows.len();
    pending.binary_frontier(
        slots,
        by_event_key,
        by_slot_key,
        "features: release",
        move |_, _| {
            let mut events = Waiting::default();
            let mut updates = Waiting::default();
            let mut state = Slots::default();
            move |(pending, pending_frontier),
                  (slots, slots_frontier),
                  _: &mut OutputBuilderSession<'_, u64, CapacityContainerBuilder<Vec<()>>>| {
                pending.for_each(|cap, data| {
                    data.retain(|(_, _, diff)| *diff > 0);
                    events.push(cap, data);
                });
                slots.for_each(|cap, data| updates.push(cap, data));
                let bound = bound(pending_frontier).min(bound(slots_frontier));
                let mut ready_updates = updates.ready(bound).map(|(_, u)| u).unwrap_or_default();
                let Some((_, mut ready)) = events.ready(bound) else {
                    for (update, _, diff) in sorted(ready_updates) {
                        store::apply_update(&mut state, windows, update, diff);
                    }
                    return;
                };
                ready.sort_unstable_by_key(|(_, time, _)| *time);
                ready_updates = sorted(ready_updates);
                let mut applied = ready_updates.into_iter().peekable();
                let mut sink = sink.borrow_mut();
                for ((key, (t, row)), time, n) in ready {
                    while let Some((update, _, diff)) = applied.next_if(|(_, at, _)| *at <= time) {
                        store::apply_update(&mut state, windows, update, diff);
                    }
                    let slot = state.get(&key);
                    if shape.spec.inner_join && !slot.is_some_and(|s| s.has_table_row()) {
                        continue;
                    }
                    let features = store::features(&shape.spec, &shape.layout, slot);
                    sink.push(((t, row, features), time, n));
                }
                for (update, _, diff) in applied {
                    store::apply_update(&mut state, windows, update, diff);
                }
            }
        },
    )
}

/// `updates` by time, and within a time retractions first.
fn sorted(mut updates: Vec<SlotUpdate>) -> Vec<SlotUpdate> {
    updates.sort_by_key(|(_, time, diff)| (*time, *diff));
    updates
}
