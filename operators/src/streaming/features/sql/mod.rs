//! `[features] sql`: the feature view written as one SQL query, planned by DataFusion against the
//! preprocessed records (the relation `events`) and the table (`[features.table] name`), then
//! mapped onto the view's operators. The query is the view's definition; the view maintains it
//! incrementally, as of each record's event time.
//!
//! The subset (anything else is an error naming the construct, before a record is read):
//!
//! - `FROM events LEFT JOIN <table> USING (<key>)` (or `ON events.<key> = <table>.<column>`), an
//!   inner `JOIN` when the query has no aggregates, or `FROM events` alone;
//! - table columns selected by name, each a feature of that name;
//! - aggregates of a record column, each named with `AS`: `COUNT(*)`, `COUNT(DISTINCT c)`,
//!   `SUM(c)`, `AVG(c)`, `MIN(c)`, `MAX(c)`, `LAST_VALUE(c)`,
//!   - as window functions `OVER (PARTITION BY <key> ORDER BY <event_time> [RANGE BETWEEN <n>
//!     PRECEDING AND CURRENT ROW])` (named windows too): without a frame, or from `UNBOUNDED
//!     PRECEDING`, over every event so far; `<n>` is milliseconds for an int64 event time, an
//!     `INTERVAL` for a timestamp;
//!   - or `SELECT <key>, <aggregates> FROM events GROUP BY <key>`: over every event so far;
//! - `events.*` and the records' own columns may be selected: a row keeps every record column.
//!
//! Every row then holds what the query gives over the records and the table as of the record's
//! event time. A frame of `n PRECEDING` holds the key's events in `[t - n, t]`, the view's window
//! of `n + 1` ms; the table is joined as it stood at `t` (SQL's `FOR SYSTEM_TIME AS OF`).

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::Schema;
use datafusion::common::Column;
use datafusion::datasource::MemTable;
use datafusion::logical_expr::{Expr, JoinType, LogicalPlan, Operator};

use crate::spec::{FeatureAggregateSpec, FeatureTableSpec, FeaturesSpec, TableJoin};
use crate::{Error, Result};

/// The records' relation in the query.
pub const EVENTS: &str = "events";

/// `spec` with what its `sql` says filled in (key, table key, columns and join, aggregates),
/// planned against the preprocessed `records`, their `time_column` and the table's schema.
pub fn resolve(
    spec: &FeaturesSpec,
    records: &Schema,
    time_column: &str,
    table: Option<&Schema>,
) -> Result<FeaturesSpec> {
    let Some(sql) = spec.sql.as_deref() else {
        return Ok(spec.clone());
    };
    check_not_also_set(spec)?;
    let table_name = match &spec.table {
        Some(t) => Some(t.name.clone().ok_or_else(|| {
            Error::config(
                "features.table.name",
                "name the table as `[features] sql` calls it, e.g. name = \"users\"",
            )
        })?),
        None => None,
    };
    let plan = plan(sql, records, table_name.as_deref().zip(table))?;
    let mut query = Query::new(time_column, table_name.as_deref());
    query.read(&plan)?;
    query.into_spec(spec)
}

/// With `sql`, the settings it replaces must be left out.
fn check_not_also_set(spec: &FeaturesSpec) -> Result<()> {
    let table = spec.table.as_ref();
    let set = [
        ("features.key", !spec.key.is_empty()),
        ("features.aggregate", !spec.aggregates.is_empty()),
        // A Kafka table's key names its message key.
        (
            "features.table.key",
            table.is_some_and(|t| t.key.is_some() && t.kafka.is_none()),
        ),
        (
            "features.table.columns",
            table.is_some_and(|t| !t.columns.is_empty()),
        ),
        (
            "features.table.join",
            table.is_some_and(|t| t.join != TableJoin::Left),
        ),
    ];
    match set.iter().find(|(_, is_set)| *is_set) {
        Some((key, _)) => Err(Error::config(
            *key,
            "`[features] sql` says this: leave it out, or leave out the sql",
        )),
        None => Ok(()),
    }
}

