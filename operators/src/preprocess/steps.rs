//! User steps over whole Arrow batches: Rust functions registered by name in the user's binary
//! (`App::new().step("parse_payload", Step::map(…))`) and placed before or after the preprocess
//! SQL (`[preprocess] steps_before_sql = [...]`, `steps_after_sql = [...]`).
//!
//! A step is a map (a batch → a batch of the same rows, columns added, replaced or dropped) or a
//! filter (a batch → which rows to keep). Steps run wherever the SQL runs: the batch job, the
//! streaming job and the model server, so a bundle records the steps it was trained with and the
//! server applies them to requests (no train/serve skew). A step's output schema is found at
//! planning time by running it on an empty batch: a step that fails there, or a name that is not
//! registered, is an error before any data is read.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock, RwLock};

use arrow::array::{Array, BooleanArray, RecordBatch, UInt32Array};
use arrow::compute::{filter, filter_record_batch};
use arrow::datatypes::{Schema, SchemaRef};

use crate::{Error, Result};

/// A map step: a batch → a batch with the same number of rows. An `Err` is the batch's failure.
pub type MapFn = dyn Fn(&RecordBatch) -> std::result::Result<RecordBatch, String> + Send + Sync;

/// A filter step: a batch → for each row, whether to keep it (null drops the row).
pub type FilterFn = dyn Fn(&RecordBatch) -> std::result::Result<BooleanArray, String> + Send + Sync;

#[derive(Clone)]
enum Kind {
    Map(Arc<MapFn>),
    Filter(Arc<FilterFn>),
}

/// A user step over Arrow batches.
///
/// ```
/// use std::sync::Arc;
/// use arrow::array::{Array, BooleanArray, Float64Array};
/// use millrace_operators::preprocess::Step;
/// // Keep rows whose amount is positive; the step reads only `amount`.
/// let positive = Step::filter(|batch| {
///     let amount = batch
///         .column_by_name("amount")
///         .and_then(|c| c.as_any().downcast_ref::<Float64Array>())
///         .ok_or("no Float64 column `amount`")?;
///     Ok(amount.iter().map(|v| v.map(|v| v > 0.0)).collect::<BooleanArray>())
/// })
/// .reads(&["amount"]);
/// ```
#[derive(Clone)]
pub struct Step {
    kind: Kind,
    reads: Option<Vec<String>>,
}

impl std::fmt::Debug for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            Kind::Map(_) => "map",
            Kind::Filter(_) => "filter",
        };
        f.debug_struct("Step")
            .field("kind", &kind)
            .field("reads", &self.reads)
            .finish()
    }
}

impl Step {
    /// A map over batches: `f` gets a batch and returns one with the same rows (it may add,
    /// replace or drop columns). Use a filter to drop rows.
    pub fn map(
        f: impl Fn(&RecordBatch) -> std::result::Result<RecordBatch, String> + Send + Sync + 'static,
    ) -> Self {
        Step {
            kind: Kind::Map(Arc::new(f)),
            reads: None,
        }
    }

    /// A filter over batches: `f` says for each row whether to keep it (null drops it). Under
    /// the model server, a request row a filter drops is a 400 naming the step.
    pub fn filter(
        f: impl Fn(&RecordBatch) -> std::result::Result<BooleanArray, String> + Send + Sync + 'static,
    ) -> Self {
        Step {
            kind: Kind::Filter(Arc::new(f)),
            reads: None,
        }
    }

    /// Declares the input columns the step reads. Without it, a step before the SQL makes the
    /// source decode every column of the records (and a served request carry every column); with
    /// it, only these and what the SQL reads.
    pub fn reads(mut self, columns: &[&str]) -> Self {
        self.reads = Some(columns.iter().map(|c| (*c).to_owned()).collect());
        self
    }
}

fn registry() -> &'static RwLock<BTreeMap<String, Step>> {
    static REGISTRY: OnceLock<RwLock<BTreeMap<String, Step>>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

