//! Model freshness on every worker, and its summary for the step log.
//!
//! Each worker measures the delays of its own records (produce time → the version holding them
//! went live). The summary (`summary.json`) gathers them all when the job ends; the live step log
//! needs them as versions go live, from every worker: each worker sends a [`DelaySummary`] of its
//! new delays in its next step message, and worker 0 logs their merge.

use serde::{Deserialize, Serialize};

/// At most this many delays of one worker travel in a step message: an evenly spaced sample of
/// its sorted new delays (a p50 off by at most 1/`SAMPLE` of the records).
const SAMPLE: usize = 256;

/// Produce times of trained records not yet in a published version, of those in the version
/// published last (waiting for worker 0 to say when it went live), and the measured delays.
#[derive(Default)]
pub(super) struct Freshness {
    pub(super) unpublished: Vec<i64>,
    pub(super) awaiting_publish: Vec<i64>,
    pub(super) delays_ms: Vec<u32>,
    /// Worker 0: when the last version went live, not yet told to the others.
    pub(super) published_at: Option<i64>,
    /// How many of `delays_ms` earlier step messages have summarised.
    sent: usize,
}

impl Freshness {
    /// Records the delays of the records in the version that went live `at`.
    pub(super) fn went_live(&mut self, at: i64) {
        self.delays_ms.extend(
            self.awaiting_publish
                .drain(..)
                .map(|t| (at - t).max(0) as u32),
        );
    }

    /// The delays measured since the last call, for the next step message (`None` without any).
    pub(super) fn take_new(&mut self) -> Option<DelaySummary> {
        let new = self.delays_ms.get(self.sent..).filter(|d| !d.is_empty())?;
        self.sent = self.delays_ms.len();
        Some(DelaySummary::of(new))
    }
}

/// One worker's new delays: how many, the largest, and an evenly spaced sample of them sorted.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct DelaySummary {
    count: u64,
    max: u32,
    sample: Vec<u32>,
}

impl DelaySummary {
    fn of(delays: &[u32]) -> Self {
        let mut sorted = delays.to_vec();
        sorted.sort_unstable();
        let n = sorted.len();
        let sample = if n <= SAMPLE {
            sorted.clone()
        } else {
            // The midpoints of SAMPLE equal shares of the sorted delays.
            (0..SAMPLE)
                .map(|i| sorted[(2 * i + 1) * n / (2 * SAMPLE)])
                .collect()
        };
        DelaySummary {
            count: n as u64,
            max: sorted.last().copied().unwrap_or(0),
            sample,
        }
    }

    /// The p50 and the max over every worker's summary, each sample point standing for its
    /// share of its worker's records; `None` when no worker had new delays.
    pub(crate) fn merge<'a>(
        parts: impl IntoIterator<Item = &'a DelaySummary>,
    ) -> Option<(f64, u32)> {
        let mut weighted: Vec<(u32, f64)> = Vec::new();
        let mut max = None::<u32>;
        for part in parts.into_iter().filter(|p| p.count > 0) {
            let weight = part.count as f64 / part.sample.len() as f64;
            weighted.extend(part.sample.iter().map(|&d| (d, weight)));
            max = Some(max.map_or(part.max, |m| m.max(part.max)));
        }
        let max = max?;
        weighted.sort_by_key(|&(d, _)| d);
        let half = weighted.iter().map(|(_, w)| w).sum::<f64>() / 2.0;
        let mut seen = 0.0;
        let p50 = weighted
            .iter()
            .find(|(_, w)| {
                seen += w;
                seen >= half
            })
            .map_or(0, |&(d, _)| d);
        Some((f64::from(p50), max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_merge_is_the_p50_and_max_of_every_workers_delays() {
        // Worker 0: 1..=100 ms; worker 1: 1,000 delays of 500 ms and one of 9,000.
        let a: Vec<u32> = (1..=100).collect();
        let mut b = vec![500u32; 1000];
        b.push(9000);
        let (sa, sb) = (DelaySummary::of(&a), DelaySummary::of(&b));
        assert_eq!((sa.count, sa.max, sa.sample.len()), (100, 100, 100));
        assert_eq!((sb.count, sb.max, sb.sample.len()), (1001, 9000, SAMPLE));
        // 1,101 records, 1,000 of them at 500 ms: the p50 is 500 and the max 9,000.
        assert_eq!(DelaySummary::merge([&sa, &sb]), Some((500.0, 9000)));
        // Alone, worker 0's p50 is its 50th delay.
        assert_eq!(DelaySummary::merge([&sa]), Some((50.0, 100)));
        assert_eq!(DelaySummary::merge([&DelaySummary::default()]), None);
    }

    #[test]
    fn each_delay_is_sent_once() {
        let mut f = Freshness {
            awaiting_publish: vec![100, 150],
            ..Freshness::default()
        };
        assert_eq!(f.take_new(), None);
        f.went_live(200);
        let first = f.take_new().unwrap();
        assert_eq!((first.count, first.max), (2, 100));
        assert_eq!(f.take_new(), None);
        f.awaiting_publish.push(290);
        f.went_live(300);
        assert_eq!(f.take_new().unwrap().sample, vec![10]);
        assert_eq!(f.delays_ms, vec![100, 50, 10]);
    }
}
