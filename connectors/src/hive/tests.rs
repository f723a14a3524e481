//! Tests of the parent module.
use arrow::array::{
    BooleanArray, Date32Array, Date64Array, Float32Array, Float64Array, Int8Array, Int32Array,
    Int64Array, ListArray, TimestampMicrosecondArray, TimestampNanosecondArray,
    TimestampSecondArray, UInt16Array,
};
use arrow::datatypes::Int32Type;

use super::*;

#[test]
fn escapes_like_spark() {
    assert_eq!(escape_path_name("ap/south:1"), "ap%2Fsouth%3A1");
    assert_eq!(escape_path_name("a%b"), "a%25b");
    assert_eq!(escape_path_name("a=b?c#d"), "a%3Db%3Fc%23d");
    assert_eq!(escape_path_name("\"'*\\{[]^"), "%22%27%2A%5C%7B%5B%5D%5E");
    assert_eq!(escape_path_name("tab\there\u{7f}"), "tab%09here%7F");
    // Kept: spaces, '}', non-ASCII, and NUL (Spark's set starts at 0x01).
    assert_eq!(escape_path_name("a b}"), "a b}");
    assert_eq!(escape_path_name("Zürich 東京"), "Zürich 東京");
    assert_eq!(escape_path_name("\0"), "\0");
    assert_eq!(escape_path_name(""), "");
}

#[test]
fn unescape_inverts_escape() {
    assert_eq!(unescape_path_name("ap%2Fsouth%3A1"), "ap/south:1");
    assert_eq!(unescape_path_name("a%25b"), "a%b");
    assert_eq!(unescape_path_name("ap%2fsouth"), "ap/south");
    // A '%' without two hex digits after it stays.
    assert_eq!(unescape_path_name("a%b"), "a%b");
    assert_eq!(unescape_path_name("100%"), "100%");
    assert_eq!(unescape_path_name("%4"), "%4");
    assert_eq!(unescape_path_name("%zz%41"), "%zzA");
    // URL-encoded UTF-8 decodes to the character; a lone high byte to its code point.
    assert_eq!(unescape_path_name("caf%C3%A9"), "café");
    assert_eq!(unescape_path_name("%E9t%C3%A9"), "\u{e9}t\u{c3}\u{a9}");
    for s in [
        "ap/south:1",
        "a%b",
        "Zürich/東京=1",
        "50% off?",
        "\u{1}\u{1f}\u{7f}x",
        "__HIVE_DEFAULT_PARTITION__",
        "%2F",
    ] {
        assert_eq!(unescape_path_name(&escape_path_name(s)), s, "{s:?}");
    }
}

#[test]
fn parses_segments() {
    assert_eq!(
        parse_segment("region=ap%2Fsouth%3A1"),
        Some(("region".into(), Some("ap/south:1".into())))
    );
    assert_eq!(
        parse_segment("region=__HIVE_DEFAULT_PARTITION__"),
        Some(("region".into(), None))
    );
    assert_eq!(
        parse_segment("a%3Db=c=d"),
        Some(("a=b".into(), Some("c=d".into())))
    );
    assert_eq!(parse_segment("k="), Some(("k".into(), Some(String::new()))));
    assert_eq!(parse_segment("=v"), None);
    assert_eq!(parse_segment("part-00000.parquet"), None);
}

#[test]
fn builds_partition_paths() {
    let values = vec![
        ("region".to_string(), Some("ap/south:1".to_string())),
        ("day".to_string(), None),
        ("note".to_string(), Some(String::new())),
        ("a=b".to_string(), Some("Zürich".to_string())),
    ];
    assert_eq!(
        partition_path(&values),
        "region=ap%2Fsouth%3A1/day=__HIVE_DEFAULT_PARTITION__/\
         note=__HIVE_DEFAULT_PARTITION__/a%3Db=Zürich"
    );
    assert_eq!(partition_path(&[]), "");
    // Each segment parses back.
    let parsed: Vec<_> = partition_path(&values)
        .split('/')
        .map(|s| parse_segment(s).unwrap())
        .collect();
    assert_eq!(parsed[0], ("region".into(), Some("ap/south:1".into())));
    assert_eq!(parsed[1], ("day".into(), None));
    assert_eq!(parsed[3], ("a=b".into(), Some("Zürich".into())));
}

