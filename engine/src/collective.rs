//! Collective operations (all-gather, all-reduce) between workers, carried by a timely dataflow.
//!
//! Every worker contributes one value per round; the values are broadcast through timely's exchange
//! channels, and a round is complete when timely's progress tracking says every worker's contribution
//! for it has arrived (the probe passes the round). Results are ordered by worker index, so a sum
//! computed from them is bit-identical on every worker.

use std::cell::RefCell;
use std::rc::Rc;

use timely::ExchangeData;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::{Input, Inspect, Probe};
use timely::dataflow::{InputHandle, ProbeHandle};
use timely::worker::Worker;

use crate::cluster::WorkerContext;
use crate::{Error, Result};

/// Values tagged with (round, worker).
type RoundInput<D> = InputHandle<u64, CapacityContainerBuilder<Vec<(u64, usize, D)>>>;

/// One worker's end of a collective channel for values of type `D`.
pub struct Collective<D: ExchangeData + Clone> {
    input: Option<RoundInput<D>>,
    probe: ProbeHandle<u64>,
    received: Rc<RefCell<Vec<(u64, usize, D)>>>,
    round: u64,
    name: String,
}

impl<D: ExchangeData + Clone> Collective<D> {
    /// Builds the collective's dataflow on `worker`. Every worker must call this, in the same order
    /// relative to its other dataflows.
    pub fn new(worker: &mut Worker, name: &str) -> Self {
        let received = Rc::new(RefCell::new(Vec::new()));
        let sink = Rc::clone(&received);
        let mut input = InputHandle::new();
        let probe = ProbeHandle::new();
        worker.dataflow_named::<u64, _, _>(name, |scope| {
            scope
                .input_from(&mut input)
                .container::<Vec<(u64, usize, D)>>()
                .broadcast()
                .inspect(move |x: &(u64, usize, D)| sink.borrow_mut().push(x.clone()))
                .probe_with(&probe);
        });
        Collective {
            input: Some(input),
            probe,
            received,
            round: 0,
            name: name.to_string(),
        }
    }

    /// Contributes `value` and returns every worker's contribution to this round, in worker order.
    pub fn all_gather(
        &mut self,
        worker: &mut Worker,
        ctx: &WorkerContext,
        value: D,
    ) -> Result<Vec<D>> {
        let input = self.input.as_mut().ok_or(Error::Aborted)?;
        // A faster worker may already have sent its contribution to the next round: tag each value
        // with its round and keep the others for later.
        let this_round = self.round;
        input.send((this_round, ctx.index, value));
        self.round += 1;
        input.advance_to(self.round);
        let probe = self.probe.clone();
        let round = self.round;
        ctx.step_while(worker, || probe.less_than(&round))?;
        let mut got = Vec::with_capacity(ctx.peers);
        {
            let mut received = self.received.borrow_mut();
            let (now, later): (Vec<_>, Vec<_>) =
                received.drain(..).partition(|(r, _, _)| *r == this_round);
            *received = later;
            got.extend(now.into_iter().map(|(_, i, d)| (i, d)));
        }
        if got.len() != ctx.peers {
            let missing: Vec<usize> = (0..ctx.peers)
                .filter(|w| !got.iter().any(|(i, _)| i == w))
                .collect();
            return Err(Error::Startup(format!(
                "collective '{}' round {}: no contribution from worker(s) {} of {}: they failed or exited (see the error of the process running them)",
                self.name,
                self.round,
                crate::error::list(&missing),
                ctx.peers
            )));
        }
        got.sort_by_key(|(i, _)| *i);
        Ok(got.into_iter().map(|(_, d)| d).collect())
    }

    /// Closes this worker's input, letting the collective's dataflow finish.
    pub fn close(&mut self) {
        self.input = None;
    }
}

impl Collective<Vec<f32>> {
    /// Element-wise sum of every worker's vector, added in worker order (bit-identical everywhere).
    pub fn all_reduce_sum(
        &mut self,
        worker: &mut Worker,
        ctx: &WorkerContext,
        values: Vec<f32>,
    ) -> Result<Vec<f32>> {
        if ctx.peers == 1 {
            return Ok(values);
        }
        let parts = self.all_gather(worker, ctx, values)?;
        crate::rounds::sum_in_worker_order(&format_args!("collective '{}'", self.name), &parts)
    }
}

impl Collective<Vec<f64>> {
    /// Element-wise sum of every worker's vector of f64 (counts, loss sums), in worker order.
    pub fn all_reduce_sum_f64(
        &mut self,
        worker: &mut Worker,
        ctx: &WorkerContext,
        values: Vec<f64>,
    ) -> Result<Vec<f64>> {
        let len = values.len();
        let parts = self.all_gather(worker, ctx, values)?;
        let mut sum = vec![0f64; len];
        for part in &parts {
            for (s, v) in sum.iter_mut().zip(part) {
                *s += v;
            }
        }
        Ok(sum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{ClusterConfig, execute};
    use crate::metrics::MetricsRegistry;

    #[test]
    fn all_reduce_is_identical_on_every_worker() {
        let out = execute::<_, Error, _>(
            &ClusterConfig::local(3),
            MetricsRegistry::new(),
            |w, ctx| {
                let mut c = Collective::<Vec<f32>>::new(w, "grads");
                let mut sums = Vec::new();
                for round in 0..50u32 {
                    let mine = vec![
                        ctx.index as f32 + round as f32 * 0.1,
                        1.0 / (ctx.index as f32 + 3.0),
                    ];
                    sums.push(c.all_reduce_sum(w, &ctx, mine)?);
                }
                let gathered = {
                    let mut g = Collective::<String>::new(w, "names");
                    g.all_gather(w, &ctx, format!("w{}", ctx.index))?
                };
                Ok((sums, gathered))
            },
        )
        .unwrap();
        for (sums, gathered) in &out {
            assert_eq!(sums, &out[0].0, "replicas must see bit-identical sums");
            assert_eq!(gathered, &vec!["w0".to_string(), "w1".into(), "w2".into()]);
        }
        let s = &out[0].0;
        assert!((s[0][0] - 3.0).abs() < 1e-6);
        assert!((s[49][0] - (3.0 + 3.0 * 4.9)).abs() < 1e-4);
    }
}
