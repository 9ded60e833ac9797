//! The bundle file (`X.floe`): one signed manifest and its payload in a framed container.
//!
//! Layout (all integers big-endian):
//!
//! ```text
//! 0   8  magic "FLOEBNDL"
//! 8   4  format version (1)
//! 12  4  envelope length N (at most the manifest envelope cap)
//! 16  N  the signed manifest envelope (canonical CBOR)
//! ..     the payload: the files concatenated in manifest order, flow.json first,
//!        exactly manifest.size bytes, then end of file
//! ```
//!
//! Verification streams the payload one chunk at a time, so memory stays at a few chunks
//! whatever the artifact's size. Every chunk is hashed on the reading thread and the whole
//! payload on a second thread fed through a bounded channel, so the two SHA-256 passes the
//! format asks for take the wall time of about one. Per-file digests are checked where files
//! are written out, in [`assemble`](super::store::assemble).

use crate::proto::manifest::{self, FLOW_FILE, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE};
use crate::proto::{
    Digest, Envelope, FileEntry, Manifest, SignedError, TrustStore, Verified, cbor,
};
use ed25519_dalek::SigningKey;
use sha2::{Digest as _, Sha256};
use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use super::store::StoreError;
use crate::fsutil;

/// The bundle magic.
pub const MAGIC: &[u8; 8] = b"FLOEBNDL";
/// The bundle format version this code writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Header bytes before the envelope.
pub const HEADER_LEN: u64 = 16;

