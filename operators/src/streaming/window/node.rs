//! Event-time windows as a node of a [`Flow`]: for graphs built with the Flow API (a Parquet or
//! Kafka source, then windows, then a sink), on the engine's stateful operator.
//!
//! ```text
//!   flow ── exchange by key (unkeyed: to worker 0) ──▶ <name>: a Windower per worker ──▶ window rows
//!                                                         └── late rows ──▶ dead letters
//! ```
//!
//! The flow's time is its watermark in epoch milliseconds: once every batch of time `t` is in,
//! the windows ending at or before `t` are emitted at `t`; when the input ends, every window still
//! open is. A flow whose batches all come at one time (a Parquet source's) therefore gets every
//! window once its input is read. Each key's rows meet on one worker, so no partial aggregate
//! needs merging; a row whose every window was already emitted (or without an event time) is a
//! dead letter under the node's name, as `late` says.

use arrow::datatypes::SchemaRef;
use millrace_engine::timely::dataflow::channels::pact::{
    Exchange, ParallelizationContract, Pipeline,
};
use millrace_engine::{Batch, DeadLetter, Emit, Flow, row_to_json};

use super::{LatePolicy, WindowResult, WindowSpec, Windower};
use crate::Result;

/// Event-time windows on a flow whose time is its watermark in epoch ms (see the module docs).
pub trait WindowFlow<'scope>: Sized {
    /// The windows `spec` describes over batches of `schema`, as a node named `name`; its rows
    /// are [`Windower::output_schema`]'s. Fails before any work when `spec` does not fit `schema`.
    fn event_time_windows(
        self,
        name: &str,
        spec: WindowSpec,
        schema: SchemaRef,
    ) -> Result<Flow<'scope, u64>>;
}

impl<'scope> WindowFlow<'scope> for Flow<'scope, u64> {
    fn event_time_windows(
        self,
        name: &str,
        spec: WindowSpec,
        schema: SchemaRef,
    ) -> Result<Flow<'scope, u64>> {
        let windower = Windower::new(spec.clone(), schema)?;
        Ok(match &spec.key {
            Some(key) => {
                let keyed = self.exchange_by(&format!("{name}/by-key"), &[key.as_str()]);
                windows(keyed, name, Pipeline, windower)
            }
            // One worker holds every unkeyed window.
            None => windows(self, name, Exchange::new(|_: &Batch| 0), windower),
        })
    }
}

fn windows<'scope, P>(
    flow: Flow<'scope, u64>,
    name: &str,
    pact: P,
    windower: Windower,
) -> Flow<'scope, u64>
where
    P: ParallelizationContract<u64, Vec<Batch>>,
{
    let (on_batch_name, on_complete_name) = (name.to_string(), name.to_string());
    flow.stateful(
        name,
        pact,
        windower,
        move |windower, _, batch, emit| push(windower, &on_batch_name, batch, emit),
        move |windower, time, emit| {
            let closed = match emit.input_ended() {
                true => windower.flush_all(),
                false => windower.close(i64::try_from(*time).unwrap_or(i64::MAX)),
            };
            let out = closed.and_then(|results| rows(windower, &results));
            match out {
                Ok(Some(batch)) => emit.batch(batch),
                Ok(None) => {}
                Err(e) => emit.dead(DeadLetter {
                    operator: on_complete_name.clone(),
                    reason: format!("the windows closed at {time} could not be emitted: {e}"),
                    origin: None,
                    record: None,
                    rows: 0,
                }),
            }
        },
    )
}

/// Adds `batch`'s rows to their windows; its late and unusable rows are dead letters.
fn push(windower: &mut Windower, name: &str, batch: Batch, emit: &mut Emit) {
    let origin = batch.origin.as_deref().map(str::to_string);
    let pushed = match windower.push(&batch.data) {
        Ok(pushed) => pushed,
        Err(e) => {
            return emit.dead(DeadLetter {
                operator: name.to_string(),
                reason: e.to_string(),
                origin,
                record: None,
                rows: batch.num_rows() as u64,
            });
        }
    };
    let Some(late) = pushed
        .late
        .filter(|_| windower.spec().late == LatePolicy::DeadLetter)
    else {
        return;
    };
    for row in 0..late.num_rows() {
        emit.dead(DeadLetter {
            operator: name.to_string(),
            reason: format!(
                "no window is open for its event time in '{}' (late: every window it falls in was emitted, or no event time)",
                windower.spec().time_column
            ),
            origin: origin.clone(),
            record: row_to_json(&late, row),
            rows: 1,
        });
    }
}

/// The rows of `results` (None when there are none).
fn rows(windower: &Windower, results: &[WindowResult]) -> Result<Option<Batch>> {
    if results.is_empty() {
        return Ok(None);
    }
    Ok(Some(Batch::new(windower.to_batch(results)?)))
}
