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
//!
//! The step node has a second output: what the body [emits](Rounds::emit) (a model version, say),
//! stamped with the round it was emitted in, for the nodes [`run_rounds_into`] builds downstream
//! of it in the same dataflow (a publish node). The loop ends once they have taken all of it.
//!
//! ```text
//!   step node ── emitted items (round r) ──▶ downstream nodes (publish, …)
//! ```

use std::cell::RefCell;
use std::future::{Future, poll_fn};
use std::pin::pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use timely::ExchangeData;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::{ConnectLoop, Feedback};
use timely::dataflow::{ProbeHandle, Scope, Stream};
use timely::scheduling::Activator;
use timely::worker::Worker;

use crate::cluster::WorkerContext;
use crate::{Error, Result};

/// A message of round `.0` from worker `.1`.
type Message<D> = (u64, usize, D);

/// What the body and the step node share.
struct Exchange<D, E> {
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
    /// What the body emitted for the nodes downstream, until the node sends it.
    emitted: Vec<E>,
    /// The body returned: the node drops its capabilities and the loop's dataflow ends.
    done: bool,
    /// Schedules the step node (to send the body's message, or to end).
    activator: Option<Activator>,
}

/// The body's end of the loop: exchanges with the other workers, one round at a time, and
/// emits items of type `E` to the nodes downstream of the step node.
pub struct Rounds<D, E = ()> {
    shared: Rc<RefCell<Exchange<D, E>>>,
}

impl<D: ExchangeData + Clone, E> Rounds<D, E> {
    /// Sends `item` to the nodes downstream of the step node on this worker, stamped with the
    /// current round. Items reach them in the order they were emitted.
    pub fn emit(&self, item: E) {
        self.shared.borrow_mut().emitted.push(item);
    }

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
    let build: Nodes<'_, (), ()> = Box::new(|_, _| ((), None));
    run_loop(worker, ctx, name, false, build, |rounds, ()| body(rounds))
}

/// Builds the nodes downstream of a step node on the stream of what its body emits, and returns
/// the probe that says when they have taken all of it.
pub type Downstream<E> = Box<dyn for<'s> FnOnce(Stream<'s, u64, Vec<E>>) -> ProbeHandle<u64>>;

/// [`run_rounds`] with nodes downstream of the step node, built by `downstream` in the loop's
/// dataflow on the stream of what the body [emits](Rounds::emit). Returns once the body has
/// returned and those nodes have taken everything it emitted.
pub fn run_rounds_into<D, E, Out, F, Fut>(
    worker: &mut Worker,
    ctx: &WorkerContext,
    name: &str,
    downstream: Downstream<E>,
    body: F,
) -> Result<Out>
where
    D: ExchangeData + Clone,
    E: 'static,
    F: FnOnce(Rounds<D, E>) -> Fut,
    Fut: Future<Output = Out>,
{
    let build: Nodes<'_, E, ()> = Box::new(|_, emitted| ((), Some(downstream(emitted))));
    run_loop(worker, ctx, name, true, build, |rounds, ()| body(rounds))
}

/// [`run_rounds`] with other nodes in the loop's dataflow, built by `upstream` before the step
/// node (an ingest, say): the body gets what `upstream` returns (their probes and outputs) and
/// waits for them with [`Rounds::until`]. The job's nodes are then one dataflow.
pub fn run_rounds_with<D, X, Out, F, Fut>(
    worker: &mut Worker,
    ctx: &WorkerContext,
    name: &str,
    upstream: impl for<'s> FnOnce(Scope<'s, u64>) -> X,
    body: F,
) -> Result<Out>
where
    D: ExchangeData + Clone,
    F: FnOnce(Rounds<D>, X) -> Fut,
    Fut: Future<Output = Out>,
{
    let build: Nodes<'_, (), X> = Box::new(|scope, _| (upstream(scope), None));
    run_loop(worker, ctx, name, false, build, body)
}

