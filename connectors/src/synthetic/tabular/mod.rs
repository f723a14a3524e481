//! The synthetic tabular classification dataset of the ETL→train benchmarks
//! (`shared/bench/TABULAR.md`): 16 float features with different scales, one categorical column,
//! a timestamp and a binary label from a non-linear latent score.
//!
//! [`generate`] writes it as Parquet, in parallel and deterministically: the same [`TabularSpec`]
//! gives the same bytes.

mod generate;
mod rule;
mod spec;

pub use generate::{generate, schema_of};
pub use rule::{
    CATEGORY_P, CATEGORY_SHIFT, ENTITY_EFFECT_SD, NOISE, Row, entity_effect, latent_score, mu,
    schema, sigma,
};
pub use spec::{HOLDOUT_T0_MICROS, TRAIN_T0_MICROS, TS_STEP_MICROS, TabularReport, TabularSpec};
