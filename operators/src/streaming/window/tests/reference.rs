use super::*;

#[derive(Clone, Copy, PartialEq)]
pub(super) enum Keys {
    None,
    Int,
    Str,
}

#[derive(Clone, Copy)]
pub(super) enum TimeType {
    Millis,
    Micros,
}

#[derive(Clone, Debug)]
pub(super) struct Row {
    id: i64,
    /// Event time in ms; the batch may carry it in finer units.
    t: Option<i64>,
    sub_ms: i64,
    key: Option<i32>,
    v: Option<f64>,
    w: Option<i32>,
}

pub(super) fn schema(keys: Keys, time: TimeType) -> SchemaRef {
    let ts = match time {
        TimeType::Millis => DataType::Int64,
        TimeType::Micros => DataType::Timestamp(TimeUnit::Microsecond, Some("+02:00".into())),
    };
    let mut fields = vec![
        Field::new("id", DataType::Int64, false),
        Field::new("ts", ts, true),
    ];
    match keys {
        Keys::None => {}
        Keys::Int => fields.push(Field::new("k", DataType::Int32, true)),
        Keys::Str => fields.push(Field::new("k", DataType::Utf8, true)),
    }
    fields.push(Field::new("v", DataType::Float64, true));
    fields.push(Field::new("w", DataType::Int32, true));
    Arc::new(Schema::new(fields))
}

pub(super) fn batch(schema: &SchemaRef, keys: Keys, time: TimeType, rows: &[Row]) -> RecordBatch {
    let mut cols: Vec<ArrayRef> = vec![Arc::new(Int64Array::from_iter_values(
        rows.iter().map(|r| r.id),
    ))];
    cols.push(match time {
        TimeType::Millis => Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.t))),
        TimeType::Micros => Arc::new(
            TimestampMicrosecondArray::from_iter(
                rows.iter().map(|r| r.t.map(|t| t * 1000 + r.sub_ms)),
            )
            .with_timezone("+02:00"),
        ),
    });
    match keys {
        Keys::None => {}
        Keys::Int => cols.push(Arc::new(Int32Array::from_iter(rows.iter().map(|r| r.key)))),
        Keys::Str => cols.push(Arc::new(StringArray::from_iter(
            rows.iter().map(|r| r.key.map(|k| format!("key-{k}"))),
        ))),
    }
    cols.push(Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.v))));
    cols.push(Arc::new(Int32Array::from_iter(rows.iter().map(|r| r.w))));
    RecordBatch::try_new(schema.clone(), cols).unwrap()
}

fn key_value(keys: Keys, k: Option<i32>) -> Option<KeyValue> {
    match (keys, k) {
        (Keys::None, _) => None,
        (_, None) => Some(KeyValue::Null),
        (Keys::Int, Some(k)) => Some(KeyValue::Int(k.into())),
        (Keys::Str, Some(k)) => Some(KeyValue::Str(format!("key-{k}"))),
    }
}

pub(super) fn spec(
    keys: Keys,
    size_ms: u64,
    slide_ms: Option<u64>,
    late: LatePolicy,
) -> WindowSpec {
    WindowSpec {
        time_column: "ts".into(),
        size: Duration::from_millis(size_ms),
        slide: slide_ms.map(Duration::from_millis),
        allowed_lateness: Duration::from_millis(200),
        key: (keys != Keys::None).then(|| "k".into()),
        aggregates: vec![
            agg(None, AggFn::Count, "n"),
            agg(Some("v"), AggFn::Count, "n_v"),
            agg(Some("v"), AggFn::Sum, "sum_v"),
            agg(Some("v"), AggFn::Mean, "mean_v"),
            agg(Some("w"), AggFn::Min, "min_w"),
            agg(Some("v"), AggFn::Max, "max_v"),
        ],
        late,
    }
}

/// An out-of-order stream: mostly a little behind its base time, sometimes far behind.
pub(super) fn random_rows(rng: &mut Rng, n: usize) -> Vec<Row> {
    let mut base = -3_000i64;
    (0..n)
        .map(|i| {
            base += rng.below(15) as i64;
            let delay = if rng.chance(10) {
                rng.below(4_000)
            } else {
                rng.below(100)
            } as i64;
            Row {
                id: i as i64,
                t: (!rng.chance(2)).then_some(base - delay),
                sub_ms: rng.below(1000) as i64,
                key: (!rng.chance(5)).then(|| rng.below(6) as i32),
                // Multiples of 0.25: sums are exact in any order.
                v: (!rng.chance(10)).then(|| (rng.below(800) as f64 - 400.0) / 4.0),
                w: (!rng.chance(10)).then(|| rng.below(1000) as i32 - 500),
            }
        })
        .collect()
}

/// A window's output as compared: (end, start, key) and the finished aggregates.
type Out = ((i64, i64, Option<KeyValue>), Vec<Option<f64>>);

