//! A Parquet source: this worker's share of the dataset's row groups, decoding only the needed columns.

use millrace_connectors::parquet::{ParquetDataset, ScanOptions, ScanUnit};
use millrace_engine::timely::dataflow::Scope;
use millrace_engine::timely::progress::Timestamp;
use millrace_engine::{Batch, DeadLetter, Flow, FlowContext};

/// A source over `units` (this worker's part of [`ParquetDataset::plan`](millrace_connectors::parquet::ParquetDataset::plan)).
///
/// A row group that cannot be decoded is sent to the dead-letter output (with its file and row
/// group) and the source goes on with the next one.
pub fn parquet_source<'scope, T: Timestamp>(
    scope: Scope<'scope, T>,
    ctx: &FlowContext<'scope, T>,
    name: &str,
    dataset: ParquetDataset,
    units: Vec<ScanUnit>,
    options: ScanOptions,
) -> Flow<'scope, T> {
    let op = name.to_string();
    let items = units.into_iter().flat_map(move |unit| {
        let op = op.clone();
        let rows = unit.rows;
        let file = unit.file.display().to_string();
        let batches: Box<dyn Iterator<Item = Result<Batch, DeadLetter>>> =
            match dataset.read_unit(&unit, &options) {
                Ok(iter) => Box::new(iter.map(move |item| match item {
                    Ok((origin, data)) => Ok(Batch::with_origin(
                        data,
                        format!("{} row group {}", origin.file.display(), origin.row_group),
                    )),
                    Err(e) => Err(DeadLetter {
                        operator: op.clone(),
                        reason: e.to_string(),
                        origin: None,
                        record: None,
                        rows: 0,
                    }),
                })),
                Err(e) => Box::new(std::iter::once(Err(DeadLetter {
                    operator: op.clone(),
                    reason: e.to_string(),
                    origin: Some(file),
                    record: None,
                    rows,
                }))),
            };
        batches
    });
    Flow::source(scope, ctx, name, items)
}
