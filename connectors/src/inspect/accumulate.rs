//! The typed running state of each column: min, max, sum and null count.

use super::*;

/// The running state of one column.
#[derive(Debug)]
pub(super) struct ColumnAcc {
    pub(super) nulls: u64,
    pub(super) acc: Acc,
}

/// Typed running min/max/sum, by the kind of the column's (dictionary-unpacked) type.
#[derive(Debug)]
pub(super) enum Acc {
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
pub(super) enum Temporal {
    Date32,
    Date64,
    Timestamp(TimeUnit, bool),
}

#[derive(Debug)]
pub(super) struct MinMax<T> {
    pub(super) min: Option<T>,
    pub(super) max: Option<T>,
}

impl<T: PartialOrd> MinMax<T> {
    pub(super) fn new() -> Self {
        Self {
            min: None,
            max: None,
        }
    }

    pub(super) fn offer(&mut self, lo: T, hi: T) {
        if self.min.as_ref().is_none_or(|m| lo < *m) {
            self.min = Some(lo);
        }
        if self.max.as_ref().is_none_or(|m| hi > *m) {
            self.max = Some(hi);
        }
    }

    pub(super) fn offer_opt(&mut self, lo: Option<T>, hi: Option<T>) {
        if let (Some(lo), Some(hi)) = (lo, hi) {
            self.offer(lo, hi);
        }
    }

    pub(super) fn merge(&mut self, other: Self) {
        self.offer_opt(other.min, other.max);
    }

    pub(super) fn render(&self, f: impl Fn(&T) -> Value) -> (Option<Value>, Option<Value>) {
        (self.min.as_ref().map(&f), self.max.as_ref().map(&f))
    }
}

/// An exact integer sum; `overflow` only past `i128`, which needs ~2^64 rows of extreme values.
#[derive(Debug, Default)]
pub(super) struct IntSum {
    pub(super) sum: Option<i128>,
    pub(super) overflow: bool,
}

impl IntSum {
    pub(super) fn add(&mut self, v: Option<i128>) {
        if let Some(v) = v {
            match self.sum.unwrap_or(0).checked_add(v) {
                Some(s) => self.sum = Some(s),
                None => self.overflow = true,
            }
        }
    }

    pub(super) fn render(&self) -> Option<Value> {
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
pub(super) struct DecimalSum {
    pub(super) sum: Option<i256>,
    pub(super) overflow: bool,
}

impl DecimalSum {
    pub(super) fn add(&mut self, v: Option<i256>, overflow: bool) {
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
pub(super) struct FloatAcc {
    /// Min and max of the non-NaN values.
    pub(super) range: MinMax<f64>,
    pub(super) nan: bool,
    pub(super) sum: Option<f64>,
}

impl FloatAcc {
    pub(super) fn update<T>(&mut self, array: &PrimitiveArray<T>)
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

    pub(super) fn merge(&mut self, other: FloatAcc) {
        self.range.merge(other.range);
        self.nan |= other.nan;
        if let Some(s) = other.sum {
            self.sum = Some(self.sum.unwrap_or(0.0) + s);
        }
    }

    pub(super) fn render(&self) -> (Option<Value>, Option<Value>, Option<Value>) {
        let nan = self.nan.then(|| float_json(f64::NAN));
        let min = self.range.min.map(float_json).or(nan.clone());
        let max = nan.or(self.range.max.map(float_json));
        (min, max, self.sum.map(float_json))
    }
}

/// Calls `f` on every non-null value of `array`.
pub(super) fn for_each_valid<T: ArrowPrimitiveType>(
    array: &PrimitiveArray<T>,
    mut f: impl FnMut(T::Native),
) {
    let values = array.values();
    match array.nulls() {
        Some(nulls) if nulls.null_count() > 0 => nulls.valid_indices().for_each(|i| f(values[i])),
        _ => values.iter().for_each(|&v| f(v)),
    }
}

/// Decimal unscaled values of every width, widened to `i256`.
pub(super) trait WideDecimal: Copy {
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
    pub(super) fn new(data_type: &DataType) -> Self {
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

    pub(super) fn update(&mut self, array: &dyn Array) -> Result<()> {
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

    pub(super) fn merge(&mut self, other: ColumnAcc) -> Result<()> {
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

pub(super) fn int_update<T>(range: &mut MinMax<i128>, sum: &mut IntSum, array: &PrimitiveArray<T>)
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

pub(super) fn temporal_update<T>(range: &mut MinMax<i64>, array: &PrimitiveArray<T>)
where
    T: ArrowPrimitiveType,
    T::Native: Into<i64>,
{
    range.offer_opt(
        compute::min(array).map(Into::into),
        compute::max(array).map(Into::into),
    );
}

pub(super) fn decimal_update<T>(
    range: &mut MinMax<i256>,
    sum: &mut DecimalSum,
    array: &PrimitiveArray<T>,
) where
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
    pub(super) fn render(&self) -> (Option<Value>, Option<Value>, Option<Value>) {
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
