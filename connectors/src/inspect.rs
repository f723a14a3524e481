//! Per-column statistics of a stream of batches: the numbers behind `millrace inspect URL [--json]`.
//!
//! A [`StatsBuilder`] is fed [`RecordBatch`]es one at a time (or one builder per worker, then
//! [`StatsBuilder::merge`]d) and [`finish`](StatsBuilder::finish)es into [`DatasetStats`]: the row
//! count and, per column, the null count, min, max and (for numbers) sum. Running state is kept
//! typed per column (integers in `i128`, decimals in `i256`, timestamps as raw ticks) and only
//! rendered to JSON at the end, in the formats of [`json_value`], which match Spark's:
//!
//! | Arrow type | JSON |
//! |---|---|
//! | integers | numbers; a sum that does not fit `i64` is a string of digits |
//! | floats | numbers; `"NaN"`, `"Infinity"`, `"-Infinity"` as strings; NaN is above every number |
//! | decimal(p, s) | strings with exactly `s` fraction digits: `"-0.05"` |
//! | dates | `"YYYY-MM-DD"` (proleptic Gregorian) |
//! | timestamps | `"YYYY-MM-DDTHH:MM:SS.ffffff"`, with a `Z` when the type has a time zone |
//!
//! Types without an order here (binary, nested, intervals, ...) only get a null count.

use std::fmt::Write as _;

use arrow::array::{
    Array, ArrayRef, AsArray, PrimitiveArray, RecordBatch, downcast_integer_array,
    downcast_temporal_array,
};
use arrow::compute;
use arrow::datatypes::*;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use chrono::{DateTime, NaiveDate};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Error, Result};

/// Accumulates statistics batch by batch; mergeable across workers.
#[derive(Debug)]
pub struct StatsBuilder {
    schema: SchemaRef,
    rows: u64,
    columns: Vec<ColumnAcc>,
}

/// The statistics of a whole dataset, as `millrace inspect` prints them.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DatasetStats {
    /// How many rows were seen.
    pub rows: u64,
    /// One entry per column, in schema order.
    pub columns: Vec<ColumnStats>,
}

/// The statistics of one column.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ColumnStats {
    /// The column name.
    pub name: String,
    /// Spark-style type name: "bigint", "int", "smallint", "tinyint", "float", "double",
    /// "decimal(12,2)", "string", "boolean", "date", "timestamp" (UTC-adjusted), "timestamp_ntz",
    /// "binary", or the Arrow type's Display for others.
    pub data_type: String,
    /// Whether the schema allows nulls in this column.
    pub nullable: bool,
    /// How many values are null.
    pub nulls: u64,
    /// The smallest value; `None` when there is no non-null value or the type has no order here.
    pub min: Option<Value>,
    /// The largest value; `None` when there is no non-null value or the type has no order here.
    pub max: Option<Value>,
    /// The sum of the non-null values, for numbers only; `None` when there is no non-null value.
    pub sum: Option<Value>,
}

impl StatsBuilder {
    /// An empty builder for batches of `schema`.
    pub fn new(schema: SchemaRef) -> Self {
        let columns = schema
            .fields()
            .iter()
            .map(|f| ColumnAcc::new(f.data_type()))
            .collect();
        Self {
            schema,
            rows: 0,
            columns,
        }
    }

    /// Adds one batch. Batches must have the builder's schema (same field names and types, in
    /// order); else Err naming the first differing field.
    pub fn update(&mut self, batch: &RecordBatch) -> Result<()> {
        check_schema(&self.schema, &batch.schema(), "batch")?;
        for (acc, array) in self.columns.iter_mut().zip(batch.columns()) {
            acc.update(array.as_ref())?;
        }
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Combines another builder over the same schema (for per-worker partial stats).
    pub fn merge(&mut self, other: StatsBuilder) -> Result<()> {
        check_schema(&self.schema, &other.schema, "merged builder")?;
        for (acc, other) in self.columns.iter_mut().zip(other.columns) {
            acc.merge(other)?;
        }
        self.rows += other.rows;
        Ok(())
    }

    /// The statistics of everything seen.
    pub fn finish(self) -> DatasetStats {
        let columns = self
            .schema
            .fields()
            .iter()
            .zip(self.columns)
            .map(|(field, acc)| {
                let (min, max, sum) = acc.acc.render();
                ColumnStats {
                    name: field.name().clone(),
                    data_type: spark_type_name(field.data_type()),
                    nullable: field.is_nullable(),
                    nulls: acc.nulls,
                    min,
                    max,
                    sum,
                }
            })
            .collect();
        DatasetStats {
            rows: self.rows,
            columns,
        }
    }
}

/// Err naming the first field of `found` that differs from `expected` in name or type.
fn check_schema(expected: &Schema, found: &Schema, what: &str) -> Result<()> {
    let (e, f) = (expected.fields(), found.fields());
    let Some(i) = (0..e.len().max(f.len())).find(|&i| match (e.get(i), f.get(i)) {
        (Some(a), Some(b)) => a.name() != b.name() || !a.data_type().equals_datatype(b.data_type()),
        _ => true,
    }) else {
        return Ok(());
    };
    let describe = |field: Option<&FieldRef>| match field {
        Some(field) => format!("`{}` of type {}", field.name(), field.data_type()),
        None => "no field".to_owned(),
    };
    Err(Error::Internal(format!(
        "{what} does not match the statistics schema at field {i}: expected {}, found {} \
         ({} fields expected, {} found)",
        describe(e.get(i)),
        describe(f.get(i)),
        e.len(),
        f.len()
    )))
}

/// The running state of one column.
#[derive(Debug)]
struct ColumnAcc {
    nulls: u64,
    acc: Acc,
}

/// Typed running min/max/sum, by the kind of the column's (dictionary-unpacked) type.
#[derive(Debug)]
enum Acc {
    /// No order for this type: only nulls are counted.
    Unsupported,
    Int(MinMax<i128>, IntSum),
    Float(FloatAcc),
    Decimal {
        scale: i8,
        range: MinMax<i256>,
        sum: DecimalSum,
    },
    Bool(MinMax<bool>),
    Str(MinMax<String>),
    Temporal(Temporal, MinMax<i64>),
}

/// How raw temporal ticks are rendered.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Temporal {
    Date32,
    Date64,
    Timestamp(TimeUnit, bool),
}

#[derive(Debug)]
struct MinMax<T> {
    min: Option<T>,
    max: Option<T>,
}

impl<T: PartialOrd> MinMax<T> {
    fn new() -> Self {
        Self {
            min: None,
            max: None,
        }
    }

    fn offer(&mut self, lo: T, hi: T) {
        if self.min.as_ref().is_none_or(|m| lo < *m) {
            self.min = Some(lo);
        }
        if self.max.as_ref().is_none_or(|m| hi > *m) {
            self.max = Some(hi);
        }
    }

    fn offer_opt(&mut self, lo: Option<T>, hi: Option<T>) {
        if let (Some(lo), Some(hi)) = (lo, hi) {
            self.offer(lo, hi);
        }
    }

    fn merge(&mut self, other: Self) {
        self.offer_opt(other.min, other.max);
    }

    fn render(&self, f: impl Fn(&T) -> Value) -> (Option<Value>, Option<Value>) {
        (self.min.as_ref().map(&f), self.max.as_ref().map(&f))
    }
}