/// The query's logical plan, analysed (types coerced), against empty tables of the two schemas.
fn plan(sql: &str, records: &Schema, table: Option<(&str, &Schema)>) -> Result<LogicalPlan> {
    let ctx = crate::preprocess::context();
    let register = |name: &str, schema: &Schema| {
        let empty = MemTable::try_new(Arc::new(schema.clone()), vec![vec![]])
            .map_err(|e| Error::Sql(e.to_string()))?;
        ctx.register_table(name, Arc::new(empty))
            .map(|_| ())
            .map_err(|e| Error::Sql(e.to_string()))
    };
    register(EVENTS, records)?;
    if let Some((name, schema)) = table {
        register(name, schema)?;
    }
    let state = ctx.state();
    let failed = |e: &dyn std::fmt::Display| {
        let tables = match table {
            Some((name, _)) => format!("`{EVENTS}` (the preprocessed records) and `{name}`"),
            None => format!("`{EVENTS}` (the preprocessed records)"),
        };
        Error::config(
            "features.sql",
            format!("{e}\n  the query reads {tables}\n  in: {sql}"),
        )
    };
    let plan =
        futures::executor::block_on(state.create_logical_plan(sql)).map_err(|e| failed(&e))?;
    state
        .analyzer()
        .execute_and_check(plan, state.config_options(), |_, _| {})
        .map_err(|e| failed(&e))
}

/// An error naming a construct outside the subset.
fn outside(construct: impl std::fmt::Display, instead: &str) -> Error {
    Error::config(
        "features.sql",
        format!("{construct} is not in the streaming SQL subset: {instead}"),
    )
}

/// What the query says, gathered from its plan.
struct Query<'a> {
    time_column: &'a str,
    table_name: Option<&'a str>,
    /// Names the records go by (`events` and its aliases), and the table's.
    events_names: Vec<String>,
    table_names: Vec<String>,
    /// The window and GROUP BY aggregates, by their output column's name.
    aggregates: HashMap<String, Expr>,
    grouped: bool,
    /// (records' key, table's key, inner) of the join.
    join: Option<(String, String, bool)>,
    /// The partitioning or grouping key of the aggregates.
    key: Option<String>,
    /// What the SELECT list makes: table columns and aggregates.
    table_columns: Vec<String>,
    features: Vec<FeatureAggregateSpec>,
}

impl<'a> Query<'a> {
    fn new(time_column: &'a str, table_name: Option<&'a str>) -> Self {
        Query {
            time_column,
            table_name,
            events_names: vec![EVENTS.to_string()],
            table_names: table_name.into_iter().map(String::from).collect(),
            aggregates: HashMap::new(),
            grouped: false,
            join: None,
            key: None,
            table_columns: Vec::new(),
            features: Vec::new(),
        }
    }

    /// Reads the plan: a projection over windows or a grouping, over the records or their join.
    fn read(&mut self, plan: &LogicalPlan) -> Result<()> {
        let LogicalPlan::Projection(top) = plan else {
            return Err(node_outside(plan));
        };
        let mut node = top.input.as_ref();
        loop {
            node = match node {
                LogicalPlan::Window(w) => {
                    for e in &w.window_expr {
                        self.aggregates
                            .insert(e.schema_name().to_string(), e.clone());
                    }
                    w.input.as_ref()
                }
                LogicalPlan::Aggregate(a) => {
                    self.grouped = true;
                    self.group_key(&a.group_expr)?;
                    for e in &a.aggr_expr {
                        self.aggregates
                            .insert(e.schema_name().to_string(), e.clone());
                    }
                    a.input.as_ref()
                }
                LogicalPlan::Projection(p) if p.expr.iter().all(is_column) => p.input.as_ref(),
                LogicalPlan::Projection(p) => {
                    let computed = p.expr.iter().find(|e| !is_column(e));
                    return Err(computed_outside(computed.unwrap_or(&p.expr[0])));
                }
                LogicalPlan::Join(j) => {
                    self.read_join(j)?;
                    break;
                }
                other => {
                    self.read_source(other, false)?;
                    break;
                }
            };
        }
        if self.table_name.is_some() && self.join.is_none() {
            return Err(Error::config(
                "features.sql",
                format!(
                    "the query does not join the table `{}`: join it (FROM {EVENTS} LEFT JOIN {} USING (key)) or remove [features.table]",
                    self.table_name.unwrap_or_default(),
                    self.table_name.unwrap_or_default()
                ),
            ));
        }
        for e in &top.expr {
            self.select(e)?;
        }
        Ok(())
    }

