//! The two deployment slots and the `active` link, laid out as the reference's "Blue-Green
//! Deployment for Edge" section describes:
//!
//! ```text
//! <data>/slots/blue/      flow.json, files/…, .version
//! <data>/slots/green/     the same
//! <data>/active -> slots/blue
//! ```
//!
//! Why this shape: the previous version stays on disk, whole and verified, until the next
//! deployment, so a rollback is one link swap and needs nothing from the network or from the
//! new version. That is the property RAUC, SWUpdate and Mender only offer with a reboot.
//!
//! Crash safety comes from never modifying anything in place. Staging writes into
//! `slots/<slot>.tmp/`, fsyncs every file and directory, and renames the whole directory into
//! place. The link is replaced by creating `active.tmp` and `rename(2)`-ing it over `active`,
//! followed by an fsync of the data directory; there is no moment without an `active` link.
//! At start, leftovers of an interrupted step (`active.tmp`, `*.tmp` slot directories) are
//! removed, a slot whose files do not match the hashes in its version record is never
//! activated, and a slot directory replaced by a symlink leading out of the data directory is
//! refused.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::crash::crash_point;

/// The version record's file name inside a slot.
pub const VERSION_FILE: &str = ".version";
/// The link naming the active slot.
pub const ACTIVE_LINK: &str = "active";
/// The temporary link used while switching.
pub const ACTIVE_TMP: &str = "active.tmp";
/// The largest version record accepted (bytes).
pub const MAX_VERSION_RECORD: u64 = 1 << 20;
/// The most files one slot may hold.
pub const MAX_FILES: usize = 10_000;

/// One of the two slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SlotName {
    /// Slot A.
    Blue,
    /// Slot B.
    Green,
}

impl SlotName {
    /// Both slots.
    pub const ALL: [SlotName; 2] = [SlotName::Blue, SlotName::Green];

    /// The directory and stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            SlotName::Blue => "blue",
            SlotName::Green => "green",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<SlotName> {
        match s {
            "blue" => Some(SlotName::Blue),
            "green" => Some(SlotName::Green),
            _ => None,
        }
    }

    /// The other slot.
    pub fn other(self) -> SlotName {
        match self {
            SlotName::Blue => SlotName::Green,
            SlotName::Green => SlotName::Blue,
        }
    }
}

impl std::fmt::Display for SlotName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A message to inject during the smoke test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmokeInput {
    /// The node that receives it.
    pub node: String,
    /// The message payload.
    pub payload: serde_json::Value,
}

/// The version record (`.version`) of a slot: what it holds and the hash of every file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionRecord {
    /// The flow version (for example `1.4.0`).
    pub version: String,
    /// The flow definition's path inside the slot.
    #[serde(default = "default_flow_path")]
    pub flow: String,
    /// Every file of the slot (relative path → lowercase hex sha256), the flow included.
    pub files: BTreeMap<String, String>,
    /// The test input the manifest declares for the smoke test, if any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub smoke: Vec<SmokeInput>,
    /// The outputs the smoke test must see (same shape: the sink node and the payload it must
    /// match; see `proto::manifest::SmokeMessage` for the matching rule).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub smoke_expect: Vec<SmokeInput>,
    /// How long the smoke test waits for the expected outputs, in milliseconds; absent: the
    /// device's `trial.smoke_timeout_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smoke_timeout_ms: Option<u64>,
    /// The values of the flow's variables the coordinator delivered with the Stage directive
    /// (signed, verified before use), resolved for this device. The flow runs with them,
    /// under the local `[vars]` of `floed.toml`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub vars: BTreeMap<String, String>,
    /// The values of the flow's secret variables, as delivered: sealed to this device's key
    /// (base64 in the record). Opened in memory only when the flow starts; the clear value is
    /// never written here.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secret_vars: BTreeMap<String, floe_wire::proto::SealedValue>,
}

fn default_flow_path() -> String {
    "flow.json".to_string()
}

