//! The content-addressed chunk store, and assembling an artifact's files from it.
//!
//! Chunks live at `DATA/chunks/<first two hex digits>/<sha256 hex>`. A chunk is written to a
//! temp file in `DATA/chunks/tmp`, fsynced, renamed into place and its directory fsynced, so a
//! chunk that is present is complete; a crash leaves at worst a temp file, which the next
//! `open` removes. Because chunks are named by their hash, a download that stopped half-way
//! resumes by asking [`ChunkStore::missing`] and fetching only those.
//!
//! [`assemble`] writes an artifact's files into a fresh directory. It hashes every file as it
//! writes and refuses any path that could leave the target (`..`, absolute paths, NUL bytes,
//! symlinks on the way), and it builds in a sibling staging directory that is renamed into
//! place only when every file matched: a target directory either holds the whole artifact or
//! does not exist.

use crate::fsutil::{sync_dir, temp_path_for};
use crate::proto::manifest::{MAX_CHUNK_SIZE, check_path};
use crate::proto::{Digest, Manifest};
use sha2::{Digest as _, Sha256};
use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

/// Why a chunk store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file system operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The path concerned.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Bytes offered for a chunk do not hash to its name.
    #[error("chunk {expected} refused: the bytes hash to {found}")]
    HashMismatch {
        /// The digest the caller claimed.
        expected: Digest,
        /// The digest of the bytes.
        found: Digest,
    },
    /// A chunk is larger than any manifest allows.
    #[error("chunk of {size} bytes is larger than the {MAX_CHUNK_SIZE}-byte maximum")]
    TooLarge {
        /// Its size.
        size: u64,
    },
    /// Assembling needs a chunk the store does not hold.
    #[error("chunk {0} is missing from the store")]
    Missing(Digest),
    /// An assembled file does not hash to its manifest digest.
    #[error("file {path} is corrupt: expected sha256 {expected}, found {found}")]
    File {
        /// The manifest path.
        path: String,
        /// The manifest's digest.
        expected: Digest,
        /// The digest of the bytes written.
        found: Digest,
    },
    /// A manifest path would leave the target directory or is otherwise unsafe.
    #[error("unsafe path: {0}")]
    Path(String),
    /// The target exists already.
    #[error("{0} exists already")]
    Exists(PathBuf),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What [`ChunkStore::verify`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Chunks whose bytes matched their name.
    pub good: usize,
    /// Chunks that did not match (they were removed so they can be fetched again).
    pub corrupt: Vec<Digest>,
}

/// What [`ChunkStore::gc`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Chunks kept.
    pub kept: usize,
    /// Chunks removed.
    pub removed: usize,
    /// Bytes freed.
    pub freed: u64,
}

/// A directory of chunks named by their SHA-256.
#[derive(Debug, Clone)]
pub struct ChunkStore {
    root: PathBuf,
}

