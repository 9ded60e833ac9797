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
//!
//! The publisher also sends each report directly (`/floe/direct/1`) to every bootstrap peer
//! named by its `/p2p/<peer id>`. A coordinator answers with the device's current directive
//! post when the device is behind it (other peers decline); that answer goes into the main
//! loop's inbox exactly as a gossiped post would, and the loop checks it the same way. This is
//! the catch-up path of DESIGN.md ("a device that was offline asks for its current directive
//! when it comes back"): gossip does not deliver bytes the mesh has already seen, so without it
//! a device that missed a post would wait for the coordinator's next re-signed copy. Requests
//! run in their own tasks, at most one in flight per peer (a report that finds its peer busy is
//! not sent there; the next heartbeat's is), so the publisher and the main loop never wait on
//! the network.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use floe_fabric::node::FabricEvent;
use floe_fabric::signed::SignedStore;
use floe_fabric::{Fabric, FabricConfig, Topic, Validation};
use floe_runtime::agent::Agent;
use floe_runtime::agent::engine::EngineRunner;
use floe_runtime::agent::main_loop::{self, LINK_INBOX, LinkInput, LinkIo, LoopIo, Notice};
use floe_runtime::config::Config;
use floe_runtime::control::Published;
use floe_runtime::health::HealthReport;
use floe_runtime::http::{self, COMMAND_QUEUE, CONTROL_SOCKET};
use floe_wire::artifact::keys;
use floe_wire::proto::{Directive, DirectivePost, Envelope, TrustStore};
use libp2p::PeerId;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
    let status_rx = pub_rx.clone();
    let shutdown = CancellationToken::new();

    let health = tokio::net::TcpListener::bind(http_addr)
        .await
        .with_context(|| {
            format!("binding the health endpoint on {http_addr} (config key `http_listen`)")
        })?;
    // Header, idle and request timeouts and a connection cap (ARCHITECTURE.md, "Server
    // limits"): a scraper flood cannot hold the daemon's descriptors or memory.
    let limited =
        floe_httpd::Server::new(cfg_copy.http_limits).context("the health endpoint's limits")?;
    let token = shutdown.clone();
    let health_app = floe_runtime::health_listener::router(pub_rx, limited.clone());
    tokio::spawn(async move {
        limited.serve(health, health_app, token).await;
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
    let policy = floe_runtime::peer::ControlPolicy::new(cfg_copy.operator_group.as_deref())?;
    let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_QUEUE);
    let status_source = http::StatusSource {
        data_dir: data.clone(),
        published: status_rx,
    };
    let token = shutdown.clone();
    tokio::spawn(async move {
        let app = http::control_router(cmd_tx, status_source, policy)
            .into_make_service_with_connect_info::<floe_runtime::peer::PeerCred>();
        if let Err(e) = axum::serve(control, app)
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

/// Most bootstrap peers a report is sent to directly; further ones get gossip only.
const MAX_DIRECT_PEERS: usize = 16;

/// The peers named by `/p2p/<peer id>` in the bootstrap addresses, each once, in order, at most
/// [`MAX_DIRECT_PEERS`].
fn direct_peers(bootstrap: &[libp2p::Multiaddr]) -> Vec<PeerId> {
    let mut peers = Vec::new();
    for addr in bootstrap {
        let id = addr.iter().find_map(|p| match p {
            libp2p::multiaddr::Protocol::P2p(id) => Some(id),
            _ => None,
        });
        if let Some(id) = id
            && !peers.contains(&id)
        {
            if peers.len() == MAX_DIRECT_PEERS {
                tracing::warn!(%addr, "more than {MAX_DIRECT_PEERS} bootstrap peers: reports reach this one by gossip only");
                continue;
            }
            peers.push(id);
        }
    }
    peers
}

/// What a direct reply means for the main loop: an empty reply says the device is not behind
/// (or the report was refused), so nothing is handed over; without a trust store no directive
/// can be verified, so a post is ignored as the gossip validator ignores it; any other reply
/// is handed to the loop as a post, which checks the coordinator signature, generation,
/// expiry and manifest (and audits a refusal), exactly as for a gossiped post.
fn direct_reply(reply: Vec<u8>, trusted: bool) -> Option<Vec<u8>> {
    (!reply.is_empty() && trusted).then_some(reply)
}

/// Sends `report` directly to `peer` unless a request to it is still in flight, and hands a
/// non-empty reply to the main loop.
fn send_direct(
    fabric: &Fabric,
    peer: PeerId,
    busy: &Arc<AtomicBool>,
    report: Vec<u8>,
    inbox: &mpsc::Sender<LinkInput>,
    dropped: &Arc<AtomicU64>,
    trusted: bool,
) {
    if busy.swap(true, Ordering::AcqRel) {
        tracing::debug!(%peer, "direct report skipped: the previous one is still in flight");
        return;
    }
    let fabric = fabric.clone();
    let busy = busy.clone();
    let inbox = inbox.clone();
    let dropped = dropped.clone();
    tokio::spawn(async move {
        match fabric.request(peer, report).await {
            Ok(reply) => {
                if let Some(post) = direct_reply(reply, trusted) {
                    tracing::debug!(%peer, bytes = post.len(), "directive received directly");
                    offer(&inbox, &dropped, post);
                }
            }
            Err(e) => tracing::debug!(%peer, error = %e, "direct report not answered"),
        }
        busy.store(false, Ordering::Release);
    });
}

/// Whether a directive post carries a valid coordinator signature (the manifest and the
/// device-specific checks are the main loop's).
fn directive_signed(trust: &TrustStore, data: &[u8]) -> bool {
    DirectivePost::from_bytes(data)
        .ok()
        .and_then(|post| Envelope::from_bytes::<Directive>(&post.directive.0).ok())
        .is_some_and(|env| trust.verify_coordinator::<Directive>(&env).is_ok())
}

/// Where the device keeps the membership certificate a coordinator issued it.
pub(crate) const MEMBERSHIP_FILE: &str = "membership.cert";

/// The device's side of fabric admission: the trust store's coordinator key checks every
/// peer's certificate; the stored certificate (if any) is ours; without a valid one the
/// newest signed report goes with our Hello so a coordinator can issue one, and each new one
/// is written to `<data>/membership.cert` (0600, atomically).
fn admission(
    cfg: &Config,
    trust: Option<&TrustStore>,
    newest: &watch::Receiver<Option<Vec<u8>>>,
) -> Option<floe_fabric::admission::Admission> {
    let trust = trust?;
    let path = cfg.data_dir.join(MEMBERSHIP_FILE);
    let mut admission = floe_fabric::admission::Admission::new(trust.coordinator_key.clone());
    admission.certificate = match std::fs::read(&path) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            tracing::warn!(error = %e, path = %path.display(), "membership certificate not read");
            None
        }
    };
    let source = newest.clone();
    admission.report = Some(Arc::new(move || source.borrow().clone()));
    admission.on_certificate = Some(Arc::new(move |bytes: Vec<u8>| {
        let path = path.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = floe_wire::fsutil::write_atomic(&path, &bytes, 0o600, true) {
                tracing::warn!(error = %e, path = %path.display(), "membership certificate not stored");
            }
        });
    }));
    Some(admission)
}

