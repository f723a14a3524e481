//! Windows as a node of a flow: the same windows as one `Windower` over every row, on any number
//! of workers; emitted as the flow's time (its watermark) passes their end, the rest when the
//! input ends; late rows as dead letters.

use std::cell::RefCell;
use std::rc::Rc;

use millrace_engine::timely::container::CapacityContainerBuilder;
use millrace_engine::timely::dataflow::InputHandle;
use millrace_engine::timely::dataflow::channels::pact::Pipeline;
use millrace_engine::timely::dataflow::operators::generic::Operator;
use millrace_engine::timely::dataflow::operators::{Input, Probe};
use millrace_engine::{Batch, ClusterConfig, Flow, FlowContext, MetricsRegistry, execute};

use super::*;

/// Rows `(ts ms, key, v)` of a stream: 600 rows over 6 keys and 60 s, in event-time order.
fn rows() -> Vec<(i64, String, f64)> {
    let mut rng = Rng(7);
    (0..600)
        .map(|i| {
            let ts = i * 100 + rng.below(50) as i64;
            (
                ts,
                format!("k{}", rng.below(6)),
                rng.below(1000) as f64 / 10.0,
            )
        })
        .collect()
}

fn batch_of(rows: &[(i64, String, f64)]) -> RecordBatch {
    RecordBatch::try_new(
        node_schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.1.as_str()),
            )),
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.2))),
        ],
    )
    .unwrap()
}

/// (ts ms, key, v), all nullable: the hand-written tests' schema.
fn node_schema() -> SchemaRef {
    super::cases::small_schema()
}

fn node_spec(key: bool) -> WindowSpec {
    WindowSpec {
        time_column: "ts".into(),
        size: Duration::from_secs(10),
        slide: Some(Duration::from_secs(5)),
        allowed_lateness: Duration::ZERO,
        key: key.then(|| "k".into()),
        aggregates: vec![
            agg(None, AggFn::Count, "n"),
            agg(Some("v"), AggFn::Sum, "sum"),
        ],
        late: LatePolicy::DeadLetter,
    }
}

/// Each window row as (start, end, key, n, sum) text, sorted: comparable across batches.
fn window_rows(batches: &[RecordBatch]) -> Vec<String> {
    let mut out = Vec::new();
    for b in batches {
        for i in 0..b.num_rows() {
            // Sums to 6 decimals: workers add a window's rows in another order.
            let cols: Vec<String> = (b.columns().iter())
                .map(|c| match c.as_primitive_opt::<Float64Type>() {
                    Some(f) => format!("{:.6}", f.value(i)),
                    None => arrow::util::display::array_value_to_string(c, i).unwrap(),
                })
                .collect();
            out.push(cols.join(","));
        }
    }
    out.sort();
    out
}

/// What the node emitted on a worker, with the flow time each batch came out at, and the rows it
/// dead-lettered.
type Emitted = (Vec<(u64, RecordBatch)>, u64);

