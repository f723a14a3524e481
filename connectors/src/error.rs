//! The one error type of this crate.
//!
//! Every variant says who must act: the user (a bad path, a bad file, a bad option), the outside world
//! (the disk: [`Error::Io`]), or us (a bug: [`Error::Internal`]). Every message names the file, and
//! the row group and column where they matter, and says what to do next.

use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while reading or writing datasets.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A filesystem operation failed (outside world; may succeed on retry).
    #[error("cannot {op} `{}`: {source}; check that the path exists and is accessible", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// What we were doing, e.g. "open", "list directory", "rename to final name".
        op: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A directory holds no Parquet files (user).
    #[error(
        "no Parquet files found under `{}` (names starting with '_' or '.' are ignored); \
         point at a .parquet file or at a directory that contains some",
        path.display()
    )]
    EmptyDataset {
        /// The directory that was searched.
        path: PathBuf,
    },

    /// A file's footer could not be read: truncated, corrupt, or not Parquet at all (user).
    #[error(
        "`{}` is not a readable Parquet file ({source}); it is probably truncated or not Parquet: \
         re-write it, remove it, or rename it to start with '_' so it is ignored",
        path.display()
    )]
    CorruptFile {
        /// The offending file.
        path: PathBuf,
        /// What the Parquet reader reported.
        #[source]
        source: ::parquet::errors::ParquetError,
    },

    /// Two files of one dataset disagree on the schema (user).
    #[error(
        "schema of `{}` differs from `{}` (the first file): {detail}; \
         all files of a dataset must share one schema: re-write or move the odd file",
        path.display(),
        reference.display()
    )]
    SchemaMismatch {
        /// The first file whose schema differs.
        path: PathBuf,
        /// The file whose schema is the reference (the first one, in path order).
        reference: PathBuf,
        /// Which field differs and how.
        detail: String,
    },

    /// A requested column does not exist (user).
    #[error(
        "column `{column}` not found in `{}`; available columns: {available}; fix the column name",
        path.display()
    )]
    MissingColumn {
        /// The name that was asked for.
        column: String,
        /// The dataset root or file that was searched.
        path: PathBuf,
        /// Comma-separated list of the existing column names.
        available: String,
    },

    /// A scan unit names a row group the file does not have (user: the file changed under us).
    #[error(
        "scan unit asks for row group {row_group} of `{}`, which has only {num_row_groups}; \
         the file changed since the scan was planned: re-open the dataset and plan again",
        path.display()
    )]
    RowGroupOutOfRange {
        /// The file.
        path: PathBuf,
        /// The requested row group.
        row_group: usize,
        /// How many row groups the file really has.
        num_row_groups: usize,
    },

    /// Decoding a row group failed (user: the data in the file is damaged).
    #[error(
        "cannot decode row group {row_group} of `{}`: {source}; the file is damaged: \
         re-write it or remove it from the dataset",
        path.display()
    )]
    Decode {
        /// The file.
        path: PathBuf,
        /// The row group being decoded.
        row_group: usize,
        /// What the decoder reported.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },

    /// A batch handed to a writer does not match the writer's schema (user or caller bug).
    #[error(
        "batch written to `{}` does not match the file's schema: {detail}; \
         cast or select columns so every batch has the schema the writer was created with",
        path.display()
    )]
    BatchSchema {
        /// The file being written.
        path: PathBuf,
        /// Which field differs and how.
        detail: String,
    },

    /// Encoding or finishing a Parquet file failed.
    #[error("cannot write Parquet file `{}`: {source}; check free disk space and the schema's types", path.display())]
    Write {
        /// The final path of the file being written.
        path: PathBuf,
        /// What the Parquet writer reported.
        #[source]
        source: ::parquet::errors::ParquetError,
    },

    /// An option has a value that cannot work (user).
    #[error("invalid option `{option}`: {reason}")]
    InvalidOption {
        /// The option, e.g. `TabularSpec.files`.
        option: &'static str,
        /// Why it is wrong and what would be right.
        reason: String,
    },

    /// An object store request failed after its retries (outside world or user: a bad bucket or
    /// credential).
    #[error("cannot {op} `{url}`: {source}; {}", store_hint(source))]
    Store {
        /// The URL involved (`s3://bucket/key`, `file:///path`, ...).
        url: String,
        /// What we were doing, e.g. "list", "read", "write".
        op: &'static str,
        /// What the object store client reported (boxed: it is large).
        #[source]
        source: Box<object_store::Error>,
    },

    /// A storage URL or its options cannot work (user).
    #[error("invalid storage URL `{url}`: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// Why it is wrong and what would be right.
        reason: String,
    },

    /// A Hive-style partition directory holds a value that does not parse as the column's type (user).
    #[error(
        "partition directory `{}`: {reason}; fix or remove the directory, or declare the column's \
         type as string",
        path.display()
    )]
    Partition {
        /// The directory (or file) whose partition value is bad.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// Waiting for something (a `_SUCCESS` marker) took longer than allowed (outside world).
    #[error("gave up after {seconds} s waiting for {what} at `{url}`; {hint}")]
    Timeout {
        /// The URL waited on.
        url: String,
        /// What was awaited.
        what: &'static str,
        /// The timeout.
        seconds: f64,
        /// What to do.
        hint: &'static str,
    },

    /// A Delta table's log cannot be replayed: a damaged or missing log file (user or outside world).
    #[error(
        "Delta log `{url}`: {reason}; the log is damaged or was not written by a Delta writer: \
         restore it from a backup or a replica, or read another version (delta_version)"
    )]
    DeltaLog {
        /// The log file (or the log directory).
        url: String,
        /// What is wrong, with the line or row where it matters.
        reason: String,
    },

    /// A table uses a feature this reader does not implement (user: rewrite it or use another reader).
    #[error("`{url}`: {what} is not supported by millrace; {hint}")]
    Unsupported {
        /// The table or file.
        url: String,
        /// The feature.
        what: String,
        /// What to do instead.
        hint: String,
    },

    /// Something that should be impossible happened (us: please report it).
    #[error("internal error in millrace-connectors: {0}; this is a bug, please report it")]
    Internal(String),

    /// A Kafka client operation failed (outside world: the brokers; or user: the connection and
    /// security properties).
    #[error(
        "Kafka: cannot {what}: {source}; check that the brokers are reachable and that the \
         connection properties (bootstrap servers, security.protocol, sasl.*, ssl.*) are right"
    )]
    Kafka {
        /// What we were doing, naming the bootstrap servers, the topic and partition where they
        /// matter.
        what: String,
        /// What librdkafka reported.
        #[source]
        source: rdkafka::error::KafkaError,
    },

    /// A Kafka topic does not exist (user).
    #[error("topic `{topic}` does not exist on {bootstrap}; create it or check the name")]
    KafkaMissingTopic {
        /// The topic that was asked for.
        topic: String,
        /// The bootstrap servers that were asked.
        bootstrap: String,
    },

    /// A produced Kafka message was not delivered (outside world, or user: a missing topic, a
    /// message over the broker's size limit, missing rights).
    #[error(
        "Kafka: {failed} message(s) were not delivered, the first to {target}: {reason}; check the topic, the broker's message size limit \
         and the producer's rights, then replay from the last checkpoint"
    )]
    KafkaDelivery {
        /// Where the first failed message was going: topic, partition and bootstrap servers.
        target: String,
        /// Why librdkafka gave up on it.
        reason: String,
        /// Messages that failed.
        failed: u64,
    },

    /// An offset a Kafka source was to read from is not in its partition (user or outside world:
    /// retention deleted it, or the topic was recreated since the checkpoint).
    #[error(
        "topic `{topic}` on {bootstrap}: an offset to read from is out of range (positions \
         {positions}); retention deleted it or the topic was recreated since the checkpoint: \
         restore a newer checkpoint, or set the Kafka property auto.offset.reset to earliest or \
         latest to skip ahead instead of failing"
    )]
    KafkaOffsetOutOfRange {
        /// The topic.
        topic: String,
        /// The bootstrap servers.
        bootstrap: String,
        /// The source's positions (partition: next offset) when the broker refused.
        positions: String,
    },
}

