//! The crate's one error type.
//!
//! Each variant says who has to act: the user (a bad config value, a wrong column type, a damaged
//! model directory), the outside world (the file system), or us (a backend failure or a bug).

use std::path::PathBuf;

/// Everything that can go wrong in `millrace-ml`.
///
/// A bad *row* is not an error: it comes back as a [`RowError`](crate::preprocess::RowError)
/// in [`Features::rejected`](crate::preprocess::Features::rejected).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value is invalid. `key` is the config key the user must change.
    #[error("invalid config `{key}`: {message}")]
    Config {
        /// The config key, e.g. `train.model.hidden`.
        key: String,
        /// What is wrong and how to fix it.
        message: String,
    },

    /// A column the preprocessor needs is not in the input batch.
    #[error("column `{column}` not found in the input (columns present: {available})")]
    MissingColumn {
        /// The missing column.
        column: String,
        /// The columns that are present, comma separated.
        available: String,
    },

    /// A column has a type the preprocessor cannot use.
    #[error("column `{column}` has type {actual}, expected {expected}")]
    ColumnType {
        /// The column.
        column: String,
        /// What the preprocessor needs, e.g. "a numeric type (Int*, UInt*, Float*)".
        expected: String,
        /// The Arrow type found.
        actual: String,
    },

    /// An argument does not fit the model or the data (wrong length, label out of range, …).
    #[error("invalid input: {0}")]
    Input(String),

    /// Reading or writing a file failed.
    #[error("{action} `{path}`: {source}")]
    Io {
        /// What we were doing, e.g. "cannot read".
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A JSON file could not be parsed or written.
    #[error("bad JSON in `{path}`: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The serde error, with line and column.
        #[source]
        source: serde_json::Error,
    },

    /// A model directory is damaged or does not match its own description.
    #[error("model bundle file `{path}`: {message}")]
    Bundle {
        /// The file inside the bundle.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },

    /// The GPU is missing, unusable, or failed (the message says which and what to do).
    #[error("GPU: {0}")]
    Device(String),

    /// The tensor backend reported a failure (e.g. reading data back from a device).
    #[error("tensor backend error: {0}")]
    Backend(String),

    /// An internal invariant was broken: a bug in millrace-ml.
    #[error("internal error (a bug in millrace-ml, please report it): {0}")]
    Internal(String),
}

/// `Result` with this crate's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A configuration error naming `key` (e.g. `train.model.hidden`), which a pipeline file
    /// error places at that key's line and column.
    pub fn config(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Config {
            key: key.into(),
            message: message.into(),
        }
    }

    /// An [`Error::Io`] for `path`.
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Self::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
