//! Key files and trust store files on disk.
//!
//! Formats, chosen to be inspectable with `cat` and `xxd`:
//! - `DIR/floe.key`: the 32-byte ed25519 seed as 64 lowercase hex characters and a newline,
//!   file mode 0600.
//! - `DIR/floe.pub`: the 32-byte public key as 64 hex characters and a newline.
//! - A key id is the first 8 bytes of SHA-256 over the public key, shown as 16 hex characters.
//! - `DIR/trust.cbor`: a trust store [`Envelope`]. The first store (version 1) is trusted
//!   because it was provisioned, so its signatures are not required; later stores replace it
//!   only through [`install_rotation`].

use crate::fsutil::write_atomic;
use crate::proto::{
    CborError, Envelope, Fixed, Payload, PublicKeyBytes, RotationError, SignedError, TrustStore,
    cbor,
};
use ed25519_dalek::SigningKey;
use std::path::{Path, PathBuf};

/// The private key file name inside a key directory.
pub const PRIVATE_KEY_FILE: &str = "floe.key";
/// The public key file name inside a key directory.
pub const PUBLIC_KEY_FILE: &str = "floe.pub";
/// The trust store file name inside a trust directory.
pub const TRUST_FILE: &str = "trust.cbor";

/// Why a key or trust file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A key file exists already; keys are never overwritten.
    #[error("{0} exists already; refusing to overwrite a key")]
    Exists(PathBuf),
    /// A key file's content is not what the format says.
    #[error("{path}: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A key file is not 64 hex characters.
    #[error("{path}: expected 64 hex characters: {source}")]
    Hex {
        /// The file.
        path: PathBuf,
        /// Why the text is not hex of the right length.
        source: hex::FromHexError,
    },
    /// A public key file holds 32 bytes that are not an ed25519 public key.
    #[error("{path}: not an ed25519 public key: {source}")]
    PublicKey {
        /// The file.
        path: PathBuf,
        /// Why the bytes are not a key.
        source: ed25519_dalek::SignatureError,
    },
    /// The trust store file does not hold a valid trust store.
    #[error("{path}: {reason}")]
    Trust {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The trust store's envelope is refused, or signing a new one failed.
    #[error("{path}: {source}")]
    TrustEnvelope {
        /// The file.
        path: PathBuf,
        /// Why the envelope was refused.
        source: SignedError,
    },
    /// The trust store payload is not canonical CBOR.
    #[error("{path}: {source}")]
    TrustCbor {
        /// The file.
        path: PathBuf,
        /// Why the bytes were refused.
        source: CborError,
    },
    /// A new trust store is not a valid rotation of the current one.
    #[error("{path}: {source}")]
    Rotation {
        /// The file.
        path: PathBuf,
        /// Why the rotation was refused.
        source: RotationError,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Generates a key pair from the OS random source and writes it to `dir` (created if
/// missing). Refuses if either file exists. Returns the public key.
pub fn generate(dir: &Path) -> Result<PublicKeyBytes, KeyError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let private_path = dir.join(PRIVATE_KEY_FILE);
    let public_path = dir.join(PUBLIC_KEY_FILE);
    for path in [&private_path, &public_path] {
        if path.symlink_metadata().is_ok() {
            return Err(KeyError::Exists(path.clone()));
        }
    }
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| KeyError::Io {
        path: private_path.clone(),
        source: std::io::Error::other(e),
    })?;
    let key = SigningKey::from_bytes(&seed);
    let public = Fixed(key.verifying_key().to_bytes());
    write_atomic(
        &private_path,
        format!("{}\n", hex::encode(seed)).as_bytes(),
        0o600,
        false,
    )
    .map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => KeyError::Exists(private_path.clone()),
        _ => KeyError::Io {
            path: private_path.clone(),
            source: e,
        },
    })?;
    write_atomic(
        &public_path,
        format!("{}\n", public.to_hex()).as_bytes(),
        0o644,
        false,
    )
    .map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => KeyError::Exists(public_path.clone()),
        _ => KeyError::Io {
            path: public_path.clone(),
            source: e,
        },
    })?;
    Ok(public)
}

fn read_hex32(path: &Path) -> Result<[u8; 32], KeyError> {
    let meta = std::fs::metadata(path).map_err(io(path))?;
    if meta.len() > 1024 {
        return Err(KeyError::Format {
            path: path.to_path_buf(),
            reason: "file is too large for a key".to_string(),
        });
    }
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    Fixed::<32>::from_hex(text.trim())
        .map(|f| f.0)
        .map_err(|source| KeyError::Hex {
            path: path.to_path_buf(),
            source,
        })
}

/// Reads a private key: `path` is the key file itself or a directory holding `floe.key`.
pub fn load_signing_key(path: &Path) -> Result<SigningKey, KeyError> {
    let file = if path.is_dir() {
        path.join(PRIVATE_KEY_FILE)
    } else {
        path.to_path_buf()
    };
    Ok(SigningKey::from_bytes(&read_hex32(&file)?))
}

