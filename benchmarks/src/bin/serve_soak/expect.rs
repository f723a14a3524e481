//! The answers a version must give: each sample row's probabilities under model A and model B,
//! predicted in process (the bundle's SQL, its fitted preprocessing and its predictor, without the
//! server), and the rule that tells which of the two a version number is.

use arrow::array::RecordBatch;
use millrace::ml::bundle::{ModelBundle, Predictor};
use millrace::operators::preprocess::{SqlPlan, SqlRunner};
use serde_json::Value;

/// Two probabilities agree when they differ by at most this much (the server batches rows
/// differently from the in-process call, which moves the last float bits).
const TOLERANCE: f32 = 1e-4;

/// The expected answers.
pub struct Expected {
    /// Per model (A, B), per row, the class probabilities.
    probabilities: [Vec<Vec<f32>>; 2],
    /// The version model A was first published as; versions alternate A, B, A, … from it.
    first_version: u64,
    gap: f32,
}

/// What checking one answer found.
pub enum Verdict {
    /// The answer is the prediction of the version that answered, which is model A (0) or B (1).
    Right(usize),
    /// It is not; why.
    Wrong(String),
}

/// Each row's class probabilities under `bundle`, computed in process.
pub fn predict_in_process(
    bundle: &ModelBundle,
    rows: &RecordBatch,
) -> anyhow::Result<Vec<Vec<f32>>> {
    let sql = SqlPlan::plan(
        bundle.meta.transform_sql.as_deref(),
        &rows.schema(),
        &bundle.preprocess.required_columns(false),
    )?;
    let prepared = SqlRunner::new(sql)?
        .apply(rows.clone())
        .map_err(anyhow::Error::msg)?;
    anyhow::ensure!(
        prepared.num_rows() == rows.num_rows(),
        "the model's SQL drops some sample rows ({} of {} kept)",
        prepared.num_rows(),
        rows.num_rows()
    );
    let features = bundle.preprocess.transform(&prepared, false)?;
    let flat = Predictor::new(bundle)?.predict(&features.x, features.rows)?;
    let width = flat.len() / rows.num_rows().max(1);
    anyhow::ensure!(
        width >= 2,
        "the soak needs a classifier (got {width} outputs per row)"
    );
    Ok(flat.chunks(width).map(<[f32]>::to_vec).collect())
}

fn close(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= TOLERANCE)
}

fn floats(value: &Value) -> Option<Vec<f32>> {
    value
        .as_array()?
        .iter()
        .map(|v| v.as_f64().map(|x| x as f32))
        .collect()
}

impl Expected {
    /// The answers of models `a` and `b` on `rows`, with A first published as `first_version`.
    /// Fails when the two models agree on some row too closely to tell them apart.
    pub fn new(a: Vec<Vec<f32>>, b: Vec<Vec<f32>>, first_version: u64) -> anyhow::Result<Self> {
        let gap = a
            .iter()
            .zip(&b)
            .map(|(x, y)| {
                x.iter()
                    .zip(y)
                    .map(|(p, q)| (p - q).abs())
                    .fold(0.0f32, f32::max)
            })
            .fold(f32::INFINITY, f32::min);
        anyhow::ensure!(
            gap > 10.0 * TOLERANCE,
            "the two model versions predict some row alike (largest difference {gap:e}): a wrong version could pass for the right one"
        );
        Ok(Expected {
            probabilities: [a, b],
            first_version,
            gap,
        })
    }

    /// The smallest difference between the two models on any row (the largest per-class gap
    /// of that row): how far apart a right and a wrong answer are at the least.
    pub fn gap(&self) -> f32 {
        self.gap
    }

    fn check(&self, version: Option<u64>, got: Option<Vec<f32>>, row: usize) -> Verdict {
        let Some(version) = version else {
            return Verdict::Wrong("the answer names no model version".into());
        };
        if version < self.first_version {
            return Verdict::Wrong(format!("version {version} was never published"));
        }
        let model = ((version - self.first_version) % 2) as usize;
        let Some(got) = got else {
            return Verdict::Wrong("no probabilities in the answer".into());
        };
        let want = &self.probabilities[model][row];
        if close(&got, want) {
            Verdict::Right(model)
        } else {
            let other = &self.probabilities[1 - model][row];
            let hint = if close(&got, other) {
                " (the other version's prediction)"
            } else {
                ""
            };
            Verdict::Wrong(format!(
                "version {version} answered {got:?}, its prediction is {want:?}{hint}"
            ))
        }
    }

    /// Checks a `/v1/predict` answer for one row.
    pub fn check_v1(&self, body: &Value, row: usize) -> Verdict {
        let version = body["version"].as_u64();
        let predictions = body["predictions"].as_array();
        if predictions.is_none_or(|p| p.len() != 1) {
            return Verdict::Wrong(format!("not one prediction: {body}"));
        }
        self.check(
            version,
            floats(&body["predictions"][0]["probabilities"]),
            row,
        )
    }

    /// Checks a v2 `infer` answer for one row.
    pub fn check_v2(&self, body: &Value, row: usize) -> Verdict {
        let version = body["model_version"]
            .as_str()
            .and_then(|v| v.parse::<u64>().ok());
        let probabilities = body["outputs"].as_array().and_then(|outputs| {
            outputs
                .iter()
                .find(|o| o["name"] == "probabilities")
                .and_then(|o| floats(&o["data"]))
        });
        self.check(version, probabilities, row)
    }
}
