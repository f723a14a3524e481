//! The quickstart pipeline written with the Rust DSL instead of a pipeline file.
//!
//!     cargo run --release --example dsl
//!
//! Generates a small dataset under data/dsl/ on first use, trains an MLP on 2 workers and prints
//! the holdout metrics.

use std::path::Path;

use millrace::prelude::*;

fn main() -> anyhow::Result<()> {
    let data = Path::new("data/dsl");
    if !data.join("train").exists() {
        millrace::data::generate_tabular(&data.join("train"), 100_000, 2, 1, false)?;
        millrace::data::generate_tabular(&data.join("holdout"), 20_000, 1, 2, true)?;
    }
    let report = Pipeline::new("dsl")
        .ingest_parquet(data.join("train"))
        .sql("SELECT * FROM input WHERE f3 IS NOT NULL")
        .standardize((0..16).map(|i| format!("f{i}")))
        .one_hot(["cat"])
        .label("label")
        .train(
            Train::mlp([64, 64])
                .adam()
                .lr(1e-3)
                .batch_size(512)
                .epochs(2)
                .seed(42),
        )
        .evaluate_on(data.join("holdout"))
        .workers(2)
        .run()?;
    let s = &report.summary;
    println!("run directory: {}", report.run_dir.display());
    println!(
        "rows read {}, trained {}, {:.0} rows/s end to end",
        s.rows_read, s.rows_trained, s.e2e_rows_per_s
    );
    println!("holdout: {}", serde_json::to_string(&s.eval)?);
    Ok(())
}
