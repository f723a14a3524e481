//! One worker's share of a topic's partitions, read with a manually assigned consumer.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use super::admin::topic_partitions;
use super::hold::Hold;
use super::options::{KafkaOptions, StartFrom, TracingContext};
use crate::{Error, Result};

/// How long [`KafkaSource::open`] waits for each of its broker round trips (metadata, committed
/// offsets, offsets for a timestamp, watermarks) before it fails.
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(30);

/// One message as read from Kafka, copied out of librdkafka's buffers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawMessage {
    /// The partition it was read from.
    pub partition: i32,
    /// Its offset in that partition.
    pub offset: i64,
    /// Its timestamp (create or log-append time), in milliseconds since the Unix epoch, when the
    /// broker has one.
    pub timestamp_ms: Option<i64>,
    /// Its key, `None` for a null key.
    pub key: Option<Vec<u8>>,
    /// Its value, `None` for a null value (a tombstone).
    pub payload: Option<Vec<u8>>,
}

/// What the source knows about one assigned partition.
#[derive(Clone, Copy, Debug)]
struct Slot {
    partition: i32,
    /// The offset of the next message to deliver.
    next: i64,
    /// The offset after the last message received from librdkafka (delivered or kept).
    received: i64,
    /// librdkafka reported the end of the partition and no message came since.
    at_eof: bool,
    /// Started from this timestamp: drop messages older than it until the first that is not
    /// (brokers such as tansu answer the timestamp lookup with an earlier offset).
    skip_before: Option<i64>,
}

/// The partitions of one topic that belong to one worker (`p % workers == worker`), read from
/// explicit start offsets.
///
/// Partitions are assigned, not subscribed: there is no group membership and no rebalancing, so
/// the worker that owns a partition is fixed by the partition id and the worker count. The group id
/// is used only to read and write committed offsets.
pub struct KafkaSource {
    consumer: BaseConsumer<TracingContext>,
    topic: String,
    /// `topic` for librdkafka's C calls.
    topic_c: CString,
    group_id: String,
    bootstrap: String,
    worker: usize,
    workers: usize,
    slots: Vec<Slot>,
    eof_count: usize,
    /// Partitions held back by [`set_paused`](Self::set_paused), and what they keep.
    hold: Hold,
}

