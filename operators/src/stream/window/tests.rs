use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray, TimestampNanosecondArray, TimestampSecondArray,
};
use arrow::datatypes::{
    DataType, Field, Float64Type, Int64Type, Schema, SchemaRef, TimeUnit, TimestampMillisecondType,
};

use super::*;

/// splitmix64: a small seeded generator, so the tests need no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Keys {
    None,
    Int,
    Str,
}

#[derive(Clone, Copy)]
enum TimeType {
    Millis,
    Micros,
}

#[derive(Clone, Debug)]
struct Row {
    id: i64,
    /// Event time in ms; the batch may carry it in finer units.
    t: Option<i64>,
    sub_ms: i64,
    key: Option<i32>,
    v: Option<f64>,
    w: Option<i32>,
}

fn schema(keys: Keys, time: TimeType) -> SchemaRef {
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

fn batch(schema: &SchemaRef, keys: Keys, time: TimeType, rows: &[Row]) -> RecordBatch {
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

fn agg(column: Option<&str>, function: AggFn, name: &str) -> Aggregate {
    Aggregate {
        column: column.map(String::from),
        function,
        name: name.into(),
    }
}

fn spec(keys: Keys, size_ms: u64, slide_ms: Option<u64>, late: LatePolicy) -> WindowSpec {
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
fn random_rows(rng: &mut Rng, n: usize) -> Vec<Row> {
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

fn small_schema() -> SchemaRef {
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
    let ok = [
        ("500ms", Duration::from_millis(500)),
        ("10s", Duration::from_secs(10)),
        ("5m", Duration::from_secs(300)),
        ("1h", Duration::from_secs(3_600)),
        ("2d", Duration::from_secs(172_800)),
        (" 0s ", Duration::ZERO),
    ];
    for (s, d) in ok {
        assert_eq!(WindowSpec::parse_duration(s).unwrap(), d, "{s}");
    }
    for bad in [
        "",
        "10",
        "ms",
        "10x",
        "1.5s",
        "-1s",
        "5 mins",
        "99999999999999999999s",
        "999999999999999999d",
    ] {
        let e = WindowSpec::parse_duration(bad).unwrap_err().to_string();
        assert!(
            e.contains(&format!("{bad:?}")) && e.contains("ms, s, m, h or d"),
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
