//! A loop node: a job's steps in lock-step across workers, run by timely inside a dataflow.
//!
//! ```text
//!            ┌──────────── feedback (+1 round) ◀── broadcast ◀──┐
//!            ▼                                                  │
//!   every worker's messages of round r ──▶ step node ── this worker's message of round r+1
//! ```
//!
//! The step node holds a capability at its current round. The job's `body`, an `async` block,
//! runs until it asks to exchange a message ([`Rounds::all_gather`]); the node sends it at the
//! round, it is broadcast along the loop's edge and comes back to every worker's node one round
//! later. Once timely's frontier says no worker can still send anything for the round, the node
//! hands the body every worker's message in worker order. The worker thread steps timely and
//! polls the body whenever the node has delivered a round (or the body waits on a condition,
//! [`Rounds::until`], checked again after each step), so a body may borrow the job's state: the
//! model, its rows, its hooks. A round costs what a [`Collective`](crate::Collective)'s does.
//!
//! Like a [`Collective`](crate::Collective), every sum made from the messages is the same on
//! every worker (worker order, [`sum_in_worker_order`]), and a worker that fails or ends early is
//! named by the others' next exchange.

use std::cell::RefCell;
use std::future::{Future, poll_fn};
use std::pin::pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use timely::ExchangeData;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::{ConnectLoop, Feedback};
use timely::scheduling::Activator;
use timely::worker::Worker;

use crate::cluster::WorkerContext;
use crate::{Error, Result};

/// A message of round `.0` from worker `.1`.
type Message<D> = (u64, usize, D);

/// What the body and the step node share.
struct Exchange<D> {
    name: String,
    peers: usize,
    index: usize,
    /// The round of the next message this worker sends.
    round: u64,
    /// The body's message for `round`, until the node sends it.
    outgoing: Option<D>,
    /// Every worker's message of the last round, until the body takes them.
    gathered: Option<Vec<(usize, D)>>,
    /// The node sent this worker's message and waits for the round to complete.
    waiting: bool,
    /// The body waits on a condition: poll it again after the next step.
    respin: bool,
    /// The body returned: the node drops its capability and the loop's dataflow ends.
    done: bool,
    /// Schedules the step node (to send the body's message, or to end).
    activator: Option<Activator>,
}

/// The body's end of the loop: exchanges with the other workers, one round at a time.
pub struct Rounds<D> {
    shared: Rc<RefCell<Exchange<D>>>,
}

impl<D: ExchangeData + Clone> Rounds<D> {
    /// Sends `value` as this worker's message of the next round and returns every worker's
    /// message of it, in worker order.
    pub async fn all_gather(&self, value: D) -> Result<Vec<D>> {
        self.shared.borrow_mut().outgoing = Some(value);
        let mut got = poll_fn(|_| match self.shared.borrow_mut().gathered.take() {
            Some(got) => Poll::Ready(got),
            None => Poll::Pending,
        })
        .await;
        let s = self.shared.borrow();
        if got.len() != s.peers {
            let missing: Vec<usize> = (0..s.peers)
                .filter(|w| !got.iter().any(|(i, _)| i == w))
                .collect();
            return Err(Error::Startup(format!(
                "step loop '{}' round {}: no message from worker(s) {} of {}: they failed or exited (see the error of the process running them)",
                s.name,
                s.round - 1,
                crate::error::list(&missing),
                s.peers
            )));
        }
        got.sort_by_key(|(i, _)| *i);
        Ok(got.into_iter().map(|(_, d)| d).collect())
    }

    /// Waits until `ready()` holds, checking again at each step of the worker (while another
    /// dataflow of the worker, which the condition watches, makes progress).
    pub async fn until(&self, mut ready: impl FnMut() -> bool) {
        poll_fn(|_| {
            if ready() {
                Poll::Ready(())
            } else {
                self.shared.borrow_mut().respin = true;
                Poll::Pending
            }
        })
        .await
    }

    /// Rounds completed so far.
    pub fn rounds(&self) -> u64 {
        let s = self.shared.borrow();
        s.round - u64::from(s.waiting)
    }
}

