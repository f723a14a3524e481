//! The dashboard from the command line: `millrace ui RUNS_DIR` and `millrace run --ui ADDR`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;

use crate::operators::serve::access::exposure_refused;
use crate::operators::ui::{RunsSource, UiSource, serve_ui};

/// `millrace ui`.
#[derive(clap::Args, Debug)]
pub struct UiArgs {
    /// A directory of run directories (e.g. runs/), or one run directory.
    runs: PathBuf,
    /// Address to listen on. Only this machine can reach the default; a non-loopback address
    /// needs --allow-unauthenticated (anyone who can reach it can read the runs).
    #[arg(long, default_value = "127.0.0.1:8090")]
    addr: SocketAddr,
    /// Serve a non-loopback address without authentication, on purpose.
    #[arg(long)]
    allow_unauthenticated: bool,
}

/// Refuses a non-loopback dashboard unless it is asked for on purpose.
pub fn check_exposure(addr: &SocketAddr, allow_unauthenticated: bool) -> anyhow::Result<()> {
    if let Some(why) = exposure_refused(addr, false, allow_unauthenticated) {
        anyhow::bail!(
            "refusing to serve the dashboard: {why}. Listen on 127.0.0.1:{} or pass --allow-unauthenticated",
            addr.port()
        );
    }
    Ok(())
}

/// Serves the dashboard over `args.runs` until Ctrl-C.
pub fn ui(args: UiArgs) -> anyhow::Result<()> {
    check_exposure(&args.addr, args.allow_unauthenticated)?;
    anyhow::ensure!(
        args.runs.is_dir(),
        "{} is not a directory: give a directory of runs (e.g. runs/) or one run directory",
        args.runs.display()
    );
    let source = UiSource {
        runs: Some(RunsSource::new(&args.runs)),
        server: false,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let runs = args.runs.display().to_string();
    runtime.block_on(serve_ui(
        source,
        args.addr,
        move |bound| eprintln!("dashboard of {runs} on http://{bound}/ui (Ctrl-C stops)"),
        async {
            let _ = tokio::signal::ctrl_c().await;
        },
    ))?;
    Ok(())
}

/// Where `millrace run` serves its dashboard unless told: a free port only this machine reaches.
pub const ANY_LOOPBACK: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

/// Starts the dashboard of the run in `run_dir` (and the runs beside it) on its own thread for
/// as long as the process lives; returns the bound address.
pub fn spawn(run_dir: &std::path::Path, addr: SocketAddr) -> anyhow::Result<SocketAddr> {
    check_exposure(&addr, false)?;
    let source = UiSource {
        runs: Some(RunsSource::live(run_dir)),
        server: false,
    };
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("millrace-ui".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    let _ = ready_tx.send(Err(anyhow::anyhow!("dashboard runtime: {e}")));
                    return;
                }
            };
            let ready = ready_tx.clone();
            let result = runtime.block_on(serve_ui(
                source,
                addr,
                move |bound| {
                    let _ = ready.send(Ok(bound));
                },
                std::future::pending(),
            ));
            if let Err(e) = result {
                let _ = ready_tx.send(Err(e.into()));
            }
        })?;
    let bound = ready_rx
        .recv()
        .context("the dashboard thread stopped before listening")??;
    eprintln!("dashboard on http://{bound}/ui while the job runs");
    Ok(bound)
}
