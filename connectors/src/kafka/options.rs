//! Connection options shared by every Kafka client, where to start reading, and the glue that turns
//! librdkafka's logs and errors into ours.

use std::collections::BTreeMap;
use std::fmt;

use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::KafkaError;

use crate::{Error, Result};

/// How to reach a Kafka cluster: the bootstrap servers plus librdkafka properties.
///
/// `properties` go verbatim to librdkafka for every producer, consumer and admin client
/// (`security.protocol`, `sasl.mechanism`, `sasl.username`, `sasl.password`, `ssl.ca.location`,
/// `fetch.max.bytes`, `linger.ms`, ...; see librdkafka's `CONFIGURATION.md`). They override the
/// defaults millrace picks for throughput, but not the few settings exactly-once reading depends
/// on (see [`KafkaSource::open`](super::KafkaSource::open)). `Debug` hides the values of keys
/// that look like secrets.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct KafkaOptions {
    /// Comma-separated `host:port` list, e.g. `"broker1:9092,broker2:9092"`.
    pub bootstrap_servers: String,
    /// librdkafka properties, passed through verbatim.
    pub properties: BTreeMap<String, String>,
}

impl KafkaOptions {
    /// Options for the given bootstrap servers and no extra properties.
    pub fn new(bootstrap_servers: impl Into<String>) -> Self {
        KafkaOptions {
            bootstrap_servers: bootstrap_servers.into(),
            properties: BTreeMap::new(),
        }
    }

    /// These options plus one librdkafka property (replacing an earlier value for the same key).
    pub fn with_property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.insert(key.into(), value.into());
        self
    }

    /// A librdkafka configuration holding `bootstrap.servers` and every property.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        self.apply(&mut config);
        config
    }

    /// Checks, without connecting, that there are bootstrap servers and that librdkafka accepts
    /// every property; the error names the first rejected property.
    pub fn validate(&self) -> Result<()> {
        self.check_bootstrap()?;
        self.client_config()
            .create_native_config()
            .map(drop)
            .map_err(|e| self.create_error("client", e))
    }

    /// Sets `bootstrap.servers` and the user's properties on `config` (after millrace's defaults,
    /// so the user's win).
    pub(crate) fn apply(&self, config: &mut ClientConfig) {
        config.set("bootstrap.servers", &self.bootstrap_servers);
        for (key, value) in &self.properties {
            config.set(key, value);
        }
    }

    pub(crate) fn check_bootstrap(&self) -> Result<()> {
        if self.bootstrap_servers.trim().is_empty() {
            return Err(Error::InvalidOption {
                option: "KafkaOptions.bootstrap_servers",
                reason: "it is empty; give the brokers as `host:port[,host:port...]`".into(),
            });
        }
        Ok(())
    }

    /// Maps a failure to create a client: a rejected property names it, anything else is a
    /// [`Error::Kafka`] naming the bootstrap servers.
    pub(crate) fn create_error(&self, client: &str, error: KafkaError) -> Error {
        match error {
            KafkaError::ClientConfig(_, description, key, value) => Error::InvalidOption {
                option: "KafkaOptions.properties",
                reason: format!(
                    "librdkafka rejects property `{key}` = `{}`: {description}; fix or remove it \
                     (see librdkafka's CONFIGURATION.md)",
                    shown_value(&key, &value)
                ),
            },
            other => Error::Kafka {
                what: format!(
                    "create a Kafka {client} for {} (a property may be inconsistent: {})",
                    self.bootstrap_servers,
                    self.property_keys()
                ),
                source: other,
            },
        }
    }

    fn property_keys(&self) -> String {
        if self.properties.is_empty() {
            return "none set".into();
        }
        let keys: Vec<&str> = self.properties.keys().map(String::as_str).collect();
        keys.join(", ")
    }
}

impl fmt::Debug for KafkaOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let properties: BTreeMap<&str, &str> = self
            .properties
            .iter()
            .map(|(k, v)| (k.as_str(), shown_value(k, v)))
            .collect();
        f.debug_struct("KafkaOptions")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("properties", &properties)
            .finish()
    }
}

/// The value as it may appear in logs and messages: secrets are hidden.
fn shown_value<'a>(key: &str, value: &'a str) -> &'a str {
    let key = key.to_ascii_lowercase();
    if ["password", "secret", "key.pem", "token", "jaas"]
        .iter()
        .any(|needle| key.contains(needle))
    {
        "<hidden>"
    } else {
        value
    }
}

