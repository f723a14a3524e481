//! One worker's windowing: rows into open windows, its local watermark, closing on the job's
//! watermark, and its state for checkpoints.

use std::collections::HashMap;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch, StringArray};
use arrow::buffer::NullBuffer;
use arrow::compute::{cast, filter_record_batch};
use arrow::datatypes::{
    DataType, Float64Type, Int64Type, SchemaRef, TimeUnit, TimestampMicrosecondType,
    TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType,
};

use super::aggregate::{AggState, KeyValue, WindowResult, build_batch, output_schema};
use super::{AggFn, KeyKind, LatePolicy, MAX_TIME_MS, Resolved, WindowSpec};
use crate::{Error, Result};

/// What [`Windower::push`] did with a batch's rows that went into no window.
#[derive(Debug, Default)]
pub struct Pushed {
    /// The late and unusable rows, in their input order and schema, when the policy is
    /// [`LatePolicy::DeadLetter`] and there are any; `None` otherwise.
    pub late: Option<RecordBatch>,
    /// Rows whose every window had already been closed (see the module docs).
    pub late_rows: usize,
    /// Unusable rows: a null (or out of range) event time.
    pub null_time_rows: usize,
}

/// The job's watermark from every worker's [`Windower::local_watermark`]: their minimum, or
/// `None` while any worker has none yet (a worker without data holds the job's watermark back).
pub fn combined_watermark(locals: impl IntoIterator<Item = Option<i64>>) -> Option<i64> {
    let mut min: Option<i64> = None;
    for w in locals {
        let w = w?;
        min = Some(min.map_or(w, |m| m.min(w)));
    }
    min
}

/// One open window of one key.
struct Slot {
    live: bool,
    start: i64,
    key: Option<KeyValue>,
    accs: Vec<AggState>,
}

/// A row's key, borrowed from the batch.
#[derive(Clone, Copy)]
enum KeyRef<'a> {
    None,
    Null,
    Int(i64),
    Str(&'a str),
}

impl<'a> KeyRef<'a> {
    /// The borrowed form of a window's key.
    fn of(key: &'a Option<KeyValue>) -> Self {
        match key {
            None => KeyRef::None,
            Some(KeyValue::Null) => KeyRef::Null,
            Some(KeyValue::Int(v)) => KeyRef::Int(*v),
            Some(KeyValue::Str(s)) => KeyRef::Str(s),
        }
    }

    fn is(self, key: &Option<KeyValue>) -> bool {
        match (self, key) {
            (KeyRef::None, None) | (KeyRef::Null, Some(KeyValue::Null)) => true,
            (KeyRef::Int(a), Some(KeyValue::Int(b))) => a == *b,
            (KeyRef::Str(a), Some(KeyValue::Str(b))) => a == b,
            _ => false,
        }
    }

    fn owned(self) -> Option<KeyValue> {
        match self {
            KeyRef::None => None,
            KeyRef::Null => Some(KeyValue::Null),
            KeyRef::Int(v) => Some(KeyValue::Int(v)),
            KeyRef::Str(s) => Some(KeyValue::Str(s.to_owned())),
        }
    }
}

/// A batch's key column, cast once per batch.
enum KeyCol<'a> {
    None,
    Int(&'a Int64Array),
    Str(&'a StringArray),
}

impl<'a> KeyCol<'a> {
    #[inline]
    fn get(&self, i: usize) -> KeyRef<'a> {
        match self {
            KeyCol::None => KeyRef::None,
            KeyCol::Int(a) if a.is_null(i) => KeyRef::Null,
            KeyCol::Int(a) => KeyRef::Int(a.value(i)),
            KeyCol::Str(a) if a.is_null(i) => KeyRef::Null,
            KeyCol::Str(a) => KeyRef::Str(a.value(i)),
        }
    }
}

/// One aggregate's input in a batch.
enum AggInput {
    Rows,
    NonNull(Option<NullBuffer>),
    Values(ArrayRef),
}

/// The same, borrowed for the row loop.
enum AggView<'a> {
    Rows,
    NonNull(Option<&'a NullBuffer>),
    Values(&'a [f64], Option<&'a NullBuffer>),
}

#[inline]
fn valid(nulls: Option<&NullBuffer>, i: usize) -> bool {
    nulls.is_none_or(|n| n.is_valid(i))
}

