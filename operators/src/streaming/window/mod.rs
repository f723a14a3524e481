//! Event-time windows over Arrow batches, Flink-style: tumbling or sliding windows, bounded
//! out-of-orderness watermarks, late rows to a dead-letter output, and partial aggregates that
//! merge across workers.
//!
//! ```text
//! batches ─▶ Windower::push ──▶ open windows (per start, per key)
//!                  │                 │ close(min of all workers' local_watermark)
//!                  └─▶ late rows     ▼
//!                               Vec<WindowResult> ──(bytes)──▶ merge_all ──▶ to_batch
//! ```
//!
//! # Semantics
//! - **Assignment.** With `slide` (tumbling: `slide = size`), the windows are `[s, s + size)` for
//!   every `s` that is a multiple of `slide` counted from the Unix epoch. A row at event time `t`
//!   belongs to each of the `size / slide` windows that contain `t`.
//! - **Watermarks.** Each worker's [`Windower::local_watermark`] is its largest event time seen
//!   minus `allowed_lateness`. The job's watermark is the **minimum** over all workers
//!   ([`combined_watermark`]); a worker that has seen no row yet has no watermark and holds the
//!   job's watermark back (so no window closes) until it sees one. A streaming job
//!   ([`crate::streaming`]) keeps finer watermarks, per Kafka partition with idle partitions left
//!   out, and closes its windows by passing the job's watermark to [`Windower::close`].
//! - **Closing.** A window `[s, e)` closes when the watermark passed to [`Windower::close`] is
//!   `>= e`; it is then emitted once and forgotten.
//! - **Late rows.** A row is late when every window containing it has already been closed on this
//!   worker, i.e. `floor(t / slide) * slide + size <= w`, where `w` is the largest watermark given
//!   to `close` before the row was pushed (so, necessarily, `t < w`). Late rows are added to no
//!   window. A row that is not late is added to each of its windows that is still open; its
//!   windows that already closed ignore it (as Flink does). The local watermark plays no part in
//!   lateness: only windows that were really emitted make a row late, so the result does not
//!   depend on how rows are cut into batches.
//! - **Unusable rows.** Rows with a null event time, or one beyond ±2⁶² ms, are counted in
//!   [`Pushed::null_time_rows`] and returned with the late rows.
//! - **Nulls in values** are ignored, as in SQL: `Count` of a column counts its non-null values,
//!   `Count` without a column counts rows, and `Sum`/`Mean`/`Min`/`Max` of only nulls are null.
//!   A null key is a group of its own, as in SQL `GROUP BY`.
//! - **Memory.** A worker holds only open windows: those ending after the last closing watermark
//!   and starting at or before its largest event time. With watermarks advancing, that is about
//!   `(allowed_lateness + skew between workers + size) / slide + 1` windows per key.
//! - **Checkpoints.** [`Windower::snapshot`] gives a worker's state (its open windows with their
//!   partial aggregates, its closing frontier and largest event time) as a serializable
//!   [`WindowState`]; [`Windower::restore`] merges one or several of them into a windower of the
//!   same spec, so a job can resume after a crash on another number of workers.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use arrow::array::{Float64Array, Int64Array, RecordBatch};
//! use arrow::datatypes::{DataType, Field, Schema};
//! use millrace_operators::streaming::window::{
//!     AggFn, Aggregate, LatePolicy, WindowSpec, Windower, merge_all, to_batch,
//! };
//!
//! let schema = Arc::new(Schema::new(vec![
//!     Field::new("ts", DataType::Int64, true),
//!     Field::new("v", DataType::Float64, true),
//! ]));
//! let spec = WindowSpec {
//!     time_column: "ts".into(),
//!     size: WindowSpec::parse_duration("10s").unwrap(),
//!     slide: None,
//!     allowed_lateness: Duration::from_secs(1),
//!     key: None,
//!     aggregates: vec![Aggregate { column: Some("v".into()), function: AggFn::Sum, name: "total".into() }],
//!     late: LatePolicy::DeadLetter,
//! };
//! let mut w = Windower::new(spec.clone(), schema.clone()).unwrap();
//! let batch = RecordBatch::try_new(schema, vec![
//!     Arc::new(Int64Array::from(vec![1_000, 9_000, 12_000])),
//!     Arc::new(Float64Array::from(vec![1.0, 2.0, 4.0])),
//! ]).unwrap();
//! w.push(&batch).unwrap();
//! assert_eq!(w.local_watermark(), Some(11_000));
//! let closed = w.close(11_000).unwrap(); // [0, 10s) closes; [10s, 20s) stays open
//! let out = to_batch(&spec, &merge_all(vec![closed])).unwrap();
//! assert_eq!(out.num_rows(), 1);
//! let total = out.column_by_name("total").unwrap().as_any().downcast_ref::<Float64Array>().unwrap();
//! assert_eq!(total.value(0), 3.0);
//! ```

