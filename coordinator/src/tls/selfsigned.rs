//! `floe serve --tls-self-signed`: a certificate made at first start and kept in
//! `DATA_DIR/tls/` (key 0600, directory 0700), so a coordinator serves https without an
//! operator's certificate. Its SHA-256 fingerprint is written beside it and logged at every
//! start; the CLI pins it (`floe --pin sha256:…`, see [`super::pin`]). The certificate names
//! `localhost`, the loopback addresses, the host's name and the names given; to change them,
//! delete the directory and start again (the fingerprint changes, and clients must pin anew).

use super::pin::fingerprint;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The files of a self-signed certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelfSigned {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM, PKCS#8).
    pub key: PathBuf,
    /// `sha256:…` of the certificate's DER.
    pub fingerprint: String,
    /// Whether this start made it.
    pub created: bool,
}

/// The names every generated certificate carries besides the host's name and `extra`.
const LOOPBACK: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// The certificate in `dir`, made now if `dir` holds none (`extra`: more DNS names or IP
/// addresses the certificate must carry). Errors name the file and what went wrong.
pub fn ensure(dir: &Path, extra: &[String]) -> Result<SelfSigned, String> {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    if cert.exists() && key.exists() {
        let pem = fs::read(&cert).map_err(|e| format!("reading {}: {e}", cert.display()))?;
        let der = super::ca_roots(&pem)
            .map_err(|e| format!("{}: {e}", cert.display()))?
            .into_iter()
            .next()
            .ok_or_else(|| format!("{}: no certificate in it", cert.display()))?;
        return Ok(SelfSigned {
            fingerprint: fingerprint(der.der()),
            cert,
            key,
            created: false,
        });
    }
    let mut names: Vec<String> = LOOPBACK.iter().map(|s| s.to_string()).collect();
    if let Ok(host) = fs::read_to_string("/proc/sys/kernel/hostname") {
        let host = host.trim();
        if !host.is_empty() && host.len() <= 253 && !names.iter().any(|n| n == host) {
            names.push(host.to_string());
        }
    }
    for n in extra {
        if n.is_empty() || n.len() > 253 || n.chars().any(|c| c.is_control() || c == ' ') {
            return Err(format!("--tls-name {n:?} is not a host name or address"));
        }
        if !names.contains(n) {
            names.push(n.clone());
        }
    }
    let key_pair = rcgen::KeyPair::generate().map_err(|e| format!("making a key: {e}"))?;
    let mut params = rcgen::CertificateParams::new(names.clone())
        .map_err(|e| format!("certificate names {names:?}: {e}"))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "floe coordinator (self-signed)");
    let made = params
        .self_signed(&key_pair)
        .map_err(|e| format!("signing the certificate: {e}"))?;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("creating {}: {e}", dir.display()))?;
    // The key first, the certificate last: a certificate on disk always has its key.
    write_new(&key, key_pair.serialize_pem().as_bytes(), 0o600)?;
    let print = fingerprint(made.der());
    write_new(
        &dir.join("fingerprint"),
        format!("{print}\n").as_bytes(),
        0o644,
    )?;
    write_new(&cert, made.pem().as_bytes(), 0o644)?;
    Ok(SelfSigned {
        cert,
        key,
        fingerprint: print,
        created: true,
    })
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename, so
/// nothing half-written is ever at `path`.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    let fail = |e: std::io::Error| format!("writing {}: {e}", path.display());
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(fail)?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(fail)?;
    fs::rename(&tmp, path).map_err(fail)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn first_start_makes_it_later_starts_keep_it_and_the_key_is_private() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("tls");
        let first = ensure(&dir, &["coordinator.site".into(), "10.1.2.3".into()]).unwrap();
        assert!(first.created);
        assert!(first.fingerprint.starts_with("sha256:"));
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&first.key), 0o600);
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(
            fs::read_to_string(dir.join("fingerprint")).unwrap().trim(),
            first.fingerprint
        );
        let again = ensure(&dir, &[]).unwrap();
        assert!(!again.created);
        assert_eq!(again.fingerprint, first.fingerprint);
        assert!(
            ensure(&root.path().join("other"), &["bad name".into()])
                .unwrap_err()
                .contains("--tls-name")
        );
    }
}
