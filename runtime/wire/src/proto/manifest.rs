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
/// About how many chunks a payload is cut into when no chunk size is given
/// ([`chunk_size_for`]).
pub const TARGET_CHUNKS: u64 = 512;
/// The smallest chunk size [`chunk_size_for`] picks: 128 KiB.
pub const MIN_AUTO_CHUNK_SIZE: u32 = 128 << 10;
/// The smallest chunk size accepted.
pub const MIN_CHUNK_SIZE: u32 = 4096;
/// The largest chunk size accepted (bounds the buffer a verifier holds).
pub const MAX_CHUNK_SIZE: u32 = 16 << 20;
/// The chunk size for a payload of `total` bytes when none is given: the power of two that
/// cuts it into about [`TARGET_CHUNKS`] chunks, at least [`MIN_AUTO_CHUNK_SIZE`] and at most
/// [`MAX_CHUNK_SIZE`].
///
/// Why by count: peers can only pass on whole, verified chunks, so how soon a fleet's uplinks
/// all carry data, and how long the last chunks take to spread, both scale with the chunk.
/// On the fabric benchmark (64 MiB to 16 devices on 50 Mbit/s links) efficiency was 0.59 with
/// 1 MiB chunks, 0.68 with 256 KiB, 0.78 with 128 KiB and 0.71 with 64 KiB, where the cost of
/// each request and file starts to dominate; hence the floor.
pub fn chunk_size_for(total: u64) -> u32 {
    let wanted = total.div_ceil(TARGET_CHUNKS).max(1).next_power_of_two();
    let clamped = wanted.clamp(u64::from(MIN_AUTO_CHUNK_SIZE), u64::from(MAX_CHUNK_SIZE));
    u32::try_from(clamped).unwrap_or(MAX_CHUNK_SIZE)
}

/// The largest encoded manifest: 1 MiB, room for about 30 000 chunk digests.
pub const MAX_MANIFEST_BYTES: usize = 1 << 20;
/// The most files one artifact may hold.
pub const MAX_FILES: usize = 4096;
/// The longest file path, in bytes.
pub const MAX_PATH_BYTES: usize = 1024;
/// The first file of every artifact.
pub const FLOW_FILE: &str = "flow.json";
/// The most messages a smoke test may inject, and the most outputs it may expect.
pub const MAX_SMOKE_MESSAGES: usize = 64;
/// The longest smoke-test payload, as JSON text in bytes.
pub const MAX_SMOKE_PAYLOAD_BYTES: usize = 64 << 10;
/// The longest node id a smoke test may name, in bytes (the flow language's own limit).
pub const MAX_SMOKE_NODE_BYTES: usize = 256;
/// The longest smoke-test timeout: 20 s, in milliseconds. A device's main loop waits for the
/// smoke test, so the bound stays well under the 30 s systemd watchdog of `floed.service`.
pub const MAX_SMOKE_TIMEOUT_MS: u64 = 20_000;
/// The longest a manifest may live (`expires - created`): two years. A signed manifest that
/// never expires would let an old release be replayed for ever (TUF's freeze attack).
pub const MAX_MANIFEST_LIFETIME_SECS: u64 = 2 * 366 * 86_400;

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
    /// The flow's own smoke test: test input and the outputs it must produce. Absent in
    /// manifests that declare none (and then absent from their encoding, so manifests signed
    /// before the field existed keep their exact bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smoke_test: Option<SmokeTest>,
}

/// The test a device runs on a new version before switching to it: with the flow's outputs
/// muted, inject each message of `inject` (in order) into its node, then require, for every
/// entry of `expect`, a message out of that sink node whose payload matches, all within
/// `timeout_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmokeTest {
    /// Messages to inject, in order.
    pub inject: Vec<SmokeMessage>,
    /// Outputs that must come out of sink nodes (`debug`, `mqtt_out`).
    pub expect: Vec<SmokeMessage>,
    /// How long the device waits for every expected output, in milliseconds (1 to
    /// [`MAX_SMOKE_TIMEOUT_MS`]).
    pub timeout_ms: u64,
}