/// Reads a public key: `path` is a `.pub` file or a directory holding `floe.pub`.
pub fn load_public_key(path: &Path) -> Result<PublicKeyBytes, KeyError> {
    let file = if path.is_dir() {
        path.join(PUBLIC_KEY_FILE)
    } else {
        path.to_path_buf()
    };
    let bytes = read_hex32(&file)?;
    ed25519_dalek::VerifyingKey::from_bytes(&bytes).map_err(|source| KeyError::PublicKey {
        path: file.clone(),
        source,
    })?;
    Ok(Fixed(bytes))
}

/// Reads the trust store in `dir/trust.cbor` (or `dir` itself when it is a file).
pub fn load_trust(dir: &Path) -> Result<TrustStore, KeyError> {
    let path = if dir.is_dir() {
        dir.join(TRUST_FILE)
    } else {
        dir.to_path_buf()
    };
    let limit = Envelope::max_bytes::<TrustStore>();
    let meta = std::fs::metadata(&path).map_err(io(&path))?;
    let trust_err = |reason: String| KeyError::Trust {
        path: path.clone(),
        reason,
    };
    if meta.len() > limit as u64 {
        return Err(trust_err(format!(
            "{} bytes, more than the {limit} allowed",
            meta.len()
        )));
    }
    let bytes = std::fs::read(&path).map_err(io(&path))?;
    let envelope =
        Envelope::from_bytes::<TrustStore>(&bytes).map_err(|source| KeyError::TrustEnvelope {
            path: path.clone(),
            source,
        })?;
    let store: TrustStore = cbor::decode_canonical(&envelope.payload.0, TrustStore::MAX_BYTES)
        .map_err(|source| KeyError::TrustCbor {
            path: path.clone(),
            source,
        })?;
    store.check().map_err(trust_err)?;
    Ok(store)
}

/// Writes a provisioned (root) trust store to `dir/trust.cbor`, refusing to overwrite.
pub fn write_trust(dir: &Path, store: &TrustStore) -> Result<PathBuf, KeyError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let path = dir.join(TRUST_FILE);
    let envelope = Envelope::sign(store, &[]).map_err(|source| KeyError::TrustEnvelope {
        path: path.clone(),
        source,
    })?;
    let bytes = envelope
        .to_bytes()
        .map_err(|source| KeyError::TrustEnvelope {
            path: path.clone(),
            source,
        })?;
    write_atomic(&path, &bytes, 0o644, false).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => KeyError::Exists(path.clone()),
        _ => KeyError::Io {
            path: path.clone(),
            source: e,
        },
    })?;
    Ok(path)
}

/// Replaces the trust store in `dir` with `next` if it is a valid rotation of the current
/// one (signed by a threshold of the current and of its own release keys, numbered one
/// higher). Returns the new store.
pub fn install_rotation(dir: &Path, next: &[u8]) -> Result<TrustStore, KeyError> {
    let current = load_trust(dir)?;
    let path = dir.join(TRUST_FILE);
    let envelope =
        Envelope::from_bytes::<TrustStore>(next).map_err(|source| KeyError::TrustEnvelope {
            path: path.clone(),
            source,
        })?;
    let store = current
        .rotate(&envelope)
        .map_err(|source| KeyError::Rotation {
            path: path.clone(),
            source,
        })?;
    write_atomic(&path, next, 0o644, true).map_err(io(&path))?;
    Ok(store)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::TrustedKey;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn generate_writes_0600_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let public = generate(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join(PRIVATE_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let key = load_signing_key(dir.path()).unwrap();
        assert_eq!(key.verifying_key().to_bytes(), public.0);
        assert_eq!(load_public_key(dir.path()).unwrap(), public);
        let before = std::fs::read(dir.path().join(PRIVATE_KEY_FILE)).unwrap();
        assert!(matches!(generate(dir.path()), Err(KeyError::Exists(_))));
        assert_eq!(
            std::fs::read(dir.path().join(PRIVATE_KEY_FILE)).unwrap(),
            before
        );
    }

    #[test]
    fn trust_files_round_trip_and_rotate() {
        let dir = tempfile::tempdir().unwrap();
        let k1 = SigningKey::from_bytes(&[1; 32]);
        let k2 = SigningKey::from_bytes(&[2; 32]);
        let t = |k: &SigningKey| TrustedKey::new(Fixed(k.verifying_key().to_bytes()));
        let store = TrustStore::new(vec![t(&k1)], t(&k2));
        write_trust(dir.path(), &store).unwrap();
        assert_eq!(load_trust(dir.path()).unwrap(), store);
        assert!(matches!(
            write_trust(dir.path(), &store),
            Err(KeyError::Exists(_))
        ));

        let mut next = store.clone();
        next.version = 2;
        let unsigned = Envelope::sign(&next, &[]).unwrap().to_bytes().unwrap();
        assert!(install_rotation(dir.path(), &unsigned).is_err());
        assert_eq!(load_trust(dir.path()).unwrap(), store);
        let signed = Envelope::sign(&next, &[&k1]).unwrap().to_bytes().unwrap();
        assert_eq!(install_rotation(dir.path(), &signed).unwrap(), next);
        assert_eq!(load_trust(dir.path()).unwrap().version, 2);
    }
}
