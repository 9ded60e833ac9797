//! The coordinator server as a library: [`start`] brings up everything `floe serve` runs (the
//! data directory's secrets, the store, the service actor, the fabric link and its bridge, the
//! REST listener) and returns a [`Server`] handle; the server stops when the shutdown token is
//! cancelled. `floe serve` only parses its arguments into a [`ServerConfig`] and calls it;
//! tests and `floe demo` can run it in-process.
//!
//! Why it is shaped this way (DESIGN.md: "the server and the daemon are library functions with
//! a shutdown signal", mini-redis's `server::run`): a server that only a binary can start can
//! only be tested through a process, and every caller would copy its wiring. Here the wiring
//! is written once; the caller owns the runtime and the signal that stops it.
//!
//! At first start the data directory gets its secrets: the API token (`api-token`, mode
//! 0600), the release and coordinator keys (`keys/release/`, `keys/coordinator/`) and the trust
//! store devices need (`trust/trust.cbor`); [`Server::notices`] says what was created and
//! [`Server::token_created`] whether the token is new (the binary names its file, never the
//! token: journald would keep it). Later
//! starts reuse them and resume every unfinished deployment from the database.
//!
//! Devices report over gossip and also directly (`/floe/direct/1`); the direct handler answers
//! with the device's current directive when it is behind, which is how a device that was
//! offline catches up without waiting for gossip.

mod secrets;

pub use secrets::{FABRIC_ADDRS_FILE, TOKEN_FILE, with_peer};

use crate::link::{self, LinkConfig, LinkError};
use crate::service::{self, Core, ServiceConfig, ServiceError, ServiceHandle};
use crate::store::{Store, StoreError};
use crate::{api, bridge};
use floe_fabric::RequestHandler;
use floe_rollout::Millis;
use libp2p::Multiaddr;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// What the server runs with. [`ServerConfig::new`] gives `floe serve`'s defaults.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The REST listener's address (port 0: any free port; [`Server::api_addr`] says which).
    pub listen: SocketAddr,
    /// The data directory (created owner-only when missing).
    pub data_dir: PathBuf,
    /// A device silent for this long counts as offline.
    pub offline_after: Millis,
    /// How long a signed directive stays valid (at least 2 s).
    pub directive_ttl: Millis,
    /// Fabric (libp2p) listen addresses.
    pub fabric_listen: Vec<Multiaddr>,
    /// Peers to dial at start (multiaddrs ending in `/p2p/<peer id>`).
    pub fabric_bootstrap: Vec<Multiaddr>,
    /// mDNS discovery on the LAN.
    pub mdns: bool,
    /// How often directives devices still have to apply are posted again (at least 100 ms).
    pub republish: Duration,
    /// The REST listener's timeouts and connection cap (ARCHITECTURE.md, "Server limits").
    pub http: floe_httpd::Limits,
    /// Events kept in memory for clients that resume (1 to 1 000 000).
    pub event_ring: usize,
    /// Attempts per webhook delivery (1 to 20).
    pub hook_attempts: u32,
    /// A PEM file of the certificates an https webhook receiver's chain must end in (a
    /// private CA); None: the system's roots.
    pub hook_ca: Option<PathBuf>,
    /// How long the fleet's health rollups are kept (default 24 h; at least 1 min).
    pub health_retention: Millis,
    /// How long a rolled-back device has to report healthy on its previous version (default
    /// 5 min; at least 1 s).
    pub rollback_verify_timeout: Millis,
    /// The API's per-token rate limit.
    pub api: api::ApiOptions,
    /// Serve the REST API over TLS with this certificate chain and key (PEM files).
    pub tls: Option<TlsFiles>,
    /// Serve the REST API over TLS with a self-signed certificate kept in `DATA_DIR/tls/`,
    /// made at first start with these names besides localhost, loopback and the host's name
    /// (`floe serve --tls-self-signed [--tls-name NAME]…`). Not with `tls`.
    pub tls_self_signed: Option<Vec<String>>,
    /// The pre-deployment checklist: enforced or only recorded, and the heartbeat recency.
    pub preflight: service::PreflightSettings,
}

