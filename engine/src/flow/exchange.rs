//! Moving rows between workers: by key (every row with the same key lands on the same worker) or
//! round-robin.

use std::sync::Arc;

use arrow::array::{RecordBatch, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::row::{RowConverter, SortField};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::core::OkErr;
use timely::dataflow::operators::generic::operator::Operator;
use timely::progress::Timestamp;

use super::Flow;

type Routed = Result<(u64, Batch), DeadLetter>;
use crate::batch::{Batch, DeadLetter};

/// FNV-1a, 64 bit: a stable hash (the same on every process and every run).
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A stable hash of each row's values in the `keys` columns (the same on every process and run).
/// `what` names the keys in errors (e.g. "exchange key").
pub fn hash_rows(batch: &RecordBatch, keys: &[String], what: &str) -> Result<Vec<u64>, String> {
    let schema = batch.schema();
    let mut columns = Vec::with_capacity(keys.len());
    let mut fields = Vec::with_capacity(keys.len());
    for key in keys {
        let idx = schema.index_of(key).map_err(|_| {
            format!(
                "{what} column '{key}' is not in the batch (columns: {})",
                crate::error::list(schema.fields().iter().map(|f| f.name().clone()))
            )
        })?;
        columns.push(Arc::clone(batch.column(idx)));
        fields.push(SortField::new(schema.field(idx).data_type().clone()));
    }
    let converter = RowConverter::new(fields).map_err(|e| e.to_string())?;
    let rows = converter
        .convert_columns(&columns)
        .map_err(|e| e.to_string())?;
    Ok(rows.iter().map(|row| stable_hash(row.as_ref())).collect())
}

/// Splits `batch` into one batch per target worker by the hash of `keys`' values.
pub fn partition_by_key(
    batch: &RecordBatch,
    keys: &[String],
    parts: usize,
) -> Result<Vec<(usize, RecordBatch)>, String> {
    let hashes = hash_rows(batch, keys, "exchange key")?;
    let mut indices: Vec<Vec<u32>> = vec![Vec::new(); parts];
    for (i, h) in hashes.iter().enumerate() {
        let target = (h % parts as u64) as usize;
        indices[target].push(i as u32);
    }
    let mut out = Vec::new();
    for (target, idx) in indices.into_iter().enumerate() {
        if idx.is_empty() {
            continue;
        }
        let taken = take_record_batch(batch, &UInt32Array::from(idx)).map_err(|e| e.to_string())?;
        out.push((target, taken));
    }
    Ok(out)
}

impl<'scope, T: Timestamp> Flow<'scope, T> {
    /// Repartitions rows so that all rows with equal values in `keys` go to the same worker.
    pub fn exchange_by(self, name: &str, keys: &[&str]) -> Flow<'scope, T> {
        let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        let ctx = self.ctx.clone();
        let peers = ctx.worker().peers;
        let split_name = format!("{name}/split");
        let op = name.to_string();
        let split_stats = ctx.stats(&split_name);
        let (routed, dead) = self
            .stream
            .unary::<CapacityContainerBuilder<Vec<Routed>>, _, _, _>(
                Pipeline,
                &split_name,
                move |_, _| {
                    move |input, output| {
                        input.for_each(|cap, data| {
                            let mut session = output.session(&cap);
                            for batch in data.drain(..) {
                                split_stats.record_in(batch.num_rows());
                                match partition_by_key(&batch.data, &keys, peers) {
                                    Ok(parts) => {
                                        for (target, data) in parts {
                                            split_stats.record_out(data.num_rows());
                                            let origin = batch.origin.clone();
                                            session
                                                .give(Ok((target as u64, Batch { data, origin })));
                                        }
                                    }
                                    Err(reason) => {
                                        split_stats.record_dead(batch.num_rows());
                                        session.give(Err(DeadLetter {
                                            operator: op.clone(),
                                            reason,
                                            origin: batch.origin.as_ref().map(|o| o.to_string()),
                                            record: None,
                                            rows: batch.num_rows() as u64,
                                        }));
                                    }
                                }
                            }
                        });
                    }
                },
            )
            .ok_err::<Vec<(u64, Batch)>, _, Vec<DeadLetter>, _, _>(|r| r);
        ctx.add_dead_letters(dead);
        let stats = ctx.stats(name);
        let stream = routed.unary::<CapacityContainerBuilder<Vec<Batch>>, _, _, _>(
            Exchange::new(|(target, _): &(u64, Batch)| *target),
            name,
            move |_, _| {
                move |input, output| {
                    input.for_each(|cap, data| {
                        let mut session = output.session(&cap);
                        for (_, batch) in data.drain(..) {
                            stats.record_in(batch.num_rows());
                            stats.record_out(batch.num_rows());
                            session.give(batch);
                        }
                    });
                }
            },
        );
        Flow::from_stream(stream, ctx)
    }

    /// Spreads batches evenly over the workers, round-robin.
    pub fn rebalance(self, name: &str) -> Flow<'scope, T> {
        let peers = self.ctx.worker().peers as u64;
        let mut next = self.ctx.worker().index as u64;
        self.operator(
            name,
            Exchange::new(move |_batch: &Batch| {
                next = next.wrapping_add(1);
                next % peers
            }),
            |batch, emit| emit.batch(batch),
        )
    }
}
