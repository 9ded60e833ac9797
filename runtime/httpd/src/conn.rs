//! One connection: its phase and deadline, the registry that caps how many are open and picks
//! which one makes room, and the task that serves it with hyper.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, Request, Response, header};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::{Counters, Limits, Shared, WRITE_GRACE};

/// Where a connection is in its request cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Receiving a request head (from accept, or from the first byte after idle).
    Head,
    /// Kept alive with no request in flight and no byte of a next one.
    Idle,
    /// A request is being handled or its response written.
    Busy,
}

#[derive(Debug)]
struct State {
    phase: Phase,
    since: Instant,
}

/// A connection as the registry and its task see it.
#[derive(Debug)]
pub(crate) struct Conn {
    id: u64,
    /// The client's address (canonical: an IPv4-mapped IPv6 address is its IPv4 address).
    ip: IpAddr,
    state: Mutex<State>,
    /// Wakes the connection's task: its phase changed, or it was evicted.
    wake: Notify,
    evicted: AtomicBool,
}

impl Conn {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set(&self, phase: Phase) {
        let mut s = self.lock();
        s.phase = phase;
        s.since = Instant::now();
        drop(s);
        self.wake.notify_one();
    }

    /// Bytes arrived: an idle connection starts receiving a head.
    fn on_bytes(&self) {
        let idle = self.lock().phase == Phase::Idle;
        if idle {
            self.set(Phase::Head);
        }
    }

    /// The phase and when it runs out.
    fn deadline(&self, limits: &Limits) -> (Phase, Instant) {
        let s = self.lock();
        let allowed = match s.phase {
            Phase::Head => limits.header_timeout,
            Phase::Idle => limits.idle_timeout,
            Phase::Busy => limits.request_timeout + WRITE_GRACE,
        };
        (s.phase, s.since + allowed)
    }
}

/// A connection admitted by the registry.
#[derive(Debug)]
pub(crate) struct Admitted {
    pub(crate) conn: Arc<Conn>,
    /// Whether another connection was closed to make room.
    pub(crate) evicted: bool,
}

/// Why a new connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Its address holds the per-address cap already.
    PerAddr,
    /// Every open connection stayed busy for the accept wait (or the server stopped).
    Busy,
}

/// The open connections, at most `cap`, at most `per_addr` of one address.
#[derive(Debug)]
pub(crate) struct Registry {
    cap: usize,
    per_addr: usize,
    inner: Mutex<Inner>,
    /// Signalled when a connection closes or a request finishes (room may be made).
    changed: Notify,
}

#[derive(Debug, Default)]
struct Inner {
    next: u64,
    live: HashMap<u64, Arc<Conn>>,
    /// Open connections per address; an address leaves when its count reaches zero, so the
    /// map never holds more entries than `live`.
    by_addr: HashMap<IpAddr, usize>,
}

impl Inner {
    /// Takes `id` out of the table and its address's count; the connection, if it was there.
    fn take(&mut self, id: u64) -> Option<Arc<Conn>> {
        let conn = self.live.remove(&id)?;
        if let std::collections::hash_map::Entry::Occupied(mut e) = self.by_addr.entry(conn.ip) {
            *e.get_mut() = e.get().saturating_sub(1);
            if *e.get() == 0 {
                e.remove();
            }
        }
        Some(conn)
    }
}

