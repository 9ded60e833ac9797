//! `floe serve`: the coordinator service and its REST API.
//!
//! At first start the data directory gets its secrets: the API token (`api-token`, mode
//! 0600, printed once), the release key and the coordinator key (`keys/release/`,
//! `keys/coordinator/`), and the trust store devices need (`trust/trust.cbor`). Later starts
//! reuse them and resume every unfinished deployment from the database.
//!
//! Devices report over gossip and also directly (`/floe/direct/1`); [`direct_handler`] answers
//! the direct ones with the device's current directive when it is behind, which is how a
//! device that was offline catches up without waiting for gossip.

use anyhow::{Context, Result, bail};
use clap::Args;
use floe_coordinator::link::{self, LinkConfig};
use floe_coordinator::service::{self, Core, ServiceConfig, ServiceHandle};
use floe_coordinator::store::Store;
use floe_coordinator::{api, bridge};
use floe_fabric::RequestHandler;
use floe_rollout::parse_duration;
use floe_wire::artifact::keys;
use floe_wire::proto::{TrustStore, TrustedKey};
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// `floe serve` options.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7300")]
    listen: SocketAddr,
    /// Data directory (default: $XDG_DATA_HOME/floe or ~/.local/share/floe).
    #[arg(long, env = "FLOE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// A device silent for this long counts as offline.
    #[arg(long, default_value = "30s")]
    offline_after: String,
    /// How long a signed directive stays valid.
    #[arg(long, default_value = "1h")]
    directive_ttl: String,
    /// Fabric (libp2p) listen addresses; devices bootstrap to them. The addresses actually
    /// bound, with the coordinator's peer id, are written to DIR/fabric-addrs.
    #[arg(long = "fabric-listen", default_value = "/ip4/0.0.0.0/tcp/7301")]
    fabric_listen: Vec<String>,
    /// Peers to dial at start (multiaddrs ending in /p2p/<peer id>).
    #[arg(long = "fabric-bootstrap")]
    fabric_bootstrap: Vec<String>,
    /// Switch off mDNS discovery on the LAN.
    #[arg(long)]
    no_mdns: bool,
    /// How often directives devices still have to apply are posted again.
    #[arg(long, default_value = "2s")]
    republish: String,
}

/// Where `floe serve` writes its fabric addresses for devices and tools (one multiaddr ending
/// in `/p2p/<peer id>` per line).
const FABRIC_ADDRS_FILE: &str = "fabric-addrs";

fn parse_addrs(what: &str, list: &[String]) -> Result<Vec<libp2p::Multiaddr>> {
    list.iter()
        .map(|a| {
            a.parse::<libp2p::Multiaddr>()
                .with_context(|| format!("{what}: `{a}` is not a multiaddr"))
        })
        .collect()
}

/// `addr` ending in `/p2p/<peer>`: as it is when it names a peer already, else with `peer`.
fn with_peer(addr: &libp2p::Multiaddr, peer: libp2p::PeerId) -> libp2p::Multiaddr {
    if addr
        .iter()
        .any(|p| matches!(p, libp2p::multiaddr::Protocol::P2p(_)))
    {
        addr.clone()
    } else {
        addr.clone().with(libp2p::multiaddr::Protocol::P2p(peer))
    }
}

/// Writes the fabric addresses atomically (temp file + rename), loopback and unspecified
/// addresses as bound.
fn write_fabric_addrs(dir: &Path, addrs: &[libp2p::Multiaddr], peer: libp2p::PeerId) -> Result<()> {
    let mut text = String::new();
    for a in addrs {
        text.push_str(&with_peer(a, peer).to_string());
        text.push('\n');
    }
    let path = dir.join(FABRIC_ADDRS_FILE);
    let tmp = dir.join(".fabric-addrs.tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn default_data_dir() -> Result<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
        return Ok(PathBuf::from(x).join("floe"));
    }
    let home = std::env::var_os("HOME")
        .context("neither XDG_DATA_HOME nor HOME is set; pass --data-dir")?;
    Ok(PathBuf::from(home).join(".local/share/floe"))
}

