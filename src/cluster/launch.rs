//! `millrace cluster`: every process of a cluster on this machine, on free loopback ports,
//! supervised. Each process's output is passed through with a `[pN]` prefix. When one process
//! fails, the others stop by themselves (they lose their connection to it and say so); any
//! still running after a grace period are killed. With restarts left, every process is started
//! again with `--resume`, so the run continues from its latest checkpoint.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::local_hosts;
use crate::{Error, Result};

/// What to start.
#[derive(Clone, Debug)]
pub struct Launch {
    /// The `millrace` executable.
    pub exe: PathBuf,
    /// The pipeline file.
    pub pipeline: PathBuf,
    /// Processes to start.
    pub processes: usize,
    /// Worker threads per process.
    pub workers: usize,
    /// The run directory they share (process 0 writes the model and metrics there).
    pub run_dir: PathBuf,
    /// `--set KEY=VALUE` overrides for every process.
    pub overrides: Vec<String>,
    /// Resume from the latest checkpoint on the first start too.
    pub resume: bool,
    /// Restarts (with `--resume`) after a failure.
    pub restarts: u32,
}

/// How a launch ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchOutcome {
    /// Starts of the whole cluster (1 + restarts used).
    pub starts: u32,
}

/// How long the other processes get to stop by themselves after one failed.
const GRACE: Duration = Duration::from_secs(30);

/// Starts the cluster and waits for it; restarts it with `--resume` up to `restarts` times.
pub fn launch(launch: &Launch) -> Result<LaunchOutcome> {
    if launch.processes == 0 || launch.workers == 0 {
        return Err(Error::Cluster(
            "--processes and --workers must be at least 1".into(),
        ));
    }
    std::fs::create_dir_all(&launch.run_dir).map_err(|source| Error::Io {
        path: launch.run_dir.clone(),
        source,
    })?;
    let mut starts = 0;
    loop {
        starts += 1;
        let resume = launch.resume || starts > 1;
        match start_once(launch, resume) {
            Ok(()) => return Ok(LaunchOutcome { starts }),
            Err(e) if starts <= launch.restarts => {
                eprintln!(
                    "cluster: {e}; restarting all {} processes with --resume ({} of {} restarts)",
                    launch.processes, starts, launch.restarts
                );
            }
            Err(e) => return Err(e),
        }
    }
}

fn start_once(launch: &Launch, resume: bool) -> Result<()> {
    let hosts = local_hosts(launch.processes)?;
    let hosts_file = launch.run_dir.join("hosts.txt");
    std::fs::write(&hosts_file, hosts.join("\n") + "\n").map_err(|source| Error::Io {
        path: hosts_file.clone(),
        source,
    })?;
    let mut children: Vec<(usize, Child)> = Vec::new();
    for process in 0..launch.processes {
        let mut command = Command::new(&launch.exe);
        command
            .arg("run")
            .arg(&launch.pipeline)
            .args(["--workers", &launch.workers.to_string()])
            .args(["--processes", &launch.processes.to_string()])
            .args(["--process-id", &process.to_string()])
            .arg("--hosts")
            .arg(&hosts_file)
            .arg("--run-dir")
            .arg(&launch.run_dir)
            .arg("--no-serve");
        for o in &launch.overrides {
            command.args(["--set", o]);
        }
        if resume {
            command.arg("--resume");
        }
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        match command.spawn() {
            Ok(mut child) => {
                forward(child.stdout.take(), process, false);
                forward(child.stderr.take(), process, true);
                children.push((process, child));
            }
            Err(e) => {
                stop_all(&mut children);
                return Err(Error::Cluster(format!(
                    "cannot start process {process} ({}): {e}",
                    launch.exe.display()
                )));
            }
        }
    }
    supervise(children)
}

/// Waits for every child; the first failure is the cluster's error.
fn supervise(mut children: Vec<(usize, Child)>) -> Result<()> {
    let mut failed: Option<(usize, ExitStatus)> = None;
    let mut failed_at: Option<Instant> = None;
    let mut running: Vec<(usize, Child)> = Vec::new();
    loop {
        for (process, mut child) in children.drain(..) {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => {}
                Ok(Some(status)) => {
                    if failed.is_none() {
                        failed = Some((process, status));
                        failed_at = Some(Instant::now());
                    }
                }
                Ok(None) => running.push((process, child)),
                Err(e) => {
                    tracing::warn!(process, "cannot poll the process: {e}");
                    running.push((process, child));
                }
            }
        }
        std::mem::swap(&mut children, &mut running);
        if children.is_empty() {
            break;
        }
        if failed_at.is_some_and(|t| t.elapsed() > GRACE) {
            eprintln!(
                "cluster: {} process(es) still running {} s after a failure; killing them",
                children.len(),
                GRACE.as_secs()
            );
            stop_all(&mut children);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    match failed {
        None => Ok(()),
        Some((process, status)) => Err(Error::Cluster(format!(
            "process {process} {}",
            describe(status)
        ))),
    }
}

fn describe(status: ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return format!("was killed by signal {signal}");
        }
    }
    match status.code() {
        Some(code) => format!("exited with status {code}"),
        None => "ended abnormally".to_string(),
    }
}

fn stop_all(children: &mut Vec<(usize, Child)>) {
    for (_, child) in children.iter_mut() {
        let _ = child.kill();
    }
    for (_, child) in children.iter_mut() {
        let _ = child.wait();
    }
    children.clear();
}

/// Copies a child's output to ours, each line prefixed with `[pN]`.
fn forward(stream: Option<impl Read + Send + 'static>, process: usize, to_stderr: bool) {
    let Some(stream) = stream else { return };
    let spawned = std::thread::Builder::new()
        .name(format!("millrace-p{process}-output"))
        .spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                let written = if to_stderr {
                    writeln!(std::io::stderr(), "[p{process}] {line}")
                } else {
                    writeln!(std::io::stdout(), "[p{process}] {line}")
                };
                if written.is_err() {
                    break;
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(process, "cannot forward the process's output: {e}");
    }
}
