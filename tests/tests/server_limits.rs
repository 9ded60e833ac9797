//! Server limits (issue 16, finding 6): before them, 48 slow-header sockets stayed open at a
//! real `floe serve` for 75 s and 1 100 idle sockets made it stop answering. Here a real
//! `floe serve` and a real `floed daemon` are fed the same: slow-header sockets are closed at
//! the header timeout, a kept-alive connection at the idle timeout, and with more idle sockets
//! open than the connection cap an API client, a device report and a health scraper still get
//! their answers. One client address is held to its per-address cap (connections past it are
//! closed at accept) while another address is still served: 127.0.0.1 and 127.0.0.x are all
//! loopback. Every loop is bounded in count and time.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // A test fails loudly on any broken precondition.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use floe_tests::agent;
use floe_tests::coordinator::Coordinator;
use floe_wire::proto::{DeviceReport, Envelope, Facts, Fixed};
use serde_json::{Value, json};

/// Opens `n` connections that each send half a request head and stop.
fn slow_header_sockets(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|_| {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
            s
        })
        .collect()
}

/// A connection to `addr` from the loopback address `from`.
fn connect_from(from: [u8; 4], addr: SocketAddr) -> TcpStream {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let s = rt
        .block_on(async {
            let sock = tokio::net::TcpSocket::new_v4()?;
            sock.bind(SocketAddr::from((from, 0)))?;
            tokio::time::timeout(Duration::from_secs(5), sock.connect(addr)).await?
        })
        .unwrap()
        .into_std()
        .unwrap();
    s.set_nonblocking(false).unwrap();
    s
}

/// Opens `n` connections, `per_addr` from each of the loopback addresses 127.0.9.1,
/// 127.0.9.2, ... (so no address passes its cap); every other one sends half a head, the
/// rest nothing.
fn idle_sockets(addr: SocketAddr, n: usize, per_addr: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|i| {
            let host = u8::try_from(i / per_addr + 1).unwrap();
            let mut s = connect_from([127, 0, 9, host], addr);
            if i % 2 == 0 {
                s.write_all(b"POST /api/v1/devices/x/report HTTP/1.1\r\n")
                    .unwrap();
            }
            s
        })
        .collect()
}

/// Whether the server closed `s`, waiting at most `wait`.
fn closed(s: &mut TcpStream, wait: Duration) -> bool {
    s.set_read_timeout(Some(wait.max(Duration::from_millis(1))))
        .unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            // A 408 or similar before the close: keep reading to the end.
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false;
            }
            Err(_) => return true,
        }
    }
}

/// Waits until the server closed every socket (at most `limit`); how long it took.
fn all_closed_within(socks: &mut [TcpStream], limit: Duration) -> Duration {
    let start = Instant::now();
    for (i, s) in socks.iter_mut().enumerate() {
        let left = limit.saturating_sub(start.elapsed());
        assert!(closed(s, left), "socket {i} still open after {limit:?}");
    }
    start.elapsed()
}

/// How many of `socks` the server has closed by now.
fn count_closed(socks: &mut [TcpStream]) -> usize {
    socks
        .iter_mut()
        .map(|s| closed(s, Duration::from_millis(5)))
        .filter(|c| *c)
        .count()
}

