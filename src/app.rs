//! [`App`]: the `millrace` command line in a user's own binary, with the user's models and losses
//! registered by name.
//!
//! ```no_run
//! # use millrace::ml::burn;
//! # use burn::module::Module;
//! # use burn::nn::{Linear, LinearConfig};
//! # use burn::tensor::{Tensor, backend::Backend};
//! # use millrace::ml::model::{FeatureLayout, Input, Inputs, Model, ModelShape};
//! # #[derive(Module, Debug)] struct Net<B: Backend> { linear: Linear<B> }
//! # #[derive(serde::Serialize, serde::Deserialize, Clone, Debug)] struct Config {}
//! struct TwoTower;
//! impl Model for TwoTower {
//!     // …
//! #   type Config = Config;
//! #   type Module<B: Backend> = Net<B>;
//! #   fn inputs(_: &Config, _: &FeatureLayout) -> Vec<Input> { vec![Input::Dense] }
//! #   fn init<B: Backend>(_: &Config, s: &ModelShape, d: &B::Device) -> Net<B> {
//! #       Net { linear: LinearConfig::new(s.layout.dense, s.output_dim()).init(d) } }
//! #   fn forward<B: Backend>(n: &Net<B>, i: &Inputs<B>) -> millrace::ml::Result<Tensor<B, 2>> {
//! #       Ok(n.linear.forward(i.dense()?)) }
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     // `run`, `serve`, `cluster`, `inspect`, … with `kind = "two_tower"` known.
//!     millrace::App::new().model::<TwoTower>("two_tower").main()
//! }
//! ```
//! The `burn` crate a model is written against is [`millrace::ml::burn`](crate::ml::burn).

use std::process::ExitCode;

use millrace_ml::Model;
use millrace_ml::backend::{Cpu, CpuAutodiff};
use millrace_ml::trainer::UserLoss;
use millrace_operators::preprocess::{Step, Udf};

use crate::{Error, Result};

/// The millrace CLI with a user's models, losses and SQL functions.
#[derive(Debug, Default)]
#[must_use = "an App does nothing until .main() or .register()"]
pub struct App {
    errors: Vec<String>,
}

impl App {
    /// The CLI with the built-in models (`mlp`, `logistic`, `linear`, `embedding_mlp`) and
    /// losses.
    pub fn new() -> Self {
        App::default()
    }

    /// Registers model `M` under `kind`, for pipelines' `model = { kind = "…" }` and for
    /// loading bundles of that kind.
    pub fn model<M: Model>(mut self, kind: &str) -> Self
    where
        M::Module<CpuAutodiff>: Send,
        M::Module<Cpu>: Send + Sync,
    {
        if let Err(e) = millrace_ml::registry::register_model::<M>(kind) {
            self.errors.push(e.to_string());
        }
        self
    }

    /// Registers loss `L` under `name`, for pipelines' `train.loss = "…"`.
    pub fn loss<L: UserLoss>(mut self, name: &str) -> Self {
        if let Err(e) = millrace_ml::registry::register_loss::<L>(name) {
            self.errors.push(e.to_string());
        }
        self
    }

    /// Registers `udf` as the SQL function `name`, callable from `[preprocess] sql` (and the
    /// DSL's `.sql(…)`): `SELECT log_amount(amount) AS amount_log, … FROM input`. A bundle whose
    /// query calls it records the name, and the server (this binary) runs the same function on
    /// requests.
    ///
    /// ```no_run
    /// use millrace::Udf;
    /// millrace::App::new()
    ///     .udf("log1p", Udf::float(|x| x.ln_1p()))
    ///     .udf("decade", Udf::float_to_string(|age| format!("{}0s", (age / 10.0).floor())))
    ///     .main();
    /// ```
    pub fn udf(mut self, name: &str, udf: Udf) -> Self {
        if let Err(e) = millrace_operators::preprocess::register_udf(name, udf) {
            self.errors.push(e.to_string());
        }
        self
    }

    /// Registers `step` (a map or filter over Arrow batches) under `name`, for pipelines'
    /// `[preprocess] steps_before_sql = ["name"]` / `steps_after_sql` (and the DSL's
    /// `.step("name")`). A bundle trained with it records the name, and the server (this
    /// binary) applies the same step to requests.
    ///
    /// ```no_run
    /// use arrow::array::{Array, Float64Array};
    /// use millrace::Step;
    /// millrace::App::new()
    ///     .step("positive_amounts", Step::filter(|batch| {
    ///         let amount = batch.column_by_name("amount")
    ///             .and_then(|c| c.as_any().downcast_ref::<Float64Array>())
    ///             .ok_or("no Float64 column `amount`")?;
    ///         Ok(amount.iter().map(|v| v.map(|v| v > 0.0)).collect())
    ///     }).reads(&["amount"]))
    ///     .main();
    /// ```
    pub fn step(mut self, name: &str, step: Step) -> Self {
        if let Err(e) = millrace_operators::preprocess::register_step(name, step) {
            self.errors.push(e.to_string());
        }
        self
    }

    /// Makes the registrations, without running the CLI (for a program that drives the DSL
    /// itself). Errors when a name was taken or malformed.
    pub fn register(self) -> Result<()> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(Error::Usage(self.errors.join("; ")))
        }
    }

    /// Runs the command line (`run`, `serve`, `cluster`, `inspect`, `gen`, …) and returns the
    /// process's exit code.
    pub fn main(self) -> ExitCode {
        if let Err(e) = self.register() {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
        crate::cli::main()
    }
}
