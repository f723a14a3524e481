//! The order in which rows are trained: every epoch sorts rows by a seeded hash of their
//! content, and step `s` takes the rows whose key is in the `s`-th slice of the key space, so the
//! global batches do not depend on how rows are spread over workers.

use millrace_ml::preprocess::Targets;

pub(super) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A stable hash of each row's content (features and target): the row's identity, whichever worker
/// holds it.
pub(super) fn row_hashes(x: &[f32], dim: usize, targets: &Targets) -> Vec<u64> {
    let rows = x.len().checked_div(dim).unwrap_or(0);
    (0..rows)
        .map(|r| {
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            let mut eat = |bits: u32| {
                h ^= u64::from(bits);
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            };
            for v in &x[r * dim..(r + 1) * dim] {
                eat(v.to_bits());
            }
            match targets {
                Targets::Classes(c) => eat(c[r] as u32),
                Targets::Values(v) => eat(v[r].to_bits()),
            }
            h
        })
        .collect()
}

/// This worker's rows in the epoch's global order: sorted by a seeded hash of their content. Step
/// `s` of `steps` takes the rows whose key falls in the `s`-th of `steps` equal slices of the key
/// space, so the global batch of every step is the same set of rows whatever the number of workers.
pub(super) fn epoch_order(hashes: &[u64], seed: u64) -> Vec<(u64, u32)> {
    let salt = mix(seed);
    let mut keyed: Vec<(u64, u32)> = hashes
        .iter()
        .enumerate()
        .map(|(i, h)| (mix(h ^ salt), i as u32))
        .collect();
    keyed.sort_unstable();
    keyed
}

/// The rows of `features` in a fixed sample of about `fraction` of them, chosen by each row's
/// content (so the same rows on any number of workers), in their order.
pub(crate) fn sample_rows(
    features: &millrace_ml::preprocess::Features,
    fraction: f64,
) -> millrace_ml::preprocess::Features {
    let Some(targets) = features.y.as_ref() else {
        return features.clone();
    };
    if fraction >= 1.0 {
        return features.clone();
    }
    let dim = features.input_dim();
    let cut = (fraction.max(0.0) * u64::MAX as f64) as u64;
    let keep: Vec<usize> = row_hashes(&features.x, dim, targets)
        .iter()
        .enumerate()
        .filter(|(_, h)| mix(**h ^ 0x5eed_5a3b_1e00_0001) < cut)
        .map(|(i, _)| i)
        .collect();
    let y = match targets {
        Targets::Classes(c) => Targets::Classes(keep.iter().map(|&i| c[i]).collect()),
        Targets::Values(v) => Targets::Values(keep.iter().map(|&i| v[i]).collect()),
    };
    millrace_ml::preprocess::Features {
        x: keep
            .iter()
            .flat_map(|&i| features.x[i * dim..(i + 1) * dim].iter().copied())
            .collect(),
        y: Some(y),
        rows: keep.len(),
        accepted: keep
            .iter()
            .map(|&i| features.accepted.get(i).copied().unwrap_or(i as u32))
            .collect(),
        rejected: Vec::new(),
    }
}

/// The first key of slice `step` of `steps` (the end of the last slice is `u64::MAX` inclusive).
pub(super) fn slice_start(step: u64, steps: u64) -> u128 {
    (u128::from(step) << 64) / u128::from(steps)
}

/// The checksum of a model's parameters: their little-endian bytes, hashed with
/// [`millrace_engine::stable_hash`] (equal on every worker and every run for the same values).
pub(crate) fn checksum(values: &[f32]) -> u64 {
    let mut bytes = Vec::with_capacity(values.len() * 4);
    for v in values {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    millrace_engine::stable_hash(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_is_in_exactly_one_step_and_steps_do_not_depend_on_sharding() {
        let x: Vec<f32> = (0..3000).map(|i| (i as f32 * 0.37).sin()).collect();
        let y = Targets::Classes((0..1000).map(|i| i % 2).collect());
        let hashes = row_hashes(&x, 3, &y);
        let steps = 7;
        let step_of = |hashes: &[u64]| -> Vec<u64> {
            let order = epoch_order(hashes, 5);
            let mut out = vec![0; hashes.len()];
            let mut next = 0;
            for s in 0..steps {
                let end = slice_start(s + 1, steps);
                while next < order.len() && u128::from(order[next].0) < end {
                    out[order[next].1 as usize] = s;
                    next += 1;
                }
            }
            assert_eq!(next, order.len(), "every row is taken");
            out
        };
        let whole = step_of(&hashes);
        // Split the rows over two "workers": each row lands in the same step.
        let (a, b) = hashes.split_at(400);
        let mut sharded = step_of(a);
        sharded.extend(step_of(b));
        assert_eq!(whole, sharded);
        // Steps are roughly equal in size, and another seed shuffles.
        for s in 0..steps {
            let n = whole.iter().filter(|&&x| x == s).count();
            assert!((100..190).contains(&n), "step {s} has {n} rows");
        }
        assert_ne!(epoch_order(&hashes, 5), epoch_order(&hashes, 6));
    }
}