/// Reads the API token, or creates it (32 random bytes, hex, mode 0600) and says so.
fn api_token(dir: &Path) -> Result<(String, bool)> {
    let path = dir.join("api-token");
    if path.exists() {
        let mode = std::fs::metadata(&path)
            .with_context(|| format!("reading {}", path.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            bail!(
                "{} is readable by others (mode {:o}); chmod 600 it",
                path.display(),
                mode & 0o777
            );
        }
        let token = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?
            .trim()
            .to_string();
        if token.len() < 32 {
            bail!("{} holds no usable token", path.display());
        }
        return Ok((token, false));
    }
    let token = service::random_token(32)?;
    let tmp = dir.join(".api-token.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    writeln!(f, "{token}").with_context(|| format!("writing {}", tmp.display()))?;
    f.sync_all()
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("creating {}", path.display()))?;
    Ok((token, true))
}

/// Loads the release and coordinator keys, generating them and the device trust store at
/// first start.
fn keys_and_trust(dir: &Path) -> Result<(ed25519_dalek::SigningKey, ed25519_dalek::SigningKey)> {
    let release_dir = dir.join("keys/release");
    let coordinator_dir = dir.join("keys/coordinator");
    let trust_dir = dir.join("trust");
    for key_dir in [&release_dir, &coordinator_dir] {
        if !key_dir.join(keys::PRIVATE_KEY_FILE).exists() {
            keys::generate(key_dir)
                .with_context(|| format!("generating a key in {}", key_dir.display()))?;
            println!(
                "generated key {}",
                key_dir.join(keys::PRIVATE_KEY_FILE).display()
            );
        }
    }
    let release = keys::load_signing_key(&release_dir.join(keys::PRIVATE_KEY_FILE))
        .context("loading the release key")?;
    let coordinator = keys::load_signing_key(&coordinator_dir.join(keys::PRIVATE_KEY_FILE))
        .context("loading the coordinator key")?;
    if !trust_dir.join(keys::TRUST_FILE).exists() {
        let store = TrustStore::new(
            vec![TrustedKey::new(floe_wire::proto::Fixed(
                release.verifying_key().to_bytes(),
            ))],
            TrustedKey::new(floe_wire::proto::Fixed(
                coordinator.verifying_key().to_bytes(),
            )),
        );
        let path =
            keys::write_trust(&trust_dir, &store).context("writing the device trust store")?;
        println!(
            "wrote the device trust store {} (copy it to every device's trust directory)",
            path.display()
        );
    }
    Ok((release, coordinator))
}

/// The answer to a device's direct request: the request is its signed report, checked as the
/// gossip path checks it plus that the sending peer owns the signing key
/// ([`link::admit_direct`]); the service takes it like a gossiped report, and the reply is the
/// device's current directive post when it is behind, or empty. A refused report also gets an
/// empty reply (and a debug line only: the service already rate-limits refusal audits, and a
/// device reports at every heartbeat). It runs on the blocking pool (the fabric's bound: 16
/// at once), so waiting for the service there blocks no async task.
fn direct_handler(service: ServiceHandle, rt: tokio::runtime::Handle) -> RequestHandler {
    Arc::new(move |peer, data| {
        let report = match link::admit_direct(peer, &data) {
            Ok(r) => r,
            Err(why) => {
                tracing::debug!(%peer, ?why, "direct report refused");
                return Some(Vec::new());
            }
        };
        let device = report.device_id.clone();
        let answer = rt.block_on(async {
            service.device_report(report).await?;
            service.post_for(&device).await
        });
        match answer {
            Ok(Some(post)) => {
                tracing::debug!(%device, bytes = post.len(), "directive sent directly");
                Some(post)
            }
            Ok(None) => Some(Vec::new()),
            Err(e) => {
                tracing::debug!(%device, error = %e, "direct report not taken");
                Some(Vec::new())
            }
        }
    })
}

/// Waits until the link listens on at least one address (a few seconds at most).
async fn wait_for_listen(link: &link::Link) -> Result<Vec<libp2p::Multiaddr>> {
    let until = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let addrs = link.listen_addrs().await.context("asking the fabric")?;
        if !addrs.is_empty() {
            return Ok(addrs);
        }
        if tokio::time::Instant::now() >= until {
            bail!("the fabric did not start listening within 10 s");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

pub(crate) fn run(args: ServeArgs) -> Result<()> {
    // Logs go to stderr (journald picks them up under systemd); RUST_LOG overrides the level.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let dir = match args.data_dir {
        Some(d) => d,
        None => default_data_dir()?,
    };
    if !dir.exists() {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        // The directory holds the API token and private keys: owner only.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("restricting {}", dir.display()))?;
    }
    let offline_after = parse_duration(&args.offline_after).context("--offline-after")?;
    let republish = parse_duration(&args.republish).context("--republish")?;
    if republish < 100 {
        bail!("--republish must be at least 100ms");
    }
    let fabric_listen = parse_addrs("--fabric-listen", &args.fabric_listen)?;
    let fabric_bootstrap = parse_addrs("--fabric-bootstrap", &args.fabric_bootstrap)?;
    let ttl_ms = parse_duration(&args.directive_ttl).context("--directive-ttl")?;
    if ttl_ms < 2000 {
        bail!("--directive-ttl must be at least 2s");
    }
    let (token, created) = api_token(&dir)?;
    if created {
        println!(
            "API token (shown once; also in {}): {token}",
            dir.join("api-token").display()
        );
    }
    let (release, coordinator) = keys_and_trust(&dir)?;
    let store = Store::open(&dir.join("floe.db")).context("opening the database")?;
    let mut config = ServiceConfig::new(dir.clone());
    config.offline_after = offline_after;
    config.directive_ttl_secs = ttl_ms / 1000;
    let core =
        Core::new(store, config, release, coordinator).context("loading the coordinator state")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        let (handle, task) = service::spawn(core, shutdown.clone());
        // The coordinator on the fabric: it seeds artifacts, posts directives and receives
        // the devices' reports; the bridge connects it to the service.
        let mut link_cfg = LinkConfig::new(dir.join("fabric"));
        link_cfg.listen = fabric_listen;
        link_cfg.bootstrap = fabric_bootstrap;
        link_cfg.mdns = !args.no_mdns;
        link_cfg.republish = std::time::Duration::from_millis(republish);
        link_cfg.direct = Some(direct_handler(
            handle.clone(),
            tokio::runtime::Handle::current(),
        ));
        let (link, reports) = link::spawn(link_cfg, shutdown.clone())
            .await
            .context("starting the fabric")?;
        let fabric_addrs = wait_for_listen(&link).await?;
        write_fabric_addrs(&dir, &fabric_addrs, link.peer_id())?;
        for a in &fabric_addrs {
            println!("floe serve: fabric on {}", with_peer(a, link.peer_id()));
        }
        let bridge = tokio::spawn(bridge::run(
            handle.clone(),
            link,
            reports,
            shutdown.clone(),
            std::time::Duration::from_millis(republish),
        ));
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        println!(
            "floe serve: listening on http://{}/api/v1 (data in {})",
            listener.local_addr()?,
            dir.display()
        );
        // Up: tell systemd (Type=notify) and keep its watchdog fed while the service answers.
        crate::notify::started(handle.clone(), shutdown.clone());
        let app = api::router(handle, token);
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot watch SIGTERM");
                        let _ = tokio::signal::ctrl_c().await;
                        stop.cancel();
                        return;
                    }
                };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            stop.cancel();
        });
        let graceful = shutdown.clone();
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { graceful.cancelled().await })
            .await
            .context("serving the API")?;
        let _ = task.await;
        if let Ok(stats) = bridge.await {
            tracing::info!(?stats, "fabric bridge stopped");
        }
        Ok(())
    })
}