fn check_name(name: &str) -> Result<()> {
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if valid {
        Ok(())
    } else {
        Err(Error::config(
            "step",
            format!("`{name}` is not a valid step name: use letters, digits, _ and -"),
        ))
    }
}

/// Registers `step` under `name`. A name registered before is an error.
pub fn register_step(name: &str, step: Step) -> Result<()> {
    check_name(name)?;
    let mut steps = registry()
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if steps.contains_key(name) {
        return Err(Error::config(
            "step",
            format!("a step named `{name}` is already registered; pick another name"),
        ));
    }
    steps.insert(name.to_owned(), step);
    Ok(())
}

/// Registers `step` under `name`, replacing one registered before under that name (the DSL's
/// `.map_batches`, whose closure is the program's own each time it builds the pipeline).
pub fn put_step(name: &str, step: Step) -> Result<()> {
    check_name(name)?;
    registry()
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(name.to_owned(), step);
    Ok(())
}

/// The registered steps' names.
pub fn registered_steps() -> Vec<String> {
    registry()
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .keys()
        .cloned()
        .collect()
}

/// The step names a pipeline places around its SQL.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StepNames {
    /// Run on the records, before the SQL.
    pub before: Vec<String>,
    /// Run on the SQL's output.
    pub after: Vec<String>,
}

impl StepNames {
    /// No steps.
    pub fn none() -> Self {
        Self::default()
    }

    /// Whether there are no steps.
    pub fn is_empty(&self) -> bool {
        self.before.is_empty() && self.after.is_empty()
    }

