//! Exact ROC AUC via the Mann–Whitney U statistic, ties averaged.

/// Area under the ROC curve of `scores` for the rows where `positive` is true.
///
/// Computed exactly: sort once, give tied scores their average rank, then
/// `AUC = (R₊ − n₊(n₊+1)/2) / (n₊ · n₋)`. Returns `NaN` when either class is absent
/// (the AUC is undefined there).
pub fn roc_auc(scores: &[f32], positive: &[bool]) -> f64 {
    let n = scores.len().min(positive.len());
    let mut order: Vec<u32> = (0..n as u32).collect();
    order.sort_unstable_by(|&a, &b| scores[a as usize].total_cmp(&scores[b as usize]));

    let n_pos = positive[..n].iter().filter(|&&p| p).count() as f64;
    let n_neg = n as f64 - n_pos;
    if n_pos == 0.0 || n_neg == 0.0 {
        return f64::NAN;
    }

    let mut rank_sum_pos = 0.0f64;
    let mut i = 0;
    while i < n {
        let score = scores[order[i] as usize];
        let mut j = i + 1;
        while j < n && scores[order[j] as usize] == score {
            j += 1;
        }
        // Ranks i+1 ..= j share their average.
        let avg_rank = (i + 1 + j) as f64 / 2.0;
        let pos_in_group = order[i..j]
            .iter()
            .filter(|&&r| positive[r as usize])
            .count();
        rank_sum_pos += avg_rank * pos_in_group as f64;
        i = j;
    }
    (rank_sum_pos - n_pos * (n_pos + 1.0) / 2.0) / (n_pos * n_neg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_and_inverted() {
        let pos = [false, false, true, true];
        assert_eq!(roc_auc(&[0.1, 0.2, 0.8, 0.9], &pos), 1.0);
        assert_eq!(roc_auc(&[0.9, 0.8, 0.2, 0.1], &pos), 0.0);
    }

    #[test]
    fn ties_are_averaged() {
        // Pairs (pos, neg): pos scores {0.5, 0.9}, neg scores {0.5, 0.1}.
        // (0.5 vs 0.5) = 1/2, (0.5 vs 0.1) = 1, (0.9 vs 0.5) = 1, (0.9 vs 0.1) = 1 → 3.5 / 4.
        let auc = roc_auc(&[0.5, 0.9, 0.5, 0.1], &[true, true, false, false]);
        assert_eq!(auc, 0.875);
        // All scores equal: 0.5.
        assert_eq!(roc_auc(&[0.3; 5], &[true, false, true, false, false]), 0.5);
    }

    #[test]
    fn matches_pairwise_count() {
        // sklearn-style example: y = [0, 0, 1, 1], s = [0.1, 0.4, 0.35, 0.8] → 0.75.
        assert_eq!(
            roc_auc(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true]),
            0.75
        );
    }

    #[test]
    fn one_class_is_nan() {
        assert!(roc_auc(&[0.1, 0.2], &[true, true]).is_nan());
        assert!(roc_auc(&[], &[]).is_nan());
    }
}
