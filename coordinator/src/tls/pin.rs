//! Certificate pinning for a coordinator with a self-signed certificate (`floe serve
//! --tls-self-signed`): the CLI is given the certificate's SHA-256 fingerprint (`--pin
//! sha256:…`), fetches the certificate the server presents with a handshake that accepts only
//! that fingerprint, and then trusts exactly that certificate as the root of every request (so
//! the name checks of an ordinary https connection still apply, and a server presenting any
//! other certificate is refused).

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// How long the fetch of the pinned certificate may take to connect, and to shake hands.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// The fingerprint of a DER certificate as the CLI and `floe serve` print it:
/// `sha256:` and 64 lowercase hex digits.
pub fn fingerprint(der: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(der)))
}

/// Parses a `sha256:HEX` fingerprint (colons between the bytes allowed, any case).
pub fn parse_pin(pin: &str) -> Result<[u8; 32], String> {
    let hexpart = pin.trim().strip_prefix("sha256:").ok_or_else(|| {
        format!("the pin {pin:?} must start with sha256: (as floe serve prints it)")
    })?;
    let digits: String = hexpart.chars().filter(|c| *c != ':').collect();
    let bytes = hex::decode(&digits)
        .map_err(|e| format!("the pin {pin:?} is not hexadecimal after sha256: ({e})"))?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
        format!(
            "the pin {pin:?} has {} bytes after sha256:, a SHA-256 fingerprint has 32",
            bytes.len()
        )
    })
}

/// A verifier that accepts exactly one end-entity certificate and remembers what it saw.
#[derive(Debug)]
struct Pinned {
    pin: [u8; 32],
    seen: Mutex<Option<CertificateDer<'static>>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.seen.lock().unwrap_or_else(PoisonError::into_inner) =
            Some(end_entity.clone().into_owned());
        if Sha256::digest(end_entity.as_ref()).as_slice() == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "certificate does not match the pin".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The host and port of an `https://host[:port][/…]` URL.
fn host_port(server: &str) -> Result<(String, u16), String> {
    let rest = server
        .strip_prefix("https://")
        .ok_or_else(|| format!("--pin needs an https:// server, not {server:?}"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    let port_of = |p: &str| {
        p.parse::<u16>()
            .map_err(|_| format!("the port of {server:?} is not a number"))
    };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, rest) = v6
            .split_once(']')
            .ok_or_else(|| format!("{server:?} has an unclosed [ in its address"))?;
        match rest.strip_prefix(':') {
            Some(p) => (h, port_of(p)?),
            None if rest.is_empty() => (h, 443),
            None => return Err(format!("{server:?} has text after its ] address")),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, port_of(p)?),
            None => (authority, 443),
        }
    };
    if host.is_empty() {
        return Err(format!("{server:?} names no host"));
    }
    Ok((host.to_string(), port))
}

/// Connects to `server` (an https URL) and returns the certificate it presents if its
/// fingerprint is `pin`; otherwise an error naming both fingerprints.
pub fn fetch_pinned(server: &str, pin: [u8; 32]) -> Result<CertificateDer<'static>, String> {
    let (host, port) = host_port(server)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(Pinned {
        pin,
        seen: Mutex::new(None),
        provider: provider.clone(),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    let name = ServerName::try_from(host.clone())
        .map_err(|e| format!("{host:?} is not a server name: {e}"))?;
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name)
        .map_err(|e| format!("starting TLS to {host}:{port}: {e}"))?;
    let addr = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| format!("resolving {host}:{port}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host}:{port} resolves to no address"))?;
    let mut tcp = TcpStream::connect_timeout(&addr, FETCH_TIMEOUT)
        .map_err(|e| format!("connecting to {addr}: {e}"))?;
    let io = |e: std::io::Error| format!("TLS handshake with {addr}: {e}");
    tcp.set_read_timeout(Some(FETCH_TIMEOUT)).map_err(io)?;
    tcp.set_write_timeout(Some(FETCH_TIMEOUT)).map_err(io)?;
    let handshake = {
        let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
        // An empty write drives the handshake to its end.
        tls.write(&[]).and_then(|_| tls.flush())
    };
    let seen = verifier
        .seen
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    match (handshake, seen) {
        (Ok(()), Some(cert)) if Sha256::digest(cert.as_ref()).as_slice() == pin => {
            conn.send_close_notify();
            let _ = conn.write_tls(&mut tcp);
            let _ = tcp.read(&mut [0u8; 0]);
            Ok(cert)
        }
        (_, Some(cert)) => Err(format!(
            "the server at {host}:{port} presents certificate {}, not the pinned {}",
            fingerprint(cert.as_ref()),
            format_args!("sha256:{}", hex::encode(pin))
        )),
        (Err(e), None) => Err(io(e)),
        (Ok(()), None) => Err(format!(
            "the server at {host}:{port} presented no certificate"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_parse_with_or_without_colons_and_bad_ones_say_why() {
        let hexs = "ab".repeat(32);
        assert_eq!(parse_pin(&format!("sha256:{hexs}")).unwrap(), [0xab; 32]);
        let colons = vec!["AB"; 32].join(":");
        assert_eq!(parse_pin(&format!("sha256:{colons}")).unwrap(), [0xab; 32]);
        assert!(parse_pin(&hexs).unwrap_err().contains("sha256:"));
        assert!(parse_pin("sha256:zz").unwrap_err().contains("hexadecimal"));
        assert!(parse_pin("sha256:abcd").unwrap_err().contains("32"));
        assert_eq!(fingerprint(b"x").len(), "sha256:".len() + 64);
    }

    #[test]
    fn urls_give_host_and_port() {
        assert_eq!(
            host_port("https://h.example:8443/x").unwrap(),
            ("h.example".into(), 8443)
        );
        assert_eq!(host_port("https://h").unwrap(), ("h".into(), 443));
        assert_eq!(
            host_port("https://[::1]:7300").unwrap(),
            ("::1".into(), 7300)
        );
        assert_eq!(host_port("https://[::1]").unwrap(), ("::1".into(), 443));
        assert!(host_port("http://h").unwrap_err().contains("https"));
        assert!(host_port("https://h:x").unwrap_err().contains("port"));
    }
}
