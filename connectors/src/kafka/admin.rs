//! Topic metadata and topic creation.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

use super::options::{KafkaOptions, TracingContext};
use crate::{Error, Result};

/// The partition ids of `topic`, sorted, from the cluster's metadata.
///
/// Fails with [`Error::KafkaMissingTopic`] when the topic does not exist (it is never created as a
/// side effect), and with [`Error::Kafka`] naming the bootstrap servers when no broker answers
/// within `timeout`.
pub fn partitions(options: &KafkaOptions, topic: &str, timeout: Duration) -> Result<Vec<i32>> {
    options.check_bootstrap()?;
    // A consumer without group.id: its metadata requests never ask the broker to auto-create.
    let mut config = options.client_config();
    config.set("allow.auto.create.topics", "false");
    let client: BaseConsumer<TracingContext> = config
        .create_with_context(TracingContext)
        .map_err(|e| options.create_error("metadata client", e))?;
    topic_partitions(&client, options, topic, timeout)
}

/// [`partitions`] through an existing consumer.
pub(crate) fn topic_partitions(
    client: &BaseConsumer<TracingContext>,
    options: &KafkaOptions,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<i32>> {
    let metadata = client
        .fetch_metadata(Some(topic), timeout)
        .map_err(|source| Error::Kafka {
            what: format!(
                "fetch the metadata of topic `{topic}` from {} within {:.1} s",
                options.bootstrap_servers,
                timeout.as_secs_f64()
            ),
            source,
        })?;
    let missing = || Error::KafkaMissingTopic {
        topic: topic.to_string(),
        bootstrap: options.bootstrap_servers.clone(),
    };
    let found = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .ok_or_else(missing)?;
    if let Some(code) = found.error() {
        let code = RDKafkaErrorCode::from(code);
        return match code {
            RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic => {
                Err(missing())
            }
            other => Err(Error::Kafka {
                what: format!(
                    "read the metadata of topic `{topic}` from {}",
                    options.bootstrap_servers
                ),
                source: KafkaError::MetadataFetch(other),
            }),
        };
    }
    let mut ids: Vec<i32> = found.partitions().iter().map(|p| p.id()).collect();
    if ids.is_empty() {
        return Err(missing());
    }
    ids.sort_unstable();
    Ok(ids)
}

/// Creates `name` with `partitions` partitions and the broker's default replication factor; a
/// topic that already exists is fine (its partition count is left as it is).
///
/// For tests and tools; production topics are usually managed elsewhere.
pub fn create_topic(
    options: &KafkaOptions,
    name: &str,
    partitions: i32,
    timeout: Duration,
) -> Result<()> {
    options.check_bootstrap()?;
    if partitions < 1 {
        return Err(Error::InvalidOption {
            option: "create_topic.partitions",
            reason: format!("{partitions}: a topic needs at least one partition"),
        });
    }
    let admin: AdminClient<TracingContext> = options
        .client_config()
        .create_with_context(TracingContext)
        .map_err(|e| options.create_error("admin client", e))?;
    let what = || {
        format!(
            "create topic `{name}` ({partitions} partitions) on {} within {:.1} s",
            options.bootstrap_servers,
            timeout.as_secs_f64()
        )
    };
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(-1));
    let admin_options = AdminOptions::new()
        .request_timeout(Some(timeout))
        .operation_timeout(Some(timeout));
    let results = futures::executor::block_on(admin.create_topics([&topic], &admin_options))
        .map_err(|source| Error::Kafka {
            what: what(),
            source,
        })?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => {
                return Err(Error::Kafka {
                    what: what(),
                    source: KafkaError::AdminOp(code),
                });
            }
        }
    }
    Ok(())
}