mod aggregate;
mod node;
#[cfg(test)]
mod tests;
mod watermark;

use std::collections::HashSet;
use std::time::Duration;

use arrow::datatypes::{DataType, Schema, TimeUnit};

use crate::{Error, Result};

pub use aggregate::{AggState, KeyValue, WindowResult, merge, merge_all, to_batch};
pub use node::WindowFlow;
pub use watermark::{Pushed, WindowState, Windower, combined_watermark};

/// Name of the output column holding each window's start.
pub const WINDOW_START: &str = "window_start";
/// Name of the output column holding each window's (exclusive) end.
pub const WINDOW_END: &str = "window_end";

/// Event times further than this from the epoch (in ms, about 146 million years) are unusable.
pub(crate) const MAX_TIME_MS: i64 = 1 << 62;
/// The longest window size or slide accepted, in ms (about 36 million years).
const MAX_SIZE_MS: i64 = 1 << 50;
/// The most windows one row may belong to (`size / slide`).
const MAX_WINDOWS_PER_ROW: i64 = 4096;

/// What a windowed aggregation computes: which windows, over which time column, grouped how.
#[derive(Clone, Debug, PartialEq)]
pub struct WindowSpec {
    /// The event-time column: `Timestamp` (any unit, any time zone) or `Int64` epoch milliseconds.
    pub time_column: String,
    /// Window length; a whole number of milliseconds, at least 1 ms.
    pub size: Duration,
    /// `None`: tumbling windows. `Some(s)`: sliding windows of `size` starting every `s`; `size`
    /// must be a multiple of `s`.
    pub slide: Option<Duration>,
    /// Bounded out-of-orderness: a worker's watermark is its largest event time minus this.
    pub allowed_lateness: Duration,
    /// Optional group-by column, a string or (signed, or unsigned up to 32-bit) integer column.
    pub key: Option<String>,
    /// The aggregates, one output column each.
    pub aggregates: Vec<Aggregate>,
    /// What to do with late and unusable rows.
    pub late: LatePolicy,
}

/// What happens to rows that arrive after all their windows were emitted (`dead_letter` or
/// `drop` in a pipeline file).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LatePolicy {
    /// Count them, and drop them.
    Drop,
    /// Count them, and return them from [`Windower::push`] for a dead-letter output.
    #[default]
    DeadLetter,
}

/// One aggregate of a window.
#[derive(Clone, Debug, PartialEq)]
pub struct Aggregate {
    /// The aggregated column; `None` only for [`AggFn::Count`], which then counts rows.
    pub column: Option<String>,
    /// The function.
    pub function: AggFn,
    /// The output column's name.
    pub name: String,
}

/// An aggregate function. Nulls are ignored, as in SQL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AggFn {
    /// Number of rows (no column) or of non-null values (with a column); output `Int64`.
    Count,
    /// Sum of the non-null values; output `Float64`, null if there are none.
    Sum,
    /// Mean of the non-null values; output `Float64`, null if there are none.
    Mean,
    /// Smallest non-null value; output `Float64`, null if there are none.
    Min,
    /// Largest non-null value; output `Float64`, null if there are none.
    Max,
}

/// How the event-time column's values turn into epoch milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TimeConv {
    Seconds,
    Millis,
    Micros,
    Nanos,
}

