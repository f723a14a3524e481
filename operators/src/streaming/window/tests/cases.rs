use super::*;

/// A batch of (ts ms, key, v) rows for the hand-written tests.
fn small(schema: &SchemaRef, rows: &[(Option<i64>, Option<&str>, Option<f64>)]) -> RecordBatch {
    RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.0))),
            Arc::new(StringArray::from_iter(rows.iter().map(|r| r.1))),
            Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.2))),
        ],
    )
    .unwrap()
}

pub(super) fn small_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("ts", DataType::Int64, true),
        Field::new("k", DataType::Utf8, true),
        Field::new("v", DataType::Float64, true),
    ]))
}

fn small_spec(key: bool, late: LatePolicy) -> WindowSpec {
    WindowSpec {
        time_column: "ts".into(),
        size: Duration::from_secs(1),
        slide: None,
        allowed_lateness: Duration::ZERO,
        key: key.then(|| "k".into()),
        aggregates: vec![
            agg(None, AggFn::Count, "n"),
            agg(Some("v"), AggFn::Mean, "mean"),
            agg(Some("v"), AggFn::Min, "min"),
        ],
        late,
    }
}

#[test]
fn keyed_windows_with_string_keys_to_batch() {
    let schema = small_schema();
    let spec = small_spec(true, LatePolicy::DeadLetter);
    let mut w = Windower::new(spec.clone(), schema.clone()).unwrap();
    let rows = [
        (Some(100), Some("b"), Some(1.0)),
        (Some(200), Some("a"), Some(3.0)),
        (Some(900), Some("b"), Some(2.0)),
        (Some(950), None, Some(8.0)),
        (Some(1_500), Some("a"), None),
        (Some(2_500), Some("a"), Some(5.0)),
    ];
    let pushed = w.push(&small(&schema, &rows)).unwrap();
    assert!(pushed.late.is_none());
    assert_eq!((pushed.late_rows, pushed.null_time_rows), (0, 0));
    assert_eq!(w.local_watermark(), Some(2_500));
    assert_eq!(w.open_windows(), 5);
    let closed = w.close(2_000).unwrap();
    assert_eq!(w.open_windows(), 1);
    let out = w.to_batch(&closed).unwrap();
    assert_eq!(out.schema(), w.output_schema());
    let utc = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
    let types: Vec<DataType> = out
        .schema()
        .fields()
        .iter()
        .map(|f| f.data_type().clone())
        .collect();
    assert_eq!(
        types,
        vec![
            utc.clone(),
            utc,
            DataType::Utf8,
            DataType::Int64,
            DataType::Float64,
            DataType::Float64
        ]
    );
    let names: Vec<String> = out
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(
        names,
        ["window_start", "window_end", "k", "n", "mean", "min"]
    );
    // (end, start, key) order; the null key sorts first.
    let got = read_small(&out);
    assert_eq!(
        got,
        vec![
            (0, None, 1, Some(8.0), Some(8.0)),
            (0, Some("a".into()), 1, Some(3.0), Some(3.0)),
            (0, Some("b".into()), 2, Some(1.5), Some(1.0)),
            // Mean and min of only nulls are null; the count still counts the row.
            (1_000, Some("a".into()), 1, None, None),
        ]
    );
    // to_batch without the windower infers the same.
    assert_eq!(to_batch(&spec, &closed).unwrap(), out);
}

/// (start, key, count, mean, min) of one output row.
type SmallOut = (i64, Option<String>, i64, Option<f64>, Option<f64>);

fn read_small(out: &RecordBatch) -> Vec<SmallOut> {
    let starts = out.column(0).as_primitive::<TimestampMillisecondType>();
    let k = out.column(2).as_string::<i32>();
    let n = out.column(3).as_primitive::<Int64Type>();
    let mean = out.column(4).as_primitive::<Float64Type>();
    let min = out.column(5).as_primitive::<Float64Type>();
    let opt = |a: &Float64Array, i: usize| (!a.is_null(i)).then(|| a.value(i));
    (0..out.num_rows())
        .map(|i| {
            let key = (!k.is_null(i)).then(|| k.value(i).to_string());
            (starts.value(i), key, n.value(i), opt(mean, i), opt(min, i))
        })
        .collect()
}

