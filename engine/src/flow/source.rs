//! Sources: a flow that starts from an iterator of batches, pulled one at a time so a slow
//! consumer bounds memory.

use std::time::Instant;

use timely::dataflow::Scope;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::progress::Timestamp;

use super::{Flow, FlowContext};
use crate::batch::{Batch, DeadLetter};

impl<'scope, T: Timestamp> Flow<'scope, T> {
    /// A named source that emits the items of `items` (at the initial timestamp), one per
    /// scheduling, and closes when the iterator ends. `Err` items go to the dead-letter output.
    pub fn source<I>(
        scope: Scope<'scope, T>,
        ctx: &FlowContext<'scope, T>,
        name: &str,
        mut items: I,
    ) -> Flow<'scope, T>
    where
        I: Iterator<Item = Result<Batch, DeadLetter>> + 'static,
    {
        let stats = ctx.stats(name);
        let mut builder = OperatorBuilder::new(name.to_owned(), scope);
        let activator = scope.activator_for(builder.operator_info().address);
        let (output, stream) = builder.new_output();
        let (dead_output, dead_stream) = builder.new_output();
        let mut output = OutputBuilder::from(output);
        let mut dead_output = OutputBuilder::from(dead_output);

        builder.build(move |capabilities| {
            let mut capabilities = Some(capabilities);
            move |_frontiers| {
                let Some(caps) = capabilities.as_ref() else {
                    return;
                };
                let started = Instant::now();
                let next = items.next();
                stats.record_busy(started.elapsed());
                match next {
                    Some(Ok(batch)) => {
                        stats.record_out(batch.num_rows());
                        output.activate().session(&caps[0]).give(batch);
                        activator.activate();
                    }
                    Some(Err(letter)) => {
                        stats.record_dead(letter.rows as usize);
                        dead_output.activate().session(&caps[1]).give(letter);
                        activator.activate();
                    }
                    None => capabilities = None,
                }
            }
        });
        ctx.add_dead_letters(dead_stream);
        Flow {
            stream,
            ctx: ctx.clone(),
        }
    }
}
