//! Row-wise SQL compiled once to DataFusion physical expressions, for the model server.
//!
//! [`SqlRunner`](super::SqlRunner) plans the query again for every batch through a DataFusion
//! session: fine for a stream of large batches, far too slow for a request of one row.
//! [`CompiledSql`] plans the same wrapped query once, walks the optimized logical plan from its
//! table scan up (filters and projections; aliases pass through), turns each node's expressions
//! into physical expressions, and `apply` then only evaluates those on each batch.
//!
//! Functions whose value is fixed once per query run (`now()`, `current_date()`, ...) are folded
//! into constants by DataFusion's expression simplifier. `SqlRunner` gets a fresh value for every
//! batch; so that a long-running server does too, a query calling one is optimized without that
//! simplification, and its expressions are simplified and made physical again at every `apply`
//! (slower than the plain path, but still no SQL parsing or plan optimization per request).

use std::fmt::Display;
use std::sync::Arc;

use arrow::array::{RecordBatch, RecordBatchOptions, new_null_array};
use arrow::datatypes::{Field, Schema, SchemaRef};
use chrono::Utc;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, DFSchema, DFSchemaRef, internal_err};
use datafusion::datasource::MemTable;
use datafusion::execution::SessionStateBuilder;
use datafusion::logical_expr::execution_props::ExecutionProps;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, LogicalPlan, TableScan, Volatility};
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use datafusion::physical_expr::{PhysicalExpr, create_physical_expr};
use datafusion::physical_expr_common::utils::evaluate_expressions_to_arrays;
use datafusion::physical_plan::filter::batch_filter;
use datafusion::prelude::{SessionConfig, SessionContext};

use super::{INPUT_TABLE, SqlPlan};
use crate::{Error, Result};

/// The optimizer rule that folds `now()` and friends into constants.
const SIMPLIFY_RULE: &str = "simplify_expressions";

/// A row-wise [`SqlPlan`] compiled to physical expressions: evaluate it on any batch with the
/// plan's input (or table) schema without planning. Send + Sync, cheap to share in an `Arc`.
pub struct CompiledSql {
    source: Source,
    steps: Vec<Step>,
    output_schema: SchemaRef,
    props: ExecutionProps,
    /// The query calls a function fixed per query run (`now()`): simplify and make the
    /// expressions physical again at every apply, with the current time.
    per_apply: bool,
}

/// Where the rows come from.
enum Source {
    /// The request batch's columns, by name, in `schema` (the table scan's columns); `read[i]`
    /// says whether column `i` is one the plan reads (then it must be there) or may be null.
    Scan { schema: SchemaRef, read: Vec<bool> },
    /// No table (e.g. a filter the optimizer found always false): `rows` rows (0 or 1) of
    /// `schema`, whatever the batch.
    Empty { schema: SchemaRef, rows: usize },
}

/// One filter or projection, in the order they run.
struct Step {
    kind: StepKind,
    /// The logical expressions (one predicate for a filter), against `input`.
    exprs: Vec<Expr>,
    input: DFSchemaRef,
    physical: Vec<Arc<dyn PhysicalExpr>>,
    /// Schema of the batches this step produces.
    schema: SchemaRef,
}

#[derive(Clone, Copy)]
enum StepKind {
    Filter,
    Project,
}

fn sql_err(e: impl Display) -> Error {
    Error::Sql(e.to_string())
}

fn rows_option(rows: usize) -> RecordBatchOptions {
    RecordBatchOptions::new().with_row_count(Some(rows))
}

