//! Row-wise SQL over a stream of batches, by DataFusion.
//!
//! The query reads a table named `input`. It is planned once against the input schema before any
//! work starts (a bad query fails then, with DataFusion's message), checked to be row-wise
//! (projections and filters only: it runs on each batch separately), and wrapped so that only the
//! columns the rest of the pipeline uses are produced; DataFusion's projection pushdown then tells
//! which input columns the source must decode.

use std::sync::Arc;

use arrow::array::{RecordBatch, new_null_array};
use arrow::datatypes::{Schema, SchemaRef};
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::datasource::MemTable;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{SessionConfig, SessionContext};

use super::steps::{StepChain, StepNames};
use crate::{Error, Result};

/// The name the query reads from.
pub const INPUT_TABLE: &str = "input";

/// A planned, row-wise SQL transform.
#[derive(Clone, Debug)]
pub struct SqlPlan {
    /// The user's query.
    pub user_sql: String,
    /// The query actually run: the user's, wrapped to produce only `output_columns`.
    pub wrapped_sql: String,
    /// Input columns the query reads, in input-schema order (the source decodes only these).
    pub input_columns: Vec<String>,
    /// Schema of the input columns it reads.
    pub input_schema: SchemaRef,
    /// Schema of what it produces.
    pub output_schema: SchemaRef,
    /// The table the query was planned against (input columns it does not read are filled with
    /// nulls at run time, since the source does not decode them).
    pub table_schema: SchemaRef,
    /// The user functions the query calls (see [`super::register_udf`]), sorted.
    pub udfs: Vec<String>,
    /// User steps run on the table before the query (see [`super::Step`]).
    pub before: StepChain,
    /// User steps run on the query's output.
    pub after: StepChain,
    /// The table the query itself reads: `table_schema`, or what the steps before it make.
    pub sql_table_schema: SchemaRef,
    /// What the query itself produces: `output_schema`, unless steps follow it.
    pub sql_output_schema: SchemaRef,
    /// With steps after the query, the columns kept at the end, in order (`None`: all).
    pub output_columns: Option<Vec<String>>,
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| Error::Internal(format!("cannot start a tokio runtime for DataFusion: {e}")))
}

/// A DataFusion session as millrace runs queries: one partition, large batches, and the user
/// functions registered in this binary.
pub(crate) fn context() -> SessionContext {
    let ctx = SessionContext::new_with_config(
        SessionConfig::new()
            .with_target_partitions(1)
            .with_batch_size(65_536),
    );
    super::udf::add_udfs(&ctx);
    ctx
}

/// A planning error, with how to register a function the query calls that is unknown.
fn planning_error(e: impl std::fmt::Display, sql: &str) -> Error {
    let message = e.to_string();
    let hint = if message.contains("Invalid function") {
        let known = super::udf::registered_udfs();
        format!(
            "\n  if it is your own function, register it in your binary with \
             millrace::App::new().udf(\"name\", …) (registered here: {})",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        )
    } else {
        String::new()
    };
    Error::Sql(format!("{message}\n  in: {sql}{hint}"))
}

impl SqlPlan {
    /// Plans `sql` (or `SELECT * FROM input` when `None`) against `input`, keeping the output columns
    /// `needed`. Errors name the problem: a DataFusion planning error, a non-row-wise query, or a
    /// needed column the query does not produce.
    pub fn plan(sql: Option<&str>, input: &Schema, needed: &[String]) -> Result<SqlPlan> {
        Self::plan_steps(sql, &StepNames::none(), input, needed)
    }