/// One worker's event-time windows: see the [module docs](super) for the semantics.
pub struct Windower {
    spec: WindowSpec,
    r: Resolved,
    max_event_ms: Option<i64>,
    /// The largest watermark given to `close` (`i64::MIN` before any, `i64::MAX` after
    /// `flush_all`): every window ending at or before it has been emitted.
    closed_ms: i64,
    slots: Vec<Slot>,
    free: Vec<usize>,
    /// Open windows of an unkeyed spec, or of the null key, by start.
    by_start: HashMap<i64, usize>,
    by_int: HashMap<(i64, i64), usize>,
    by_str: HashMap<i64, HashMap<String, usize>>,
    /// The slot the last row used for its `j`-th window: consecutive rows mostly share windows.
    last: Vec<Option<(i64, usize)>>,
}

mod state;

pub use state::WindowState;

impl Windower {
    /// A windower for batches of `schema`; fails (naming the option) when `spec` does not fit it.
    pub fn new(spec: WindowSpec, schema: SchemaRef) -> Result<Self> {
        let r = spec.resolve(&schema)?;
        let per_row = usize::try_from(r.size_ms / r.slide_ms).unwrap_or(usize::MAX);
        Ok(Windower {
            spec,
            r,
            max_event_ms: None,
            closed_ms: i64::MIN,
            slots: Vec::new(),
            free: Vec::new(),
            by_start: HashMap::new(),
            by_int: HashMap::new(),
            by_str: HashMap::new(),
            last: vec![None; per_row],
        })
    }

    /// The spec this windower runs.
    pub fn spec(&self) -> &WindowSpec {
        &self.spec
    }

    /// This worker's watermark in epoch ms: the largest event time seen minus
    /// `allowed_lateness`; `None` before any row with an event time.
    pub fn local_watermark(&self) -> Option<i64> {
        self.max_event_ms
            .map(|m| m.saturating_sub(self.r.lateness_ms))
    }

    /// The largest watermark windows were closed at (`Some(i64::MAX)` after [`Self::flush_all`]);
    /// rows all of whose windows end at or before it are late.
    pub fn closed_watermark(&self) -> Option<i64> {
        (self.closed_ms != i64::MIN).then_some(self.closed_ms)
    }

