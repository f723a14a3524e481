use super::*;

#[test]
fn validate_errors_name_the_option() {
    let schema = Schema::new(vec![
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("Europe/Paris".into())),
            true,
        ),
        Field::new("ms", DataType::Int64, true),
        Field::new("name", DataType::Utf8, true),
        Field::new("x", DataType::Float32, true),
        Field::new("f", DataType::Float64, true),
        Field::new("u", DataType::UInt64, true),
    ]);
    let good = WindowSpec {
        time_column: "ts".into(),
        size: Duration::from_secs(60),
        slide: Some(Duration::from_secs(15)),
        allowed_lateness: Duration::from_secs(5),
        key: Some("name".into()),
        aggregates: vec![
            agg(Some("x"), AggFn::Sum, "sx"),
            agg(Some("name"), AggFn::Count, "n"),
        ],
        late: LatePolicy::Drop,
    };
    good.validate(&schema).unwrap();
    WindowSpec {
        time_column: "ms".into(),
        ..good.clone()
    }
    .validate(&schema)
    .unwrap();
    let err = |s: WindowSpec| s.validate(&schema).unwrap_err().to_string();
    let cases: Vec<(WindowSpec, &str, &str)> = vec![
        (
            WindowSpec {
                time_column: "nope".into(),
                ..good.clone()
            },
            "[window.time_column]",
            "\"nope\"",
        ),
        (
            WindowSpec {
                time_column: "name".into(),
                ..good.clone()
            },
            "[window.time_column]",
            "Utf8",
        ),
        (
            WindowSpec {
                size: Duration::ZERO,
                ..good.clone()
            },
            "[window.size]",
            "at least 1ms",
        ),
        (
            WindowSpec {
                size: Duration::from_micros(1_500),
                slide: None,
                ..good.clone()
            },
            "[window.size]",
            "whole number of milliseconds",
        ),
        (
            WindowSpec {
                slide: Some(Duration::from_secs(7)),
                ..good.clone()
            },
            "[window.slide]",
            "divide",
        ),
        (
            WindowSpec {
                slide: Some(Duration::ZERO),
                ..good.clone()
            },
            "[window.slide]",
            "at least 1ms",
        ),
        (
            WindowSpec {
                key: Some("missing".into()),
                ..good.clone()
            },
            "[window.key]",
            "\"missing\"",
        ),
        (
            WindowSpec {
                key: Some("f".into()),
                ..good.clone()
            },
            "[window.key]",
            "Float64",
        ),
        (
            WindowSpec {
                key: Some("u".into()),
                ..good.clone()
            },
            "[window.key]",
            "UInt64",
        ),
        (
            WindowSpec {
                aggregates: vec![],
                ..good.clone()
            },
            "[window.aggregates]",
            "at least one",
        ),
        (
            WindowSpec {
                aggregates: vec![
                    agg(Some("x"), AggFn::Sum, "a"),
                    agg(Some("gone"), AggFn::Min, "b"),
                ],
                ..good.clone()
            },
            "[window.aggregates[1].column]",
            "\"gone\"",
        ),
        (
            WindowSpec {
                aggregates: vec![agg(Some("name"), AggFn::Mean, "a")],
                ..good.clone()
            },
            "[window.aggregates[0].column]",
            "numeric",
        ),
        (
            WindowSpec {
                aggregates: vec![agg(None, AggFn::Max, "a")],
                ..good.clone()
            },
            "[window.aggregates[0].column]",
            "needs a column",
        ),
        (
            WindowSpec {
                aggregates: vec![
                    agg(Some("x"), AggFn::Sum, "a"),
                    agg(Some("x"), AggFn::Max, "a"),
                ],
                ..good.clone()
            },
            "[window.aggregates[1].name]",
            "duplicate",
        ),
        (
            WindowSpec {
                aggregates: vec![agg(None, AggFn::Count, "window_end")],
                ..good.clone()
            },
            "[window.aggregates[0].name]",
            "duplicate",
        ),
        (
            WindowSpec {
                aggregates: vec![agg(None, AggFn::Count, "name")],
                ..good.clone()
            },
            "[window.aggregates[0].name]",
            "duplicate",
        ),
        (
            WindowSpec {
                aggregates: vec![agg(None, AggFn::Count, "")],
                ..good.clone()
            },
            "[window.aggregates[0].name]",
            "empty",
        ),
    ];
    for (spec, option, detail) in cases {
        let e = err(spec);
        assert!(
            e.starts_with(option) && e.contains(detail),
            "{e:?} should name {option} and say {detail}"
        );
    }
    // Windower::new validates too.
    assert!(
        Windower::new(
            WindowSpec {
                size: Duration::ZERO,
                ..good
            },
            Arc::new(schema)
        )
        .is_err()
    );
}