impl ChunkStore {
    /// Opens (creating) the store under `data_dir/chunks` and removes temp files a crash left.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let root = data_dir.join("chunks");
        let tmp = root.join("tmp");
        fs::create_dir_all(&tmp).map_err(io(&tmp))?;
        for entry in fs::read_dir(&tmp).map_err(io(&tmp))? {
            let entry = entry.map_err(io(&tmp))?;
            fs::remove_file(entry.path()).map_err(io(&entry.path()))?;
        }
        Ok(Self { root })
    }

    fn path_of(&self, hash: &Digest) -> PathBuf {
        let hex = hash.to_hex();
        self.root.join(&hex[..2]).join(hex)
    }

    /// Whether the store holds `hash`.
    pub fn has(&self, hash: &Digest) -> bool {
        self.path_of(hash).is_file()
    }

    /// Stores `bytes` as chunk `hash` after checking that they hash to it. Storing a chunk
    /// already held is a no-op.
    pub fn put(&self, hash: &Digest, bytes: &[u8]) -> Result<(), StoreError> {
        if bytes.len() as u64 > u64::from(MAX_CHUNK_SIZE) {
            return Err(StoreError::TooLarge {
                size: bytes.len() as u64,
            });
        }
        let found = Digest::of(bytes);
        if &found != hash {
            return Err(StoreError::HashMismatch {
                expected: *hash,
                found,
            });
        }
        self.put_verified(hash, bytes)
    }

    /// Stores bytes the caller has just hashed to `hash` (the bundle importer).
    pub(crate) fn put_verified(&self, hash: &Digest, bytes: &[u8]) -> Result<(), StoreError> {
        let target = self.path_of(hash);
        if target.is_file() {
            return Ok(());
        }
        let dir = target
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| self.root.clone());
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        let tmp = temp_path_for(&self.root.join("tmp").join(hash.to_hex()));
        let result = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .map_err(io(&tmp))?;
            file.write_all(bytes).map_err(io(&tmp))?;
            file.sync_all().map_err(io(&tmp))?;
            drop(file);
            fs::rename(&tmp, &target).map_err(io(&target))?;
            sync_dir(&dir).map_err(io(&dir))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// Reads chunk `hash`, or `None` when the store does not hold it. The bytes are re-hashed:
    /// a chunk damaged on disk is reported, never served.
    pub fn get(&self, hash: &Digest) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.path_of(hash);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::Io { path, source: e }),
        };
        let mut bytes = Vec::new();
        file.take(u64::from(MAX_CHUNK_SIZE) + 1)
            .read_to_end(&mut bytes)
            .map_err(io(&path))?;
        if bytes.len() as u64 > u64::from(MAX_CHUNK_SIZE) {
            return Err(StoreError::TooLarge {
                size: bytes.len() as u64,
            });
        }
        let found = Digest::of(&bytes);
        if &found != hash {
            return Err(StoreError::HashMismatch {
                expected: *hash,
                found,
            });
        }
        Ok(Some(bytes))
    }

    /// The manifest's chunks the store does not hold, in payload order, each once.
    pub fn missing(&self, manifest: &Manifest) -> Vec<Digest> {
        let mut seen = HashSet::new();
        manifest
            .chunks
            .iter()
            .filter(|hash| seen.insert(**hash) && !self.has(hash))
            .copied()
            .collect()
    }

    /// Every chunk file in the store with its digest (from its name) and path.
    fn entries(&self) -> Result<Vec<(Digest, PathBuf)>, StoreError> {
        let mut out = Vec::new();
        for shard in fs::read_dir(&self.root).map_err(io(&self.root))? {
            let shard = shard.map_err(io(&self.root))?;
            let name = shard.file_name();
            if name == "tmp" || !shard.path().is_dir() {
                continue;
            }
            for entry in fs::read_dir(shard.path()).map_err(io(&shard.path()))? {
                let entry = entry.map_err(io(&shard.path()))?;
                let name = entry.file_name();
                match name.to_str().map(Digest::from_hex) {
                    Some(Ok(hash)) => out.push((hash, entry.path())),
                    // Not a chunk name: leave foreign files alone.
                    _ => continue,
                }
            }
        }
        Ok(out)
    }

    /// Re-hashes every chunk; removes and reports those whose bytes do not match their name.
    pub fn verify(&self) -> Result<VerifyReport, StoreError> {
        let mut report = VerifyReport::default();
        let mut buf = vec![0u8; 1 << 16];
        for (hash, path) in self.entries()? {
            let mut file = File::open(&path).map_err(io(&path))?;
            let mut hasher = Sha256::new();
            loop {
                let n = file.read(&mut buf).map_err(io(&path))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
            }
            if Digest::from_sha(hasher) == hash {
                report.good += 1;
            } else {
                fs::remove_file(&path).map_err(io(&path))?;
                report.corrupt.push(hash);
            }
        }
        Ok(report)
    }

    /// Removes every chunk not in `keep` (the chunks of every slot and in-flight download;
    /// see [`referenced`]).
    pub fn gc(&self, keep: &HashSet<Digest>) -> Result<GcReport, StoreError> {
        let mut report = GcReport::default();
        for (hash, path) in self.entries()? {
            if keep.contains(&hash) {
                report.kept += 1;
            } else {
                let size = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                fs::remove_file(&path).map_err(io(&path))?;
                report.removed += 1;
                report.freed += size;
            }
        }
        Ok(report)
    }
}