/// Why a slot operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    /// A filesystem operation failed (disk full, read-only, permissions).
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Assembling a verified artifact's chunks into a staging directory failed.
    #[error("assembling the artifact into {path}: {source}")]
    Assemble {
        /// The staging directory.
        path: PathBuf,
        /// The chunk store's error.
        source: floe_wire::artifact::StoreError,
    },
    /// The version record is too large or breaks a rule of its format.
    #[error("version record {path}: {message}")]
    Record {
        /// The record file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The version record is not valid JSON (or could not be written as JSON).
    #[error("version record {path}: {source}")]
    RecordJson {
        /// The record file.
        path: PathBuf,
        /// The JSON error.
        source: serde_json::Error,
    },
    /// A path in the version record is absolute, climbs out with `..`, or names the record.
    #[error("version record lists an unsafe path `{0}`")]
    UnsafePath(String),
    /// A file's content does not match its recorded hash.
    #[error("slot {slot}: file `{file}` does not match its recorded sha256")]
    HashMismatch {
        /// The slot.
        slot: SlotName,
        /// The file.
        file: String,
    },
    /// A file listed in the record is missing or is not a regular file.
    #[error("slot {slot}: file `{file}` is missing or not a regular file")]
    Missing {
        /// The slot.
        slot: SlotName,
        /// The file.
        file: String,
    },
    /// The slot directory is a symlink leading out of the data directory.
    #[error("slot {slot} is a symlink to {target}, outside the data directory; refusing it")]
    Escape {
        /// The slot.
        slot: SlotName,
        /// Where it leads.
        target: PathBuf,
    },
    /// The slot is empty.
    #[error("slot {0} holds no version")]
    Empty(SlotName),
    /// The `active` link points somewhere other than one of the two slots.
    #[error("the active link points at {0}, which is not a slot")]
    BadLink(PathBuf),
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SlotError {
    let path = path.to_path_buf();
    move |source| SlotError::Io { op, path, source }
}

/// Fsyncs a directory so that renames and new entries in it survive a power cut.
pub fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// What start-up found and cleaned.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Cleanup {
    /// A stale `active.tmp` link was removed.
    pub removed_tmp_link: bool,
    /// Interrupted staging directories that were removed.
    pub removed_staging: Vec<SlotName>,
    /// Interrupted artifact assembly directories were removed.
    pub removed_assembly: bool,
}

/// The slot layout under one data directory.
#[derive(Debug, Clone)]
pub struct Slots {
    data_dir: PathBuf,
}

impl Slots {
    /// Opens the layout, creating `slots/blue` and `slots/green` if needed.
    pub fn open(data_dir: &Path) -> Result<Slots, SlotError> {
        let slots = data_dir.join("slots");
        for s in SlotName::ALL {
            let dir = slots.join(s.as_str());
            // A symlinked slot is checked by `verify`; creating a directory over it would hide it.
            if std::fs::symlink_metadata(&dir).is_err() {
                std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
            }
        }
        Ok(Slots {
            data_dir: data_dir.to_path_buf(),
        })
    }

    /// The layout of an existing data directory, creating nothing (for read-only callers).
    pub fn open_existing(data_dir: &Path) -> Slots {
        Slots {
            data_dir: data_dir.to_path_buf(),
        }
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// A slot's directory.
    pub fn dir(&self, slot: SlotName) -> PathBuf {
        self.data_dir.join("slots").join(slot.as_str())
    }

    fn staging_dir(&self, slot: SlotName) -> PathBuf {
        self.data_dir
            .join("slots")
            .join(format!("{}.tmp", slot.as_str()))
    }

    /// Removes what an interrupted step left behind: a stale `active.tmp` link and staging
    /// directories. Neither was ever in use, so removing them loses nothing.
    pub fn cleanup(&self) -> Result<Cleanup, SlotError> {
        let mut out = Cleanup::default();
        let tmp = self.data_dir.join(ACTIVE_TMP);
        if std::fs::symlink_metadata(&tmp).is_ok() {
            std::fs::remove_file(&tmp).map_err(io("removing stale link", &tmp))?;
            out.removed_tmp_link = true;
        }
        for s in SlotName::ALL {
            let dir = self.staging_dir(s);
            if std::fs::symlink_metadata(&dir).is_ok() {
                remove_any(&dir)?;
                out.removed_staging.push(s);
            }
        }
        // The artifact layer assembles through its own `.<name>.<pid>.<n>.tmp` directories
        // beside the staging directory; a crash can leave one behind.
        let slots = self.data_dir.join("slots");
        if let Ok(entries) = std::fs::read_dir(&slots) {
            for entry in entries.flatten().take(1024) {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') && name.ends_with(".tmp") {
                    remove_any(&entry.path())?;
                    out.removed_assembly = true;
                }
            }
        }
        if out != Cleanup::default() {
            fsync_dir(&self.data_dir).map_err(io("syncing", &self.data_dir))?;
            let slots = self.data_dir.join("slots");
            fsync_dir(&slots).map_err(io("syncing", &slots))?;
        }
        Ok(out)
    }

