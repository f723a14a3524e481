//! The operators' error type.

use std::path::PathBuf;

/// Result with the operators' [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong building or running a pipeline's operators, and who must act.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The pipeline is configured wrongly; `key` is the pipeline-file key to change.
    #[error("[{key}] {message}")]
    Config {
        /// The pipeline-file key, e.g. `preprocess.standardize`.
        key: String,
        /// What is wrong and what to do.
        message: String,
    },
    /// The preprocess SQL does not plan (DataFusion's message) or is not row-wise.
    #[error("[preprocess.sql] {0}")]
    Sql(String),
    /// Reading or writing the outside world failed.
    #[error(transparent)]
    Connector(#[from] millrace_connectors::Error),
    /// A model, preprocessing or metrics error.
    #[error(transparent)]
    Ml(#[from] millrace_ml::Error),
    /// The runtime failed.
    #[error(transparent)]
    Engine(#[from] millrace_engine::Error),
    /// A local file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// An Arrow kernel failed on data the job built itself.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// The model server could not start or stopped with an error.
    #[error("serve: {0}")]
    Serve(String),
    /// A TLS certificate or key file is missing, not PEM, or the key does not match the
    /// certificate.
    #[error("TLS: {file}: {message}")]
    Tls {
        /// The certificate or key file at fault.
        file: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A checkpoint could not be written, or a stored one is damaged or does not fit the job.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// A bug: an invariant of millrace itself does not hold. Please report it.
    #[error("internal error (a bug in millrace, please report it): {0}")]
    Internal(String),
}

impl Error {
    /// A configuration error for `key`.
    pub fn config(key: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Config {
            key: key.into(),
            message: message.into(),
        }
    }

    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

impl millrace_engine::AbortedError for Error {
    fn is_aborted(&self) -> bool {
        matches!(self, Error::Engine(millrace_engine::Error::Aborted))
    }
}
