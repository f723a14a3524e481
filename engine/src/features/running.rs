//! All-time aggregates as one running value per key.
//!
//! An event never leaves an all-time window, so a key's aggregates only ever fold in new events.
//! Differential's `reduce` would instead recompute a key over its whole history at every change
//! (work growing with the square of the key's events). This operator keeps, per key, what each
//! aggregate needs (a count, a sum, the smallest value, the set of distinct values, …) and, once
//! the frontier has passed a time, folds that time's events in and emits the change: the key's
//! old aggregates retracted and the new ones inserted, at that time.
//!
//! A checkpoint keeps these running values, not the events folded into them (which would grow
//! without end): [`AllTime`] is shared with the view, which reads the values and the time before
//! which every event is folded; a restore sends them back in through a second input, routed to
//! the worker that owns each key on the new worker count.
//!
//! The fold visits a key's events in (event time, inputs) order, the order `reduce` would see them
//! in, so float sums come out bit for bit as a recomputation over the sorted events gives them, on
//! any number of workers and after a restore (restored events arrive at the frontier, sorted by
//! their own event time all the same).

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::rc::Rc;

use differential_dataflow::hashable::Hashable;
use differential_dataflow::{AsCollection, VecCollection};
use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;

use super::aggregate::AggKind;
use super::keyed::{EventUpdate, Waiting, bound, by_key_and_time};
use super::state::Row;
use super::store::KeyMap;
use super::value::Value;

/// One window's events: (key, (event time, one input per aggregate)).
type Events<'s> = VecCollection<'s, u64, (Value, (u64, Row)), isize>;

/// One key's running values, as a checkpoint keeps them.
pub(super) type KeyState = (Value, Vec<Running>);

/// What one worker's all-time operator holds, shared with its view for checkpoints.
#[derive(Debug, Default)]
pub(super) struct AllTime {
    /// Each key's running values.
    pub(super) keys: KeyMap<Vec<Running>>,
    /// Every event before this time is folded into `keys`.
    pub(super) folded_before: u64,
}

/// Shared between the operator and its view (one worker thread).
pub(super) type Shared = Rc<RefCell<AllTime>>;

/// The all-time aggregates of `kinds` over `events`, per key: the same collection a `reduce` with
/// [`AggKind::compute`] gives, for inputs that are only ever inserted. `restored` brings keys'
/// running values from a checkpoint (each key once); `shared` exposes what the operator holds.
pub(super) fn all_time<'s>(
    events: Events<'s>,
    restored: Stream<'s, u64, Vec<KeyState>>,
    kinds: Vec<AggKind>,
    shared: Shared,
) -> VecCollection<'s, u64, (Value, Row), isize> {
    let by_event_key =
        Exchange::new(|((key, _), _, _): &((Value, (u64, Row)), u64, isize)| key.hashed());
    let by_state_key = Exchange::new(|(key, _): &KeyState| key.hashed());
    events
        .inner
        .binary_frontier(
            restored,
            by_event_key,
            by_state_key,
            "features: all-time aggregates",
            move |_, _| {
                let mut waiting = Waiting::default();
                move |(input, frontier), (restored, restored_frontier), output| {
                    let mut state = shared.borrow_mut();
                    restored.for_each(|cap, data| {
                        let Some(time) = cap.least().copied() else {
                            return;
                        };
                        let cap = cap.delayed(&time, 0);
                        let mut session = output.session(&cap);
                        for (key, running) in data.drain(..) {
                            let values: Row = running.iter().map(Running::value).collect();
                            state.keys.insert(key.clone(), running);
                            session.give(((key, values), time, 1isize));
                        }
                    });
                    input.for_each(|cap, data| waiting.push(cap, data));
                    let done = bound(frontier).min(bound(restored_frontier));
                    if let Some((cap, ready)) = waiting.ready(done) {
                        let mut session = output.session(&cap);
                        by_key_and_time(ready, |key, time, events| {
                            fold(&mut state.keys, &kinds, key, time, events, &mut session);
                        });
                    }
                    // Every event before both frontiers has arrived, and none is waiting.
                    state.folded_before = state.folded_before.max(done.min(waiting.least()));
                }
            },
        )
        .as_collection()
}

