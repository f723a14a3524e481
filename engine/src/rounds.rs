//! A loop node: a job's steps in lock-step across workers, run by timely inside a dataflow.
//!
//! ```text
//!            ┌──────────── feedback (+1 round) ◀── broadcast ◀──┐
//!            ▼                                                  │
//!   every worker's messages of round r ──▶ step node ── this worker's message of round r+1
//! ```
//!
//! The step node holds a capability at its current round and runs the job's `body`, an `async`
//! block, until it asks to exchange a message ([`Rounds::all_gather`]): the message goes out at
//! the round, is broadcast along the loop's edge, and comes back to every worker's node one round
//! later. Once timely's frontier says no worker can still send anything for the round, the node
//! hands the body every worker's message in worker order and runs it on to its next exchange.
//! Nothing outside the dataflow drives the steps: the worker thread only steps timely until the
//! body has returned. A body that waits on another dataflow ([`Rounds::until`]) is scheduled
//! again at the worker's next step while the condition does not hold.
//!
//! Like a [`Collective`](crate::Collective), every sum made from the messages is the same on
//! every worker (worker order), and a worker that fails or ends early is named by the others'
//! next exchange.

use std::cell::RefCell;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use timely::ExchangeData;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::{ConnectLoop, Feedback};
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
    /// The body waits on a condition: schedule the node again at the next step.
    respin: bool,
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

/// Runs `body` as the step node of a loop dataflow named `name` on this worker and steps the
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
    Out: 'static,
    F: FnOnce(Rounds<D>) -> Fut,
    Fut: Future<Output = Out> + 'static,
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
    }));
    let mut future: Option<Pin<Box<dyn Future<Output = Out>>>> = Some(Box::pin(body(Rounds {
        shared: Rc::clone(&shared),
    })));
    let result: Rc<RefCell<Option<Out>>> = Rc::new(RefCell::new(None));
    let out = Rc::clone(&result);
    worker.dataflow_named::<u64, _, _>(name, move |scope| {
        let (handle, cycle) = scope.feedback::<Vec<Message<D>>>(1);
        cycle
            .unary_frontier::<CapacityContainerBuilder<Vec<Message<D>>>, _, _, _>(
                Pipeline,
                name,
                move |capability, info| {
                    let activator = scope.activator_for(info.address);
                    activator.activate();
                    let mut capability = Some(capability);
                    let mut stash: Vec<Message<D>> = Vec::new();
                    move |(input, frontier), output| {
                        input.for_each_stamp(|_, data| {
                            stash.extend(data.flat_map(|d| d.drain(..)));
                        });
                        let Some(running) = future.as_mut() else {
                            return;
                        };
                        {
                            let mut s = shared.borrow_mut();
                            // Round r's messages travel at r + 1: the frontier passing r + 1
                            // means every worker's is in.
                            let round = s.round.saturating_sub(1);
                            if s.waiting {
                                if frontier.less_equal(&s.round) {
                                    return;
                                }
                                let (now, later): (Vec<_>, Vec<_>) =
                                    stash.drain(..).partition(|(r, _, _)| *r == round);
                                stash = later;
                                s.gathered =
                                    Some(now.into_iter().map(|(_, w, d)| (w, d)).collect());
                                s.waiting = false;
                            }
                        }
                        let mut cx = Context::from_waker(Waker::noop());
                        match running.as_mut().poll(&mut cx) {
                            Poll::Ready(done) => {
                                *out.borrow_mut() = Some(done);
                                future = None;
                                capability = None;
                            }
                            Poll::Pending => {
                                let mut s = shared.borrow_mut();
                                if let Some(message) = s.outgoing.take() {
                                    let cap = capability.as_mut().expect("held while running");
                                    output.session(&*cap).give((s.round, s.index, message));
                                    s.round += 1;
                                    cap.downgrade(&s.round);
                                    s.waiting = true;
                                } else if std::mem::take(&mut s.respin) {
                                    activator.activate();
                                }
                            }
                        }
                    }
                },
            )
            .broadcast()
            .connect_loop(handle);
    });
    let done = Rc::clone(&result);
    ctx.step_while(worker, || done.borrow().is_none())?;
    result
        .borrow_mut()
        .take()
        .ok_or_else(|| Error::Startup(format!("step loop '{name}' ended without a result")))
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
