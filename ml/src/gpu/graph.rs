//! Captured CUDA graphs: a step's dozen launches replayed as one.

use cudarc::driver::result;
use cudarc::driver::sys::{self, CUstream};

use super::runtime::cuda;
use crate::error::Result;

/// An instantiated graph, destroyed on drop.
pub(crate) struct Graph {
    graph: sys::CUgraph,
    exec: sys::CUgraphExec,
}

// SAFETY: graph handles may be launched from any thread, one at a time (the owner's).
unsafe impl Send for Graph {}

impl Graph {
    /// Captures what `enqueue` puts on `stream` (which must be idle) into a graph. On any
    /// failure the capture is ended and the error returned; nothing ran.
    pub(crate) fn capture(stream: CUstream, enqueue: impl FnOnce() -> Result<()>) -> Result<Self> {
        // SAFETY: a live stream; relaxed mode lets libraries query the device while capturing.
        cuda("starting a CUDA graph capture", unsafe {
            result::stream::begin_capture(
                stream,
                sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED,
            )
        })?;
        let enqueued = enqueue();
        // SAFETY: ends the capture begun above, whatever happened in between.
        let ended = unsafe { result::stream::end_capture(stream) };
        let graph = cuda("ending a CUDA graph capture", ended)?;
        if let Err(e) = enqueued {
            if !graph.is_null() {
                // SAFETY: the graph captured above, destroyed once.
                let _ = unsafe { result::graph::destroy(graph) };
            }
            return Err(e);
        }
        // SAFETY: a graph just captured.
        let exec = unsafe { result::graph::instantiate(graph, sys::CUgraphInstantiate_flags(0)) };
        match exec {
            Ok(exec) => Ok(Self { graph, exec }),
            Err(e) => {
                // SAFETY: destroyed once.
                let _ = unsafe { result::graph::destroy(graph) };
                cuda("instantiating a CUDA graph", Err(e))
            }
        }
    }

    pub(crate) fn launch(&self, stream: CUstream) -> Result<()> {
        // SAFETY: a live executable graph and stream.
        cuda("launching a CUDA graph", unsafe {
            result::graph::launch(self.exec, stream)
        })
    }
}

/// Runs what `enqueue` puts on `stream` as the graph in `cache`, capturing it on first use.
/// When capturing fails, `enabled` turns off (with a warning) and `enqueue` runs directly, now
/// and from then on; `enqueue` must be repeatable.
pub(crate) fn run_cached(
    cache: &mut Option<Graph>,
    enabled: &mut bool,
    stream: CUstream,
    enqueue: impl Fn() -> Result<()>,
) -> Result<()> {
    if *enabled && cache.is_none() {
        match Graph::capture(stream, &enqueue) {
            Ok(g) => *cache = Some(g),
            Err(e) => {
                tracing::warn!(error = %e, "CUDA graph capture failed; launching kernels one by one");
                *enabled = false;
            }
        }
    }
    match cache {
        Some(g) if *enabled => g.launch(stream),
        _ => enqueue(),
    }
}

impl Drop for Graph {
    fn drop(&mut self) {
        // SAFETY: created in `capture`, destroyed once.
        unsafe {
            let _ = result::graph::exec_destroy(self.exec);
            let _ = result::graph::destroy(self.graph);
        }
    }
}
