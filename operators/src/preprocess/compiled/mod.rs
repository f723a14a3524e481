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

use arrow::array::{
    Array, BooleanArray, RecordBatch, RecordBatchOptions, UInt32Array, new_null_array,
};
use arrow::compute::{filter, filter_record_batch};
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
    /// The plan, when it has user steps around the query (they run before and after it).
    around: Option<Box<SqlPlan>>,
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
        let ctx = super::sql::context();
        let empty =
            MemTable::try_new(Arc::clone(&plan.sql_table_schema), vec![vec![]]).map_err(sql_err)?;
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
        // After steps before the query, the query's table is theirs, every column made.
        let read: Vec<String> = if plan.before.is_empty() {
            plan.input_columns.clone()
        } else {
            (plan.sql_table_schema.fields().iter())
                .map(|f| f.name().clone())
                .collect()
        };
        let mut compiled = Self::from_optimized(
            &optimized,
            &read,
            Arc::clone(&plan.sql_output_schema),
            state.execution_props().clone(),
            per_apply,
        )?;
        if !(plan.before.is_empty() && plan.after.is_empty()) {
            compiled.output_schema = Arc::clone(&plan.output_schema);
            compiled.around = Some(Box::new(plan.clone()));
        }
        Ok(compiled)
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
            around: None,
        })
    }

    /// Applies the query to one batch: the same output (schema, rows, values) as
    /// [`SqlRunner::apply`](super::SqlRunner::apply) on it. The batch may have the plan's input
    /// schema (only the columns read) or its full table schema; columns are matched by name and
    /// missing unread columns are null. Errors (a missing or mistyped column, a failing
    /// expression) are for the caller to report against the request.
    pub fn apply(&self, batch: &RecordBatch) -> std::result::Result<RecordBatch, String> {
        self.run(batch, None)
    }

    /// [`apply`](Self::apply), also giving, for each output row, the index of the input row it
    /// was made from: the query is row-wise, so each output row comes from one input row (null
    /// only for a query without a table, whose rows come from none). A caller keeps what the
    /// query drops (a record's partition, offset, key) aligned with its output this way.
    pub fn apply_tracked(
        &self,
        batch: &RecordBatch,
    ) -> std::result::Result<(RecordBatch, UInt32Array), String> {
        let rows = match &self.source {
            Source::Scan { .. } => {
                let n = u32::try_from(batch.num_rows())
                    .map_err(|_| format!("a batch of {} rows is too large", batch.num_rows()))?;
                UInt32Array::from_iter_values(0..n)
            }
            Source::Empty { rows, .. } => UInt32Array::new_null(*rows),
        };
        let mut rows = rows;
        let out = self.run(batch, Some(&mut rows))?;
        Ok((out, rows))
    }

    /// Runs the steps on `batch`; filters also filter `rows` when given.
    fn run(
        &self,
        batch: &RecordBatch,
        mut rows: Option<&mut UInt32Array>,
    ) -> std::result::Result<RecordBatch, String> {
        let staged;
        let batch = match &self.around {
            Some(plan) if !plan.before.is_empty() => {
                staged = plan.start(plan.to_table(batch)?, rows.as_deref_mut())?;
                &staged
            }
            _ => batch,
        };
        let mut current = self.source.read(batch)?;
        let failed =
            |e: datafusion::error::DataFusionError| format!("SQL failed on this batch: {e}");
        let props = self.per_apply.then(|| {
            let mut props = self.props.clone();
            props.query_execution_start_time = Some(Utc::now());
            props
        });
        for step in &self.steps {
            let planned;
            let physical = match &props {
                Some(props) => {
                    planned = step.plan(props, true).map_err(failed)?;
                    &planned
                }
                None => &step.physical,
            };
            current = match (step.kind, rows.as_deref_mut(), physical.as_slice()) {
                (StepKind::Filter, Some(rows), [predicate]) => {
                    let mask = predicate
                        .evaluate(&current)
                        .and_then(|v| v.into_array(current.num_rows()))
                        .map_err(failed)?;
                    let mask = mask
                        .as_any()
                        .downcast_ref::<BooleanArray>()
                        .ok_or_else(|| {
                            "SQL failed on this batch: a filter is not boolean".to_string()
                        })?;
                    let kept = filter(&*rows, mask).map_err(|e| e.to_string())?;
                    *rows = kept
                        .as_any()
                        .downcast_ref::<UInt32Array>()
                        .cloned()
                        .ok_or_else(|| "filtering row numbers did not give u32".to_string())?;
                    filter_record_batch(&current, mask).map_err(|e| e.to_string())?
                }
                _ => step.run(&current, physical).map_err(failed)?,
            };
        }
        let schema = match &self.around {
            Some(plan) => Arc::clone(&plan.sql_output_schema),
            None => Arc::clone(&self.output_schema),
        };
        let out = RecordBatch::try_new_with_options(
            schema,
            current.columns().to_vec(),
            &rows_option(current.num_rows()),
        )
        .map_err(|e| format!("SQL failed on this batch: {e}"))?;
        match &self.around {
            Some(plan) => plan.finish(out, rows),
            None => Ok(out),
        }
    }

    /// The user steps run around the query.
    pub fn step_names(&self) -> super::StepNames {
        self.around
            .as_ref()
            .map_or_else(super::StepNames::none, |plan| plan.step_names())
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
mod tests;
