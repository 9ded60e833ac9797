//! Installing a signed `.floe` bundle: the artifact layer verifies it against the trust store
//! (signatures, freshness, every chunk) and imports its chunks, the install decision checks
//! anti-rollback, architecture, device type and free disk, and the verified files are then
//! assembled into the standby slot with a version record built from the signed manifest. This
//! is the air-gapped path (a USB stick): nothing comes from the network.

use std::path::Path;

use crate::config::Config;
use crate::releases::ReleaseStore;
use crate::slots::{SlotError, SmokeInput, VersionRecord};
use crate::state::DB_FILE;
use floe_wire::artifact::{self, ChunkStore, DeviceFacts, keys};
use floe_wire::clock::unix_secs;
use floe_wire::proto::Manifest;

/// Why a bundle could not be prepared for installation.
#[derive(Debug, thiserror::Error)]
pub enum BundleInstallError {
    /// The trust store could not be loaded.
    #[error("loading the trust store {path}: {message}")]
    Trust {
        /// The trust directory (config key `trust_store`).
        path: String,
        /// What failed.
        message: String,
    },
    /// The bundle failed verification or import.
    #[error("verifying {path}: {message}")]
    Verify {
        /// The bundle.
        path: String,
        /// What failed.
        message: String,
    },
    /// The verified manifest may not be installed on this device.
    #[error("refused: {0}")]
    Refused(String),
    /// The release table could not be read or written.
    #[error("release table: {0}")]
    Releases(String),
}

/// A verified bundle, ready to stage.
#[derive(Debug)]
pub struct Prepared {
    /// The signed manifest.
    pub manifest: Manifest,
    /// The version record the slot will carry.
    pub record: VersionRecord,
    /// The chunk store holding the bundle's chunks.
    pub store: ChunkStore,
}

/// Verifies and imports `path` and decides whether it may be installed here.
pub fn prepare(path: &Path, cfg: &Config, device_id: &str) -> Result<Prepared, BundleInstallError> {
    let trust = keys::load_trust(&cfg.trust_store).map_err(|e| BundleInstallError::Trust {
        path: cfg.trust_store.display().to_string(),
        message: e.to_string(),
    })?;
    let verify_err = |message: String| BundleInstallError::Verify {
        path: path.display().to_string(),
        message,
    };
    let store = ChunkStore::open(&cfg.data_dir).map_err(|e| verify_err(e.to_string()))?;
    let verified = artifact::import(path, &trust, &store).map_err(|e| verify_err(e.to_string()))?;
    let releases = ReleaseStore::open(&cfg.data_dir.join(DB_FILE))
        .map_err(|e| BundleInstallError::Releases(e.to_string()))?;
    let highest = releases
        .highest(&verified.value.name)
        .map_err(|e| BundleInstallError::Releases(e.to_string()))?;
    let facts = DeviceFacts {
        device_id: device_id.to_string(),
        arch: cfg.arch.clone(),
        device_type: cfg.device_type.clone(),
        runtime_version: env!("CARGO_PKG_VERSION").to_string(),
        free_disk: free_bytes(&cfg.data_dir),
        now: unix_secs(),
    };
    artifact::install_decision(&verified, &facts, highest, None)
        .map_err(|e| BundleInstallError::Refused(e.to_string()))?;
    let manifest = verified.value;
    let record = record_of(&manifest)?;
    Ok(Prepared {
        manifest,
        record,
        store,
    })
}

/// The slot's version record for a verified manifest: its files with their hashes and the
/// smoke test it declares. Both install paths (a bundle on disk and a coordinator directive)
/// use it, so a version is smoke-tested the same way whichever way it arrived.
pub fn record_of(
    manifest: &floe_wire::proto::Manifest,
) -> Result<VersionRecord, BundleInstallError> {
    let smoke = manifest.smoke_test.as_ref();
    Ok(VersionRecord {
        version: manifest.version.clone(),
        flow: "flow.json".to_string(),
        files: manifest
            .files
            .iter()
            .map(|f| (f.path.clone(), f.sha256.to_hex()))
            .collect(),
        smoke: smoke_messages(smoke.map(|s| s.inject.as_slice()))?,
        smoke_expect: smoke_messages(smoke.map(|s| s.expect.as_slice()))?,
        smoke_timeout_ms: smoke.map(|s| s.timeout_ms),
    })
}

/// Turns the signed smoke-test messages (payloads as JSON text, already checked when the
/// manifest was decoded) into the slot record's form.
fn smoke_messages(
    list: Option<&[floe_wire::proto::manifest::SmokeMessage]>,
) -> Result<Vec<SmokeInput>, BundleInstallError> {
    list.unwrap_or_default()
        .iter()
        .map(|m| {
            let payload = serde_json::from_str(&m.payload).map_err(|e| {
                BundleInstallError::Refused(format!("smoke test payload for node {}: {e}", m.node))
            })?;
            Ok(SmokeInput {
                node: m.node.clone(),
                payload,
            })
        })
        .collect()
}

/// Writes the manifest's files into an (empty, fresh) staging directory.
pub fn fill(prepared: &Prepared, staging: &Path) -> Result<(), SlotError> {
    let io = |source| SlotError::Io {
        op: "assembling the artifact into",
        path: staging.to_path_buf(),
        source,
    };
    // The artifact layer assembles into a directory that must not exist yet and renames its
    // own temporary directory into place.
    std::fs::remove_dir(staging).map_err(io)?;
    artifact::assemble(&prepared.manifest, &prepared.store, staging)
        .map_err(|e| io(std::io::Error::other(e.to_string())))
}

/// Records the committed release so an older one is refused later (anti-rollback).
pub fn record_committed(cfg: &Config, name: &str, release: u64) -> Result<(), BundleInstallError> {
    let releases = ReleaseStore::open(&cfg.data_dir.join(DB_FILE))
        .map_err(|e| BundleInstallError::Releases(e.to_string()))?;
    releases
        .record_installed(name, release, unix_secs())
        .map_err(|e| BundleInstallError::Releases(e.to_string()))
}

// The statvfs field types are 32-bit on armv7, so the conversions are needed there.
#[allow(clippy::useless_conversion)]
fn free_bytes(dir: &Path) -> u64 {
    nix::sys::statvfs::statvfs(dir)
        .map(|s| u64::from(s.blocks_available()).saturating_mul(u64::from(s.fragment_size())))
        .unwrap_or(0)
}
