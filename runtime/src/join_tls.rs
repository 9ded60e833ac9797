//! https for `floed join`: how the device decides to trust the coordinator it enrolls with.
//!
//! - The join string pins the coordinator's certificate (`tls_pin`, the SHA-256 of the leaf
//!   certificate's DER, made by `floe enroll-token create --join` on a TLS coordinator): the
//!   handshake accepts exactly that certificate, whatever names it carries and whoever signed
//!   it (a self-signed `floe serve --tls-self-signed` certificate included); its signature over
//!   the handshake is still checked. A different certificate is refused, and the error names
//!   both fingerprints. With `--ca FILE` as well, the certificate must also chain to that CA
//!   and carry the address's name.
//! - No pin but `--ca FILE`: an ordinary https check (rustls' webpki verifier) against the
//!   certificates of that PEM file only; never the system's roots or a compiled-in list, since
//!   a device enrolls with its own fleet's coordinator, not with the web.
//! - No pin and no CA: an `https://` address is refused before anything is sent, saying to
//!   give `--ca`.
//!
//! rustls with the ring provider and tokio-rustls, which floed already carries (MQTT over TLS,
//! libp2p's QUIC): no new crate on the device.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// Why an https connection to a coordinator was not made.
#[derive(Debug, thiserror::Error)]
pub enum JoinTlsError {
    /// The CA file holds no certificate, or one that does not parse.
    #[error("the CA file {file}: {message}")]
    Ca {
        /// The file, as given.
        file: String,
        /// What is wrong with it.
        message: String,
    },
    /// An https address with neither a pin nor a CA to check it with.
    #[error(
        "the coordinator address {url} is https:// but the join string carries no certificate pin; give the CA certificate that signed the coordinator's certificate with --ca FILE"
    )]
    Untrusted {
        /// The address.
        url: String,
    },
    /// The coordinator presented another certificate than the pinned one.
    #[error(
        "the coordinator at {url} presents certificate {seen}, not the {pinned} the join string pins: refusing to enroll (a join string made for another coordinator, a certificate replaced since, or someone in between)"
    )]
    PinMismatch {
        /// The address.
        url: String,
        /// The presented certificate's fingerprint.
        seen: String,
        /// The pinned fingerprint.
        pinned: String,
    },
    /// The host part of the address is not a name rustls accepts.
    #[error("`{host}` is not a server name: {source}")]
    Name {
        /// The host.
        host: String,
        /// The parser's error.
        source: rustls::pki_types::InvalidDnsNameError,
    },
    /// Building the TLS settings failed.
    #[error("TLS settings: {0}")]
    Config(#[source] rustls::Error),
    /// Building the CA verifier failed.
    #[error("the CA file {file}: {source}")]
    Verifier {
        /// The file, as given.
        file: String,
        /// rustls' error.
        source: rustls::client::VerifierBuilderError,
    },
    /// Connecting or the handshake failed (a certificate that does not chain to the CA, a
    /// plain-HTTP server, a closed port).
    #[error("TLS to {url}: {source}")]
    Handshake {
        /// The address.
        url: String,
        /// The I/O error (rustls' error inside).
        source: std::io::Error,
    },
}

/// The fingerprint as `floe serve` prints it: `sha256:` and 64 lowercase hex digits.
pub fn fingerprint(der: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(der)))
}

/// A verifier that accepts exactly one leaf certificate (and, given a CA verifier, only if
/// that one accepts it too), remembering the fingerprint it was shown.
#[derive(Debug)]
pub struct PinVerifier {
    pin: [u8; 32],
    ca: Option<Arc<WebPkiServerVerifier>>,
    seen: Mutex<Option<[u8; 32]>>,
    provider: Arc<CryptoProvider>,
}

impl PinVerifier {
    /// A verifier for `pin`, also requiring `ca`'s approval when given.
    pub fn new(
        pin: [u8; 32],
        ca: Option<Arc<WebPkiServerVerifier>>,
        provider: Arc<CryptoProvider>,
    ) -> Self {
        PinVerifier {
            pin,
            ca,
            seen: Mutex::new(None),
            provider,
        }
    }

