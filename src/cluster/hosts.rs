//! Where the processes of a multi-process run are: the `host:port` of every process, in order
//! (`--hosts`), and which of them this process is (`--process-id`).
//!
//! Timely's cluster mode runs W worker threads in each of P processes; process `i` listens on
//! entry `i` of the host list and connects to all the others. On Kubernetes the list is a
//! pattern over the pods' stable DNS names and the id comes from the pod itself:
//!
//! ```
//! use millrace::cluster::{resolve_hosts, resolve_process_id};
//!
//! let hosts = resolve_hosts("millrace-{i}.millrace-workers:2101", 3).unwrap();
//! assert_eq!(hosts[2], "millrace-2.millrace-workers:2101");
//! let env = |key: &str| (key == "HOSTNAME").then(|| "millrace-2".to_string());
//! assert_eq!(resolve_process_id("auto", 3, &env).unwrap(), 2);
//! ```

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::Path;

use crate::{Error, Result};

/// The placeholder a `--hosts` pattern replaces with the process index.
const INDEX: &str = "{i}";

/// The env var Kubernetes sets in each pod of an Indexed Job.
const JOB_INDEX_VAR: &str = "JOB_COMPLETION_INDEX";

fn cluster(message: impl Into<String>) -> Error {
    Error::Cluster(message.into())
}

/// Resolves the `--hosts` argument: a file with one `host:port` per line (blank lines and `#`
/// comments skipped), or a pattern containing `{i}` expanded for i in 0..processes (e.g.
/// `millrace-{i}.millrace-workers:2101`). Errors (as [`Error::Cluster`]) say what is wrong: a
/// missing file (named), a line without a port or with a bad port (file:line), fewer or more
/// entries than `processes` (both numbers), duplicates.
pub fn resolve_hosts(spec: &str, processes: usize) -> Result<Vec<String>> {
    if processes == 0 {
        return Err(cluster("--processes is 0: run at least one process"));
    }
    let spec = spec.trim();
    if spec.is_empty() {
        return Err(cluster(
            "--hosts is empty: pass a file with one host:port per line, or a pattern such as \
             'millrace-{i}.millrace-workers:2101'",
        ));
    }
    if spec.contains(INDEX) {
        return expand_pattern(spec, processes);
    }
    read_hosts_file(Path::new(spec), processes)
}

/// `pattern` with `{i}` replaced by 0..processes, each checked.
fn expand_pattern(pattern: &str, processes: usize) -> Result<Vec<String>> {
    let hosts: Vec<String> = (0..processes)
        .map(|i| pattern.replace(INDEX, &i.to_string()))
        .collect();
    for host in &hosts {
        check_host_port(host).map_err(|why| cluster(format!("--hosts '{pattern}': {why}")))?;
    }
    check_unique(&hosts, |i| format!("--hosts '{pattern}' (process {i})"))?;
    Ok(hosts)
}

/// The `host:port` lines of a hosts file, checked against `processes`.
fn read_hosts_file(path: &Path, processes: usize) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        let name = path.display();
        if e.kind() == std::io::ErrorKind::NotFound {
            cluster(format!(
                "hosts file '{name}' not found: pass an existing file with one host:port per \
                 line, or a pattern containing {{i}} such as 'millrace-{{i}}.millrace-workers:2101'"
            ))
        } else {
            cluster(format!("hosts file '{name}': {e}"))
        }
    })?;
    let mut hosts = Vec::new();
    let mut lines = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let entry = raw.split('#').next().unwrap_or("").trim();
        if entry.is_empty() {
            continue;
        }
        check_host_port(entry)
            .map_err(|why| cluster(format!("{}:{}: {why}", path.display(), n + 1)))?;
        hosts.push(entry.to_string());
        lines.push(n + 1);
    }
    check_unique(&hosts, |i| format!("{}:{}", path.display(), lines[i]))?;
    if hosts.len() != processes {
        return Err(cluster(format!(
            "hosts file '{}' lists {} processes but --processes is {processes}: list one \
             host:port per process, or change --processes to {}",
            path.display(),
            hosts.len(),
            hosts.len()
        )));
    }
    Ok(hosts)
}

