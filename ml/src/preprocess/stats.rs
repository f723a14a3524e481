//! Mergeable statistics: moments (count, mean, M2) and category counts.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// Count, mean and sum of squared deviations (M2) of a numeric column, mergeable with Chan et
/// al.'s parallel update so that fitting on parts and merging equals fitting on the whole.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq)]
pub struct Moments {
    /// Number of values.
    pub count: f64,
    /// Mean of the values.
    pub mean: f64,
    /// Sum of squared deviations from the mean.
    pub m2: f64,
}

impl Moments {
    /// Moments of `values`, computed with two passes (exact mean, then deviations).
    pub fn of(values: &[f64]) -> Self {
        if values.is_empty() {
            return Self::default();
        }
        let count = values.len() as f64;
        let mean = values.iter().sum::<f64>() / count;
        let m2 = values.iter().map(|v| (v - mean) * (v - mean)).sum();
        Self { count, mean, m2 }
    }

    /// Combines `other` into `self` (Chan, Golub & LeVeque).
    pub fn merge(&mut self, other: &Moments) {
        if other.count == 0.0 {
            return;
        }
        if self.count == 0.0 {
            *self = *other;
            return;
        }
        let count = self.count + other.count;
        let delta = other.mean - self.mean;
        self.mean += delta * other.count / count;
        self.m2 += other.m2 + delta * delta * self.count * other.count / count;
        self.count = count;
    }

    /// Population standard deviation; 1 when it is 0 or undefined (so scaling is a no-op).
    pub fn std_or_one(&self) -> f64 {
        let std = if self.count > 0.0 {
            (self.m2 / self.count).sqrt()
        } else {
            0.0
        };
        if std > 0.0 && std.is_finite() {
            std
        } else {
            1.0
        }
    }

    /// The mean, or 0 when there were no values.
    pub fn mean_or_zero(&self) -> f64 {
        if self.count > 0.0 { self.mean } else { 0.0 }
    }
}

/// Occurrence counts of the values of a categorical column.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Counts(pub HashMap<String, u64>);

impl Counts {
    /// Counts one occurrence of `value` (allocates only for a new value).
    #[inline]
    pub fn add(&mut self, value: &str, n: u64) {
        match self.0.get_mut(value) {
            Some(c) => *c += n,
            None => {
                self.0.insert(value.to_string(), n);
            }
        }
    }

    /// Adds all of `other`'s counts.
    pub fn merge(&mut self, other: &Counts) {
        for (value, n) in &other.0 {
            self.add(value, *n);
        }
    }

    /// Values by descending count, ties by name; at most `max` of them.
    pub fn vocabulary(&self, max: Option<usize>) -> Vec<String> {
        let mut entries: Vec<(&String, u64)> = self.0.iter().map(|(k, v)| (k, *v)).collect();
        entries.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        entries.truncate(max.unwrap_or(usize::MAX));
        entries.into_iter().map(|(k, _)| k.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_moments_equal_whole() {
        let data: Vec<f64> = (0..1000)
            .map(|i| ((i * 37) % 101) as f64 * 0.5 + 1e6)
            .collect();
        let whole = Moments::of(&data);
        let mut merged = Moments::of(&data[..123]);
        merged.merge(&Moments::of(&data[123..700]));
        merged.merge(&Moments::of(&data[700..]));
        merged.merge(&Moments::default());
        assert_eq!(merged.count, whole.count);
        assert!((merged.mean - whole.mean).abs() <= 1e-9 * whole.mean.abs());
        assert!((merged.m2 - whole.m2).abs() <= 1e-9 * whole.m2.abs());
        assert_eq!(Moments::of(&[3.0, 3.0]).std_or_one(), 1.0);
        assert_eq!(Moments::of(&[1.0, 3.0]).std_or_one(), 1.0);
        assert_eq!(Moments::of(&[1.0, 5.0]).std_or_one(), 2.0);
    }

    #[test]
    fn vocabulary_order() {
        let mut c = Counts::default();
        for v in ["b", "a", "c", "b", "a", "d"] {
            c.add(v, 1);
        }
        assert_eq!(c.vocabulary(None), vec!["a", "b", "c", "d"]);
        assert_eq!(c.vocabulary(Some(3)), vec!["a", "b", "c"]);
        c.add("d", 5);
        assert_eq!(c.vocabulary(Some(1)), vec!["d"]);
    }
}