impl CompiledSql {
    /// Compiles `plan`: plans its wrapped query once against an empty table of its table schema
    /// and turns each filter and projection into physical expressions. Fails with
    /// [`Error::Sql`] if the query does not plan or contains a node that is not a filter,
    /// projection, alias or table scan.
    pub fn compile(plan: &SqlPlan) -> Result<Self> {
        let ctx = SessionContext::new_with_config(
            SessionConfig::new()
                .with_target_partitions(1)
                .with_batch_size(65_536),
        );
        let empty =
            MemTable::try_new(Arc::clone(&plan.table_schema), vec![vec![]]).map_err(sql_err)?;
        ctx.register_table(INPUT_TABLE, Arc::new(empty))
            .map_err(sql_err)?;
        let state = ctx.state();
        // Planning a query over a MemTable awaits nothing, so no tokio runtime is needed (and
        // this stays callable from inside one).
        let logical = futures::executor::block_on(state.create_logical_plan(&plan.wrapped_sql))
            .map_err(|e| Error::Sql(format!("{e}\n  in: {}", plan.wrapped_sql)))?;
        let per_apply = calls_stable_function(&logical)?;
        let state = if per_apply {
            let rules = state
                .optimizers()
                .iter()
                .filter(|rule| rule.name() != SIMPLIFY_RULE)
                .cloned()
                .collect();
            SessionStateBuilder::new_from_existing(state)
                .with_optimizer_rules(rules)
                .build()
        } else {
            state
        };
        let optimized = state.optimize(&logical).map_err(sql_err)?;
        Self::from_optimized(
            &optimized,
            &plan.input_columns,
            Arc::clone(&plan.output_schema),
            state.execution_props().clone(),
            per_apply,
        )
    }

    /// Compiles an optimized row-wise plan whose output is `output_schema`; `read` are the table
    /// columns a batch must have.
    fn from_optimized(
        optimized: &LogicalPlan,
        read: &[String],
        output_schema: SchemaRef,
        props: ExecutionProps,
        per_apply: bool,
    ) -> Result<Self> {
        // The chain from the root down to the table scan.
        let mut chain = Vec::new();
        let mut node = optimized;
        loop {
            chain.push(node);
            node = match node {
                LogicalPlan::Filter(f) => &f.input,
                LogicalPlan::Projection(p) => &p.input,
                LogicalPlan::SubqueryAlias(a) => &a.input,
                LogicalPlan::TableScan(_) | LogicalPlan::EmptyRelation(_) => break,
                other => return Err(not_row_wise(other)),
            };
        }
        let mut steps = Vec::new();
        let mut source = None;
        for node in chain.into_iter().rev() {
            match node {
                LogicalPlan::TableScan(scan) => {
                    source = Some(scan_source(scan, read, &mut steps)?);
                }
                LogicalPlan::EmptyRelation(e) => {
                    source = Some(Source::Empty {
                        schema: Arc::clone(e.schema.inner()),
                        rows: usize::from(e.produce_one_row),
                    });
                }
                LogicalPlan::Filter(f) => steps.push((
                    StepKind::Filter,
                    vec![f.predicate.clone()],
                    Arc::clone(f.input.schema()),
                    None,
                )),
                LogicalPlan::Projection(p) => steps.push((
                    StepKind::Project,
                    p.expr.clone(),
                    Arc::clone(p.input.schema()),
                    Some(Arc::clone(&p.schema)),
                )),
                _ => {} // SubqueryAlias: only renames qualifiers.
            }
        }
        let source = source.ok_or_else(|| {
            Error::Internal("the compiled SQL plan has no table scan".to_string())
        })?;
        let mut schema = source.schema();
        let mut compiled = Vec::with_capacity(steps.len());
        for (kind, exprs, input, output) in steps {
            let mut step = Step {
                kind,
                exprs,
                input,
                physical: Vec::new(),
                schema: Arc::clone(&schema),
            };
            step.physical = step
                .plan(&props, per_apply)
                .map_err(|e| Error::Sql(format!("cannot compile the query: {e}")))?;
            if let (StepKind::Project, Some(output)) = (kind, output) {
                step.schema = Arc::new(step.project_schema(&schema, &output).map_err(sql_err)?);
            }
            schema = Arc::clone(&step.schema);
            compiled.push(step);
        }
        let produced: Vec<_> = schema
            .fields()
            .iter()
            .map(|f| (f.name(), f.data_type()))
            .collect();
        let expected: Vec<_> = output_schema
            .fields()
            .iter()
            .map(|f| (f.name(), f.data_type()))
            .collect();
        if produced != expected {
            return Err(Error::Internal(format!(
                "the compiled SQL produces {produced:?}, but the plan expects {expected:?}"
            )));
        }
        Ok(CompiledSql {
            source,
            steps: compiled,
            output_schema,
            props,
            per_apply,
        })
    }

