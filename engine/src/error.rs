//! The engine's error type.

use std::fmt;

/// Result with the engine's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong in the runtime, and who must act on it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The cluster or worker configuration is invalid (the user must change it).
    #[error("invalid cluster configuration: {0}")]
    Config(String),
    /// timely could not start its workers or connect its processes (retry, or check the hosts).
    #[error("could not start the timely workers: {0}")]
    Startup(String),
    /// A worker thread panicked (a bug in millrace or in a user-supplied closure).
    #[error("worker {worker} panicked: {message}")]
    WorkerPanic {
        /// Index of the worker that panicked.
        worker: usize,
        /// The panic payload, if it was a string.
        message: String,
    },
    /// The connection to another process of the cluster broke: it died or was killed.
    #[error(
        "lost process {process} of the cluster ({host}): {message}; it died or was killed (see its own log). Restart every process with --resume to continue from the last checkpoint"
    )]
    PeerLost {
        /// The lost process's index.
        process: usize,
        /// Its `host:port`.
        host: String,
        /// timely's message about the broken connection.
        message: String,
    },
    /// A feature view's definition or input is invalid (the message names the column or setting).
    #[error("features: {0}")]
    Features(String),
    /// Another worker failed, so this one stopped waiting for it.
    #[error("stopped because another worker failed")]
    Aborted,
    /// Arrow IPC (de)serialisation of a batch failed while crossing a worker boundary.
    #[error("arrow IPC encoding of a batch failed: {0}")]
    Ipc(#[from] arrow::error::ArrowError),
}

/// A panic payload as text (the message of `panic!("…")`).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

/// Formats a list of names for error messages: `a, b, c`.
pub fn list(names: impl IntoIterator<Item = impl fmt::Display>) -> String {
    names
        .into_iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
