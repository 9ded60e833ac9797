//! The device's identity: one ed25519 key, stored as a 32-byte seed in `<data>/identity.key`.
//!
//! The same key is the libp2p peer id (so a peer is authenticated by noise as the device it
//! claims to be) and, later, the key the device agent signs its reports with. It is created on
//! first start with the operating system's random source, written atomically with mode 0600, and
//! never rewritten. Both raw (32 bytes) and hex (64 characters) files are accepted so an operator
//! can provision one by hand.

use libp2p::identity::Keypair;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The identity file's name inside the data directory.
pub const IDENTITY_FILE: &str = "identity.key";

/// Errors loading or creating the identity, named by phase.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Reading the existing key file failed.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The key file exists but is neither 32 raw bytes nor 64 hex characters.
    #[error(
        "{path} is not an ed25519 seed (expected 32 raw bytes or 64 hex characters, found {len} bytes)"
    )]
    Decode {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: usize,
    },
    /// Drawing randomness for a new key failed.
    #[error("drawing a random seed: {0}")]
    Random(String),
    /// Writing the new key file failed.
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// Loads `<data_dir>/identity.key`, or creates it (0600, written atomically) if it is absent.
pub fn load_or_create(data_dir: &Path) -> Result<Keypair, IdentityError> {
    let path = data_dir.join(IDENTITY_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => decode(&path, &bytes),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => create(&path),
        Err(source) => Err(IdentityError::Read { path, source }),
    }
}

fn decode(path: &Path, bytes: &[u8]) -> Result<Keypair, IdentityError> {
    let bad = || IdentityError::Decode {
        path: path.to_path_buf(),
        len: bytes.len(),
    };
    let mut seed = match bytes.len() {
        32 => bytes.to_vec(),
        _ => {
            let text = std::str::from_utf8(bytes).map_err(|_| bad())?.trim();
            let raw = hex::decode(text).map_err(|_| bad())?;
            if raw.len() != 32 {
                return Err(bad());
            }
            raw
        }
    };
    Keypair::ed25519_from_bytes(&mut seed).map_err(|_| bad())
}

fn create(path: &Path) -> Result<Keypair, IdentityError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| IdentityError::Random(e.to_string()))?;
    let write_err = |source| IdentityError::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(write_err)?;
    let tmp = path.with_extension("key.tmp");
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(write_err)?;
        file.write_all(&seed).map_err(write_err)?;
        file.sync_all().map_err(write_err)?;
    }
    std::fs::rename(&tmp, path).map_err(write_err)?;
    let mut copy = seed;
    Keypair::ed25519_from_bytes(&mut copy).map_err(|_| IdentityError::Decode {
        path: path.to_path_buf(),
        len: 32,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn created_once_then_reloaded_with_the_same_peer_id() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create(dir.path()).unwrap();
        let second = load_or_create(dir.path()).unwrap();
        assert_eq!(first.public().to_peer_id(), second.public().to_peer_id());
        let meta = std::fs::metadata(dir.path().join(IDENTITY_FILE)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(meta.len(), 32);
    }

    #[test]
    fn hex_seed_is_accepted_and_garbage_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(IDENTITY_FILE);
        std::fs::write(&path, format!("{}\n", "11".repeat(32))).unwrap();
        let hex_key = load_or_create(dir.path()).unwrap();
        std::fs::write(&path, [0x11u8; 32]).unwrap();
        let raw_key = load_or_create(dir.path()).unwrap();
        assert_eq!(hex_key.public().to_peer_id(), raw_key.public().to_peer_id());
        std::fs::write(&path, b"not a key").unwrap();
        let err = load_or_create(dir.path()).unwrap_err();
        assert!(err.to_string().contains("not an ed25519 seed"), "{err}");
    }
}