#[test]
fn integer_keys_group_as_int64() {
    let schema = Arc::new(Schema::new(vec![
        Field::new("ts", DataType::Timestamp(TimeUnit::Second, None), true),
        Field::new("k", DataType::UInt16, true),
        Field::new("v", DataType::Int32, true),
    ]));
    let spec = WindowSpec {
        time_column: "ts".into(),
        size: Duration::from_secs(10),
        slide: None,
        allowed_lateness: Duration::ZERO,
        key: Some("k".into()),
        aggregates: vec![
            agg(Some("v"), AggFn::Sum, "s"),
            agg(Some("v"), AggFn::Max, "m"),
        ],
        late: LatePolicy::Drop,
    };
    let mut w = Windower::new(spec.clone(), schema.clone()).unwrap();
    let b = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(TimestampSecondArray::from(vec![1, 2, 3, 4, 11])),
            Arc::new(arrow::array::UInt16Array::from(vec![
                Some(7),
                Some(65_535),
                Some(7),
                None,
                Some(7),
            ])),
            Arc::new(Int32Array::from(vec![
                Some(1),
                Some(2),
                Some(4),
                Some(8),
                Some(16),
            ])),
        ],
    )
    .unwrap();
    w.push(&b).unwrap();
    assert_eq!(w.local_watermark(), Some(11_000));
    let out = w.flush_all().unwrap();
    let summary: Vec<(i64, Option<KeyValue>, Option<f64>)> = out
        .iter()
        .map(|r| (r.start_ms, r.key.clone(), r.state[0].value()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (0, Some(KeyValue::Null), Some(8.0)),
            (0, Some(KeyValue::Int(7)), Some(5.0)),
            (0, Some(KeyValue::Int(65_535)), Some(2.0)),
            (10_000, Some(KeyValue::Int(7)), Some(16.0)),
        ]
    );
    let batch = to_batch(&spec, &out).unwrap();
    assert_eq!(batch.column(2).data_type(), &DataType::Int64);
    assert_eq!(
        batch
            .column(2)
            .as_primitive::<Int64Type>()
            .iter()
            .collect::<Vec<_>>(),
        vec![None, Some(7), Some(65_535), Some(7)]
    );
    // With no results the windower still knows the key column is Int64.
    assert_eq!(
        w.to_batch(&[]).unwrap().column(2).data_type(),
        &DataType::Int64
    );
}

#[test]
fn null_times_are_unusable_and_returned_with_late_rows() {
    let schema = small_schema();
    for policy in [LatePolicy::DeadLetter, LatePolicy::Drop] {
        let mut w = Windower::new(small_spec(false, policy), schema.clone()).unwrap();
        let p = w
            .push(&small(
                &schema,
                &[(None, Some("x"), Some(1.0)), (Some(5_000), None, Some(2.0))],
            ))
            .unwrap();
        assert_eq!((p.late_rows, p.null_time_rows), (0, 1));
        w.close(5_000).unwrap();
        // 4_999 falls in [4s, 5s), which closed: late. 5_001 is on time; so is nothing else.
        let p = w
            .push(&small(
                &schema,
                &[
                    (Some(4_999), Some("late"), None),
                    (Some(5_001), None, None),
                    (None, Some("null"), None),
                ],
            ))
            .unwrap();
        assert_eq!((p.late_rows, p.null_time_rows), (1, 1));
        match policy {
            LatePolicy::Drop => assert!(p.late.is_none()),
            LatePolicy::DeadLetter => {
                let late = p.late.unwrap();
                assert_eq!(late.schema(), schema);
                assert_eq!(
                    late.column(1).as_string::<i32>().iter().collect::<Vec<_>>(),
                    vec![Some("late"), Some("null")]
                );
            }
        }
        let rest = w.flush_all().unwrap();
        assert_eq!(rest.len(), 1);
        assert_eq!(
            (rest[0].start_ms, rest[0].state[0].value()),
            (5_000, Some(2.0))
        );
    }
}