impl KafkaSource {
    /// Opens worker `worker`'s share (of `workers`) of `topic`'s partitions.
    ///
    /// Each assigned partition starts at `resume[p]` (a checkpointed next offset) when `resume`
    /// holds it, else as `start` says. Start offsets are resolved to concrete offsets here, so
    /// [`positions`](Self::positions) covers every assigned partition from the start. A worker
    /// may get no partition at all: it then reads nothing and is always [`at_end`](Self::at_end).
    ///
    /// The consumer gets `group.id = group_id`, `enable.auto.commit = false`,
    /// `enable.auto.offset.store = false` and `enable.partition.eof = true`, whatever the
    /// properties say; it defaults (properties may override) to `session.timeout.ms = 6000`,
    /// `client.id = millrace-<group_id>-<worker>`, `auto.offset.reset = error` (a start offset the
    /// partition does not have fails [`poll`](Self::poll) with [`Error::KafkaOffsetOutOfRange`]
    /// rather than silently skipping or repeating data) and larger fetches than librdkafka's
    /// defaults (`max.partition.fetch.bytes` 8 MiB, `fetch.max.bytes` 64 MiB,
    /// `queued.min.messages` 200000, `fetch.wait.max.ms` 100: about twice the rate of the
    /// defaults on small messages). Each broker round trip waits at most [`OPEN_TIMEOUT`].
    pub fn open(
        options: &KafkaOptions,
        topic: &str,
        group_id: &str,
        worker: usize,
        workers: usize,
        start: StartFrom,
        resume: Option<&BTreeMap<i32, i64>>,
    ) -> Result<Self> {
        check_open_args(options, topic, group_id, worker, workers, resume)?;
        let topic_c = CString::new(topic).map_err(|_| Error::InvalidOption {
            option: "KafkaSource::open.topic",
            reason: format!("{topic:?} contains a NUL byte"),
        })?;
        let mut config = rdkafka::ClientConfig::new();
        for (key, value) in [
            ("session.timeout.ms", "6000"),
            ("auto.offset.reset", "error"),
            ("allow.auto.create.topics", "false"),
            ("max.partition.fetch.bytes", "8388608"),
            ("fetch.max.bytes", "67108864"),
            ("queued.min.messages", "200000"),
            ("queued.max.messages.kbytes", "65536"),
            ("fetch.wait.max.ms", "100"),
        ] {
            config.set(key, value);
        }
        config.set("client.id", format!("millrace-{group_id}-{worker}"));
        options.apply(&mut config);
        for (key, value) in [
            ("group.id", group_id),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("enable.partition.eof", "true"),
        ] {
            if let Some(given) = options.properties.get(key).filter(|given| *given != value) {
                tracing::warn!(
                    "Kafka source for topic `{topic}`: property `{key}` = `{given}` is ignored; \
                     millrace needs `{value}` for exactly-once reading"
                );
            }
            config.set(key, value);
        }
        let consumer: BaseConsumer<TracingContext> = config
            .create_with_context(TracingContext)
            .map_err(|e| options.create_error("consumer", e))?;

        let mut source = KafkaSource {
            consumer,
            topic: topic.to_string(),
            topic_c,
            group_id: group_id.to_string(),
            bootstrap: options.bootstrap_servers.clone(),
            worker,
            workers,
            slots: Vec::new(),
            eof_count: 0,
            hold: Hold::default(),
        };
        let all = topic_partitions(&source.consumer, options, topic, OPEN_TIMEOUT)?;
        let mine: Vec<i32> = all
            .into_iter()
            .filter(|&p| p as usize % workers == worker)
            .collect();
        let starts = source.start_offsets(&mine, start, resume)?;
        let mut assignment = TopicPartitionList::with_capacity(mine.len());
        for (&partition, &next) in mine.iter().zip(&starts) {
            let resumed = resume.is_some_and(|r| r.contains_key(&partition));
            let skip_before = match start {
                StartFrom::Timestamp(ms) if !resumed => Some(ms),
                _ => None,
            };
            assignment
                .add_partition_offset(topic, partition, Offset::Offset(next))
                .map_err(|e| source.kafka_error(format!("assign partition {partition}"), e))?;
            source.slots.push(Slot {
                partition,
                next,
                received: next,
                at_eof: false,
                skip_before,
            });
        }
        source
            .consumer
            .assign(&assignment)
            .map_err(|e| source.kafka_error(format!("assign partitions {mine:?}"), e))?;
        tracing::debug!(
            "Kafka source `{topic}` worker {worker}/{workers}: starts {:?}",
            source.positions()
        );
        Ok(source)
    }

    /// The concrete start offset of each partition of `mine`, in order.
    fn start_offsets(
        &self,
        mine: &[i32],
        start: StartFrom,
        resume: Option<&BTreeMap<i32, i64>>,
    ) -> Result<Vec<i64>> {
        let todo: Vec<i32> = mine
            .iter()
            .copied()
            .filter(|p| resume.is_none_or(|r| !r.contains_key(p)))
            .collect();
        let mut resolved: BTreeMap<i32, Option<i64>> = BTreeMap::new();
        if !todo.is_empty() {
            let mut query = TopicPartitionList::with_capacity(todo.len());
            for &p in &todo {
                let offset = match start {
                    StartFrom::Timestamp(ms) => Offset::Offset(ms),
                    _ => Offset::Invalid,
                };
                query
                    .add_partition_offset(&self.topic, p, offset)
                    .map_err(|e| self.kafka_error(format!("query partition {p}"), e))?;
            }
            let answer = match start {
                StartFrom::Committed => Some(
                    self.consumer
                        .committed_offsets(query, OPEN_TIMEOUT)
                        .map_err(|e| self.kafka_error("read the committed offsets".into(), e))?,
                ),
                StartFrom::Timestamp(ms) => Some(
                    self.consumer
                        .offsets_for_times(query, OPEN_TIMEOUT)
                        .map_err(|e| self.kafka_error(format!("look up timestamp {ms}"), e))?,
                ),
                StartFrom::Earliest | StartFrom::Latest => None,
            };
            for &p in &todo {
                let found = match &answer {
                    None => None,
                    Some(list) => match list.find_partition(&self.topic, p) {
                        None => None,
                        Some(elem) => {
                            elem.error().map_err(|e| {
                                self.kafka_error(format!("resolve the start of partition {p}"), e)
                            })?;
                            match elem.offset() {
                                Offset::Offset(n) => Some(n),
                                _ => None,
                            }
                        }
                    },
                };
                resolved.insert(p, found);
            }
        }
        let mut starts = Vec::with_capacity(mine.len());
        for &p in mine {
            let next = match resume.and_then(|r| r.get(&p)) {
                Some(&next) => next,
                None => match resolved.get(&p).copied().flatten() {
                    Some(next) => next,
                    None => self.watermark(p, start)?,
                },
            };
            starts.push(next);
        }
        Ok(starts)
    }