/// An exact integer sum; `overflow` only past `i128`, which needs ~2^64 rows of extreme values.
#[derive(Debug, Default)]
struct IntSum {
    sum: Option<i128>,
    overflow: bool,
}

impl IntSum {
    fn add(&mut self, v: Option<i128>) {
        if let Some(v) = v {
            match self.sum.unwrap_or(0).checked_add(v) {
                Some(s) => self.sum = Some(s),
                None => self.overflow = true,
            }
        }
    }

    fn render(&self) -> Option<Value> {
        let sum = self.sum?;
        Some(match i64::try_from(sum) {
            _ if self.overflow => Value::from("overflow"),
            Ok(v) => Value::from(v),
            Err(_) => Value::from(sum.to_string()),
        })
    }
}

/// An exact decimal sum of unscaled values; `overflow` only past `i256`.
#[derive(Debug, Default)]
struct DecimalSum {
    sum: Option<i256>,
    overflow: bool,
}

impl DecimalSum {
    fn add(&mut self, v: Option<i256>, overflow: bool) {
        self.overflow |= overflow;
        if let Some(v) = v {
            match self.sum.unwrap_or(i256::ZERO).checked_add(v) {
                Some(s) => self.sum = Some(s),
                None => self.overflow = true,
            }
        }
    }
}

/// Floats, Spark-style: NaN is above every number (and equal to itself, whatever its sign).
#[derive(Debug)]
struct FloatAcc {
    /// Min and max of the non-NaN values.
    range: MinMax<f64>,
    nan: bool,
    sum: Option<f64>,
}

impl FloatAcc {
    fn update<T>(&mut self, array: &PrimitiveArray<T>)
    where
        T: ArrowPrimitiveType,
        T::Native: Into<f64>,
    {
        let (mut lo, mut hi, mut nan, mut sum, mut any) =
            (f64::INFINITY, f64::NEG_INFINITY, false, 0.0, false);
        for_each_valid(array, |v| {
            let v: f64 = v.into();
            any = true;
            sum += v;
            if v.is_nan() {
                nan = true;
            } else {
                lo = lo.min(v);
                hi = hi.max(v);
            }
        });
        if !any {
            return;
        }
        self.merge(FloatAcc {
            range: MinMax {
                min: (lo <= hi).then_some(lo),
                max: (lo <= hi).then_some(hi),
            },
            nan,
            sum: Some(sum),
        });
    }

    fn merge(&mut self, other: FloatAcc) {
        self.range.merge(other.range);
        self.nan |= other.nan;
        if let Some(s) = other.sum {
            self.sum = Some(self.sum.unwrap_or(0.0) + s);
        }
    }

    fn render(&self) -> (Option<Value>, Option<Value>, Option<Value>) {
        let nan = self.nan.then(|| float_json(f64::NAN));
        let min = self.range.min.map(float_json).or(nan.clone());
        let max = nan.or(self.range.max.map(float_json));
        (min, max, self.sum.map(float_json))
    }
}

/// Calls `f` on every non-null value of `array`.
fn for_each_valid<T: ArrowPrimitiveType>(array: &PrimitiveArray<T>, mut f: impl FnMut(T::Native)) {
    let values = array.values();
    match array.nulls() {
        Some(nulls) if nulls.null_count() > 0 => nulls.valid_indices().for_each(|i| f(values[i])),
        _ => values.iter().for_each(|&v| f(v)),
    }
}

/// Decimal unscaled values of every width, widened to `i256`.
trait WideDecimal: Copy {
    fn widen(self) -> i256;
}

impl WideDecimal for i32 {
    fn widen(self) -> i256 {
        i256::from_i128(self.into())
    }
}

impl WideDecimal for i64 {
    fn widen(self) -> i256 {
        i256::from_i128(self.into())
    }
}

impl WideDecimal for i128 {
    fn widen(self) -> i256 {
        i256::from_i128(self)
    }
}

impl WideDecimal for i256 {
    fn widen(self) -> i256 {
        self
    }
}

impl ColumnAcc {
    fn new(data_type: &DataType) -> Self {
        use DataType as D;
        let acc = match data_type {
            D::Int8
            | D::Int16
            | D::Int32
            | D::Int64
            | D::UInt8
            | D::UInt16
            | D::UInt32
            | D::UInt64 => Acc::Int(MinMax::new(), IntSum::default()),
            D::Float16 | D::Float32 | D::Float64 => Acc::Float(FloatAcc {
                range: MinMax::new(),
                nan: false,
                sum: None,
            }),
            D::Decimal32(_, scale)
            | D::Decimal64(_, scale)
            | D::Decimal128(_, scale)
            | D::Decimal256(_, scale) => Acc::Decimal {
                scale: *scale,
                range: MinMax::new(),
                sum: DecimalSum::default(),
            },
            D::Boolean => Acc::Bool(MinMax::new()),
            D::Utf8 | D::LargeUtf8 | D::Utf8View => Acc::Str(MinMax::new()),
            D::Date32 => Acc::Temporal(Temporal::Date32, MinMax::new()),
            D::Date64 => Acc::Temporal(Temporal::Date64, MinMax::new()),
            D::Timestamp(unit, tz) => {
                Acc::Temporal(Temporal::Timestamp(*unit, tz.is_some()), MinMax::new())
            }
            D::Dictionary(_, values) => return Self::new(values),
            _ => Acc::Unsupported,
        };
        Self { nulls: 0, acc }
    }

    fn update(&mut self, array: &dyn Array) -> Result<()> {
        self.nulls += array.logical_null_count() as u64;
        if matches!(self.acc, Acc::Unsupported) {
            return Ok(());
        }
        let unpacked: ArrayRef;
        let array = match array.data_type() {
            DataType::Dictionary(_, values) => {
                unpacked = compute::cast(array, values).map_err(|e| {
                    Error::Internal(format!(
                        "cannot unpack a dictionary of {values} for statistics: {e}"
                    ))
                })?;
                unpacked.as_ref()
            }
            _ => array,
        };
        let mismatch = |data_type: &DataType| {
            Error::Internal(format!(
                "a statistics accumulator was given an array of type {data_type}"
            ))
        };
        use DataType as D;
        match &mut self.acc {
            Acc::Unsupported => {}
            Acc::Int(range, sum) => downcast_integer_array!(
                array => int_update(range, sum, array),
                t => return Err(mismatch(t)),
            ),
            Acc::Float(acc) => match array.data_type() {
                D::Float16 => acc.update(array.as_primitive::<Float16Type>()),
                D::Float32 => acc.update(array.as_primitive::<Float32Type>()),
                D::Float64 => acc.update(array.as_primitive::<Float64Type>()),
                t => return Err(mismatch(t)),
            },
            Acc::Decimal { range, sum, .. } => match array.data_type() {
                D::Decimal32(..) => {
                    decimal_update(range, sum, array.as_primitive::<Decimal32Type>())
                }
                D::Decimal64(..) => {
                    decimal_update(range, sum, array.as_primitive::<Decimal64Type>())
                }
                D::Decimal128(..) => {
                    decimal_update(range, sum, array.as_primitive::<Decimal128Type>())
                }
                D::Decimal256(..) => {
                    decimal_update(range, sum, array.as_primitive::<Decimal256Type>())
                }
                t => return Err(mismatch(t)),
            },
            Acc::Bool(range) => {
                let array = array
                    .as_boolean_opt()
                    .ok_or_else(|| mismatch(array.data_type()))?;
                range.offer_opt(compute::min_boolean(array), compute::max_boolean(array));
            }
            Acc::Str(range) => {
                let (lo, hi) = match array.data_type() {
                    D::Utf8 => {
                        let array = array.as_string::<i32>();
                        (compute::min_string(array), compute::max_string(array))
                    }
                    D::LargeUtf8 => {
                        let array = array.as_string::<i64>();
                        (compute::min_string(array), compute::max_string(array))
                    }
                    D::Utf8View => {
                        let array = array.as_string_view();
                        (
                            compute::min_string_view(array),
                            compute::max_string_view(array),
                        )
                    }
                    t => return Err(mismatch(t)),
                };
                range.offer_opt(lo.map(str::to_owned), hi.map(str::to_owned));
            }
            Acc::Temporal(_, range) => downcast_temporal_array!(
                array => temporal_update(range, array),
                t => return Err(mismatch(t)),
            ),
        }
        Ok(())
    }