impl Registry {
    pub(crate) fn new(cap: usize, per_addr: usize) -> Self {
        Registry {
            cap,
            per_addr,
            inner: Mutex::new(Inner::default()),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().live.len()
    }

    /// Admits a new connection from `ip` if its address is under the per-address cap and
    /// there is room or an open connection without a request in flight can make room (the one
    /// waiting longest is evicted).
    fn try_admit(&self, ip: IpAddr) -> Result<Admitted, Refused> {
        let mut inner = self.lock();
        if inner.by_addr.get(&ip).copied().unwrap_or(0) >= self.per_addr {
            return Err(Refused::PerAddr);
        }
        let mut evicted = false;
        if inner.live.len() >= self.cap {
            let victim = inner
                .live
                .values()
                .filter_map(|c| {
                    let s = c.lock();
                    (s.phase != Phase::Busy).then_some((s.since, c.id))
                })
                .min()
                .map(|(_, id)| id);
            let conn = victim.and_then(|id| inner.take(id)).ok_or(Refused::Busy)?;
            conn.evicted.store(true, Ordering::Release);
            conn.wake.notify_one();
            evicted = true;
        }
        let id = inner.next;
        inner.next = inner.next.wrapping_add(1);
        let conn = Arc::new(Conn {
            id,
            ip,
            state: Mutex::new(State {
                phase: Phase::Head,
                since: Instant::now(),
            }),
            wake: Notify::new(),
            evicted: AtomicBool::new(false),
        });
        inner.live.insert(id, conn.clone());
        *inner.by_addr.entry(ip).or_insert(0) += 1;
        Ok(Admitted { conn, evicted })
    }

    /// Admits a new connection from `ip`: refused at once when its address is at the
    /// per-address cap; otherwise waiting up to `wait` for room.
    pub(crate) async fn admit(
        &self,
        ip: IpAddr,
        wait: Duration,
        stop: &CancellationToken,
    ) -> Result<Admitted, Refused> {
        let ip = ip.to_canonical();
        let until = Instant::now() + wait;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            match self.try_admit(ip) {
                Ok(a) => return Ok(a),
                Err(Refused::PerAddr) => return Err(Refused::PerAddr),
                Err(Refused::Busy) => {}
            }
            tokio::select! {
                _ = changed => {}
                _ = tokio::time::sleep_until(until) => return Err(Refused::Busy),
                _ = stop.cancelled() => return Err(Refused::Busy),
            }
        }
    }

    fn remove(&self, id: u64) {
        self.lock().take(id);
        self.changed.notify_waiters();
    }

    /// Waits up to `limit` for every connection to close; whether they did.
    pub(crate) async fn wait_empty(&self, limit: Duration) -> bool {
        let until = Instant::now() + limit;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.len() == 0 {
                return true;
            }
            tokio::select! {
                _ = changed => {}
                _ = tokio::time::sleep_until(until) => return self.len() == 0,
            }
        }
    }
}

/// Marks a connection busy while it lives (from the complete head until the response body is
/// written or dropped).
#[derive(Debug)]
struct Busy {
    conn: Arc<Conn>,
    shared: Arc<Shared>,
}

impl Busy {
    fn enter(conn: Arc<Conn>, shared: Arc<Shared>) -> Self {
        conn.set(Phase::Busy);
        Busy { conn, shared }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.conn.set(Phase::Idle);
        self.shared.registry.changed.notify_waiters();
    }
}

/// A response body that keeps its connection busy until it is written.
#[derive(Debug)]
struct Guarded {
    body: Body,
    _busy: Busy,
}

impl http_body::Body for Guarded {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The per-connection service: the router under the request timeout.
#[derive(Debug, Clone)]
struct Svc {
    router: Router,
    conn: Arc<Conn>,
    shared: Arc<Shared>,
    peer: SocketAddr,
}

impl hyper::service::Service<Request<Incoming>> for Svc {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let busy = Busy::enter(self.conn.clone(), self.shared.clone());
        let shared = self.shared.clone();
        let router = self.router.clone();
        let mut req = req.map(Body::new);
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(self.peer));
        Box::pin(async move {
            let limit = shared.limits.request_timeout;
            let resp = match tokio::time::timeout(limit, router.oneshot(req)).await {
                Ok(Ok(r)) => r,
                Ok(Err(never)) => match never {},
                Err(_) => {
                    Counters::add(&shared.counters.request_timeouts);
                    tracing::debug!(?limit, "request timed out");
                    let mut r = (shared.answer)(limit);
                    r.headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                    r
                }
            };
            Ok(resp.map(|body| Body::new(Guarded { body, _busy: busy })))
        })
    }
}

/// The socket, telling its connection when bytes arrive.
#[derive(Debug)]
struct Tracked {
    stream: TcpStream,
    conn: Arc<Conn>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.stream).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.conn.on_bytes();
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// The connection's byte stream: plain TCP, or TLS over it (feature `tls`).
#[derive(Debug)]
enum Io {
    Plain(Tracked),
    #[cfg(feature = "tls")]
    Tls(Box<tokio_rustls::server::TlsStream<Tracked>>),
}

macro_rules! each_io {
    ($self:expr, $s:ident => $e:expr) => {
        match $self.get_mut() {
            Io::Plain($s) => $e,
            #[cfg(feature = "tls")]
            Io::Tls($s) => $e,
        }
    };
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        each_io!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        each_io!(self, s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        each_io!(self, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        each_io!(self, s => Pin::new(s).poll_shutdown(cx))
    }
}

/// How a connection's bytes are carried: as they come, or through a TLS handshake first.
#[derive(Clone)]
pub(crate) enum Transport {
    Plain,
    #[cfg(feature = "tls")]
    Tls(tokio_rustls::TlsAcceptor),
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Transport::Plain => f.write_str("Plain"),
            #[cfg(feature = "tls")]
            Transport::Tls(_) => f.write_str("Tls"),
        }
    }
}