    /// Applies the query to one batch: the same output (schema, rows, values) as
    /// [`SqlRunner::apply`](super::SqlRunner::apply) on it. The batch may have the plan's input
    /// schema (only the columns read) or its full table schema; columns are matched by name and
    /// missing unread columns are null. Errors (a missing or mistyped column, a failing
    /// expression) are for the caller to report against the request.
    pub fn apply(&self, batch: &RecordBatch) -> std::result::Result<RecordBatch, String> {
        let mut current = self.source.read(batch)?;
        let failed =
            |e: datafusion::error::DataFusionError| format!("SQL failed on this batch: {e}");
        if self.per_apply {
            let mut props = self.props.clone();
            props.query_execution_start_time = Some(Utc::now());
            for step in &self.steps {
                let physical = step.plan(&props, true).map_err(failed)?;
                current = step.run(&current, &physical).map_err(failed)?;
            }
        } else {
            for step in &self.steps {
                current = step.run(&current, &step.physical).map_err(failed)?;
            }
        }
        RecordBatch::try_new_with_options(
            Arc::clone(&self.output_schema),
            current.columns().to_vec(),
            &rows_option(current.num_rows()),
        )
        .map_err(|e| format!("SQL failed on this batch: {e}"))
    }

    /// Schema of what [`apply`](Self::apply) produces (the plan's output schema).
    pub fn output_schema(&self) -> SchemaRef {
        Arc::clone(&self.output_schema)
    }
}

fn not_row_wise(node: &LogicalPlan) -> Error {
    Error::Sql(format!(
        "cannot compile `{}` for the model server: only filters, projections and aliases over \
         the input table are row-wise",
        node.display()
    ))
}

/// The scan's source; pushed-down filters (and the projection after them) become steps.
fn scan_source(scan: &TableScan, read: &[String], steps: &mut Vec<PendingStep>) -> Result<Source> {
    if scan.fetch.is_some() {
        return Err(not_row_wise(&LogicalPlan::TableScan(scan.clone())));
    }
    let full = Arc::new(
        DFSchema::try_from_qualified_schema(scan.table_name.clone(), &scan.source.schema())
            .map_err(sql_err)?,
    );
    let schema = if scan.filters.is_empty() {
        Arc::clone(scan.projected_schema.inner())
    } else {
        // Filters may read columns the projection drops: read the whole table, filter, project.
        let predicate = conjunction(scan.filters.iter().cloned())
            .ok_or_else(|| Error::Internal("empty scan filter".to_string()))?;
        steps.push((StepKind::Filter, vec![predicate], Arc::clone(&full), None));
        if let Some(indices) = &scan.projection {
            let columns = indices
                .iter()
                .map(|&i| Expr::Column(Column::from(full.qualified_field(i))))
                .collect();
            steps.push((
                StepKind::Project,
                columns,
                Arc::clone(&full),
                Some(Arc::clone(&scan.projected_schema)),
            ));
        }
        Arc::clone(full.inner())
    };
    let read = schema
        .fields()
        .iter()
        .map(|f| read.contains(f.name()))
        .collect();
    Ok(Source::Scan { schema, read })
}

/// A step before its expressions are made physical: kind, expressions, input schema, and the
/// projection's output schema (for its column names).
type PendingStep = (StepKind, Vec<Expr>, DFSchemaRef, Option<DFSchemaRef>);

/// Whether the plan calls a function whose value is fixed once per query run, such as `now()`.
fn calls_stable_function(plan: &LogicalPlan) -> Result<bool> {
    let mut found = false;
    plan.apply(|node| {
        node.apply_expressions(|expr| {
            found |= expr.exists(|e| {
                Ok(matches!(e, Expr::ScalarFunction(f)
                    if f.func.signature().volatility == Volatility::Stable))
            })?;
            Ok(if found {
                TreeNodeRecursion::Stop
            } else {
                TreeNodeRecursion::Continue
            })
        })
    })
    .map_err(sql_err)?;
    Ok(found)
}

impl Source {
    fn schema(&self) -> SchemaRef {
        match self {
            Source::Scan { schema, .. } | Source::Empty { schema, .. } => Arc::clone(schema),
        }
    }