/// Builds the nodes of a loop's dataflow besides the step node, given the stream of what the body
/// emits: what they give the body, and the probe of those downstream of the step node.
type Nodes<'a, E, X> = Box<
    dyn for<'s> FnOnce(Scope<'s, u64>, Stream<'s, u64, Vec<E>>) -> (X, Option<ProbeHandle<u64>>)
        + 'a,
>;

/// Builds the loop's dataflow (`build`: the nodes besides the step node, what they give the
/// body, and the probe of those downstream) and runs `body` on the step node.
fn run_loop<D, E, X, Out, F, Fut>(
    worker: &mut Worker,
    ctx: &WorkerContext,
    name: &str,
    emits: bool,
    build: Nodes<'_, E, X>,
    body: F,
) -> Result<Out>
where
    D: ExchangeData + Clone,
    E: 'static,
    F: FnOnce(Rounds<D, E>, X) -> Fut,
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
        emitted: Vec::new(),
        done: false,
        activator: None,
    }));
    let (nodes, taken) = step_node(worker, name, Rc::clone(&shared), emits, build);
    let mut running = pin!(body(
        Rounds {
            shared: Rc::clone(&shared),
        },
        nodes
    ));
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(out) = running.as_mut().poll(&mut cx) {
            {
                let mut s = shared.borrow_mut();
                s.done = true;
                if let Some(activator) = &s.activator {
                    activator.activate();
                }
            }
            // The nodes downstream take what the body emitted last.
            if let Some(probe) = taken {
                ctx.step_while(worker, || !probe.done())?;
            }
            return Ok(out);
        }
        let respin = {
            let mut s = shared.borrow_mut();
            if (s.outgoing.is_some() || !s.emitted.is_empty())
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

/// Builds the loop dataflow whose step node sends the body's messages and gathers each round,
/// and the other nodes `build` makes (given the stream of what the body emits).
fn step_node<D, E, X>(
    worker: &mut Worker,
    name: &str,
    shared: Rc<RefCell<Exchange<D, E>>>,
    emits: bool,
    build: Nodes<'_, E, X>,
) -> (X, Option<ProbeHandle<u64>>)
where
    D: ExchangeData + Clone,
    E: 'static,
{
    worker.dataflow_named::<u64, _, _>(name, move |scope| {
        let (handle, cycle) = scope.feedback::<Vec<Message<D>>>(1);
        let mut builder = OperatorBuilder::new(name.to_owned(), scope);
        shared.borrow_mut().activator = Some(scope.activator_for(builder.operator_info().address));
        let mut input = builder.new_input(cycle, Pipeline);
        let (sent, messages) = builder.new_output::<Vec<Message<D>>>();
        let (items, emitted) = builder.new_output::<Vec<E>>();
        let (mut sent, mut items) = (OutputBuilder::from(sent), OutputBuilder::from(items));
        builder.build(move |mut capabilities| {
            // The emitted items' capability, moved to the round of each item (none without a
            // node downstream); then the messages'.
            let mut item_cap = capabilities.pop().filter(|_| emits);
            let mut capability = capabilities.pop();
            let mut stash: Vec<Message<D>> = Vec::new();
            move |frontiers| {
                input.for_each_stamp(|_, data| {
                    stash.extend(data.flat_map(|d| d.drain(..)));
                });
                let mut s = shared.borrow_mut();
                if let Some(cap) = item_cap.as_mut().filter(|_| !s.emitted.is_empty()) {
                    cap.downgrade(&s.round);
                    let mut session = items.activate();
                    let mut session = session.session(&*cap);
                    for item in s.emitted.drain(..) {
                        session.give(item);
                    }
                }
                if s.done {
                    capability = None;
                    item_cap = None;
                    return;
                }
                let Some(cap) = capability.as_mut() else {
                    return;
                };
                if let Some(message) = s.outgoing.take() {
                    sent.activate()
                        .session(&*cap)
                        .give((s.round, s.index, message));
                    s.round += 1;
                    cap.downgrade(&s.round);
                    s.waiting = true;
                }
                // Round r's messages travel at r + 1: the frontier passing r + 1 means
                // every worker's is in.
                if s.waiting && !frontiers[0].less_equal(&s.round) {
                    let round = s.round - 1;
                    let (now, later): (Vec<_>, Vec<_>) =
                        stash.drain(..).partition(|(r, _, _)| *r == round);
                    stash = later;
                    s.gathered = Some(now.into_iter().map(|(_, w, d)| (w, d)).collect());
                    s.waiting = false;
                }
            }
        });
        messages.broadcast().connect_loop(handle);
        build(scope, emitted)
    })
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
    fn emitted_items_reach_the_nodes_downstream_before_the_loop_returns() {
        use timely::dataflow::operators::Probe;
        use timely::dataflow::operators::generic::Operator;
        let out = execute::<_, Error, _>(
            &ClusterConfig::local(2),
            MetricsRegistry::new(),
            |w, ctx| {
                // What the node downstream saw: (round, item), on this worker.
                let seen = Rc::new(RefCell::new(Vec::<(u64, String)>::new()));
                let sink = Rc::clone(&seen);
                let downstream: Downstream<String> = Box::new(move |stream| {
                    let (probe, stream) = stream.probe();
                    stream.sink(Pipeline, "test/seen", move |(input, _)| {
                        input.for_each_stamp(|cap, data| {
                            for items in data {
                                for item in items.drain(..) {
                                    sink.borrow_mut().push((*cap.least().unwrap(), item));
                                }
                            }
                        })
                    });
                    probe
                });
                let index = ctx.index;
                let steps = run_rounds_into(
                    w,
                    &ctx,
                    "test/emit",
                    downstream,
                    |rounds: Rounds<u64, String>| async move {
                        for step in 0..6u64 {
                            rounds.all_gather(step).await?;
                            if index == 0 && step % 2 == 1 {
                                rounds.emit(format!("version {step}"));
                            }
                        }
                        // Emitted as the body ends: still taken before the loop returns.
                        rounds.emit(format!("last of worker {index}"));
                        Ok::<_, Error>(rounds.rounds())
                    },
                )??;
                Ok((steps, seen.take()))
            },
        )
        .unwrap();
        let at = |r: u64, s: &str| (r, s.to_string());
        assert_eq!(out[0].0, 6);
        assert_eq!(
            out[0].1,
            vec![
                at(2, "version 1"),
                at(4, "version 3"),
                at(6, "version 5"),
                at(6, "last of worker 0")
            ]
        );
        assert_eq!(out[1].1, vec![at(6, "last of worker 1")]);
    }

    #[test]
    fn nodes_built_upstream_run_in_the_loops_dataflow_and_the_body_waits_for_them() {
        use timely::dataflow::operators::generic::Operator;
        use timely::dataflow::operators::{Probe, ToStream};
        let out = execute::<_, Error, _>(
            &ClusterConfig::local(2),
            MetricsRegistry::new(),
            |w, ctx| {
                let index = ctx.index as u64;
                let sum = run_rounds_with(
                    w,
                    &ctx,
                    "test/upstream",
                    |scope| {
                        // This worker's numbers, read by a node of the same dataflow.
                        let read = Rc::new(RefCell::new(Vec::new()));
                        let sink = Rc::clone(&read);
                        let (probe, stream) = (0..100u64)
                            .map(move |i| i * 2 + index)
                            .to_stream(scope)
                            .probe();
                        stream.sink(Pipeline, "test/read", move |(input, _)| {
                            input.for_each(|_, data| sink.borrow_mut().append(data))
                        });
                        (probe, read)
                    },
                    |rounds: Rounds<u64>, (probe, read)| async move {
                        rounds.until(|| probe.done()).await;
                        let mine: u64 = read.borrow().iter().sum();
                        let all = rounds.all_gather(mine).await?;
                        Ok::<_, Error>(all.iter().sum::<u64>())
                    },
                )??;
                Ok(sum)
            },
        )
        .unwrap();
        // Σ 0..200: both workers' numbers, on each.
        assert_eq!(out, vec![(0..200u64).sum::<u64>(); 2]);
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
