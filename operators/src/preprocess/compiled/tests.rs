//! Tests of the parent module.
use std::time::{Duration, Instant};

use super::*;
use crate::preprocess::SqlRunner;
use arrow::array::{
    Array, Float32Array, Float64Array, Int32Array, Int64Array, StringArray,
    TimestampNanosecondArray,
};
use arrow::datatypes::DataType;
use datafusion::datasource::provider_as_source;
use datafusion::logical_expr::{LogicalPlanBuilder, col, lit};

fn schema() -> Schema {
    Schema::new(vec![
        Field::new("a", DataType::Float64, true),
        Field::new("b", DataType::Int64, true),
        Field::new("c", DataType::Utf8, true),
        Field::new("f3", DataType::Float32, true),
        Field::new("d", DataType::Int32, false),
    ])
}

/// `rows` rows with nulls in every nullable column, at different strides.
fn batch(rows: usize) -> RecordBatch {
    let n = rows as i64;
    let words = ["x", "yy", "Zed", "x"];
    RecordBatch::try_new(
        Arc::new(schema()),
        vec![
            Arc::new(Float64Array::from_iter((0..n).map(|i| {
                (i % 5 != 3).then_some(((i * 37) % 100) as f64 / 100.0)
            }))),
            Arc::new(Int64Array::from_iter(
                (0..n).map(|i| (i % 7 != 6).then_some(i - n / 2)),
            )),
            Arc::new(StringArray::from_iter(
                (0..rows).map(|i| (i % 6 != 5).then_some(words[i % 4])),
            )),
            Arc::new(Float32Array::from_iter(
                (0..n).map(|i| (i % 3 != 1).then_some(i as f32 * 0.5)),
            )),
            Arc::new(Int32Array::from_iter_values((0..n).map(|i| i as i32))),
        ],
    )
    .unwrap()
}

/// Only the plan's input columns, in input order.
fn narrow(plan: &SqlPlan, batch: &RecordBatch) -> RecordBatch {
    let indices: Vec<usize> = plan
        .input_columns
        .iter()
        .map(|c| batch.schema().index_of(c).unwrap())
        .collect();
    batch.project(&indices).unwrap()
}

/// Compiled and DataFusion-run outputs are equal on 1, 7 and 1000 rows, from the full batch
/// and from only the columns read.
fn same_as_runner(sql: &str, needed: &[&str]) -> SqlPlan {
    let needed: Vec<String> = needed.iter().map(|s| s.to_string()).collect();
    let plan = SqlPlan::plan(Some(sql), &schema(), &needed).unwrap();
    let compiled = CompiledSql::compile(&plan).unwrap();
    let runner = SqlRunner::new(plan.clone()).unwrap();
    assert_eq!(compiled.output_schema(), plan.output_schema);
    for rows in [1, 7, 1000] {
        let full = batch(rows);
        let expected = runner.apply(full.clone()).unwrap();
        assert_eq!(
            compiled.apply(&full).unwrap(),
            expected,
            "{sql} on {rows} rows"
        );
        let (tracked, rows_of) = compiled.apply_tracked(&full).unwrap();
        assert_eq!(tracked, expected, "{sql} tracked, on {rows} rows");
        assert_eq!(rows_of.len(), expected.num_rows());
        // A row-wise query keeps the input order: the row numbers only grow.
        let numbers: Vec<u32> = rows_of.iter().flatten().collect();
        assert!(
            numbers.windows(2).all(|w| w[0] < w[1]),
            "{sql}: {numbers:?}"
        );
        assert!(
            numbers.iter().all(|&r| (r as usize) < rows),
            "{sql}: {numbers:?}"
        );
        let only_read = narrow(&plan, &full);
        assert_eq!(
            compiled.apply(&only_read).unwrap(),
            expected,
            "{sql} on {rows} rows of {:?}",
            plan.input_columns
        );
    }
    plan
}

#[test]
fn filter_star() {
    let plan = same_as_runner("SELECT * FROM input WHERE f3 IS NOT NULL", &[]);
    let out = CompiledSql::compile(&plan)
        .unwrap()
        .apply(&batch(7))
        .unwrap();
    // Rows 1 and 4 have a null f3.
    assert_eq!(out.num_rows(), 5);
    assert_eq!(out.num_columns(), 5);
}

