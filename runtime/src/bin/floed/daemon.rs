//! `floed daemon`: the long-running device agent under systemd.
//!
//! A current_thread tokio runtime keeps the idle footprint small (the budget is 15 MB
//! of RSS with the example flow). systemd learns READY once the active flow runs, and gets a
//! WATCHDOG ping from every tick of the main loop, so a wedged loop is restarted.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use floe_runtime::agent::Agent;
use floe_runtime::agent::engine::EngineRunner;
use floe_runtime::agent::main_loop::{self, LoopIo, Notice};
use floe_runtime::config::Config;
use floe_runtime::health::HealthReport;
use floe_runtime::http::{self, COMMAND_QUEUE, CONTROL_SOCKET, Published};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// The lock file that makes floed the single writer of its data directory.
pub(crate) const LOCK_FILE: &str = "floed.lock";

/// Takes the data directory's exclusive lock, or says who holds it.
pub(crate) fn lock_data_dir(data: &Path) -> Result<nix::fcntl::Flock<std::fs::File>> {
    std::fs::create_dir_all(data)
        .with_context(|| format!("creating data directory {}", data.display()))?;
    let path = data.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening lock file {}", path.display()))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
        anyhow::anyhow!(
            "another floed holds {} ({e}); use the running daemon or stop it first",
            path.display()
        )
    })
}

/// Runs the daemon until SIGTERM or SIGINT.
pub(crate) fn run(cfg: Config) -> Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    rt.block_on(serve(cfg))?;
    Ok(ExitCode::SUCCESS)
}

async fn serve(cfg: Config) -> Result<()> {
    let data = cfg.data_dir.clone();
    let _lock = lock_data_dir(&data)?;
    let http_addr = cfg.http_listen;
    let agent = Agent::open(cfg, EngineRunner::default())
        .await
        .context("starting the agent")?;
    tracing::info!(device = agent.device(), "floed started");

    let (pub_tx, pub_rx) = watch::channel(Arc::new(Published {
        report: HealthReport::starting(""),
        metrics: String::new(),
    }));
    main_loop::publish(&agent, &pub_tx);
    let shutdown = CancellationToken::new();

    let health = tokio::net::TcpListener::bind(http_addr)
        .await
        .with_context(|| {
            format!("binding the health endpoint on {http_addr} (config key `http_listen`)")
        })?;
    let token = shutdown.clone();
    tokio::spawn(async move {
        let app = http::health_router(pub_rx);
        if let Err(e) = axum::serve(health, app)
            .with_graceful_shutdown(token.cancelled_owned())
            .await
        {
            tracing::error!(error = %e, "health endpoint failed");
        }
    });

    // Only this process holds the lock, so an existing socket file is a leftover.
    let sock = data.join(CONTROL_SOCKET);
    match std::fs::remove_file(&sock) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing stale {}", sock.display())),
    }
    let control = tokio::net::UnixListener::bind(&sock)
        .with_context(|| format!("binding the control socket {}", sock.display()))?;
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("setting the mode of {}", sock.display()))?;
    let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_QUEUE);
    let token = shutdown.clone();
    tokio::spawn(async move {
        if let Err(e) = axum::serve(control, http::control_router(cmd_tx))
            .with_graceful_shutdown(token.cancelled_owned())
            .await
        {
            tracing::error!(error = %e, "control socket failed");
        }
    });

    let token = shutdown.clone();
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot watch SIGTERM");
                    return;
                }
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("stopping");
        token.cancel();
    });

    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        tracing::warn!(error = %e, "could not notify systemd");
    }
    let io = LoopIo {
        commands: cmd_rx,
        shutdown: shutdown.clone(),
        publish: pub_tx,
    };
    let watchdog = sd_notify::watchdog_enabled().is_some();
    main_loop::run(agent, io, |n| match n {
        Notice::Alive if watchdog => {
            if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]) {
                tracing::warn!(error = %e, "watchdog ping failed");
            }
        }
        Notice::Alive => {}
    })
    .await
    .context("main loop")?;
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    shutdown.cancel();
    let _ = std::fs::remove_file(&sock);
    Ok(())
}
