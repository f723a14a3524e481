//! Synthetic data shared by the tests.

use millrace_ml::rng::Rng;

/// `rows` points in `[-1, 1)^dim`, row-major.
pub fn uniform(rows: usize, dim: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..rows * dim)
        .map(|_| rng.uniform_f32(-1.0, 1.0))
        .collect()
}

/// XOR of the signs of the first two features: not linearly separable.
pub fn xor_labels(x: &[f32], dim: usize) -> Vec<i64> {
    x.chunks(dim)
        .map(|r| i64::from((r[0] > 0.0) != (r[1] > 0.0)))
        .collect()
}

/// Fraction of rows whose arg-max probability is the label.
pub fn accuracy(probs: &[f32], k: usize, labels: &[i64]) -> f64 {
    let correct = probs
        .chunks(k)
        .zip(labels)
        .filter(|(p, l)| {
            let best = (0..k).fold(0, |b, c| if p[c] > p[b] { c } else { b });
            best as i64 == **l
        })
        .count();
    correct as f64 / labels.len() as f64
}