impl TimeConv {
    /// Epoch milliseconds of a raw value, `None` when out of the usable range.
    #[inline]
    pub(crate) fn to_ms(self, raw: i64) -> Option<i64> {
        let ms = match self {
            TimeConv::Seconds => raw.checked_mul(1000)?,
            TimeConv::Millis => raw,
            TimeConv::Micros => raw.div_euclid(1000),
            TimeConv::Nanos => raw.div_euclid(1_000_000),
        };
        (-MAX_TIME_MS..=MAX_TIME_MS).contains(&ms).then_some(ms)
    }
}

/// The kind of key column, and its input type (batches are checked against it).
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum KeyKind {
    /// Any integer type that fits `i64`; grouped as `Int64`.
    Int(DataType),
    /// Any string type; grouped as `Utf8`.
    Str(DataType),
}

/// A [`WindowSpec`] checked against a schema, in the units the windower works in.
#[derive(Clone, Debug)]
pub(crate) struct Resolved {
    pub(crate) time_type: DataType,
    pub(crate) time_conv: TimeConv,
    pub(crate) size_ms: i64,
    pub(crate) slide_ms: i64,
    pub(crate) lateness_ms: i64,
    pub(crate) key: Option<KeyKind>,
    /// Each aggregate's function and input column type (`None` for a row count).
    pub(crate) aggs: Vec<(AggFn, Option<DataType>)>,
}

fn whole_ms(key: &str, d: Duration) -> Result<i64> {
    if !d.subsec_nanos().is_multiple_of(1_000_000) {
        return Err(Error::config(
            key,
            format!("{d:?} is not a whole number of milliseconds"),
        ));
    }
    match i64::try_from(d.as_millis()) {
        Ok(ms) if ms <= MAX_SIZE_MS => Ok(ms),
        _ => Err(Error::config(key, format!("{d:?} is too long"))),
    }
}

impl WindowSpec {
    /// Checks the spec against the input schema; the error names the option to change.
    pub fn validate(&self, schema: &Schema) -> Result<()> {
        self.resolve(schema).map(|_| ())
    }

    pub(crate) fn resolve(&self, schema: &Schema) -> Result<Resolved> {
        let time_key = "window.time_column";
        let field = schema.field_with_name(&self.time_column).map_err(|_| {
            Error::config(
                time_key,
                format!(
                    "no column {:?} in the input; it has {}",
                    self.time_column,
                    names(schema)
                ),
            )
        })?;
        let time_conv = match field.data_type() {
            DataType::Int64 => TimeConv::Millis,
            DataType::Timestamp(TimeUnit::Second, _) => TimeConv::Seconds,
            DataType::Timestamp(TimeUnit::Millisecond, _) => TimeConv::Millis,
            DataType::Timestamp(TimeUnit::Microsecond, _) => TimeConv::Micros,
            DataType::Timestamp(TimeUnit::Nanosecond, _) => TimeConv::Nanos,
            other => {
                return Err(Error::config(
                    time_key,
                    format!(
                        "column {:?} is {other}; the event time must be a Timestamp or Int64 epoch milliseconds",
                        self.time_column
                    ),
                ));
            }
        };
        let size_ms = whole_ms("window.size", self.size)?;
        if size_ms == 0 {
            return Err(Error::config(
                "window.size",
                "the window size must be at least 1ms",
            ));
        }
        let slide_ms = match self.slide {
            None => size_ms,
            Some(slide) => {
                let s = whole_ms("window.slide", slide)?;
                if s == 0 || size_ms % s != 0 || size_ms / s > MAX_WINDOWS_PER_ROW {
                    return Err(Error::config(
                        "window.slide",
                        format!(
                            "the slide ({slide:?}) must be at least 1ms and divide the window size ({:?}), at most {MAX_WINDOWS_PER_ROW} times",
                            self.size
                        ),
                    ));
                }
                s
            }
        };
        let lateness_ms = i64::try_from(self.allowed_lateness.as_millis())
            .ok()
            .filter(|ms| *ms <= MAX_TIME_MS)
            .ok_or_else(|| Error::config("window.allowed_lateness", "too long"))?;
        let mut outputs = HashSet::from([WINDOW_START, WINDOW_END]);
        let key = match &self.key {
            None => None,
            Some(k) => {
                let f = schema.field_with_name(k).map_err(|_| {
                    Error::config(
                        "window.key",
                        format!("no column {k:?} in the input; it has {}", names(schema)),
                    )
                })?;
                if !outputs.insert(k.as_str()) {
                    return Err(Error::config(
                        "window.key",
                        format!(
                            "the key column {k:?} clashes with an output column of the same name"
                        ),
                    ));
                }
                Some(key_kind(k, f.data_type())?)
            }
        };
        let aggs = self.resolve_aggregates(schema, &mut outputs)?;
        Ok(Resolved {
            time_type: field.data_type().clone(),
            time_conv,
            size_ms,
            slide_ms,
            lateness_ms,
            key,
            aggs,
        })
    }

