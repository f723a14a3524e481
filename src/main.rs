//! The `millrace` binary: the command line with the built-in models.

use std::process::ExitCode;

/// The allocator of the CLI: the server allocates small buffers per request from several
/// threads, where glibc's malloc spends a fifth of the time (measured under load).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    millrace::App::new().main()
}