struct Run {
    merged: Vec<WindowResult>,
    late_ids: Vec<i64>,
    late_rows: usize,
    null_time_rows: usize,
    /// Per row id: the job's closing watermark when that row was pushed.
    closed_at: BTreeMap<i64, i64>,
}

/// Streams `rows` through `workers` windowers in random batches, closing all of them on the
/// combined watermark after each round, and flushing at the end.
fn simulate(
    rows: &[Row],
    spec: &WindowSpec,
    keys: Keys,
    time: TimeType,
    workers: usize,
    rng: &mut Rng,
) -> Run {
    let schema = schema(keys, time);
    let mut ws: Vec<Windower> = (0..workers)
        .map(|_| Windower::new(spec.clone(), schema.clone()).unwrap())
        .collect();
    let mut queues: Vec<VecDeque<Row>> = vec![VecDeque::new(); workers];
    for r in rows {
        queues[rng.below(workers as u64) as usize].push_back(r.clone());
    }
    let mut run = Run {
        merged: vec![],
        late_ids: vec![],
        late_rows: 0,
        null_time_rows: 0,
        closed_at: BTreeMap::new(),
    };
    let mut parts = vec![vec![]; workers];
    let mut closed = i64::MIN;
    let slide = spec.slide.unwrap_or(spec.size).as_millis() as i64;
    let size = spec.size.as_millis() as i64;
    let lateness = spec.allowed_lateness.as_millis() as i64;
    while queues.iter().any(|q| !q.is_empty()) {
        for (w, q) in ws.iter_mut().zip(&mut queues) {
            let take = (1 + rng.below(150) as usize).min(q.len());
            if take == 0 {
                continue;
            }
            let chunk: Vec<Row> = q.drain(..take).collect();
            for r in &chunk {
                run.closed_at.insert(r.id, closed);
            }
            let pushed = w.push(&batch(&schema, keys, time, &chunk)).unwrap();
            run.late_rows += pushed.late_rows;
            run.null_time_rows += pushed.null_time_rows;
            match spec.late {
                LatePolicy::Drop => assert!(pushed.late.is_none()),
                LatePolicy::DeadLetter => {
                    let late = pushed
                        .late
                        .unwrap_or_else(|| RecordBatch::new_empty(schema.clone()));
                    assert_eq!(late.num_rows(), pushed.late_rows + pushed.null_time_rows);
                    assert_eq!(late.schema(), schema);
                    let ids = late.column(0).as_primitive::<Int64Type>();
                    run.late_ids.extend(ids.values().iter());
                }
            }
        }
        if let Some(wm) = combined_watermark(ws.iter().map(Windower::local_watermark)) {
            assert!(wm >= closed, "the combined watermark went back");
            closed = wm;
            for (w, part) in ws.iter_mut().zip(&mut parts) {
                let out = w.close(wm).unwrap();
                assert!(
                    out.windows(2).all(|p| p[0].sort_key() < p[1].sort_key()),
                    "close output not in (end, start, key) order"
                );
                assert!(
                    out.iter()
                        .all(|r| r.end_ms <= wm && r.end_ms - r.start_ms == size)
                );
                // Memory: open windows end after the watermark and start at or before the
                // worker's largest event time.
                let max_t = w.local_watermark().unwrap() + lateness;
                let starts = ((max_t - wm + size) / slide + 1) as usize;
                assert!(
                    w.open_windows() <= starts * 7,
                    "{} open windows",
                    w.open_windows()
                );
                part.extend(out);
            }
        }
    }
    for (w, part) in ws.iter_mut().zip(&mut parts) {
        part.extend(w.flush_all().unwrap());
        assert_eq!(w.open_windows(), 0);
    }
    run.merged = merge_all(parts);
    run.late_ids.sort_unstable();
    run
}