/// The set of chunks the given manifests reference: what [`ChunkStore::gc`] must keep.
pub fn referenced<'a>(manifests: impl IntoIterator<Item = &'a Manifest>) -> HashSet<Digest> {
    manifests
        .into_iter()
        .flat_map(|m| m.chunks.iter().copied())
        .collect()
}

/// Creates `dir/rel`'s parent directories inside `root`, refusing to follow anything that is
/// not a plain directory.
pub(crate) fn safe_parent(root: &Path, rel: &str) -> Result<PathBuf, StoreError> {
    check_path(rel).map_err(StoreError::Path)?;
    let rel_path = Path::new(rel);
    if rel_path
        .components()
        .any(|c| !matches!(c, Component::Normal(_)))
    {
        return Err(StoreError::Path(format!(
            "{rel:?} is not a plain relative path"
        )));
    }
    let mut dir = root.to_path_buf();
    let mut parts: Vec<_> = rel_path.components().collect();
    parts.pop();
    for part in parts {
        dir.push(part);
        match fs::symlink_metadata(&dir) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(StoreError::Path(format!("{} is a symlink", dir.display())));
            }
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(StoreError::Path(format!(
                    "{} is not a directory",
                    dir.display()
                )));
            }
            Err(_) => fs::create_dir(&dir).map_err(io(&dir))?,
        }
    }
    Ok(root.join(rel_path))
}

/// Writes the manifest's files from the store into `target` (which must not exist), checking
/// each file's digest. Builds in a staging directory beside `target` and renames it into
/// place only when everything matched.
pub fn assemble(manifest: &Manifest, store: &ChunkStore, target: &Path) -> Result<(), StoreError> {
    if target.symlink_metadata().is_ok() {
        return Err(StoreError::Exists(target.to_path_buf()));
    }
    for file in &manifest.files {
        check_path(&file.path).map_err(StoreError::Path)?;
    }
    let staging = temp_path_for(target);
    fs::create_dir(&staging).map_err(io(&staging))?;
    let result = write_files(manifest, store, &staging).and_then(|()| {
        fs::rename(&staging, target).map_err(io(target))?;
        let parent = target
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        sync_dir(parent).map_err(io(parent))
    });
    if result.is_err() {
        let _ = fs::remove_dir_all(&staging);
    }
    result
}

fn write_files(manifest: &Manifest, store: &ChunkStore, root: &Path) -> Result<(), StoreError> {
    let mut chunk_index = 0usize;
    let mut chunk: Vec<u8> = Vec::new();
    let mut offset_in_chunk = 0usize;
    for entry in &manifest.files {
        let path = safe_parent(root, &entry.path)?;
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io(&path))?;
        let mut hasher = Sha256::new();
        let mut left = entry.size;
        while left > 0 {
            if offset_in_chunk == chunk.len() {
                let hash = manifest.chunks.get(chunk_index).ok_or_else(|| {
                    StoreError::Path("manifest lists fewer chunks than its files need".to_string())
                })?;
                chunk = store.get(hash)?.ok_or(StoreError::Missing(*hash))?;
                let (start, end) = manifest.chunk_range(chunk_index);
                if chunk.len() as u64 != end.saturating_sub(start) {
                    return Err(StoreError::HashMismatch {
                        expected: *hash,
                        found: Digest::of(&chunk),
                    });
                }
                chunk_index += 1;
                offset_in_chunk = 0;
                if chunk.is_empty() {
                    return Err(StoreError::Missing(*hash));
                }
            }
            let take = ((chunk.len() - offset_in_chunk) as u64).min(left) as usize;
            let piece = &chunk[offset_in_chunk..offset_in_chunk + take];
            hasher.update(piece);
            file.write_all(piece).map_err(io(&path))?;
            offset_in_chunk += take;
            left -= take as u64;
        }
        let found = Digest::from_sha(hasher);
        if found != entry.sha256 {
            return Err(StoreError::File {
                path: entry.path.clone(),
                expected: entry.sha256,
                found,
            });
        }
        file.sync_all().map_err(io(&path))?;
    }
    // Directories were created as files were written; sync the root so the rename publishes
    // a complete tree.
    sync_dir(root).map_err(io(root))
}

/// Internals exposed to this crate's tests.
#[cfg(test)]
pub(crate) mod tests_support {
    pub(crate) use super::safe_parent;
}