/// Checks that `entry` is `host:port` with a non-empty host and a port in 1..=65535.
fn check_host_port(entry: &str) -> std::result::Result<(), String> {
    let Some((host, port)) = entry.rsplit_once(':') else {
        return Err(format!(
            "'{entry}' has no port: write host:port, e.g. '{entry}:2101'"
        ));
    };
    if host.is_empty() || host.chars().any(char::is_whitespace) {
        return Err(format!(
            "'{entry}' has no valid host before the ':': write host:port, e.g. 'millrace-0:2101'"
        ));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(format!(
            "'{entry}' has a bad port '{port}': use a number from 1 to 65535"
        )),
    }
}

/// Fails on the first entry listed twice; `place(i)` names where entry `i` came from.
fn check_unique(hosts: &[String], place: impl Fn(usize) -> String) -> Result<()> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, host) in hosts.iter().enumerate() {
        if let Some(&first) = seen.get(host.as_str()) {
            return Err(cluster(format!(
                "{}: '{host}' is listed twice (first at {}): every process needs its own \
                 host:port",
                place(i),
                place(first)
            )));
        }
        seen.insert(host, i);
    }
    Ok(())
}

/// Resolves `--process-id`: a number, or `auto`: the ordinal at the end of the pod's host name
/// (a StatefulSet pod `millrace-3` → 3, from the `HOSTNAME` env var, else
/// `/proc/sys/kernel/hostname` or `/etc/hostname`), or `JOB_COMPLETION_INDEX` (a Kubernetes
/// Indexed Job) when that env var is set (it wins). Checks the id is < `processes`. `env` looks
/// up an environment variable (`|k| std::env::var(k).ok()` outside tests).
pub fn resolve_process_id(
    spec: &str,
    processes: usize,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<usize> {
    if processes == 0 {
        return Err(cluster("--processes is 0: run at least one process"));
    }
    let spec = spec.trim();
    let (id, source) = if spec.eq_ignore_ascii_case("auto") {
        auto_process_id(env)?
    } else {
        let id = spec.parse::<usize>().map_err(|_| {
            cluster(format!(
                "--process-id '{spec}' is neither a number nor 'auto': pass this process's index \
                 (0 to {}) or 'auto' on Kubernetes",
                processes - 1
            ))
        })?;
        (id, format!("--process-id {spec}"))
    };
    if id >= processes {
        return Err(cluster(format!(
            "process id {id} (from {source}) is out of range for --processes {processes} \
             (ids are 0 to {}): make --processes match the number of pods (replicas or \
             completions)",
            processes - 1
        )));
    }
    Ok(id)
}

/// The id `auto` stands for, and where it came from (for messages).
fn auto_process_id(env: &dyn Fn(&str) -> Option<String>) -> Result<(usize, String)> {
    if let Some(index) = env(JOB_INDEX_VAR) {
        let index = index.trim().to_string();
        let id = index.parse::<usize>().map_err(|_| {
            cluster(format!(
                "{JOB_INDEX_VAR}='{index}' is not a number: Kubernetes sets it in Indexed Jobs; \
                 unset it or pass --process-id N"
            ))
        })?;
        return Ok((id, format!("{JOB_INDEX_VAR}={index}")));
    }
    let (name, source) = host_name(env)?;
    let id = host_ordinal(&name).ok_or_else(|| {
        cluster(format!(
            "--process-id auto: host name '{name}' (from {source}) does not end in -N like a \
             StatefulSet pod ('millrace-3'): pass --process-id N, or set {JOB_INDEX_VAR}"
        ))
    })?;
    Ok((id, format!("host name '{name}' from {source}")))
}

/// This machine's host name and where it was read.
fn host_name(env: &dyn Fn(&str) -> Option<String>) -> Result<(String, String)> {
    if let Some(name) = env("HOSTNAME").map(|n| n.trim().to_string())
        && !name.is_empty()
    {
        return Ok((name, "HOSTNAME".to_string()));
    }
    for file in ["/proc/sys/kernel/hostname", "/etc/hostname"] {
        if let Ok(text) = std::fs::read_to_string(file) {
            let name = text.trim().to_string();
            if !name.is_empty() {
                return Ok((name, file.to_string()));
            }
        }
    }
    Err(cluster(
        "--process-id auto: no host name (HOSTNAME is unset and neither \
         /proc/sys/kernel/hostname nor /etc/hostname is readable): pass --process-id N",
    ))
}

/// The number after the last `-` of the first label of `name` (`millrace-3.svc` → 3).
fn host_ordinal(name: &str) -> Option<usize> {
    let label = name.split('.').next()?;
    let (prefix, digits) = label.rsplit_once('-')?;
    if prefix.is_empty() || digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// `count` free loopback ports (bind `127.0.0.1:0`, read the port, release) as `127.0.0.1:PORT`
/// entries, for starting every process of a run on one machine. The ports are held together
/// while they are chosen, so they are distinct; another program may still take one before the
/// processes bind it (rare: retry the run).
pub fn local_hosts(count: usize) -> Result<Vec<String>> {
    let listeners = (0..count)
        .map(|_| TcpListener::bind(("127.0.0.1", 0)))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(|e| {
            cluster(format!(
                "could not reserve {count} free ports on 127.0.0.1: {e}: check that loopback \
                 networking works, or pass --hosts"
            ))
        })?;
    listeners
        .iter()
        .map(|l| {
            l.local_addr()
                .map(|a| format!("127.0.0.1:{}", a.port()))
                .map_err(|e| cluster(format!("reading a reserved loopback port: {e}")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn scratch_file(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("millrace-hosts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn err(result: Result<impl std::fmt::Debug>) -> String {
        result.unwrap_err().to_string()
    }

    fn env_of(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |key| {
            vars.iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn pattern_expands_in_order() {
        let hosts = resolve_hosts("millrace-{i}.millrace-workers:2101", 4).unwrap();
        assert_eq!(
            hosts,
            [
                "millrace-0.millrace-workers:2101",
                "millrace-1.millrace-workers:2101",
                "millrace-2.millrace-workers:2101",
                "millrace-3.millrace-workers:2101",
            ]
        );
        assert_eq!(
            resolve_hosts("10.0.0.1:{i}", 2).unwrap_err().to_string(),
            "cluster: --hosts '10.0.0.1:{i}': '10.0.0.1:0' has a bad port '0': use a number from \
             1 to 65535"
        );
        let e = err(resolve_hosts("millrace-{i}", 2));
        assert!(e.contains("'millrace-0' has no port"), "{e}");
    }

    #[test]
    fn file_skips_blanks_and_comments() {
        let path = scratch_file(
            "good.txt",
            "# the cluster\n\nnode-a:2101\n  node-b:2102  # second\n[::1]:2103\n",
        );
        let hosts = resolve_hosts(path.to_str().unwrap(), 3).unwrap();
        assert_eq!(hosts, ["node-a:2101", "node-b:2102", "[::1]:2103"]);
    }

    #[test]
    fn file_errors_name_file_and_line() {
        let missing = err(resolve_hosts("/nonexistent/millrace-hosts.txt", 2));
        assert!(
            missing.starts_with("cluster: hosts file '/nonexistent/millrace-hosts.txt' not found"),
            "{missing}"
        );

        let path = scratch_file("noport.txt", "a:1\n\nb\n");
        let e = err(resolve_hosts(path.to_str().unwrap(), 2));
        assert_eq!(
            e,
            format!(
                "cluster: {}:3: 'b' has no port: write host:port, e.g. 'b:2101'",
                path.display()
            )
        );

        let path = scratch_file("badport.txt", "a:1\nb:70000\n");
        let e = err(resolve_hosts(path.to_str().unwrap(), 2));
        assert!(
            e.starts_with(&format!(
                "cluster: {}:2: 'b:70000' has a bad port",
                path.display()
            )),
            "{e}"
        );

        let path = scratch_file("count.txt", "a:1\nb:2\nc:3\n");
        let e = err(resolve_hosts(path.to_str().unwrap(), 4));
        assert!(e.contains("lists 3 processes but --processes is 4"), "{e}");
        let e = err(resolve_hosts(path.to_str().unwrap(), 2));
        assert!(e.contains("lists 3 processes but --processes is 2"), "{e}");

        let path = scratch_file("dup.txt", "a:1\nb:2\n# x\na:1\n");
        let e = err(resolve_hosts(path.to_str().unwrap(), 3));
        assert_eq!(
            e,
            format!(
                "cluster: {p}:4: 'a:1' is listed twice (first at {p}:1): every process needs \
                 its own host:port",
                p = path.display()
            )
        );
    }

    #[test]
    fn zero_processes_and_empty_spec_are_refused() {
        assert!(err(resolve_hosts("h-{i}:1", 0)).contains("--processes is 0"));
        assert!(err(resolve_hosts("  ", 2)).contains("--hosts is empty"));
        assert!(err(resolve_process_id("0", 0, &env_of(&[]))).contains("--processes is 0"));
    }

    #[test]
    fn numeric_process_id() {
        assert_eq!(resolve_process_id("2", 4, &env_of(&[])).unwrap(), 2);
        assert_eq!(
            err(resolve_process_id("4", 4, &env_of(&[]))),
            "cluster: process id 4 (from --process-id 4) is out of range for --processes 4 (ids \
             are 0 to 3): make --processes match the number of pods (replicas or completions)"
        );
        let e = err(resolve_process_id("first", 4, &env_of(&[])));
        assert!(
            e.contains("--process-id 'first' is neither a number nor 'auto'"),
            "{e}"
        );
    }

    #[test]
    fn auto_reads_the_statefulset_ordinal() {
        let env = env_of(&[("HOSTNAME", "millrace-2")]);
        assert_eq!(resolve_process_id("auto", 4, &env).unwrap(), 2);
        let env = env_of(&[("HOSTNAME", "millrace-train-13.millrace-job.default.svc")]);
        assert_eq!(resolve_process_id("auto", 16, &env).unwrap(), 13);
        let env = env_of(&[("HOSTNAME", "millrace-7")]);
        let e = err(resolve_process_id("auto", 4, &env));
        assert!(
            e.contains("process id 7 (from host name 'millrace-7' from HOSTNAME) is out of range"),
            "{e}"
        );
        let env = env_of(&[("HOSTNAME", "laptop")]);
        let e = err(resolve_process_id("auto", 4, &env));
        assert!(
            e.contains("host name 'laptop' (from HOSTNAME) does not end in -N"),
            "{e}"
        );
    }

    #[test]
    fn auto_prefers_the_job_completion_index() {
        let env = env_of(&[
            ("HOSTNAME", "millrace-train-1"),
            ("JOB_COMPLETION_INDEX", "3"),
        ]);
        assert_eq!(resolve_process_id("auto", 4, &env).unwrap(), 3);
        let env = env_of(&[("JOB_COMPLETION_INDEX", "x")]);
        let e = err(resolve_process_id("auto", 4, &env));
        assert!(
            e.contains("JOB_COMPLETION_INDEX='x' is not a number"),
            "{e}"
        );
    }

    #[test]
    fn host_ordinal_needs_a_dash_number() {
        assert_eq!(host_ordinal("millrace-0"), Some(0));
        assert_eq!(host_ordinal("millrace-03.millrace-workers"), Some(3));
        assert_eq!(host_ordinal("node7"), None);
        assert_eq!(host_ordinal("-3"), None);
        assert_eq!(host_ordinal("millrace-"), None);
        assert_eq!(host_ordinal("millrace-3a"), None);
    }

    #[test]
    fn local_hosts_are_distinct_loopback_ports() {
        let hosts = local_hosts(3).unwrap();
        assert_eq!(hosts.len(), 3);
        for host in &hosts {
            let port: u16 = host.strip_prefix("127.0.0.1:").unwrap().parse().unwrap();
            assert!(port > 0);
            // Released: the port can be bound again.
            TcpListener::bind(host.as_str()).unwrap();
        }
        assert_eq!(resolve_hosts_list(&hosts), hosts);
        assert!(local_hosts(0).unwrap().is_empty());
    }

    /// The local list passes the same checks as a hosts file.
    fn resolve_hosts_list(hosts: &[String]) -> Vec<String> {
        let path = scratch_file("local.txt", &hosts.join("\n"));
        resolve_hosts(path.to_str().unwrap(), hosts.len()).unwrap()
    }
}
