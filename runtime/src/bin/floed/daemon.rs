//! `floed daemon`: the long-running device agent under systemd.
//!
//! A current_thread tokio runtime keeps the idle footprint small (the budget is 15 MB
//! of RSS with the example flow). systemd learns READY once the active flow runs, and gets a
//! WATCHDOG ping from every tick of the main loop, so a wedged loop is restarted.
//!
//! When the configuration names libp2p `listen` addresses or `bootstrap_peers`, the daemon
//! joins the fabric with its device identity and the artifact layer's chunk store. Three small
//! tasks connect it to the main loop: the gossip validator (directive posts must carry a
//! coordinator signature from the trust store, reports must be self-signed), a pump that turns
//! fabric events into link inputs (directive posts, finished fetches), and a publisher that
//! puts the newest signed report on `floe/health/1`. Without either key the daemon runs alone,
//! which is what a bench or an air-gapped site wants.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use floe_runtime::agent::Agent;
use floe_runtime::agent::engine::EngineRunner;
use floe_runtime::agent::main_loop::{self, LINK_INBOX, LinkInput, LinkIo, LoopIo, Notice};
use floe_runtime::artifact::keys;
use floe_runtime::config::Config;
use floe_runtime::health::HealthReport;
use floe_runtime::http::{self, COMMAND_QUEUE, CONTROL_SOCKET, Published};
use floe_runtime::p2p::node::FabricEvent;
use floe_runtime::p2p::signed::SignedStore;
use floe_runtime::p2p::{self, FabricConfig, Topic, Validation};
use floe_runtime::proto::{Directive, DirectivePost, Envelope, TrustStore, open_report};
use std::sync::atomic::{AtomicU64, Ordering};
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
    let cfg_copy = cfg.clone();
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

    let link = start_link(&cfg_copy, &shutdown).await?;

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
        link,
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

fn parse_addrs(key: &str, list: &[String]) -> Result<Vec<libp2p::Multiaddr>> {
    list.iter()
        .enumerate()
        .map(|(i, a)| {
            a.parse::<libp2p::Multiaddr>().with_context(|| {
                format!("config key `{key}`: entry {i} `{a}` is not a multiaddress")
            })
        })
        .collect()
}

/// Hands a directive post to the main loop, or drops and counts it when the inbox is full.
fn offer(tx: &mpsc::Sender<LinkInput>, dropped: &AtomicU64, data: Vec<u8>) {
    if tx.try_send(LinkInput::Post(data)).is_err() {
        let n = dropped.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::warn!(dropped = n, "link inbox full: directive post dropped");
    }
}

/// Whether a directive post carries a valid coordinator signature (the manifest and the
/// device-specific checks are the main loop's).
fn directive_signed(trust: &TrustStore, data: &[u8]) -> bool {
    DirectivePost::from_bytes(data)
        .ok()
        .and_then(|post| Envelope::from_bytes::<Directive>(&post.directive.0).ok())
        .is_some_and(|env| trust.verify_coordinator::<Directive>(&env).is_ok())
}

/// Joins the fabric when the configuration asks for it, and returns the main loop's side.
async fn start_link(cfg: &Config, shutdown: &CancellationToken) -> Result<Option<LinkIo>> {
    let listen = parse_addrs("listen", &cfg.listen)?;
    let bootstrap = parse_addrs("bootstrap_peers", &cfg.bootstrap_peers)?;
    if listen.is_empty() && bootstrap.is_empty() {
        tracing::info!("no `listen` or `bootstrap_peers` configured: not joining the fabric");
        return Ok(None);
    }
    let key =
        p2p::identity::load_or_create(&cfg.data_dir).context("loading the device identity")?;
    let signing = floe_runtime::identity::load_or_generate(&cfg.data_dir)
        .context("loading the device identity")?;
    let store = SignedStore::open(&cfg.data_dir).context("opening the chunk store")?;
    let trust = match keys::load_trust(&cfg.trust_store) {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::warn!(error = %e, path = %cfg.trust_store.display(),
                "no trust store: directives cannot be verified and are ignored");
            None
        }
    };
    let (inbox_tx, inbox) = mpsc::channel(LINK_INBOX);
    let dropped = Arc::new(AtomicU64::new(0));
    let validator: p2p::Validator = {
        let tx = inbox_tx.clone();
        let dropped = dropped.clone();
        Arc::new(move |topic, data: &[u8]| match topic {
            Topic::Directive => match &trust {
                None => Validation::Ignore,
                Some(t) if directive_signed(t, data) => Validation::Accept,
                Some(_) => {
                    // Rejected posts are not delivered, so hand this one to the loop to audit.
                    if tx.try_send(LinkInput::Post(data.to_vec())).is_err() {
                        dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    Validation::Reject
                }
            },
            Topic::Health if open_report(data).is_ok() => Validation::Accept,
            Topic::Health => Validation::Reject,
            Topic::Announce => Validation::Ignore,
        })
    };
    let config = FabricConfig {
        listen,
        bootstrap,
        mdns: cfg.link.mdns,
        ..FabricConfig::default()
    };
    let (fabric, mut events) =
        p2p::spawn(key, config, Box::new(store), validator, shutdown.clone())
            .context("starting the fabric")?;
    tracing::info!(peer = %fabric.peer_id(), "joined the fabric");

    // The pump: fabric events to link inputs. Posts are dropped and counted when the loop is
    // behind (the coordinator re-posts); a finished fetch and a peer count wait for room,
    // because each is sent once.
    let tx = inbox_tx.clone();
    tokio::spawn(async move {
        // One entry per connected peer; the fabric's connection limit bounds it.
        let mut peers = std::collections::HashSet::new();
        while let Some(event) = events.recv().await {
            match event {
                FabricEvent::PeerConnected(p) => {
                    peers.insert(p);
                    let Ok(()) = tx.send(LinkInput::Peers(peers.len())).await else {
                        break;
                    };
                }
                FabricEvent::PeerDisconnected(p) => {
                    peers.remove(&p);
                    let Ok(()) = tx.send(LinkInput::Peers(peers.len())).await else {
                        break;
                    };
                }
                FabricEvent::Gossip {
                    topic: Topic::Directive,
                    data,
                    ..
                } => offer(&tx, &dropped, data),
                FabricEvent::ArtifactComplete { id, .. } => {
                    let Ok(()) = tx.send(LinkInput::Fetched(id)).await else {
                        break;
                    };
                }
                FabricEvent::Listening(addr) => tracing::info!(%addr, "fabric listening"),
                _ => {}
            }
        }
    });

    // The publisher: the newest signed report goes out; an older one still waiting is simply
    // replaced (the watch holds one).
    let (reports, mut newest) = watch::channel::<Option<Vec<u8>>>(None);
    let publisher = fabric.clone();
    let token = shutdown.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                biased;
                _ = token.cancelled() => break,
                changed = newest.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let bytes = newest.borrow_and_update().clone();
                    if let Some(bytes) = bytes
                        && let Err(e) = publisher.publish(Topic::Health, bytes).await
                    {
                        tracing::debug!(error = %e, "report not published");
                    }
                }
            }
        }
    });
    Ok(Some(LinkIo {
        fabric,
        inbox,
        inbox_tx,
        key: signing,
        reports,
    }))
}
