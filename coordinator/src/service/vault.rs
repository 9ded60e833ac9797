//! The coordinator's data key: values of secret variables are kept in `floe.db` encrypted
//! with it, never in clear.
//!
//! The key is 32 random bytes in `DATA_DIR/secrets.key` (mode 0600, created at first start,
//! written to a temporary file and renamed, like the other key files). A value is sealed with
//! XChaCha20-Poly1305 (RustCrypto `chacha20poly1305`) under a fresh random 24-byte nonce, with
//! the row's scope and name as associated data, so a ciphertext moved to another row does not
//! open. The stored text is `v1:` + base64(nonce ‖ ciphertext). Whoever holds both `floe.db`
//! and `secrets.key` can read the values: keep them on the coordinator, back them up apart.

use super::ServiceError;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// The data key's file in the data directory.
pub const SECRETS_KEY_FILE: &str = "secrets.key";
const KEY_BYTES: usize = 32;
const NONCE_BYTES: usize = 24;
const PREFIX: &str = "v1:";

/// The data key, loaded once at start.
pub(crate) struct Vault {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Vault(..)")
    }
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> ServiceError {
    move |source| ServiceError::Io { what, source }
}

impl Vault {
    /// Loads `dir/secrets.key`, or creates it (0600) when there is none. A key file readable
    /// by others, or not 32 bytes, is refused.
    pub(crate) fn open(dir: &Path) -> Result<Vault, ServiceError> {
        let path = dir.join(SECRETS_KEY_FILE);
        if !path.exists() {
            let mut key = [0u8; KEY_BYTES];
            getrandom::fill(&mut key).map_err(|source| ServiceError::Random { source })?;
            match floe_wire::fsutil::write_atomic(&path, &key, 0o600, false) {
                Ok(()) => {}
                // Another start created it meanwhile: use that one.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io(format!("creating {}", path.display()))(e)),
            }
        }
        let file = std::fs::File::open(&path).map_err(io(format!("reading {}", path.display())))?;
        let mode = file
            .metadata()
            .map_err(io(format!("reading {}", path.display())))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(ServiceError::Internal(format!(
                "{} is readable by others (mode {:o}); chmod 600 it",
                path.display(),
                mode & 0o777
            )));
        }
        let mut bytes = Vec::with_capacity(KEY_BYTES + 1);
        file.take(KEY_BYTES as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(io(format!("reading {}", path.display())))?;
        let key: [u8; KEY_BYTES] = bytes.as_slice().try_into().map_err(|_| {
            ServiceError::Internal(format!(
                "{} is {} bytes, expected a {KEY_BYTES}-byte key",
                path.display(),
                bytes.len()
            ))
        })?;
        Ok(Vault {
            cipher: XChaCha20Poly1305::new(&key.into()),
        })
    }

    /// Encrypts `value` for the row (`scope`, `name`).
    pub(crate) fn seal(
        &self,
        scope: &str,
        name: &str,
        value: &str,
    ) -> Result<String, ServiceError> {
        let mut nonce = [0u8; NONCE_BYTES];
        getrandom::fill(&mut nonce).map_err(|source| ServiceError::Random { source })?;
        let aad = associated(scope, name);
        let ct = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: value.as_bytes(),
                    aad: &aad,
                },
            )
            .map_err(|_| ServiceError::Internal("encrypting a secret value failed".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        Ok(format!(
            "{PREFIX}{}",
            base64::engine::general_purpose::STANDARD.encode(out)
        ))
    }

    /// Decrypts the stored text of row (`scope`, `name`). The error names the row, never a
    /// value.
    pub(crate) fn open_value(
        &self,
        scope: &str,
        name: &str,
        stored: &str,
    ) -> Result<String, ServiceError> {
        let bad = || {
            ServiceError::Internal(format!(
                "the secret value of {name} in {scope} does not decrypt with {SECRETS_KEY_FILE} \
                 (another data key, or a changed database); set it again"
            ))
        };
        let bytes = stored
            .strip_prefix(PREFIX)
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .filter(|b| b.len() >= NONCE_BYTES)
            .ok_or_else(bad)?;
        let (nonce, ct) = bytes.split_at(NONCE_BYTES);
        let aad = associated(scope, name);
        let clear = self
            .cipher
            .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad: &aad })
            .map_err(|_| bad())?;
        String::from_utf8(clear).map_err(|_| bad())
    }
}

/// The associated data of a row: its scope and name, length-prefixed so no two rows share it.
fn associated(scope: &str, name: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(scope.len() + name.len() + 8);
    aad.extend_from_slice(&(scope.len() as u32).to_be_bytes());
    aad.extend_from_slice(scope.as_bytes());
    aad.extend_from_slice(&(name.len() as u32).to_be_bytes());
    aad.extend_from_slice(name.as_bytes());
    aad
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn values_round_trip_only_in_their_row_and_with_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let vault = Vault::open(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join(SECRETS_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let stored = vault.seal("device:ab", "password", "hunter2").unwrap();
        assert!(stored.starts_with("v1:"));
        assert!(!stored.contains("hunter2"));
        assert_eq!(
            vault.open_value("device:ab", "password", &stored).unwrap(),
            "hunter2"
        );
        // Moved to another row, it does not open.
        assert!(vault.open_value("device:cd", "password", &stored).is_err());
        assert!(vault.open_value("device:ab", "token", &stored).is_err());
        // The key is reused at the next start.
        let again = Vault::open(dir.path()).unwrap();
        assert_eq!(
            again.open_value("device:ab", "password", &stored).unwrap(),
            "hunter2"
        );
        // Another data key does not open it, and a changed byte is refused.
        let other = Vault::open(tempfile::tempdir().unwrap().path()).unwrap();
        let err = other
            .open_value("device:ab", "password", &stored)
            .unwrap_err()
            .to_string();
        assert!(err.contains("password in device:ab"), "{err}");
        assert!(!err.contains("hunter2"));
        let mut bytes = base64::engine::general_purpose::STANDARD
            .decode(&stored[3..])
            .unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let changed = format!(
            "v1:{}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        );
        assert!(vault.open_value("device:ab", "password", &changed).is_err());
        assert!(
            vault
                .open_value("device:ab", "password", "hunter2")
                .is_err()
        );
    }

    #[test]
    fn a_key_file_readable_by_others_or_of_the_wrong_size_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SECRETS_KEY_FILE);
        std::fs::write(&path, [0u8; 32]).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(
            Vault::open(dir.path())
                .unwrap_err()
                .to_string()
                .contains("chmod 600")
        );
        std::fs::write(&path, [0u8; 31]).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(
            Vault::open(dir.path())
                .unwrap_err()
                .to_string()
                .contains("31 bytes")
        );
    }
}