#[test]
fn tracked_rows_are_the_input_rows_each_output_row_came_from() {
    let sql = "SELECT b * 2 AS b2 FROM input WHERE f3 IS NOT NULL AND (b > 0 OR c = 'x')";
    let plan = same_as_runner(sql, &["b2"]);
    let compiled = CompiledSql::compile(&plan).unwrap();
    let full = batch(1000);
    let (out, rows_of) = compiled.apply_tracked(&full).unwrap();
    // The plain recompute: the rows where the WHERE holds (null is not true).
    let b = full
        .column(1)
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap();
    let c = full
        .column(2)
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap();
    let f3 = full
        .column(3)
        .as_any()
        .downcast_ref::<Float32Array>()
        .unwrap();
    let expected: Vec<u32> = (0..1000)
        .filter(|&i| {
            !f3.is_null(i)
                && ((!b.is_null(i) && b.value(i) > 0) || (!c.is_null(i) && c.value(i) == "x"))
        })
        .map(|i| i as u32)
        .collect();
    assert_eq!(rows_of.iter().flatten().collect::<Vec<_>>(), expected);
    assert_eq!(rows_of.null_count(), 0);
    // Each output value is the one computed from its input row.
    let b2 = out.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
    for (j, &i) in expected.iter().enumerate() {
        assert_eq!(b2.value(j), b.value(i as usize) * 2);
    }
}

#[test]
fn expressions_case_and_functions() {
    let sql = "SELECT a, b * 2 AS b2, CASE WHEN c = 'x' THEN 1 ELSE 0 END AS flag, \
               upper(c) AS cu FROM input WHERE a > 0.5";
    let plan = same_as_runner(sql, &[]);
    let out = CompiledSql::compile(&plan)
        .unwrap()
        .apply(&batch(7))
        .unwrap();
    // a = 0, .37, .74, null, .48, .85, .22: rows 2 and 5 pass.
    let b2 = out.column(1).as_any().downcast_ref::<Int64Array>().unwrap();
    assert_eq!(b2.values(), &[-2, 4]);
    let cu = out
        .column(3)
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap();
    assert_eq!(cu.value(0), "ZED");
    assert!(cu.is_null(1));
}

#[test]
fn casts() {
    same_as_runner("SELECT CAST(a AS DOUBLE) + 1 AS a1, c FROM input", &[]);
    same_as_runner(
        "SELECT CAST(b AS VARCHAR) AS bs, coalesce(a, -1.0) AS a0, c || '!' AS c2, \
         b % 3 AS m FROM input WHERE c IS NOT NULL AND b > -100",
        &[],
    );
}

#[test]
fn needed_columns_narrow_what_is_read() {
    let sql = "SELECT a, b * 2 AS b2, CASE WHEN c = 'x' THEN 1 ELSE 0 END AS flag, \
               upper(c) AS cu FROM input WHERE a > 0.5";
    let plan = same_as_runner(sql, &["cu", "b2"]);
    assert_eq!(plan.input_columns, vec!["a", "b", "c"]);
    assert_eq!(plan.output_schema.fields().len(), 2);
    let plan = same_as_runner("SELECT * FROM input WHERE f3 IS NOT NULL", &["c"]);
    assert_eq!(plan.input_columns, vec!["c", "f3"]);
}

#[test]
fn constants_empty_scans_and_false_filters() {
    let plan = same_as_runner("SELECT 1 AS one FROM input", &[]);
    assert!(plan.input_columns.is_empty());
    same_as_runner("SELECT 1 AS one, b FROM input WHERE b > 0", &[]);
    let plan = same_as_runner("SELECT * FROM input WHERE 1 = 0", &[]);
    let out = CompiledSql::compile(&plan)
        .unwrap()
        .apply(&batch(7))
        .unwrap();
    assert_eq!(out.num_rows(), 0);
}