    /// The low watermark (earliest, committed with none stored) or the high watermark (latest,
    /// timestamp after the last message) of partition `p`.
    fn watermark(&self, p: i32, start: StartFrom) -> Result<i64> {
        let (low, high) = self
            .consumer
            .fetch_watermarks(&self.topic, p, OPEN_TIMEOUT)
            .map_err(|e| self.kafka_error(format!("read the watermarks of partition {p}"), e))?;
        Ok(match start {
            StartFrom::Earliest | StartFrom::Committed => low,
            StartFrom::Latest | StartFrom::Timestamp(_) => high,
        })
    }

    /// Up to `max` messages, waiting at most `timeout` in all: returns when `max` arrived or the time is up.
    ///
    /// Returns early (possibly empty) once every assigned partition is at its end. Transient
    /// broker trouble (a lost connection, a leader moving) is logged and retried by librdkafka; a
    /// fatal or permanent error (the topic was deleted, access was denied) is returned.
    pub fn poll(&mut self, max: usize, timeout: Duration) -> Result<Vec<RawMessage>> {
        let mut out = Vec::with_capacity(max.min(8192));
        let slots = &mut self.slots;
        self.hold.release_into(&mut out, max, |p, offset| {
            if let Some(slot) = slots.iter_mut().find(|s| s.partition == p) {
                slot.next = offset + 1;
            }
        });
        let deadline = Instant::now() + timeout;
        while out.len() < max {
            // Fill the batch until `max` or the deadline: librdkafka hands messages over as its
            // fetches land, so stopping at the first empty poll would make tiny batches.
            let wait = deadline.saturating_duration_since(Instant::now());
            match self.consumer.poll(wait) {
                None => {
                    if Instant::now() >= deadline {
                        break;
                    }
                }
                Some(Ok(message)) => {
                    let partition = message.partition();
                    let offset = message.offset();
                    let keep = self.hold.keeps(partition);
                    if let Some(i) = self.slot_index(partition) {
                        let slot = &mut self.slots[i];
                        // Already received (librdkafka fetches again after a pause).
                        if offset < slot.received {
                            continue;
                        }
                        slot.received = offset + 1;
                        if !keep {
                            slot.next = offset + 1;
                        }
                        if slot.at_eof {
                            slot.at_eof = false;
                            self.eof_count -= 1;
                        }
                        if let Some(start) = slot.skip_before {
                            if message
                                .timestamp()
                                .to_millis()
                                .is_some_and(|ts| ts >= start)
                            {
                                slot.skip_before = None;
                            } else {
                                // Skipped messages count as read (none is kept before them).
                                slot.next = offset + 1;
                                continue;
                            }
                        }
                    }
                    let raw = RawMessage {
                        partition,
                        offset,
                        timestamp_ms: message.timestamp().to_millis(),
                        key: message.key().map(<[u8]>::to_vec),
                        payload: message.payload().map(<[u8]>::to_vec),
                    };
                    if !keep {
                        out.push(raw);
                    } else if self.hold.keep(raw) {
                        (self
                            .consumer
                            .pause(&partition_list(&self.topic, &[partition])))
                        .map_err(|e| self.kafka_error("pause".into(), e))?;
                    }
                }
                Some(Err(KafkaError::PartitionEOF(partition))) => {
                    if let Some(i) = self.slot_index(partition)
                        && !self.slots[i].at_eof
                    {
                        self.slots[i].at_eof = true;
                        self.eof_count += 1;
                    }
                    if self.at_end() {
                        break;
                    }
                }
                Some(Err(error)) => {
                    if is_transient(&error) {
                        tracing::warn!(
                            "Kafka source `{}` on {}: {error} (librdkafka retries)",
                            self.topic,
                            self.bootstrap
                        );
                    } else if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AutoOffsetReset)
                    {
                        return Err(Error::KafkaOffsetOutOfRange {
                            topic: self.topic.clone(),
                            bootstrap: self.bootstrap.clone(),
                            positions: format!("{:?}", self.positions()),
                        });
                    } else {
                        return Err(self.kafka_error("consume".into(), error));
                    }
                }
            }
        }
        Ok(out)
    }

    /// The next offset to read of every assigned partition (`last delivered offset + 1`, or the
    /// resolved start offset before the first message): what a checkpoint records and what
    /// [`commit`](Self::commit) and a later [`open`](Self::open)'s `resume` take.
    ///
    /// With [`StartFrom::Timestamp`] the start is the broker's answer, which some brokers give too
    /// early; the older messages the source drops after it count as read. (A checkpoint taken
    /// before they were polled resumes before them, and then delivers them.)
    pub fn positions(&self) -> BTreeMap<i32, i64> {
        self.slots.iter().map(|s| (s.partition, s.next)).collect()
    }

    /// The high watermark (the offset after the last message) of every assigned partition, asked
    /// of the broker now.
    pub fn high_watermarks(&self) -> Result<BTreeMap<i32, i64>> {
        self.slots
            .iter()
            .map(|s| Ok((s.partition, self.watermark(s.partition, StartFrom::Latest)?)))
            .collect()
    }

    /// `true` when every assigned partition has reported its end and no message came since
    /// (always `true` with no partition assigned). New messages clear it.
    pub fn at_end(&self) -> bool {
        self.eof_count == self.slots.len() && !self.hold.keeps_any()
    }

    /// `true` when the broker holds records of `partition` that this source has not delivered yet:
    /// librdkafka's last known high watermark (updated with every fetch response, no broker call)
    /// is past the next offset to deliver, and the partition has not reported its end since.
    ///
    /// `false` for a partition this source does not read, one not fetched yet (no high watermark
    /// known), an empty one, and one whose only undelivered offsets are transaction markers (it
    /// reports its end).
    #[allow(unsafe_code)] // rust-rdkafka has no safe wrapper for rd_kafka_get_watermark_offsets.
    pub fn has_unread(&self, partition: i32) -> bool {
        let Some(slot) = self.slots.iter().find(|s| s.partition == partition) else {
            return false;
        };
        if self.hold.has_kept(partition) {
            return true;
        }
        if slot.at_eof {
            return false;
        }
        let (mut low, mut high) = (-1i64, -1i64);
        // SAFETY: the client pointer lives as long as `self.consumer`; the topic is a valid C
        // string; `low` and `high` are valid for writes. The call only reads librdkafka's cache.
        let err = unsafe {
            rdkafka::bindings::rd_kafka_get_watermark_offsets(
                self.consumer.client().native_ptr(),
                self.topic_c.as_ptr(),
                partition,
                &mut low,
                &mut high,
            )
        };
        err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
            && high >= 0
            && high > slot.next
    }

    /// Holds back exactly the partitions in `partitions` (of those this source reads): their
    /// messages are not delivered until a later call releases them. What librdkafka fetched of a
    /// held partition is kept (up to [`KEPT_BYTES`](super::hold::KEPT_BYTES), then it stops
    /// fetching it), so holding neither loses, repeats nor fetches a message twice.
    pub fn set_paused(&mut self, partitions: &BTreeSet<i32>) -> Result<()> {
        let wanted: BTreeSet<i32> = (partitions.iter().copied())
            .filter(|p| self.slot_index(*p).is_some())
            .collect();
        if &wanted == self.hold.held() {
            return Ok(());
        }
        let resume = self.hold.set_held(wanted);
        if !resume.is_empty() {
            (self.consumer.resume(&partition_list(&self.topic, &resume)))
                .map_err(|e| self.kafka_error("resume".into(), e))?;
            for p in resume {
                let Some(i) = self.slot_index(p) else {
                    continue;
                };
                let from = self.slots[i].received;
                self.consumer
                    .seek(&self.topic, p, Offset::Offset(from), OPEN_TIMEOUT)
                    .map_err(|e| self.kafka_error(format!("seek partition {p} to {from}"), e))?;
            }
        }
        Ok(())
    }

    /// How many bytes (keys and payloads) a held partition keeps before librdkafka stops
    /// fetching it (default [`KEPT_BYTES`](super::hold::KEPT_BYTES)).
    pub fn set_hold_bytes(&mut self, bytes: usize) {
        self.hold.cap = bytes.max(1);
    }

    /// The partitions [`set_paused`](Self::set_paused) holds back.
    pub fn paused(&self) -> &BTreeSet<i32> {
        self.hold.held()
    }

    /// The partitions this source reads, sorted.
    pub fn assignment(&self) -> Vec<i32> {
        self.slots.iter().map(|s| s.partition).collect()
    }

    /// The topic this source reads.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Commits exactly these next offsets (partition → offset of the next message to read) for
    /// the group, synchronously. The partitions need not be assigned to this source, so one worker
    /// may commit a whole checkpoint. An empty map is a no-op.
    pub fn commit(&self, positions: &BTreeMap<i32, i64>) -> Result<()> {
        if positions.is_empty() {
            return Ok(());
        }
        let mut list = TopicPartitionList::with_capacity(positions.len());
        for (&p, &next) in positions {
            if next < 0 {
                return Err(Error::InvalidOption {
                    option: "KafkaSource::commit.positions",
                    reason: format!("partition {p} has offset {next}; offsets are >= 0"),
                });
            }
            list.add_partition_offset(&self.topic, p, Offset::Offset(next))
                .map_err(|e| self.kafka_error(format!("commit partition {p}"), e))?;
        }
        self.consumer
            .commit(&list, CommitMode::Sync)
            .map_err(|e| self.kafka_error(format!("commit offsets {positions:?}"), e))
    }

    fn slot_index(&self, partition: i32) -> Option<usize> {
        let p = usize::try_from(partition).ok()?;
        if p % self.workers != self.worker {
            return None;
        }
        let i = p / self.workers;
        (self.slots.get(i)?.partition == partition).then_some(i)
    }

    fn kafka_error(&self, what: String, source: KafkaError) -> Error {
        Error::Kafka {
            what: format!(
                "{what} for topic `{}` (group `{}`, worker {}/{}) on {}",
                self.topic, self.group_id, self.worker, self.workers, self.bootstrap
            ),
            source,
        }
    }
}

