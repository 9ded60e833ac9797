//! The device's libp2p identity: the same ed25519 key as [`floe_wire::identity`], so a peer that noise
//! authenticates is the device it claims to be, and the agent and the fabric can never disagree
//! about which key a data directory holds.
//!
//! Loading, first-start generation (0600 from creation, written atomically) and the permission
//! check all live in [`floe_wire::identity`]; this module only turns the key into a libp2p keypair.

use libp2p::identity::Keypair;
use std::path::Path;

pub use floe_wire::identity::{IDENTITY_FILE, IdentityError};

/// Loads `<data_dir>/identity.key`, or creates it if it is absent, as a libp2p keypair.
pub fn load_or_create(data_dir: &Path) -> Result<Keypair, IdentityError> {
    let key = floe_wire::identity::load_or_generate(data_dir)?;
    let mut seed = key.to_bytes();
    Keypair::ed25519_from_bytes(&mut seed).map_err(|_| IdentityError::Malformed {
        path: data_dir.join(IDENTITY_FILE),
        len: seed.len(),
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
    fn the_peer_id_is_the_agents_device_key() {
        let dir = tempfile::tempdir().unwrap();
        let agent_key = floe_wire::identity::load_or_generate(dir.path()).unwrap();
        let keypair = load_or_create(dir.path()).unwrap();
        let ed = keypair.try_into_ed25519().unwrap();
        assert_eq!(ed.public().to_bytes(), agent_key.verifying_key().to_bytes());
    }

    #[test]
    fn a_malformed_key_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(IDENTITY_FILE);
        std::fs::write(&path, b"not a key").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let err = load_or_create(dir.path()).unwrap_err();
        assert!(
            err.to_string().contains("expected a 32-byte ed25519 seed"),
            "{err}"
        );
    }
}
