//! User functions in the preprocess SQL: Rust functions registered by name in the user's binary
//! (`App::new().udf("log_amount", …)`) and called from `[preprocess] sql` like any SQL function.
//!
//! Every DataFusion session millrace makes (training, streaming, the server's compiled SQL) has
//! them, so the query a bundle records runs the same function at serving time as in training:
//! no train/serve skew. The bundle lists the functions its query calls; loading it in a binary
//! that has not registered one of them is an error that names it.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock, RwLock};

use arrow::array::{Array, ArrayRef, Float64Array};
use arrow::datatypes::DataType;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::{
    ColumnarValue, Expr, LogicalPlan, ScalarUDF, Volatility, create_udf,
};
use datafusion::prelude::SessionContext;

use crate::{Error, Result};

/// What a user function computes: arrays of its arguments (one value per row) → one array of
/// its output type. An `Err` is the message of a failed batch.
pub type UdfFn = dyn Fn(&[ArrayRef]) -> std::result::Result<ArrayRef, String> + Send + Sync;

/// A row-wise user function: its argument and output types and what it computes.
///
/// ```
/// use millrace_operators::preprocess::Udf;
/// // log(1 + x) of any numeric column (DataFusion casts the argument to Float64).
/// let log1p = Udf::float(|x| x.ln_1p());
/// ```
#[derive(Clone)]
pub struct Udf {
    inputs: Vec<DataType>,
    output: DataType,
    f: Arc<UdfFn>,
}

impl std::fmt::Debug for Udf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Udf")
            .field("inputs", &self.inputs)
            .field("output", &self.output)
            .finish_non_exhaustive()
    }
}

impl Udf {
    /// A function of `inputs` (SQL arguments are cast to these types) returning `output`.
    /// `f` gets one array per argument, all of the batch's length, and must return an array of
    /// that length and type `output`.
    pub fn arrays(
        inputs: Vec<DataType>,
        output: DataType,
        f: impl Fn(&[ArrayRef]) -> std::result::Result<ArrayRef, String> + Send + Sync + 'static,
    ) -> Self {
        Udf {
            inputs,
            output,
            f: Arc::new(f),
        }
    }

    /// A function of one number to one number (`Float64`), applied value by value; nulls stay
    /// null.
    pub fn float(f: impl Fn(f64) -> f64 + Send + Sync + 'static) -> Self {
        Self::arrays(vec![DataType::Float64], DataType::Float64, move |args| {
            let x = float_arg(args)?;
            Ok(Arc::new(x.unary::<_, arrow::datatypes::Float64Type>(&f)) as ArrayRef)
        })
    }

    /// A function of one number (`Float64`) to a string (`Utf8`), e.g. a bucket label for
    /// `one_hot`; nulls stay null.
    pub fn float_to_string(f: impl Fn(f64) -> String + Send + Sync + 'static) -> Self {
        Self::arrays(vec![DataType::Float64], DataType::Utf8, move |args| {
            let x = float_arg(args)?;
            let out: arrow::array::StringArray = x.iter().map(|v| v.map(&f)).collect();
            Ok(Arc::new(out) as ArrayRef)
        })
    }

    fn to_scalar_udf(&self, name: &str) -> ScalarUDF {
        let f = Arc::clone(&self.f);
        let name_owned = name.to_owned();
        let output = self.output.clone();
        create_udf(
            name,
            self.inputs.clone(),
            self.output.clone(),
            Volatility::Immutable,
            Arc::new(move |args: &[ColumnarValue]| {
                let arrays = ColumnarValue::values_to_arrays(args)?;
                let rows = arrays.first().map_or(1, |a| a.len());
                let out = f(&arrays).map_err(|e| {
                    datafusion::error::DataFusionError::Execution(format!(
                        "user function `{name_owned}`: {e}"
                    ))
                })?;
                if out.len() != rows || *out.data_type() != output {
                    return Err(datafusion::error::DataFusionError::Execution(format!(
                        "user function `{name_owned}` returned {} values of type {}, expected \
                         {rows} of type {output}",
                        out.len(),
                        out.data_type()
                    )));
                }
                Ok(ColumnarValue::Array(out))
            }),
        )
    }
}