    /// How many (window, key) groups are open, i.e. held in memory.
    pub fn open_windows(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Adds a batch's rows to their open windows; returns the late and unusable ones.
    pub fn push(&mut self, batch: &RecordBatch) -> Result<Pushed> {
        let n = batch.num_rows();
        let time_col = self.column(
            batch,
            &self.spec.time_column,
            "window.time_column",
            &self.r.time_type,
        )?;
        let (times, time_nulls) = time_values(&time_col)?;
        let key_arr = self.key_array(batch)?;
        let keys = match (&key_arr, &self.r.key) {
            (None, _) => KeyCol::None,
            (Some(a), Some(KeyKind::Int(_))) => KeyCol::Int(
                a.as_primitive_opt::<Int64Type>()
                    .ok_or_else(|| Error::Internal("key not cast to Int64".into()))?,
            ),
            (Some(a), _) => KeyCol::Str(
                a.as_string_opt::<i32>()
                    .ok_or_else(|| Error::Internal("key not cast to Utf8".into()))?,
            ),
        };
        let inputs = self.agg_inputs(batch)?;
        let views = inputs
            .iter()
            .map(|input| {
                Ok(match input {
                    AggInput::Rows => AggView::Rows,
                    AggInput::NonNull(nulls) => AggView::NonNull(nulls.as_ref()),
                    AggInput::Values(a) => {
                        let a = a
                            .as_primitive_opt::<Float64Type>()
                            .ok_or_else(|| Error::Internal("value not cast to Float64".into()))?;
                        AggView::Values(a.values().as_ref(), a.nulls())
                    }
                })
            })
            .collect::<Result<Vec<_>>>()?;

        let (size, slide, closed, conv) = (
            self.r.size_ms,
            self.r.slide_ms,
            self.closed_ms,
            self.r.time_conv,
        );
        let mut rejected: Option<Vec<bool>> = None;
        let mut reject = |i: usize| rejected.get_or_insert_with(|| vec![false; n])[i] = true;
        let (mut late_rows, mut null_time_rows) = (0, 0);
        let mut max = self.max_event_ms.unwrap_or(i64::MIN);
        for (i, &raw) in times.iter().enumerate().take(n) {
            let t = if valid(time_nulls, i) {
                conv.to_ms(raw)
            } else {
                None
            };
            let Some(t) = t else {
                null_time_rows += 1;
                reject(i);
                continue;
            };
            max = max.max(t);
            let mut start = t.div_euclid(slide) * slide;
            if start + size <= closed {
                late_rows += 1;
                reject(i);
                continue;
            }
            let key = keys.get(i);
            for j in 0..self.last.len() {
                if start + size <= closed {
                    break;
                }
                let slot = self.slot_for(j, start, key);
                update(&mut self.slots[slot].accs, &views, i);
                start -= slide;
            }
        }
        if max != i64::MIN {
            self.max_event_ms = Some(max);
        }
        let late = match (rejected, self.spec.late) {
            (Some(mask), LatePolicy::DeadLetter) => {
                Some(filter_record_batch(batch, &BooleanArray::from(mask))?)
            }
            _ => None,
        };
        Ok(Pushed {
            late,
            late_rows,
            null_time_rows,
        })
    }

    /// Emits and forgets every window (of every key) ending at or before `watermark_ms`, ordered
    /// by `(end, start, key)`. Rows arriving later for those windows are late. A watermark lower
    /// than an earlier one closes nothing.
    pub fn close(&mut self, watermark_ms: i64) -> Result<Vec<WindowResult>> {
        self.closed_ms = self.closed_ms.max(watermark_ms);
        let size = self.r.size_ms;
        Ok(self.emit(|start| start + size <= watermark_ms))
    }

    /// End of stream: emits every open window, ordered by `(end, start, key)`. Every row pushed
    /// afterwards is late.
    pub fn flush_all(&mut self) -> Result<Vec<WindowResult>> {
        self.closed_ms = i64::MAX;
        Ok(self.emit(|_| true))
    }

    /// The output schema of [`Self::to_batch`].
    pub fn output_schema(&self) -> SchemaRef {
        output_schema(&self.spec, &self.key_type())
    }

    /// The output batch of `results` (see [`super::to_batch`]), with the key column's type taken
    /// from the input schema even when `results` is empty.
    pub fn to_batch(&self, results: &[WindowResult]) -> Result<RecordBatch> {
        build_batch(&self.spec, &self.key_type(), results)
    }

    fn key_type(&self) -> DataType {
        match self.r.key {
            Some(KeyKind::Int(_)) => DataType::Int64,
            _ => DataType::Utf8,
        }
    }

    fn emit(&mut self, close: impl Fn(i64) -> bool) -> Vec<WindowResult> {
        let size = self.r.size_ms;
        let mut out = Vec::new();
        for (idx, slot) in self.slots.iter_mut().enumerate() {
            if !slot.live || !close(slot.start) {
                continue;
            }
            slot.live = false;
            self.free.push(idx);
            let key = slot.key.take();
            match &key {
                None | Some(KeyValue::Null) => {
                    self.by_start.remove(&slot.start);
                }
                Some(KeyValue::Int(k)) => {
                    self.by_int.remove(&(slot.start, *k));
                }
                Some(KeyValue::Str(s)) => {
                    if let Some(m) = self.by_str.get_mut(&slot.start) {
                        m.remove(s.as_str());
                        if m.is_empty() {
                            self.by_str.remove(&slot.start);
                        }
                    }
                }
            }
            out.push(WindowResult {
                start_ms: slot.start,
                end_ms: slot.start + size,
                key,
                state: slot.accs.clone(),
            });
        }
        self.last.iter_mut().for_each(|l| *l = None);
        out.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
        out
    }

    /// The slot of window `start` and `key`, the row's `j`-th window; opened if new.
    #[inline]
    fn slot_for(&mut self, j: usize, start: i64, key: KeyRef<'_>) -> usize {
        if let Some((s, idx)) = self.last[j] {
            let slot = &self.slots[idx];
            if s == start && slot.live && key.is(&slot.key) {
                return idx;
            }
        }
        let idx = self.find_or_open(start, key);
        self.last[j] = Some((start, idx));
        idx
    }

    /// The slot of window `start` and `key`, opened (and indexed) if new.
    #[inline]
    fn find_or_open(&mut self, start: i64, key: KeyRef<'_>) -> usize {
        let found = match key {
            KeyRef::None | KeyRef::Null => self.by_start.get(&start).copied(),
            KeyRef::Int(k) => self.by_int.get(&(start, k)).copied(),
            KeyRef::Str(s) => self.by_str.get(&start).and_then(|m| m.get(s)).copied(),
        };
        match found {
            Some(idx) => idx,
            None => {
                let idx = self.open_slot(start, key.owned());
                match key {
                    KeyRef::None | KeyRef::Null => {
                        self.by_start.insert(start, idx);
                    }
                    KeyRef::Int(k) => {
                        self.by_int.insert((start, k), idx);
                    }
                    KeyRef::Str(s) => {
                        self.by_str
                            .entry(start)
                            .or_default()
                            .insert(s.to_owned(), idx);
                    }
                }
                idx
            }
        }
    }

    fn open_slot(&mut self, start: i64, key: Option<KeyValue>) -> usize {
        let fresh = |aggs: &[(AggFn, Option<DataType>)]| {
            aggs.iter().map(|(f, _)| AggState::new(*f)).collect()
        };
        match self.free.pop() {
            Some(idx) => {
                let slot = &mut self.slots[idx];
                slot.live = true;
                slot.start = start;
                slot.key = key;
                for (acc, (f, _)) in slot.accs.iter_mut().zip(&self.r.aggs) {
                    *acc = AggState::new(*f);
                }
                idx
            }
            None => {
                self.slots.push(Slot {
                    live: true,
                    start,
                    key,
                    accs: fresh(&self.r.aggs),
                });
                self.slots.len() - 1
            }
        }
    }

    /// The batch's column `name`, checked against the type the windower was built for.
    fn column(
        &self,
        batch: &RecordBatch,
        name: &str,
        option: &str,
        expected: &DataType,
    ) -> Result<ArrayRef> {
        let col = batch
            .column_by_name(name)
            .ok_or_else(|| Error::config(option, format!("a batch has no column {name:?}")))?;
        if col.data_type() != expected {
            return Err(Error::config(
                option,
                format!(
                    "column {name:?} is {} in a batch, but {expected} in the schema the window was built for",
                    col.data_type()
                ),
            ));
        }
        Ok(col.clone())
    }

    fn key_array(&self, batch: &RecordBatch) -> Result<Option<ArrayRef>> {
        let (Some(name), Some(kind)) = (&self.spec.key, &self.r.key) else {
            return Ok(None);
        };
        let (dt, to) = match kind {
            KeyKind::Int(dt) => (dt, DataType::Int64),
            KeyKind::Str(dt) => (dt, DataType::Utf8),
        };
        let col = self.column(batch, name, "window.key", dt)?;
        Ok(Some(cast(&col, &to)?))
    }

    fn agg_inputs(&self, batch: &RecordBatch) -> Result<Vec<AggInput>> {
        let mut inputs = Vec::with_capacity(self.r.aggs.len());
        for (i, ((function, dt), a)) in self.r.aggs.iter().zip(&self.spec.aggregates).enumerate() {
            let (Some(name), Some(dt)) = (&a.column, dt) else {
                inputs.push(AggInput::Rows);
                continue;
            };
            let col = self.column(batch, name, &format!("window.aggregates[{i}].column"), dt)?;
            inputs.push(match function {
                AggFn::Count => AggInput::NonNull(col.logical_nulls()),
                _ => AggInput::Values(cast(&col, &DataType::Float64)?),
            });
        }
        Ok(inputs)
    }
}

#[inline]
fn update(accs: &mut [AggState], views: &[AggView<'_>], i: usize) {
    for (acc, view) in accs.iter_mut().zip(views) {
        match view {
            AggView::Rows => acc.count_one(),
            AggView::NonNull(nulls) => {
                if valid(*nulls, i) {
                    acc.count_one();
                }
            }
            AggView::Values(values, nulls) => {
                if valid(*nulls, i) {
                    acc.add(values[i]);
                }
            }
        }
    }
}

/// The raw `i64` values and nulls of the event-time column.
fn time_values(col: &ArrayRef) -> Result<(&[i64], Option<&NullBuffer>)> {
    let missing = || {
        Error::Internal(format!(
            "time column of type {} not readable",
            col.data_type()
        ))
    };
    Ok(match col.data_type() {
        DataType::Int64 => {
            let a = col.as_primitive_opt::<Int64Type>().ok_or_else(missing)?;
            (a.values().as_ref(), a.nulls())
        }
        DataType::Timestamp(TimeUnit::Second, _) => {
            let a = col
                .as_primitive_opt::<TimestampSecondType>()
                .ok_or_else(missing)?;
            (a.values().as_ref(), a.nulls())
        }
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            let a = col
                .as_primitive_opt::<TimestampMillisecondType>()
                .ok_or_else(missing)?;
            (a.values().as_ref(), a.nulls())
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            let a = col
                .as_primitive_opt::<TimestampMicrosecondType>()
                .ok_or_else(missing)?;
            (a.values().as_ref(), a.nulls())
        }
        DataType::Timestamp(TimeUnit::Nanosecond, _) => {
            let a = col
                .as_primitive_opt::<TimestampNanosecondType>()
                .ok_or_else(missing)?;
            (a.values().as_ref(), a.nulls())
        }
        _ => return Err(missing()),
    })
}
