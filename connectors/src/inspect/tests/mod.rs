//! Tests of the parent module.

mod merge_and_render;
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
    let dict: ArrayRef =
        Arc::new(DictionaryArray::try_new(keys, Arc::new(Int64Array::from(vec![10, -4]))).unwrap());
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