fn float_arg(args: &[ArrayRef]) -> std::result::Result<&Float64Array, String> {
    match args {
        [x] => x
            .as_any()
            .downcast_ref::<Float64Array>()
            .ok_or_else(|| format!("expected a Float64 argument, got {}", x.data_type())),
        _ => Err(format!("expected one argument, got {}", args.len())),
    }
}

fn registry() -> &'static RwLock<BTreeMap<String, ScalarUDF>> {
    static REGISTRY: OnceLock<RwLock<BTreeMap<String, ScalarUDF>>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

/// Registers `udf` as the SQL function `name` (lower case letters, digits and `_`, not starting
/// with a digit). A name registered before, or one of DataFusion's own functions, is an error.
pub fn register_udf(name: &str, udf: Udf) -> Result<()> {
    let valid = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.chars().next().is_some_and(|c| !c.is_ascii_digit());
    if !valid {
        return Err(Error::config(
            "udf",
            format!("`{name}` is not a valid function name: use lower case letters, digits and _"),
        ));
    }
    if SessionContext::new().udf(name).is_ok() {
        return Err(Error::config(
            "udf",
            format!("`{name}` is a built-in SQL function; register yours under another name"),
        ));
    }
    let mut functions = registry()
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if functions.contains_key(name) {
        return Err(Error::config(
            "udf",
            format!("a function named `{name}` is already registered; pick another name"),
        ));
    }
    functions.insert(name.to_owned(), udf.to_scalar_udf(name));
    Ok(())
}

/// The registered user functions' names.
pub fn registered_udfs() -> Vec<String> {
    registry()
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .keys()
        .cloned()
        .collect()
}

/// Adds every registered user function to `ctx`.
pub(crate) fn add_udfs(ctx: &SessionContext) {
    let functions = registry()
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for udf in functions.values() {
        ctx.register_udf(udf.clone());
    }
}

/// The user functions `plan` calls, sorted.
pub(crate) fn udfs_called(plan: &LogicalPlan) -> Vec<String> {
    let functions = registry()
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut called = Vec::new();
    let _ = plan.apply(|node| {
        for expr in node.expressions() {
            let _ = expr.apply(|e| {
                if let Expr::ScalarFunction(f) = e {
                    let name = f.func.name();
                    if functions.contains_key(name) && !called.iter().any(|c| c == name) {
                        called.push(name.to_owned());
                    }
                }
                Ok(TreeNodeRecursion::Continue)
            });
        }
        Ok(TreeNodeRecursion::Continue)
    });
    called.sort();
    called
}

/// Checks that every function in `names` is registered; the error names those that are not
/// and how to register them. `what` says who needs them (e.g. "model bundle `m`").
pub fn check_udfs(names: &[String], what: &str) -> Result<()> {
    let functions = registry()
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let missing: Vec<&str> = names
        .iter()
        .filter(|n| !functions.contains_key(n.as_str()))
        .map(String::as_str)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(Error::config(
        "udf",
        format!(
            "{what} calls the user function{} {} in its SQL, which this binary has not \
             registered; register {} with millrace::App::new().udf(\"{}\", …) in the binary \
             that runs it",
            if missing.len() == 1 { "" } else { "s" },
            missing
                .iter()
                .map(|m| format!("`{m}`"))
                .collect::<Vec<_>>()
                .join(", "),
            if missing.len() == 1 { "it" } else { "them" },
            missing[0]
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(register_udf("Bad-Name", Udf::float(|x| x)).is_err());
        let err = register_udf("abs", Udf::float(|x| x))
            .unwrap_err()
            .to_string();
        assert!(err.contains("built-in"), "{err}");
        register_udf("udf_test_twice", Udf::float(|x| x)).unwrap();
        let err = register_udf("udf_test_twice", Udf::float(|x| x))
            .unwrap_err()
            .to_string();
        assert!(err.contains("already registered"), "{err}");
        assert!(registered_udfs().contains(&"udf_test_twice".to_string()));
        let err = check_udfs(&["udf_test_twice".into(), "nope".into()], "bundle `m`")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`nope`")
                && !err.contains("`udf_test_twice`")
                && err.contains("App::new().udf(\"nope\""),
            "{err}"
        );
    }
}
