//! Models: the open [`Model`] interface (any burn module, its named [`Inputs`] and flat
//! [`params`]), the user-facing [`ModelSpec`] and [`Task`], the burn [`Mlp`] behind the built-in
//! kinds (logistic and linear regression are MLPs without hidden layers) and `embedding_mlp`.

mod builtin;
mod choice;
mod embedding_mlp;
mod inputs;
mod interface;
mod layout;
mod mlp;
pub mod params;
mod spec;

pub use builtin::{BuiltinMlp, LinearModel, LogisticModel, MlpKeys, MlpModel};
pub use choice::ModelChoice;
pub use embedding_mlp::{EmbeddingMlp, EmbeddingMlpConfig, EmbeddingMlpNet, rule_of_thumb};
pub use inputs::{Inputs, Sequence};
pub use interface::{Model, ModelShape};
pub use layout::{FeatureLayout, IndexInput, Input, SequenceInput};
pub(crate) use mlp::read_f32;
pub use mlp::{Mlp, MlpConfig};
pub use spec::{Activation, ModelKind, ModelSpec, Task};