/// `partitions` of `topic`, without offsets.
fn partition_list(topic: &str, partitions: &[i32]) -> TopicPartitionList {
    let mut list = TopicPartitionList::new();
    for &p in partitions {
        list.add_partition(topic, p);
    }
    list
}

fn check_open_args(
    options: &KafkaOptions,
    topic: &str,
    group_id: &str,
    worker: usize,
    workers: usize,
    resume: Option<&BTreeMap<i32, i64>>,
) -> Result<()> {
    options.check_bootstrap()?;
    let invalid = |option, reason: String| Err(Error::InvalidOption { option, reason });
    if topic.is_empty() {
        return invalid("KafkaSource::open.topic", "it is empty".into());
    }
    if group_id.is_empty() {
        return invalid("KafkaSource::open.group_id", "it is empty".into());
    }
    if workers == 0 || worker >= workers {
        return invalid(
            "KafkaSource::open.worker",
            format!("worker {worker} of {workers}: need 0 <= worker < workers"),
        );
    }
    if let Some((p, next)) = resume.and_then(|r| r.iter().find(|(_, next)| **next < 0)) {
        return invalid(
            "KafkaSource::open.resume",
            format!("partition {p} has offset {next}; offsets are >= 0"),
        );
    }
    Ok(())
}

/// Errors librdkafka recovers from by itself (reconnecting, re-resolving the leader).
fn is_transient(error: &KafkaError) -> bool {
    let Some(code) = error.rdkafka_error_code() else {
        return false;
    };
    !matches!(error, KafkaError::MessageConsumptionFatal(_))
        && matches!(
            code,
            RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::AllBrokersDown
                | RDKafkaErrorCode::Resolve
                | RDKafkaErrorCode::OperationTimedOut
                | RDKafkaErrorCode::RequestTimedOut
                | RDKafkaErrorCode::NetworkException
                | RDKafkaErrorCode::LeaderNotAvailable
                | RDKafkaErrorCode::NotLeaderForPartition
                | RDKafkaErrorCode::FencedLeaderEpoch
                | RDKafkaErrorCode::UnknownLeaderEpoch
                | RDKafkaErrorCode::PreferredLeaderNotAvailable
                | RDKafkaErrorCode::CoordinatorLoadInProgress
                | RDKafkaErrorCode::CoordinatorNotAvailable
                | RDKafkaErrorCode::NotCoordinator
        )
}