    /// Checks that every step is registered; the error names those that are not and how to
    /// register them. `what` says who needs them (e.g. "model bundle `m`").
    pub fn check_registered(&self, what: &str) -> Result<()> {
        let steps = registry()
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let missing: Vec<&str> = self
            .before
            .iter()
            .chain(&self.after)
            .filter(|n| !steps.contains_key(n.as_str()))
            .map(String::as_str)
            .collect();
        match missing.first() {
            None => Ok(()),
            Some(first) => Err(Error::config(
                "preprocess.steps",
                format!(
                    "{what} uses the step{} {}, which this binary has not registered (registered \
                     here: {}); register it with millrace::App::new().step(\"{first}\", \
                     Step::map(…)) in the binary that runs it",
                    if missing.len() == 1 { "" } else { "s" },
                    missing
                        .iter()
                        .map(|m| format!("`{m}`"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    millrace_engine::list(registered_steps()),
                ),
            )),
        }
    }
}

/// Registered steps resolved in order, with the schema each produces.
#[derive(Clone, Debug, Default)]
pub struct StepChain {
    steps: Vec<(String, Step, SchemaRef)>,
}

impl StepChain {
    /// Resolves `names` and plans them over `input`: each step runs once on an empty batch to
    /// find the schema it produces. `key` is the pipeline key naming them, for errors.
    pub fn plan(names: &[String], key: &str, input: SchemaRef) -> Result<StepChain> {
        let registered = registry()
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let mut schema = input;
        let mut steps = Vec::with_capacity(names.len());
        for name in names {
            let step = registered.get(name).cloned().ok_or_else(|| {
                Error::config(
                    key,
                    format!(
                        "`{name}` is not a registered step (registered here: {}); register it \
                         with millrace::App::new().step(\"{name}\", Step::map(…)) or use the \
                         DSL's .map_batches/.filter",
                        millrace_engine::list(registered.keys().cloned())
                    ),
                )
            })?;
            let empty = RecordBatch::new_empty(Arc::clone(&schema));
            let out = run_one(name, &step, &empty, None).map_err(|e| {
                Error::config(key, format!("{e} (run on an empty batch to plan it)"))
            })?;
            schema = out.schema();
            steps.push((name.clone(), step, Arc::clone(&schema)));
        }
        Ok(StepChain { steps })
    }

    /// Whether the chain has no steps.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// The steps' names, in order.
    pub fn names(&self) -> Vec<String> {
        self.steps.iter().map(|(n, ..)| n.clone()).collect()
    }

    /// The schema the chain produces from its planned input (`input` when empty).
    pub fn output_schema(&self, input: &SchemaRef) -> SchemaRef {
        self.steps
            .last()
            .map_or_else(|| Arc::clone(input), |(.., s)| Arc::clone(s))
    }

    /// The input columns the steps read: `None` when a step did not declare them.
    pub fn reads(&self) -> Option<Vec<String>> {
        let mut all = Vec::new();
        for (_, step, _) in &self.steps {
            for c in step.reads.as_ref()? {
                if !all.contains(c) {
                    all.push(c.clone());
                }
            }
        }
        Some(all)
    }

    /// Runs the steps on `batch`; filters also filter `rows` (each output row's input row) when
    /// given. Errors name the step.
    pub fn run(
        &self,
        mut batch: RecordBatch,
        mut rows: Option<&mut UInt32Array>,
    ) -> std::result::Result<RecordBatch, String> {
        for (name, step, schema) in &self.steps {
            let out = run_one(name, step, &batch, rows.as_deref_mut())?;
            if !same_columns(&out.schema(), schema) {
                return Err(format!(
                    "step `{name}` returned columns {} but when planned it returned {}; a step \
                     must return the same columns for every batch",
                    describe(&out.schema()),
                    describe(schema)
                ));
            }
            batch = if out.schema() == *schema {
                out
            } else {
                RecordBatch::try_new(Arc::clone(schema), out.columns().to_vec())
                    .map_err(|e| format!("step `{name}`: {e}"))?
            };
        }
        Ok(batch)
    }
}

fn run_one(
    name: &str,
    step: &Step,
    batch: &RecordBatch,
    rows: Option<&mut UInt32Array>,
) -> std::result::Result<RecordBatch, String> {
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match &step.kind {
        Kind::Map(f) => {
            let out = f(batch).map_err(|e| format!("step `{name}`: {e}"))?;
            if out.num_rows() != batch.num_rows() {
                return Err(format!(
                    "step `{name}` returned {} rows for a batch of {}; a map step must keep the \
                     rows (drop rows with Step::filter)",
                    out.num_rows(),
                    batch.num_rows()
                ));
            }
            Ok(out)
        }
        Kind::Filter(f) => {
            let keep = f(batch).map_err(|e| format!("step `{name}`: {e}"))?;
            if keep.len() != batch.num_rows() {
                return Err(format!(
                    "filter step `{name}` returned {} flags for a batch of {} rows",
                    keep.len(),
                    batch.num_rows()
                ));
            }
            // Null counts as false, as in SQL's WHERE.
            let keep = if keep.null_count() > 0 {
                arrow::compute::prep_null_mask_filter(&keep)
            } else {
                keep
            };
            if let Some(rows) = rows {
                let kept = filter(&*rows, &keep).map_err(|e| e.to_string())?;
                *rows = kept
                    .as_any()
                    .downcast_ref::<UInt32Array>()
                    .cloned()
                    .ok_or_else(|| "filtering row numbers did not give u32".to_string())?;
            }
            filter_record_batch(batch, &keep).map_err(|e| format!("step `{name}`: {e}"))
        }
    }));
    caught.unwrap_or_else(|panic| {
        Err(format!(
            "step `{name}` panicked: {}",
            millrace_engine::panic_message(&*panic)
        ))
    })
}

fn same_columns(a: &Schema, b: &Schema) -> bool {
    a.fields().len() == b.fields().len()
        && a.fields()
            .iter()
            .zip(b.fields())
            .all(|(x, y)| x.name() == y.name() && x.data_type() == y.data_type())
}