    /// Which slot `active` points at, if the link exists.
    pub fn active(&self) -> Result<Option<SlotName>, SlotError> {
        let link = self.data_dir.join(ACTIVE_LINK);
        match std::fs::read_link(&link) {
            Ok(target) => {
                for s in SlotName::ALL {
                    if target == Path::new("slots").join(s.as_str()) {
                        return Ok(Some(s));
                    }
                }
                Err(SlotError::BadLink(target))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("reading link", &link)(e)),
        }
    }

    /// Points `active` at `slot` atomically: `symlink(active.tmp)`, `rename(2)` over `active`,
    /// fsync of the data directory. There is never a moment without a valid link.
    pub fn switch_active(&self, slot: SlotName) -> Result<(), SlotError> {
        let tmp = self.data_dir.join(ACTIVE_TMP);
        let link = self.data_dir.join(ACTIVE_LINK);
        if std::fs::symlink_metadata(&tmp).is_ok() {
            std::fs::remove_file(&tmp).map_err(io("removing stale link", &tmp))?;
        }
        std::os::unix::fs::symlink(Path::new("slots").join(slot.as_str()), &tmp)
            .map_err(io("creating link", &tmp))?;
        crash_point("switch:tmp-link");
        std::fs::rename(&tmp, &link).map_err(io("renaming link", &link))?;
        crash_point("switch:renamed");
        fsync_dir(&self.data_dir).map_err(io("syncing", &self.data_dir))?;
        Ok(())
    }

    /// Reads a slot's version record without checking the files.
    pub fn record(&self, slot: SlotName) -> Result<VersionRecord, SlotError> {
        let dir = self.checked_dir(slot)?;
        read_record(&dir.join(VERSION_FILE), slot)
    }

    /// Checks a slot fully: not a symlink out of the data directory, a readable version
    /// record with safe paths, and every listed file present with a matching sha256.
    pub fn verify(&self, slot: SlotName) -> Result<VersionRecord, SlotError> {
        let dir = self.checked_dir(slot)?;
        let record = read_record(&dir.join(VERSION_FILE), slot)?;
        verify_files(&dir, &record, slot)?;
        Ok(record)
    }

    /// The slot directory after refusing a symlink that leads out of the data directory.
    fn checked_dir(&self, slot: SlotName) -> Result<PathBuf, SlotError> {
        let dir = self.dir(slot);
        let meta = std::fs::symlink_metadata(&dir).map_err(io("inspecting slot", &dir))?;
        if meta.file_type().is_symlink() {
            let target = std::fs::canonicalize(&dir).map_err(io("resolving slot", &dir))?;
            let root = std::fs::canonicalize(&self.data_dir)
                .map_err(io("resolving data dir", &self.data_dir))?;
            if !target.starts_with(&root) {
                return Err(SlotError::Escape { slot, target });
            }
        }
        Ok(dir)
    }

    /// Copies a staged directory (a version record plus the files it lists) into `slot`,
    /// verifying every hash, then renames it into place. The slot must not be the active one;
    /// the caller checks that against the lifecycle.
    pub fn stage_from_dir(
        &self,
        slot: SlotName,
        source: &Path,
    ) -> Result<VersionRecord, SlotError> {
        let record = read_record(&source.join(VERSION_FILE), slot)?;
        self.stage_with(slot, &record, |target| {
            for rel in record.files.keys() {
                let from = source.join(rel);
                let to = target.join(rel);
                if let Some(parent) = to.parent() {
                    std::fs::create_dir_all(parent).map_err(io("creating", parent))?;
                }
                copy_synced(&from, &to)?;
            }
            Ok(())
        })
    }