    /// A scan of the records or the table, possibly under an alias; `table` says which it must be.
    fn read_source(&mut self, node: &LogicalPlan, table: bool) -> Result<()> {
        let (alias, scan) = match node {
            LogicalPlan::SubqueryAlias(a) => (Some(a.alias.table().to_string()), a.input.as_ref()),
            other => (None, other),
        };
        let LogicalPlan::TableScan(scan) = scan else {
            return Err(node_outside(scan));
        };
        let name = scan.table_name.table();
        let (want, names) = match table {
            true => (self.table_name.unwrap_or_default(), &mut self.table_names),
            false => (EVENTS, &mut self.events_names),
        };
        if name != want {
            return Err(Error::config(
                "features.sql",
                format!(
                    "`{name}` is read where `{want}` must be: the query is FROM {EVENTS} [LEFT] JOIN <table>"
                ),
            ));
        }
        names.extend(alias);
        Ok(())
    }

    fn read_join(&mut self, j: &datafusion::logical_expr::Join) -> Result<()> {
        let inner = match j.join_type {
            JoinType::Left => false,
            JoinType::Inner => true,
            other => {
                return Err(outside(
                    format!("a {} JOIN", other.to_string().to_uppercase()),
                    "use LEFT JOIN (or JOIN) with the records on the left",
                ));
            }
        };
        self.read_source(&j.left, false)?;
        self.read_source(&j.right, true)?;
        // `ON a = b` is a filter until the optimiser makes it a key; `USING` is a key already.
        let on: Vec<(Expr, Expr)> = match (&j.filter, j.on.as_slice()) {
            (None, on) => on.to_vec(),
            (Some(Expr::BinaryExpr(b)), []) if b.op == Operator::Eq => {
                vec![(b.left.as_ref().clone(), b.right.as_ref().clone())]
            }
            (Some(filter), _) => {
                return Err(outside(
                    format!("the join condition `{filter}`"),
                    "join on the key alone (USING (key) or ON events.key = table.key)",
                ));
            }
        };
        let [(left, right)] = on.as_slice() else {
            return Err(outside(
                format!("a join on {} pairs of columns", on.len()),
                "join on one key",
            ));
        };
        let (Expr::Column(left), Expr::Column(right)) = (left, right) else {
            return Err(outside(
                format!("the join key `{left} = {right}`"),
                "join on columns; compute a key in [preprocess] sql",
            ));
        };
        let (events, table) = match (self.is_events(left), self.is_events(right)) {
            (true, false) => (left, right),
            (false, true) => (right, left),
            _ => {
                return Err(outside(
                    format!("the join key `{left} = {right}`"),
                    "join a records' column with a table column",
                ));
            }
        };
        self.join = Some((events.name.clone(), table.name.clone(), inner));
        self.agree_on_key(&events.name, "the join")
    }