/// Folds `key`'s events of `time` (sorted by event time and inputs) into `keys`, giving the
/// key's old values (-1) and new ones (+1) at `time` when they change.
fn fold(
    keys: &mut KeyMap<Vec<Running>>,
    kinds: &[AggKind],
    key: &Value,
    time: u64,
    events: &[EventUpdate],
    session: &mut Session<'_, '_>,
) {
    let (running, before) = match keys.get_mut(key) {
        Some(running) => {
            let before: Row = running.iter().map(Running::value).collect();
            (running, Some(before))
        }
        None => (
            keys.entry(key.clone())
                .or_insert_with(|| kinds.iter().map(|&k| Running::new(k)).collect()),
            None,
        ),
    };
    for ((_, (t, inputs)), _, diff) in events {
        for (r, value) in running.iter_mut().zip(inputs) {
            r.add(*t, value, *diff);
        }
    }
    let after: Row = running.iter().map(Running::value).collect();
    if before.as_ref() == Some(&after) {
        return;
    }
    if let Some(before) = before {
        session.give(((key.clone(), before), time, -1isize));
    }
    session.give(((key.clone(), after), time, 1isize));
}

/// A session of the operator's output: (key, aggregates) updates.
type Session<'a, 'b> = timely::dataflow::operators::generic::Session<
    'a,
    'b,
    u64,
    CapacityContainerBuilder<Vec<((Value, Row), u64, isize)>>,
    Capability<u64>,
>;

/// What one all-time aggregate of one key has folded in so far (as a checkpoint keeps it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Running {
    /// Events.
    Count(i64),
    /// The integer sum while every value is an integer, and the float sum in event order.
    Sum {
        /// A non-null value was folded in.
        seen: bool,
        /// Every value so far was an integer.
        all_int: bool,
        /// The integer sum.
        int: i128,
        /// The float sum, in event order.
        float: f64,
    },
    /// The float sum in event order and the values counted.
    Mean {
        /// Sum of the values.
        total: f64,
        /// Non-null values.
        n: i64,
    },
    /// The smallest value.
    Min(Option<Value>),
    /// The largest value.
    Max(Option<Value>),
    /// The newest event's time and value.
    Last(Option<(u64, Value)>),
    /// The distinct values.
    CountDistinct(BTreeSet<Value>),
}

impl Running {
    fn new(kind: AggKind) -> Self {
        match kind {
            AggKind::Count => Running::Count(0),
            AggKind::Sum => Running::Sum {
                seen: false,
                all_int: true,
                int: 0,
                // As `aggregate::sum` folds.
                float: -0.0,
            },
            AggKind::Mean => Running::Mean { total: 0.0, n: 0 },
            AggKind::Min => Running::Min(None),
            AggKind::Max => Running::Max(None),
            AggKind::Last => Running::Last(None),
            AggKind::CountDistinct => Running::CountDistinct(BTreeSet::new()),
        }
    }

    /// Folds in an event at `t` with `value`, `diff` times. All-time inputs are only inserted:
    /// a retraction cannot be undone from a running value.
    fn add(&mut self, t: u64, value: &Value, diff: isize) {
        assert!(diff > 0, "an all-time aggregate input was retracted");
        if value.is_null() && !matches!(self, Running::Count(_)) {
            return;
        }
        match self {
            Running::Count(n) => *n += diff as i64,
            Running::Sum {
                seen,
                all_int,
                int,
                float,
            } => {
                *seen = true;
                match value {
                    Value::Int(i) => *int += *i as i128 * diff as i128,
                    _ => *all_int = false,
                }
                *float += value.as_f64().unwrap_or(0.0) * diff as f64;
            }
            Running::Mean { total, n } => {
                *total += value.as_f64().unwrap_or(0.0) * diff as f64;
                *n += diff as i64;
            }
            Running::Min(min) => {
                if min.as_ref().is_none_or(|m| value < m) {
                    *min = Some(value.clone());
                }
            }
            Running::Max(max) => {
                if max.as_ref().is_none_or(|m| value > m) {
                    *max = Some(value.clone());
                }
            }
            Running::Last(last) => {
                if last.as_ref().is_none_or(|(lt, lv)| (t, value) > (*lt, lv)) {
                    *last = Some((t, value.clone()));
                }
            }
            Running::CountDistinct(set) => {
                set.insert(value.clone());
            }
        }
    }

    /// The aggregate as [`AggKind::compute`] gives it over the same events.
    fn value(&self) -> Value {
        match self {
            Running::Count(n) => Value::Int(*n),
            Running::Sum { seen: false, .. } => Value::Null,
            Running::Sum {
                all_int: true, int, ..
            } => i64::try_from(*int).map_or(Value::Float(*int as f64), Value::Int),
            Running::Sum { float, .. } => Value::Float(*float),
            Running::Mean { n: 0, .. } => Value::Null,
            Running::Mean { total, n } => Value::Float(total / *n as f64),
            Running::Min(v) | Running::Max(v) => v.clone().unwrap_or(Value::Null),
            Running::Last(last) => last.as_ref().map_or(Value::Null, |(_, v)| v.clone()),
            Running::CountDistinct(set) => Value::Int(set.len() as i64),
        }
    }
}