    /// Stages a version into `slot`: `fill` writes the files into an empty staging directory
    /// (for example by assembling a verified artifact), the record is written beside them,
    /// every hash is checked, and only then does the staging directory replace the slot.
    pub fn stage_with<F>(
        &self,
        slot: SlotName,
        record: &VersionRecord,
        fill: F,
    ) -> Result<VersionRecord, SlotError>
    where
        F: FnOnce(&Path) -> Result<(), SlotError>,
    {
        check_record(record)?;
        let staging = self.staging_dir(slot);
        if std::fs::symlink_metadata(&staging).is_ok() {
            remove_any(&staging)?;
        }
        std::fs::create_dir_all(&staging).map_err(io("creating", &staging))?;
        let result = (|| {
            fill(&staging)?;
            crash_point("stage:filled");
            let bytes =
                serde_json::to_vec_pretty(record).map_err(|source| SlotError::RecordJson {
                    path: staging.join(VERSION_FILE),
                    source,
                })?;
            write_synced(&staging.join(VERSION_FILE), &bytes)?;
            verify_files(&staging, record, slot)?;
            sync_tree(&staging)?;
            Ok(())
        })();
        if let Err(e) = result {
            // Nothing half-written stays behind: the slot itself was not touched yet.
            if let Err(cleanup) = remove_any(&staging) {
                tracing::warn!(error = %cleanup, "could not remove staging directory");
            }
            return Err(e);
        }
        let dir = self.dir(slot);
        if std::fs::symlink_metadata(&dir).is_ok() {
            remove_any(&dir)?;
        }
        crash_point("stage:old-removed");
        std::fs::rename(&staging, &dir).map_err(io("renaming staged slot", &dir))?;
        let slots = self.data_dir.join("slots");
        fsync_dir(&slots).map_err(io("syncing", &slots))?;
        crash_point("stage:renamed");
        Ok(record.clone())
    }

    /// Empties a slot (used when staging was interrupted and the slot holds nothing usable).
    pub fn clear(&self, slot: SlotName) -> Result<(), SlotError> {
        let dir = self.dir(slot);
        if std::fs::symlink_metadata(&dir).is_ok() {
            remove_any(&dir)?;
        }
        std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
        let slots = self.data_dir.join("slots");
        fsync_dir(&slots).map_err(io("syncing", &slots))
    }
}

/// Reads and checks the version record of a staged directory.
pub fn read_staged_record(source: &Path) -> Result<VersionRecord, SlotError> {
    let path = source.join(VERSION_FILE);
    match File::open(&path) {
        Ok(_) => read_record(&path, SlotName::Blue),
        Err(e) => Err(io("opening staged version record", &path)(e)),
    }
}

/// Builds a version record for the files under `dir` (every regular file, recursively, except
/// the record itself). Used to prepare staged directories and by tests and benchmarks.
pub fn record_for_dir(
    dir: &Path,
    version: &str,
    smoke: Vec<SmokeInput>,
) -> Result<VersionRecord, SlotError> {
    let mut files = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let abs = dir.join(&rel);
        for entry in std::fs::read_dir(&abs).map_err(io("listing", &abs))? {
            let entry = entry.map_err(io("listing", &abs))?;
            let name = rel.join(entry.file_name());
            let ft = entry.file_type().map_err(io("inspecting", &entry.path()))?;
            if ft.is_dir() {
                stack.push(name);
            } else if ft.is_file() && name != Path::new(VERSION_FILE) {
                if files.len() >= MAX_FILES {
                    return Err(SlotError::Record {
                        path: dir.to_path_buf(),
                        message: format!("more than {MAX_FILES} files"),
                    });
                }
                let key = name.to_string_lossy().into_owned();
                files.insert(key, hash_file(&entry.path())?);
            }
        }
    }
    Ok(VersionRecord {
        version: version.to_string(),
        flow: default_flow_path(),
        files,
        smoke,
        smoke_expect: Vec::new(),
        smoke_timeout_ms: None,
        vars: BTreeMap::new(),
        secret_vars: BTreeMap::new(),
    })
}