/// Runs the TLS handshake in the head phase: it must finish within the header timeout, and
/// the connection may be evicted or the server stopped meanwhile. `None`: it did not finish.
#[cfg(feature = "tls")]
async fn handshake(
    acceptor: &tokio_rustls::TlsAcceptor,
    tracked: Tracked,
    conn: &Conn,
    shared: &Shared,
    hard: &CancellationToken,
    peer: SocketAddr,
) -> Option<Io> {
    let deadline = conn.deadline(&shared.limits).1;
    let accept = acceptor.accept(tracked);
    tokio::pin!(accept);
    loop {
        let wake = conn.wake.notified();
        tokio::pin!(wake);
        wake.as_mut().enable();
        if conn.evicted.load(Ordering::Acquire) {
            return None;
        }
        tokio::select! {
            r = accept.as_mut() => match r {
                Ok(s) => return Some(Io::Tls(Box::new(s))),
                Err(e) => {
                    Counters::add(&shared.counters.tls_failures);
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return None;
                }
            },
            _ = wake => {}
            _ = tokio::time::sleep_until(deadline) => {
                Counters::add(&shared.counters.header_timeouts);
                tracing::debug!(%peer, "TLS handshake not done within the header timeout");
                return None;
            }
            _ = hard.cancelled() => return None,
        }
    }
}

/// Why a connection ended.
#[derive(Debug)]
enum End {
    Finished(Result<(), hyper::Error>),
    Expired(Phase),
    Evicted,
    Aborted,
}

/// Serves one connection until the client closes it, a deadline passes, it is evicted or
/// the server stops.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run(
    conn: Arc<Conn>,
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    hard: CancellationToken,
    transport: Transport,
) {
    let limits = shared.limits;
    let _ = stream.set_nodelay(true);
    let tracked = Tracked {
        stream,
        conn: conn.clone(),
    };
    let io = match transport {
        Transport::Plain => Io::Plain(tracked),
        #[cfg(feature = "tls")]
        Transport::Tls(acceptor) => {
            match handshake(&acceptor, tracked, &conn, &shared, &hard, peer).await {
                Some(io) => io,
                None => {
                    shared.registry.remove(conn.id);
                    return;
                }
            }
        }
    };
    let io = TokioIo::new(io);
    let svc = Svc {
        router,
        conn: conn.clone(),
        shared: shared.clone(),
        peer,
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.idle_timeout + limits.header_timeout)
        .keep_alive(true)
        .max_buf_size(limits.max_head_bytes);
    // Boxed, not pinned on the stack, so it can be dropped (closing the socket) before the
    // registry counts the room as free.
    let mut served = Box::pin(builder.serve_connection(io, svc));
    let mut draining = false;
    let end = loop {
        let wake = conn.wake.notified();
        tokio::pin!(wake);
        wake.as_mut().enable();
        if conn.evicted.load(Ordering::Acquire) {
            break End::Evicted;
        }
        let (phase, deadline) = conn.deadline(&limits);
        if Instant::now() >= deadline {
            break End::Expired(phase);
        }
        tokio::select! {
            r = served.as_mut() => break End::Finished(r),
            _ = wake => {}
            _ = tokio::time::sleep_until(deadline) => {}
            _ = shutdown.cancelled(), if !draining => {
                draining = true;
                served.as_mut().graceful_shutdown();
            }
            _ = hard.cancelled() => break End::Aborted,
        }
    };
    let counters = &shared.counters;
    match end {
        End::Finished(Ok(())) | End::Evicted | End::Aborted => {}
        End::Finished(Err(e)) if e.is_timeout() => Counters::add(&counters.header_timeouts),
        End::Finished(Err(e)) => tracing::debug!(%peer, error = %e, "connection failed"),
        End::Expired(phase) => {
            let counter = match phase {
                Phase::Head => &counters.header_timeouts,
                Phase::Idle => &counters.idle_timeouts,
                Phase::Busy => &counters.request_timeouts,
            };
            Counters::add(counter);
            tracing::debug!(%peer, ?phase, "connection closed at its deadline");
        }
    }
    // Close the socket before the registry counts the room as free.
    drop(served);
    shared.registry.remove(conn.id);
}
