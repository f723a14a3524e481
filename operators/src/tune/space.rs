//! The search space: domains, random and grid draws, and a draw applied to `[train]`.

use std::collections::BTreeMap;

use millrace_ml::rng::Rng;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::spec::TrainSpec;
use crate::{Error, Result};

/// The values one key may take.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum Domain {
    /// One of these values (any TOML value: a number, a string, a list).
    Choice(Vec<Value>),
    /// A float drawn uniformly from `[lo, hi)`.
    Uniform([f64; 2]),
    /// A float whose logarithm is uniform over `[ln lo, ln hi)` (`0 < lo < hi`).
    Loguniform([f64; 2]),
    /// An integer drawn uniformly from `lo..=hi`.
    Int([i64; 2]),
}

impl Domain {
    /// Checks the domain is not empty.
    pub(super) fn check(&self, key: &str) -> Result<()> {
        let bad = |what: String| Err(Error::config(format!("tune.space.{key}"), what));
        match self {
            Domain::Choice(v) if v.is_empty() => {
                bad("choice is empty: list at least one value".into())
            }
            Domain::Uniform([lo, hi]) if lo >= hi || !lo.is_finite() || !hi.is_finite() => bad(
                format!("uniform [{lo}, {hi}] is empty: the first bound must be below the second"),
            ),
            Domain::Loguniform([lo, hi]) if !(*lo > 0.0 && lo < hi && hi.is_finite()) => bad(
                format!("loguniform [{lo}, {hi}] needs 0 < lo < hi (a logarithm is drawn)"),
            ),
            Domain::Int([lo, hi]) if lo > hi => bad(format!(
                "int [{lo}, {hi}] is empty: the first bound must not exceed the second"
            )),
            _ => Ok(()),
        }
    }

    fn draw(&self, rng: &mut Rng) -> Value {
        match self {
            Domain::Choice(v) => v[rng.below(v.len() as u64) as usize].clone(),
            Domain::Uniform([lo, hi]) => Value::from(lo + (hi - lo) * rng.next_f64()),
            Domain::Loguniform([lo, hi]) => {
                Value::from((lo.ln() + (hi.ln() - lo.ln()) * rng.next_f64()).exp())
            }
            Domain::Int([lo, hi]) => {
                let span = (hi - lo) as u64 + 1;
                Value::from(lo + rng.below(span) as i64)
            }
        }
    }
}

/// The path inside `[train]` of a space key: `train.model.hidden` → `["model", "hidden"]`.
pub(super) fn train_path(key: &str) -> Result<Vec<&str>> {
    match key.split('.').collect::<Vec<_>>().split_first() {
        Some((&"train", rest)) if !rest.is_empty() && rest.iter().all(|p| !p.is_empty()) => {
            Ok(rest.to_vec())
        }
        _ => Err(Error::config(
            format!("tune.space.{key}"),
            "tune searches [train] keys (\"train.lr\", \"train.model.hidden\", …): every trial \
             trains on the rows read and preprocessed once, so keys that change the data cannot \
             differ between trials; run a separate job for them",
        )),
    }
}

/// `n` independent draws, each key from its own stream of the seeded generator.
pub(super) fn random(
    space: &BTreeMap<String, Domain>,
    n: usize,
    seed: u64,
) -> Vec<BTreeMap<String, Value>> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| {
            space
                .iter()
                .map(|(key, domain)| (key.clone(), domain.draw(&mut rng)))
                .collect()
        })
        .collect()
}

/// Every combination of the space's `choice` domains, the last key varying fastest.
pub(super) fn grid(space: &BTreeMap<String, Domain>) -> Result<Vec<BTreeMap<String, Value>>> {
    let mut out = vec![BTreeMap::new()];
    for (key, domain) in space {
        let Domain::Choice(values) = domain else {
            return Err(Error::config(
                format!("tune.space.{key}"),
                "a grid search takes `choice` domains only (a range has no grid); list the \
                 values, or use search = \"random\"",
            ));
        };
        out = out
            .into_iter()
            .flat_map(|config| {
                values.iter().map(move |v| {
                    let mut c = config.clone();
                    c.insert(key.clone(), v.clone());
                    c
                })
            })
            .collect();
    }
    Ok(out)
}