/// One raw request with `Connection: close`; the whole answer.
fn raw(addr: SocketAddr, head: &str, body: &[u8]) -> String {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!(
        "{head} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    s.write_all(&req).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

fn http() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

/// A signed enrolling report of `key` under its own id, carrying `token`.
fn report(key: &SigningKey, seq: u64, token: &str) -> Vec<u8> {
    let r = DeviceReport {
        schema: 1,
        device_id: hex::encode(key.verifying_key().to_bytes()),
        public_key: Fixed(key.verifying_key().to_bytes()),
        seq,
        facts: Facts {
            device_type: "rpi4".into(),
            arch: "aarch64".into(),
            region: "eu".into(),
            labels: Vec::new(),
            runtime_version: "0.1.0".into(),
        },
        enroll_token: Some(token.to_string()),
        active: None,
        standby: None,
        last_known_good: None,
        on_trial: false,
        applied: None,
        health: None,
    };
    Envelope::sign(&r, &[key]).unwrap().to_bytes().unwrap()
}

#[test]
fn coordinator_rest_api_keeps_its_limits() {
    let tmp = tempfile::tempdir().unwrap();
    let c = Coordinator::start_with_args(
        tmp.path(),
        "500ms",
        "3s",
        &[
            "--max-connections",
            "64",
            "--max-connections-per-addr",
            "16",
            "--header-timeout",
            "1s",
            "--idle-timeout",
            "2s",
            "--request-timeout",
            "5s",
        ],
    );
    let addr: SocketAddr = format!("127.0.0.1:{}", c.port).parse().unwrap();

    // 48 slow-header sockets (fewer than the cap): closed at the header timeout.
    let mut slow = slow_header_sockets(addr, 48);
    let took = all_closed_within(&mut slow, Duration::from_secs(10));
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(4),
        "slow-header sockets closed after {took:?} (header timeout 1 s)"
    );

    // A kept-alive connection is closed after the idle timeout, not before.
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let idle_from = Instant::now();
    assert!(
        !closed(&mut s, Duration::from_millis(1000)),
        "closed before the idle timeout"
    );
    assert!(
        closed(&mut s, Duration::from_secs(5)),
        "idle connection kept open"
    );
    let idle = idle_from.elapsed();
    assert!(
        idle < Duration::from_secs(4),
        "idle connection closed after {idle:?}"
    );

    // A report whose body never arrives gets the API's 503 `busy` at the request timeout.
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let started = Instant::now();
    s.write_all(
        b"POST /api/v1/devices/abc/report HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nabc",
    )
    .unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer);
    let took = started.elapsed();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("\"code\":\"busy\""), "{answer}");
    assert!(
        took >= Duration::from_millis(4500) && took < Duration::from_secs(9),
        "the timeout answer came after {took:?} (request timeout 5 s)"
    );

    // Three times the cap in idle and half-sent sockets; a real API client and a device
    // report still get answers, round after round, while the sockets stay open.
    let mut flood = idle_sockets(addr, 192, 16);
    let key = SigningKey::from_bytes(&[61; 32]);
    let id = hex::encode(key.verifying_key().to_bytes());
    let auth = format!("Bearer {}", c.token());
    for round in 0..3u64 {
        let started = Instant::now();
        let health = c.client.healthz();
        assert!(health.is_ok(), "round {round}: healthz: {health:?}");
        let resp = http()
            .post(format!("{}/api/v1/enrollment-tokens", c.url()))
            .header("Authorization", &auth)
            .header("Content-Type", "application/json")
            .send(json!({"ttl": "10m"}).to_string())
            .unwrap();
        assert_eq!(resp.status().as_u16(), 201, "round {round}: token");
        let t: Value = serde_json::from_str(&resp.into_body().read_to_string().unwrap()).unwrap();
        let token = t["token"].as_str().unwrap();
        // The device's report on a raw connection, as an HTTP/1.1 client sends it.
        let answer = raw(
            addr,
            &format!("POST /api/v1/devices/{id}/report"),
            &report(&key, round + 1, token),
        );
        assert!(
            answer.starts_with("HTTP/1.1 204"),
            "round {round}: report: {answer}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "round {round} took {:?}",
            started.elapsed()
        );
    }
    // The server kept at most 64 open: the oldest of the flood made room.
    let closed_now = count_closed(&mut flood);
    assert!(closed_now >= 192 - 64, "only {closed_now} of 192 closed");
    let device = http()
        .get(format!("{}/api/v1/devices/{id}", c.url()))
        .header("Authorization", &auth)
        .call()
        .unwrap();
    assert_eq!(device.status().as_u16(), 200, "the device enrolled");
    drop(flood);

    // One address past its cap of 16: the excess is closed at accept (long before the 1 s
    // header timeout: the 16 send nothing and are closed at it) while that address's 16 stay
    // open, and another address is served.
    let mut held: Vec<TcpStream> = (0..16)
        .map(|_| connect_from([127, 0, 0, 3], addr))
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let mut excess: Vec<TcpStream> = (0..8).map(|_| connect_from([127, 0, 0, 3], addr)).collect();
    let took = all_closed_within(&mut excess, Duration::from_millis(700));
    assert!(took < Duration::from_millis(700), "{took:?}");
    assert_eq!(
        count_closed(&mut held),
        0,
        "the address's own connections were closed"
    );
    let mut other = connect_from([127, 0, 0, 2], addr);
    other
        .write_all(b"GET /api/v1/healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    other
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut answer = String::new();
    let _ = other.read_to_string(&mut answer);
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "127.0.0.2 not served: {answer}"
    );
    let status: Value = serde_json::from_str(
        &http()
            .get(format!("{}/api/v1/status", c.url()))
            .header("Authorization", &auth)
            .call()
            .unwrap()
            .into_body()
            .read_to_string()
            .unwrap(),
    )
    .unwrap();
    let refused = status["connections"]["refused_per_addr"].as_u64().unwrap();
    assert!(refused >= 8, "{status}");
    let metrics = http()
        .get(format!("{}/metrics", c.url()))
        .header("Authorization", &auth)
        .call()
        .unwrap()
        .into_body()
        .read_to_string()
        .unwrap();
    assert!(
        metrics.contains("floe_http_connections_closed_total{reason=\"per_addr\"}"),
        "{metrics}"
    );
}