#[test]
fn infers_types_like_spark() {
    assert_eq!(infer_type([Some("1"), Some("-7"), None]), DataType::Int32);
    assert_eq!(infer_type([Some("1"), Some("3000000000")]), DataType::Int64);
    assert_eq!(infer_type([Some("1"), Some("2.5")]), DataType::Float64);
    assert_eq!(infer_type([Some("1e3")]), DataType::Float64);
    assert_eq!(infer_type([Some("1.5"), Some("NaN")]), DataType::Utf8);
    assert_eq!(infer_type([Some("inf")]), DataType::Utf8);
    assert_eq!(
        infer_type([Some("99999999999999999999")]),
        DataType::Float64
    );
    assert_eq!(
        infer_type([Some("2024-01-31"), Some("2023-02-28"), None]),
        DataType::Date32
    );
    assert_eq!(infer_type([Some("2024-02-30")]), DataType::Utf8);
    assert_eq!(infer_type([Some("2024-1-31")]), DataType::Utf8);
    assert_eq!(infer_type([Some("2024-01-31"), Some("1")]), DataType::Utf8);
    assert_eq!(infer_type([Some("eu"), Some("1")]), DataType::Utf8);
    assert_eq!(infer_type([None, None]), DataType::Utf8);
    assert_eq!(infer_type(std::iter::empty()), DataType::Utf8);
}

#[test]
fn parses_type_names() {
    assert_eq!(parse_type_name("INT"), Some(DataType::Int32));
    assert_eq!(parse_type_name("integer"), Some(DataType::Int32));
    assert_eq!(parse_type_name("BigInt"), Some(DataType::Int64));
    assert_eq!(parse_type_name("long"), Some(DataType::Int64));
    assert_eq!(parse_type_name("double"), Some(DataType::Float64));
    assert_eq!(parse_type_name("Date"), Some(DataType::Date32));
    assert_eq!(parse_type_name("string"), Some(DataType::Utf8));
    assert_eq!(parse_type_name("boolean"), Some(DataType::Boolean));
    assert_eq!(parse_type_name("varchar"), None);
    assert_eq!(parse_type_name(""), None);
}

#[test]
fn builds_constant_arrays() {
    let a = constant_array(&DataType::Int32, Some("42"), 3).unwrap();
    assert_eq!(
        a.as_primitive::<Int32Type>(),
        &Int32Array::from(vec![42; 3])
    );
    let a = constant_array(&DataType::Int64, Some("-3000000000"), 2).unwrap();
    assert_eq!(
        a.as_primitive::<Int64Type>(),
        &Int64Array::from(vec![-3_000_000_000; 2])
    );
    let a = constant_array(&DataType::Float64, Some("2.5"), 2).unwrap();
    assert_eq!(
        a.as_primitive::<Float64Type>(),
        &Float64Array::from(vec![2.5; 2])
    );
    let a = constant_array(&DataType::Float64, Some("Infinity"), 1).unwrap();
    assert_eq!(a.as_primitive::<Float64Type>().value(0), f64::INFINITY);
    let a = constant_array(&DataType::Date32, Some("2024-03-01"), 2).unwrap();
    assert_eq!(
        a.as_primitive::<Date32Type>(),
        &Date32Array::from(vec![19_783; 2])
    );
    let a = constant_array(&DataType::Date64, Some("1970-01-02"), 1).unwrap();
    assert_eq!(
        a.as_primitive::<Date64Type>(),
        &Date64Array::from(vec![86_400_000])
    );
    let a = constant_array(&DataType::Utf8, Some("ap/south:1"), 2).unwrap();
    assert_eq!(
        a.as_string::<i32>(),
        &StringArray::from(vec!["ap/south:1", "ap/south:1"])
    );
    let a = constant_array(&DataType::Utf8View, Some("x"), 1).unwrap();
    assert_eq!(a.as_string_view().value(0), "x");
    let a = constant_array(&DataType::Boolean, Some("TRUE"), 2).unwrap();
    assert_eq!(a.as_boolean(), &BooleanArray::from(vec![true, true]));
    let a = constant_array(&DataType::Int8, Some("-5"), 1).unwrap();
    assert_eq!(a.as_primitive::<Int8Type>(), &Int8Array::from(vec![-5]));
    let a = constant_array(&DataType::UInt16, Some("65535"), 1).unwrap();
    assert_eq!(
        a.as_primitive::<UInt16Type>(),
        &UInt16Array::from(vec![65535])
    );
    let a = constant_array(&DataType::Float32, Some("0.5"), 1).unwrap();
    assert_eq!(
        a.as_primitive::<Float32Type>(),
        &Float32Array::from(vec![0.5])
    );
    let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let a = constant_array(&ts, Some("2024-03-01 10:20:30.5"), 2).unwrap();
    assert_eq!(a.data_type(), &ts);
    assert_eq!(
        a.as_primitive::<TimestampMicrosecondType>()
            .values()
            .to_vec(),
        vec![1_709_288_430_500_000; 2]
    );
    let ts = DataType::Timestamp(TimeUnit::Second, None);
    let a = constant_array(&ts, Some("1970-01-01 00:01:00"), 1).unwrap();
    assert_eq!(a.as_primitive::<TimestampSecondType>().value(0), 60);

    let nulls = constant_array(&DataType::Date32, None, 4).unwrap();
    assert_eq!(nulls.len(), 4);
    assert_eq!(nulls.null_count(), 4);
    assert_eq!(nulls.data_type(), &DataType::Date32);
    assert_eq!(
        constant_array(&DataType::Utf8, Some("x"), 0).unwrap().len(),
        0
    );
}