impl Error {
    /// `true` when retrying the same operation later may succeed (the outside world failed, not the input).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Io { .. } | Error::Timeout { .. } => true,
            Error::Store { source, .. } => {
                classify(source) == StoreFailure::Transient
                    && !matches!(**source, object_store::Error::InvalidPath { .. })
            }
            _ => false,
        }
    }

    /// An [`Error::Store`] for `op` on `url`.
    pub fn store(url: impl Into<String>, op: &'static str, source: object_store::Error) -> Self {
        Error::Store {
            url: url.into(),
            op,
            source: Box::new(source),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, op: &'static str, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            op,
            source,
        }
    }
}

/// What an object store error means for the user: S3 servers answer many refusals with a generic
/// error that only its text (status code, S3 error code) tells apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StoreFailure {
    Missing,
    Denied,
    Unsupported,
    Transient,
}

fn classify(source: &object_store::Error) -> StoreFailure {
    match source {
        object_store::Error::NotFound { .. } => StoreFailure::Missing,
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => StoreFailure::Denied,
        object_store::Error::NotSupported { .. } | object_store::Error::NotImplemented { .. } => {
            StoreFailure::Unsupported
        }
        other => {
            let text = other.to_string();
            let has = |needles: &[&str]| needles.iter().any(|n| text.contains(n));
            if has(&[
                "403 Forbidden",
                "401 Unauthorized",
                "AccessDenied",
                "InvalidAccessKeyId",
                "SignatureDoesNotMatch",
                "ExpiredToken",
                "InvalidToken",
            ]) {
                StoreFailure::Denied
            } else if has(&["404 Not Found", "NoSuchBucket", "NoSuchKey"]) {
                StoreFailure::Missing
            } else {
                StoreFailure::Transient
            }
        }
    }
}

/// What to do about an object store error.
fn store_hint(source: &object_store::Error) -> &'static str {
    match classify(source) {
        StoreFailure::Missing => {
            "it does not exist: check the bucket name, the prefix and the endpoint"
        }
        StoreFailure::Denied => {
            "access was denied: check the credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, \
             AWS_PROFILE, or the pipeline's [storage] section) and the bucket policy"
        }
        StoreFailure::Unsupported => "the store does not support this operation",
        StoreFailure::Transient => {
            "the request failed after retries: check the endpoint, the network, and that the \
             server is up"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_file_and_row_group() {
        let e = Error::RowGroupOutOfRange {
            path: PathBuf::from("/data/x.parquet"),
            row_group: 7,
            num_row_groups: 3,
        };
        let msg = e.to_string();
        assert!(msg.contains("/data/x.parquet"), "{msg}");
        assert!(msg.contains("row group 7"), "{msg}");
        assert!(msg.contains("only 3"), "{msg}");
        assert!(!e.is_retryable());
        let io = Error::io("/a", "open", std::io::Error::other("boom"));
        assert!(io.is_retryable());
        assert_eq!(
            io.to_string(),
            "cannot open `/a`: boom; check that the path exists and is accessible"
        );
    }
}
