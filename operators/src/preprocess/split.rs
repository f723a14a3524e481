//! A deterministic, seedable train/eval split by row hash: a row's side depends only on its values
//! and the seed, never on which worker or batch it arrives in.

use arrow::array::{BooleanArray, RecordBatch};
use millrace_engine::hash_rows;

/// Splits rows into train and eval by a hash of some of their columns.
#[derive(Clone, Debug)]
pub struct HashSplit {
    /// Fraction of rows that go to eval.
    pub eval_fraction: f64,
    /// Seed mixed into the hash.
    pub seed: u64,
    /// Columns whose values are hashed.
    pub key: Vec<String>,
}

fn mix(mut z: u64) -> u64 {
    // splitmix64's finaliser: spreads FNV's weak low bits over the whole word.
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl HashSplit {
    /// `true` for each row that belongs to the eval side.
    pub fn eval_mask(&self, batch: &RecordBatch) -> Result<BooleanArray, String> {
        let hashes = hash_rows(batch, &self.key, "split key")?;
        let threshold = (self.eval_fraction * (1u64 << 53) as f64) as u64;
        let seed = mix(self.seed);
        Ok(hashes
            .iter()
            .map(|h| Some((mix(h ^ seed) >> 11) < threshold))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};

    #[test]
    fn split_is_deterministic_sized_and_batch_independent() {
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
        let all = RecordBatch::try_new(
            schema,
            vec![Arc::new(Int64Array::from_iter_values(0..100_000))],
        )
        .unwrap();
        let split = HashSplit {
            eval_fraction: 0.1,
            seed: 7,
            key: vec!["id".into()],
        };
        let mask = split.eval_mask(&all).unwrap();
        let evals = mask.true_count();
        assert!((9_500..10_500).contains(&evals), "{evals}");
        // The same rows in other batches land on the same side.
        let part = split.eval_mask(&all.slice(50_000, 1000)).unwrap();
        for i in 0..1000 {
            assert_eq!(part.value(i), mask.value(50_000 + i));
        }
        // Another seed gives another split.
        let other = HashSplit { seed: 8, ..split }.eval_mask(&all).unwrap();
        assert_ne!(other, mask);
    }
}
