//! What to generate ([`TabularSpec`]) and what was generated ([`TabularReport`]).

use std::path::PathBuf;

/// 2024-01-01T00:00:00 UTC in microseconds since the epoch: the first `ts` of the training set.
pub const TRAIN_T0_MICROS: i64 = 1_704_067_200_000_000;
/// 2025-01-01T00:00:00 UTC in microseconds since the epoch: the first `ts` of the holdout set.
pub const HOLDOUT_T0_MICROS: i64 = 1_735_689_600_000_000;
/// Consecutive rows are 100 ms apart.
pub const TS_STEP_MICROS: i64 = 100_000;

/// Which tabular dataset to generate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TabularSpec {
    /// Total rows over all files (default 2,000,000).
    pub rows: u64,
    /// Number of files `part-00000.parquet`.. (default 8). Rows are split evenly, the first files
    /// taking one extra row when `rows` is not a multiple of `files`.
    pub files: usize,
    /// Seed of the random streams (each file draws from its own stream of this seed).
    pub seed: u64,
    /// Holdout set: `ts` starts at 2025-01-01 instead of 2024-01-01, and the random streams differ
    /// from the training set's even for the same `seed` (so a holdout never repeats training rows).
    /// Callers pass the holdout's `rows`/`files` themselves (see [`TabularSpec::holdout_default`]).
    pub holdout: bool,
    /// Rows per row group (default 65,536).
    pub row_group_rows: usize,
    /// High-cardinality variant: when above 0, an `entity` column (`"e0"`..) names one of this
    /// many entities (uniformly), and each entity's own effect enters the label (see
    /// [`entity_effect`](super::entity_effect)). 0 (default): the plain dataset, unchanged.
    pub entities: u64,
}

impl Default for TabularSpec {
    fn default() -> Self {
        Self {
            rows: 2_000_000,
            files: 8,
            seed: 42,
            holdout: false,
            row_group_rows: 65_536,
            entities: 0,
        }
    }
}

impl TabularSpec {
    /// The default holdout set: 200,000 rows in one file, `ts` from 2025-01-01.
    pub fn holdout_default() -> Self {
        Self {
            rows: 200_000,
            files: 1,
            seed: 4242,
            holdout: true,
            row_group_rows: 65_536,
            entities: 0,
        }
    }

    /// The first timestamp (microseconds since the epoch).
    pub fn t0_micros(&self) -> i64 {
        if self.holdout {
            HOLDOUT_T0_MICROS
        } else {
            TRAIN_T0_MICROS
        }
    }

    /// Rows of each file, in file order (they sum to `rows`).
    pub fn rows_per_file(&self) -> Vec<u64> {
        let files = self.files.max(1) as u64;
        let (base, extra) = (self.rows / files, self.rows % files);
        (0..files).map(|i| base + u64::from(i < extra)).collect()
    }

    /// The file name of file `index`: `part-00000.parquet`, `part-00001.parquet`, ...
    pub fn file_name(index: usize) -> String {
        format!("part-{index:05}.parquet")
    }
}

/// What [`generate`](super::generate) wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TabularReport {
    /// The files written, in order.
    pub files: Vec<PathBuf>,
    /// Total rows.
    pub rows: u64,
    /// Rows with `label == 1`.
    pub positives: u64,
    /// Rows where `f3` is null.
    pub nulls_f3: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_split_evenly() {
        let spec = TabularSpec {
            rows: 10,
            files: 4,
            ..TabularSpec::default()
        };
        assert_eq!(spec.rows_per_file(), vec![3, 3, 2, 2]);
        assert_eq!(TabularSpec::default().rows_per_file(), vec![250_000; 8]);
        assert_eq!(TabularSpec::file_name(3), "part-00003.parquet");
    }

    #[test]
    fn t0_is_new_year_utc() {
        // 366 days of 2024 separate the two origins.
        assert_eq!(
            HOLDOUT_T0_MICROS - TRAIN_T0_MICROS,
            366 * 86_400 * 1_000_000
        );
        assert_eq!(
            TabularSpec::holdout_default().t0_micros(),
            HOLDOUT_T0_MICROS
        );
        // 2024-01-01 is 19723 days after 1970-01-01.
        assert_eq!(TRAIN_T0_MICROS, 19_723 * 86_400 * 1_000_000);
    }
}
