//! The crate's I/O runtime: object store requests run on one shared tokio runtime, and the
//! synchronous callers (timely worker threads, the CLI) wait on it with [`block_on`].

use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::{Builder, Runtime};

/// Threads of the shared I/O runtime: enough to keep several requests in flight per worker, few
/// enough not to compete with the workers for cores (decoding runs on the workers).
const IO_THREADS: usize = 4;

fn io_runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        Builder::new_multi_thread()
            .worker_threads(IO_THREADS)
            .thread_name("millrace-io")
            .enable_all()
            .build()
            // Without a runtime no I/O can happen at all; there is nothing to fall back to.
            .unwrap_or_else(|e| panic!("cannot start the millrace I/O runtime: {e}"))
    })
}

/// A handle to the shared I/O runtime, for spawning background fetches.
pub fn handle() -> tokio::runtime::Handle {
    io_runtime().handle().clone()
}

/// Runs `future` to completion on the shared I/O runtime and returns its output.
///
/// Callable from any thread, including a thread of another multi-threaded tokio runtime (the
/// server's): there it steps out of that runtime's scheduler with `block_in_place` first.
pub fn block_on<F: Future>(future: F) -> F::Output {
    match tokio::runtime::Handle::try_current() {
        Ok(current) if current.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(|| io_runtime().block_on(future))
        }
        _ => io_runtime().block_on(future),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_futures_from_plain_and_runtime_threads() {
        assert_eq!(block_on(async { 1 + 1 }), 2);
        let rt = Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        let got = rt.block_on(async { tokio::spawn(async { block_on(async { 40 + 2 }) }).await });
        assert_eq!(got.unwrap(), 42);
    }
}