#[test]
fn missing_or_mistyped_read_columns_are_errors() {
    let plan = SqlPlan::plan(Some("SELECT b + 1 AS b1 FROM input"), &schema(), &[]).unwrap();
    let compiled = CompiledSql::compile(&plan).unwrap();
    let full = batch(3);
    let no_b = full.project(&[0, 2]).unwrap();
    let err = compiled.apply(&no_b).unwrap_err();
    assert!(err.contains("'b' is missing"), "{err}");
    let wrong = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("b", DataType::Int32, true)])),
        vec![Arc::new(Int32Array::from(vec![1]))],
    )
    .unwrap();
    let err = compiled.apply(&wrong).unwrap_err();
    assert!(err.contains("'b' has type Int32, expected Int64"), "{err}");
}

#[test]
fn now_is_fresh_at_every_apply() {
    let plan = SqlPlan::plan(Some("SELECT b, now() AS t FROM input"), &schema(), &[]).unwrap();
    let compiled = CompiledSql::compile(&plan).unwrap();
    let nanos = || Utc::now().timestamp_nanos_opt().unwrap();
    let mut last = 0;
    for _ in 0..2 {
        let before = nanos();
        let out = compiled.apply(&batch(3)).unwrap();
        let after = nanos();
        let t = out
            .column(1)
            .as_any()
            .downcast_ref::<TimestampNanosecondArray>()
            .unwrap();
        assert!(t.iter().all(|v| v == Some(t.value(0))));
        assert!((before..=after).contains(&t.value(0)));
        assert!(t.value(0) > last);
        last = t.value(0);
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn pushed_down_scan_filters_read_columns_outside_the_projection() {
    let table = Arc::new(schema());
    let source = provider_as_source(Arc::new(
        MemTable::try_new(Arc::clone(&table), vec![vec![]]).unwrap(),
    ));
    let plan = LogicalPlanBuilder::scan_with_filters(
        INPUT_TABLE,
        source,
        Some(vec![2]),
        vec![col("b").gt(lit(0i64))],
    )
    .unwrap()
    .build()
    .unwrap();
    let output = Arc::new(Schema::new(vec![Field::new("c", DataType::Utf8, true)]));
    let read = ["b".to_string(), "c".to_string()];
    let compiled =
        CompiledSql::from_optimized(&plan, &read, output, ExecutionProps::new(), false).unwrap();
    // b = -3..=3 with row 6 null: rows 4 and 5 pass.
    let out = compiled.apply(&batch(7)).unwrap();
    let c = out
        .column(0)
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap();
    assert_eq!(c.iter().collect::<Vec<_>>(), vec![Some("x"), None]);
}

#[test]
fn other_nodes_are_refused_by_name() {
    let table = Arc::new(schema());
    let source = provider_as_source(Arc::new(
        MemTable::try_new(Arc::clone(&table), vec![vec![]]).unwrap(),
    ));
    let plan = LogicalPlanBuilder::scan(INPUT_TABLE, source, None)
        .unwrap()
        .limit(0, Some(1))
        .unwrap()
        .build()
        .unwrap();
    let err = CompiledSql::from_optimized(&plan, &[], table, ExecutionProps::new(), false)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("Limit"), "{err}");
}

#[test]
fn one_row_is_fast_and_shareable() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<CompiledSql>();
    let sql = "SELECT a, b * 2 AS b2, CASE WHEN c = 'x' THEN 1 ELSE 0 END AS flag, \
               upper(c) AS cu FROM input WHERE a > 0.5";
    let plan = SqlPlan::plan(Some(sql), &schema(), &[]).unwrap();
    let compiled = Arc::new(CompiledSql::compile(&plan).unwrap());
    let one = narrow(&plan, &batch(3).slice(2, 1));
    assert_eq!(compiled.apply(&one).unwrap().num_rows(), 1);
    let runs = 2_000;
    let start = Instant::now();
    for _ in 0..runs {
        std::hint::black_box(compiled.apply(&one).unwrap());
    }
    let compiled_us = start.elapsed().as_secs_f64() * 1e6 / runs as f64;
    let runner = SqlRunner::new(plan).unwrap();
    let start = Instant::now();
    for _ in 0..20 {
        std::hint::black_box(runner.apply(one.clone()).unwrap());
    }
    let runner_us = start.elapsed().as_secs_f64() * 1e6 / 20.0;
    println!("1-row apply: compiled {compiled_us:.1} µs, SqlRunner {runner_us:.1} µs");
}