/// Why a bundle could not be built, read or verified.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The header is not a Floe bundle header (magic, version, envelope length).
    #[error("not a Floe bundle: {0}")]
    Header(String),
    /// The file is shorter than its header and manifest say.
    #[error("truncated bundle: expected {expected} bytes, found {found}")]
    Truncated {
        /// The length the header and manifest imply.
        expected: u64,
        /// The file's length.
        found: u64,
    },
    /// The file is longer than its header and manifest say.
    #[error("bundle has {extra} bytes after the payload")]
    Trailing {
        /// How many.
        extra: u64,
    },
    /// The manifest envelope failed to decode or verify.
    #[error("manifest: {0}")]
    Manifest(#[source] SignedError),
    /// A payload chunk does not hash to its manifest digest.
    #[error("chunk {index} is corrupt: expected sha256 {expected}, found {found}")]
    Chunk {
        /// The chunk's index.
        index: usize,
        /// The manifest's digest.
        expected: Digest,
        /// The digest of the bytes read.
        found: Digest,
    },
    /// The whole payload does not hash to the manifest's digest.
    #[error("payload is corrupt: expected sha256 {expected}, found {found}")]
    Payload {
        /// The manifest's digest.
        expected: Digest,
        /// The digest of the bytes read.
        found: Digest,
    },
    /// The build inputs are not usable (bad name, unsafe file, symlink …).
    #[error("build: {0}")]
    Build(String),
    /// The smoke-test file is not JSON of the expected shape.
    #[error("build: the smoke-test file: {0}")]
    SmokeFile(#[source] serde_json::Error),
    /// A consumer of verified chunks refused one (the hashing thread stopped …).
    #[error("consumer: {0}")]
    Consumer(String),
    /// The chunk store refused a verified chunk.
    #[error("consumer: {0}")]
    Store(#[source] StoreError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BundleError + '_ {
    move |source| BundleError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What to put in a manifest besides the payload description.
#[derive(Debug, Clone)]
pub struct BuildSpec {
    /// The artifact name (the flow id).
    pub name: String,
    /// The semantic version.
    pub version: String,
    /// The release number.
    pub release: u64,
    /// Creation time, unix seconds.
    pub created: u64,
    /// Expiry time, unix seconds.
    pub expires: u64,
    /// Allowed architectures.
    pub archs: Vec<String>,
    /// Allowed device types (empty: any).
    pub device_types: Vec<String>,
    /// Minimum runtime version.
    pub min_runtime: String,
    /// Chunk size in bytes.
    pub chunk_size: Option<u32>,
    /// The flow's smoke test, carried in the signed manifest (see [`smoke_test_from_json`]).
    pub smoke_test: Option<manifest::SmokeTest>,
}

impl BuildSpec {
    /// A spec with the defaults: chunks sized for the payload ([`manifest::chunk_size_for`]), any device type, this runtime as the minimum.
    pub fn new(name: &str, version: &str, release: u64, created: u64, expires: u64) -> Self {
        Self {
            name: name.to_string(),
            version: version.to_string(),
            release,
            created,
            expires,
            archs: vec!["aarch64".into(), "armv7".into(), "x86_64".into()],
            device_types: Vec::new(),
            min_runtime: env!("CARGO_PKG_VERSION").to_string(),
            chunk_size: None,
            smoke_test: None,
        }
    }
}

/// The default smoke-test timeout when a smoke-test file gives none: 5 s, the device's own
/// default smoke timeout.
pub const DEFAULT_SMOKE_TIMEOUT_MS: u64 = 5000;

/// The largest smoke-test file accepted, in bytes.
pub const MAX_SMOKE_FILE_BYTES: usize = 1 << 20;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SmokeFile {
    #[serde(default)]
    inject: Vec<SmokeFileMessage>,
    #[serde(default)]
    expect: Vec<SmokeFileMessage>,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SmokeFileMessage {
    node: String,
    payload: serde_json::Value,
}

/// Reads a smoke-test file (`floe artifact build --smoke-test FILE`):
///
/// ```json
/// {"inject": [{"node": "scale", "payload": {"raw": 21500}}],
///  "expect": [{"node": "out", "payload": {"celsius": 21.5}}],
///  "timeout_ms": 2000}
/// ```
///
/// Payloads are any JSON; `timeout_ms` defaults to [`DEFAULT_SMOKE_TIMEOUT_MS`]. The result
/// passes the same checks a device applies to a received manifest.
pub fn smoke_test_from_json(bytes: &[u8]) -> Result<manifest::SmokeTest, BundleError> {
    if bytes.len() > MAX_SMOKE_FILE_BYTES {
        return Err(BundleError::Build(format!(
            "the smoke-test file is {} bytes, more than {MAX_SMOKE_FILE_BYTES}",
            bytes.len()
        )));
    }
    let file: SmokeFile = serde_json::from_slice(bytes).map_err(BundleError::SmokeFile)?;
    let convert = |list: Vec<SmokeFileMessage>| {
        list.into_iter()
            .map(|m| manifest::SmokeMessage {
                node: m.node,
                payload: m.payload.to_string(),
            })
            .collect()
    };
    let smoke = manifest::SmokeTest {
        inject: convert(file.inject),
        expect: convert(file.expect),
        timeout_ms: file.timeout_ms.unwrap_or(DEFAULT_SMOKE_TIMEOUT_MS),
    };
    smoke
        .check()
        .map_err(|e| BundleError::Build(format!("the smoke-test file: {e}")))?;
    Ok(smoke)
}

/// One payload source: the flow bytes in memory or a file on disk.
enum Source {
    Memory(Vec<u8>),
    Disk(PathBuf),
}

/// Lists `dir` recursively in sorted order as (manifest path, disk path), refusing symlinks
/// and anything that is not a regular file or directory.
fn list_files(dir: &Path) -> Result<Vec<(String, PathBuf)>, BundleError> {
    let mut out = Vec::new();
    let mut pending = vec![(String::new(), dir.to_path_buf())];
    while let Some((prefix, path)) = pending.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&path)
            .map_err(io(&path))?
            .collect::<Result<_, _>>()
            .map_err(io(&path))?;
        entries.sort_by_key(|e| e.file_name());
        // Reverse so that popping keeps directories in sorted order.
        let mut subdirs = Vec::new();
        for entry in entries {
            let name = entry.file_name().into_string().map_err(|n| {
                BundleError::Build(format!(
                    "file name {n:?} in {} is not UTF-8",
                    path.display()
                ))
            })?;
            let rel = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            let kind = entry.file_type().map_err(io(&entry.path()))?;
            if kind.is_symlink() {
                return Err(BundleError::Build(format!(
                    "{rel} is a symlink; bundles hold regular files only"
                )));
            } else if kind.is_dir() {
                subdirs.push((rel, entry.path()));
            } else if kind.is_file() {
                manifest::check_path(&rel).map_err(BundleError::Build)?;
                out.push((rel, entry.path()));
            } else {
                return Err(BundleError::Build(format!("{rel} is not a regular file")));
            }
            if out.len() >= manifest::MAX_FILES {
                return Err(BundleError::Build(format!(
                    "more than {} files",
                    manifest::MAX_FILES - 1
                )));
            }
        }
        pending.extend(subdirs.into_iter().rev());
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// The payload's length as the files are now (it only picks a chunk size; the hashing pass
/// measures what is really there).
fn payload_len(sources: &[(String, Source)]) -> Result<u64, BundleError> {
    let mut total = 0u64;
    for (_, source) in sources {
        total += match source {
            Source::Memory(bytes) => bytes.len() as u64,
            Source::Disk(path) => std::fs::metadata(path).map_err(io(path))?.len(),
        };
    }
    Ok(total)
}

/// Streams every source through `sink` in chunk-size pieces.
fn stream_sources(
    sources: &[(String, Source)],
    buf_len: usize,
    mut sink: impl FnMut(usize, &[u8]) -> Result<(), BundleError>,
) -> Result<(), BundleError> {
    let mut buf = vec![0u8; buf_len];
    for (index, (_, source)) in sources.iter().enumerate() {
        match source {
            Source::Memory(bytes) => {
                for piece in bytes.chunks(buf_len) {
                    sink(index, piece)?;
                }
            }
            Source::Disk(path) => {
                let mut file = File::open(path).map_err(io(path))?;
                loop {
                    let n = file.read(&mut buf).map_err(io(path))?;
                    if n == 0 {
                        break;
                    }
                    sink(index, &buf[..n])?;
                }
            }
        }
    }
    Ok(())
}

/// Hashes a payload as the manifest describes it: total, chunks and files.
struct PayloadHasher {
    chunk_size: usize,
    total: Sha256,
    size: u64,
    chunk: Sha256,
    chunk_fill: usize,
    chunks: Vec<Digest>,
    files: Vec<(Sha256, u64)>,
}

impl PayloadHasher {
    fn new(chunk_size: u32, files: usize) -> Self {
        Self {
            chunk_size: chunk_size as usize,
            total: Sha256::new(),
            size: 0,
            chunk: Sha256::new(),
            chunk_fill: 0,
            chunks: Vec::new(),
            files: (0..files).map(|_| (Sha256::new(), 0)).collect(),
        }
    }

    fn update(&mut self, file: usize, mut bytes: &[u8]) {
        self.total.update(bytes);
        self.size += bytes.len() as u64;
        if let Some((hasher, size)) = self.files.get_mut(file) {
            hasher.update(bytes);
            *size += bytes.len() as u64;
        }
        while !bytes.is_empty() {
            let take = (self.chunk_size - self.chunk_fill).min(bytes.len());
            self.chunk.update(&bytes[..take]);
            self.chunk_fill += take;
            bytes = &bytes[take..];
            if self.chunk_fill == self.chunk_size {
                self.chunks
                    .push(Digest::from_sha(std::mem::take(&mut self.chunk)));
                self.chunk_fill = 0;
            }
        }
    }

    fn finish(mut self) -> (u64, Digest, Vec<Digest>, Vec<(Digest, u64)>) {
        if self.chunk_fill > 0 {
            self.chunks.push(Digest::from_sha(self.chunk));
        }
        let files = self
            .files
            .into_iter()
            .map(|(h, s)| (Digest::from_sha(h), s))
            .collect();
        (self.size, Digest::from_sha(self.total), self.chunks, files)
    }
}

impl Digest {
    /// Finishes a SHA-256 hasher into a digest.
    pub fn from_sha(hasher: Sha256) -> Self {
        Self(hasher.finalize().into())
    }
}

/// Builds a signed bundle at `out` from flow bytes that have ALREADY passed complete
/// validation (the caller's job: this crate does not decide what a valid flow is) and the
/// files under `files_dir`. Writes atomically; refuses to overwrite `out`. Returns the signed
/// manifest as a verifier would see it.
pub fn build(
    spec: &BuildSpec,
    validated_flow: &[u8],
    files_dir: Option<&Path>,
    keys: &[&SigningKey],
    out: &Path,
) -> Result<Manifest, BundleError> {
    if let Some(size) = spec.chunk_size {
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&size) {
            return Err(BundleError::Build(format!(
                "chunk size {size} is outside {MIN_CHUNK_SIZE}..={MAX_CHUNK_SIZE}"
            )));
        }
    }
    if keys.is_empty() {
        return Err(BundleError::Build(
            "at least one signing key is needed".to_string(),
        ));
    }
    let mut sources = vec![(
        FLOW_FILE.to_string(),
        Source::Memory(validated_flow.to_vec()),
    )];
    if let Some(dir) = files_dir {
        for (rel, path) in list_files(dir)? {
            if rel == FLOW_FILE {
                return Err(BundleError::Build(format!(
                    "{} holds a {FLOW_FILE}; that name is reserved for the flow",
                    dir.display()
                )));
            }
            sources.push((rel, Source::Disk(path)));
        }
    }

    let chunk_size = match spec.chunk_size {
        Some(size) => size,
        None => manifest::chunk_size_for(payload_len(&sources)?),
    };

    // Pass one: hash everything.
    let mut hasher = PayloadHasher::new(chunk_size, sources.len());
    stream_sources(&sources, chunk_size as usize, |file, bytes| {
        hasher.update(file, bytes);
        Ok(())
    })?;
    let (size, sha256, chunks, file_digests) = hasher.finish();
    let files = sources
        .iter()
        .zip(file_digests)
        .map(|((path, _), (sha256, size))| FileEntry {
            path: path.clone(),
            size,
            sha256,
        })
        .collect();
    let manifest = Manifest {
        schema: manifest::MANIFEST_SCHEMA,
        name: spec.name.clone(),
        version: spec.version.clone(),
        release: spec.release,
        created: spec.created,
        expires: spec.expires,
        archs: spec.archs.clone(),
        device_types: spec.device_types.clone(),
        min_runtime: spec.min_runtime.clone(),
        size,
        sha256,
        chunk_size,
        chunks,
        files,
        smoke_test: spec.smoke_test.clone(),
    };
    let envelope = Envelope::sign(&manifest, keys).map_err(BundleError::Manifest)?;
    let envelope_bytes = envelope.to_bytes().map_err(BundleError::Manifest)?;

    // Pass two: write header, envelope and payload to a temp file, re-hashing the payload
    // so that a file changed between the passes cannot slip into a signed bundle.
    if out.symlink_metadata().is_ok() {
        return Err(BundleError::Build(format!(
            "{} exists already",
            out.display()
        )));
    }
    let tmp = fsutil::temp_path_for(out);
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(io(&tmp))?;
        let mut header = Vec::with_capacity(HEADER_LEN as usize);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
        let len = u32::try_from(envelope_bytes.len())
            .map_err(|_| BundleError::Build("manifest envelope too large".to_string()))?;
        header.extend_from_slice(&len.to_be_bytes());
        file.write_all(&header).map_err(io(&tmp))?;
        file.write_all(&envelope_bytes).map_err(io(&tmp))?;
        let mut again = Sha256::new();
        {
            let mut writer = std::io::BufWriter::with_capacity(1 << 20, &mut file);
            stream_sources(&sources, chunk_size as usize, |_, bytes| {
                again.update(bytes);
                writer.write_all(bytes).map_err(io(&tmp))
            })?;
            writer.flush().map_err(io(&tmp))?;
        }
        if Digest::from_sha(again) != manifest.sha256 {
            return Err(BundleError::Build(
                "an input file changed while the bundle was built".to_string(),
            ));
        }
        file.sync_all().map_err(io(&tmp))?;
        drop(file);
        std::fs::hard_link(&tmp, out).map_err(io(out))?;
        std::fs::remove_file(&tmp).map_err(io(&tmp))?;
        let parent = out
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        fsutil::sync_dir(parent).map_err(io(parent))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    Ok(manifest)
}

/// An opened bundle: its header and envelope read, its payload not yet.
#[derive(Debug)]
pub struct BundleReader {
    path: PathBuf,
    file: BufReader<File>,
    file_len: u64,
    /// The manifest envelope as it was read.
    pub envelope: Envelope,
    /// The envelope's exact bytes.
    pub envelope_bytes: Vec<u8>,
}

impl BundleReader {
    /// Opens a bundle and reads its header and envelope (size-capped; nothing decoded beyond
    /// the envelope framing).
    pub fn open(path: &Path) -> Result<Self, BundleError> {
        let file = File::open(path).map_err(io(path))?;
        let file_len = file.metadata().map_err(io(path))?.len();
        let mut file = BufReader::with_capacity(1 << 16, file);
        let mut header = [0u8; HEADER_LEN as usize];
        if file_len < HEADER_LEN {
            return Err(BundleError::Truncated {
                expected: HEADER_LEN,
                found: file_len,
            });
        }
        file.read_exact(&mut header).map_err(io(path))?;
        if &header[..8] != MAGIC {
            return Err(BundleError::Header(
                "bad magic (expected \"FLOEBNDL\")".to_string(),
            ));
        }
        let version = u32::from_be_bytes([header[8], header[9], header[10], header[11]]);
        if version != FORMAT_VERSION {
            return Err(BundleError::Header(format!(
                "format version {version} is not supported (expected {FORMAT_VERSION})"
            )));
        }
        let len = u32::from_be_bytes([header[12], header[13], header[14], header[15]]);
        let cap = Envelope::max_bytes::<Manifest>();
        if len as usize > cap {
            return Err(BundleError::Header(format!(
                "envelope length {len} is more than the {cap} allowed"
            )));
        }
        let expected = HEADER_LEN + u64::from(len);
        if file_len < expected {
            return Err(BundleError::Truncated {
                expected,
                found: file_len,
            });
        }
        let mut envelope_bytes = vec![0u8; len as usize];
        file.read_exact(&mut envelope_bytes).map_err(io(path))?;
        let envelope =
            Envelope::from_bytes::<Manifest>(&envelope_bytes).map_err(BundleError::Manifest)?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            file_len,
            envelope,
            envelope_bytes,
        })
    }

    /// Decodes the manifest WITHOUT checking signatures, for display only (`inspect`).
    pub fn manifest_unverified(&self) -> Result<Manifest, BundleError> {
        cbor::decode_canonical(&self.envelope.payload.0, manifest::MAX_MANIFEST_BYTES)
            .map_err(|e| BundleError::Manifest(SignedError::Decode(e)))
    }

    /// Verifies signatures against `trust`, then streams the payload, checking the file
    /// length, every chunk and the total digest. Each verified chunk is passed to `on_chunk`
    /// (index, digest, bytes) before the next is read.
    pub fn verify(
        mut self,
        trust: &TrustStore,
        mut on_chunk: impl FnMut(usize, &Digest, &[u8]) -> Result<(), BundleError>,
    ) -> Result<Verified<Manifest>, BundleError> {
        let verified: Verified<Manifest> = trust
            .verify_release(&self.envelope)
            .map_err(BundleError::Manifest)?;
        let manifest = &verified.value;
        let expected = HEADER_LEN + self.envelope_bytes.len() as u64 + manifest.size;
        if self.file_len < expected {
            return Err(BundleError::Truncated {
                expected,
                found: self.file_len,
            });
        }
        if self.file_len > expected {
            return Err(BundleError::Trailing {
                extra: self.file_len - expected,
            });
        }
        let path = self.path.clone();
        let chunk_size = manifest.chunk_size as usize;
        // The total digest runs on its own thread. Two bounded channels pass buffers there
        // and back, so at most three chunk buffers exist at once.
        let (to_total, total_rx) = mpsc::sync_channel::<Vec<u8>>(2);
        let (recycle, recycled) = mpsc::sync_channel::<Vec<u8>>(3);
        let total_thread = std::thread::Builder::new()
            .name("floe-sha256".into())
            .spawn(move || {
                let mut total = Sha256::new();
                for buf in total_rx {
                    total.update(&buf);
                    // If the reader has gone, the buffer is simply dropped.
                    let _ = recycle.try_send(buf);
                }
                Digest::from_sha(total)
            })
            .map_err(io(&path))?;
        let mut result = Ok(());
        for (index, expected_digest) in manifest.chunks.iter().enumerate() {
            let (start, end) = manifest.chunk_range(index);
            let len = (end - start) as usize;
            // Reuse a buffer the hashing thread has finished with; allocate only while all
            // of them are in flight (at most two queued, one hashing and three recycled).
            let mut buf = recycled
                .try_recv()
                .unwrap_or_else(|_| Vec::with_capacity(chunk_size));
            buf.resize(len, 0);
            if let Err(source) = self.file.read_exact(&mut buf) {
                result = Err(BundleError::Io {
                    path: path.clone(),
                    source,
                });
                break;
            }
            let found = Digest::of(&buf);
            if &found != expected_digest {
                result = Err(BundleError::Chunk {
                    index,
                    expected: *expected_digest,
                    found,
                });
                break;
            }
            if let Err(e) = on_chunk(index, &found, &buf) {
                result = Err(e);
                break;
            }
            if to_total.send(buf).is_err() {
                result = Err(BundleError::Consumer(
                    "the hashing thread stopped".to_string(),
                ));
                break;
            }
        }
        drop(to_total);
        let total = total_thread
            .join()
            .map_err(|_| BundleError::Consumer("the hashing thread panicked".to_string()))?;
        result?;
        if total != manifest.sha256 {
            return Err(BundleError::Payload {
                expected: manifest.sha256,
                found: total,
            });
        }
        Ok(verified)
    }
}

/// Opens and fully verifies a bundle file against a trust store.
pub fn verify_file(path: &Path, trust: &TrustStore) -> Result<Verified<Manifest>, BundleError> {
    BundleReader::open(path)?.verify(trust, |_, _, _| Ok(()))
}

#[cfg(test)]
mod smoke_file_tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn smoke_files_become_manifest_smoke_tests() {
        let s = smoke_test_from_json(
            br#"{"inject":[{"node":"a","payload":{"raw":1}}],"expect":[{"node":"out","payload":2}]}"#,
        )
        .unwrap();
        assert_eq!(s.timeout_ms, DEFAULT_SMOKE_TIMEOUT_MS);
        assert_eq!(s.inject[0].payload, r#"{"raw":1}"#);
        assert_eq!(s.expect[0].node, "out");
        for (bad, needle) in [
            (
                &br#"{"inject":[],"expect":[],"timeout_ms":5}"#[..],
                "expects nothing",
            ),
            (
                br#"{"inject":[{"node":"a","payload":1}],"timeout_ms":0}"#,
                "timeout_ms",
            ),
            (br#"{"inject":[{"node":"a"}]}"#, "payload"),
            (br#"{"injekt":[]}"#, "injekt"),
            (b"not json", "smoke-test file"),
        ] {
            let err = smoke_test_from_json(bad).unwrap_err().to_string();
            assert!(err.contains(needle), "{needle}: {err}");
        }
    }
}
