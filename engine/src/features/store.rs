//! A view's current features per key, for lookups from outside the dataflow (a model server).
//!
//! Each worker's view applies the updates of its table and aggregate arrangements here once their
//! time is complete (before the view's frontier): the store holds, for every key the process's
//! workers own, the table row and the aggregates as they stand at the frontier — what a record of
//! that key arriving at the frontier would see, less the record itself.

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use super::aggregate::AggKind;
use super::state::Row;
use super::value::Value;
use super::{FeatureSpec, Layout};

/// What a store (or a view releasing rows) holds of one key.
#[derive(Clone, Debug, Default)]
pub(super) struct Slot {
    table: Option<Row>,
    /// Per window: its aggregates (`None` while the window holds no event of the key).
    windows: Vec<Option<Row>>,
}

impl Slot {
    /// Whether the key has a table row.
    pub(super) fn has_table_row(&self) -> bool {
        self.table.is_some()
    }
}

/// A map from each key: hashed with foldhash rather than SipHash, since a view looks keys up
/// several times per event (measured: `features_view` 4-16 % faster).
pub(super) type KeyMap<V> = HashMap<Value, V, foldhash::fast::RandomState>;

/// Each key's slot.
pub(super) type Slots = KeyMap<Slot>;

/// Applies one update of a key's table row or window aggregates to `slots` (of a view with
/// `windows` windows). Within a time, a retraction must come before the insertion that replaces
/// it.
pub(super) fn apply_update(
    slots: &mut Slots,
    windows: usize,
    (key, window, row): (Value, Option<usize>, Row),
    diff: isize,
) {
    let slot = match slots.get_mut(&key) {
        Some(slot) => slot,
        None if diff > 0 => slots.entry(key.clone()).or_insert_with(|| Slot {
            table: None,
            windows: vec![None; windows],
        }),
        None => return,
    };
    let place = match window {
        None => &mut slot.table,
        Some(w) => &mut slot.windows[w],
    };
    if diff > 0 {
        *place = Some(row);
    } else if place.as_ref() == Some(&row) {
        *place = None;
    }
    if slot.table.is_none() && slot.windows.iter().all(Option::is_none) {
        slots.remove(&key);
    }
}

/// The features of a key whose slot is `slot`, in [`FeatureSpec::feature_names`] order: the
/// table's columns (nulls without a row), then the aggregates (0 for counts, else null, over an
/// empty window).
pub(super) fn features(spec: &FeatureSpec, layout: &Layout, slot: Option<&Slot>) -> Row {
    let mut features: Row = match slot.and_then(|s| s.table.as_ref()) {
        Some(row) => row.clone(),
        None => vec![Value::Null; spec.table_columns.len()],
    };
    for (a, (w, j)) in spec.aggregates.iter().zip(&layout.places) {
        let value = slot
            .and_then(|s| s.windows.get(*w).and_then(Option::as_ref))
            .and_then(|row| row.get(*j).cloned());
        features.push(value.unwrap_or(match a.kind {
            AggKind::Count | AggKind::CountDistinct => Value::Int(0),
            _ => Value::Null,
        }));
    }
    features
}

/// One update of a key's table row (`window == None`) or of one window's aggregates.
pub(super) type SlotUpdate = ((Value, Option<usize>, Row), u64, isize);

/// The current features of a view, shared by the workers of a process and its server.
#[derive(Debug)]
pub struct FeatureStore {
    spec: FeatureSpec,
    /// The feature names, made once: every lookup answers with them.
    names: Vec<String>,
    layout: Layout,
    integer_keys: bool,
    slots: RwLock<Slots>,
    frontier: AtomicU64,
}

impl FeatureStore {
    /// An empty store for the view `spec`, whose keys are integers (`integer_keys`) or strings.
    pub fn new(spec: &FeatureSpec, integer_keys: bool) -> Self {
        FeatureStore {
            layout: Layout::of(spec),
            names: spec.feature_names(),
            spec: spec.clone(),
            integer_keys,
            slots: RwLock::new(Slots::default()),
            frontier: AtomicU64::new(0),
        }
    }

    /// The feature names, in the order [`FeatureStore::lookup`] gives the values.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The key `text` names (a URL path segment): an integer for integer keys.
    pub fn parse_key(&self, text: &str) -> Result<Value, String> {
        if self.integer_keys {
            text.parse::<i64>().map(Value::Int).map_err(|_| {
                format!("the key `{text}` is not an integer, and this view's keys are")
            })
        } else {
            Ok(Value::Str(text.to_string()))
        }
    }

    /// The features of `key` as of the last complete millisecond (returned with them, epoch ms):
    /// the table's columns (nulls without a row), then the aggregates (0 for counts, else null,
    /// over an empty window).
    pub fn lookup(&self, key: &Value) -> (u64, Row) {
        let slots = self.slots.read().unwrap_or_else(|e| e.into_inner());
        // Read under the lock that `apply` moves it under: the row is of this time.
        let frontier = self.frontier.load(Ordering::Acquire);
        (frontier, self.row(&slots, key))
    }

    /// [`lookup`](Self::lookup) of every key in `keys`, all as of the same millisecond (one
    /// snapshot of the store).
    pub fn lookup_many(&self, keys: &[Value]) -> (u64, Vec<Row>) {
        let slots = self.slots.read().unwrap_or_else(|e| e.into_inner());
        let frontier = self.frontier.load(Ordering::Acquire);
        let rows = keys.iter().map(|key| self.row(&slots, key)).collect();
        (frontier, rows)
    }

    fn row(&self, slots: &Slots, key: &Value) -> Row {
        features(&self.spec, &self.layout, slots.get(key))
    }

    /// Applies `updates` (all of them at or before `as_of`), oldest first, and moves the store's
    /// time there.
    pub(super) fn apply(&self, mut updates: Vec<SlotUpdate>, as_of: u64) {
        if updates.is_empty() {
            // Lookups need not wait for a lock to see only the time move (an idle job steps
            // many times a second).
            self.frontier.fetch_max(as_of, Ordering::AcqRel);
            return;
        }
        // Within a time, a retraction comes before the insertion that replaces it.
        updates.sort_by_key(|(_, time, diff)| (*time, *diff));
        let windows = self.layout.windows.len();
        let mut slots = self.slots.write().unwrap_or_else(|e| e.into_inner());
        for (update, _, diff) in updates {
            apply_update(&mut slots, windows, update, diff);
        }
        self.frontier.fetch_max(as_of, Ordering::AcqRel);
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.slots.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// True when no key has features.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
