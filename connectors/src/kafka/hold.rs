//! Partitions a source holds back (watermark alignment) without throwing away what librdkafka
//! has already fetched of them.
//!
//! Pausing a partition in librdkafka drops its prefetched messages (up to `queued.min.messages`
//! of them), which must then be fetched and decompressed again after it resumes: a job that
//! aligns its partitions pauses and resumes them every few steps, and paid for each batch several
//! times. A held partition's messages are kept here instead, in offset order, and delivered once
//! it is released; only when a partition keeps more than [`KEPT_BYTES`] is it paused in
//! librdkafka too, and fetched again after the last message kept.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::source::RawMessage;

/// Bytes (keys and payloads) kept per held partition before librdkafka stops fetching it: what
/// librdkafka's own prefetch may hold by default (`queued.max.messages.kbytes`, 64 MiB). With 16
/// MiB, features_online's aligned partitions were paused in librdkafka again and again, and the
/// fetches repeated took 0.7 of its 2 cores.
pub const KEPT_BYTES: usize = 64 << 20;

/// What a source holds back: see the module documentation.
#[derive(Debug)]
pub(super) struct Hold {
    /// Bytes a held partition keeps before it is paused in librdkafka.
    pub(super) cap: usize,
    /// Partitions held: their messages are kept, not delivered.
    held: BTreeSet<i32>,
    /// Per partition: messages received and not delivered yet (held, or released while a batch
    /// was full), in offset order, and their bytes.
    kept: BTreeMap<i32, (VecDeque<RawMessage>, usize)>,
    /// Partitions paused in librdkafka because they keep [`KEPT_BYTES`].
    stopped: BTreeSet<i32>,
}

impl Default for Hold {
    fn default() -> Self {
        Hold {
            cap: KEPT_BYTES,
            held: BTreeSet::new(),
            kept: BTreeMap::new(),
            stopped: BTreeSet::new(),
        }
    }
}

impl Hold {
    /// The partitions held.
    pub(super) fn held(&self) -> &BTreeSet<i32> {
        &self.held
    }

    /// Holds exactly `partitions` from now on; returns the partitions paused in librdkafka that
    /// are no longer held, to be resumed there (no longer counted as stopped).
    pub(super) fn set_held(&mut self, partitions: BTreeSet<i32>) -> Vec<i32> {
        self.held = partitions;
        let resume: Vec<i32> = self.stopped.difference(&self.held).copied().collect();
        for p in &resume {
            self.stopped.remove(p);
        }
        resume
    }

    /// Whether a message of `partition` that arrives now must be kept rather than delivered: the
    /// partition is held, or older messages of it wait to be delivered.
    pub(super) fn keeps(&self, partition: i32) -> bool {
        self.held.contains(&partition) || self.kept.get(&partition).is_some_and(|k| !k.0.is_empty())
    }

    /// Keeps `message`; returns `true` when its partition should now be paused in librdkafka
    /// (it keeps its cap and is not paused yet).
    pub(super) fn keep(&mut self, message: RawMessage) -> bool {
        let p = message.partition;
        let (messages, bytes) = self.kept.entry(p).or_default();
        *bytes +=
            message.key.as_ref().map_or(0, Vec::len) + message.payload.as_ref().map_or(0, Vec::len);
        messages.push_back(message);
        *bytes >= self.cap && self.held.contains(&p) && self.stopped.insert(p)
    }

    /// Moves kept messages of partitions no longer held into `out`, up to `max` in all, in offset
    /// order per partition; calls `delivered` with each one's partition and offset.
    pub(super) fn release_into(
        &mut self,
        out: &mut Vec<RawMessage>,
        max: usize,
        mut delivered: impl FnMut(i32, i64),
    ) {
        for (p, (messages, bytes)) in self.kept.iter_mut() {
            if self.held.contains(p) {
                continue;
            }
            while out.len() < max
                && let Some(message) = messages.pop_front()
            {
                *bytes -= message.key.as_ref().map_or(0, Vec::len)
                    + message.payload.as_ref().map_or(0, Vec::len);
                delivered(message.partition, message.offset);
                out.push(message);
            }
        }
        self.kept.retain(|_, (messages, _)| !messages.is_empty());
    }

    /// Whether messages of `partition` are kept.
    pub(super) fn has_kept(&self, partition: i32) -> bool {
        self.kept.contains_key(&partition)
    }

    /// Whether any partition keeps messages.
    pub(super) fn keeps_any(&self) -> bool {
        !self.kept.is_empty()
    }
}