/// The plain recompute: which rows are late, and every window's aggregates over the rows that
/// reached it while it was open.
fn brute_force(
    rows: &[Row],
    closed_at: &BTreeMap<i64, i64>,
    keys: Keys,
    size: i64,
    slide: i64,
) -> (Vec<i64>, Vec<Out>) {
    let mut late = vec![];
    let mut groups: BTreeMap<(i64, i64, Option<KeyValue>), Vec<&Row>> = BTreeMap::new();
    for r in rows {
        let Some(t) = r.t else {
            late.push(r.id);
            continue;
        };
        let closed = closed_at[&r.id];
        // Every multiple of `slide` near `t`, kept when its window contains `t`.
        let windows: Vec<i64> = ((t - 2 * size).div_euclid(slide)..=t.div_euclid(slide) + 1)
            .map(|m| m * slide)
            .filter(|s| *s <= t && t < s + size)
            .collect();
        assert_eq!(windows.len() as i64, size / slide);
        if windows.iter().all(|s| s + size <= closed) {
            late.push(r.id);
            continue;
        }
        for s in windows.into_iter().filter(|s| s + size > closed) {
            groups
                .entry((s + size, s, key_value(keys, r.key)))
                .or_default()
                .push(r);
        }
    }
    let outs = groups
        .into_iter()
        .map(|(k, rs)| {
            let vs: Vec<f64> = rs.iter().filter_map(|r| r.v).collect();
            let ws: Vec<f64> = rs.iter().filter_map(|r| r.w.map(f64::from)).collect();
            let sum = (!vs.is_empty()).then(|| vs.iter().sum::<f64>());
            let aggs = vec![
                Some(rs.len() as f64),
                Some(vs.len() as f64),
                sum,
                sum.map(|s| s / vs.len() as f64),
                ws.iter().copied().reduce(f64::min),
                vs.iter().copied().reduce(f64::max),
            ];
            (k, aggs)
        })
        .collect();
    late.sort_unstable();
    (late, outs)
}

/// The windows of an output batch, read back as [`Out`]s.
fn read_batch(out: &RecordBatch, keys: Keys) -> Vec<Out> {
    let col = |name: &str| out.column_by_name(name).unwrap().clone();
    let starts = col(WINDOW_START);
    let ends = col(WINDOW_END);
    let (starts, ends) = (
        starts.as_primitive::<TimestampMillisecondType>(),
        ends.as_primitive::<TimestampMillisecondType>(),
    );
    (0..out.num_rows())
        .map(|i| {
            let key = match keys {
                Keys::None => None,
                Keys::Int => {
                    let k = col("k");
                    let k = k.as_primitive::<Int64Type>();
                    Some(if k.is_null(i) {
                        KeyValue::Null
                    } else {
                        KeyValue::Int(k.value(i))
                    })
                }
                Keys::Str => {
                    let k = col("k");
                    let k = k.as_string::<i32>();
                    Some(if k.is_null(i) {
                        KeyValue::Null
                    } else {
                        KeyValue::Str(k.value(i).into())
                    })
                }
            };
            let counts =
                ["n", "n_v"].map(|c| Some(col(c).as_primitive::<Int64Type>().value(i) as f64));
            let floats = ["sum_v", "mean_v", "min_w", "max_v"].map(|c| {
                let a = col(c);
                let a = a.as_primitive::<Float64Type>();
                (!a.is_null(i)).then(|| a.value(i))
            });
            (
                (ends.value(i), starts.value(i), key),
                counts.into_iter().chain(floats).collect(),
            )
        })
        .collect()
}

fn check_against_brute_force(seed: u64, keys: Keys, time: TimeType, size: u64, slide: Option<u64>) {
    let mut rng = Rng(seed);
    let rows = random_rows(&mut rng, 4_000);
    for workers in [1, 2] {
        for policy in [LatePolicy::DeadLetter, LatePolicy::Drop] {
            let spec = spec(keys, size, slide, policy);
            let run = simulate(&rows, &spec, keys, time, workers, &mut rng);
            let (late, expected) = brute_force(
                &rows,
                &run.closed_at,
                keys,
                size as i64,
                slide.unwrap_or(size) as i64,
            );
            let null_times = rows.iter().filter(|r| r.t.is_none()).count();
            assert_eq!(run.null_time_rows, null_times);
            assert_eq!(run.late_rows, late.len() - null_times);
            assert!(
                run.late_rows > 20 && run.late_rows < 1_000,
                "{} late rows",
                run.late_rows
            );
            if policy == LatePolicy::DeadLetter {
                assert_eq!(run.late_ids, late);
            }
            let got: Vec<Out> = run
                .merged
                .iter()
                .map(|r| {
                    (
                        (r.end_ms, r.start_ms, r.key.clone()),
                        r.state.iter().map(AggState::value).collect(),
                    )
                })
                .collect();
            assert_eq!(got.len(), expected.len(), "{workers} workers: window count");
            assert_eq!(got, expected, "{workers} workers");
            let out = to_batch(&spec, &run.merged).unwrap();
            assert_eq!(read_batch(&out, keys), expected);
        }
    }
}

#[test]
fn tumbling_windows_match_a_recompute_on_one_and_two_workers() {
    check_against_brute_force(1, Keys::None, TimeType::Millis, 1_000, None);
    check_against_brute_force(2, Keys::Str, TimeType::Micros, 500, None);
}

#[test]
fn sliding_windows_match_a_recompute_on_one_and_two_workers() {
    check_against_brute_force(3, Keys::Int, TimeType::Millis, 1_000, Some(250));
    check_against_brute_force(4, Keys::None, TimeType::Micros, 600, Some(200));
    check_against_brute_force(5, Keys::Str, TimeType::Millis, 300, Some(300));
}
