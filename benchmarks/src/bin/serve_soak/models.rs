//! The two model versions the soak alternates (trained once into the scratch directory) and the
//! request bodies.

use std::path::Path;

use arrow::array::RecordBatch;
use millrace::ml::bundle::ModelBundle;
use millrace_benchmarks::bodies::{v1_body, v2_body};
use serde_json::{Value, json};

use crate::client::Bodies;

/// The pipeline of one version: a small MLP on 20,000 generated TABULAR rows.
fn pipeline(scratch: &Path, seed: u64, lr: f64) -> String {
    let train = scratch.join("train");
    format!(
        r#"name = "serve_soak_{seed}"

[ingest]
path = "{}"
generate = {{ rows = 20000, files = 1, seed = 0 }}

[preprocess]
sql = "SELECT * FROM input WHERE f3 IS NOT NULL"
standardize = ["f0", "f1", "f2", "f3", "f4", "f5", "f6", "f7", "f8", "f9", "f10", "f11", "f12", "f13", "f14", "f15"]
one_hot = ["cat"]
label = "label"

[train]
model = {{ kind = "mlp", hidden = [16], activation = "relu" }}
optimizer = {{ kind = "adam" }}
lr = {lr}
batch_size = 256
epochs = 1
seed = {seed}

[evaluate]
split = 0.1
"#,
        train.display()
    )
}

/// Models A and B, trained into `scratch/a` and `scratch/b` unless already there.
pub fn two_models(scratch: &Path) -> anyhow::Result<[ModelBundle; 2]> {
    let mut out = Vec::new();
    for (name, seed, lr) in [("a", 1, 0.01), ("b", 2, 0.003)] {
        let run_dir = scratch.join(name);
        let model = run_dir.join("model");
        if !model.join("model.json").exists() {
            let file = scratch.join(format!("{name}.toml"));
            std::fs::write(&file, pipeline(scratch, seed, lr))?;
            eprintln!(
                "serve_soak: training model {name} into {}",
                run_dir.display()
            );
            let _ = std::fs::remove_dir_all(&run_dir);
            millrace_benchmarks::run_pipeline(&file, &[], 1, &run_dir)?;
        }
        out.push(ModelBundle::load(&model)?);
    }
    let b = out.pop();
    let a = out.pop();
    match (a, b) {
        (Some(a), Some(b)) => Ok([a, b]),
        _ => anyhow::bail!("two models were not trained"),
    }
}

/// One row of `rows` as a body, for each row.
fn per_row(
    rows: &RecordBatch,
    body: fn(&RecordBatch) -> anyhow::Result<Value>,
) -> anyhow::Result<Vec<Vec<u8>>> {
    (0..rows.num_rows())
        .map(|r| Ok(serde_json::to_vec(&body(&rows.slice(r, 1))?)?))
        .collect()
}

/// The good bodies (one per row) and the bad ones, each with its path.
pub fn bodies(rows: &RecordBatch, model: &str) -> anyhow::Result<Bodies> {
    let v1 = per_row(rows, v1_body)?;
    let v2 = per_row(rows, v2_body)?;
    let infer = format!("/v2/models/{model}/infer");
    let mut wrong_type = v1_body(&rows.slice(0, 1))?;
    wrong_type["instances"][0]["f0"] = json!("not a number");
    let mut missing_input = v2_body(&rows.slice(0, 1))?;
    if let Some(inputs) = missing_input["inputs"].as_array_mut() {
        inputs.remove(0);
    }
    let mut bad_shape = v2_body(&rows.slice(0, 1))?;
    bad_shape["inputs"][0]["shape"] = json!([3]);
    let bad = vec![
        ("/v1/predict".to_string(), b"{\"instances\": [".to_vec()),
        ("/v1/predict".to_string(), serde_json::to_vec(&wrong_type)?),
        ("/v1/predict".to_string(), b"{\"instances\": [{}]}".to_vec()),
        (infer.clone(), b"not json at all".to_vec()),
        (infer.clone(), serde_json::to_vec(&missing_input)?),
        (infer, serde_json::to_vec(&bad_shape)?),
    ];
    Ok(Bodies {
        v1,
        v2,
        bad,
        model: model.to_string(),
    })
}