    fn group_key(&mut self, group: &[Expr]) -> Result<()> {
        match group {
            [Expr::Column(c)] if self.is_events(c) => self.agree_on_key(&c.name, "GROUP BY"),
            _ => Err(outside(
                format!(
                    "GROUP BY {}",
                    group
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                "group by the records' key column alone",
            )),
        }
    }

    /// The view has one key: the join's, the partitions' and the grouping's must be the same.
    fn agree_on_key(&mut self, key: &str, by: &str) -> Result<()> {
        match &self.key {
            Some(k) if k != key => Err(outside(
                format!("{by} on `{key}` while another part of the query is on `{k}`"),
                "join, partition and group by one key column",
            )),
            Some(_) => Ok(()),
            None => {
                self.key = Some(key.to_string());
                Ok(())
            }
        }
    }

    fn is_events(&self, c: &Column) -> bool {
        c.relation
            .as_ref()
            .is_some_and(|r| self.events_names.iter().any(|n| n == r.table()))
    }

    fn is_table(&self, c: &Column) -> bool {
        c.relation
            .as_ref()
            .is_some_and(|r| self.table_names.iter().any(|n| n == r.table()))
    }

    /// One item of the SELECT list.
    fn select(&mut self, e: &Expr) -> Result<()> {
        let (mut inner, alias) = match e {
            Expr::Alias(a) => (a.expr.as_ref(), Some(a.name.as_str())),
            e => (e, None),
        };
        while let Expr::Alias(a) = inner {
            inner = a.expr.as_ref();
        }
        if matches!(inner, Expr::WindowFunction(_) | Expr::AggregateFunction(_)) {
            let name = alias.ok_or_else(|| unnamed(inner))?;
            return self.aggregate(name, inner);
        }
        let Expr::Column(c) = inner else {
            return Err(computed_outside(e));
        };
        if let Some(aggregate) = self.aggregates.get(&c.name).cloned() {
            let name = alias.ok_or_else(|| unnamed(inner))?;
            return self.aggregate(name, &aggregate);
        }
        if self.is_table(c) {
            if alias.is_some_and(|a| a != c.name) {
                return Err(outside(
                    format!("renaming the table column `{}`", c.name),
                    "select it by its own name (rename it in the table)",
                ));
            }
            let table_key = self.join.as_ref().map(|j| j.1.as_str());
            if Some(c.name.as_str()) != table_key && !self.table_columns.contains(&c.name) {
                self.table_columns.push(c.name.clone());
            }
            return Ok(());
        }
        if self.is_events(c) && alias.is_none_or(|a| a == c.name) {
            return Ok(()); // every record column is kept
        }
        Err(computed_outside(e))
    }

    /// The resolved `[features]`.
    fn into_spec(self, spec: &FeaturesSpec) -> Result<FeaturesSpec> {
        let key = self.key.ok_or_else(|| {
            Error::config(
                "features.sql",
                "the query names no key: join on it, PARTITION BY it or GROUP BY it",
            )
        })?;
        let table = match (&spec.table, self.join) {
            (Some(t), Some((_, table_key, inner))) => Some(FeatureTableSpec {
                key: (table_key != key).then_some(table_key),
                columns: self.table_columns,
                join: if inner {
                    TableJoin::Inner
                } else {
                    TableJoin::Left
                },
                ..t.clone()
            }),
            _ => None,
        };
        Ok(FeaturesSpec {
            name: spec.name.clone(),
            key,
            table,
            aggregates: self.features,
            sql: spec.sql.clone(),
        })
    }
}

fn unnamed(e: &Expr) -> Error {
    Error::config(
        "features.sql",
        format!("name the aggregate `{e}` with AS: it is a feature column"),
    )
}

fn is_column(e: &Expr) -> bool {
    match e {
        Expr::Column(_) => true,
        Expr::Alias(a) => matches!(a.expr.as_ref(), Expr::Column(_)),
        _ => false,
    }
}

fn computed_outside(e: &Expr) -> Error {
    outside(
        format!("the expression `{e}`"),
        "select table columns by name and named aggregates; compute other columns in [preprocess] sql (before the view) or in the training preprocessing (after it)",
    )
}

fn node_outside(node: &LogicalPlan) -> Error {
    let construct = match node {
        LogicalPlan::Filter(_) => "WHERE (or HAVING)".to_string(),
        LogicalPlan::Sort(_) => "ORDER BY".to_string(),
        LogicalPlan::Limit(_) => "LIMIT".to_string(),
        LogicalPlan::Distinct(_) => "SELECT DISTINCT".to_string(),
        LogicalPlan::Union(_) => "UNION".to_string(),
        LogicalPlan::Subquery(_) | LogicalPlan::SubqueryAlias(_) => "a subquery".to_string(),
        LogicalPlan::Values(_) | LogicalPlan::EmptyRelation(_) => {
            "a query without FROM events".to_string()
        }
        other => format!("`{}`", other.display()),
    };
    outside(
        construct,
        "the view is SELECT … FROM events [LEFT JOIN <table> USING (key)] with window aggregates, or SELECT key, aggregates FROM events GROUP BY key; filter the records in [preprocess] sql",
    )
}

mod aggregate;
#[cfg(test)]
mod tests;
