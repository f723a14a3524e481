//! Timestamps, types without an order, Spark type names, merging per-worker builders and rendering.

use super::*;

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