#[test]
fn floed_health_endpoint_keeps_its_limits() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let cfg = agent::config(tmp.path(), &data, 1);
    let mut d = agent::Daemon::start(&cfg, &[]);
    d.wait_ready(&data, Duration::from_secs(60));
    let addr: SocketAddr = format!("127.0.0.1:{}", agent::http_port(&cfg))
        .parse()
        .unwrap();
    let limits = floe_httpd_limits();
    let answered = |path: &str| raw(addr, &format!("GET {path}"), b"");
    assert!(answered("/health").starts_with("HTTP/1.1 "));

    // As many slow-header sockets as one address may open: closed at the header timeout.
    let mut slow = slow_header_sockets(addr, limits.2);
    let took = all_closed_within(&mut slow, limits.1 + Duration::from_secs(10));
    assert!(
        took >= limits.1 - Duration::from_millis(300) && took < limits.1 + Duration::from_secs(3),
        "slow-header sockets closed after {took:?} (header timeout {:?})",
        limits.1
    );

    // Six times the cap in idle sockets, each address at its per-address cap: the scraper
    // (127.0.0.1) still gets /health and /metrics.
    let mut flood = idle_sockets(addr, limits.0 * 6, limits.2);
    for _ in 0..3 {
        let started = Instant::now();
        let h = answered("/health");
        assert!(
            h.starts_with("HTTP/1.1 200") || h.starts_with("HTTP/1.1 503"),
            "{h}"
        );
        assert!(h.contains("\"checks\""), "{h}");
        let m = answered("/metrics");
        assert!(m.starts_with("HTTP/1.1 200"), "{m}");
        assert!(started.elapsed() < Duration::from_secs(3));
    }
    let closed_now = count_closed(&mut flood);
    assert!(
        closed_now >= limits.0 * 5,
        "only {closed_now} of {} closed",
        limits.0 * 6
    );
    // An address that fills its cap (evicting flood sockets) gets its next one closed at
    // once; the scraper is still served.
    let _full: Vec<TcpStream> = (0..limits.2)
        .map(|_| connect_from([127, 0, 0, 5], addr))
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let mut extra = connect_from([127, 0, 0, 5], addr);
    assert!(
        closed(&mut extra, Duration::from_millis(500)),
        "past the per-address cap"
    );
    assert!(answered("/health").starts_with("HTTP/1.1 "));
    // The health endpoint counts it in its own /metrics.
    let m = answered("/metrics");
    let refused: u64 = m
        .lines()
        .find_map(|l| l.strip_prefix("floe_http_connections_closed_total{reason=\"per_addr\"} "))
        .unwrap_or_else(|| panic!("no per_addr counter in /metrics: {m}"))
        .trim()
        .parse()
        .unwrap();
    assert!(refused >= 1, "{m}");
    d.stop();
}

/// floed's cap, header timeout and per-address cap, as the daemon uses them by default.
fn floe_httpd_limits() -> (usize, Duration, usize) {
    let l = floe_httpd::Limits::device();
    (
        l.max_connections,
        l.header_timeout,
        l.max_connections_per_addr,
    )
}
