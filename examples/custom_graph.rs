//! A custom graph on the lower-level stream API: Parquet source → SQL → filter → exchange by key →
//! sink, on 2 workers, with the operators' metrics printed in Prometheus format.
//!
//!     cargo run --release --example custom_graph
//!
//! Counts rows per category after keeping only rows with f0 > -8, with every category's rows
//! brought to one worker by `exchange_by`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, BooleanArray, Float32Array, StringArray};
use millrace::connectors::parquet::{ParquetDataset, ScanOptions};
use millrace::engine::{ClusterConfig, Flow, FlowContext, MetricsRegistry, execute};
use millrace::operators::ingest::parquet_source;
use millrace::operators::preprocess::{SqlPlan, SqlRunner};

fn main() -> anyhow::Result<()> {
    let data = Path::new("data/custom_graph");
    if !data.exists() {
        millrace::data::generate_tabular(data, 50_000, 2, 3, false)?;
    }
    let dataset = ParquetDataset::open(data)?;
    let sql = SqlPlan::plan(
        Some("SELECT cat, f0 FROM input WHERE label = 1"),
        &dataset.schema(),
        &["cat".to_string(), "f0".to_string()],
    )?;
    let metrics = MetricsRegistry::new();
    let per_worker = execute::<_, millrace::operators::Error, _>(
        &ClusterConfig::local(2),
        Arc::clone(&metrics),
        move |worker, ctx| {
            let units = dataset.plan(ctx.peers).swap_remove(ctx.index);
            let options = ScanOptions {
                projection: Some(sql.input_columns.clone()),
                batch_size: 8192,
            };
            let runner = SqlRunner::new(sql.clone())?;
            let counts = std::rc::Rc::new(std::cell::RefCell::new(BTreeMap::<String, u64>::new()));
            let sink = std::rc::Rc::clone(&counts);
            let probe = worker.dataflow::<u64, _, _>(|scope| {
                let fc = FlowContext::new(ctx.clone());
                let flow: Flow<'_, u64> =
                    parquet_source(scope, &fc, "read", dataset.clone(), units, options);
                flow.map_batches("positives", move |b| runner.apply(b))
                    .filter("f0 > -8", |b| {
                        let f0 = b
                            .column(1)
                            .as_any()
                            .downcast_ref::<Float32Array>()
                            .ok_or("f0 is not float32")?;
                        Ok(f0
                            .iter()
                            .map(|v| v.map(|v| v > -8.0))
                            .collect::<BooleanArray>())
                    })
                    .exchange_by("by-cat", &["cat"])
                    .sink("count", move |batch| {
                        if let Some(cats) =
                            batch.data.column(0).as_any().downcast_ref::<StringArray>()
                        {
                            let mut counts = sink.borrow_mut();
                            for cat in cats.iter().flatten() {
                                *counts.entry(cat.to_string()).or_default() += 1;
                            }
                        }
                    })
            });
            ctx.step_while(worker, || !probe.done())?;
            let counts = counts.borrow().clone();
            Ok((ctx.index, counts))
        },
    )?;
    for (worker, counts) in &per_worker {
        println!("worker {worker}: {counts:?}");
    }
    print!("{}", metrics.to_prometheus());
    Ok(())
}
