#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // A test fails loudly on any broken precondition.

//! Each test runs a real server on a loopback listener and talks to it over real sockets;
//! every wait is bounded.

use super::*;
use crate::per_addr_tests::connect_from;
use axum::routing::{get, post};
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn limits() -> Limits {
    Limits {
        header_timeout: Duration::from_millis(400),
        idle_timeout: Duration::from_millis(600),
        request_timeout: Duration::from_millis(800),
        max_connections: 8,
        max_connections_per_addr: 8,
        accept_wait: Duration::from_millis(300),
        max_head_bytes: MIN_HEAD_BYTES,
    }
}

fn app() -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/report",
            post(|body: String| async move { body.len().to_string() }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(400)).await;
                "slow"
            }),
        )
        .route(
            "/stuck",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                "never"
            }),
        )
}

async fn start(limits: Limits) -> (Server, SocketAddr, CancellationToken) {
    let server = Server::new(limits).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let (s, st) = (server.clone(), stop.clone());
    tokio::spawn(async move { s.serve(listener, app(), st).await });
    (server, addr, stop)
}

/// Reads until the peer closes (or 5 s pass); what arrived and whether it closed.
async fn read_to_close(s: &mut TcpStream) -> (String, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(until, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&out).into(), true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&out).into(), false),
        }
    }
}