    /// The batch's columns as this source's batch.
    fn read(&self, batch: &RecordBatch) -> std::result::Result<RecordBatch, String> {
        let (schema, columns) = match self {
            Source::Empty { schema, rows } => {
                let columns = schema
                    .fields()
                    .iter()
                    .map(|f| new_null_array(f.data_type(), *rows))
                    .collect();
                return RecordBatch::try_new_with_options(
                    Arc::clone(schema),
                    columns,
                    &rows_option(*rows),
                )
                .map_err(|e| e.to_string());
            }
            Source::Scan { schema, read } => (schema, read),
        };
        let have = batch.schema_ref();
        let columns = schema
            .fields()
            .iter()
            .zip(columns)
            .map(|(field, &read)| match have.fields().find(field.name()) {
                Some((i, found)) if found.data_type() == field.data_type() => {
                    Ok(Arc::clone(batch.column(i)))
                }
                Some((_, found)) => Err(format!(
                    "input column '{}' has type {}, expected {}",
                    field.name(),
                    found.data_type(),
                    field.data_type()
                )),
                None if !read => Ok(new_null_array(field.data_type(), batch.num_rows())),
                None => Err(format!(
                    "input column '{}' is missing from the batch",
                    field.name()
                )),
            })
            .collect::<std::result::Result<Vec<_>, String>>()?;
        RecordBatch::try_new_with_options(
            Arc::clone(schema),
            columns,
            &rows_option(batch.num_rows()),
        )
        .map_err(|e| e.to_string())
    }
}

impl Step {
    /// The physical expressions, simplified first when `simplify` (which folds `now()` with
    /// `props`' start time).
    fn plan(
        &self,
        props: &ExecutionProps,
        simplify: bool,
    ) -> datafusion::error::Result<Vec<Arc<dyn PhysicalExpr>>> {
        let simplifier = simplify.then(|| {
            ExprSimplifier::new(
                SimplifyContext::builder()
                    .with_schema(Arc::clone(&self.input))
                    .with_config_options(props.config_options.clone().unwrap_or_default())
                    .with_query_execution_start_time(props.query_execution_start_time)
                    .build(),
            )
        });
        let ctx = PhysicalPlanningContext::default();
        self.exprs
            .iter()
            .map(|expr| match &simplifier {
                Some(s) => {
                    create_physical_expr(&s.simplify(expr.clone())?, &self.input, props, &ctx)
                }
                None => create_physical_expr(expr, &self.input, props, &ctx),
            })
            .collect()
    }

    /// A projection's output schema, as DataFusion's ProjectionExec makes it: names from the
    /// logical plan, types and nullability from the physical expressions.
    fn project_schema(
        &self,
        input: &Schema,
        output: &DFSchema,
    ) -> datafusion::error::Result<Schema> {
        let fields = self
            .physical
            .iter()
            .zip(output.fields())
            .map(|(expr, named)| {
                let field = expr.return_field(input)?;
                Ok(
                    Field::new(named.name(), field.data_type().clone(), field.is_nullable())
                        .with_metadata(field.metadata().clone()),
                )
            })
            .collect::<datafusion::error::Result<Vec<_>>>()?;
        Ok(Schema::new_with_metadata(fields, input.metadata().clone()))
    }

    fn run(
        &self,
        batch: &RecordBatch,
        physical: &[Arc<dyn PhysicalExpr>],
    ) -> datafusion::error::Result<RecordBatch> {
        match (self.kind, physical) {
            (StepKind::Filter, [predicate]) => batch_filter(batch, predicate),
            (StepKind::Filter, _) => internal_err!("a compiled filter has one predicate"),
            (StepKind::Project, exprs) => Ok(RecordBatch::try_new_with_options(
                Arc::clone(&self.schema),
                evaluate_expressions_to_arrays(exprs, batch)?,
                &rows_option(batch.num_rows()),
            )?),
        }
    }
}

#[cfg(test)]
mod tests {
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
            CompiledSql::from_optimized(&plan, &read, output, ExecutionProps::new(), false)
                .unwrap();
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
}
