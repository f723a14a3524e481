//! Starting timely workers: threads in one process now, processes over TCP with the same code.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use timely::communication::initialize::Config as CommunicationConfig;
use timely::worker::Worker;

use crate::error::panic_message;
use crate::metrics::MetricsRegistry;
use crate::{Error, Result};

/// Where the workers of a run live: `workers` threads in each of `processes` processes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    /// Worker threads per process.
    pub workers: usize,
    /// Number of processes.
    pub processes: usize,
    /// This process's index, `0..processes`.
    pub process_id: usize,
    /// `host:port` of every process, in process order (empty for a single process).
    pub hosts: Vec<String>,
}

impl ClusterConfig {
    /// `workers` threads in this process only.
    pub fn local(workers: usize) -> Self {
        ClusterConfig {
            workers,
            processes: 1,
            process_id: 0,
            hosts: Vec::new(),
        }
    }

    /// Total number of workers across all processes.
    pub fn total_workers(&self) -> usize {
        self.workers * self.processes
    }

    /// Checks the configuration, with messages that say what to change.
    pub fn validate(&self) -> Result<()> {
        if self.workers == 0 {
            return Err(Error::Config("--workers must be at least 1".into()));
        }
        if self.processes == 0 {
            return Err(Error::Config("--processes must be at least 1".into()));
        }
        if self.process_id >= self.processes {
            return Err(Error::Config(format!(
                "--process-id {} is out of range for {} processes (use 0..{})",
                self.process_id, self.processes, self.processes
            )));
        }
        if self.processes > 1 && self.hosts.len() != self.processes {
            return Err(Error::Config(format!(
                "{} processes need {} host:port entries in the hosts file, found {}",
                self.processes,
                self.processes,
                self.hosts.len()
            )));
        }
        Ok(())
    }

    fn timely_config(&self) -> Result<timely::Config> {
        self.validate()?;
        let communication = if self.processes > 1 {
            CommunicationConfig::Cluster {
                threads: self.workers,
                process: self.process_id,
                addresses: self.hosts.clone(),
                report: false,
                zerocopy: false,
            }
        } else if self.workers == 1 {
            CommunicationConfig::Thread
        } else {
            CommunicationConfig::Process(self.workers)
        };
        Ok(timely::Config {
            communication,
            worker: timely::WorkerConfig::default(),
        })
    }
}

/// What a worker knows about its run besides the timely worker itself.
#[derive(Clone, Debug)]
pub struct WorkerContext {
    /// This worker's global index.
    pub index: usize,
    /// Total number of workers.
    pub peers: usize,
    /// The process-wide operator metrics.
    pub metrics: Arc<MetricsRegistry>,
    abort: Arc<AtomicBool>,
}

impl WorkerContext {
    /// A context for tests or single-threaded use.
    pub fn standalone(index: usize, peers: usize) -> Self {
        WorkerContext {
            index,
            peers,
            metrics: MetricsRegistry::new(),
            abort: Arc::new(AtomicBool::new(false)),
        }
    }

    /// True once any worker in this process has failed; loops that wait on other workers must stop.
    pub fn aborted(&self) -> bool {
        self.abort.load(Ordering::Relaxed)
    }

    /// Tells every other worker in this process to stop waiting.
    pub fn abort(&self) {
        self.abort.store(true, Ordering::Relaxed);
    }

    /// Steps `worker` while `condition` holds, returning [`Error::Aborted`] if another worker failed.
    pub fn step_while(
        &self,
        worker: &mut Worker,
        mut condition: impl FnMut() -> bool,
    ) -> Result<()> {
        while condition() {
            if self.aborted() {
                return Err(Error::Aborted);
            }
            worker.step();
        }
        Ok(())
    }
}

/// Runs `work` on every worker of `config` and returns each local worker's result, in worker order.
///
/// If a worker returns an error, the others are told to stop (see [`WorkerContext::aborted`]) and the
/// first real error (not an [`Error::Aborted`] echo) is returned.
pub fn execute<R, E, F>(
    config: &ClusterConfig,
    metrics: Arc<MetricsRegistry>,
    work: F,
) -> Result<Vec<R>, E>
where
    R: Send + 'static,
    E: From<Error> + Send + 'static + AbortedError,
    F: Fn(&mut Worker, WorkerContext) -> Result<R, E> + Send + Sync + 'static,
{
    let timely_config = config.timely_config()?;
    let abort = Arc::new(AtomicBool::new(false));
    let guards = timely::execute(timely_config, move |worker| {
        let ctx = WorkerContext {
            index: worker.index(),
            peers: worker.peers(),
            metrics: Arc::clone(&metrics),
            abort: Arc::clone(&abort),
        };
        let result =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(worker, ctx.clone())));
        match result {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => {
                ctx.abort();
                Err(e)
            }
            Err(payload) => {
                ctx.abort();
                Err(E::from(Error::WorkerPanic {
                    worker: ctx.index,
                    message: panic_message(payload.as_ref()),
                }))
            }
        }
    })
    .map_err(|e| E::from(Error::Startup(e)))?;

    let mut results = Vec::new();
    let mut first_error: Option<E> = None;
    for (i, joined) in guards.join().into_iter().enumerate() {
        match joined {
            Ok(Ok(r)) => results.push(r),
            Ok(Err(e)) => {
                let replace = match &first_error {
                    None => true,
                    Some(prev) => prev.is_aborted() && !e.is_aborted(),
                };
                if replace {
                    first_error = Some(e);
                }
            }
            Err(message) => {
                if first_error.as_ref().is_none_or(|e| e.is_aborted()) {
                    first_error = Some(E::from(Error::WorkerPanic { worker: i, message }));
                }
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(results),
    }
}

/// Lets [`execute`] prefer a worker's own error over the "stopped because another worker failed" echoes.
pub trait AbortedError {
    /// True if this error only says another worker failed.
    fn is_aborted(&self) -> bool;
}

impl AbortedError for Error {
    fn is_aborted(&self) -> bool {
        matches!(self, Error::Aborted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_every_worker_and_orders_results() {
        let out = execute::<_, Error, _>(
            &ClusterConfig::local(3),
            MetricsRegistry::new(),
            |_w, ctx| Ok((ctx.index, ctx.peers)),
        )
        .unwrap();
        assert_eq!(out, vec![(0, 3), (1, 3), (2, 3)]);
    }

    #[test]
    fn a_failing_worker_fails_the_run_with_its_own_error() {
        let err = execute::<(), Error, _>(
            &ClusterConfig::local(2),
            MetricsRegistry::new(),
            |w, ctx| {
                if ctx.index == 1 {
                    return Err(Error::Config("worker one is unhappy".into()));
                }
                // Worker 0 waits forever for a condition that never holds; the abort releases it.
                ctx.step_while(w, || true)
            },
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid cluster configuration: worker one is unhappy"
        );
    }

    #[test]
    fn bad_configs_say_what_to_change() {
        let mut c = ClusterConfig::local(0);
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("--workers must be at least 1")
        );
        c = ClusterConfig {
            workers: 1,
            processes: 2,
            process_id: 0,
            hosts: vec!["a:1".into()],
        };
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("need 2 host:port entries")
        );
    }
}