    fn merge(&mut self, other: ColumnAcc) -> Result<()> {
        self.nulls += other.nulls;
        match (&mut self.acc, other.acc) {
            (Acc::Unsupported, Acc::Unsupported) => {}
            (Acc::Int(range, sum), Acc::Int(other_range, other_sum)) => {
                range.merge(other_range);
                sum.add(other_sum.sum);
                sum.overflow |= other_sum.overflow;
            }
            (Acc::Float(acc), Acc::Float(other)) => acc.merge(other),
            (
                Acc::Decimal { range, sum, .. },
                Acc::Decimal {
                    range: r, sum: s, ..
                },
            ) => {
                range.merge(r);
                sum.add(s.sum, s.overflow);
            }
            (Acc::Bool(range), Acc::Bool(other)) => range.merge(other),
            (Acc::Str(range), Acc::Str(other)) => range.merge(other),
            (Acc::Temporal(kind, range), Acc::Temporal(other_kind, other))
                if *kind == other_kind =>
            {
                range.merge(other);
            }
            (acc, other) => {
                return Err(Error::Internal(format!(
                    "cannot merge statistics accumulators {acc:?} and {other:?}"
                )));
            }
        }
        Ok(())
    }
}

fn int_update<T>(range: &mut MinMax<i128>, sum: &mut IntSum, array: &PrimitiveArray<T>)
where
    T: ArrowPrimitiveType,
    T::Native: Into<i128>,
{
    range.offer_opt(
        compute::min(array).map(Into::into),
        compute::max(array).map(Into::into),
    );
    if array.null_count() == array.len() {
        return;
    }
    let mut batch = 0_i128;
    // A batch cannot overflow i128: that would take ~2^63 values of 64 bits.
    for_each_valid(array, |v| batch += v.into());
    sum.add(Some(batch));
}

fn temporal_update<T>(range: &mut MinMax<i64>, array: &PrimitiveArray<T>)
where
    T: ArrowPrimitiveType,
    T::Native: Into<i64>,
{
    range.offer_opt(
        compute::min(array).map(Into::into),
        compute::max(array).map(Into::into),
    );
}

fn decimal_update<T>(range: &mut MinMax<i256>, sum: &mut DecimalSum, array: &PrimitiveArray<T>)
where
    T: ArrowPrimitiveType,
    T::Native: WideDecimal,
{
    range.offer_opt(
        compute::min(array).map(WideDecimal::widen),
        compute::max(array).map(WideDecimal::widen),
    );
    match compute::sum_checked(array) {
        Ok(batch) => sum.add(batch.map(WideDecimal::widen), false),
        // The batch overflowed its own width: add it up again in i256.
        Err(_) => {
            let (mut batch, mut overflow) = (i256::ZERO, false);
            for_each_valid(array, |v| match batch.checked_add(v.widen()) {
                Some(s) => batch = s,
                None => overflow = true,
            });
            sum.add(Some(batch), overflow);
        }
    }
}

impl Acc {
    /// The JSON (min, max, sum).
    fn render(&self) -> (Option<Value>, Option<Value>, Option<Value>) {
        match self {
            Acc::Unsupported => (None, None, None),
            Acc::Int(range, sum) => {
                let (min, max) = range.render(|&v| match (i64::try_from(v), u64::try_from(v)) {
                    (Ok(v), _) => Value::from(v),
                    (_, Ok(v)) => Value::from(v),
                    _ => Value::from(v.to_string()),
                });
                (min, max, sum.render())
            }
            Acc::Float(acc) => acc.render(),
            Acc::Decimal { scale, range, sum } => {
                let (min, max) = range.render(|&v| Value::from(format_decimal(v, *scale)));
                let sum = match sum.sum {
                    _ if sum.overflow => Some(Value::from("overflow")),
                    Some(v) => Some(Value::from(format_decimal(v, *scale))),
                    None => None,
                };
                (min, max, sum)
            }
            Acc::Bool(range) => {
                let (min, max) = range.render(|&v| Value::from(v));
                (min, max, None)
            }
            Acc::Str(range) => {
                let (min, max) = range.render(|v| Value::from(v.as_str()));
                (min, max, None)
            }
            Acc::Temporal(kind, range) => {
                let (min, max) = range.render(|&v| Value::from(format_temporal(*kind, v)));
                (min, max, None)
            }
        }
    }
}

/// A float as JSON: a number, or "NaN", "Infinity", "-Infinity" (JSON has none of them).
fn float_json(v: f64) -> Value {
    match serde_json::Number::from_f64(v) {
        Some(n) => Value::Number(n),
        None if v.is_nan() => Value::from("NaN"),
        None if v > 0.0 => Value::from("Infinity"),
        None => Value::from("-Infinity"),
    }
}

/// An unscaled decimal with exactly `scale` fraction digits: `(-5, 2)` → `"-0.05"`.
fn format_decimal(value: i256, scale: i8) -> String {
    let text = value.to_string();
    let (sign, digits) = match text.strip_prefix('-') {
        Some(digits) => ("-", digits),
        None => ("", text.as_str()),
    };
    if scale <= 0 {
        let zeros = if digits == "0" {
            0
        } else {
            usize::from(scale.unsigned_abs())
        };
        return format!("{sign}{digits}{}", "0".repeat(zeros));
    }
    let scale = usize::from(scale.unsigned_abs());
    let digits = format!("{digits:0>width$}", width = scale + 1);
    let (int, frac) = digits.split_at(digits.len() - scale);
    format!("{sign}{int}.{frac}")
}

/// Raw date or timestamp ticks as text.
fn format_temporal(kind: Temporal, raw: i64) -> String {
    let formatted = match kind {
        Temporal::Date32 | Temporal::Date64 => {
            let days = if kind == Temporal::Date64 {
                raw.div_euclid(86_400_000)
            } else {
                raw
            };
            i32::try_from(days)
                .ok()
                .and_then(NaiveDate::from_epoch_days)
                .map(|d| d.format("%Y-%m-%d").to_string())
        }
        Temporal::Timestamp(unit, tz) => {
            let micros = match unit {
                TimeUnit::Second => raw.checked_mul(1_000_000),
                TimeUnit::Millisecond => raw.checked_mul(1_000),
                TimeUnit::Microsecond => Some(raw),
                TimeUnit::Nanosecond => Some(raw.div_euclid(1_000)),
            };
            micros.and_then(DateTime::from_timestamp_micros).map(|t| {
                let text = t.naive_utc().format("%Y-%m-%dT%H:%M:%S%.6f").to_string();
                if tz { text + "Z" } else { text }
            })
        }
    };
    formatted.unwrap_or_else(|| format!("{raw} ({kind:?} ticks since 1970-01-01, out of range)"))
}

