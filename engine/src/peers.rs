//! Noticing that another process of a cluster is gone, and saying which.
//!
//! timely's networking threads (`timely:recv-N` / `timely:send-N`, N the remote process) panic
//! when the connection to process N breaks; the panic poisons the queues the workers read, so
//! every worker of this process panics at its next step ("MergeQueue poisoned"). A panic hook
//! records which process was lost, so the run ends with an error that names it instead of the
//! workers' echo; the other processes do the same, and nothing waits forever.
//!
//! Two more ways a cluster could hang are bounded here: processes that never all connect (a
//! watchdog ends this process after the connect timeout), and a process whose workers failed
//! while peers keep it waiting (it exits after a grace period).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Once, OnceLock};
use std::time::Duration;

fn lost() -> &'static Mutex<Option<(usize, String)>> {
    static LOST: OnceLock<Mutex<Option<(usize, String)>>> = OnceLock::new();
    LOST.get_or_init(|| Mutex::new(None))
}

/// The remote process whose connection broke first, and timely's message about it.
pub fn lost_process() -> Option<(usize, String)> {
    lost()
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone()
}

/// The remote process a timely networking thread talks to, from its name.
fn remote_of(thread: &str) -> Option<usize> {
    thread
        .strip_prefix("timely:recv-")
        .or_else(|| thread.strip_prefix("timely:send-"))
        .and_then(|n| n.parse().ok())
}

/// Installs the panic hook that records a lost process (once per process; other panics go to
/// the hook that was installed before).
pub fn watch_connections() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let thread = std::thread::current();
            let name = thread.name().unwrap_or("");
            if let Some(remote) = remote_of(name) {
                let message = crate::error::panic_message(info.payload());
                let mut slot = lost().lock().unwrap_or_else(|p| p.into_inner());
                if slot.is_none() {
                    tracing::error!(process = remote, %message, "lost the connection to a process of the cluster");
                    *slot = Some((remote, message));
                }
                return;
            }
            // The echoes of a lost connection (the workers' poisoned queues, the network
            // threads' panics re-raised when they are joined) are expected; say nothing more.
            let in_timely = info
                .location()
                .is_some_and(|l| l.file().contains("timely_communication"));
            if lost_process().is_some() && (name.starts_with("timely:work-") || in_timely) {
                return;
            }
            previous(info);
        }));
    });
}

/// Ends this process with `message` unless `done` is set within `timeout`.
pub(crate) fn deadline(done: Arc<AtomicBool>, timeout: Duration, message: String) {
    let spawned = std::thread::Builder::new()
        .name("millrace-deadline".into())
        .spawn(move || {
            let step = Duration::from_millis(100);
            let mut waited = Duration::ZERO;
            while waited < timeout {
                if done.load(Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(step);
                waited += step;
            }
            if !done.load(Ordering::Relaxed) {
                tracing::error!("{message}");
                eprintln!("error: {message}");
                std::process::exit(3);
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("cannot start the cluster watchdog: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_remote_process_from_timely_thread_names() {
        assert_eq!(remote_of("timely:recv-3"), Some(3));
        assert_eq!(remote_of("timely:send-0"), Some(0));
        assert_eq!(remote_of("timely:work-1"), None);
        assert_eq!(remote_of("main"), None);
    }
}
