//! The local HTTP surfaces of floed.
//!
//! Two listeners, two audiences. The health listener (TCP, `127.0.0.1:9100` by default) serves
//! `GET /health` (200 when healthy or degraded, 503 when unhealthy, the reference's JSON shape)
//! and `GET /metrics` (Prometheus text) to monitoring. The control listener is a Unix socket in
//! the data directory (`floed.sock`, mode 0660) so only root and the socket's group can reach
//! it; `floed install`, `status` and `rollback` talk to the daemon through it. The caller is
//! known from the kernel (`SO_PEERCRED`, [`crate::peer`]): installing and rolling back need
//! root, the daemon's user or the configured operator group, the audit actor is the caller's
//! uid, and a caller may only install a source it can read itself.
//!
//! Handlers never touch the agent: they read the latest published report from a `watch`
//! channel, or send a command to the main loop over a bounded channel (capacity
//! [`COMMAND_QUEUE`]); when it is full the request is refused with 503 rather than queued.
//! `GET /status` does not wait for the main loop at all, which may be inside a smoke test or
//! an install for seconds: it reads the state database read-only (SQLite in WAL mode lets it
//! read while the daemon writes) on a blocking thread, with the latest published health.
//! The commands and the published report are [`crate::control`]'s and the status view is
//! [`crate::status`]'s, so this module does not depend on the agent, nor the agent on it.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot, watch};

use crate::control::{Command, Outcome, Published};
use crate::health::Status;
use crate::peer::{Caller, ControlPolicy, PeerCred};
use crate::status::{StatusView, read_status_with_health};

/// The control socket's name inside the data directory.
pub const CONTROL_SOCKET: &str = "floed.sock";
/// How many control commands may wait for the main loop; more are refused with 503.
pub const COMMAND_QUEUE: usize = 8;
/// The largest control request body accepted (bytes).
pub const MAX_BODY: usize = 64 * 1024;

/// Where `GET /status` reads from: the data directory's state (read-only) and the latest
/// published health report.
#[derive(Debug, Clone)]
pub struct StatusSource {
    /// The daemon's data directory.
    pub data_dir: PathBuf,
    /// The main loop's published report.
    pub published: watch::Receiver<Arc<Published>>,
}

/// The control listener's shared state.
#[derive(Debug, Clone)]
struct Control {
    commands: mpsc::Sender<Command>,
    status: StatusSource,
    policy: Arc<ControlPolicy>,
}

/// The health listener's routes.
pub fn health_router(published: watch::Receiver<Arc<Published>>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .with_state(published)
}

/// `/health` alone (the health listener adds its own `/metrics`: `crate::health_listener`).
pub fn health_only_router(published: watch::Receiver<Arc<Published>>) -> Router {
    Router::new()
        .route("/health", get(health))
        .with_state(published)
}

async fn health(State(rx): State<watch::Receiver<Arc<Published>>>) -> Response {
    let p = rx.borrow().clone();
    let code = if p.report.status == Status::Unhealthy {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (code, axum::Json(p.report.clone())).into_response()
}

async fn metrics(State(rx): State<watch::Receiver<Arc<Published>>>) -> Response {
    let p = rx.borrow().clone();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        p.metrics.clone(),
    )
        .into_response()
}

/// The control listener's routes. Serve them with
/// `into_make_service_with_connect_info::<PeerCred>()` so each handler learns its caller.
pub fn control_router(
    commands: mpsc::Sender<Command>,
    status: StatusSource,
    policy: ControlPolicy,
) -> Router {
    Router::new()
        .route("/install", post(install))
        .route("/rollback", post(rollback))
        .route("/status", get(status_view))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(Control {
            commands,
            status,
            policy: Arc::new(policy),
        })
}

/// The request names only what to install; who asks is the connection's business.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InstallRequest {
    source: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackRequest {
    reason: String,
}

/// The caller if it may change the device, otherwise the answer refusing it.
fn authorize(policy: &ControlPolicy, peer: PeerCred) -> Result<Caller, Box<Response>> {
    let Some(caller) = peer.0 else {
        return Err(Box::new(
            (
                StatusCode::FORBIDDEN,
                "the kernel gave no credentials for this connection",
            )
                .into_response(),
        ));
    };
    if policy.may_change(&caller) {
        Ok(caller)
    } else {
        tracing::warn!(uid = caller.uid, "control request refused: not an operator");
        Err(Box::new(
            (
                StatusCode::FORBIDDEN,
                format!(
                    "uid {} may not change this device: only root, the daemon's user and the \
                     operator group (config key operator_group) may",
                    caller.uid
                ),
            )
                .into_response(),
        ))
    }
}