/// The JSON rendering of one value, in the formats of this module's table (also used by tests to
/// compare rows). Null (and a row past the end) is JSON null; structs are objects, lists arrays,
/// maps objects with their keys as text; binary is lowercase hex; dictionaries are unpacked; other
/// types are strings in Arrow's display format.
pub fn json_value(array: &dyn Array, row: usize) -> Value {
    if row >= array.len() || array.is_null(row) {
        return Value::Null;
    }
    use DataType as D;
    use TimeUnit as U;
    match array.data_type() {
        D::Null => Value::Null,
        D::Int8 => array.as_primitive::<Int8Type>().value(row).into(),
        D::Int16 => array.as_primitive::<Int16Type>().value(row).into(),
        D::Int32 => array.as_primitive::<Int32Type>().value(row).into(),
        D::Int64 => array.as_primitive::<Int64Type>().value(row).into(),
        D::UInt8 => array.as_primitive::<UInt8Type>().value(row).into(),
        D::UInt16 => array.as_primitive::<UInt16Type>().value(row).into(),
        D::UInt32 => array.as_primitive::<UInt32Type>().value(row).into(),
        D::UInt64 => array.as_primitive::<UInt64Type>().value(row).into(),
        D::Float16 => float_json(array.as_primitive::<Float16Type>().value(row).into()),
        D::Float32 => float_json(array.as_primitive::<Float32Type>().value(row).into()),
        D::Float64 => float_json(array.as_primitive::<Float64Type>().value(row)),
        D::Decimal32(_, s) => {
            format_decimal(array.as_primitive::<Decimal32Type>().value(row).widen(), *s).into()
        }
        D::Decimal64(_, s) => {
            format_decimal(array.as_primitive::<Decimal64Type>().value(row).widen(), *s).into()
        }
        D::Decimal128(_, s) => format_decimal(
            array.as_primitive::<Decimal128Type>().value(row).widen(),
            *s,
        )
        .into(),
        D::Decimal256(_, s) => {
            format_decimal(array.as_primitive::<Decimal256Type>().value(row), *s).into()
        }
        D::Boolean => array.as_boolean().value(row).into(),
        D::Utf8 => array.as_string::<i32>().value(row).into(),
        D::LargeUtf8 => array.as_string::<i64>().value(row).into(),
        D::Utf8View => array.as_string_view().value(row).into(),
        D::Binary => hex(array.as_binary::<i32>().value(row)),
        D::LargeBinary => hex(array.as_binary::<i64>().value(row)),
        D::BinaryView => hex(array.as_binary_view().value(row)),
        D::FixedSizeBinary(_) => hex(array.as_fixed_size_binary().value(row)),
        D::Date32 => {
            let days = array.as_primitive::<Date32Type>().value(row);
            format_temporal(Temporal::Date32, days.into()).into()
        }
        D::Date64 => format_temporal(
            Temporal::Date64,
            array.as_primitive::<Date64Type>().value(row),
        )
        .into(),
        D::Timestamp(unit, tz) => {
            let raw = match unit {
                U::Second => array.as_primitive::<TimestampSecondType>().value(row),
                U::Millisecond => array.as_primitive::<TimestampMillisecondType>().value(row),
                U::Microsecond => array.as_primitive::<TimestampMicrosecondType>().value(row),
                U::Nanosecond => array.as_primitive::<TimestampNanosecondType>().value(row),
            };
            format_temporal(Temporal::Timestamp(*unit, tz.is_some()), raw).into()
        }
        D::Struct(fields) => {
            let array = array.as_struct();
            let object = fields
                .iter()
                .zip(array.columns())
                .map(|(field, column)| (field.name().clone(), json_value(column.as_ref(), row)))
                .collect();
            Value::Object(object)
        }
        D::List(_) => json_list(array.as_list::<i32>().value(row).as_ref()),
        D::LargeList(_) => json_list(array.as_list::<i64>().value(row).as_ref()),
        D::FixedSizeList(..) => json_list(array.as_fixed_size_list().value(row).as_ref()),
        D::Map(..) => {
            let entries = array.as_map().value(row);
            let (keys, values) = (entries.column(0), entries.column(1));
            let object = (0..entries.len())
                .map(|i| {
                    let key = match json_value(keys.as_ref(), i) {
                        Value::String(key) => key,
                        key => key.to_string(),
                    };
                    (key, json_value(values.as_ref(), i))
                })
                .collect();
            Value::Object(object)
        }
        D::Dictionary(keys, _) => {
            let key = match keys.as_ref() {
                D::Int8 => array.as_dictionary::<Int8Type>().key(row),
                D::Int16 => array.as_dictionary::<Int16Type>().key(row),
                D::Int32 => array.as_dictionary::<Int32Type>().key(row),
                D::Int64 => array.as_dictionary::<Int64Type>().key(row),
                D::UInt8 => array.as_dictionary::<UInt8Type>().key(row),
                D::UInt16 => array.as_dictionary::<UInt16Type>().key(row),
                D::UInt32 => array.as_dictionary::<UInt32Type>().key(row),
                D::UInt64 => array.as_dictionary::<UInt64Type>().key(row),
                _ => None,
            };
            match (key, array.as_any_dictionary_opt()) {
                (Some(key), Some(dictionary)) => json_value(dictionary.values().as_ref(), key),
                _ => Value::Null,
            }
        }
        _ => match ArrayFormatter::try_new(array, &FormatOptions::default()) {
            Ok(formatter) => formatter.value(row).to_string().into(),
            Err(e) => format!("<{}: {e}>", array.data_type()).into(),
        },
    }
}

fn json_list(values: &dyn Array) -> Value {
    Value::Array((0..values.len()).map(|i| json_value(values, i)).collect())
}

fn hex(bytes: &[u8]) -> Value {
    let mut text = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(text, "{b:02x}");
    }
    Value::String(text)
}

/// Spark-style type name of an Arrow type (as in [`ColumnStats::data_type`]). A dictionary is named
/// after its values, which is what Spark reads it as.
pub fn spark_type_name(data_type: &DataType) -> String {
    use DataType as D;
    match data_type {
        D::Int64 => "bigint".into(),
        D::Int32 => "int".into(),
        D::Int16 => "smallint".into(),
        D::Int8 => "tinyint".into(),
        D::Float32 => "float".into(),
        D::Float64 => "double".into(),
        D::Decimal32(p, s) | D::Decimal64(p, s) | D::Decimal128(p, s) | D::Decimal256(p, s) => {
            format!("decimal({p},{s})")
        }
        D::Utf8 | D::LargeUtf8 | D::Utf8View => "string".into(),
        D::Boolean => "boolean".into(),
        D::Date32 | D::Date64 => "date".into(),
        D::Timestamp(_, Some(_)) => "timestamp".into(),
        D::Timestamp(_, None) => "timestamp_ntz".into(),
        D::Binary | D::LargeBinary | D::BinaryView => "binary".into(),
        D::Dictionary(_, values) => spark_type_name(values),
        other => other.to_string(),
    }
}

