//! Reading one cell at a time out of an Arrow column of a supported type (for the row encoders).

use arrow::array::{
    Array, AsArray, BinaryArray, BooleanArray, LargeStringArray, StringArray, StringViewArray,
};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{
    Date32Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, TimeUnit,
    TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};

use super::columns::Kind;

/// One value of a row.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Cell<'a> {
    Null,
    Bool(bool),
    /// Int8 to Int64.
    Int(i64),
    /// UInt8 to UInt64.
    UInt(u64),
    F32(f32),
    F64(f64),
    /// Utf8, LargeUtf8, Utf8View.
    Str(&'a str),
    Bytes(&'a [u8]),
    /// An instant since the Unix epoch in the unit.
    Timestamp(i64, TimeUnit),
    /// Days since 1970-01-01.
    Date32(i32),
}

enum Data<'a> {
    Bool(&'a BooleanArray),
    I8(&'a [i8]),
    I16(&'a [i16]),
    I32(&'a [i32]),
    I64(&'a [i64]),
    U8(&'a [u8]),
    U16(&'a [u16]),
    U32(&'a [u32]),
    U64(&'a [u64]),
    F32(&'a [f32]),
    F64(&'a [f64]),
    Utf8(&'a StringArray),
    LargeUtf8(&'a LargeStringArray),
    Utf8View(&'a StringViewArray),
    Binary(&'a BinaryArray),
    Timestamp(&'a [i64], TimeUnit),
    Date32(&'a [i32]),
}

/// A typed view of one column.
pub(crate) struct ColumnReader<'a> {
    nulls: Option<&'a NullBuffer>,
    data: Data<'a>,
}

impl<'a> ColumnReader<'a> {
    /// A reader for `array`, `None` when its type is not one the codecs support.
    pub(crate) fn new(array: &'a dyn Array) -> Option<Self> {
        let data = match Kind::of(array.data_type())? {
            Kind::Boolean => Data::Bool(array.as_boolean_opt()?),
            Kind::Int8 => Data::I8(array.as_primitive_opt::<Int8Type>()?.values()),
            Kind::Int16 => Data::I16(array.as_primitive_opt::<Int16Type>()?.values()),
            Kind::Int32 => Data::I32(array.as_primitive_opt::<Int32Type>()?.values()),
            Kind::Int64 => Data::I64(array.as_primitive_opt::<Int64Type>()?.values()),
            Kind::UInt8 => Data::U8(array.as_primitive_opt::<UInt8Type>()?.values()),
            Kind::UInt16 => Data::U16(array.as_primitive_opt::<UInt16Type>()?.values()),
            Kind::UInt32 => Data::U32(array.as_primitive_opt::<UInt32Type>()?.values()),
            Kind::UInt64 => Data::U64(array.as_primitive_opt::<UInt64Type>()?.values()),
            Kind::Float32 => Data::F32(array.as_primitive_opt::<Float32Type>()?.values()),
            Kind::Float64 => Data::F64(array.as_primitive_opt::<Float64Type>()?.values()),
            Kind::Utf8 => Data::Utf8(array.as_string_opt::<i32>()?),
            Kind::LargeUtf8 => Data::LargeUtf8(array.as_string_opt::<i64>()?),
            Kind::Utf8View => Data::Utf8View(array.as_string_view_opt()?),
            Kind::Binary => Data::Binary(array.as_binary_opt::<i32>()?),
            Kind::Timestamp(unit) => {
                let values = match unit {
                    TimeUnit::Second => array.as_primitive_opt::<TimestampSecondType>()?.values(),
                    TimeUnit::Millisecond => array
                        .as_primitive_opt::<TimestampMillisecondType>()?
                        .values(),
                    TimeUnit::Microsecond => array
                        .as_primitive_opt::<TimestampMicrosecondType>()?
                        .values(),
                    TimeUnit::Nanosecond => array
                        .as_primitive_opt::<TimestampNanosecondType>()?
                        .values(),
                };
                Data::Timestamp(values, unit)
            }
            Kind::Date32 => Data::Date32(array.as_primitive_opt::<Date32Type>()?.values()),
        };
        // Every supported type's logical nulls are its physical nulls.
        Some(ColumnReader {
            nulls: array.nulls(),
            data,
        })
    }

    /// The value at `row` (which must be in bounds).
    #[inline]
    pub(crate) fn get(&self, row: usize) -> Cell<'a> {
        if self.nulls.is_some_and(|n| n.is_null(row)) {
            return Cell::Null;
        }
        match &self.data {
            Data::Bool(a) => Cell::Bool(a.value(row)),
            Data::I8(v) => Cell::Int(v[row].into()),
            Data::I16(v) => Cell::Int(v[row].into()),
            Data::I32(v) => Cell::Int(v[row].into()),
            Data::I64(v) => Cell::Int(v[row]),
            Data::U8(v) => Cell::UInt(v[row].into()),
            Data::U16(v) => Cell::UInt(v[row].into()),
            Data::U32(v) => Cell::UInt(v[row].into()),
            Data::U64(v) => Cell::UInt(v[row]),
            Data::F32(v) => Cell::F32(v[row]),
            Data::F64(v) => Cell::F64(v[row]),
            Data::Utf8(a) => Cell::Str(a.value(row)),
            Data::LargeUtf8(a) => Cell::Str(a.value(row)),
            Data::Utf8View(a) => Cell::Str(a.value(row)),
            Data::Binary(a) => Cell::Bytes(a.value(row)),
            Data::Timestamp(v, unit) => Cell::Timestamp(v[row], *unit),
            Data::Date32(v) => Cell::Date32(v[row]),
        }
    }
}