fn describe(schema: &Schema) -> String {
    millrace_engine::list(
        schema
            .fields()
            .iter()
            .map(|f| format!("{}: {}", f.name(), f.data_type())),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, Float64Array, Int64Array};
    use arrow::datatypes::{DataType, Field};

    fn batch() -> RecordBatch {
        RecordBatch::try_from_iter([
            (
                "x",
                Arc::new(Float64Array::from(vec![
                    Some(1.0),
                    None,
                    Some(-3.0),
                    Some(4.0),
                ])) as ArrayRef,
            ),
            (
                "id",
                Arc::new(Int64Array::from(vec![10, 11, 12, 13])) as ArrayRef,
            ),
        ])
        .unwrap()
    }

    fn doubled() -> Step {
        Step::map(|b| {
            let x = b
                .column_by_name("x")
                .and_then(|c| c.as_any().downcast_ref::<Float64Array>())
                .ok_or("no Float64 x")?;
            let x2: Float64Array = x.iter().map(|v| v.map(|v| v * 2.0)).collect();
            let mut fields = b.schema().fields().to_vec();
            fields.push(Arc::new(Field::new("x2", DataType::Float64, true)));
            let mut columns = b.columns().to_vec();
            columns.push(Arc::new(x2));
            RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(|e| e.to_string())
        })
        .reads(&["x"])
    }

    fn positive() -> Step {
        Step::filter(|b| {
            let x = b
                .column_by_name("x")
                .and_then(|c| c.as_any().downcast_ref::<Float64Array>())
                .ok_or("no Float64 x")?;
            Ok(x.iter().map(|v| v.map(|v| v > 0.0)).collect())
        })
    }

    #[test]
    fn maps_and_filters_in_order_tracking_rows() {
        put_step("steps_test_double", doubled()).unwrap();
        put_step("steps_test_positive", positive()).unwrap();
        let names = vec![
            "steps_test_double".to_string(),
            "steps_test_positive".to_string(),
        ];
        let chain =
            StepChain::plan(&names, "preprocess.steps_before_sql", batch().schema()).unwrap();
        assert_eq!(chain.output_schema(&batch().schema()).fields().len(), 3);
        // The filter did not declare what it reads.
        assert_eq!(chain.reads(), None);
        let mut rows = UInt32Array::from_iter_values(0..4);
        let out = chain.run(batch(), Some(&mut rows)).unwrap();
        // Row 1 (null x) and row 2 (x < 0) are dropped.
        assert_eq!(rows.values().to_vec(), vec![0, 3]);
        let x2 = out
            .column_by_name("x2")
            .unwrap()
            .as_any()
            .downcast_ref::<Float64Array>()
            .unwrap();
        assert_eq!(x2.values().to_vec(), vec![2.0, 8.0]);
    }

    #[test]
    fn bad_steps_fail_naming_the_step() {
        let err = StepChain::plan(
            &["steps_test_nope".into()],
            "preprocess.steps_after_sql",
            batch().schema(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("steps_after_sql")
                && err.contains("`steps_test_nope` is not a registered step"),
            "{err}"
        );
        put_step(
            "steps_test_drops_rows",
            Step::map(|b| Ok(b.slice(0, b.num_rows().saturating_sub(1)))),
        )
        .unwrap();
        let chain =
            StepChain::plan(&["steps_test_drops_rows".into()], "k", batch().schema()).unwrap();
        let err = chain.run(batch(), None).unwrap_err();
        assert!(err.contains("returned 3 rows for a batch of 4"), "{err}");
        put_step("steps_test_panics", Step::map(|_| panic!("boom"))).unwrap();
        let err = StepChain::plan(&["steps_test_panics".into()], "k", batch().schema())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("step `steps_test_panics` panicked: boom"),
            "{err}"
        );
        assert!(register_step("bad name", positive()).is_err());
        register_step("steps_test_once", positive()).unwrap();
        assert!(register_step("steps_test_once", positive()).is_err());
        let err = StepNames {
            before: vec!["steps_test_once".into()],
            after: vec!["steps_test_missing".into()],
        }
        .check_registered("model bundle `m`")
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("`steps_test_missing`") && !err.contains("`steps_test_once`,"),
            "{err}"
        );
    }
}
