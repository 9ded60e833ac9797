//! The HTTP/1 server loop both Floe programs use for their TCP listeners (the coordinator's
//! REST API, floed's `/health` and `/metrics`), with the limits `axum::serve` does not have.
//!
//! Every connection is in one of three phases, and each phase has a deadline:
//! - **head**: from accept, or from the first byte of a next request, until the request head
//!   is complete: [`Limits::header_timeout`] (a slow-header client is dropped);
//! - **idle**: a kept-alive connection with no request in flight and no byte of a next one:
//!   [`Limits::idle_timeout`];
//! - **busy**: from the complete head until the last byte of the response: the handler
//!   (reading the body included) gets [`Limits::request_timeout`], after which the client gets
//!   the server's timeout answer (503) and the connection closes; a client that does not read
//!   that answer is dropped [`WRITE_GRACE`] later.
//!
//! hyper's own `header_read_timeout` starts when a connection goes idle and stops when a head
//! is complete, so it bounds idle and head together; it is set to their sum as a backstop.
//!
//! **The connection cap** ([`Limits::max_connections`]) bounds open connections, so a flood of
//! sockets cannot exhaust file descriptors or memory. At the cap, a new connection takes the
//! place of the open connection that has waited longest without a request in flight (idle, or
//! still sending its head): that one is closed, the way nginx reuses keep-alive connections
//! when it runs out. A connection whose request is being handled is never closed for room, so
//! a device report POST that has sent its head is answered however many sockets are open; an
//! attacker's idle or slow-header sockets make room for it instead of shutting it out. Only
//! when every connection is busy does a new one wait, up to [`Limits::accept_wait`], for a
//! request to finish; otherwise it is closed (a device tries again at its next heartbeat).
//! While it waits, further connections stay in the kernel's accept queue.
//!
//! **The per-address cap** ([`Limits::max_connections_per_addr`]) bounds the open connections
//! of one client IP address (IPv4-mapped IPv6 addresses count as their IPv4 address). A
//! connection past it is closed at accept, before a byte is read, without evicting anyone, and
//! counted in [`Stats::refused_per_addr`]; so one address cannot fill the table and churn
//! every other client's kept-alive connections out. It is per address, not per network: an
//! IPv6 client with a whole prefix can still spread over many addresses (the global cap and
//! eviction still bound that).
//!
//! Accepted connections carry their peer address as `axum::extract::ConnectInfo<SocketAddr>`.

mod conn;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Response, StatusCode, header};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How long a busy connection may take to write its answer after the request timeout.
pub const WRITE_GRACE: Duration = Duration::from_secs(5);
/// The longest timeout [`Limits::check`] accepts (one hour).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);
/// The most connections [`Limits::check`] accepts.
pub const MAX_CONNECTIONS: usize = 65_536;
/// The smallest read buffer hyper accepts (it refuses anything smaller).
pub const MIN_HEAD_BYTES: usize = 8 * 1024;
/// The largest read buffer [`Limits::check`] accepts.
pub const MAX_HEAD_BYTES: usize = 1 << 20;

/// The limits of one listener. ARCHITECTURE.md ("Server limits") gives the reasons for the
/// defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// How long a client may take to send a request head.
    pub header_timeout: Duration,
    /// How long a kept-alive connection may wait for its next request.
    pub idle_timeout: Duration,
    /// How long a handler may take, reading the request body included.
    pub request_timeout: Duration,
    /// The most open connections.
    pub max_connections: usize,
    /// The most open connections of one client IP address (1 to `max_connections`).
    pub max_connections_per_addr: usize,
    /// How long a new connection may wait for room when every open one is busy.
    pub accept_wait: Duration,
    /// The read buffer of a connection, which a request head must fit in (a larger head gets
    /// 431).
    pub max_head_bytes: usize,
}

