//! The HTTPS client side shared by the CLI's client and webhook deliveries: rustls with ring,
//! trusting either the certificates of a PEM file (a private CA, or the server's own
//! certificate) or the system's roots, never a compiled-in list.

/// The certificates of a PEM file (at least one), or a sentence naming what is wrong.
pub fn ca_roots(pem: &[u8]) -> Result<Vec<ureq::tls::Certificate<'static>>, String> {
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(pem) {
        match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => certs.push(c),
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    if certs.is_empty() {
        return Err("no CERTIFICATE block in it".into());
    }
    Ok(certs)
}

/// The pin of the leaf (first) certificate of a PEM chain: `sha256:` and the hex of its
/// DER's SHA-256, as `floe --pin` and a join string's `tls_pin` take it.
pub fn leaf_fingerprint(pem: &[u8]) -> Result<String, String> {
    let leaf = ca_roots(pem)?
        .into_iter()
        .next()
        .ok_or_else(|| "no CERTIFICATE block in it".to_string())?;
    Ok(pin::fingerprint(leaf.der()))
}

/// The system's trusted roots (none when they cannot be read: https then fails with a
/// certificate error naming the server).
pub fn system_roots() -> Vec<ureq::tls::Certificate<'static>> {
    let found = rustls_native_certs::load_native_certs();
    for e in found.errors.iter().take(3) {
        tracing::debug!(error = %e, "reading the system's root certificates");
    }
    found
        .certs
        .iter()
        .map(|c| ureq::tls::Certificate::from_der(c.as_ref()).to_owned())
        .collect()
}

/// ureq's TLS settings trusting exactly `roots`.
pub fn config(roots: Vec<ureq::tls::Certificate<'static>>) -> ureq::tls::TlsConfig {
    ureq::tls::TlsConfig::builder()
        .provider(ureq::tls::TlsProvider::Rustls)
        .unversioned_rustls_crypto_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .root_certs(ureq::tls::RootCerts::Specific(std::sync::Arc::new(roots)))
        .build()
}
pub mod pin;
pub mod selfsigned;