/// Where a [`KafkaSource`](super::KafkaSource) starts reading a partition for which no resume
/// offset was given. Written `committed`, `earliest`, `latest` or `timestamp:<epoch ms>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum StartFrom {
    /// The oldest message still in the partition (its low watermark).
    Earliest,
    /// The end of the partition when the source opens: only messages produced afterwards.
    /// On tansu this may re-read part of the last record batch (its high watermark is too low).
    Latest,
    /// The consumer group's committed offset; the oldest message when the group has none for the
    /// partition.
    Committed,
    /// The first message whose timestamp is at or after this many milliseconds since the Unix
    /// epoch; the end of the partition (as for [`StartFrom::Latest`]) when there is none.
    ///
    /// The broker's answer (ListOffsets by time) is only a lower bound: the source also drops a
    /// partition's messages older than the timestamp until the first one that is not, so the
    /// result is exact even on brokers that answer too early offsets (tansu mostly answers 0).
    Timestamp(i64),
}

impl std::str::FromStr for StartFrom {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        Ok(match text.trim() {
            "committed" => StartFrom::Committed,
            "earliest" => StartFrom::Earliest,
            "latest" => StartFrom::Latest,
            other => match other.strip_prefix("timestamp:").map(str::parse::<i64>) {
                Some(Ok(ms)) => StartFrom::Timestamp(ms),
                _ => {
                    return Err(format!(
                        "unknown start '{other}'; use committed, earliest, latest or timestamp:<epoch ms>"
                    ));
                }
            },
        })
    }
}

impl std::fmt::Display for StartFrom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartFrom::Committed => f.write_str("committed"),
            StartFrom::Earliest => f.write_str("earliest"),
            StartFrom::Latest => f.write_str("latest"),
            StartFrom::Timestamp(ms) => write!(f, "timestamp:{ms}"),
        }
    }
}

impl TryFrom<String> for StartFrom {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        text.parse()
    }
}

impl From<StartFrom> for String {
    fn from(start: StartFrom) -> String {
        start.to_string()
    }
}

/// The context of every client this module creates: librdkafka's logs and global errors go to
/// `tracing` (target `librdkafka`) instead of the `log` crate.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct TracingContext;

impl ClientContext for TracingContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", "{facility}: {message}")
            }
            RDKafkaLogLevel::Warning => {
                tracing::warn!(target: "librdkafka", "{facility}: {message}")
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", "{facility}: {message}")
            }
            RDKafkaLogLevel::Debug => {
                tracing::debug!(target: "librdkafka", "{facility}: {message}")
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // Reaching the end of a partition is how a caught-up source learns it is idle, not a
        // problem; librdkafka reports it through the error callback too.
        if matches!(error, KafkaError::PartitionEOF(_))
            || reason.contains("reached end of partition")
        {
            tracing::trace!(target: "librdkafka", "{error}: {reason}");
            return;
        }
        tracing::warn!(target: "librdkafka", "{error}: {reason}");
    }
}

impl ConsumerContext for TracingContext {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejected_property_is_named_and_secrets_are_hidden() {
        let options = KafkaOptions::new("127.0.0.1:9")
            .with_property("sasl.password", "hunter2")
            .with_property("no.such.property", "1");
        let message = options.validate().unwrap_err().to_string();
        assert!(message.contains("`no.such.property`"), "{message}");
        let bad_value =
            KafkaOptions::new("x:1").with_property("security.protocol", "carrier-pigeon");
        let message = bad_value.validate().unwrap_err().to_string();
        assert!(message.contains("`security.protocol`"), "{message}");
        assert!(message.contains("carrier-pigeon"), "{message}");
        let debug = format!("{options:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("<hidden>"), "{debug}");
        assert!(KafkaOptions::new("  ").validate().is_err());
        let ok = KafkaOptions::new("127.0.0.1:9").with_property("security.protocol", "SASL_SSL");
        ok.validate().unwrap();
        assert_eq!(
            ok.client_config().get("bootstrap.servers"),
            Some("127.0.0.1:9")
        );
        assert_eq!(
            ok.client_config().get("security.protocol"),
            Some("SASL_SSL")
        );
    }
}