/// Whether `caller` could read `path` itself by its mode bits (owner, primary group, others).
/// The daemon may be able to read what its caller cannot; it must not read it on the caller's
/// behalf.
fn caller_may_read(path: &Path, caller: &Caller) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    if caller.uid == 0 {
        return Ok(());
    }
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mode = meta.mode();
    let bits = if meta.uid() == caller.uid {
        mode & 0o400
    } else if meta.gid() == caller.gid {
        mode & 0o040
    } else {
        mode & 0o004
    };
    if bits == 0 {
        Err(format!(
            "uid {} may not read {}, so floed will not read it on its behalf",
            caller.uid,
            path.display()
        ))
    } else {
        Ok(())
    }
}

/// Hands a command to the main loop; at the queue's bound the request is refused.
fn send(tx: &mpsc::Sender<Command>, cmd: Command) -> Result<(), Box<Response>> {
    tx.try_send(cmd).map_err(|e| {
        let msg = match e {
            mpsc::error::TrySendError::Full(_) => "floed is busy; try again",
            mpsc::error::TrySendError::Closed(_) => "floed is shutting down",
        };
        Box::new((StatusCode::SERVICE_UNAVAILABLE, msg).into_response())
    })
}

async fn outcome(rx: oneshot::Receiver<Result<Outcome, String>>) -> Response {
    match rx.await {
        Ok(Ok(o)) => (StatusCode::OK, axum::Json(o)).into_response(),
        Ok(Err(e)) => (StatusCode::CONFLICT, e).into_response(),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "floed stopped before answering",
        )
            .into_response(),
    }
}

async fn install(
    State(control): State<Control>,
    ConnectInfo(peer): ConnectInfo<PeerCred>,
    axum::Json(req): axum::Json<InstallRequest>,
) -> Response {
    let caller = match authorize(&control.policy, peer) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    if let Err(msg) = caller_may_read(&req.source, &caller) {
        return (StatusCode::FORBIDDEN, msg).into_response();
    }
    let (reply, rx) = oneshot::channel();
    if let Err(r) = send(
        &control.commands,
        Command::Install {
            source: req.source,
            actor: caller.actor(),
            reply,
        },
    ) {
        return *r;
    }
    outcome(rx).await
}

async fn rollback(
    State(control): State<Control>,
    ConnectInfo(peer): ConnectInfo<PeerCred>,
    axum::Json(req): axum::Json<RollbackRequest>,
) -> Response {
    let caller = match authorize(&control.policy, peer) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let (reply, rx) = oneshot::channel();
    if let Err(r) = send(
        &control.commands,
        Command::Rollback {
            actor: caller.actor(),
            reason: req.reason,
            reply,
        },
    ) {
        return *r;
    }
    outcome(rx).await
}

async fn status_view(State(control): State<Control>) -> Response {
    let source = control.status;
    let health = source.published.borrow().report.clone();
    let read = tokio::task::spawn_blocking(move || {
        read_status_with_health(&source.data_dir, Some(health), STATUS_AUDIT)
    })
    .await;
    match read {
        Ok(Ok(s)) => (StatusCode::OK, axum::Json::<StatusView>(s)).into_response(),
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "reading the status failed",
        )
            .into_response(),
    }
}

/// Audit entries `GET /status` returns (the newest).
pub const STATUS_AUDIT: usize = 20;

/// Why a control request failed on the client side.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No daemon listens on the socket.
    #[error("no floed daemon listens on {0}")]
    NotRunning(PathBuf),
    /// The exchange failed.
    #[error("talking to floed over {path}: {source}")]
    Io {
        /// The socket.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The answer was not HTTP.
    #[error("floed answered something that is not HTTP")]
    Malformed,
}

