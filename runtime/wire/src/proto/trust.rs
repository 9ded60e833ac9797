//! The device trust store: which keys sign releases, which key signs directives, and how many
//! release signatures an artifact needs.
//!
//! The store itself travels in an [`Envelope`]. The first one is provisioned
//! with the device (trusted because it was installed, like a TUF root); every later one must
//! be numbered exactly one higher and signed by a threshold of the CURRENT store's release
//! keys and a threshold of its OWN release keys, so a rotation can neither be forged by an
//! outsider nor lock the fleet out with a store nobody can sign for.

use super::envelope::{Envelope, Payload, SignedError, TrustedKey, Verified};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// The trust store schema this code writes and reads.
pub const TRUST_SCHEMA: u32 = 1;
/// The largest encoded trust store.
pub const MAX_TRUST_BYTES: usize = 16 * 1024;
/// The most release keys one store may list.
pub const MAX_RELEASE_KEYS: usize = 32;
/// The default release signature threshold.
pub const DEFAULT_THRESHOLD: u32 = 1;

/// The keys a device trusts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustStore {
    /// Always [`TRUST_SCHEMA`].
    pub schema: u32,
    /// The store's number; a rotation must be exactly one higher.
    pub version: u64,
    /// Keys that sign releases (manifests) and rotations of this store.
    pub release_keys: Vec<TrustedKey>,
    /// Distinct release keys that must sign (k of n).
    pub threshold: u32,
    /// The key that signs directives.
    pub coordinator_key: TrustedKey,
}

/// Why a trust store rotation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RotationError {
    /// The new store is not signed by a threshold of the current store's release keys.
    #[error("not signed by the current trust store: {0}")]
    Current(#[source] SignedError),
    /// The new store is not signed by a threshold of its own release keys.
    #[error("not signed by the new trust store's own keys: {0}")]
    Own(#[source] SignedError),
    /// The new store's number is not the current one plus one.
    #[error("trust store version must be {expected}, found {found}")]
    Version {
        /// The current version plus one.
        expected: u64,
        /// The new store's version.
        found: u64,
    },
}

impl TrustStore {
    /// A version-1 store with the default threshold.
    pub fn new(release_keys: Vec<TrustedKey>, coordinator_key: TrustedKey) -> Self {
        Self {
            schema: TRUST_SCHEMA,
            version: 1,
            release_keys,
            threshold: DEFAULT_THRESHOLD,
            coordinator_key,
        }
    }

    /// The release threshold as a count.
    pub fn release_threshold(&self) -> usize {
        self.threshold as usize
    }

    /// Verifies a manifest (or any payload release keys sign) against this store.
    pub fn verify_release<T: Payload>(
        &self,
        envelope: &Envelope,
    ) -> Result<Verified<T>, SignedError> {
        envelope.verify(&self.release_keys, self.release_threshold())
    }

    /// Verifies a directive (or any payload the coordinator signs) against this store.
    pub fn verify_coordinator<T: Payload>(
        &self,
        envelope: &Envelope,
    ) -> Result<Verified<T>, SignedError> {
        envelope.verify(std::slice::from_ref(&self.coordinator_key), 1)
    }

    /// Accepts `next` as the successor of this store, or says why not.
    pub fn rotate(&self, next: &Envelope) -> Result<TrustStore, RotationError> {
        let by_current: Verified<TrustStore> =
            self.verify_release(next).map_err(RotationError::Current)?;
        let candidate = by_current.value;
        let expected = self.version.saturating_add(1);
        if candidate.version != expected {
            return Err(RotationError::Version {
                expected,
                found: candidate.version,
            });
        }
        candidate
            .verify_release::<TrustStore>(next)
            .map_err(RotationError::Own)?;
        Ok(candidate)
    }
}

impl Payload for TrustStore {
    const KIND: &'static str = "trust";
    const MAX_BYTES: usize = MAX_TRUST_BYTES;

    fn check(&self) -> Result<(), String> {
        if self.schema != TRUST_SCHEMA {
            return Err(format!(
                "trust store schema {} is not supported (expected {TRUST_SCHEMA})",
                self.schema
            ));
        }
        if self.version == 0 {
            return Err("trust store version starts at 1".to_string());
        }
        if self.release_keys.is_empty() || self.release_keys.len() > MAX_RELEASE_KEYS {
            return Err(format!(
                "release_keys must list 1 to {MAX_RELEASE_KEYS} keys, found {}",
                self.release_keys.len()
            ));
        }
        let mut publics = HashSet::new();
        let mut ids = HashSet::new();
        for key in &self.release_keys {
            if !publics.insert(key.public) {
                return Err(format!("release key {} is listed twice", key.public));
            }
            if !ids.insert(key.id) {
                return Err(format!("release key id {} is listed twice", key.id));
            }
            if ed25519_dalek::VerifyingKey::from_bytes(&key.public.0).is_err() {
                return Err(format!(
                    "release key {} is not an ed25519 public key",
                    key.id
                ));
            }
        }
        if ed25519_dalek::VerifyingKey::from_bytes(&self.coordinator_key.public.0).is_err() {
            return Err("coordinator_key is not an ed25519 public key".to_string());
        }
        if self.threshold == 0 || self.threshold as usize > publics.len() {
            return Err(format!(
                "threshold {} must be between 1 and the {} release keys",
                self.threshold,
                publics.len()
            ));
        }
        Ok(())
    }
}
