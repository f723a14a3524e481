//! The facade's error type.

use std::path::PathBuf;

use crate::pipeline_file::PipelineFileError;

/// Result with the facade's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Anything that can stop a millrace run, with who must act.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The pipeline file is unreadable or invalid (names file, line, column, key).
    #[error(transparent)]
    PipelineFile(#[from] PipelineFileError),
    /// A configuration error found while planning, located in the pipeline file.
    #[error("{path}:{line}:{column}: {error}")]
    Located {
        /// The pipeline file.
        path: PathBuf,
        /// 1-based line of the key.
        line: usize,
        /// 1-based column of the key.
        column: usize,
        /// The error (boxed: it is large and rare). Not a `source`: the message above already
        /// holds it, and an error chain would print it twice.
        error: Box<millrace_operators::Error>,
    },
    /// Building or running the pipeline failed.
    #[error(transparent)]
    Pipeline(#[from] millrace_operators::Error),
    /// Data generation or reading failed.
    #[error(transparent)]
    Connector(#[from] millrace_connectors::Error),
    /// A file of the run directory could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A multi-process run is misconfigured: its host list or process id (the user must fix the
    /// `--hosts`, `--processes` or `--process-id` the message names).
    #[error("cluster: {0}")]
    Cluster(String),
    /// The training curves could not be drawn.
    #[error("training curves: {0}")]
    Curves(String),
    /// The MLflow tracking server could not record the run.
    #[error("tracking: {0}")]
    Tracking(String),
    /// The program itself is misassembled: e.g. two models registered under one name (the
    /// binary's author must fix it).
    #[error("{0}")]
    Usage(String),
    /// A tool command failed in a way that names its own cause (copying, inspecting).
    #[error("{0}")]
    Internal(String),
}