impl DatasetStats {
    /// A human-readable table: a header line with rows, then one line per column: name, type,
    /// nullable, nulls, min, max, sum (aligned columns).
    pub fn render_text(&self) -> String {
        let header = ["column", "type", "nullable", "nulls", "min", "max", "sum"].map(String::from);
        let mut table = vec![header];
        for c in &self.columns {
            table.push([
                text_cell(&c.name),
                c.data_type.clone(),
                if c.nullable { "yes" } else { "no" }.to_owned(),
                c.nulls.to_string(),
                value_cell(c.min.as_ref()),
                value_cell(c.max.as_ref()),
                value_cell(c.sum.as_ref()),
            ]);
        }
        let mut widths = [0; 7];
        for row in &table {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = format!("rows: {}, columns: {}\n", self.rows, self.columns.len());
        for row in &table {
            let mut line = String::new();
            for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
                let _ = match i {
                    0 => write!(line, "{cell:<w$}"),
                    3 => write!(line, "  {cell:>w$}"),
                    _ => write!(line, "  {cell:<w$}"),
                };
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// A value for the text table: strings without quotes, nothing as "-".
fn value_cell(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => "-".to_owned(),
        Some(Value::String(s)) => text_cell(s),
        Some(v) => v.to_string(),
    }
}

/// Text on one line and at most 40 characters: control characters escaped, the rest cut with "…".
fn text_cell(s: &str) -> String {
    const MAX: usize = 40;
    let mut escaped = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            escaped.extend(c.escape_default());
        } else {
            escaped.push(c);
        }
    }
    if escaped.chars().count() <= MAX {
        return escaped;
    }
    let mut cut: String = escaped.chars().take(MAX - 1).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::*;
    use serde_json::json;

    use super::*;

    /// Stats of one column, fed as the given batches (each a single array).
    fn stats_of(field: Field, arrays: Vec<ArrayRef>) -> ColumnStats {
        let schema = Arc::new(Schema::new(vec![field]));
        let mut builder = StatsBuilder::new(schema.clone());
        for array in arrays {
            builder
                .update(&RecordBatch::try_new(schema.clone(), vec![array]).unwrap())
                .unwrap();
        }
        let mut stats = builder.finish();
        assert_eq!(stats.columns.len(), 1);
        stats.columns.remove(0)
    }

    fn one(array: ArrayRef) -> ColumnStats {
        stats_of(
            Field::new("c", array.data_type().clone(), true),
            vec![array],
        )
    }

    /// (nulls, min, max, sum) for compact assertions.
    fn summary(c: &ColumnStats) -> (u64, Option<Value>, Option<Value>, Option<Value>) {
        (c.nulls, c.min.clone(), c.max.clone(), c.sum.clone())
    }

    #[test]
    fn integers_sum_exactly_and_overflow_into_a_string() {
        let a: ArrayRef = Arc::new(Int64Array::from(vec![
            Some(5),
            None,
            Some(-3),
            Some(i64::MAX),
        ]));
        let b: ArrayRef = Arc::new(Int64Array::from(vec![Some(i64::MAX), Some(i64::MIN + 1)]));
        let c = stats_of(Field::new("id", DataType::Int64, true), vec![a, b]);
        assert_eq!(c.data_type, "bigint");
        // 5 - 3 + 2 * (2^63 - 1) - (2^63 - 1) = 2^63 + 1, past i64::MAX.
        assert_eq!(
            summary(&c),
            (
                1,
                Some(json!(i64::MIN + 1)),
                Some(json!(i64::MAX)),
                Some(json!("9223372036854775809"))
            )
        );

        let c = one(Arc::new(Int64Array::from(vec![i64::MAX, i64::MAX])));
        assert_eq!(c.sum, Some(json!("18446744073709551614")));

        let c = one(Arc::new(Int8Array::from(vec![100, 100, -128])));
        assert_eq!(
            (c.data_type.as_str(), summary(&c)),
            (
                "tinyint",
                (0, Some(json!(-128)), Some(json!(100)), Some(json!(72)))
            )
        );
        let c = one(Arc::new(Int16Array::from(vec![i16::MAX, i16::MAX])));
        assert_eq!(
            (c.data_type.as_str(), c.sum),
            ("smallint", Some(json!(65534)))
        );
        let c = one(Arc::new(Int32Array::from(vec![i32::MIN, i32::MIN])));
        assert_eq!(
            (c.data_type.as_str(), c.sum),
            ("int", Some(json!(-4294967296_i64)))
        );

        let c = one(Arc::new(UInt64Array::from(vec![
            Some(u64::MAX),
            Some(1),
            None,
        ])));
        assert_eq!(c.data_type, "UInt64");
        assert_eq!(
            summary(&c),
            (
                1,
                Some(json!(1)),
                Some(json!(u64::MAX)),
                Some(json!("18446744073709551616"))
            )
        );
        let c = one(Arc::new(UInt8Array::from(vec![255, 255])));
        assert_eq!(c.sum, Some(json!(510)));
    }

    #[test]
    fn all_null_and_empty_columns_have_no_min_max_sum() {
        let c = one(Arc::new(Int32Array::from(vec![None, None, None])));
        assert_eq!(summary(&c), (3, None, None, None));
        let c = one(Arc::new(Float64Array::from(vec![None, None])));
        assert_eq!(summary(&c), (2, None, None, None));
        let c = one(Arc::new(
            Decimal128Array::from(vec![None::<i128>])
                .with_precision_and_scale(5, 2)
                .unwrap(),
        ));
        assert_eq!(summary(&c), (1, None, None, None));
        let c = one(Arc::new(StringArray::from(vec![None::<&str>])));
        assert_eq!(summary(&c), (1, None, None, None));
        let c = one(Arc::new(NullArray::new(4)));
        assert_eq!(
            (c.data_type.as_str(), summary(&c)),
            ("Null", (4, None, None, None))
        );
        let c = one(Arc::new(Int64Array::from(Vec::<i64>::new())));
        assert_eq!(summary(&c), (0, None, None, None));
    }

    #[test]
    fn floats_order_nan_above_everything() {
        let a: ArrayRef = Arc::new(Float64Array::from(vec![
            Some(1.5),
            Some(f64::NAN),
            Some(-2.25),
            None,
            Some(f64::INFINITY),
        ]));
        let c = one(a);
        assert_eq!(c.data_type, "double");
        assert_eq!(
            summary(&c),
            (
                1,
                Some(json!(-2.25)),
                Some(json!("NaN")),
                Some(json!("NaN"))
            )
        );

        // A negative NaN is still NaN: above every number, ignored by min.
        let c = one(Arc::new(Float64Array::from(vec![
            -f64::NAN,
            3.0,
            f64::NEG_INFINITY,
        ])));
        assert_eq!(
            summary(&c),
            (
                0,
                Some(json!("-Infinity")),
                Some(json!("NaN")),
                Some(json!("NaN"))
            )
        );

        let c = one(Arc::new(Float64Array::from(vec![f64::NAN, -f64::NAN])));
        assert_eq!(
            summary(&c),
            (
                0,
                Some(json!("NaN")),
                Some(json!("NaN")),
                Some(json!("NaN"))
            )
        );

        let c = one(Arc::new(Float64Array::from(vec![1.0, f64::NEG_INFINITY])));
        assert_eq!(
            summary(&c),
            (
                0,
                Some(json!("-Infinity")),
                Some(json!(1.0)),
                Some(json!("-Infinity"))
            )
        );
        let c = one(Arc::new(Float64Array::from(vec![0.5, f64::INFINITY])));
        assert_eq!(c.max, Some(json!("Infinity")));

        // Float32 is widened exactly, and summed widened.
        let c = one(Arc::new(Float32Array::from(vec![
            Some(0.1_f32),
            None,
            Some(2.5),
        ])));
        assert_eq!(c.data_type, "float");
        assert_eq!(
            summary(&c),
            (
                1,
                Some(json!(0.10000000149011612)),
                Some(json!(2.5)),
                Some(json!(f64::from(0.1_f32) + 2.5))
            )
        );
    }

    fn decimal(values: Vec<Option<i128>>, p: u8, s: i8) -> ArrayRef {
        Arc::new(
            Decimal128Array::from(values)
                .with_precision_and_scale(p, s)
                .unwrap(),
        )
    }

    #[test]
    fn decimals_keep_their_scale() {
        let c = one(decimal(vec![Some(123_450), Some(-5), Some(0), None], 12, 2));
        assert_eq!(c.data_type, "decimal(12,2)");
        assert_eq!(
            summary(&c),
            (
                1,
                Some(json!("-0.05")),
                Some(json!("1234.50")),
                Some(json!("1234.45"))
            )
        );
        let a = decimal(vec![Some(0), Some(-123_456), Some(7)], 9, 3);
        assert_eq!(json_value(a.as_ref(), 0), json!("0.000"));
        assert_eq!(json_value(a.as_ref(), 1), json!("-123.456"));
        assert_eq!(json_value(a.as_ref(), 2), json!("0.007"));
        let a = decimal(vec![Some(-12), Some(0)], 5, 0);
        assert_eq!(one(a).sum, Some(json!("-12")));

        // Two values near the Decimal128 limit: the sum needs more than 128 bits.
        let big = 10_i128.pow(38) - 1;
        let c = one(decimal(vec![Some(big), Some(big), Some(big)], 38, 1));
        assert_eq!(
            c.max,
            Some(json!("9999999999999999999999999999999999999.9"))
        );
        assert_eq!(
            c.sum,
            Some(json!("29999999999999999999999999999999999999.7"))
        );
        // ... also when the overflow only happens across batches.
        let c = stats_of(
            Field::new("d", DataType::Decimal128(38, 0), true),
            vec![
                decimal(vec![Some(big)], 38, 0),
                decimal(vec![Some(big)], 38, 0),
            ],
        );
        assert_eq!(
            c.sum,
            Some(json!("199999999999999999999999999999999999998"))
        );

        let a: ArrayRef = Arc::new(
            Decimal256Array::from(vec![
                Some(i256::from_i128(-1_500)),
                None,
                Some(i256::from_i128(250)),
            ])
            .with_precision_and_scale(50, 3)
            .unwrap(),
        );
        let c = one(a);
        assert_eq!(c.data_type, "decimal(50,3)");
        assert_eq!(
            summary(&c),
            (
                1,
                Some(json!("-1.500")),
                Some(json!("0.250")),
                Some(json!("-1.250"))
            )
        );
    }

    #[test]
    fn format_decimal_pads_and_signs() {
        let f = |v: i128, s: i8| format_decimal(i256::from_i128(v), s);
        assert_eq!(f(0, 2), "0.00");
        assert_eq!(f(-5, 2), "-0.05");
        assert_eq!(f(123_450, 2), "1234.50");
        assert_eq!(f(-100, 2), "-1.00");
        assert_eq!(f(42, 0), "42");
        assert_eq!(f(42, -2), "4200");
        assert_eq!(f(0, -2), "0");
    }

    #[test]
    fn booleans_and_strings() {
        let c = one(Arc::new(BooleanArray::from(vec![
            Some(true),
            None,
            Some(false),
        ])));
        assert_eq!(
            (c.data_type.as_str(), summary(&c)),
            ("boolean", (1, Some(json!(false)), Some(json!(true)), None))
        );
        let c = one(Arc::new(BooleanArray::from(vec![true, true])));
        assert_eq!(summary(&c), (0, Some(json!(true)), Some(json!(true)), None));

        let values = vec![Some("b"), Some("a"), Some("ä"), None, Some("")];
        let expected = (1, Some(json!("")), Some(json!("ä")), None);
        for array in [
            Arc::new(StringArray::from(values.clone())) as ArrayRef,
            Arc::new(LargeStringArray::from(values.clone())),
            Arc::new(StringViewArray::from(values.clone())),
        ] {
            let c = one(array);
            assert_eq!(
                (c.data_type.as_str(), summary(&c)),
                ("string", expected.clone())
            );
        }

        // Byte order: uppercase before lowercase, across batches.
        let c = stats_of(
            Field::new("s", DataType::Utf8, false),
            vec![
                Arc::new(StringArray::from(vec!["banana", "apple"])),
                Arc::new(StringArray::from(vec!["Zebra", "cherry"])),
            ],
        );
        assert_eq!(
            summary(&c),
            (0, Some(json!("Zebra")), Some(json!("cherry")), None)
        );
        assert!(!c.nullable);
    }

    #[test]
    fn dictionaries_are_unpacked() {
        // "zzz" is in the dictionary but no row uses it.
        let values = StringArray::from(vec!["m", "zzz", "b"]);
        let keys = Int32Array::from(vec![Some(0), None, Some(2), Some(0)]);
        let dict: ArrayRef = Arc::new(DictionaryArray::try_new(keys, Arc::new(values)).unwrap());
        assert_eq!(json_value(dict.as_ref(), 0), json!("m"));
        assert_eq!(json_value(dict.as_ref(), 1), Value::Null);
        assert_eq!(json_value(dict.as_ref(), 2), json!("b"));
        let c = one(dict);
        assert_eq!(
            (c.data_type.as_str(), summary(&c)),
            ("string", (1, Some(json!("b")), Some(json!("m")), None))
        );

        let keys = UInt8Array::from(vec![1, 0, 1]);
        let dict: ArrayRef = Arc::new(
            DictionaryArray::try_new(keys, Arc::new(Int64Array::from(vec![10, -4]))).unwrap(),
        );
        let c = one(dict);
        assert_eq!(
            (c.data_type.as_str(), summary(&c)),
            (
                "bigint",
                (0, Some(json!(-4)), Some(json!(10)), Some(json!(2)))
            )
        );
    }

    #[test]
    fn dates_are_proleptic_gregorian() {
        // 0001-01-01, 1582-10-04 (the day before the Julian-Gregorian switch), 2024-02-29.
        let a: ArrayRef = Arc::new(Date32Array::from(vec![
            Some(19_782),
            Some(-719_162),
            None,
            Some(-141_438),
        ]));
        assert_eq!(json_value(a.as_ref(), 0), json!("2024-02-29"));
        assert_eq!(json_value(a.as_ref(), 3), json!("1582-10-04"));
        let c = one(a);
        assert_eq!(
            (c.data_type.as_str(), summary(&c)),
            (
                "date",
                (
                    1,
                    Some(json!("0001-01-01")),
                    Some(json!("2024-02-29")),
                    None
                )
            )
        );
        assert_eq!(
            json_value(&Date32Array::from(vec![-141_427]), 0),
            json!("1582-10-15")
        );
        assert_eq!(
            json_value(&Date32Array::from(vec![2_932_896]), 0),
            json!("9999-12-31")
        );

        let day = 86_400_000_i64;
        let c = one(Arc::new(Date64Array::from(vec![
            19_782 * day,
            -719_162 * day,
            -1,
        ])));
        assert_eq!(
            summary(&c),
            (
                0,
                Some(json!("0001-01-01")),
                Some(json!("2024-02-29")),
                None
            )
        );
        assert_eq!(
            json_value(&Date64Array::from(vec![-1]), 0),
            json!("1969-12-31")
        );
    }

    #[test]
    fn timestamps_render_microseconds_in_utc() {
        let ns = TimestampNanosecondArray::from(vec![
            Some(1_700_000_000_123_456_789),
            Some(-1),
            None,
            Some(1_001),
            Some(1_000),
        ])
        .with_timezone("UTC");
        assert_eq!(json_value(&ns, 0), json!("2023-11-14T22:13:20.123456Z"));
        // Truncated toward -inf, not toward zero.
        assert_eq!(json_value(&ns, 1), json!("1969-12-31T23:59:59.999999Z"));
        let c = one(Arc::new(ns));
        assert_eq!(
            (c.data_type.as_str(), summary(&c)),
            (
                "timestamp",
                (
                    1,
                    Some(json!("1969-12-31T23:59:59.999999Z")),
                    Some(json!("2023-11-14T22:13:20.123456Z")),
                    None
                )
            )
        );
        // Order is kept on the raw nanoseconds: 1001 ns beats 1000 ns though both show as 1 µs.
        let c = one(Arc::new(
            TimestampNanosecondArray::from(vec![1_001, 1_000]).with_timezone("+02:00"),
        ));
        assert_eq!(
            (c.min, c.max),
            (
                Some(json!("1970-01-01T00:00:00.000001Z")),
                Some(json!("1970-01-01T00:00:00.000001Z"))
            )
        );

        let c = one(Arc::new(TimestampSecondArray::from(vec![
            Some(0),
            Some(-62_135_596_800),
            None,
        ])));
        assert_eq!(
            (c.data_type.as_str(), summary(&c)),
            (
                "timestamp_ntz",
                (
                    1,
                    Some(json!("0001-01-01T00:00:00.000000")),
                    Some(json!("1970-01-01T00:00:00.000000")),
                    None
                )
            )
        );
        let ms = TimestampMillisecondArray::from(vec![1_700_000_000_123]).with_timezone("UTC");
        assert_eq!(json_value(&ms, 0), json!("2023-11-14T22:13:20.123000Z"));
        let us = TimestampMicrosecondArray::from(vec![1_700_000_000_123_456]);
        assert_eq!(json_value(&us, 0), json!("2023-11-14T22:13:20.123456"));
        let huge = TimestampSecondArray::from(vec![i64::MAX]);
        assert!(
            json_value(&huge, 0)
                .as_str()
                .unwrap()
                .contains("out of range")
        );
    }

    #[test]
    fn unordered_types_only_count_nulls() {
        let c = one(Arc::new(BinaryArray::from(vec![
            Some(&b"\x00\xff"[..]),
            None,
        ])));
        assert_eq!(
            (c.data_type.as_str(), summary(&c)),
            ("binary", (1, None, None, None))
        );

        let list: ArrayRef = Arc::new(ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
            Some(vec![Some(1), None]),
            None,
            Some(vec![]),
        ]));
        let c = one(list.clone());
        assert_eq!(summary(&c), (1, None, None, None));
        assert_eq!(c.data_type, list.data_type().to_string());
        assert_eq!(json_value(list.as_ref(), 0), json!([1, null]));
        assert_eq!(json_value(list.as_ref(), 1), Value::Null);
        assert_eq!(json_value(list.as_ref(), 2), json!([]));