/// Runs `body` with the step node of a loop dataflow named `name` on this worker, stepping the
/// worker until it returns; its output. Every worker must call this at the same point of its
/// dataflows, with a body that makes the same exchanges.
pub fn run_rounds<D, Out, F, Fut>(
    worker: &mut Worker,
    ctx: &WorkerContext,
    name: &str,
    body: F,
) -> Result<Out>
where
    D: ExchangeData + Clone,
    F: FnOnce(Rounds<D>) -> Fut,
    Fut: Future<Output = Out>,
{
    let shared = Rc::new(RefCell::new(Exchange {
        name: name.to_string(),
        peers: ctx.peers,
        index: ctx.index,
        round: 0,
        outgoing: None,
        gathered: None,
        waiting: false,
        respin: false,
        done: false,
        activator: None,
    }));
    step_node(worker, name, Rc::clone(&shared));
    let mut running = pin!(body(Rounds {
        shared: Rc::clone(&shared),
    }));
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(out) = running.as_mut().poll(&mut cx) {
            let mut s = shared.borrow_mut();
            s.done = true;
            if let Some(activator) = &s.activator {
                activator.activate();
            }
            return Ok(out);
        }
        let respin = {
            let mut s = shared.borrow_mut();
            if s.outgoing.is_some()
                && let Some(activator) = &s.activator
            {
                activator.activate();
            }
            std::mem::take(&mut s.respin)
        };
        // Step until the node delivers the round the body waits for (once, for a condition).
        let mut stepped = false;
        while !stepped || (!respin && shared.borrow().gathered.is_none()) {
            if ctx.aborted() {
                return Err(Error::Aborted);
            }
            worker.step_or_park(Some(std::time::Duration::from_millis(1)));
            stepped = true;
        }
    }
}

/// Builds the loop dataflow whose step node sends the body's messages and gathers each round.
fn step_node<D: ExchangeData + Clone>(
    worker: &mut Worker,
    name: &str,
    shared: Rc<RefCell<Exchange<D>>>,
) {
    worker.dataflow_named::<u64, _, _>(name, move |scope| {
        let (handle, cycle) = scope.feedback::<Vec<Message<D>>>(1);
        cycle
            .unary_frontier::<CapacityContainerBuilder<Vec<Message<D>>>, _, _, _>(
                Pipeline,
                name,
                move |capability, info| {
                    shared.borrow_mut().activator = Some(scope.activator_for(info.address));
                    let mut capability = Some(capability);
                    let mut stash: Vec<Message<D>> = Vec::new();
                    move |(input, frontier), output| {
                        input.for_each_stamp(|_, data| {
                            stash.extend(data.flat_map(|d| d.drain(..)));
                        });
                        let mut s = shared.borrow_mut();
                        if s.done {
                            capability = None;
                            return;
                        }
                        let Some(cap) = capability.as_mut() else {
                            return;
                        };
                        if let Some(message) = s.outgoing.take() {
                            output.session(&*cap).give((s.round, s.index, message));
                            s.round += 1;
                            cap.downgrade(&s.round);
                            s.waiting = true;
                        }
                        // Round r's messages travel at r + 1: the frontier passing r + 1 means
                        // every worker's is in.
                        if s.waiting && !frontier.less_equal(&s.round) {
                            let round = s.round - 1;
                            let (now, later): (Vec<_>, Vec<_>) =
                                stash.drain(..).partition(|(r, _, _)| *r == round);
                            stash = later;
                            s.gathered = Some(now.into_iter().map(|(_, w, d)| (w, d)).collect());
                            s.waiting = false;
                        }
                    }
                },
            )
            .broadcast()
            .connect_loop(handle);
    });
}

