//! Watermarks per Kafka partition, as Flink's Kafka source keeps them.
//!
//! ```text
//!  partition p: max event time seen in p − max_out_of_orderness     (PartitionWatermarks)
//!  worker:      min over its partitions that are not idle            (WorkerMark)
//!  job:         min over the workers, never going back               (job_watermark)
//! ```
//!
//! A partition is idle once no record of it arrived for `idle_timeout` (processing time, counted
//! from the worker's start for a partition that never had one) while it had nothing left to
//! deliver (no lag: see [`PartitionWatermarks::unread`]); it then neither holds the
//! watermark back nor moves it, until it gets a record again. A partition that is not idle but
//! has no event time yet (nothing read from it so far, or only records without one) holds its
//! worker's watermark back: in a backlog, a partition the consumer has not reached yet must not
//! let the others make its records late.
//!
//! A worker whose partitions are all idle is left out of the job's minimum; it still tells the
//! watermark it had as its last partition went idle, which the job's watermark reaches when every
//! worker is idle (so the end of a burst is the same whenever the steps fall). The job's
//! watermark never goes back, even when an idle partition (or worker) comes back behind it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// One worker's watermark, as it sends it to the others with each step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum WorkerMark {
    /// Every partition of the worker is idle (or it reads none): it does not count while another
    /// worker does. It carries its watermark from just before its last partition went idle.
    Idle(Option<i64>),
    /// A partition that is not idle has no event time yet: the job's watermark must wait.
    Waiting,
    /// The minimum over its partitions that are not idle (epoch ms).
    At(i64),
}

impl WorkerMark {
    /// This mark held at `hold` (an input that has more to give before it, such as a Kafka
    /// table): a worker that was idle counts again.
    pub(crate) fn held(self, hold: Option<i64>) -> WorkerMark {
        match (self, hold) {
            (mark, None) | (mark @ WorkerMark::Waiting, _) => mark,
            (WorkerMark::At(w), Some(h)) => WorkerMark::At(w.min(h)),
            (WorkerMark::Idle(_), Some(h)) => WorkerMark::At(h),
        }
    }
}

impl Default for WorkerMark {
    fn default() -> Self {
        WorkerMark::Idle(None)
    }
}

/// What the worker knows of one partition's event time.
#[derive(Clone, Copy, Debug)]
struct Clock {
    /// The newest event time seen in the partition.
    max_event_ms: Option<i64>,
    /// When (processing time, epoch ms) the partition's last record was seen, or the worker
    /// started.
    last_record_ms: i64,
}

/// The per-partition watermarks of the partitions one worker reads.
#[derive(Clone, Debug)]
pub(crate) struct PartitionWatermarks {
    lateness_ms: i64,
    /// `None`: partitions never become idle.
    idle_after_ms: Option<i64>,
    clocks: BTreeMap<i32, Clock>,
}

impl PartitionWatermarks {
    /// The watermarks of `partitions`, each starting from its event time in `restored` (a
    /// checkpoint's, whichever worker read it before) and not idle before `idle_after_ms` from
    /// `now_ms`. `idle_after_ms = None` (or 0) disables idleness.
    pub(crate) fn new(
        partitions: &[i32],
        restored: &BTreeMap<i32, i64>,
        lateness_ms: i64,
        idle_after_ms: Option<i64>,
        now_ms: i64,
    ) -> Self {
        let clocks = partitions
            .iter()
            .map(|&p| {
                let clock = Clock {
                    max_event_ms: restored.get(&p).copied(),
                    last_record_ms: now_ms,
                };
                (p, clock)
            })
            .collect();
        PartitionWatermarks {
            lateness_ms,
            idle_after_ms: idle_after_ms.filter(|&ms| ms > 0),
            clocks,
        }
    }

    /// A record of `partition` with event time `event_ms` (`None`: it has none) was seen at
    /// `now_ms`. A partition this worker was not given is added.
    pub(crate) fn observe(&mut self, partition: i32, event_ms: Option<i64>, now_ms: i64) {
        let clock = self.clocks.entry(partition).or_insert(Clock {
            max_event_ms: None,
            last_record_ms: now_ms,
        });
        clock.max_event_ms = clock.max_event_ms.max(event_ms);
        clock.last_record_ms = clock.last_record_ms.max(now_ms);
    }

