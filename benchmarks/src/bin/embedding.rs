//! The embedding benchmark: `benchmarks/embedding.toml` (the TABULAR workload with 100,000
//! entities whose own effects enter the label) trained twice on the same data — `embedding_mlp`,
//! and the MLP with one-hot `cat` and the `index` code of `entity` as a number — and their
//! holdout log-loss compared. Prints one JSON line.
//!
//!     cargo run --release -p millrace-benchmarks --bin embedding -- [--workers N] [--assert]
//!
//! `--assert` fails unless `embedding_mlp`'s holdout log-loss is at least 5 % below the MLP's.

use anyhow::{Context, bail};
use millrace_benchmarks::run_pipeline;
use serde_json::json;

fn main() -> anyhow::Result<()> {
    let mut workers = 2;
    let mut assert = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--workers" => workers = args.next().context("--workers needs a number")?.parse()?,
            "--assert" => assert = true,
            other => bail!("unknown argument '{other}' (use --workers N, --assert)"),
        }
    }
    let pipeline = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("embedding.toml");
    let base = std::env::temp_dir().join(format!("millrace-bench-emb-{}", std::process::id()));
    let runs = [
        ("embedding_mlp", Vec::new()),
        (
            "mlp_one_hot_cat_index_entity",
            vec![
                "train.model={ kind = \"mlp\", hidden = [64, 64] }".to_owned(),
                "preprocess.one_hot=[\"cat\"]".to_owned(),
                "preprocess.index=[\"entity\"]".to_owned(),
            ],
        ),
    ];
    let mut results = serde_json::Map::new();
    for (name, overrides) in runs {
        let s = run_pipeline(&pipeline, &overrides, workers, &base.join(name))?;
        let eval = serde_json::to_value(&s.eval)?;
        results.insert(
            name.into(),
            json!({
                "log_loss": eval["log_loss"],
                "accuracy": eval["accuracy"],
                "roc_auc": eval["roc_auc"],
                "train_rows_per_s": s.train_rows_per_s.round(),
                "e2e_rows_per_s": s.e2e_rows_per_s.round(),
                "wall_s": s.wall_s,
                "peak_rss_mb": (s.peak_rss_bytes as f64 / 1048576.0).round(),
            }),
        );
    }
    let loss = |name: &str| results[name]["log_loss"].as_f64().unwrap_or(f64::NAN);
    let (emb, mlp) = (loss("embedding_mlp"), loss("mlp_one_hot_cat_index_entity"));
    let improvement = (mlp - emb) / mlp;
    println!(
        "{}",
        json!({"benchmark": "embedding", "workers": workers, "entities": 100_000,
               "runs": results, "log_loss_improvement": improvement})
    );
    std::fs::remove_dir_all(&base).ok();
    if assert && (improvement.is_nan() || improvement < 0.05) {
        bail!(
            "embedding_mlp's holdout log-loss {emb:.4} is not 5 % below the MLP's {mlp:.4} ({:.1} %)",
            improvement * 100.0
        );
    }
    Ok(())
}