impl Limits {
    /// The coordinator's REST API: operators' CLIs and devices' reports, over a WAN.
    pub const fn coordinator() -> Self {
        Limits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(60),
            max_connections: 512,
            // An eighth of the table: a site's NAT gateway or a CI runner keeps many at once,
            // one address cannot take the table.
            max_connections_per_addr: 64,
            accept_wait: Duration::from_secs(1),
            max_head_bytes: 64 * 1024,
        }
    }

    /// floed's health listener: a local monitoring agent scraping `/health` and `/metrics`.
    pub const fn device() -> Self {
        Limits {
            header_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(5),
            max_connections: 16,
            // Half the table: a scraper and a local agent fit, one flooder leaves room.
            max_connections_per_addr: 8,
            accept_wait: Duration::from_secs(1),
            max_head_bytes: 16 * 1024,
        }
    }

    /// Checks every limit is in range; the error names the setting and the range.
    pub fn check(&self) -> Result<(), LimitsError> {
        let timeouts = [
            ("header_timeout", self.header_timeout),
            ("idle_timeout", self.idle_timeout),
            ("request_timeout", self.request_timeout),
        ];
        for (setting, d) in timeouts {
            if d.is_zero() || d > MAX_TIMEOUT {
                return Err(LimitsError::new(
                    setting,
                    format!("{d:?} is out of range: above zero and at most {MAX_TIMEOUT:?}"),
                ));
            }
        }
        if self.accept_wait > MAX_TIMEOUT {
            return Err(LimitsError::new(
                "accept_wait",
                format!("{:?} is above {MAX_TIMEOUT:?}", self.accept_wait),
            ));
        }
        if self.max_connections == 0 || self.max_connections > MAX_CONNECTIONS {
            return Err(LimitsError::new(
                "max_connections",
                format!(
                    "{} is out of range: 1 to {MAX_CONNECTIONS}",
                    self.max_connections
                ),
            ));
        }
        if self.max_connections_per_addr == 0
            || self.max_connections_per_addr > self.max_connections
        {
            return Err(LimitsError::new(
                "max_connections_per_addr",
                format!(
                    "{} is out of range: 1 to max_connections ({})",
                    self.max_connections_per_addr, self.max_connections
                ),
            ));
        }
        if !(MIN_HEAD_BYTES..=MAX_HEAD_BYTES).contains(&self.max_head_bytes) {
            return Err(LimitsError::new(
                "max_head_bytes",
                format!(
                    "{} is out of range: {MIN_HEAD_BYTES} to {MAX_HEAD_BYTES}",
                    self.max_head_bytes
                ),
            ));
        }
        Ok(())
    }
}

/// A limit out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting}: {message}")]
pub struct LimitsError {
    /// The setting.
    pub setting: &'static str,
    /// What is wrong with it.
    pub message: String,
}

impl LimitsError {
    fn new(setting: &'static str, message: String) -> Self {
        LimitsError { setting, message }
    }
}

/// Makes the answer to a request whose handler ran past the request timeout (the limit is
/// given). The server adds `Connection: close`.
pub type TimeoutAnswer = fn(Duration) -> Response<Body>;

/// The default timeout answer: 503 with a plain-text sentence.
pub fn plain_timeout_answer(limit: Duration) -> Response<Body> {
    let mut r = Response::new(Body::from(format!(
        "the request did not finish within {limit:?}\n"
    )));
    *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// What a server counted since it was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Connections accepted and served.
    pub accepted: u64,
    /// Open connections closed to make room for a new one at the cap.
    pub evicted: u64,
    /// New connections closed because every open one stayed busy for the accept wait.
    pub refused: u64,
    /// New connections closed at accept because their address held
    /// [`Limits::max_connections_per_addr`] already.
    pub refused_per_addr: u64,
    /// Connections closed because their request head was not complete in time.
    pub header_timeouts: u64,
    /// Kept-alive connections closed after waiting too long for a next request.
    pub idle_timeouts: u64,
    /// Requests answered with the timeout answer, or dropped while writing it.
    pub request_timeouts: u64,
    /// Failed accepts (for example the process ran out of file descriptors).
    pub accept_errors: u64,
    /// TLS handshakes that failed (a plain-HTTP client on the TLS port, an untrusted
    /// certificate); handshakes past the header timeout count as header timeouts.
    pub tls_failures: u64,
}

#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    evicted: AtomicU64,
    refused: AtomicU64,
    refused_per_addr: AtomicU64,
    header_timeouts: AtomicU64,
    idle_timeouts: AtomicU64,
    request_timeouts: AtomicU64,
    accept_errors: AtomicU64,
    tls_failures: AtomicU64,
}

impl Counters {
    fn add(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> Stats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            accepted: get(&self.accepted),
            evicted: get(&self.evicted),
            refused: get(&self.refused),
            refused_per_addr: get(&self.refused_per_addr),
            header_timeouts: get(&self.header_timeouts),
            idle_timeouts: get(&self.idle_timeouts),
            request_timeouts: get(&self.request_timeouts),
            accept_errors: get(&self.accept_errors),
            tls_failures: get(&self.tls_failures),
        }
    }
}

/// What every connection task shares.
#[derive(Debug)]
struct Shared {
    limits: Limits,
    answer: TimeoutAnswer,
    counters: Counters,
    registry: conn::Registry,
}

/// A server with its limits and counters. Cheap to clone; clones share the counters.
#[derive(Debug, Clone)]
pub struct Server {
    shared: Arc<Shared>,
}

impl Server {
    /// A server with `limits` (checked) and the plain timeout answer.
    pub fn new(limits: Limits) -> Result<Self, LimitsError> {
        Server::with_timeout_answer(limits, plain_timeout_answer)
    }