/// Runs the node on `workers` workers: worker `w` sends every `workers`-th row, in tenths, the
/// flow's time (the watermark) trailing its newest event by 200 ms after each; then worker 0
/// sends `late`, if any.
fn run_node(
    workers: usize,
    key: bool,
    rows: Vec<(i64, String, f64)>,
    late: Option<(i64, &str)>,
) -> Vec<Emitted> {
    let rows = Arc::new(rows);
    let late: Option<(i64, String)> = late.map(|(t, k)| (t, k.to_string()));
    execute::<_, millrace_engine::Error, _>(
        &ClusterConfig::local(workers),
        MetricsRegistry::new(),
        move |worker, ctx| {
            let out = Rc::new(RefCell::new(Vec::new()));
            let dead = Rc::new(RefCell::new(0u64));
            let mut input = InputHandle::<u64, CapacityContainerBuilder<Vec<Batch>>>::new();
            let (sink, dead_sink) = (Rc::clone(&out), Rc::clone(&dead));
            let probes = worker.dataflow::<u64, _, _>(|scope| {
                let fc = FlowContext::new(ctx.clone());
                let flow = Flow::from_stream(scope.input_from(&mut input), fc.clone());
                let windows = flow
                    .event_time_windows("windows", node_spec(key), node_schema())
                    .unwrap();
                let (windows_done, stream) = windows.into_stream().probe();
                stream.sink(Pipeline, "stamp", move |(input, _)| {
                    input.for_each_stamp(|cap, data| {
                        let time = *cap.least().unwrap();
                        for batches in data {
                            for b in batches.drain(..) {
                                sink.borrow_mut().push((time, b.data));
                            }
                        }
                    })
                });
                let (dead_done, dead) = fc.dead_letters(scope).unwrap().probe();
                dead.sink(Pipeline, "dead", move |(input, _)| {
                    input.for_each_stamp(|_, data| {
                        for letters in data {
                            *dead_sink.borrow_mut() +=
                                letters.drain(..).map(|d| d.rows).sum::<u64>();
                        }
                    })
                });
                [windows_done, dead_done]
            });
            let mine: Vec<(i64, String, f64)> = (rows.iter())
                .skip(ctx.index)
                .step_by(workers)
                .cloned()
                .collect();
            for chunk in mine.chunks(mine.len().div_ceil(10)) {
                input.send(Batch::new(batch_of(chunk)));
                let watermark = (chunk.last().unwrap().0 - 200).max(*input.time() as i64);
                input.advance_to(watermark as u64);
                ctx.step_while(worker, || probes[0].less_than(input.time()))?;
            }
            if let (Some((t, k)), 0) = (&late, ctx.index) {
                input.send(Batch::new(batch_of(&[(*t, k.clone(), 1.0)])));
            }
            input.close();
            ctx.step_while(worker, || probes.iter().any(|p| !p.done()))?;
            let emitted = out.borrow().clone();
            let dead = *dead.borrow();
            Ok((emitted, dead))
        },
    )
    .unwrap()
}

/// Every window row the workers emitted, as comparable text.
fn all_rows(out: &[Emitted]) -> Vec<String> {
    let batches: Vec<RecordBatch> = (out.iter())
        .flat_map(|(emitted, _)| emitted.iter().map(|(_, b)| b.clone()))
        .collect();
    window_rows(&batches)
}

/// The windows one windower computes over every row, at the end.
fn reference(key: bool, rows: &[(i64, String, f64)]) -> Vec<String> {
    let mut windower = Windower::new(node_spec(key), node_schema()).unwrap();
    windower.push(&batch_of(rows)).unwrap();
    let all = windower.flush_all().unwrap();
    window_rows(&[windower.to_batch(&all).unwrap()])
}

#[test]
fn windows_as_a_node_equal_one_windower_over_every_row_on_any_worker_count() {
    let rows = rows();
    let expected = reference(true, &rows);
    assert!(expected.len() > 60, "{}", expected.len());
    for workers in [1, 3] {
        let out = run_node(workers, true, rows.clone(), None);
        assert_eq!(all_rows(&out), expected, "{workers} workers");
        // Windows come out as the watermark passes their end, not all when the input ends:
        // what comes out at a time before a worker's last holds only windows ending by then.
        let mut times = std::collections::BTreeSet::new();
        for (emitted, dead) in &out {
            assert_eq!(*dead, 0);
            let last = emitted.iter().map(|(t, _)| *t).max().unwrap_or(0);
            for (time, b) in emitted {
                times.insert(*time);
                let ends = b.column_by_name("window_end").unwrap();
                let ends = arrow::compute::cast(ends, &DataType::Int64).unwrap();
                let ends = ends.as_primitive::<Int64Type>();
                if *time < last {
                    assert!(
                        ends.values().iter().all(|e| *e <= *time as i64),
                        "at {time}: {ends:?}"
                    );
                }
            }
        }
        assert!(
            times.len() > 5,
            "{workers} workers: windows came out at {times:?}"
        );
    }
}

#[test]
fn unkeyed_windows_meet_on_one_worker_and_a_late_row_is_a_dead_letter() {
    let rows = rows();
    let expected = reference(false, &rows);
    // A row at 1 s, sent after the watermark passed every window holding it.
    let out = run_node(2, false, rows, Some((1_000, "k1")));
    assert_eq!(all_rows(&out), expected);
    assert!(out[1].0.is_empty(), "worker 1 holds no unkeyed window");
    assert_eq!(out.iter().map(|(_, d)| d).sum::<u64>(), 1, "the late row");
}