/// The element-wise sum of every worker's vector, added in worker order: the same bits on every
/// worker. Errors when a worker's vector has another length.
pub fn sum_in_worker_order(name: &dyn std::fmt::Display, parts: &[Vec<f32>]) -> Result<Vec<f32>> {
    let len = parts.first().map_or(0, Vec::len);
    let mut sum = vec![0f32; len];
    for (w, part) in parts.iter().enumerate() {
        if part.len() != len {
            return Err(Error::Startup(format!(
                "{name}: worker {w} sent {} values, expected {len}",
                part.len()
            )));
        }
        for (s, v) in sum.iter_mut().zip(part) {
            *s += v;
        }
    }
    Ok(sum)
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;
    use crate::cluster::{ClusterConfig, execute};
    use crate::metrics::MetricsRegistry;

    #[test]
    fn rounds_gather_in_worker_order_and_sum_alike_on_every_worker() {
        let out = execute::<_, Error, _>(
            &ClusterConfig::local(3),
            MetricsRegistry::new(),
            |w, ctx| {
                let index = ctx.index;
                // Worker 1 waits for a condition that holds only after a few of its steps.
                let polls = Rc::new(Cell::new(0u32));
                let seen = Rc::clone(&polls);
                run_rounds(
                    w,
                    &ctx,
                    "test/rounds",
                    move |rounds: Rounds<Vec<f32>>| async move {
                        let mut sums = Vec::new();
                        for round in 0..40u32 {
                            if index == 1 && round == 7 {
                                rounds
                                    .until(|| {
                                        seen.set(seen.get() + 1);
                                        seen.get() > 5
                                    })
                                    .await;
                            }
                            let mine = vec![
                                index as f32 + round as f32 * 0.1,
                                1.0 / (index as f32 + 3.0),
                            ];
                            let all = rounds.all_gather(mine).await?;
                            assert_eq!(all.len(), 3);
                            assert!((all[2][1] - 0.2).abs() < 1e-6, "worker order");
                            let mut sum = vec![0f32; 2];
                            for part in &all {
                                for (s, v) in sum.iter_mut().zip(part) {
                                    *s += v;
                                }
                            }
                            sums.push(sum);
                        }
                        assert_eq!(rounds.rounds(), 40);
                        Ok::<_, Error>(sums)
                    },
                )?
            },
        )
        .unwrap();
        for sums in &out {
            assert_eq!(sums, &out[0], "every worker sums the same bits");
        }
        assert!((out[0][0][0] - 3.0).abs() < 1e-6);
        assert!((out[0][39][0] - (3.0 + 3.0 * 3.9)).abs() < 1e-4);
    }

    #[test]
    fn a_body_may_borrow_the_state_it_steps() {
        let out = execute::<_, Error, _>(
            &ClusterConfig::local(2),
            MetricsRegistry::new(),
            |w, ctx| {
                // A model the body updates in place and hands back by reference.
                let mut model = vec![0.0f32; 3];
                let steps = run_rounds(w, &ctx, "test/borrow", |rounds: Rounds<Vec<f32>>| {
                    let model = &mut model;
                    let index = ctx.index;
                    async move {
                        for step in 0..10 {
                            let grad = vec![(index + 1) as f32 * step as f32; 3];
                            let all = rounds.all_gather(grad).await?;
                            let sum = sum_in_worker_order(&"test", &all)?;
                            for (m, g) in model.iter_mut().zip(&sum) {
                                *m -= 0.5 * g;
                            }
                        }
                        Ok::<_, Error>(rounds.rounds())
                    }
                })??;
                Ok((steps, model))
            },
        )
        .unwrap();
        // Σ_step 0.5 · (1 + 2) · step over steps 0..10 = 67.5, on both workers.
        for (steps, model) in &out {
            assert_eq!(*steps, 10);
            assert_eq!(model, &vec![-67.5f32; 3]);
        }
    }

    #[test]
    fn a_worker_that_stops_early_is_named_by_the_others() {
        let err = execute::<_, Error, _>(
            &ClusterConfig::local(2),
            MetricsRegistry::new(),
            |w, ctx| {
                let index = ctx.index;
                run_rounds(
                    w,
                    &ctx,
                    "test/early",
                    move |rounds: Rounds<u64>| async move {
                        let last = if index == 1 { 2 } else { 5 };
                        for round in 0..last {
                            rounds.all_gather(round).await?;
                        }
                        Ok::<_, Error>(())
                    },
                )?
            },
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("no message from worker(s) 1 of 2"),
            "{err}"
        );
    }
}