/// The lowercase hex sha256 of a file, read in a streaming fashion.
pub fn hash_file(path: &Path) -> Result<String, SlotError> {
    let mut file = File::open(path).map_err(io("opening", path))?;
    let mut hasher = Sha256::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf).map_err(io("reading", path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

fn check_record(record: &VersionRecord) -> Result<(), SlotError> {
    if record.files.len() > MAX_FILES {
        return Err(SlotError::Record {
            path: PathBuf::from(VERSION_FILE),
            message: format!("more than {MAX_FILES} files"),
        });
    }
    if record.version.is_empty() {
        return Err(SlotError::Record {
            path: PathBuf::from(VERSION_FILE),
            message: "version is empty".to_string(),
        });
    }
    for rel in record.files.keys() {
        let p = Path::new(rel);
        let safe = !rel.is_empty()
            && p.components().all(|c| matches!(c, Component::Normal(_)))
            && p != Path::new(VERSION_FILE);
        if !safe {
            return Err(SlotError::UnsafePath(rel.clone()));
        }
    }
    if !record.files.contains_key(&record.flow) {
        return Err(SlotError::Record {
            path: PathBuf::from(VERSION_FILE),
            message: format!(
                "the flow file `{}` is not among the listed files",
                record.flow
            ),
        });
    }
    Ok(())
}

fn read_record(path: &Path, slot: SlotName) -> Result<VersionRecord, SlotError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(SlotError::Empty(slot)),
        Err(e) => return Err(io("opening", path)(e)),
    };
    let mut bytes = Vec::new();
    file.take(MAX_VERSION_RECORD + 1)
        .read_to_end(&mut bytes)
        .map_err(io("reading", path))?;
    if bytes.len() as u64 > MAX_VERSION_RECORD {
        return Err(SlotError::Record {
            path: path.to_path_buf(),
            message: format!("larger than {MAX_VERSION_RECORD} bytes"),
        });
    }
    let record: VersionRecord =
        serde_json::from_slice(&bytes).map_err(|source| SlotError::RecordJson {
            path: path.to_path_buf(),
            source,
        })?;
    check_record(&record)?;
    Ok(record)
}

fn verify_files(dir: &Path, record: &VersionRecord, slot: SlotName) -> Result<(), SlotError> {
    for (rel, want) in &record.files {
        let path = dir.join(rel);
        // Refuse anything that is not a plain file, including symlinks, so a slot cannot be
        // made to read files from elsewhere.
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_file() => {}
            _ => {
                return Err(SlotError::Missing {
                    slot,
                    file: rel.clone(),
                });
            }
        }
        if hash_file(&path)? != want.to_ascii_lowercase() {
            return Err(SlotError::HashMismatch {
                slot,
                file: rel.clone(),
            });
        }
    }
    Ok(())
}

fn copy_synced(from: &Path, to: &Path) -> Result<(), SlotError> {
    match std::fs::symlink_metadata(from) {
        Ok(m) if m.file_type().is_file() => {}
        _ => {
            return Err(SlotError::Io {
                op: "copying (not a regular file)",
                path: from.to_path_buf(),
                source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
            });
        }
    }
    let mut src = File::open(from).map_err(io("opening", from))?;
    let mut dst = File::create(to).map_err(io("creating", to))?;
    std::io::copy(&mut src, &mut dst).map_err(io("writing", to))?;
    dst.sync_all().map_err(io("syncing", to))
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), SlotError> {
    let mut f = File::create(path).map_err(io("creating", path))?;
    f.write_all(bytes).map_err(io("writing", path))?;
    f.sync_all().map_err(io("syncing", path))
}

/// Fsyncs every directory under `root` (files were synced as they were written).
fn sync_tree(root: &Path) -> Result<(), SlotError> {
    let mut stack = vec![root.to_path_buf()];
    let mut seen = 0usize;
    while let Some(dir) = stack.pop() {
        seen += 1;
        if seen > MAX_FILES {
            break;
        }
        for entry in std::fs::read_dir(&dir).map_err(io("listing", &dir))? {
            let entry = entry.map_err(io("listing", &dir))?;
            if entry.file_type().map_err(io("inspecting", &dir))?.is_dir() {
                stack.push(entry.path());
            }
        }
        fsync_dir(&dir).map_err(io("syncing", &dir))?;
    }
    Ok(())
}

