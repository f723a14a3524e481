//! The generative rule of TABULAR.md, one row at a time, and its Arrow schema.

use std::f64::consts::{FRAC_2_SQRT_PI, SQRT_2};
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::synthetic::Rng;

/// Number of float features `f0..f15`.
pub const FEATURES: usize = 16;
/// P(cat = "ck"), k = 0..7.
pub const CATEGORY_P: [f64; 8] = [0.30, 0.20, 0.15, 0.12, 0.09, 0.07, 0.04, 0.03];
/// The per-category shift `b_k` of the latent score.
pub const CATEGORY_SHIFT: [f64; 8] = [-0.75, -0.25, 0.25, 0.75, -1.0, 1.0, -1.5, 1.5];
/// Standard deviation of the label noise added to the latent score.
pub const NOISE: f64 = 1.0;
/// Probability that `f3` is null.
pub const F3_NULL_P: f64 = 0.01;
/// The category names, "c0".."c7".
pub(crate) const CATEGORY_NAMES: [&str; 8] = ["c0", "c1", "c2", "c3", "c4", "c5", "c6", "c7"];

/// Cumulative of [`CATEGORY_P`]; the last entry is forced to 1 so rounding never loses mass.
const CATEGORY_CUMULATIVE: [f64; 8] = [0.30, 0.50, 0.65, 0.77, 0.86, 0.93, 0.97, 1.0];

/// Mean of feature `f_j`: `j - 8`.
pub fn mu(j: usize) -> f64 {
    j as f64 - 8.0
}

/// Standard deviation of feature `f_j`: `1 + (j mod 4)`.
pub fn sigma(j: usize) -> f64 {
    1.0 + (j % 4) as f64
}

/// The Arrow schema: `f0..f15` Float32 (only `f3` nullable), `cat` Utf8, `ts` Timestamp(µs, no
/// timezone; values are UTC), `label` Int8.
pub fn schema() -> SchemaRef {
    let mut fields: Vec<Field> = (0..FEATURES)
        .map(|j| Field::new(format!("f{j}"), DataType::Float32, j == 3))
        .collect();
    fields.push(Field::new("cat", DataType::Utf8, false));
    fields.push(Field::new(
        "ts",
        DataType::Timestamp(TimeUnit::Microsecond, None),
        false,
    ));
    fields.push(Field::new("label", DataType::Int8, false));
    Arc::new(Schema::new(fields))
}

/// The latent score `s` of TABULAR.md step 4, from the float64 `z` and the category `k`.
pub fn latent_score(z: &[f64; FEATURES], k: usize) -> f64 {
    let sqrt_2_over_pi = FRAC_2_SQRT_PI / SQRT_2; // sqrt(2/pi)
    let inv_sqrt_pi = FRAC_2_SQRT_PI / 2.0; // 1/sqrt(pi)
    let g = if k.is_multiple_of(2) { 1.0 } else { -1.0 };
    let b = CATEGORY_SHIFT.get(k).copied().unwrap_or(0.0);
    1.0 * z[0] - 0.8 * z[1]
        + 0.5 * z[8]
        + 1.5 * z[0] * z[1]
        + 2.0 * (1.5 * z[2]).sin()
        + 1.2 * (z[3] * z[3] - 1.0)
        - 1.5 * (z[4].abs() - sqrt_2_over_pi)
        + 1.5 * g * z[5]
        + 1.0 * ((z[6] + z[7]).max(0.0) - inv_sqrt_pi)
        + b
}

/// Standard deviation of the per-entity effects of the `entities` variant.
pub const ENTITY_EFFECT_SD: f64 = 1.5;

/// The effect of entity `id` on the latent score: `Normal(0, ENTITY_EFFECT_SD)`, a fixed function
/// of the id (not of the dataset's seed), so a training set and its holdout share their entities.
pub fn entity_effect(id: u64) -> f64 {
    // One draw from a stream of its own per entity.
    let mut rng = Rng::for_stream(0x456E_7469_7479_2121, id); // "Entity!!"
    ENTITY_EFFECT_SD * rng.normal()
}