    /// The SHA-256 of the last leaf certificate it was shown.
    pub fn seen(&self) -> Option<[u8; 32]> {
        *self.seen.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let digest: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        *self.seen.lock().unwrap_or_else(PoisonError::into_inner) = Some(digest);
        if digest != self.pin {
            return Err(rustls::Error::General(
                "the certificate does not match the pin".into(),
            ));
        }
        match &self.ca {
            Some(ca) => ca.verify_server_cert(end_entity, intermediates, server_name, ocsp, now),
            None => Ok(ServerCertVerified::assertion()),
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

/// What `floed join` trusts for https coordinator addresses: the join string's pin and the
/// `--ca` file's certificates.
#[derive(Debug, Clone)]
pub struct JoinTls {
    pin: Option<[u8; 32]>,
    ca: Option<(String, Arc<RootCertStore>)>,
    provider: Arc<CryptoProvider>,
}

impl JoinTls {
    /// From the join string's pin and the PEM bytes of `--ca` (with the file's name for
    /// errors). A CA file without a certificate is refused here.
    pub fn new(pin: Option<[u8; 32]>, ca: Option<(&str, &[u8])>) -> Result<Self, JoinTlsError> {
        let ca = match ca {
            None => None,
            Some((file, pem)) => {
                let bad = |message: String| JoinTlsError::Ca {
                    file: file.to_string(),
                    message,
                };
                let mut roots = RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(pem) {
                    let cert = cert.map_err(|e| bad(e.to_string()))?;
                    roots.add(cert).map_err(|e| bad(e.to_string()))?;
                }
                if roots.is_empty() {
                    return Err(bad("no CERTIFICATE block in it".into()));
                }
                Some((file.to_string(), Arc::new(roots)))
            }
        };
        Ok(JoinTls {
            pin,
            ca,
            provider: Arc::new(rustls::crypto::ring::default_provider()),
        })
    }

    /// Refuses an https address this cannot check (no pin, no CA); the sentence says what to
    /// give. Plain http addresses pass.
    pub fn check_url(&self, url: &str) -> Result<(), JoinTlsError> {
        if url.starts_with("https://") && self.pin.is_none() && self.ca.is_none() {
            return Err(JoinTlsError::Untrusted {
                url: url.to_string(),
            });
        }
        Ok(())
    }

    /// The rustls settings, and the pin verifier when there is a pin (to read what it saw).
    fn client_config(&self) -> Result<(ClientConfig, Option<Arc<PinVerifier>>), JoinTlsError> {
        let builder = ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(JoinTlsError::Config)?;
        let ca_verifier = match &self.ca {
            None => None,
            Some((file, roots)) => Some(
                WebPkiServerVerifier::builder_with_provider(roots.clone(), self.provider.clone())
                    .build()
                    .map_err(|source| JoinTlsError::Verifier {
                        file: file.clone(),
                        source,
                    })?,
            ),
        };
        let (mut config, pinned) = match (self.pin, ca_verifier) {
            (Some(pin), ca) => {
                let v = Arc::new(PinVerifier::new(pin, ca, self.provider.clone()));
                let config = builder
                    .dangerous()
                    .with_custom_certificate_verifier(v.clone())
                    .with_no_client_auth();
                (config, Some(v))
            }
            (None, Some(ca)) => (builder.with_webpki_verifier(ca).with_no_client_auth(), None),
            (None, None) => {
                return Err(JoinTlsError::Untrusted {
                    url: "(any)".into(),
                });
            }
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok((config, pinned))
    }

    /// Connects to `addr` and shakes hands as `host` (the URL's host: a name or an IP
    /// address) for `url` (named in errors). A pinned certificate that differs is
    /// [`JoinTlsError::PinMismatch`].
    pub async fn connect(
        &self,
        url: &str,
        host: &str,
        addr: SocketAddr,
    ) -> Result<TlsStream<TcpStream>, JoinTlsError> {
        self.check_url(url)?;
        let (config, pinned) = self.client_config()?;
        let name = ServerName::try_from(host.to_string()).map_err(|source| JoinTlsError::Name {
            host: host.to_string(),
            source,
        })?;
        let handshake = |source| JoinTlsError::Handshake {
            url: url.to_string(),
            source,
        };
        let tcp = TcpStream::connect(addr).await.map_err(handshake)?;
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        match connector.connect(name, tcp).await {
            Ok(s) => Ok(s),
            Err(e) => {
                if let (Some(v), Some(pin)) = (&pinned, self.pin)
                    && let Some(seen) = v.seen()
                    && seen != pin
                {
                    return Err(JoinTlsError::PinMismatch {
                        url: url.to_string(),
                        seen: format!("sha256:{}", hex::encode(seen)),
                        pinned: format!("sha256:{}", hex::encode(pin)),
                    });
                }
                Err(handshake(e))
            }
        }
    }
}

#[cfg(test)]
mod tests;
