//! Installing a signed `.floe` bundle: the artifact layer verifies it against the trust store
//! (signatures, freshness, every chunk) and imports its chunks, the install decision checks
//! anti-rollback, architecture, device type and free disk, and the verified files are then
//! assembled into the standby slot with a version record built from the signed manifest. This
//! is the air-gapped path (a USB stick): nothing comes from the network.

use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::releases::{ReleaseError, ReleaseStore};
use crate::slots::{SlotError, SmokeInput, VersionRecord};
use crate::state::DB_FILE;
use floe_wire::artifact::keys::{self, KeyError};
use floe_wire::artifact::{self, BundleError, ChunkStore, DeviceFacts, Refusal, StoreError};
use floe_wire::clock::unix_secs;
use floe_wire::proto::Manifest;

/// Why a bundle could not be prepared for installation.
#[derive(Debug, thiserror::Error)]
pub enum BundleInstallError {
    /// The trust store could not be loaded.
    #[error("loading the trust store {}: {source}", path.display())]
    Trust {
        /// The trust directory (config key `trust_store`).
        path: PathBuf,
        /// What failed.
        source: KeyError,
    },
    /// The chunk store that receives the bundle's chunks could not be opened.
    #[error("verifying {}: {source}", path.display())]
    Store {
        /// The bundle.
        path: PathBuf,
        /// What failed.
        source: StoreError,
    },
    /// The bundle failed verification or import.
    #[error("verifying {}: {source}", path.display())]
    Verify {
        /// The bundle.
        path: PathBuf,
        /// What failed.
        source: BundleError,
    },
    /// The verified manifest may not be installed on this device.
    #[error("refused: {0}")]
    Refused(#[source] Refusal),
    /// A smoke-test payload of the verified manifest is not JSON.
    #[error("refused: smoke test payload for node {node}: {source}")]
    SmokePayload {
        /// The node the payload is for.
        node: String,
        /// The JSON error.
        source: serde_json::Error,
    },
    /// The release table could not be read or written.
    #[error("release table: {0}")]
    Releases(#[source] ReleaseError),
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
    let trust = keys::load_trust(&cfg.trust_store).map_err(|source| BundleInstallError::Trust {
        path: cfg.trust_store.clone(),
        source,
    })?;
    let store = ChunkStore::open(&cfg.data_dir).map_err(|source| BundleInstallError::Store {
        path: path.to_path_buf(),
        source,
    })?;
    let verified =
        artifact::import(path, &trust, &store).map_err(|source| BundleInstallError::Verify {
            path: path.to_path_buf(),
            source,
        })?;
    let releases =
        ReleaseStore::open(&cfg.data_dir.join(DB_FILE)).map_err(BundleInstallError::Releases)?;
    let highest = releases
        .highest(&verified.value.name)
        .map_err(BundleInstallError::Releases)?;
    artifact::install_decision(&verified, &device_facts(cfg, device_id), highest, None)
        .map_err(BundleInstallError::Refused)?;
    releases
        .remember_content(
            &verified.value.name,
            verified.value.release,
            &verified.digest.to_hex(),
        )
        .map_err(BundleInstallError::Releases)?;
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
pub fn record_of(manifest: &Manifest) -> Result<VersionRecord, BundleInstallError> {
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
        vars: Default::default(),
        secret_vars: Default::default(),
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
            let payload = serde_json::from_str(&m.payload).map_err(|source| {
                BundleInstallError::SmokePayload {
                    node: m.node.clone(),
                    source,
                }
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
    assemble_into(&prepared.manifest, &prepared.store, staging)
}

/// Assembles a verified manifest's files from the chunk store into an (empty, fresh) staging
/// directory. Both install paths stage this way: a bundle on disk and a coordinator directive
/// whose chunks the fabric fetched.
pub fn assemble_into(
    manifest: &Manifest,
    store: &ChunkStore,
    staging: &Path,
) -> Result<(), SlotError> {
    // The artifact layer assembles into a directory that must not exist yet and renames its
    // own temporary directory into place.
    std::fs::remove_dir(staging).map_err(|source| SlotError::Io {
        op: "assembling the artifact into",
        path: staging.to_path_buf(),
        source,
    })?;
    artifact::assemble(manifest, store, staging).map_err(|source| SlotError::Assemble {
        path: staging.to_path_buf(),
        source,
    })
}

/// Records the committed release so an older one is refused later (anti-rollback).
pub fn record_committed(cfg: &Config, name: &str, release: u64) -> Result<(), BundleInstallError> {
    let releases =
        ReleaseStore::open(&cfg.data_dir.join(DB_FILE)).map_err(BundleInstallError::Releases)?;
    releases
        .record_installed(name, release, unix_secs())
        .map_err(BundleInstallError::Releases)
}

/// What the install decision knows about this device now (its free disk included). Both
/// install paths decide with it.
pub fn device_facts(cfg: &Config, device_id: &str) -> DeviceFacts {
    DeviceFacts {
        device_id: device_id.to_string(),
        arch: cfg.arch.clone(),
        device_type: cfg.device_type.clone(),
        runtime_version: env!("CARGO_PKG_VERSION").to_string(),
        free_disk: free_bytes(&cfg.data_dir),
        now: unix_secs(),
    }
}

// The statvfs field types are 32-bit on armv7, so the conversions are needed there.
#[allow(clippy::useless_conversion)]
fn free_bytes(dir: &Path) -> u64 {
    nix::sys::statvfs::statvfs(dir)
        .map(|s| u64::from(s.blocks_available()).saturating_mul(u64::from(s.fragment_size())))
        .unwrap_or(0)
}