#[test]
fn parse_duration_accepts_units_and_names_bad_input() {
    // The rules of a pipeline file's durations: a unit or none (seconds), whole or not.
    let ok = [
        ("500ms", Duration::from_millis(500)),
        ("10s", Duration::from_secs(10)),
        ("5m", Duration::from_secs(300)),
        ("1h", Duration::from_secs(3_600)),
        ("2d", Duration::from_secs(172_800)),
        (" 0s ", Duration::ZERO),
        ("10", Duration::from_secs(10)),
        ("1.5s", Duration::from_millis(1_500)),
    ];
    for (s, d) in ok {
        assert_eq!(WindowSpec::parse_duration(s).unwrap(), d, "{s}");
        assert_eq!(crate::spec::parse_duration("k", s).unwrap(), d, "{s}");
    }
    for bad in [
        "",
        "ms",
        "10x",
        "-1s",
        "5 mins",
        "99999999999999999999s",
        "999999999999999999d",
    ] {
        let e = WindowSpec::parse_duration(bad).unwrap_err().to_string();
        assert!(
            e.contains(&format!("'{bad}'")) && e.contains("duration"),
            "{e}"
        );
    }
}

#[test]
fn results_cross_workers_as_bytes_and_merge() {
    let a = WindowResult {
        start_ms: 0,
        end_ms: 10,
        key: Some(KeyValue::Str("k".into())),
        state: vec![
            AggState::Count(2),
            AggState::Sum { sum: 1.5, count: 2 },
            AggState::Mean { sum: 3.0, count: 2 },
            AggState::Min(None),
            AggState::Max(Some(4.0)),
        ],
    };
    let bytes = serde_json::to_vec(&vec![a.clone()]).unwrap();
    let back: Vec<WindowResult> = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(back, vec![a.clone()]);
    let b = WindowResult {
        state: vec![
            AggState::Count(1),
            AggState::Sum { sum: 2.0, count: 1 },
            AggState::Mean { sum: 6.0, count: 1 },
            AggState::Min(Some(-1.0)),
            AggState::Max(Some(3.0)),
        ],
        ..a.clone()
    };
    let other_key = WindowResult {
        key: Some(KeyValue::Int(1)),
        ..a.clone()
    };
    let merged = merge_all(vec![vec![a.clone()], vec![b, other_key.clone()]]);
    assert_eq!(merged.len(), 2);
    assert_eq!(merged[0], other_key);
    let values: Vec<Option<f64>> = merged[1].state.iter().map(AggState::value).collect();
    assert_eq!(
        values,
        vec![Some(3.0), Some(3.5), Some(3.0), Some(-1.0), Some(4.0)]
    );
    let mut c = a.clone();
    merge(&mut c, &a);
    assert_eq!(c.state[0], AggState::Count(4));
}

#[test]
fn throughput_of_push() {
    let n: usize = 2_000_000;
    let batch_rows = 8_192;
    for distinct_keys in [1i64, 1_000] {
        let schema = Arc::new(Schema::new(vec![
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Millisecond, None),
                false,
            ),
            Field::new("k", DataType::Int64, false),
            Field::new("v", DataType::Float64, false),
        ]));
        let spec = WindowSpec {
            time_column: "ts".into(),
            size: Duration::from_secs(10),
            slide: None,
            allowed_lateness: Duration::from_secs(1),
            key: Some("k".into()),
            aggregates: vec![
                agg(None, AggFn::Count, "n"),
                agg(Some("v"), AggFn::Sum, "s"),
            ],
            late: LatePolicy::Drop,
        };
        let mut rng = Rng(9);
        let batches: Vec<RecordBatch> = (0..n / batch_rows)
            .map(|b| {
                let base = (b * batch_rows) as i64;
                RecordBatch::try_new(
                    schema.clone(),
                    vec![
                        Arc::new(arrow::array::TimestampMillisecondArray::from_iter_values(
                            (0..batch_rows as i64).map(|i| base + i - rng.below(500) as i64),
                        )),
                        Arc::new(Int64Array::from_iter_values(
                            (0..batch_rows).map(|_| rng.below(distinct_keys as u64) as i64),
                        )),
                        Arc::new(Float64Array::from_iter_values(
                            (0..batch_rows).map(|i| i as f64),
                        )),
                    ],
                )
                .unwrap()
            })
            .collect();
        let mut w = Windower::new(spec, schema).unwrap();
        let rows = batches.len() * batch_rows;
        let started = Instant::now();
        let mut results = vec![];
        for b in &batches {
            let p = w.push(b).unwrap();
            assert_eq!(p.late_rows, 0);
            if let Some(wm) = w.local_watermark() {
                results.extend(w.close(wm).unwrap());
            }
        }
        results.extend(w.flush_all().unwrap());
        let secs = started.elapsed().as_secs_f64();
        let counted: f64 = results.iter().filter_map(|r| r.state[0].value()).sum();
        assert_eq!(counted as usize, rows);
        println!(
            "window push: {rows} rows, {distinct_keys} key(s), 2 aggregates, tumbling: {:.2} M rows/s ({} build)",
            rows as f64 / secs / 1e6,
            if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            }
        );
    }
}