        let strukt = StructArray::from(vec![
            (
                Arc::new(Field::new("a", DataType::Utf8, true)),
                Arc::new(StringArray::from(vec!["x", "y"])) as ArrayRef,
            ),
            (
                Arc::new(Field::new("b", DataType::Float64, true)),
                Arc::new(Float64Array::from(vec![f64::NAN, 2.0])),
            ),
        ]);
        assert_eq!(json_value(&strukt, 0), json!({"a": "x", "b": "NaN"}));
        let c = one(Arc::new(strukt));
        assert_eq!(summary(&c), (0, None, None, None));

        let mut map = MapBuilder::new(None, Int32Builder::new(), StringBuilder::new());
        map.keys().append_value(7);
        map.values().append_value("seven");
        map.append(true).unwrap();
        let map = map.finish();
        assert_eq!(json_value(&map, 0), json!({"7": "seven"}));

        assert_eq!(
            json_value(&BinaryArray::from(vec![&b"\x00\xabZ"[..]]), 0),
            json!("00ab5a")
        );
        assert_eq!(json_value(&Int32Array::from(vec![1]), 5), Value::Null);
        assert_eq!(
            json_value(&Time32SecondArray::from(vec![3_661]), 0),
            json!("01:01:01")
        );
    }

    #[test]
    fn spark_type_names() {
        let tz = Some(Arc::from("UTC"));
        for (t, name) in [
            (DataType::Int64, "bigint"),
            (DataType::Int32, "int"),
            (DataType::Int16, "smallint"),
            (DataType::Int8, "tinyint"),
            (DataType::Float32, "float"),
            (DataType::Float64, "double"),
            (DataType::Decimal128(12, 2), "decimal(12,2)"),
            (DataType::Decimal256(40, 0), "decimal(40,0)"),
            (DataType::Utf8, "string"),
            (DataType::LargeUtf8, "string"),
            (DataType::Utf8View, "string"),
            (DataType::Boolean, "boolean"),
            (DataType::Date32, "date"),
            (DataType::Timestamp(TimeUnit::Microsecond, tz), "timestamp"),
            (
                DataType::Timestamp(TimeUnit::Nanosecond, None),
                "timestamp_ntz",
            ),
            (DataType::Binary, "binary"),
            (DataType::UInt32, "UInt32"),
            (
                DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
                "string",
            ),
        ] {
            assert_eq!(spark_type_name(&t), name, "{t}");
        }
    }

    fn mixed_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("score", DataType::Float64, true),
            Field::new("price", DataType::Decimal128(12, 2), true),
            Field::new("name", DataType::Utf8, true),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
                true,
            ),
            Field::new("blob", DataType::Binary, true),
        ]))
    }

    /// A deterministic pseudo-random batch of `mixed_schema`.
    fn mixed_batch(seed: u64, rows: usize) -> RecordBatch {
        let mut state = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let mut next = move || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            state >> 33
        };
        let mut ids = vec![];
        let mut scores = vec![];
        let mut prices = vec![];
        let mut names = vec![];
        let mut ts = vec![];
        let mut blobs = vec![];
        for _ in 0..rows {
            let r = next();
            ids.push(r as i64 * if r % 2 == 0 { 1 << 32 } else { -1 });
            scores.push((r % 7 != 0).then(|| {
                if r % 13 == 0 {
                    f64::NAN
                } else {
                    (r % 1000) as f64 / 8.0 - 50.0
                }
            }));
            prices.push((r % 5 != 0).then_some(r as i128 % 100_000 - 50_000));
            names.push((r % 3 != 0).then(|| format!("n{}", r % 97)));
            ts.push((r % 11 != 0).then_some(r as i64 * 1_000_003 - (1 << 50)));
            blobs.push((r % 2 == 0).then(|| r.to_le_bytes().to_vec()));
        }
        RecordBatch::try_new(
            mixed_schema(),
            vec![
                Arc::new(Int64Array::from(ids)),
                Arc::new(Float64Array::from(scores)),
                Arc::new(
                    Decimal128Array::from(prices)
                        .with_precision_and_scale(12, 2)
                        .unwrap(),
                ),
                Arc::new(StringArray::from(names)),
                Arc::new(TimestampNanosecondArray::from(ts).with_timezone("UTC")),
                Arc::new(BinaryArray::from_iter(blobs)),
            ],
        )
        .unwrap()
    }

    #[test]
    fn merged_workers_equal_one_builder() {
        let batches: Vec<_> = (0..6)
            .map(|i| mixed_batch(i, 50 + 37 * i as usize))
            .collect();
        let mut single = StatsBuilder::new(mixed_schema());
        for b in &batches {
            single.update(b).unwrap();
        }
        let single = single.finish();

        let mut workers: Vec<_> = (0..3).map(|_| StatsBuilder::new(mixed_schema())).collect();
        for (i, b) in batches.iter().enumerate() {
            workers[i / 2].update(b).unwrap();
        }
        let mut merged = StatsBuilder::new(mixed_schema());
        for w in workers {
            merged.merge(w).unwrap();
        }
        let merged = merged.finish();
        assert_eq!(merged, single);

        // And both agree with a plain recompute over the rows.
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        assert_eq!(single.rows, rows as u64);
        let ids: Vec<i64> = batches
            .iter()
            .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
            .collect();
        let id = &single.columns[0];
        assert_eq!(id.min, Some(json!(ids.iter().min().unwrap())));
        assert_eq!(id.max, Some(json!(ids.iter().max().unwrap())));
        let sum: i128 = ids.iter().map(|&v| i128::from(v)).sum();
        let expected_sum = i64::try_from(sum).map_or_else(|_| json!(sum.to_string()), |v| json!(v));
        assert_eq!(id.sum, Some(expected_sum));
        let nulls = |i: usize| {
            batches
                .iter()
                .map(|b| b.column(i).null_count() as u64)
                .sum::<u64>()
        };
        for (i, c) in single.columns.iter().enumerate() {
            assert_eq!(c.nulls, nulls(i), "{}", c.name);
        }
        let names: Vec<Value> = batches
            .iter()
            .flat_map(|b| (0..b.num_rows()).map(|r| json_value(b.column(3), r)))
            .collect();
        let names: Vec<&str> = names.iter().filter_map(Value::as_str).collect();
        assert_eq!(
            single.columns[3].min,
            Some(json!(names.iter().min().unwrap()))
        );
        assert_eq!(
            single.columns[3].max,
            Some(json!(names.iter().max().unwrap()))
        );
        assert_eq!(single.columns[1].max, Some(json!("NaN")));
        assert_eq!(summary(&single.columns[5]), (nulls(5), None, None, None));

        // Merging an empty builder changes nothing.
        let mut builder = StatsBuilder::new(mixed_schema());
        builder.update(&batches[0]).unwrap();
        let alone = StatsBuilder::new(mixed_schema());
        let mut with_empty = StatsBuilder::new(mixed_schema());
        with_empty.update(&batches[0]).unwrap();
        with_empty.merge(alone).unwrap();
        assert_eq!(with_empty.finish(), builder.finish());
    }

    #[test]
    fn schema_mismatch_names_the_field() {
        let mut builder = StatsBuilder::new(mixed_schema());
        let other = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("score", DataType::Float32, true),
        ]));
        let batch = RecordBatch::try_new(
            other.clone(),
            vec![
                Arc::new(Int64Array::from(vec![1])),
                Arc::new(Float32Array::from(vec![1.0])),
            ],
        )
        .unwrap();
        let msg = builder.update(&batch).unwrap_err().to_string();
        assert!(msg.contains("`score` of type Float64"), "{msg}");
        assert!(msg.contains("`score` of type Float32"), "{msg}");
        let msg = builder
            .merge(StatsBuilder::new(other))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("`score`"), "{msg}");

        // Same types, a missing trailing field: named too.
        let short = Arc::new(Schema::new(mixed_schema().fields()[..5].to_vec()));
        let msg = builder
            .merge(StatsBuilder::new(short))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("`blob`"), "{msg}");
        // Renamed field.
        let mut fields = mixed_schema().fields().to_vec();
        fields[3] = Arc::new(Field::new("label", DataType::Utf8, true));
        let msg = builder
            .merge(StatsBuilder::new(Arc::new(Schema::new(fields))))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("`name`") && msg.contains("`label`"), "{msg}");
        // Nothing was counted by the failed calls.
        assert_eq!(builder.finish().rows, 0);
    }

    #[test]
    fn render_text_is_an_aligned_table() {
        let mut builder = StatsBuilder::new(mixed_schema());
        builder.update(&mixed_batch(1, 20)).unwrap();
        let stats = builder.finish();
        let text = stats.render_text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "rows: 20, columns: 6");
        assert_eq!(lines.len(), 2 + 6, "{text}");
        assert!(lines[1].starts_with("column"), "{text}");
        for (word, name) in lines[1]
            .split_whitespace()
            .zip(["column", "type", "nullable", "nulls", "min", "max", "sum"])
        {
            assert_eq!(word, name);
        }
        // The type column starts at the same place on every line.
        let at = lines[1].find("type").unwrap();
        for (line, c) in lines[2..].iter().zip(&stats.columns) {
            assert!(line.starts_with(&c.name), "{line}");
            assert_eq!(&line[at..at + c.data_type.len()], c.data_type, "{text}");
            let cells: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(cells[3], c.nulls.to_string(), "{line}");
        }
        let id = lines[2].split_whitespace().collect::<Vec<_>>();
        assert_eq!(id[..3], ["id", "bigint", "no"]);
        assert_eq!(id[4], stats.columns[0].min.as_ref().unwrap().to_string());
        let price = lines[4].split_whitespace().collect::<Vec<_>>();
        // Strings show without quotes.
        assert_eq!(
            price[4],
            stats.columns[2].min.as_ref().unwrap().as_str().unwrap()
        );
        let blob: Vec<&str> = lines[7].split_whitespace().collect();
        assert_eq!(
            blob,
            [
                "blob",
                "binary",
                "yes",
                &stats.columns[5].nulls.to_string(),
                "-",
                "-",
                "-"
            ],
            "{text}"
        );

        let odd = DatasetStats {
            rows: 1,
            columns: vec![ColumnStats {
                name: "s".into(),
                data_type: "string".into(),
                nullable: true,
                nulls: 0,
                min: Some(json!("a\nb")),
                max: Some(json!("x".repeat(100))),
                sum: None,
            }],
        };
        let text = odd.render_text();
        assert_eq!(text.lines().count(), 3, "{text}");
        assert!(text.contains("a\\nb"), "{text}");
        assert!(text.contains(&format!("{}…", "x".repeat(39))), "{text}");
    }

    #[test]
    fn stats_round_trip_through_json() {
        let mut builder = StatsBuilder::new(mixed_schema());
        builder.update(&mixed_batch(3, 40)).unwrap();
        let stats = builder.finish();
        let text = serde_json::to_string(&stats).unwrap();
        let back: DatasetStats = serde_json::from_str(&text).unwrap();
        assert_eq!(back, stats);
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["rows"], json!(40));
        assert_eq!(v["columns"][2]["data_type"], json!("decimal(12,2)"));
        assert_eq!(v["columns"][5]["min"], Value::Null);
    }
}
