//! Models: the user-facing [`ModelSpec`], the [`Task`], and the burn [`Mlp`] module that
//! implements every model kind (logistic and linear regression are MLPs without hidden layers).

mod mlp;
mod spec;

pub(crate) use mlp::read_f32;
pub use mlp::{Mlp, MlpConfig};
pub use spec::{Activation, ModelKind, ModelSpec, Task};
