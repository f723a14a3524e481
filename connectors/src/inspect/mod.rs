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
mod tests;
