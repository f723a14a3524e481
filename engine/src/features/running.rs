//! All-time aggregates as one running value per key.
//!
//! An event never leaves an all-time window, so a key's aggregates only ever fold in new events.
//! Differential's `reduce` would instead recompute a key over its whole history at every change
//! (work growing with the square of the key's events). This operator keeps, per key, what each
//! aggregate needs (a count, a sum, the smallest value, the set of distinct values, …) and, once
//! the frontier has passed a time, folds that time's events in and emits the change: the key's
//! old aggregates retracted and the new ones inserted, at that time.
//!
//! The fold visits a key's events in (event time, inputs) order, the order `reduce` would see them
//! in, so float sums come out bit for bit as a recomputation over the sorted events gives them, on
//! any number of workers and after a restore (restored events arrive at the frontier, sorted by
//! their own event time all the same).

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use differential_dataflow::hashable::Hashable;
use differential_dataflow::{AsCollection, VecCollection};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;

use super::aggregate::AggKind;
use super::state::Row;
use super::value::Value;

/// One window's events: (key, (event time, one input per aggregate)).
type Events<'s> = VecCollection<'s, u64, (Value, (u64, Row)), isize>;

/// The all-time aggregates of `kinds` over `events`, per key: the same collection a `reduce` with
/// [`AggKind::compute`] gives, for inputs that are only ever inserted.
pub(super) fn all_time<'s>(
    events: Events<'s>,
    kinds: Vec<AggKind>,
) -> VecCollection<'s, u64, (Value, Row), isize> {
    let exchange =
        Exchange::new(|((key, _), _, _): &((Value, (u64, Row)), u64, isize)| key.hashed().into());
    events
        .inner
        .unary_frontier(exchange, "features: all-time aggregates", move |_, _| {
            let mut waiting: BTreeMap<u64, (Capability<u64>, Vec<Event>)> = BTreeMap::new();
            let mut keys: HashMap<Value, Vec<Running>> = HashMap::new();
            move |(input, frontier), output| {
                input.for_each(|cap, data| {
                    for ((key, (t, inputs)), time, diff) in data.drain(..) {
                        let slot = waiting
                            .entry(time)
                            .or_insert_with(|| (cap.delayed(&time, 0), Vec::new()));
                        slot.1.push((key, t, inputs, diff));
                    }
                });
                while let Some(entry) = waiting.first_entry() {
                    if frontier.less_equal(entry.key()) {
                        break;
                    }
                    let (time, (cap, mut events)) = entry.remove_entry();
                    events.sort_unstable_by(|a, b| (&a.0, a.1, &a.2).cmp(&(&b.0, b.1, &b.2)));
                    let mut session = output.session(&cap);
                    for key_events in events.chunk_by(|a, b| a.0 == b.0) {
                        let key = &key_events[0].0;
                        let (running, before) = match keys.entry(key.clone()) {
                            Entry::Occupied(seen) => {
                                let running = seen.into_mut();
                                let before: Row = running.iter().map(Running::value).collect();
                                (running, Some(before))
                            }
                            Entry::Vacant(new) => (
                                new.insert(kinds.iter().map(|&k| Running::new(k)).collect()),
                                None,
                            ),
                        };
                        for (_, t, inputs, diff) in key_events {
                            for (r, value) in running.iter_mut().zip(inputs) {
                                r.add(*t, value, *diff);
                            }
                        }
                        let after: Row = running.iter().map(Running::value).collect();
                        if before.as_ref() == Some(&after) {
                            continue;
                        }
                        if let Some(before) = before {
                            session.give(((key.clone(), before), time, -1isize));
                        }
                        session.give(((key.clone(), after), time, 1isize));
                    }
                }
            }
        })
        .as_collection()
}

/// One update of the input: (key, event time, inputs, multiplicity).
type Event = (Value, u64, Row, isize);

/// What one aggregate of one key has folded in so far.
#[derive(Clone, Debug)]
enum Running {
    Count(i64),
    /// The integer sum while every value is an integer, and the float sum in event order.
    Sum {
        seen: bool,
        all_int: bool,
        int: i128,
        float: f64,
    },
    Mean {
        total: f64,
        n: i64,
    },
    Min(Option<Value>),
    Max(Option<Value>),
    Last(Option<(u64, Value)>),
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