/// Joins the fabric when the configuration asks for it, and returns the main loop's side.
async fn start_link(cfg: &Config, shutdown: &CancellationToken) -> Result<Option<LinkIo>> {
    let listen = parse_addrs("listen", &cfg.listen)?;
    let bootstrap = parse_addrs("bootstrap_peers", &cfg.bootstrap_peers)?;
    if listen.is_empty() && bootstrap.is_empty() {
        tracing::info!("no `listen` or `bootstrap_peers` configured: not joining the fabric");
        return Ok(None);
    }
    let key = floe_fabric::identity::load_or_create(&cfg.data_dir)
        .context("loading the device identity")?;
    let signing = floe_wire::identity::load_or_generate(&cfg.data_dir)
        .context("loading the device identity")?;
    let store = SignedStore::open(&cfg.data_dir).context("opening the chunk store")?;
    // Admission needs the coordinator key: without a trust store the device could neither
    // prove its membership nor check anyone else's, so it stays off the fabric.
    let trust = match keys::load_trust(&cfg.trust_store) {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::error!(error = %e, path = %cfg.trust_store.display(),
                "no trust store: not joining the fabric (admission and directives need the coordinator key)");
            return Ok(None);
        }
    };
    let trusted = trust.is_some();
    let (reports, newest) = watch::channel::<Option<Vec<u8>>>(None);
    let admission = admission(cfg, trust.as_ref(), &newest);
    let direct = direct_peers(&bootstrap);
    let (inbox_tx, inbox) = mpsc::channel(LINK_INBOX);
    let dropped = Arc::new(AtomicU64::new(0));
    let validator: floe_fabric::Validator = {
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
            // A device does not subscribe to reports (see `Topic::DEVICE`) and learns of
            // artifacts from directives, so neither reaches it.
            Topic::Health | Topic::Announce => Validation::Ignore,
        })
    };
    let config = FabricConfig {
        listen,
        bootstrap,
        mdns: cfg.link.mdns,
        admission,
        max_connections: cfg.link.max_peers,
        // Reports go out on Health, but only coordinators subscribe to it (see
        // `FabricConfig::topics`).
        topics: Topic::DEVICE.to_vec(),
        ..FabricConfig::default()
    };
    let (fabric, mut events) =
        floe_fabric::spawn(key, config, Box::new(store), validator, shutdown.clone())
            .context("starting the fabric")?;
    tracing::info!(peer = %fabric.peer_id(), "joined the fabric");

    // The pump: fabric events to link inputs. Posts are dropped and counted when the loop is
    // behind (the coordinator re-posts); a finished fetch and a peer count wait for room,
    // because each is sent once.
    let tx = inbox_tx.clone();
    let direct_dropped = dropped.clone();
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

    // The publisher: the newest signed report goes out on gossip and directly to each
    // bootstrap peer; an older one still waiting is simply replaced (the watch holds one).
    let mut newest = newest;
    let publisher = fabric.clone();
    let token = shutdown.clone();
    let me = fabric.peer_id();
    let direct: Vec<(PeerId, Arc<AtomicBool>)> = direct
        .into_iter()
        .filter(|p| *p != me)
        .map(|p| (p, Arc::new(AtomicBool::new(false))))
        .collect();
    let direct_tx = inbox_tx.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                biased;
                _ = token.cancelled() => break,
                changed = newest.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let Some(bytes) = newest.borrow_and_update().clone() else {
                        continue;
                    };
                    for (peer, busy) in &direct {
                        send_direct(&publisher, *peer, busy, bytes.clone(), &direct_tx, &direct_dropped, trusted);
                    }
                    if let Err(e) = publisher.publish(Topic::Health, bytes).await {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn peer(seed: u8) -> PeerId {
        let mut bytes = [seed; 32];
        libp2p::identity::Keypair::ed25519_from_bytes(&mut bytes)
            .unwrap()
            .public()
            .to_peer_id()
    }

    #[test]
    fn direct_peers_are_the_bootstrap_peer_ids_once_each() {
        let (a, b) = (peer(1), peer(2));
        let addrs: Vec<libp2p::Multiaddr> = [
            format!("/ip4/127.0.0.1/tcp/7301/p2p/{a}"),
            "/ip4/127.0.0.1/tcp/7302".to_string(),
            format!("/ip4/127.0.0.1/udp/7301/quic-v1/p2p/{a}"),
            format!("/ip4/10.0.0.2/tcp/7301/p2p/{b}"),
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        assert_eq!(direct_peers(&addrs), vec![a, b]);
        // Beyond the bound, further peers get gossip only.
        let many: Vec<libp2p::Multiaddr> = (0..40u8)
            .map(|i| {
                format!("/ip4/127.0.0.1/tcp/{}/p2p/{}", 7000 + u16::from(i), peer(i))
                    .parse()
                    .unwrap()
            })
            .collect();
        let peers = direct_peers(&many);
        assert_eq!(peers.len(), MAX_DIRECT_PEERS);
        assert_eq!(peers[0], peer(0));
    }

    #[test]
    fn an_empty_reply_or_no_trust_store_hands_nothing_to_the_loop() {
        assert_eq!(direct_reply(Vec::new(), true), None);
        assert_eq!(direct_reply(vec![1, 2, 3], false), None);
        assert_eq!(direct_reply(vec![1, 2, 3], true), Some(vec![1, 2, 3]));
    }
}
