//! Starting timely workers: threads in one process now, processes over TCP with the same code.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

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
    /// How long a process waits for every other process to connect before giving up.
    pub connect_timeout: Duration,
}

impl ClusterConfig {
    /// `workers` threads in this process only.
    pub fn local(workers: usize) -> Self {
        ClusterConfig {
            workers,
            processes: 1,
            process_id: 0,
            hosts: Vec::new(),
            connect_timeout: Duration::from_secs(120),
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
    ///
    /// With nothing to do, the worker parks until a message or an activation arrives (timely
    /// wakes it) or 1 ms passes (to look at the abort flag): a worker waiting for its peers
    /// leaves the cores to them and to the network threads instead of spinning.
    pub fn step_while(
        &self,
        worker: &mut Worker,
        mut condition: impl FnMut() -> bool,
    ) -> Result<()> {
        while condition() {
            if self.aborted() {
                return Err(Error::Aborted);
            }
            worker.step_or_park(Some(Duration::from_millis(1)));
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
    let cluster = config.processes > 1;
    let connected = Arc::new(AtomicBool::new(false));
    if cluster {
        crate::peers::watch_connections();
        crate::peers::deadline(
            Arc::clone(&connected),
            config.connect_timeout,
            format!(
                "process {} could not connect to all {} processes ({}) within {:.0} s: start every process with the same --processes and --hosts, and check that the ports are reachable",
                config.process_id,
                config.processes,
                config.hosts.join(", "),
                config.connect_timeout.as_secs_f64()
            ),
        );
    }
    let process_id = config.process_id;
    let first_worker = config.process_id * config.workers;
    let abort = Arc::new(AtomicBool::new(false));
    // Each worker leaves its result here as soon as its work ends: after that, timely still
    // steps the worker's dataflows, and joining its threads may panic when a connection broke.
    type Slots<R, E> = Arc<std::sync::Mutex<Vec<Option<Result<R, E>>>>>;
    let slots: Slots<R, E> = Arc::new(std::sync::Mutex::new(
        (0..config.workers).map(|_| None).collect(),
    ));
    let filled = Arc::clone(&slots);
    let guards = timely::execute(timely_config, move |worker| {
        let ctx = WorkerContext {
            index: worker.index(),
            peers: worker.peers(),
            metrics: Arc::clone(&metrics),
            abort: Arc::clone(&abort),
        };
        let result =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(worker, ctx.clone())));
        let result = match result {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => {
                ctx.abort();
                if cluster && !e.is_aborted() {
                    // Other processes may keep this one's dataflows open; do not wait for ever.
                    crate::peers::deadline(
                        Arc::new(AtomicBool::new(false)),
                        Duration::from_secs(30),
                        format!("process {process_id} failed and its peers did not stop within 30 s; exiting"),
                    );
                }
                Err(e)
            }
            Err(payload) => {
                ctx.abort();
                Err(E::from(Error::WorkerPanic {
                    worker: ctx.index,
                    message: panic_message(payload.as_ref()),
                }))
            }
        };
        let mut slots = filled.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = slots.get_mut(ctx.index - first_worker) {
            *slot = Some(result);
        }
    })
    .map_err(|e| E::from(Error::Startup(e)))?;
    connected.store(true, Ordering::Relaxed);

    // Joining re-raises the panics of timely's network threads when a connection broke; that
    // case is reported below as a lost process.
    let joined = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| guards.join()));
    if let Err(payload) = &joined
        && crate::peers::lost_process().is_none()
    {
        return Err(E::from(Error::Startup(format!(
            "timely's threads failed: {}",
            panic_message(payload.as_ref())
        ))));
    }
    let outcomes = std::mem::take(&mut *slots.lock().unwrap_or_else(|p| p.into_inner()));
    let mut results = Vec::new();
    let mut first_error: Option<E> = None;
    for (i, outcome) in outcomes.into_iter().enumerate() {
        let joined = outcome.ok_or_else(|| "the worker thread ended without a result".to_string());

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
                    first_error = Some(E::from(Error::WorkerPanic {
                        worker: first_worker + i,
                        message,
                    }));
                }
            }
        }
    }
    // A broken connection explains the workers' panics: name the lost process instead.
    if let (Some(_), Some((process, message))) = (&first_error, crate::peers::lost_process()) {
        return Err(E::from(Error::PeerLost {
            process,
            host: config.hosts.get(process).cloned().unwrap_or_default(),
            message,
        }));
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
            connect_timeout: Duration::from_secs(1),
        };
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("need 2 host:port entries")
        );
    }
}
