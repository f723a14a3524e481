//! Latency of one all-reduce round between worker threads of one process, through a
//! [`Collective`] driven by the worker's loop and through the step loop node
//! ([`run_rounds`]: the rounds of a timely feedback loop). Prints one JSON line.
//!
//! `cargo bench -p millrace-engine --bench collective` (`MILLRACE_BENCH_WORKERS`, default 2;
//! `MILLRACE_BENCH_PARAMS`, the values each worker sends, default the benchmark MLP's 5,890).
//! A data-parallel training step of a small model is ~0.3 ms of arithmetic, so a round's
//! latency is what decides whether a second core speeds training up.
#![allow(missing_docs)]

use std::time::Instant;

use millrace_engine::{
    ClusterConfig, Collective, Error, MetricsRegistry, Rounds, execute, run_rounds,
    sum_in_worker_order,
};

/// The gradient of the 24-64-64-2 MLP of the train_step benchmark.
const PARAMS: usize = 24 * 64 + 64 + 64 * 64 + 64 + 64 * 2 + 2;
const ROUNDS: usize = 20_000;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> Result<(), Error> {
    let workers = env_or("MILLRACE_BENCH_WORKERS", 2);
    let params = env_or("MILLRACE_BENCH_PARAMS", PARAMS);
    let micros = execute::<_, Error, _>(
        &ClusterConfig::local(workers),
        MetricsRegistry::new(),
        move |w, ctx| {
            let mut c = Collective::<Vec<f32>>::new(w, "grads");
            let mine = vec![ctx.index as f32; params];
            for _ in 0..200 {
                c.all_reduce_sum(w, &ctx, mine.clone())?;
            }
            let start = Instant::now();
            let mut check = 0f32;
            for _ in 0..ROUNDS {
                check += c.all_reduce_sum(w, &ctx, mine.clone())?[0];
            }
            let us = start.elapsed().as_secs_f64() * 1e6 / ROUNDS as f64;
            assert!(check > 0.0 || workers == 1);
            let index = ctx.index;
            let looped = run_rounds(
                w,
                &ctx,
                "grads/loop",
                move |rounds: Rounds<Vec<f32>>| async move {
                    let mine = vec![index as f32; params];
                    let mut start = Instant::now();
                    for round in 0..200 + ROUNDS {
                        if round == 200 {
                            start = Instant::now();
                        }
                        let all = rounds.all_gather(mine.clone()).await?;
                        std::hint::black_box(sum_in_worker_order(&"grads/loop", &all)?);
                    }
                    Ok::<_, Error>(start.elapsed().as_secs_f64() * 1e6 / ROUNDS as f64)
                },
            )??;
            Ok((us, looped))
        },
    )?;
    let worst = micros.iter().map(|m| m.0).fold(0.0, f64::max);
    let worst_loop = micros.iter().map(|m| m.1).fold(0.0, f64::max);
    println!(
        "{{\"bench\":\"collective\",\"workers\":{workers},\"params\":{params},\"rounds\":{ROUNDS},\"us_per_round\":{worst:.2},\"step_loop_us_per_round\":{worst_loop:.2}}}"
    );
    Ok(())
}
