//! What a data directory holds besides the database: the API token, the release and
//! coordinator keys, the device trust store, and the fabric addresses file. Each is created at
//! first start (written to a temp name, synced, renamed) and reused afterwards.

use super::ServerError;
use floe_wire::artifact::keys;
use floe_wire::proto::{TrustStore, TrustedKey};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Where `floe serve` writes its fabric addresses for devices and tools (one multiaddr ending
/// in `/p2p/<peer id>` per line).
pub const FABRIC_ADDRS_FILE: &str = "fabric-addrs";
/// The API token's file in the data directory.
pub const TOKEN_FILE: &str = "api-token";

fn io(what: String) -> impl FnOnce(std::io::Error) -> ServerError {
    move |source| ServerError::Io { what, source }
}

/// Creates the data directory, or tightens an existing one, to owner only (mode 0700): it
/// holds the API token, private keys and the database, at every start.
pub(super) fn data_dir(dir: &Path) -> Result<(), ServerError> {
    floe_wire::fsutil::private_dir(dir)
        .map_err(io(format!("making {} private (mode 0700)", dir.display())))
}

/// Reads the API token, or creates it (32 random bytes, hex, mode 0600). True when created.
pub(super) fn api_token(dir: &Path) -> Result<(String, bool), ServerError> {
    let path = dir.join(TOKEN_FILE);
    if path.exists() {
        let mode = std::fs::metadata(&path)
            .map_err(io(format!("reading {}", path.display())))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(ServerError::Secret(format!(
                "{} is readable by others (mode {:o}); chmod 600 it",
                path.display(),
                mode & 0o777
            )));
        }
        let token = std::fs::read_to_string(&path)
            .map_err(io(format!("reading {}", path.display())))?
            .trim()
            .to_string();
        if token.len() < 32 {
            return Err(ServerError::Secret(format!(
                "{} holds no usable token",
                path.display()
            )));
        }
        return Ok((token, false));
    }
    let token = crate::service::random_token(32)?;
    let tmp = dir.join(".api-token.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(format!("creating {}", tmp.display())))?;
    writeln!(f, "{token}").map_err(io(format!("writing {}", tmp.display())))?;
    f.sync_all()
        .map_err(io(format!("writing {}", tmp.display())))?;
    std::fs::rename(&tmp, &path).map_err(io(format!("creating {}", path.display())))?;
    Ok((token, true))
}

/// The release and coordinator keys, and what was generated at this start (for the operator
/// to hear of).
pub(super) struct Keys {
    pub(super) release: ed25519_dalek::SigningKey,
    pub(super) coordinator: ed25519_dalek::SigningKey,
    pub(super) notices: Vec<String>,
}

/// Loads the release and coordinator keys, generating them and the device trust store at
/// first start.
pub(super) fn keys_and_trust(dir: &Path) -> Result<Keys, ServerError> {
    let release_dir = dir.join("keys/release");
    let coordinator_dir = dir.join("keys/coordinator");
    let trust_dir = dir.join("trust");
    let mut notices = Vec::new();
    for key_dir in [&release_dir, &coordinator_dir] {
        if !key_dir.join(keys::PRIVATE_KEY_FILE).exists() {
            keys::generate(key_dir).map_err(|source| ServerError::Key {
                what: format!("generating a key in {}", key_dir.display()),
                source,
            })?;
            notices.push(format!(
                "generated key {}",
                key_dir.join(keys::PRIVATE_KEY_FILE).display()
            ));
        }
    }
    let load = |what: &str, d: &Path| {
        keys::load_signing_key(&d.join(keys::PRIVATE_KEY_FILE)).map_err(|source| ServerError::Key {
            what: format!("loading the {what} key"),
            source,
        })
    };
    let release = load("release", &release_dir)?;
    let coordinator = load("coordinator", &coordinator_dir)?;
    if !trust_dir.join(keys::TRUST_FILE).exists() {
        let store = TrustStore::new(
            vec![TrustedKey::new(floe_wire::proto::Fixed(
                release.verifying_key().to_bytes(),
            ))],
            TrustedKey::new(floe_wire::proto::Fixed(
                coordinator.verifying_key().to_bytes(),
            )),
        );
        let path = keys::write_trust(&trust_dir, &store).map_err(|source| ServerError::Key {
            what: "writing the device trust store".into(),
            source,
        })?;
        notices.push(format!(
            "wrote the device trust store {} (copy it to every device's trust directory)",
            path.display()
        ));
    }
    Ok(Keys {
        release,
        coordinator,
        notices,
    })
}

/// `addr` ending in `/p2p/<peer>`: as it is when it names a peer already, else with `peer`.
pub fn with_peer(addr: &libp2p::Multiaddr, peer: libp2p::PeerId) -> libp2p::Multiaddr {
    if addr
        .iter()
        .any(|p| matches!(p, libp2p::multiaddr::Protocol::P2p(_)))
    {
        addr.clone()
    } else {
        addr.clone().with(libp2p::multiaddr::Protocol::P2p(peer))
    }
}

/// Writes the fabric addresses atomically (temp file, sync, rename), each with the peer id.
pub(super) fn write_fabric_addrs(
    dir: &Path,
    addrs: &[libp2p::Multiaddr],
) -> Result<PathBuf, ServerError> {
    let mut text = String::new();
    for a in addrs {
        text.push_str(&a.to_string());
        text.push('\n');
    }
    let path = dir.join(FABRIC_ADDRS_FILE);
    let tmp = dir.join(".fabric-addrs.tmp");
    let mut f = std::fs::File::create(&tmp).map_err(io(format!("writing {}", tmp.display())))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(io(format!("writing {}", tmp.display())))?;
    std::fs::rename(&tmp, &path).map_err(io(format!("writing {}", path.display())))?;
    Ok(path)
}