#[test]
fn constant_array_names_what_does_not_parse() {
    let err = constant_array(&DataType::Date32, Some("2024-13-01"), 1).unwrap_err();
    assert_eq!(err, "cannot parse `2024-13-01` as date");
    let err = constant_array(&DataType::Int32, Some("3000000000"), 1).unwrap_err();
    assert_eq!(err, "cannot parse `3000000000` as int");
    let err = constant_array(&DataType::Float64, Some("eu"), 1).unwrap_err();
    assert_eq!(err, "cannot parse `eu` as double");
    let err = constant_array(&DataType::Boolean, Some("yes"), 1).unwrap_err();
    assert_eq!(err, "cannot parse `yes` as boolean");
    let err = constant_array(&DataType::Binary, Some("x"), 1).unwrap_err();
    assert!(
        err.contains("Binary") && err.contains("not supported"),
        "{err}"
    );
}

#[test]
fn formats_values_like_spark() {
    let ints = Int32Array::from(vec![Some(-7), None]);
    assert_eq!(format_value(&ints, 0).unwrap(), Some("-7".into()));
    assert_eq!(format_value(&ints, 1).unwrap(), None);
    let longs = Int64Array::from(vec![3_000_000_000]);
    assert_eq!(format_value(&longs, 0).unwrap(), Some("3000000000".into()));
    let doubles = Float64Array::from(vec![1.0, 2.5, 1e20, f64::NAN, f64::NEG_INFINITY]);
    let got: Vec<_> = (0..5)
        .map(|i| format_value(&doubles, i).unwrap().unwrap())
        .collect();
    assert_eq!(got, ["1.0", "2.5", "1e20", "NaN", "-Infinity"]);
    let floats = Float32Array::from(vec![0.1]);
    assert_eq!(format_value(&floats, 0).unwrap(), Some("0.1".into()));
    let dates = Date32Array::from(vec![19_783, -1]);
    assert_eq!(format_value(&dates, 0).unwrap(), Some("2024-03-01".into()));
    assert_eq!(format_value(&dates, 1).unwrap(), Some("1969-12-31".into()));
    let dates = Date64Array::from(vec![86_400_000]);
    assert_eq!(format_value(&dates, 0).unwrap(), Some("1970-01-02".into()));
    let strings = StringArray::from(vec![Some("ap/south:1"), Some(""), None]);
    assert_eq!(
        format_value(&strings, 0).unwrap(),
        Some("ap/south:1".into())
    );
    assert_eq!(format_value(&strings, 1).unwrap(), None);
    assert_eq!(format_value(&strings, 2).unwrap(), None);
    let bools = BooleanArray::from(vec![true, false]);
    assert_eq!(format_value(&bools, 0).unwrap(), Some("true".into()));
    assert_eq!(format_value(&bools, 1).unwrap(), Some("false".into()));
    let ts = TimestampMicrosecondArray::from(vec![1_709_288_430_500_000, 1_709_288_430_000_000])
        .with_timezone("UTC");
    assert_eq!(
        format_value(&ts, 0).unwrap(),
        Some("2024-03-01 10:20:30.5".into())
    );
    assert_eq!(
        format_value(&ts, 1).unwrap(),
        Some("2024-03-01 10:20:30".into())
    );
    let ts = TimestampNanosecondArray::from(vec![123_456_789]);
    assert_eq!(
        format_value(&ts, 0).unwrap(),
        Some("1970-01-01 00:00:00.123456789".into())
    );
    let ts = TimestampSecondArray::from(vec![60]);
    assert_eq!(
        format_value(&ts, 0).unwrap(),
        Some("1970-01-01 00:01:00".into())
    );

    // Formatted values parse back to the same value.
    let formatted = format_value(&dates, 0).unwrap();
    let back = constant_array(&DataType::Date64, formatted.as_deref(), 1).unwrap();
    assert_eq!(back.as_primitive::<Date64Type>().value(0), 86_400_000);
}

#[test]
fn format_value_rejects_unsupported_types_and_rows() {
    let lists = ListArray::from_iter_primitive::<Int32Type, _, _>(vec![Some(vec![Some(1)])]);
    let err = format_value(&lists, 0).unwrap_err();
    assert!(
        err.contains("List") && err.contains("not supported"),
        "{err}"
    );
    let err = format_value(&Int32Array::from(vec![1]), 1).unwrap_err();
    assert!(err.contains("row 1"), "{err}");
}