/// One message of a smoke test: the node it goes into (or must come out of) and its payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmokeMessage {
    /// The node id.
    pub node: String,
    /// The payload as JSON text. Text rather than a CBOR value keeps the signed bytes
    /// independent of how a JSON number would map to CBOR. For an expectation, an object
    /// matches any output object that has every key given with a matching value (extra keys
    /// are allowed); any other value must be equal.
    pub payload: String,
}

impl SmokeTest {
    /// Checks the bounds: message counts, node ids, payload sizes and JSON, the timeout.
    pub fn check(&self) -> Result<(), String> {
        if self.inject.len() > MAX_SMOKE_MESSAGES || self.expect.len() > MAX_SMOKE_MESSAGES {
            return Err(format!(
                "smoke_test lists more than {MAX_SMOKE_MESSAGES} messages to inject or expect"
            ));
        }
        if self.inject.is_empty() && self.expect.is_empty() {
            return Err("smoke_test injects nothing and expects nothing".to_string());
        }
        if self.timeout_ms == 0 || self.timeout_ms > MAX_SMOKE_TIMEOUT_MS {
            return Err(format!(
                "smoke_test timeout_ms {} is outside 1..={MAX_SMOKE_TIMEOUT_MS}",
                self.timeout_ms
            ));
        }
        for (what, list) in [("inject", &self.inject), ("expect", &self.expect)] {
            for (i, m) in list.iter().enumerate() {
                if m.node.is_empty() || m.node.len() > MAX_SMOKE_NODE_BYTES {
                    return Err(format!(
                        "smoke_test {what}[{i}]: node id must be 1 to {MAX_SMOKE_NODE_BYTES} bytes"
                    ));
                }
                if m.payload.len() > MAX_SMOKE_PAYLOAD_BYTES {
                    return Err(format!(
                        "smoke_test {what}[{i}]: payload is longer than {MAX_SMOKE_PAYLOAD_BYTES} bytes"
                    ));
                }
                serde_json::from_str::<serde_json::Value>(&m.payload)
                    .map_err(|e| format!("smoke_test {what}[{i}]: payload is not JSON: {e}"))?;
            }
        }
        Ok(())
    }
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
        if self.expires - self.created > MAX_MANIFEST_LIFETIME_SECS {
            return Err(format!(
                "the manifest lives {} s (created {}, expires {}); at most \
                 {MAX_MANIFEST_LIFETIME_SECS} s (two years) is allowed",
                self.expires - self.created,
                self.created,
                self.expires
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
        if let Some(smoke) = &self.smoke_test {
            smoke.check()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod chunk_size_tests {
    use super::*;

    #[test]
    fn the_default_chunk_size_cuts_a_payload_into_about_512_chunks_within_bounds() {
        // Small payloads get the floor, so a flow of a few KiB is one chunk.
        assert_eq!(chunk_size_for(0), MIN_AUTO_CHUNK_SIZE);
        assert_eq!(chunk_size_for(20_000), MIN_AUTO_CHUNK_SIZE);
        assert_eq!(chunk_size_for(64 << 20), 128 << 10);
        // Just over a power of two rounds the chunk up, so never more than 512 chunks.
        assert_eq!(chunk_size_for((64 << 20) + 1), 256 << 10);
        assert_eq!(chunk_size_for(1 << 30), 2 << 20);
        // Huge payloads stop at the largest chunk size (more chunks, each at most 16 MiB).
        assert_eq!(chunk_size_for(64 << 30), MAX_CHUNK_SIZE);
        assert_eq!(chunk_size_for(u64::MAX), MAX_CHUNK_SIZE);
        for total in [1u64, 4095, 1 << 20, 300 << 20, 8 << 30] {
            let size = chunk_size_for(total);
            assert!(size.is_power_of_two());
            assert!((MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&size));
            assert!(total.div_ceil(u64::from(size)) <= TARGET_CHUNKS || size == MAX_CHUNK_SIZE);
        }
    }
}