/// One request on a fresh connection with `Connection: close`; the whole answer.
async fn request(addr: SocketAddr, head: &str, body: &str) -> String {
    let mut s = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
        .await
        .unwrap()
        .unwrap();
    let req = format!(
        "{head} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let (answer, closed) = read_to_close(&mut s).await;
    assert!(closed, "the server did not finish its answer: {answer}");
    answer
}

#[tokio::test]
async fn slow_header_sockets_are_closed_within_the_header_timeout() {
    let mut l = limits();
    l.max_connections = 64;
    l.max_connections_per_addr = 64;
    let (server, addr, _stop) = start(l).await;
    let started = Instant::now();
    let mut socks = Vec::new();
    for _ in 0..48 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        socks.push(s);
    }
    for s in &mut socks {
        let (answer, closed) = read_to_close(s).await;
        assert!(closed, "a slow-header socket stayed open");
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
            "{answer}"
        );
    }
    let took = started.elapsed();
    assert!(
        took < l.header_timeout + Duration::from_millis(1500),
        "closed after {took:?}"
    );
    assert!(server.stats().header_timeouts >= 48, "{:?}", server.stats());
    // A byte every 100 ms does not extend the deadline: the head must be complete in time.
    let mut s = TcpStream::connect(addr).await.unwrap();
    let started = Instant::now();
    let mut closed = false;
    for b in b"GET /healthz HTTP/1.1\r\nHost: xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx" {
        if s.write_all(&[*b]).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        closed || read_to_close(&mut s).await.1,
        "a trickled head was served"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    // The server still answers.
    assert!(
        request(addr, "GET /healthz", "")
            .await
            .starts_with("HTTP/1.1 200")
    );
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed_after_the_idle_timeout() {
    let (server, addr, _stop) = start(limits()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    // Two requests on one connection: keep-alive works while the client is not idle too long.
    for _ in 0..2 {
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let idle_from = Instant::now();
    let (_, closed) = read_to_close(&mut s).await;
    let idle = idle_from.elapsed();
    assert!(closed);
    assert!(
        idle < Duration::from_millis(600 + 1000),
        "closed after {idle:?}"
    );
    assert_eq!(server.stats().idle_timeouts, 1, "{:?}", server.stats());
    assert_eq!(server.open_connections(), 0);
}

#[tokio::test]
async fn more_idle_sockets_than_the_cap_do_not_shut_clients_out() {
    let (server, addr, _stop) = start(limits()).await;
    // Five times the cap: some idle after connecting, some halfway through a head, each from
    // its own loopback address (one address alone stops at its per-address cap).
    let mut socks = Vec::new();
    for i in 0..40u8 {
        let mut s = connect_from([127, 0, 1, i + 1], addr).await;
        if i % 2 == 0 {
            s.write_all(b"POST /report HTTP/1.1\r\n").await.unwrap();
        }
        socks.push(s);
    }
    for _ in 0..5 {
        let a = request(addr, "GET /healthz", "").await;
        assert!(a.starts_with("HTTP/1.1 200"), "{a}");
        let a = request(addr, "POST /report", "signed report bytes").await;
        assert!(a.starts_with("HTTP/1.1 200") && a.ends_with("19"), "{a}");
    }
    let stats = server.stats();
    assert!(
        server.open_connections() <= 8,
        "{}",
        server.open_connections()
    );
    assert!(stats.evicted >= 32, "{stats:?}");
    assert_eq!(stats.refused, 0, "{stats:?}");
}

#[tokio::test]
async fn a_busy_request_is_never_evicted_and_a_full_server_refuses_after_the_wait() {
    let mut l = limits();
    l.max_connections = 2;
    l.max_connections_per_addr = 2;
    let (server, addr, _stop) = start(l).await;
    // Two slow requests fill the cap; new sockets cannot take their place (they get room
    // only when the slow requests are done).
    let slow: Vec<_> = (0..2)
        .map(|_| tokio::spawn(request(addr, "GET /slow", "")))
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut flood = Vec::new();
    for _ in 0..2 {
        flood.push(TcpStream::connect(addr).await.unwrap());
    }
    for s in slow {
        let a = s.await.unwrap();
        assert!(a.starts_with("HTTP/1.1 200") && a.ends_with("slow"), "{a}");
    }
    assert_eq!(server.stats().evicted, 0, "{:?}", server.stats());
    drop(flood);

    // Two stuck handlers hold the cap past the accept wait: a third connection is closed.
    let stuck: Vec<_> = (0..2)
        .map(|_| tokio::spawn(request(addr, "GET /stuck", "")))
        .collect();
    tokio::time::sleep(Duration::from_millis(150)).await;
    // From another address: this one is at its per-address cap.
    let mut s = connect_from([127, 0, 0, 2], addr).await;
    let started = Instant::now();
    let _ = s
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let (answer, closed) = read_to_close(&mut s).await;
    assert!(closed && answer.is_empty(), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(server.stats().refused >= 1, "{:?}", server.stats());
    // The stuck handlers get the timeout answer and their connections close.
    for s in stuck {
        let a = s.await.unwrap();
        assert!(a.starts_with("HTTP/1.1 503"), "{a}");
        assert!(a.to_ascii_lowercase().contains("connection: close"), "{a}");
    }
    assert!(server.stats().request_timeouts >= 2);
    assert!(
        request(addr, "GET /healthz", "")
            .await
            .starts_with("HTTP/1.1 200")
    );
}

#[tokio::test]
async fn a_body_that_never_ends_gets_the_timeout_answer() {
    let (server, addr, _stop) = start(limits()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"POST /report HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nabc")
        .await
        .unwrap();
    let started = Instant::now();
    let (answer, closed) = read_to_close(&mut s).await;
    assert!(closed && answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("did not finish within"), "{answer}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(700) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert_eq!(server.stats().request_timeouts, 1);
}

#[tokio::test]
async fn an_oversized_head_is_refused() {
    let (_server, addr, _stop) = start(limits()).await;
    let big = "a".repeat(MIN_HEAD_BYTES * 2);
    let a = request(addr, &format!("GET /healthz?{big}"), "").await;
    assert!(
        a.starts_with("HTTP/1.1 431") || a.is_empty(),
        "{}",
        &a[..a.len().min(200)]
    );
    assert!(
        request(addr, "GET /healthz", "")
            .await
            .starts_with("HTTP/1.1 200")
    );
}

#[tokio::test]
async fn shutdown_lets_requests_finish_and_stops_accepting() {
    let (server, addr, stop) = start(limits()).await;
    let slow = tokio::spawn(request(addr, "GET /slow", ""));
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.cancel();
    let a = slow.await.unwrap();
    assert!(a.starts_with("HTTP/1.1 200") && a.ends_with("slow"), "{a}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(server.open_connections(), 0);
}

#[test]
fn limits_out_of_range_are_named() {
    assert_eq!(Limits::coordinator().check(), Ok(()));
    assert_eq!(Limits::device().check(), Ok(()));
    let mut l = Limits::coordinator();
    l.idle_timeout = Duration::ZERO;
    assert_eq!(l.check().unwrap_err().setting, "idle_timeout");
    let mut l = Limits::coordinator();
    l.header_timeout = Duration::from_secs(u64::MAX);
    assert_eq!(l.check().unwrap_err().setting, "header_timeout");
    let mut l = Limits::coordinator();
    l.max_connections = 0;
    let e = l.check().unwrap_err();
    assert_eq!(e.setting, "max_connections");
    assert!(e.to_string().contains("1 to 65536"), "{e}");
    for bad in [0, 513] {
        let mut l = Limits::coordinator();
        l.max_connections_per_addr = bad;
        let e = l.check().unwrap_err();
        assert_eq!(e.setting, "max_connections_per_addr");
        assert!(e.to_string().contains("1 to max_connections (512)"), "{e}");
    }
    let mut l = Limits::coordinator();
    l.max_head_bytes = 100;
    assert_eq!(l.check().unwrap_err().setting, "max_head_bytes");
    assert!(Server::new(l).is_err());
}