    /// `partition` still holds records the consumer has not delivered (the broker's high
    /// watermark is past the consumer's position): it is not idle at `now_ms`, however long since
    /// its last record. A job slower than
    /// its backlog must not make a partition it has not got to yet idle, and its records late.
    pub(crate) fn unread(&mut self, partition: i32, now_ms: i64) {
        if let Some(clock) = self.clocks.get_mut(&partition) {
            clock.last_record_ms = clock.last_record_ms.max(now_ms);
        }
    }

    /// Whether `partition` is idle at `now_ms` (`false` for one this worker does not read).
    #[cfg(test)]
    pub(crate) fn is_idle(&self, partition: i32, now_ms: i64) -> bool {
        self.clocks
            .get(&partition)
            .is_some_and(|c| self.idle(c, now_ms))
    }

    fn idle(&self, clock: &Clock, now_ms: i64) -> bool {
        self.idle_after_ms
            .is_some_and(|after| now_ms.saturating_sub(clock.last_record_ms) >= after)
    }

    /// This worker's watermark at `now_ms`.
    pub(crate) fn mark(&self, now_ms: i64) -> WorkerMark {
        if let Some(mark) = self.active_mark(now_ms) {
            return mark;
        }
        // All idle: the mark just before the last partition went idle.
        let (Some(after), Some(last)) = (
            self.idle_after_ms,
            self.clocks.values().map(|c| c.last_record_ms).max(),
        ) else {
            return WorkerMark::Idle(None);
        };
        match self.active_mark(last.saturating_add(after - 1)) {
            Some(WorkerMark::At(w)) => WorkerMark::Idle(Some(w)),
            _ => WorkerMark::Idle(None),
        }
    }

    /// The minimum over the partitions not idle at `now_ms`; `None` when all are.
    fn active_mark(&self, now_ms: i64) -> Option<WorkerMark> {
        let mut min: Option<i64> = None;
        let mut any = false;
        for clock in self.clocks.values().filter(|c| !self.idle(c, now_ms)) {
            any = true;
            let Some(max) = clock.max_event_ms else {
                return Some(WorkerMark::Waiting);
            };
            let w = max.saturating_sub(self.lateness_ms);
            min = Some(min.map_or(w, |m| m.min(w)));
        }
        any.then(|| min.map_or(WorkerMark::Waiting, WorkerMark::At))
    }

    /// The partitions whose watermark is more than `align_ms` ahead of the job's `watermark`:
    /// those to pause (watermark alignment). The partition that holds the job's watermark back
    /// is never among them.
    pub(crate) fn ahead(&self, watermark: i64, align_ms: i64) -> BTreeSet<i32> {
        let limit = watermark.saturating_add(align_ms);
        (self.clocks.iter())
            .filter(|(_, c)| {
                c.max_event_ms
                    .is_some_and(|m| m.saturating_sub(self.lateness_ms) > limit)
            })
            .map(|(&p, _)| p)
            .collect()
    }

    /// The newest event time of each partition that has one (what a checkpoint keeps).
    pub(crate) fn max_events(&self) -> Vec<(i32, i64)> {
        self.clocks
            .iter()
            .filter_map(|(&p, c)| c.max_event_ms.map(|m| (p, m)))
            .collect()
    }
}

/// The job's watermark after a step: the minimum over the workers that are not idle (over what
/// the idle ones carry when every worker is idle), held where it was (`previous`) while a worker
/// waits for its first event time, and never below `previous`.
pub(crate) fn job_watermark(
    previous: Option<i64>,
    marks: impl IntoIterator<Item = WorkerMark>,
) -> Option<i64> {
    let min_of = |min: Option<i64>, w: i64| Some(min.map_or(w, |m: i64| m.min(w)));
    let (mut active, mut idle) = (None, None);
    for mark in marks {
        match mark {
            WorkerMark::Idle(None) => {}
            WorkerMark::Idle(Some(w)) => idle = min_of(idle, w),
            WorkerMark::Waiting => return previous,
            WorkerMark::At(w) => active = min_of(active, w),
        }
    }
    match (previous, active.or(idle)) {
        (Some(p), Some(m)) => Some(p.max(m)),
        (p, m) => p.or(m),
    }
}

#[cfg(test)]
mod tests;
