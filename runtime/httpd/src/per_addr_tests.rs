#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // A test fails loudly on any broken precondition.

//! The per-address cap, over real loopback sockets: 127.0.0.1 and 127.0.0.2 are two client
//! addresses of the same machine.

use super::*;
use axum::routing::get;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

fn limits() -> Limits {
    Limits {
        header_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(5),
        max_connections: 8,
        max_connections_per_addr: 3,
        accept_wait: Duration::from_millis(300),
        max_head_bytes: MIN_HEAD_BYTES,
    }
}

async fn start() -> (Server, SocketAddr, CancellationToken) {
    let server = Server::new(limits()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let (s, st) = (server.clone(), stop.clone());
    let app = Router::new().route("/healthz", get(|| async { "ok" }));
    tokio::spawn(async move { s.serve(listener, app, st).await });
    (server, addr, stop)
}

/// A connection to `addr` from the loopback address `from`.
pub(crate) async fn connect_from(from: [u8; 4], addr: SocketAddr) -> TcpStream {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::from((from, 0))).unwrap();
    tokio::time::timeout(Duration::from_secs(5), sock.connect(addr))
        .await
        .unwrap()
        .unwrap()
}

/// Sends one request on `s` and reads until the answer's body arrives, the peer closes or
/// 3 s pass; what arrived.
async fn ask(s: &mut TcpStream) -> String {
    let _ = s
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    let until = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        match tokio::time::timeout_at(until, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => {
                out.extend_from_slice(&buf[..n]);
                if out.ends_with(b"ok") {
                    break;
                }
            }
        }
    }
    String::from_utf8_lossy(&out).into()
}

/// Waits (up to 3 s) until the server has counted `n` per-address refusals.
async fn refused(server: &Server, n: u64) -> u64 {
    let until = std::time::Instant::now() + Duration::from_secs(3);
    while server.stats().refused_per_addr < n && std::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.stats().refused_per_addr
}

#[tokio::test]
async fn one_address_holds_at_most_its_cap_and_another_is_still_served() {
    let (server, addr, _stop) = start().await;
    // N kept-alive connections from 127.0.0.1, each served once so they are surely admitted.
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = connect_from([127, 0, 0, 1], addr).await;
        let a = ask(&mut s).await;
        assert!(a.starts_with("HTTP/1.1 200"), "{a}");
        held.push(s);
    }
    // The N+1st from the same address is closed without an answer, and nobody is evicted
    // for it although the table has room.
    let mut extra = connect_from([127, 0, 0, 1], addr).await;
    let a = ask(&mut extra).await;
    assert!(a.is_empty(), "served past the per-address cap: {a}");
    assert_eq!(refused(&server, 1).await, 1, "{:?}", server.stats());
    assert_eq!(server.stats().evicted, 0, "{:?}", server.stats());
    assert_eq!(server.open_connections(), 3);

    // Another address is served meanwhile, up to its own cap.
    let mut other = Vec::new();
    for _ in 0..3 {
        let mut s = connect_from([127, 0, 0, 2], addr).await;
        let a = ask(&mut s).await;
        assert!(a.starts_with("HTTP/1.1 200"), "127.0.0.2 not served: {a}");
        other.push(s);
    }
    // The held connections still work.
    for s in &mut held {
        let a = ask(s).await;
        assert!(a.starts_with("HTTP/1.1 200"), "{a}");
    }

    // Closing one gives its address room again.
    drop(held.pop());
    let until = std::time::Instant::now() + Duration::from_secs(3);
    while server.open_connections() > 5 && std::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut again = connect_from([127, 0, 0, 1], addr).await;
    let a = ask(&mut again).await;
    assert!(a.starts_with("HTTP/1.1 200"), "room not given back: {a}");
    assert_eq!(server.stats().refused_per_addr, 1, "{:?}", server.stats());
}

#[tokio::test]
async fn a_flood_from_one_address_is_refused_at_accept_and_counted() {
    let (server, addr, _stop) = start().await;
    let mut flood = Vec::new();
    for _ in 0..40 {
        flood.push(connect_from([127, 0, 0, 1], addr).await);
    }
    assert_eq!(refused(&server, 37).await, 37, "{:?}", server.stats());
    assert!(server.open_connections() <= 3);
    // The flood evicted nobody's connection and another address gets in at once.
    let mut s = connect_from([127, 0, 0, 2], addr).await;
    let a = ask(&mut s).await;
    assert!(a.starts_with("HTTP/1.1 200"), "{a}");
    assert_eq!(server.stats().evicted, 0, "{:?}", server.stats());
}

#[tokio::test]
async fn an_ipv4_mapped_ipv6_address_counts_as_its_ipv4_address() {
    let registry = crate::conn::Registry::new(4, 1);
    let stop = CancellationToken::new();
    let v4: std::net::IpAddr = "192.0.2.7".parse().unwrap();
    let mapped: std::net::IpAddr = "::ffff:192.0.2.7".parse().unwrap();
    let other: std::net::IpAddr = "2001:db8::7".parse().unwrap();
    let wait = Duration::from_millis(10);
    assert!(registry.admit(v4, wait, &stop).await.is_ok());
    assert_eq!(
        registry.admit(mapped, wait, &stop).await.err(),
        Some(crate::conn::Refused::PerAddr)
    );
    assert!(registry.admit(other, wait, &stop).await.is_ok());
    assert_eq!(registry.len(), 2);
}
