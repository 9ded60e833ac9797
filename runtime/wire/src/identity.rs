//! The device identity: one ed25519 key, generated on first start, that is also the device's
//! libp2p identity.
//!
//! The file is `<data>/identity.key`, exactly the 32-byte ed25519 seed, mode 0600 (the format the
//! p2p module reads too). It is written to a temporary file created with `O_EXCL` and mode 0600
//! from the start, fsynced, and renamed into place, so a power cut leaves either no key or a
//! whole key, never a truncated one, and the secret is never readable by other users, not even
//! for a moment.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;

/// The identity file's name inside the data directory.
pub const IDENTITY_FILE: &str = "identity.key";

/// Why the identity could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Reading the existing key failed.
    #[error("reading identity key {path}: {source}")]
    Read {
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The existing file is not a 32-byte seed.
    #[error("identity key {path} is {len} bytes, expected a 32-byte ed25519 seed")]
    Malformed {
        /// The key file.
        path: PathBuf,
        /// Its length.
        len: usize,
    },
    /// The existing file can be read by other users.
    #[error("identity key {path} has mode {mode:o}; it must be 0600 (run `chmod 600` on it)")]
    Permissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Drawing randomness for a new key failed.
    #[error("generating identity key: {0}")]
    Random(#[source] getrandom::Error),
    /// Writing the new key failed.
    #[error("writing identity key {path}: {source}")]
    Write {
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Loads `<data_dir>/identity.key`, or generates and stores a new key if there is none.
pub fn load_or_generate(data_dir: &Path) -> Result<SigningKey, IdentityError> {
    let path = data_dir.join(IDENTITY_FILE);
    match std::fs::File::open(&path) {
        Ok(mut file) => {
            let mode = file
                .metadata()
                .map_err(|source| IdentityError::Read {
                    path: path.clone(),
                    source,
                })?
                .permissions()
                .mode()
                & 0o777;
            if mode & 0o077 != 0 {
                return Err(IdentityError::Permissions { path, mode });
            }
            let mut bytes = Vec::with_capacity(33);
            // Read at most 33 bytes: enough to tell a valid seed from an oversized file without
            // reading an arbitrarily large one into memory.
            (&mut file)
                .take(33)
                .read_to_end(&mut bytes)
                .map_err(|source| IdentityError::Read {
                    path: path.clone(),
                    source,
                })?;
            let seed: [u8; 32] =
                bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| IdentityError::Malformed {
                        path: path.clone(),
                        len: bytes.len(),
                    })?;
            Ok(SigningKey::from_bytes(&seed))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => generate(&path),
        Err(source) => Err(IdentityError::Read { path, source }),
    }
}

fn generate(path: &Path) -> Result<SigningKey, IdentityError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(IdentityError::Random)?;
    let tmp = path.with_extension("key.tmp");
    let write_err = |source| IdentityError::Write {
        path: path.to_path_buf(),
        source,
    };
    // A leftover temporary file is from an interrupted earlier attempt; it never held a key
    // that was in use, so it is safe to discard.
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(write_err(e)),
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(write_err)?;
    file.write_all(&seed).map_err(write_err)?;
    file.sync_all().map_err(write_err)?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(write_err)?;
    if let Some(dir) = path.parent() {
        crate::fsutil::sync_dir(dir).map_err(write_err)?;
    }
    tracing::info!(path = %path.display(), "generated a new device identity");
    Ok(SigningKey::from_bytes(&seed))
}

/// The device id used in audit records and reports: the hex of the public key.
pub fn device_id(key: &SigningKey) -> String {
    hex::encode(key.verifying_key().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_once_with_mode_0600_and_reloads_the_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_generate(dir.path()).unwrap();
        let path = dir.path().join(IDENTITY_FILE);
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(meta.len(), 32);
        let b = load_or_generate(dir.path()).unwrap();
        assert_eq!(a.to_bytes(), b.to_bytes());
        assert!(!dir.path().join("identity.key.tmp").exists());
    }

    #[test]
    fn refuses_malformed_and_world_readable_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(IDENTITY_FILE);
        std::fs::write(&path, b"short").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            load_or_generate(dir.path()),
            Err(IdentityError::Malformed { len: 5, .. })
        ));
        std::fs::write(&path, [7u8; 32]).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            load_or_generate(dir.path()),
            Err(IdentityError::Permissions { mode: 0o644, .. })
        ));
    }
}