    /// The aggregates' functions and input types, checked against `schema`; their output names
    /// join `outputs` (a clash is an error).
    fn resolve_aggregates<'a>(
        &'a self,
        schema: &Schema,
        outputs: &mut HashSet<&'a str>,
    ) -> Result<Vec<(AggFn, Option<DataType>)>> {
        if self.aggregates.is_empty() {
            return Err(Error::config(
                "window.aggregates",
                "at least one aggregate is needed",
            ));
        }
        let mut aggs = Vec::with_capacity(self.aggregates.len());
        for (i, a) in self.aggregates.iter().enumerate() {
            let input = match &a.column {
                None if a.function == AggFn::Count => None,
                None => {
                    return Err(Error::config(
                        format!("window.aggregates[{i}].column"),
                        format!("{:?} needs a column; only Count may have none", a.function),
                    ));
                }
                Some(c) => {
                    let f = schema.field_with_name(c).map_err(|_| {
                        Error::config(
                            format!("window.aggregates[{i}].column"),
                            format!("no column {c:?} in the input; it has {}", names(schema)),
                        )
                    })?;
                    if a.function != AggFn::Count && !f.data_type().is_numeric() {
                        return Err(Error::config(
                            format!("window.aggregates[{i}].column"),
                            format!(
                                "{:?} needs a numeric column, but {c:?} is {}",
                                a.function,
                                f.data_type()
                            ),
                        ));
                    }
                    Some(f.data_type().clone())
                }
            };
            if a.name.is_empty() {
                return Err(Error::config(
                    format!("window.aggregates[{i}].name"),
                    "the output name is empty",
                ));
            }
            if !outputs.insert(a.name.as_str()) {
                return Err(Error::config(
                    format!("window.aggregates[{i}].name"),
                    format!("duplicate output column name {:?}", a.name),
                ));
            }
            aggs.push((a.function, input));
        }
        Ok(aggs)
    }

    /// Parses a duration as a pipeline file writes it: a number and a unit, `"500ms"`, `"10s"`,
    /// `"1.5m"`, `"1h"`, `"2d"` (a bare number is seconds). The same rules as every duration
    /// of a pipeline file ([`crate::spec::parse_duration`]).
    pub fn parse_duration(s: &str) -> Result<Duration> {
        crate::spec::parse_duration("duration", s)
    }
}

fn key_kind(name: &str, dt: &DataType) -> Result<KeyKind> {
    use DataType::*;
    match dt {
        Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 => Ok(KeyKind::Int(dt.clone())),
        Utf8 | LargeUtf8 | Utf8View => Ok(KeyKind::Str(dt.clone())),
        Dictionary(_, v) if matches!(v.as_ref(), Utf8 | LargeUtf8 | Utf8View) => {
            Ok(KeyKind::Str(dt.clone()))
        }
        other => Err(Error::config(
            "window.key",
            format!(
                "column {name:?} is {other}; a window key must be a string or an integer that fits Int64 (cast UInt64 keys to Int64 or Utf8)"
            ),
        )),
    }
}

fn names(schema: &Schema) -> String {
    let all: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    format!("{all:?}")
}