    /// A server with `limits` (checked) whose timed-out requests get `answer`'s response.
    pub fn with_timeout_answer(limits: Limits, answer: TimeoutAnswer) -> Result<Self, LimitsError> {
        limits.check()?;
        Ok(Server {
            shared: Arc::new(Shared {
                limits,
                answer,
                counters: Counters::default(),
                registry: conn::Registry::new(
                    limits.max_connections,
                    limits.max_connections_per_addr,
                ),
            }),
        })
    }

    /// The limits it serves with.
    pub fn limits(&self) -> Limits {
        self.shared.limits
    }

    /// What it counted so far.
    pub fn stats(&self) -> Stats {
        self.shared.counters.snapshot()
    }

    /// How many connections are open now.
    pub fn open_connections(&self) -> usize {
        self.shared.registry.len()
    }

    /// Serves `router` on `listener` until `shutdown` is cancelled, then stops accepting,
    /// lets requests in flight finish (up to the request timeout plus [`WRITE_GRACE`]) and
    /// closes what is left. Accept errors (a full file descriptor table) are logged and
    /// retried after a short pause; they never stop the server.
    pub async fn serve(&self, listener: TcpListener, router: Router, shutdown: CancellationToken) {
        self.serve_on(listener, router, shutdown, conn::Transport::Plain)
            .await
    }

    /// [`Server::serve`] over TLS (feature `tls`): each connection's handshake runs in its
    /// head phase, so it must finish within the header timeout, counts against the
    /// connection cap and may be evicted like a slow head. A failed handshake (a plain-HTTP
    /// client, a client that does not trust the certificate) closes the connection and is
    /// counted in [`Stats::tls_failures`].
    #[cfg(feature = "tls")]
    pub async fn serve_tls(
        &self,
        listener: TcpListener,
        router: Router,
        shutdown: CancellationToken,
        tls: Arc<tokio_rustls::rustls::ServerConfig>,
    ) {
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        self.serve_on(listener, router, shutdown, conn::Transport::Tls(acceptor))
            .await
    }

    async fn serve_on(
        &self,
        listener: TcpListener,
        router: Router,
        shutdown: CancellationToken,
        transport: conn::Transport,
    ) {
        let hard = CancellationToken::new();
        let mut accept_errors = 0u64;
        loop {
            let (stream, peer) = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        if !per_connection(&e) {
                            Counters::add(&self.shared.counters.accept_errors);
                            accept_errors += 1;
                            if accept_errors.is_power_of_two() {
                                tracing::warn!(error = %e, count = accept_errors, "accept failed");
                            }
                            tokio::select! {
                                _ = shutdown.cancelled() => break,
                                _ = tokio::time::sleep(ACCEPT_PAUSE) => {}
                            }
                        }
                        continue;
                    }
                },
            };
            let admitted = match self
                .shared
                .registry
                .admit(peer.ip(), self.shared.limits.accept_wait, &shutdown)
                .await
            {
                Ok(a) => a,
                Err(conn::Refused::PerAddr) => {
                    // Closed before a byte is read; logged at powers of two so a flood does
                    // not flood the log.
                    let n = self
                        .shared
                        .counters
                        .refused_per_addr
                        .fetch_add(1, Ordering::Relaxed)
                        + 1;
                    if n.is_power_of_two() {
                        tracing::warn!(
                            %peer,
                            cap = self.shared.limits.max_connections_per_addr,
                            refused = n,
                            "connection closed: its address is at the per-address cap"
                        );
                    }
                    continue;
                }
                Err(conn::Refused::Busy) => {
                    Counters::add(&self.shared.counters.refused);
                    tracing::debug!(%peer, "connection closed: every connection is busy");
                    continue;
                }
            };
            if admitted.evicted {
                Counters::add(&self.shared.counters.evicted);
            }
            Counters::add(&self.shared.counters.accepted);
            tokio::spawn(conn::run(
                admitted.conn,
                stream,
                peer,
                router.clone(),
                self.shared.clone(),
                shutdown.clone(),
                hard.clone(),
                transport.clone(),
            ));
        }
        let limits = self.shared.limits;
        let drain = limits.request_timeout + WRITE_GRACE;
        if !self.shared.registry.wait_empty(drain).await {
            tracing::warn!(
                open = self.shared.registry.len(),
                "closing connections still open after {drain:?}"
            );
            hard.cancel();
            let _ = self
                .shared
                .registry
                .wait_empty(Duration::from_secs(1))
                .await;
        }
    }
}

/// How long the accept loop pauses after an error that is not the connection's own.
const ACCEPT_PAUSE: Duration = Duration::from_millis(50);

/// Whether an accept error concerns only the connection being accepted (retry at once).
fn per_connection(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted
    )
}

/// rustls, as `serve_tls` takes its configuration (feature `tls`).
#[cfg(feature = "tls")]
pub use tokio_rustls::rustls;

/// The peer address handlers find in `axum::extract::ConnectInfo`.
pub type Peer = axum::extract::ConnectInfo<SocketAddr>;

#[cfg(test)]
mod per_addr_tests;
#[cfg(test)]
mod tests;