    /// [`plan`](Self::plan) with user steps before and after the query. Steps before it see the
    /// input columns they declare they read (all of them, when one does not declare) plus those
    /// the query reads; the query reads what they make. With steps after it, the query keeps
    /// every column it makes (or, when each of those steps declares its reads, those and
    /// `needed`) and `needed` is checked and kept after the steps.
    pub fn plan_steps(
        sql: Option<&str>,
        steps: &StepNames,
        input: &Schema,
        needed: &[String],
    ) -> Result<SqlPlan> {
        let user_sql = sql
            .unwrap_or("SELECT * FROM input")
            .trim()
            .trim_end_matches(';')
            .to_string();
        let rt = runtime()?;
        let input = Arc::new(input.clone());
        // The table the steps before the query see: the input columns they and the query read.
        let (table_schema, before) = if steps.before.is_empty() {
            (Arc::clone(&input), StepChain::default())
        } else {
            let key = "preprocess.steps_before_sql";
            let first = StepChain::plan(&steps.before, key, Arc::clone(&input))?;
            let read = match first.reads() {
                None => input.fields().iter().map(|f| f.name().clone()).collect(),
                Some(mut read) => {
                    let made = first.output_schema(&input);
                    let (query, ..) =
                        Query::plan_with_after(&rt, &user_sql, &made, &steps.after, needed)?;
                    read.extend(scanned_columns(&query.optimized, &made)?);
                    read
                }
            };
            let table = Arc::new(Schema::new(
                input
                    .fields()
                    .iter()
                    .filter(|f| read.contains(f.name()))
                    .map(|f| f.as_ref().clone())
                    .collect::<Vec<_>>(),
            ));
            let chain = StepChain::plan(&steps.before, key, Arc::clone(&table))?;
            (table, chain)
        };
        let sql_table = before.output_schema(&table_schema);
        let (query, after, output_schema, output_columns) =
            Query::plan_with_after(&rt, &user_sql, &sql_table, &steps.after, needed)?;
        let scanned = scanned_columns(&query.optimized, &sql_table)?;
        let (input_columns, table_schema) = if before.is_empty() {
            let nullable_unread = Arc::new(Schema::new(
                input
                    .fields()
                    .iter()
                    .map(|f| {
                        let keep = scanned.contains(f.name());
                        f.as_ref().clone().with_nullable(f.is_nullable() || !keep)
                    })
                    .collect::<Vec<_>>(),
            ));
            (scanned, nullable_unread)
        } else {
            let read = table_schema
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect();
            (read, table_schema)
        };
        let input_schema = Arc::new(Schema::new(
            input
                .fields()
                .iter()
                .filter(|f| input_columns.contains(f.name()))
                .map(|f| f.as_ref().clone())
                .collect::<Vec<_>>(),
        ));
        let sql_table_schema = if before.is_empty() {
            Arc::clone(&table_schema)
        } else {
            sql_table
        };
        Ok(SqlPlan {
            user_sql,
            wrapped_sql: query.wrapped_sql,
            input_columns,
            input_schema,
            output_schema,
            table_schema,
            udfs: query.udfs,
            before,
            after,
            sql_table_schema,
            sql_output_schema: query.output,
            output_columns,
        })
    }

    /// The step names this plan runs around its query.
    pub fn step_names(&self) -> StepNames {
        StepNames {
            before: self.before.names(),
            after: self.after.names(),
        }
    }

    /// Runs the steps after the query on its output and keeps the output columns.
    pub(crate) fn finish(
        &self,
        out: RecordBatch,
        rows: Option<&mut arrow::array::UInt32Array>,
    ) -> Result<RecordBatch, String> {
        if self.after.is_empty() {
            return Ok(out);
        }
        let out = self.after.run(out, rows)?;
        match &self.output_columns {
            None => Ok(out),
            Some(columns) => {
                let indices = columns
                    .iter()
                    .map(|c| out.schema().index_of(c))
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|e| e.to_string())?;
                let projected = out.project(&indices).map_err(|e| e.to_string())?;
                RecordBatch::try_new(
                    Arc::clone(&self.output_schema),
                    projected.columns().to_vec(),
                )
                .map_err(|e| e.to_string())
            }
        }
    }

    /// Runs the steps before the query on the table (a batch of `table_schema`).
    pub(crate) fn start(
        &self,
        table: RecordBatch,
        rows: Option<&mut arrow::array::UInt32Array>,
    ) -> Result<RecordBatch, String> {
        if self.before.is_empty() {
            Ok(table)
        } else {
            self.before.run(table, rows)
        }
    }
}

/// The user's query planned against a table, wrapped to keep some of its columns.
struct Query {
    wrapped_sql: String,
    optimized: LogicalPlan,
    /// What the wrapped query produces.
    output: SchemaRef,
    udfs: Vec<String>,
}

