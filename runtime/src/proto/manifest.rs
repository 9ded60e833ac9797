//! The artifact manifest: what a flow version is made of and where it may run.
//!
//! A manifest names an artifact (the flow id), its semantic version and a release number that
//! only grows (the anti-rollback counter), when it was made and when it stops being
//! installable, where it fits (architectures, device types, minimum runtime), and the payload:
//! total size and SHA-256, the chunk size and every chunk's SHA-256, and the file list. The
//! payload is the files concatenated in list order, `flow.json` first.

use super::bytes::Digest;
use super::envelope::Payload;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// The manifest schema this code writes and reads. Schema 1 allows no unknown fields.
pub const MANIFEST_SCHEMA: u32 = 1;
/// The default chunk size: 1 MiB.
pub const DEFAULT_CHUNK_SIZE: u32 = 1 << 20;
/// The smallest chunk size accepted.
pub const MIN_CHUNK_SIZE: u32 = 4096;
/// The largest chunk size accepted (bounds the buffer a verifier holds).
pub const MAX_CHUNK_SIZE: u32 = 16 << 20;
/// The largest encoded manifest: 1 MiB, room for about 30 000 chunk digests.
pub const MAX_MANIFEST_BYTES: usize = 1 << 20;
/// The most files one artifact may hold.
pub const MAX_FILES: usize = 4096;
/// The longest file path, in bytes.
pub const MAX_PATH_BYTES: usize = 1024;
/// The first file of every artifact.
pub const FLOW_FILE: &str = "flow.json";

/// One file of the payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Relative path with `/` separators, no `.` or `..` components.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the file's bytes.
    pub sha256: Digest,
}

/// The signed description of an artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always [`MANIFEST_SCHEMA`].
    pub schema: u32,
    /// The artifact name: the flow id.
    pub name: String,
    /// The semantic version (`1.4.0`).
    pub version: String,
    /// The release number; a device never installs a lower one without a rollback directive.
    pub release: u64,
    /// Creation time, unix seconds.
    pub created: u64,
    /// Expiry time, unix seconds; not installable at or after it.
    pub expires: u64,
    /// Architectures it may run on (`aarch64`, `armv7`, `x86_64`), at least one.
    pub archs: Vec<String>,
    /// Device types it may run on; empty means any.
    pub device_types: Vec<String>,
    /// The lowest runtime version that can run it (semantic version).
    pub min_runtime: String,
    /// Payload size in bytes.
    pub size: u64,
    /// SHA-256 of the payload.
    pub sha256: Digest,
    /// Chunk size in bytes.
    pub chunk_size: u32,
    /// SHA-256 of every chunk, in payload order.
    pub chunks: Vec<Digest>,
    /// The files, in payload order, `flow.json` first.
    pub files: Vec<FileEntry>,
}

/// Checks a name used as an artifact name or a device type: 1 to 128 characters of
/// `[A-Za-z0-9._-]`, not starting with a dot.
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} {name:?} must be 1 to 128 characters of letters, digits, '.', '_' or '-', not starting with '.'"
        ))
    }
}

/// Checks a file path from a manifest: relative, `/`-separated, every component a plain
/// name (no empty, `.` or `..` component), no NUL or backslash, at most [`MAX_PATH_BYTES`].
pub fn check_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("file path is empty".to_string());
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(format!("file path is longer than {MAX_PATH_BYTES} bytes"));
    }
    if path.contains('\0') {
        return Err(format!("file path {path:?} contains a NUL byte"));
    }
    if path.starts_with('/') {
        return Err(format!("file path {path:?} is absolute"));
    }
    if path.contains('\\') {
        return Err(format!("file path {path:?} contains a backslash"));
    }
    for component in path.split('/') {
        match component {
            "" => return Err(format!("file path {path:?} has an empty component")),
            "." | ".." => {
                return Err(format!(
                    "file path {path:?} has a {component:?} component that could escape the target"
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// The number of chunks a payload of `size` bytes has at `chunk_size`.
pub fn chunk_count(size: u64, chunk_size: u32) -> u64 {
    if chunk_size == 0 {
        return 0;
    }
    size.div_ceil(u64::from(chunk_size))
}

impl Manifest {
    /// The byte range of chunk `index` within the payload.
    pub fn chunk_range(&self, index: usize) -> (u64, u64) {
        let start = index as u64 * u64::from(self.chunk_size);
        let end = (start + u64::from(self.chunk_size)).min(self.size);
        (start, end)
    }
}

impl Payload for Manifest {
    const KIND: &'static str = "manifest";
    const MAX_BYTES: usize = MAX_MANIFEST_BYTES;

    fn check(&self) -> Result<(), String> {
        if self.schema != MANIFEST_SCHEMA {
            return Err(format!(
                "manifest schema {} is not supported (expected {MANIFEST_SCHEMA})",
                self.schema
            ));
        }
        check_name("artifact name", &self.name)?;
        semver::Version::parse(&self.version)
            .map_err(|e| format!("version {:?} is not a semantic version: {e}", self.version))?;
        semver::Version::parse(&self.min_runtime).map_err(|e| {
            format!(
                "min_runtime {:?} is not a semantic version: {e}",
                self.min_runtime
            )
        })?;
        if self.expires <= self.created {
            return Err(format!(
                "expires ({}) is not after created ({})",
                self.expires, self.created
            ));
        }
        if self.archs.is_empty() || self.archs.len() > 16 {
            return Err("archs must list 1 to 16 architectures".to_string());
        }
        for arch in &self.archs {
            check_name("architecture", arch)?;
        }
        if self.device_types.len() > 64 {
            return Err("device_types lists more than 64 types".to_string());
        }
        for device_type in &self.device_types {
            check_name("device type", device_type)?;
        }
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&self.chunk_size) {
            return Err(format!(
                "chunk_size {} is outside {MIN_CHUNK_SIZE}..={MAX_CHUNK_SIZE}",
                self.chunk_size
            ));
        }
        let expected_chunks = chunk_count(self.size, self.chunk_size);
        if self.chunks.len() as u64 != expected_chunks {
            return Err(format!(
                "{} chunk digests for a {}-byte payload in {}-byte chunks (expected {expected_chunks})",
                self.chunks.len(),
                self.size,
                self.chunk_size
            ));
        }
        if self.files.is_empty() || self.files.len() > MAX_FILES {
            return Err(format!("files must list 1 to {MAX_FILES} files"));
        }
        if self.files[0].path != FLOW_FILE {
            return Err(format!(
                "the first file is {:?}, expected {FLOW_FILE:?}",
                self.files[0].path
            ));
        }
        let mut seen = HashSet::new();
        let mut total = 0u64;
        for file in &self.files {
            check_path(&file.path)?;
            if !seen.insert(file.path.as_str()) {
                return Err(format!("file path {:?} is listed twice", file.path));
            }
            total = total
                .checked_add(file.size)
                .ok_or_else(|| "file sizes overflow".to_string())?;
        }
        // A file cannot also be a directory of another entry (`a` and `a/b`).
        for file in &self.files {
            let mut prefix = file.path.as_str();
            while let Some((parent, _)) = prefix.rsplit_once('/') {
                if seen.contains(parent) {
                    return Err(format!(
                        "file path {:?} is inside file {parent:?}",
                        file.path
                    ));
                }
                prefix = parent;
            }
        }
        if total != self.size {
            return Err(format!(
                "file sizes add up to {total} bytes but size is {}",
                self.size
            ));
        }
        Ok(())
    }
}
