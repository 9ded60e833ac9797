//! TLS on the REST listener: a self-signed certificate (`crate::tls::selfsigned`), the real router
//! behind `floe_httpd::Server::serve_tls` on 127.0.0.1:0, and the real client.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::{TlsFiles, tls_config};
use crate::client::Client;
use crate::service::{Core, ServiceConfig, spawn};
use crate::store::Store;
use ed25519_dalek::SigningKey;
use std::io::{Read, Write};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

struct Tls {
    _dir: tempfile::TempDir,
    files: TlsFiles,
    cert_pem: String,
}

fn self_signed() -> Tls {
    let dir = tempfile::tempdir().unwrap();
    let made = crate::tls::selfsigned::ensure(&dir.path().join("tls"), &[]).unwrap();
    let cert_pem = std::fs::read_to_string(&made.cert).unwrap();
    let files = TlsFiles {
        cert: made.cert,
        key: made.key,
    };
    Tls {
        _dir: dir,
        files,
        cert_pem,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_the_ca_works_without_it_fails_and_plain_http_is_refused() {
    let tls = self_signed();
    let config = tls_config(&tls.files).unwrap();
    let data = tempfile::tempdir().unwrap();
    let core = Core::new(
        Store::open(&data.path().join("floe.db")).unwrap(),
        ServiceConfig::new(data.path().to_path_buf()),
        SigningKey::from_bytes(&[1; 32]),
        SigningKey::from_bytes(&[2; 32]),
    )
    .unwrap();
    let shutdown = CancellationToken::new();
    let (handle, actor) = spawn(core, shutdown.clone());
    let app = crate::api::router(handle, "secret".into());
    let mut limits = floe_httpd::Limits::coordinator();
    limits.header_timeout = Duration::from_secs(1);
    let http = floe_httpd::Server::new(limits).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serving = http.clone();
    let stop = shutdown.clone();
    let server = tokio::spawn(async move { serving.serve_tls(listener, app, stop, config).await });

    let cert_pem = tls.cert_pem.clone();
    tokio::task::spawn_blocking(move || {
        let url = format!("https://127.0.0.1:{}", addr.port());
        // Trusting the certificate: the API answers, authenticated.
        let c = Client::with_ca(&url, Some("secret".into()), Some(cert_pem.as_bytes())).unwrap();
        let who: crate::contract::WhoAmI = c.whoami().unwrap().json().unwrap();
        assert_eq!(who.name, "bootstrap");
        // Without it (system roots only): a clear certificate error.
        let c = Client::new(&url, Some("secret".into())).unwrap();
        let e = c.whoami().unwrap_err().to_string();
        assert!(
            e.to_lowercase().contains("certificate") && e.contains("--ca"),
            "{e}"
        );
        // A CA file without a certificate is refused up front.
        let e = Client::with_ca(&url, None, Some(b"not a pem")).unwrap_err();
        assert!(e.to_string().contains("--ca"), "{e}");
        // Plain HTTP to the TLS port fails at once, not at a timeout.
        let plain = Client::new(&format!("http://127.0.0.1:{}", addr.port()), None).unwrap();
        let started = Instant::now();
        assert!(plain.healthz().is_err());
        assert!(started.elapsed() < Duration::from_secs(5));
        // A client that never starts its handshake is closed at the header timeout.
        let mut idle = std::net::TcpStream::connect(addr).unwrap();
        idle.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let started = Instant::now();
        let mut buf = [0u8; 16];
        let n = idle.read(&mut buf).unwrap_or(0);
        assert_eq!(n, 0);
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
            "{waited:?}"
        );
        let _ = idle.write_all(b"x");
    })
    .await
    .unwrap();
    let stats = http.stats();
    assert!(stats.tls_failures >= 2, "{stats:?}");
    assert!(stats.header_timeouts >= 1, "{stats:?}");
    shutdown.cancel();
    server.await.unwrap();
    actor.await.unwrap();
}

#[test]
fn unusable_certificate_files_are_named() {
    let tls = self_signed();
    let other = self_signed();
    let mismatched = TlsFiles {
        cert: tls.files.cert.clone(),
        key: other.files.key.clone(),
    };
    let e = tls_config(&mismatched).unwrap_err().to_string();
    assert!(e.contains("key.pem"), "{e}");
    let missing = TlsFiles {
        cert: tls.files.cert.with_file_name("nope.pem"),
        key: tls.files.key.clone(),
    };
    let e = tls_config(&missing).unwrap_err().to_string();
    assert!(e.contains("nope.pem"), "{e}");
}

/// `floe serve --tls-self-signed` in-process: the certificate is made at first start in
/// DATA_DIR/tls, the CLI's client pins its fingerprint, a wrong pin is refused naming both
/// fingerprints, and a second start serves the same certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_self_signed_certificate_is_made_once_and_its_pin_is_the_only_trust() {
    let data = tempfile::tempdir().unwrap();
    let start = |dir: std::path::PathBuf| async move {
        let mut config = super::ServerConfig::new(dir);
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.fabric_listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
        config.tls_self_signed = Some(vec!["coordinator.test".into()]);
        let shutdown = CancellationToken::new();
        super::start(config, shutdown.clone()).await.unwrap()
    };
    let server = start(data.path().to_path_buf()).await;
    let url = server.url();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let print = std::fs::read_to_string(data.path().join("tls/fingerprint"))
        .unwrap()
        .trim()
        .to_string();
    assert!(
        server
            .notices()
            .iter()
            .any(|n| n.contains("made the self-signed") && n.contains(&print)),
        "{:?}",
        server.notices()
    );
    let token = server.token().to_string();
    let (u, p, t) = (url.clone(), print.clone(), token.clone());
    tokio::task::spawn_blocking(move || {
        let c = Client::with_pin(&u, Some(t.clone()), &p).unwrap();
        let who: crate::contract::WhoAmI = c.whoami().unwrap().json().unwrap();
        assert_eq!(who.name, "bootstrap");
        let wrong = format!("sha256:{}", "00".repeat(32));
        let e = Client::with_pin(&u, Some(t.clone()), &wrong)
            .unwrap_err()
            .to_string();
        assert!(e.contains(&p) && e.contains(&wrong), "{e}");
        let e = Client::with_pin(&u, Some(t), "md5:abc")
            .unwrap_err()
            .to_string();
        assert!(e.contains("--pin") && e.contains("sha256:"), "{e}");
    })
    .await
    .unwrap();
    server.shutdown();
    server.wait().await.unwrap();

    // The second start keeps the certificate: the same pin still works.
    let server = start(data.path().to_path_buf()).await;
    assert!(
        server
            .notices()
            .iter()
            .any(|n| n.contains("serving the self-signed")),
        "{:?}",
        server.notices()
    );
    let url = server.url();
    tokio::task::spawn_blocking(move || {
        let c = Client::with_pin(&url, Some(token), &print).unwrap();
        assert!(c.whoami().is_ok());
    })
    .await
    .unwrap();
    server.shutdown();
    server.wait().await.unwrap();
}