impl Query {
    /// The query planned against `sql_table` followed by the steps `after_names`: the query,
    /// the steps, the final schema and the columns kept at the end (`None`: all). With steps
    /// after it, the query keeps every column (or, when each step declares its reads, those
    /// and `needed`).
    fn plan_with_after(
        rt: &tokio::runtime::Runtime,
        user_sql: &str,
        sql_table: &SchemaRef,
        after_names: &[String],
        needed: &[String],
    ) -> Result<(Query, StepChain, SchemaRef, Option<Vec<String>>)> {
        let needed_at_end = |produced: &Schema, after: &StepChain| -> Result<()> {
            for col in needed {
                if produced.field_with_name(col).is_err() {
                    let by = if after.is_empty() {
                        "the query does not produce".to_string()
                    } else {
                        format!(
                            "the query and the steps after it ({}) do not produce",
                            after.names().join(", ")
                        )
                    };
                    return Err(Error::Sql(format!(
                        "{by} column '{col}', which the pipeline uses (they produce: {})",
                        millrace_engine::list(produced.fields().iter().map(|f| f.name().clone()))
                    )));
                }
            }
            Ok(())
        };
        Ok(if after_names.is_empty() {
            let query = Query::plan(rt, user_sql, sql_table, |produced| {
                needed_at_end(produced, &StepChain::default())?;
                Ok(needed.to_vec())
            })?;
            let out = Arc::clone(&query.output);
            (query, StepChain::default(), out, None)
        } else {
            let key = "preprocess.steps_after_sql";
            let query = Query::plan(rt, user_sql, sql_table, |produced| {
                let all = StepChain::plan(after_names, key, Arc::new(produced.clone()))?;
                // Keep only what the steps read and the pipeline needs, when the steps say.
                Ok(match all.reads() {
                    Some(read) if !needed.is_empty() => (produced.fields().iter())
                        .map(|f| f.name().clone())
                        .filter(|c| read.contains(c) || needed.contains(c))
                        .collect(),
                    _ => Vec::new(),
                })
            })?;
            let after = StepChain::plan(after_names, key, Arc::clone(&query.output))?;
            let made = after.output_schema(&query.output);
            needed_at_end(&made, &after)?;
            let (schema, columns) = if needed.is_empty() {
                (made, None)
            } else {
                let fields = needed
                    .iter()
                    .map(|c| made.field_with_name(c).cloned())
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|e| Error::Sql(e.to_string()))?;
                (Arc::new(Schema::new(fields)), Some(needed.to_vec()))
            };
            (query, after, schema, columns)
        })
    }

    /// Plans `user_sql` against an empty `table`, wrapped to produce the columns `keep` picks
    /// from what the query produces (all when it picks none; an `Err` from it is the planning's).
    fn plan(
        rt: &tokio::runtime::Runtime,
        user_sql: &str,
        table: &SchemaRef,
        keep: impl FnOnce(&Schema) -> Result<Vec<String>>,
    ) -> Result<Query> {
        let ctx = context();
        let empty = MemTable::try_new(Arc::clone(table), vec![vec![]])
            .map_err(|e| Error::Sql(e.to_string()))?;
        ctx.register_table(INPUT_TABLE, Arc::new(empty))
            .map_err(|e| Error::Sql(e.to_string()))?;
        let state = ctx.state();
        let user_plan = rt
            .block_on(state.create_logical_plan(user_sql))
            .map_err(|e| planning_error(e, user_sql))?;
        check_row_wise(&user_plan)?;
        let udfs = super::udf::udfs_called(&user_plan);
        let keep = keep(user_plan.schema().as_arrow())?;
        let select = if keep.is_empty() {
            "*".to_string()
        } else {
            keep.iter().map(|c| quote(c)).collect::<Vec<_>>().join(", ")
        };
        let wrapped_sql = format!("SELECT {select} FROM ({user_sql}) AS __millrace_user");
        let wrapped = rt
            .block_on(state.create_logical_plan(&wrapped_sql))
            .map_err(|e| Error::Sql(e.to_string()))?;
        let optimized = state
            .optimize(&wrapped)
            .map_err(|e| Error::Sql(e.to_string()))?;
        Ok(Query {
            wrapped_sql,
            output: Arc::new(optimized.schema().as_arrow().clone()),
            optimized,
            udfs,
        })
    }
}