#[test]
fn a_row_with_some_windows_closed_goes_to_the_open_ones_only() {
    let schema = small_schema();
    let spec = WindowSpec {
        slide: Some(Duration::from_millis(500)),
        ..small_spec(false, LatePolicy::DeadLetter)
    };
    let mut w = Windower::new(spec, schema.clone()).unwrap();
    w.push(&small(
        &schema,
        &[(Some(200), None, Some(1.0)), (Some(1_100), None, Some(1.0))],
    ))
    .unwrap();
    let first = w.close(1_000).unwrap();
    // [-500, 500) and [0, 1000) held the row at 200.
    assert_eq!(
        first
            .iter()
            .map(|r| (r.start_ms, r.end_ms))
            .collect::<Vec<_>>(),
        vec![(-500, 500), (0, 1_000)]
    );
    // 700 is in [0, 1000) (closed) and [500, 1500) (open): not late, counted once.
    let p = w
        .push(&small(&schema, &[(Some(700), None, Some(1.0))]))
        .unwrap();
    assert_eq!(p.late_rows, 0);
    // 400 is in [-500, 500) and [0, 1000): both closed, so late.
    let p = w
        .push(&small(&schema, &[(Some(400), None, Some(1.0))]))
        .unwrap();
    assert_eq!(p.late_rows, 1);
    let rest = w.flush_all().unwrap();
    let counts: Vec<(i64, Option<f64>)> = rest
        .iter()
        .map(|r| (r.start_ms, r.state[0].value()))
        .collect();
    assert_eq!(counts, vec![(500, Some(2.0)), (1_000, Some(1.0))]);
}

#[test]
fn the_job_watermark_is_the_minimum_and_holds_windows_open() {
    let schema = small_schema();
    let spec = WindowSpec {
        allowed_lateness: Duration::from_millis(100),
        ..small_spec(false, LatePolicy::Drop)
    };
    let mut a = Windower::new(spec.clone(), schema.clone()).unwrap();
    let mut b = Windower::new(spec, schema.clone()).unwrap();
    assert_eq!(a.local_watermark(), None);
    a.push(&small(
        &schema,
        &[(Some(500), None, Some(1.0)), (Some(5_000), None, Some(1.0))],
    ))
    .unwrap();
    assert_eq!(a.local_watermark(), Some(4_900));
    // b has seen nothing: no job watermark, nothing closes.
    assert_eq!(
        combined_watermark([a.local_watermark(), b.local_watermark()]),
        None
    );
    b.push(&small(&schema, &[(None, None, None)])).unwrap();
    assert_eq!(
        combined_watermark([a.local_watermark(), b.local_watermark()]),
        None
    );
    b.push(&small(&schema, &[(Some(1_500), None, Some(1.0))]))
        .unwrap();
    let wm = combined_watermark([a.local_watermark(), b.local_watermark()]).unwrap();
    assert_eq!(wm, 1_400);
    let (ra, rb) = (a.close(wm).unwrap(), b.close(wm).unwrap());
    assert_eq!(ra.iter().map(|r| r.start_ms).collect::<Vec<_>>(), vec![0]);
    assert!(rb.is_empty());
    // [1s, 2s) stays open on b until b's own time passes 2.1s.
    b.push(&small(&schema, &[(Some(2_050), None, Some(1.0))]))
        .unwrap();
    let wm = combined_watermark([a.local_watermark(), b.local_watermark()]).unwrap();
    assert_eq!(wm, 1_950);
    assert!(b.close(wm).unwrap().is_empty());
    b.push(&small(&schema, &[(Some(9_000), None, Some(1.0))]))
        .unwrap();
    let wm = combined_watermark([a.local_watermark(), b.local_watermark()]).unwrap();
    assert_eq!(wm, 4_900);
    let merged = merge_all(vec![a.close(wm).unwrap(), b.close(wm).unwrap()]);
    let got: Vec<(i64, Option<f64>)> = merged
        .iter()
        .map(|r| (r.start_ms, r.state[0].value()))
        .collect();
    assert_eq!(got, vec![(1_000, Some(1.0)), (2_000, Some(1.0))]);
    assert_eq!(a.closed_watermark(), Some(4_900));
    // A lower watermark closes nothing and does not move the frontier back.
    assert!(a.close(10).unwrap().is_empty());
    assert_eq!(a.closed_watermark(), Some(4_900));
}

