//! Signed, content-addressed artifacts: building and verifying bundles, key and trust files,
//! the chunk store, anti-rollback state and the install decision.
//!
//! The threat model is TUF/Uptane's: the network, peers and mirrors are untrusted, so
//! everything a device installs must be signed by a threshold of release keys from its trust
//! store, fresh (not expired), not older than what it already runs (unless the coordinator
//! signed a rollback), fit for the device, and byte-for-byte what was signed. The checks a
//! device makes follow the reference's "Artifact Integrity Verification": checksum, signature,
//! version metadata and architecture, size and `free_disk > size * 2`.
//!
//! Architecture invariant: nothing here imports `agent`, `slots` or `health`; the coordinator
//! builds and signs with the same code devices verify with.

pub mod bundle;
pub mod decide;
pub mod keys;
pub mod store;

pub use bundle::{BuildSpec, BundleError, BundleReader, build, verify_file};
pub use decide::{DeviceFacts, Refusal, install_decision, native_arch};
pub use store::{ChunkStore, StoreError, assemble};

use crate::proto::{Directive, Envelope, Manifest, SignedError, TrustStore, Verified};
use std::path::Path;

/// Verifies a bundle file against `trust` and stores its chunks in `store` as they verify.
/// A later import of the same artifact writes nothing new; a bundle that fails part-way
/// leaves only whole, verified chunks behind.
pub fn import(
    path: &Path,
    trust: &TrustStore,
    store: &ChunkStore,
) -> Result<Verified<Manifest>, BundleError> {
    BundleReader::open(path)?.verify(trust, |_, hash, bytes| {
        store.put_verified(hash, bytes).map_err(BundleError::Store)
    })
}

/// Why the decode → verify → decide pipeline refused a manifest envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PipelineError {
    /// The envelope did not decode or verify, or the manifest did not decode.
    #[error(transparent)]
    Signed(#[from] SignedError),
    /// The manifest verified but may not be installed here.
    #[error(transparent)]
    Refused(#[from] Refusal),
}

/// The whole device-side decision for one manifest envelope: decode the envelope (size
/// capped), verify signatures against the trust store, decode the manifest, then decide.
/// This is the entry point the fuzz target drives.
pub fn check_manifest_envelope(
    envelope_bytes: &[u8],
    trust: &TrustStore,
    facts: &DeviceFacts,
    highest_installed: Option<u64>,
    rollback: Option<&Verified<Directive>>,
) -> Result<Verified<Manifest>, PipelineError> {
    let envelope = Envelope::from_bytes::<Manifest>(envelope_bytes)?;
    let verified = trust.verify_release::<Manifest>(&envelope)?;
    install_decision(&verified, facts, highest_installed, rollback)?;
    Ok(verified)
}

#[cfg(test)]
mod tests;