/// The PEM files of `floe serve --tls-cert --tls-key`.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// The rustls server configuration of `files` (ring, TLS 1.2 and 1.3, HTTP/1.1 by ALPN).
pub fn tls_config(files: &TlsFiles) -> Result<Arc<floe_httpd::rustls::ServerConfig>, ServerError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |file: &PathBuf, message: String| ServerError::Tls {
        file: file.display().to_string(),
        message,
    };
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| bad(&files.cert, e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(&files.cert, e.to_string()))?;
    if certs.is_empty() {
        return Err(bad(&files.cert, "no CERTIFICATE block in it".into()));
    }
    let key =
        PrivateKeyDer::from_pem_file(&files.key).map_err(|e| bad(&files.key, e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = floe_httpd::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(&files.cert, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| bad(&files.key, format!("does not fit the certificate: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The pin (`sha256:…`) of the leaf certificate of `files`.
fn leaf_pin(files: &TlsFiles) -> Result<String, ServerError> {
    let bad = |message: String| ServerError::Tls {
        file: files.cert.display().to_string(),
        message,
    };
    let pem = std::fs::read(&files.cert).map_err(|e| bad(e.to_string()))?;
    crate::tls::leaf_fingerprint(&pem).map_err(bad)
}

impl ServerConfig {
    /// `floe serve`'s defaults for `data_dir`: REST on 127.0.0.1:7300, fabric on TCP 7301 on
    /// loopback (a site gives its own address), mDNS off, devices offline after [`service::DEFAULT_OFFLINE_AFTER`],
    /// directives valid for an hour and posted again every 2 s.
    pub fn new(data_dir: PathBuf) -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7300)),
            data_dir,
            offline_after: service::DEFAULT_OFFLINE_AFTER,
            directive_ttl: 3_600_000,
            fabric_listen: "/ip4/127.0.0.1/tcp/7301"
                .parse()
                .map(|a| vec![a])
                .unwrap_or_default(),
            fabric_bootstrap: Vec::new(),
            mdns: false,
            republish: Duration::from_secs(2),
            http: floe_httpd::Limits::coordinator(),
            event_ring: service::events::DEFAULT_EVENT_RING,
            hook_attempts: 6,
            hook_ca: None,
            health_retention: 24 * 3_600_000,
            rollback_verify_timeout: service::model::DEFAULT_VERIFY_TIMEOUT,
            api: api::ApiOptions::default(),
            tls: None,
            tls_self_signed: None,
            preflight: service::PreflightSettings::default(),
        }
    }

    fn check(&self) -> Result<(), ServerError> {
        let bad = |field, message: &str| {
            Err(ServerError::Config {
                field,
                message: message.to_string(),
            })
        };
        if self.republish < Duration::from_millis(100) {
            return bad("republish", "must be at least 100ms");
        }
        if self.directive_ttl < 2000 {
            return bad("directive_ttl", "must be at least 2s");
        }
        if self.offline_after == 0 {
            return bad("offline_after", "must be above zero");
        }
        if !(1..=1_000_000).contains(&self.event_ring) {
            return bad("event_ring", "must be 1 to 1000000 events");
        }
        if !(1..=20).contains(&self.hook_attempts) {
            return bad("hook_attempts", "must be 1 to 20 attempts");
        }
        if self.health_retention < 60_000 {
            return bad("health_retention", "must be at least 1m");
        }
        if self.rollback_verify_timeout < 1000 {
            return bad("rollback_verify_timeout", "must be at least 1s");
        }
        if let Err(message) = self.api.rate.check() {
            return Err(ServerError::Config {
                field: "rate_limit",
                message,
            });
        }
        if let Err(message) = self.api.auth_failures.check() {
            return Err(ServerError::Config {
                field: "auth_failures",
                message,
            });
        }
        self.http.check().map_err(|e| ServerError::Config {
            field: e.setting,
            message: e.message,
        })
    }
}

/// Why the server did not start, or stopped with an error; each variant names the phase.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A setting is out of range.
    #[error("{field}: {message}")]
    Config {
        /// The setting.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// The TLS certificate or key is not usable.
    #[error("TLS: {file}: {message}")]
    Tls {
        /// The file at fault.
        file: String,
        /// What is wrong with it.
        message: String,
    },
    /// A file or directory operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, with the path.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The API token file is unusable (the sentence says how to fix it).
    #[error("{0}")]
    Secret(String),
    /// Generating or loading a key or the trust store failed.
    #[error("{what}: {source}")]
    Key {
        /// What was being done.
        what: String,
        /// Why.
        #[source]
        source: floe_wire::artifact::keys::KeyError,
    },
    /// Opening the database failed.
    #[error("opening the database: {0}")]
    Store(#[source] StoreError),
    /// Loading the coordinator state (or a random source) failed.
    #[error("loading the coordinator state: {0}")]
    Service(#[from] ServiceError),
    /// Joining the fabric failed (boxed: the link's error is large and rare).
    #[error("starting the fabric: {0}")]
    Link(#[source] Box<LinkError>),
    /// Setting up fabric admission (the coordinator's certificate and issuer) failed.
    #[error("fabric admission: {0}")]
    Admission(#[from] crate::admission::AdmissionError),
    /// The fabric did not listen on any address in time.
    #[error("the fabric did not start listening within {0:?}")]
    FabricSilent(Duration),
    /// Binding the REST listener failed.
    #[error("listening on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A task of the server did not finish cleanly.
    #[error("a server task failed: {0}")]
    Task(#[source] tokio::task::JoinError),
}

/// A running server. It stops when the shutdown token given to [`start`] is cancelled;
/// [`Server::wait`] waits for every part to finish.
#[derive(Debug)]
pub struct Server {
    api_addr: SocketAddr,
    fabric_addrs: Vec<Multiaddr>,
    token: String,
    token_created: bool,
    notices: Vec<String>,
    data_dir: PathBuf,
    service: ServiceHandle,
    http: floe_httpd::Server,
    tls: bool,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), ServerError>>,
}

impl Server {
    /// The address the REST API listens on.
    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    /// The REST API's base URL (`http://ADDR`, or `https://ADDR` with TLS).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.api_addr)
    }

    /// The fabric addresses devices bootstrap to, each ending in `/p2p/<peer id>` (also in
    /// `DATA_DIR/fabric-addrs`).
    pub fn fabric_addrs(&self) -> &[Multiaddr] {
        &self.fabric_addrs
    }

    /// The API bearer token.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Whether the token was created at this start (tell the operator where its file is).
    pub fn token_created(&self) -> bool {
        self.token_created
    }

    /// What this start created in the data directory (keys, the trust store), one sentence
    /// each.
    pub fn notices(&self) -> &[String] {
        &self.notices
    }

    /// The data directory.
    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }

    /// The service's handle (in-process callers and tests).
    pub fn service(&self) -> &ServiceHandle {
        &self.service
    }

    /// What the REST listener counted (connections accepted, evicted for room, refused,
    /// closed at a timeout).
    pub fn http_stats(&self) -> floe_httpd::Stats {
        self.http.stats()
    }

    /// Asks every part to stop (the same as cancelling the token given to [`start`]).
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Waits until the server has stopped: the REST listener drained, the service actor and
    /// the fabric bridge finished.
    pub async fn wait(self) -> Result<(), ServerError> {
        self.task.await.map_err(ServerError::Task)?
    }
}

/// Starts the coordinator on the current tokio runtime (multi-threaded: the service actor
/// holds one worker while it runs a long step) and returns once the REST API and the fabric
/// listen. Opening the store and loading the state run on the blocking pool.
pub async fn start(
    config: ServerConfig,
    shutdown: CancellationToken,
) -> Result<Server, ServerError> {
    config.check()?;
    let mut notices = Vec::new();
    let mut files = config.tls.clone();
    if let Some(names) = &config.tls_self_signed {
        if files.is_some() {
            return Err(ServerError::Config {
                field: "tls_self_signed",
                message:
                    "give a certificate (--tls-cert, --tls-key) or --tls-self-signed, not both"
                        .into(),
            });
        }
        secrets::data_dir(&config.data_dir)?;
        let dir = config.data_dir.join("tls");
        let made =
            crate::tls::selfsigned::ensure(&dir, names).map_err(|message| ServerError::Tls {
                file: dir.display().to_string(),
                message,
            })?;
        notices.push(format!(
            "{} the self-signed TLS certificate {} (fingerprint {}); clients pin it with \
             `floe --pin {}` or trust the file with --ca",
            if made.created { "made" } else { "serving" },
            made.cert.display(),
            made.fingerprint,
            made.fingerprint,
        ));
        files = Some(TlsFiles {
            cert: made.cert,
            key: made.key,
        });
    }
    // The certificate is read before anything starts, so a bad file stops nothing.
    let tls = files.as_ref().map(tls_config).transpose()?;
    let tls_on = tls.is_some();
    // Join strings carry the leaf certificate's pin (`GET /join-info`).
    let tls_pin = files.as_ref().map(leaf_pin).transpose()?;
    let http =
        floe_httpd::Server::with_timeout_answer(config.http, timeout_answer).map_err(|e| {
            ServerError::Config {
                field: e.setting,
                message: e.message,
            }
        })?;
    let dir = config.data_dir.clone();
    secrets::data_dir(&dir)?;
    let (token, token_created) = secrets::api_token(&dir)?;
    let keys = secrets::keys_and_trust(&dir)?;
    let mut service_config = ServiceConfig::new(dir.clone());
    service_config.offline_after = config.offline_after;
    service_config.directive_ttl_secs = config.directive_ttl / 1000;
    service_config.event_ring = config.event_ring;
    service_config.hook_attempts = config.hook_attempts;
    if let Some(path) = &config.hook_ca {
        let pem = std::fs::read(path).map_err(|e| ServerError::Config {
            field: "hook_ca",
            message: format!("reading {}: {e}", path.display()),
        })?;
        let roots = crate::tls::ca_roots(&pem).map_err(|message| ServerError::Config {
            field: "hook_ca",
            message: format!("{}: {message}", path.display()),
        })?;
        service_config.hook_roots = Some(std::sync::Arc::new(roots));
    }
    service_config.health_retention = config.health_retention;
    service_config.preflight = config.preflight;
    service_config.rollback_verify_timeout = config.rollback_verify_timeout;
    let db = dir.join("floe.db");
    let (release, coordinator) = (keys.release, keys.coordinator);
    let coordinator_trusted = crate::admission::trusted(&coordinator.verifying_key());
    let core = tokio::task::spawn_blocking(move || -> Result<Core, ServerError> {
        let store = Store::open(&db).map_err(ServerError::Store)?;
        Ok(Core::new(store, service_config, release, coordinator)?)
    })
    .await
    .map_err(ServerError::Task)??;
    let (handle, service_task) = service::spawn(core, shutdown.clone());
    // Whatever fails from here on stops what has started.
    let started = start_network(&config, &handle, coordinator_trusted, &shutdown).await;
    let (fabric_addrs, bridge, listener) = match started {
        Ok(parts) => parts,
        Err(e) => {
            shutdown.cancel();
            let _ = service_task.await;
            return Err(e);
        }
    };
    let api_addr = listener
        .local_addr()
        .map_err(|source| ServerError::Listen {
            addr: config.listen,
            source,
        })?;
    // `GET /join-info` hands these to `floe enroll-token create --join`.
    let join = api::JoinSource {
        trust_dir: dir.join("trust"),
        fabric: fabric_addrs.iter().map(ToString::to_string).collect(),
        tls_pin,
    };
    let app = api::router_with_http(
        handle.clone(),
        token.clone(),
        Some(join),
        config.api,
        Some(http.clone()),
    );
    let stop = shutdown.clone();
    let serving = http.clone();
    let task = tokio::spawn(async move {
        // Header, idle and request timeouts and the connection cap (ARCHITECTURE.md,
        // "Server limits"); accept errors are retried, so only the shutdown ends it.
        match tls {
            Some(tls) => serving.serve_tls(listener, app, stop.clone(), tls).await,
            None => serving.serve(listener, app, stop.clone()).await,
        }
        tracing::info!(stats = ?serving.stats(), "REST listener stopped");
        stop.cancel();
        let service = service_task.await.map_err(ServerError::Task);
        let bridged = bridge.await.map_err(ServerError::Task);
        if let Ok(stats) = &bridged {
            tracing::info!(?stats, "fabric bridge stopped");
        }
        service?;
        bridged.map(|_| ())
    });
    Ok(Server {
        api_addr,
        fabric_addrs,
        token,
        token_created,
        notices: notices.into_iter().chain(keys.notices).collect(),
        data_dir: dir,
        service: handle,
        http,
        tls: tls_on,
        shutdown,
        task,
    })
}

/// The network side: the fabric link (its addresses written to `DATA_DIR/fabric-addrs`), the
/// bridge between it and the service, and the bound REST listener.
async fn start_network(
    config: &ServerConfig,
    handle: &ServiceHandle,
    coordinator_trusted: floe_wire::proto::TrustedKey,
    shutdown: &CancellationToken,
) -> Result<
    (
        Vec<Multiaddr>,
        JoinHandle<bridge::BridgeStats>,
        tokio::net::TcpListener,
    ),
    ServerError,
> {
    let mut link_cfg = LinkConfig::new(config.data_dir.join("fabric"));
    link_cfg.listen = config.fabric_listen.clone();
    link_cfg.bootstrap = config.fabric_bootstrap.clone();
    link_cfg.mdns = config.mdns;
    link_cfg.republish = config.republish;
    link_cfg.direct = Some(direct_handler(
        handle.clone(),
        tokio::runtime::Handle::current(),
    ));
    // Only enrolled devices and coordinators take part (ARCHITECTURE.md, "Fabric
    // admission"): the coordinator's certificate, and the issuer of the devices'.
    crate::admission::configure(&mut link_cfg, handle, coordinator_trusted).await?;
    let (link, reports) = link::spawn(link_cfg, shutdown.clone())
        .await
        .map_err(|e| ServerError::Link(Box::new(e)))?;
    let peer = link.peer_id();
    let fabric_addrs: Vec<Multiaddr> = wait_for_listen(&link)
        .await?
        .iter()
        .map(|a| with_peer(a, peer))
        .collect();
    secrets::write_fabric_addrs(&config.data_dir, &fabric_addrs)?;
    let bridge = tokio::spawn(bridge::run(
        handle.clone(),
        link,
        reports,
        shutdown.clone(),
        config.republish,
    ));
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServerError::Listen {
            addr: config.listen,
            source,
        })?;
    Ok((fabric_addrs, bridge, listener))
}

/// The REST answer to a request that ran past the request timeout: 503 `busy` in the API's
/// error shape. Work a handler already handed to the service actor is not undone (the actor
/// runs every call it took to the end), so the message says to read the state back.
fn timeout_answer(limit: Duration) -> axum::response::Response {
    use axum::response::IntoResponse;
    let body = api::types::ErrorBody {
        error: api::types::ErrorDetail {
            code: "busy".into(),
            message: format!(
                "the request did not finish within {}s (a slow body or a busy server); a change \
                 it asked for may still complete: read the state back before retrying",
                limit.as_secs_f64()
            ),
            field: None,
        },
    };
    (
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(body),
    )
        .into_response()
}

/// How long the fabric may take to listen.
const FABRIC_LISTEN_WAIT: Duration = Duration::from_secs(10);

/// Waits until the link listens on at least one address.
async fn wait_for_listen(link: &link::Link) -> Result<Vec<Multiaddr>, ServerError> {
    let until = tokio::time::Instant::now() + FABRIC_LISTEN_WAIT;
    loop {
        let addrs = link
            .listen_addrs()
            .await
            .map_err(|e| ServerError::Link(Box::new(e)))?;
        if !addrs.is_empty() {
            return Ok(addrs);
        }
        if tokio::time::Instant::now() >= until {
            return Err(ServerError::FabricSilent(FABRIC_LISTEN_WAIT));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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

#[cfg(test)]
mod tls_tests;