/// One row before it is cast to float32 and nulled.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// The standard-normal draws `z_0..z_15`.
    pub z: [f64; FEATURES],
    /// The category index `k` (cat = "c" + k).
    pub k: usize,
    /// The latent score `s` (without noise).
    pub score: f64,
    /// `s + NOISE * e > 0`.
    pub label: bool,
    /// Whether `f3` is null.
    pub f3_null: bool,
    /// The entity (the `entities` variant only).
    pub entity: Option<u64>,
}

impl Row {
    /// Draws one row: `z_0..z_15`, then `k`, then the label noise `e`, then the `f3` null coin.
    pub fn draw(rng: &mut Rng) -> Self {
        Self::draw_with_entities(rng, 0)
    }

    /// Draws one row of the `entities` variant (0: the plain rule, the same draws as
    /// [`Row::draw`]): after `k`, the entity `id` uniform in `0..entities`, whose
    /// [`entity_effect`] adds to the score the label is drawn from.
    pub fn draw_with_entities(rng: &mut Rng, entities: u64) -> Self {
        let mut z = [0.0; FEATURES];
        for pair in z.chunks_exact_mut(2) {
            let (a, b) = rng.normal_pair();
            pair[0] = a;
            pair[1] = b;
        }
        let k = rng.categorical(&CATEGORY_CUMULATIVE);
        let mut score = latent_score(&z, k);
        let entity = (entities > 0).then(|| {
            let id = ((rng.uniform() * entities as f64) as u64).min(entities - 1);
            score += entity_effect(id);
            id
        });
        let label = score + NOISE * rng.normal() > 0.0;
        let f3_null = rng.uniform() < F3_NULL_P;
        Self {
            z,
            k,
            score,
            label,
            f3_null,
            entity,
        }
    }

    /// Feature `f_j = float32(mu_j + sigma_j * z_j)` (ignoring nulls).
    pub fn feature(&self, j: usize) -> f32 {
        (mu(j) + sigma(j) * self.z[j]) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cumulative_matches_p() {
        let mut acc = 0.0;
        for (p, c) in CATEGORY_P.iter().zip(CATEGORY_CUMULATIVE) {
            acc += p;
            assert!((acc - c).abs() < 1e-12);
        }
    }

    #[test]
    fn score_at_zero_is_centering_plus_shift() {
        let z = [0.0; FEATURES];
        let centering =
            1.5 * (2.0 / std::f64::consts::PI).sqrt() - 1.0 / std::f64::consts::PI.sqrt() - 1.2;
        for (k, shift) in CATEGORY_SHIFT.iter().enumerate() {
            assert!((latent_score(&z, k) - (centering + shift)).abs() < 1e-12);
        }
        let mut z = [0.0; FEATURES];
        z[5] = 1.0;
        assert!(
            (latent_score(&z, 0) - latent_score(&z, 1) - (1.5 + 1.5 + (-0.75 + 0.25))).abs()
                < 1e-12
        );
    }

    #[test]
    fn label_agrees_with_bayes_rule_about_91_percent() {
        let mut rng = Rng::new(11);
        let n = 100_000;
        let rows: Vec<Row> = (0..n).map(|_| Row::draw(&mut rng)).collect();
        let positive = rows.iter().filter(|r| r.label).count() as f64 / n as f64;
        let bayes = rows.iter().filter(|r| r.label == (r.score > 0.0)).count() as f64 / n as f64;
        assert!((positive - 0.474).abs() < 0.01, "P(label=1) = {positive}");
        assert!((bayes - 0.908).abs() < 0.01, "Bayes accuracy = {bayes}");
    }

    #[test]
    fn schema_matches_spec() {
        let s = schema();
        assert_eq!(s.fields().len(), 19);
        assert!(s.field(3).is_nullable() && !s.field(2).is_nullable());
        assert_eq!(s.field(16).name(), "cat");
        assert_eq!(
            s.field(17).data_type(),
            &DataType::Timestamp(TimeUnit::Microsecond, None)
        );
        assert_eq!(s.field(18).data_type(), &DataType::Int8);
    }
}