fn check_row_wise(plan: &LogicalPlan) -> Result<()> {
    let mut bad: Option<String> = None;
    plan.apply(|node| {
        match node {
            LogicalPlan::Projection(_)
            | LogicalPlan::Filter(_)
            | LogicalPlan::TableScan(_)
            | LogicalPlan::SubqueryAlias(_) => {}
            LogicalPlan::EmptyRelation(_) | LogicalPlan::Values(_) => {}
            other => {
                bad = Some(other.display().to_string());
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .map_err(|e| Error::Sql(e.to_string()))?;
    match bad {
        Some(node) => Err(Error::Sql(format!(
            "the query must be row-wise (SELECT expressions and WHERE), because it runs on each batch separately; \
             it contains `{node}`. Remove aggregates, joins, DISTINCT, ORDER BY, LIMIT and window functions"
        ))),
        None => Ok(()),
    }
}

fn scanned_columns(plan: &LogicalPlan, input: &Schema) -> Result<Vec<String>> {
    let mut used: Vec<String> = Vec::new();
    plan.apply(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            match &scan.projection {
                Some(indices) => {
                    used.extend(indices.iter().map(|i| input.field(*i).name().clone()))
                }
                None => used.extend(input.fields().iter().map(|f| f.name().clone())),
            }
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .map_err(|e| Error::Sql(e.to_string()))?;
    // Input-schema order, no duplicates.
    Ok(input
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .filter(|n| used.contains(n))
        .collect())
}

/// Runs a planned query on batches, one at a time, on the calling thread.
pub struct SqlRunner {
    plan: SqlPlan,
    rt: tokio::runtime::Runtime,
    ctx: SessionContext,
}

impl SqlRunner {
    /// A runner for `plan` with its own single-threaded runtime.
    pub fn new(plan: SqlPlan) -> Result<Self> {
        Ok(SqlRunner {
            plan,
            rt: runtime()?,
            ctx: context(),
        })
    }

    /// The plan this runner executes.
    pub fn plan(&self) -> &SqlPlan {
        &self.plan
    }

    /// Applies the query to one batch (whose columns include the plan's input columns).
    pub fn apply(&self, batch: RecordBatch) -> Result<RecordBatch, String> {
        let batch = self.plan.start(self.plan.to_table(&batch)?, None)?;
        let out_schema = Arc::clone(&self.plan.sql_output_schema);
        let result = self.rt.block_on(async {
            self.ctx.deregister_table(INPUT_TABLE)?;
            self.ctx.register_batch(INPUT_TABLE, batch)?;
            self.ctx.sql(&self.plan.wrapped_sql).await?.collect().await
        });
        let batches = result.map_err(|e| format!("SQL failed on this batch: {e}"))?;
        let out =
            arrow::compute::concat_batches(&out_schema, &batches).map_err(|e| e.to_string())?;
        self.plan.finish(out, None)
    }
}

impl SqlPlan {
    /// The batch as the table the query was planned against: the input columns it reads taken from
    /// `batch`, the others all null.
    pub fn to_table(&self, batch: &RecordBatch) -> Result<RecordBatch, String> {
        let schema = batch.schema();
        let columns = self
            .table_schema
            .fields()
            .iter()
            .map(|f| match schema.index_of(f.name()) {
                Ok(i) => Ok(Arc::clone(batch.column(i))),
                Err(_) if !self.input_columns.contains(f.name()) => {
                    Ok(new_null_array(f.data_type(), batch.num_rows()))
                }
                Err(_) => Err(format!(
                    "input column '{}' is missing from the batch",
                    f.name()
                )),
            })
            .collect::<Result<Vec<_>, String>>()?;
        RecordBatch::try_new(Arc::clone(&self.table_schema), columns).map_err(|e| e.to_string())
    }

    /// Applies the query to one batch from async code (e.g. a request handler), with a fresh
    /// DataFusion context so that concurrent calls do not share state.
    pub async fn apply_async(&self, batch: RecordBatch) -> Result<RecordBatch, String> {
        let batch = self.start(self.to_table(&batch)?, None)?;
        let ctx = context();
        let result = async {
            ctx.register_batch(INPUT_TABLE, batch)?;
            ctx.sql(&self.wrapped_sql).await?.collect().await
        }
        .await;
        let batches = result.map_err(|e| format!("SQL failed: {e}"))?;
        let out = arrow::compute::concat_batches(&self.sql_output_schema, &batches)
            .map_err(|e| e.to_string())?;
        self.finish(out, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, Float32Array, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field};

    fn schema() -> Schema {
        Schema::new(vec![
            Field::new("a", DataType::Float32, true),
            Field::new("b", DataType::Int64, false),
            Field::new("s", DataType::Utf8, false),
            Field::new("unused", DataType::Int64, false),
        ])
    }

    #[test]
    fn plans_projection_pushdown_and_runs_per_batch() {
        let needed = vec!["a2".to_string(), "s".to_string()];
        let plan = SqlPlan::plan(
            Some("SELECT a * 2 AS a2, s, unused FROM input WHERE b > 1"),
            &schema(),
            &needed,
        )
        .unwrap();
        assert_eq!(plan.input_columns, vec!["a", "b", "s"]);
        let runner = SqlRunner::new(plan).unwrap();
        let batch = RecordBatch::try_new(
            Arc::new(schema()),
            vec![
                Arc::new(Float32Array::from(vec![Some(1.0), None, Some(3.0)])),
                Arc::new(Int64Array::from(vec![1, 2, 3])),
                Arc::new(StringArray::from(vec!["x", "y", "z"])),
                Arc::new(Int64Array::from(vec![0, 0, 0])),
            ],
        )
        .unwrap();
        let out = runner.apply(batch).unwrap();
        assert_eq!(out.num_rows(), 2);
        let a2 = out
            .column(0)
            .as_any()
            .downcast_ref::<Float32Array>()
            .unwrap();
        assert!(a2.is_null(0));
        assert_eq!(a2.value(1), 6.0);
    }

    #[test]
    fn bad_queries_fail_with_the_reason() {
        let err = SqlPlan::plan(Some("SELECT nope FROM input"), &schema(), &[])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("[preprocess.sql]"), "{err}");
        assert!(err.contains("nope"), "{err}");
        let err = SqlPlan::plan(
            Some("SELECT s, count(*) FROM input GROUP BY s"),
            &schema(),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("row-wise"), "{err}");
        let err = SqlPlan::plan(Some("SELECT a FROM input"), &schema(), &["b".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not produce column 'b'"), "{err}");
    }
}