/// Sends one request to the daemon's control socket and returns the status code and body.
/// A small blocking client: the local commands make one request each, and this keeps an HTTP
/// client library out of the daemon. Responses are capped at 4 MiB.
pub fn control_request(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&str>,
    timeout: Duration,
) -> Result<(u16, String), ClientError> {
    let mut stream = match std::os::unix::net::UnixStream::connect(socket) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Err(ClientError::NotRunning(socket.to_path_buf()));
        }
        Err(source) => {
            return Err(ClientError::Io {
                path: socket.to_path_buf(),
                source,
            });
        }
    };
    let io_err = |source| ClientError::Io {
        path: socket.to_path_buf(),
        source,
    };
    stream.set_read_timeout(Some(timeout)).map_err(io_err)?;
    stream.set_write_timeout(Some(timeout)).map_err(io_err)?;
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: floed\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes()).map_err(io_err)?;
    let mut raw = Vec::new();
    stream.take(4 << 20).read_to_end(&mut raw).map_err(io_err)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, rest) = text.split_once("\r\n\r\n").ok_or(ClientError::Malformed)?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or(ClientError::Malformed)?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    Ok((code, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::{Check, HealthReport};

    fn published(status: Status) -> Arc<Published> {
        let mut checks = std::collections::BTreeMap::new();
        checks.insert(
            "application.flow".to_string(),
            Check {
                status,
                detail: "x".into(),
                value: None,
            },
        );
        Arc::new(Published {
            report: HealthReport {
                status,
                version: "1.0".into(),
                checks,
            },
            metrics: "floe_health_status 0\n".into(),
        })
    }

    #[tokio::test(flavor = "current_thread")]
    async fn health_codes_follow_the_status_and_control_works_over_a_unix_socket() {
        let (tx, rx) = watch::channel(published(Status::Degraded));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let health_rx = rx.clone();
        tokio::spawn(async move { axum::serve(listener, health_router(health_rx)).await });

        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join(CONTROL_SOCKET);
        let (ctx, mut crx) = mpsc::channel(COMMAND_QUEUE);
        let ul = tokio::net::UnixListener::bind(&sock).unwrap();
        let source = StatusSource {
            data_dir: dir.path().to_path_buf(),
            published: rx.clone(),
        };
        // The daemon's user is this test's user, so it may change; a policy naming another
        // daemon user and no group refuses the same caller.
        let me = crate::peer::Caller::this_process();
        tokio::spawn(async move {
            axum::serve(
                ul,
                control_router(ctx, source, ControlPolicy::with_ids(me.uid, None))
                    .into_make_service_with_connect_info::<PeerCred>(),
            )
            .await
        });
        let (actor_tx, mut actor_rx) = mpsc::channel(4);
        tokio::spawn(async move {
            while let Some(cmd) = crx.recv().await {
                if let Command::Rollback {
                    reason,
                    reply,
                    actor,
                } = cmd
                {
                    let _ = actor_tx.send(actor).await;
                    let _ = reply.send(Ok(Outcome::RolledBack { slot: None, reason }));
                }
            }
        });

        let get = |path: &'static str| async move {
            tokio::task::spawn_blocking(move || {
                let mut s = std::net::TcpStream::connect(addr).unwrap();
                write!(
                    s,
                    "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                )
                .unwrap();
                let mut out = String::new();
                s.read_to_string(&mut out).unwrap();
                out
            })
            .await
            .unwrap()
        };
        let r = get("/health").await;
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        assert!(r.contains("\"status\":\"degraded\""), "{r}");
        tx.send(published(Status::Unhealthy)).unwrap();
        let r = get("/health").await;
        assert!(r.starts_with("HTTP/1.1 503"), "{r}");
        let r = get("/metrics").await;
        assert!(r.contains("floe_health_status 0"), "{r}");

        let sock2 = sock.clone();
        let (code, body) = tokio::task::spawn_blocking(move || {
            control_request(
                &sock2,
                "POST",
                "/rollback",
                Some(r#"{"reason":"test"}"#),
                Duration::from_secs(5),
            )
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(code, 200, "{body}");
        assert!(body.contains("\"reason\":\"test\""), "{body}");
        // The actor is the kernel's word on the caller, not anything in the request.
        assert_eq!(actor_rx.recv().await.unwrap(), me.actor());
        let sock2 = sock.clone();
        let (code, body) = tokio::task::spawn_blocking(move || {
            control_request(
                &sock2,
                "POST",
                "/rollback",
                Some(r#"{"reason":"test","actor":"local:root"}"#),
                Duration::from_secs(5),
            )
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(code, 422, "a caller-chosen actor is refused: {body}");
        assert!(body.contains("actor"), "{body}");

        let other = dir.path().join("other.sock");
        let (otx, _orx) = mpsc::channel(COMMAND_QUEUE);
        let ul = tokio::net::UnixListener::bind(&other).unwrap();
        let source = StatusSource {
            data_dir: dir.path().to_path_buf(),
            published: rx.clone(),
        };
        let stranger = ControlPolicy::with_ids(me.uid.wrapping_add(1), None);
        if me.uid != 0 {
            tokio::spawn(async move {
                axum::serve(
                    ul,
                    control_router(otx, source, stranger)
                        .into_make_service_with_connect_info::<PeerCred>(),
                )
                .await
            });
            let (code, body) = tokio::task::spawn_blocking(move || {
                control_request(
                    &other,
                    "POST",
                    "/rollback",
                    Some(r#"{"reason":"x"}"#),
                    Duration::from_secs(5),
                )
            })
            .await
            .unwrap()
            .unwrap();
            assert_eq!(code, 403, "{body}");
            assert!(body.contains("operator_group"), "{body}");
        }
        let missing = dir.path().join("nope.sock");
        assert!(matches!(
            control_request(&missing, "GET", "/status", None, Duration::from_secs(1)),
            Err(ClientError::NotRunning(_))
        ));
    }
}