#[test]
fn flush_all_emits_the_remaining_windows_then_everything_is_late() {
    let schema = small_schema();
    let mut w = Windower::new(small_spec(true, LatePolicy::DeadLetter), schema.clone()).unwrap();
    w.push(&small(
        &schema,
        &[
            (Some(100), Some("a"), Some(1.0)),
            (Some(3_100), Some("b"), Some(2.0)),
            (Some(1_100), Some("a"), Some(3.0)),
        ],
    ))
    .unwrap();
    assert_eq!(w.close(2_000).unwrap().len(), 2);
    let rest = w.flush_all().unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(
        (rest[0].start_ms, rest[0].end_ms, rest[0].key.clone()),
        (3_000, 4_000, Some(KeyValue::Str("b".into())))
    );
    assert_eq!(w.open_windows(), 0);
    assert!(w.flush_all().unwrap().is_empty());
    let p = w
        .push(&small(&schema, &[(Some(99_999), Some("a"), Some(1.0))]))
        .unwrap();
    assert_eq!(p.late_rows, 1);
    assert_eq!(p.late.unwrap().num_rows(), 1);
}

#[test]
fn timestamps_of_any_unit_floor_to_milliseconds() {
    let schema = Arc::new(Schema::new(vec![Field::new(
        "ts",
        DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
        true,
    )]));
    let spec = WindowSpec {
        time_column: "ts".into(),
        size: Duration::from_millis(10),
        slide: None,
        allowed_lateness: Duration::ZERO,
        key: None,
        aggregates: vec![agg(None, AggFn::Count, "n")],
        late: LatePolicy::Drop,
    };
    let mut w = Windower::new(spec, schema.clone()).unwrap();
    let b = RecordBatch::try_new(
        schema,
        vec![Arc::new(
            TimestampNanosecondArray::from(vec![-1, 0, 9_999_999, 10_000_000, i64::MIN])
                .with_timezone("UTC"),
        )],
    )
    .unwrap();
    let p = w.push(&b).unwrap();
    assert_eq!(p.null_time_rows, 0);
    assert_eq!(w.local_watermark(), Some(10));
    let got: Vec<(i64, Option<f64>)> = w
        .flush_all()
        .unwrap()
        .iter()
        .map(|r| (r.start_ms, r.state[0].value()))
        .collect();
    assert_eq!(
        got,
        vec![
            (-9_223_372_036_860, Some(1.0)),
            (-10, Some(1.0)),
            (0, Some(2.0)),
            (10, Some(1.0))
        ]
    );
}

#[test]
fn seconds_beyond_the_usable_range_are_unusable() {
    let schema = Arc::new(Schema::new(vec![Field::new(
        "ts",
        DataType::Timestamp(TimeUnit::Second, None),
        true,
    )]));
    let spec = WindowSpec {
        time_column: "ts".into(),
        size: Duration::from_secs(1),
        slide: None,
        allowed_lateness: Duration::ZERO,
        key: None,
        aggregates: vec![agg(None, AggFn::Count, "n")],
        late: LatePolicy::DeadLetter,
    };
    let mut w = Windower::new(spec, schema.clone()).unwrap();
    let b = RecordBatch::try_new(
        schema,
        vec![Arc::new(TimestampSecondArray::from(vec![
            i64::MAX,
            1,
            i64::MIN,
        ]))],
    )
    .unwrap();
    let p = w.push(&b).unwrap();
    assert_eq!((p.null_time_rows, p.late.unwrap().num_rows()), (2, 2));
    assert_eq!(w.local_watermark(), Some(1_000));
}