/// Removes a file, a symlink (not its target) or a directory tree.
fn remove_any(path: &Path) -> Result<(), SlotError> {
    let meta = std::fs::symlink_metadata(path).map_err(io("inspecting", path))?;
    if meta.file_type().is_dir() {
        std::fs::remove_dir_all(path).map_err(io("removing", path))
    } else {
        std::fs::remove_file(path).map_err(io("removing", path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn staged(dir: &Path, version: &str) -> PathBuf {
        let src = dir.join(format!("src-{version}"));
        std::fs::create_dir_all(src.join("files")).unwrap();
        std::fs::write(src.join("flow.json"), format!("{{\"v\":\"{version}\"}}")).unwrap();
        std::fs::write(src.join("files/model.bin"), vec![7u8; 1000]).unwrap();
        let rec = record_for_dir(&src, version, Vec::new()).unwrap();
        std::fs::write(src.join(VERSION_FILE), serde_json::to_vec(&rec).unwrap()).unwrap();
        src
    }

    #[test]
    fn stage_verify_and_switch() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let slots = Slots::open(&data).unwrap();
        assert_eq!(slots.active().unwrap(), None);
        let src = staged(tmp.path(), "1.0.0");
        let rec = slots.stage_from_dir(SlotName::Blue, &src).unwrap();
        assert_eq!(rec.version, "1.0.0");
        assert_eq!(slots.verify(SlotName::Blue).unwrap(), rec);
        assert!(matches!(
            slots.verify(SlotName::Green),
            Err(SlotError::Empty(SlotName::Green))
        ));
        slots.switch_active(SlotName::Blue).unwrap();
        assert_eq!(slots.active().unwrap(), Some(SlotName::Blue));
        slots.switch_active(SlotName::Green).unwrap();
        assert_eq!(slots.active().unwrap(), Some(SlotName::Green));
        assert_eq!(
            std::fs::read_link(data.join(ACTIVE_LINK)).unwrap(),
            PathBuf::from("slots/green")
        );
        assert!(!data.join(ACTIVE_TMP).exists());
        assert!(!data.join("slots/blue.tmp").exists());
    }

    #[test]
    fn tampered_file_fails_verification_and_bad_stage_leaves_slot_intact() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let slots = Slots::open(&data).unwrap();
        slots
            .stage_from_dir(SlotName::Blue, &staged(tmp.path(), "1.0.0"))
            .unwrap();
        std::fs::write(data.join("slots/blue/files/model.bin"), b"evil").unwrap();
        assert!(matches!(
            slots.verify(SlotName::Blue),
            Err(SlotError::HashMismatch { .. })
        ));
        // A source whose file does not match its record is refused and changes nothing.
        slots
            .stage_from_dir(SlotName::Green, &staged(tmp.path(), "2.0.0"))
            .unwrap();
        let bad = staged(tmp.path(), "3.0.0");
        std::fs::write(bad.join("flow.json"), b"changed").unwrap();
        assert!(matches!(
            slots.stage_from_dir(SlotName::Green, &bad),
            Err(SlotError::HashMismatch { .. })
        ));
        assert_eq!(slots.verify(SlotName::Green).unwrap().version, "2.0.0");
        assert!(!data.join("slots/green.tmp").exists());
    }

    #[test]
    fn cleanup_removes_stale_tmp_link_and_staging() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let slots = Slots::open(&data).unwrap();
        std::os::unix::fs::symlink("slots/green", data.join(ACTIVE_TMP)).unwrap();
        std::fs::create_dir_all(data.join("slots/green.tmp/files")).unwrap();
        let c = slots.cleanup().unwrap();
        assert!(c.removed_tmp_link);
        assert_eq!(c.removed_staging, vec![SlotName::Green]);
        assert!(std::fs::symlink_metadata(data.join(ACTIVE_TMP)).is_err());
        assert!(!data.join("slots/green.tmp").exists());
        assert_eq!(slots.cleanup().unwrap(), Cleanup::default());
    }

    #[test]
    fn slot_symlinked_out_of_the_data_dir_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let slots = Slots::open(&data).unwrap();
        slots
            .stage_from_dir(SlotName::Blue, &staged(tmp.path(), "1.0.0"))
            .unwrap();
        let outside = tmp.path().join("outside");
        std::fs::rename(data.join("slots/blue"), &outside).unwrap();
        std::os::unix::fs::symlink(&outside, data.join("slots/blue")).unwrap();
        assert!(matches!(
            slots.verify(SlotName::Blue),
            Err(SlotError::Escape { .. })
        ));
    }

    #[test]
    fn unsafe_paths_in_records_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let slots = Slots::open(&tmp.path().join("data")).unwrap();
        for bad in ["../x", "/etc/passwd", ".version", "a/../../b"] {
            let mut files = BTreeMap::new();
            files.insert("flow.json".to_string(), "00".repeat(32));
            files.insert(bad.to_string(), "00".repeat(32));
            let rec = VersionRecord {
                version: "1".into(),
                flow: "flow.json".into(),
                files,
                smoke: Vec::new(),
                smoke_expect: Vec::new(),
                smoke_timeout_ms: None,
                vars: BTreeMap::new(),
                secret_vars: BTreeMap::new(),
            };
            let r = slots.stage_with(SlotName::Blue, &rec, |_| Ok(()));
            assert!(matches!(r, Err(SlotError::UnsafePath(_))), "{bad}: {r:?}");
        }
    }
}