/// `[train]` (as JSON) with `config`'s values set, read back and checked as the file would be.
/// A table the pipeline leaves at its default (`train.lr_schedule`) is made for the key; a
/// table that is not one of `[train]`'s is then an unknown field of the trial.
pub(super) fn apply(base: &Value, config: &BTreeMap<String, Value>) -> Result<TrainSpec> {
    let mut train = base.clone();
    for (key, value) in config {
        let path = train_path(key)?;
        let (last, tables) = path.split_last().expect("train_path is not empty");
        let mut table = &mut train;
        for part in tables {
            table = table
                .as_object_mut()
                .map(|t| {
                    t.entry(*part)
                        .or_insert_with(|| Value::Object(Default::default()))
                })
                .filter(|v| v.is_object())
                .ok_or_else(|| {
                    Error::config(
                        format!("tune.space.{key}"),
                        format!("[train] '{part}' is not a table to set '{last}' in"),
                    )
                })?;
        }
        table
            .as_object_mut()
            .ok_or_else(|| Error::Internal("[train] is not a table".into()))?
            .insert((*last).to_owned(), value.clone());
    }
    let spec: TrainSpec = serde_json::from_value(train).map_err(|e| {
        let keys: Vec<&str> = config.keys().map(String::as_str).collect();
        Error::config(
            format!("tune.space.{}", keys.join(", ")),
            format!("a trial's [train] does not apply: {e}"),
        )
    })?;
    // A searched lr can fall below a fixed min_lr: the schedule is checked per trial.
    spec.lr_schedule.validate("train.lr_schedule", spec.lr)?;
    spec.validate_device()?;
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space() -> BTreeMap<String, Domain> {
        BTreeMap::from([
            ("train.lr".to_string(), Domain::Loguniform([1e-4, 1e-1])),
            (
                "train.model.hidden".to_string(),
                Domain::Choice(vec![
                    serde_json::json!([16]),
                    serde_json::json!([64, 64]),
                    serde_json::json!([128, 64]),
                ]),
            ),
            ("train.batch_size".to_string(), Domain::Int([64, 66])),
        ])
    }

    #[test]
    fn a_key_in_a_table_left_at_its_default_is_searched() {
        // The pipeline names no lr_schedule: the trial's table is made for the key.
        let base = serde_json::json!({"model": {"kind": "mlp", "hidden": [8]}, "lr": 0.01});
        let set = |key: &str, value: Value| BTreeMap::from([(key.to_string(), value)]);
        let spec = apply(&base, &set("train.lr_schedule.kind", "cosine".into())).unwrap();
        assert_eq!(spec.lr_schedule.kind, millrace_ml::optim::Decay::Cosine);
        assert_eq!(spec.lr, 0.01);
        // A table [train] does not have is an unknown field, and a value is not a table.
        let err = apply(&base, &set("train.modle.hidden", serde_json::json!([4])));
        assert!(
            err.unwrap_err()
                .to_string()
                .contains("unknown field `modle`")
        );
        let err = apply(&base, &set("train.lr.kind", "cosine".into()));
        assert!(err.unwrap_err().to_string().contains("'lr' is not a table"));
        // A trial whose lr falls below the pipeline's min_lr is refused before work.
        let floor = serde_json::json!({"model": {"kind": "mlp", "hidden": [8]}, "lr": 0.01,
            "lr_schedule": {"kind": "cosine", "min_lr": 0.001}});
        assert!(apply(&floor, &set("train.lr", 0.005.into())).is_ok());
        let err = apply(&floor, &set("train.lr", 0.0005.into())).unwrap_err();
        assert!(
            err.to_string().contains("0.001 is above lr (0.0005)"),
            "{err}"
        );
    }

    #[test]
    fn random_draws_cover_each_domain_evenly() {
        let draws = random(&space(), 3000, 7);
        let mut counts = BTreeMap::<String, usize>::new();
        for d in &draws {
            *counts
                .entry(d["train.model.hidden"].to_string())
                .or_default() += 1;
            *counts.entry(d["train.batch_size"].to_string()).or_default() += 1;
            let lr = d["train.lr"].as_f64().unwrap();
            assert!((1e-4..1e-1).contains(&lr), "{lr}");
        }
        for (value, n) in &counts {
            assert!(
                (900..1100).contains(n),
                "{value} drawn {n} times of 3000: {counts:?}"
            );
        }
        // Log-uniform: half the draws below the geometric middle, 10^-2.5.
        let below = draws
            .iter()
            .filter(|d| d["train.lr"].as_f64().unwrap() < 10f64.powf(-2.5))
            .count();
        assert!((1400..1600).contains(&below), "{below}");
        // The same seed draws the same trials.
        assert_eq!(random(&space(), 5, 7), draws[..5].to_vec());
    }
}
