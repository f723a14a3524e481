//! `millrace predict`: score a dataset with a trained model into a Parquet dataset.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use serde::de::DeserializeOwned;

use crate::connectors::parquet::{Compression, DatasetFormat};
use crate::operators::predict::{PredictPlan, PredictSpec, run};
use crate::operators::spec::OutputMode;

/// The flags of `millrace predict`.
#[derive(clap::Args)]
pub struct PredictArgs {
    /// A model directory written by a run (run/model, branches/NAME/model, best/model).
    #[arg(long)]
    model: PathBuf,
    /// The dataset to score: Parquet files, Spark output or a Delta table; a path or URL
    /// (s3://bucket/prefix, gs://…, az://…, file://…).
    #[arg(long)]
    input: String,
    /// Where the predictions go (a path or URL): Parquet part files and _SUCCESS, as Spark
    /// writes them.
    #[arg(long)]
    output: String,
    /// Worker threads.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Input columns to copy next to each prediction, comma-separated (e.g. id,region).
    #[arg(long, value_delimiter = ',')]
    columns: Vec<String>,
    /// Output columns to partition by (key=value directories), comma-separated.
    #[arg(long = "partition-by", value_delimiter = ',')]
    partition_by: Vec<String>,
    /// error (refuse a location that holds data) or overwrite (delete it first).
    #[arg(long, default_value = "error", value_parser = setting::<OutputMode>)]
    mode: OutputMode,
    /// auto (Delta when _delta_log/ exists), parquet or delta.
    #[arg(long, default_value = "auto", value_parser = setting::<DatasetFormat>)]
    format: DatasetFormat,
    /// Rows per batch read and scored.
    #[arg(long, default_value_t = 65_536)]
    batch_rows: usize,
    /// Compression of the part files: snappy, zstd, lz4 or none.
    #[arg(long, default_value = "snappy", value_parser = setting::<Compression>)]
    compression: Compression,
    /// Print the summary as one JSON line only.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    storage: super::StorageArgs,
}

/// A setting's value as the pipeline file spells it (`overwrite`, `delta`, `zstd`, …).
fn setting<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    serde_json::from_value(serde_json::Value::from(text)).map_err(|e| e.to_string())
}

/// Scores `args.input` with `args.model` into `args.output`; `started` is when the process
/// started (the rows/s a user sees).
pub fn predict(args: PredictArgs, started: Instant) -> anyhow::Result<()> {
    let spec = PredictSpec {
        model: args.model,
        input: args.input,
        format: args.format,
        output: args.output,
        columns: args.columns,
        partition_by: args.partition_by,
        mode: args.mode,
        workers: args.workers,
        batch_rows: args.batch_rows,
        compression: args.compression,
        storage: args.storage.options(),
    };
    let plan = PredictPlan::new(spec).context("predict")?;
    let progress = Arc::new(crate::progress::CliProgress::new());
    let summary = run(plan, progress, started).context("predict")?;
    if !args.json {
        eprintln!(
            "scored {} of {} rows with {} v{} in {:.2}s ({:.0} rows/s): {} part files in {}",
            summary.rows_written,
            summary.rows_read,
            summary.model,
            summary.version,
            summary.seconds,
            summary.rows_per_second,
            summary.files,
            summary.output
        );
        if let Some(url) = &summary.dead_letters {
            eprintln!(
                "{} rows could not be scored; each is in {url} with the reason",
                summary.dead_letter_rows
            );
        }
    }
    println!("{}", serde_json::to_string(&summary)?);
    Ok(())
}
