#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // A test fails loudly on any broken precondition.

//! The pin verifier on its own, and real handshakes on loopback against a tokio-rustls server
//! with rcgen certificates: the right pin connects, a wrong one is refused naming both
//! fingerprints, a CA file checks an unpinned address, and an unpinned address without one is
//! refused before any connection.

use super::*;
use rustls::pki_types::PrivateKeyDer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Made {
    cert: CertificateDer<'static>,
    key: Vec<u8>,
    /// The CA's certificate (PEM) when the leaf was signed by one.
    ca_pem: Option<String>,
}

fn self_signed() -> Made {
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    Made {
        cert: ck.cert.der().clone(),
        key: ck.key_pair.serialize_der(),
        ca_pem: None,
    }
}

fn ca_signed() -> Made {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca, &ca_key)
        .unwrap();
    Made {
        cert: leaf.der().clone(),
        key: leaf_key.serialize_der(),
        ca_pem: Some(ca.pem()),
    }
}

fn pin_of(m: &Made) -> [u8; 32] {
    Sha256::digest(m.cert.as_ref()).into()
}

/// A TLS server on 127.0.0.1 that answers each connection with "ok".
async fn serve(m: &Made) -> SocketAddr {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![m.cert.clone()],
            PrivateKeyDer::try_from(m.key.clone()).unwrap(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        for _ in 0..8 {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut s) = acceptor.accept(tcp).await {
                    let _ = s.write_all(b"ok").await;
                    let _ = s.shutdown().await;
                }
            });
        }
    });
    addr
}

async fn read_ok(mut s: TlsStream<TcpStream>) -> String {
    let mut out = String::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(5),
        s.read_to_string(&mut out),
    )
    .await
    .unwrap()
    .unwrap();
    out
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

#[test]
fn the_verifier_accepts_exactly_the_pinned_certificate() {
    let a = self_signed();
    let b = self_signed();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let v = PinVerifier::new(pin_of(&a), None, provider());
    assert!(v.seen().is_none());
    v.verify_server_cert(&a.cert, &[], &name, &[], UnixTime::now())
        .unwrap();
    assert_eq!(v.seen(), Some(pin_of(&a)));
    let e = v
        .verify_server_cert(&b.cert, &[], &name, &[], UnixTime::now())
        .unwrap_err();
    assert!(e.to_string().contains("pin"), "{e}");
    assert_eq!(
        v.seen(),
        Some(pin_of(&b)),
        "what it was shown is kept for the error"
    );
    // Any name is fine with a pin alone: the pin names the certificate.
    let other = ServerName::try_from("coordinator.example").unwrap();
    v.verify_server_cert(&a.cert, &[], &other, &[], UnixTime::now())
        .unwrap();
}

#[test]
fn with_a_ca_the_pinned_certificate_must_also_chain_to_it() {
    let leaf = ca_signed();
    let stranger = ca_signed();
    let pem = stranger.ca_pem.clone().unwrap();
    let tls = JoinTls::new(Some(pin_of(&leaf)), Some(("ca.pem", pem.as_bytes()))).unwrap();
    let (_, pinned) = tls.client_config().unwrap();
    let v = pinned.unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    // The right pin, but signed by another CA than the one given: refused.
    assert!(
        v.verify_server_cert(&leaf.cert, &[], &name, &[], UnixTime::now())
            .is_err()
    );
    let own = leaf.ca_pem.clone().unwrap();
    let tls = JoinTls::new(Some(pin_of(&leaf)), Some(("ca.pem", own.as_bytes()))).unwrap();
    let v = tls.client_config().unwrap().1.unwrap();
    v.verify_server_cert(&leaf.cert, &[], &name, &[], UnixTime::now())
        .unwrap();
}

#[tokio::test]
async fn the_right_pin_connects_and_a_wrong_one_is_refused_naming_both_fingerprints() {
    let m = self_signed();
    let addr = serve(&m).await;
    let url = format!("https://{addr}");
    let tls = JoinTls::new(Some(pin_of(&m)), None).unwrap();
    let s = tls.connect(&url, "127.0.0.1", addr).await.unwrap();
    assert_eq!(read_ok(s).await, "ok");

    let wrong = [0xab; 32];
    let tls = JoinTls::new(Some(wrong), None).unwrap();
    let e = tls.connect(&url, "127.0.0.1", addr).await.unwrap_err();
    assert!(matches!(e, JoinTlsError::PinMismatch { .. }), "{e}");
    let text = e.to_string();
    assert!(text.contains(&fingerprint(m.cert.as_ref())), "{text}");
    assert!(
        text.contains(&format!("sha256:{}", "ab".repeat(32))),
        "{text}"
    );
}

#[tokio::test]
async fn without_a_pin_a_ca_file_decides_and_nothing_is_refused() {
    let m = ca_signed();
    let addr = serve(&m).await;
    let url = format!("https://{addr}");
    let pem = m.ca_pem.clone().unwrap();
    let tls = JoinTls::new(None, Some(("ca.pem", pem.as_bytes()))).unwrap();
    let s = tls.connect(&url, "127.0.0.1", addr).await.unwrap();
    assert_eq!(read_ok(s).await, "ok");

    // Another CA: the handshake fails with rustls' certificate error.
    let other = ca_signed().ca_pem.unwrap();
    let tls = JoinTls::new(None, Some(("other.pem", other.as_bytes()))).unwrap();
    let e = tls.connect(&url, "127.0.0.1", addr).await.unwrap_err();
    assert!(matches!(e, JoinTlsError::Handshake { .. }), "{e}");
    assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");

    // Neither pin nor CA: refused before connecting, saying to give --ca.
    let tls = JoinTls::new(None, None).unwrap();
    let e = tls.connect(&url, "127.0.0.1", addr).await.unwrap_err();
    assert!(matches!(e, JoinTlsError::Untrusted { .. }), "{e}");
    assert!(e.to_string().contains("--ca"), "{e}");
    tls.check_url("http://127.0.0.1:1").unwrap();

    // A CA file with no certificate is refused naming the file.
    let e = JoinTls::new(None, Some(("empty.pem", b"hello".as_slice()))).unwrap_err();
    assert!(e.to_string().contains("empty.pem"), "{e}");
}
