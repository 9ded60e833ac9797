//! Where the fabric keeps chunks and indexes: the [`FabricStore`] trait, with a file-backed
//! implementation ([`FileStore`]) used by `floed fabric` and an in-memory one ([`MemStore`]) for
//! unit tests.
//!
//! Why a trait of its own: the signed artifact layer (`artifact::store`) owns the real chunk
//! store; the fabric only needs "has / get / put a chunk by hash" and "remember an index", so it
//! depends on that much and an adapter bridges the two. Every `put` verifies the hash before
//! anything is written, and the file store writes through a temporary file and a rename, so a
//! crash never leaves a half-written chunk that a later start would serve.
//!
//! Every method takes `&self` and stores are `Sync`: the swarm task shares its store with
//! blocking threads (reading a chunk to serve, hashing and writing one that arrived), so disk
//! I/O and SHA-256 never run on the task that drives the network.

use super::index::{ArtifactId, ArtifactIndex, ChunkHash, IndexError};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Errors of a store, named by phase.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The bytes do not hash to the hash they were stored under (the peer that sent them is at
    /// fault), as this store found or as the artifact layer's store said.
    #[error("chunk does not match its hash {hash}")]
    Verify {
        /// The hash, in hex.
        hash: String,
        /// The artifact layer's refusal, when it was that store that refused.
        #[source]
        source: Option<floe_wire::artifact::StoreError>,
    },
    /// Reading failed.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Writing failed.
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A chunk an artifact needs is not in the store.
    #[error("chunk {0} is not in the store")]
    Missing(String),
    /// A stored index is corrupt.
    #[error("stored index {id} is corrupt: {source}")]
    Index {
        /// The artifact id, in hex.
        id: String,
        /// What is wrong with it.
        source: IndexError,
    },
    /// The artifact layer's chunk store failed (for a reason of ours: disk, permissions).
    #[error("the artifact chunk store, {at}: {source}")]
    Chunks {
        /// Where: the directory opened, or the chunk's hash in hex.
        at: String,
        /// Its error.
        source: floe_wire::artifact::StoreError,
    },
}

/// Chunk and index storage as the fabric sees it. Shared between the swarm task and blocking
/// threads, hence `Sync` and `&self` throughout.
pub trait FabricStore: Send + Sync + 'static {
    /// Whether the chunk is held (and was verified when stored).
    fn has(&self, hash: &ChunkHash) -> bool;
    /// The chunk's bytes, if held.
    fn get(&self, hash: &ChunkHash) -> Result<Option<Vec<u8>>, StoreError>;
    /// Stores a chunk after checking that `bytes` hash to `hash`.
    fn put(&self, hash: &ChunkHash, bytes: &[u8]) -> Result<(), StoreError>;
    /// Remembers an artifact's index (so a restarted download knows what it was fetching).
    fn put_index(&self, index: &ArtifactIndex) -> Result<(), StoreError>;
    /// A remembered index.
    fn get_index(&self, id: &ArtifactId) -> Result<Option<ArtifactIndex>, StoreError>;
}

fn verify(hash: &ChunkHash, bytes: &[u8]) -> Result<(), StoreError> {
    if Sha256::digest(bytes).as_slice() == hash {
        Ok(())
    } else {
        Err(StoreError::Verify {
            hash: hex::encode(hash),
            source: None,
        })
    }
}

/// An in-memory store for unit tests and short-lived tools. Unbounded by design of its callers:
/// it only ever holds the chunks of the indexes it was given.
#[derive(Debug, Default)]
pub struct MemStore {
    inner: Mutex<MemInner>,
}

#[derive(Debug, Default)]
struct MemInner {
    chunks: HashMap<ChunkHash, Vec<u8>>,
    indexes: HashMap<ArtifactId, ArtifactIndex>,
}

impl MemStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, MemInner> {
        // A panic while holding the lock leaves plain maps behind, still consistent.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl FabricStore for MemStore {
    fn has(&self, hash: &ChunkHash) -> bool {
        self.lock().chunks.contains_key(hash)
    }
    fn get(&self, hash: &ChunkHash) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.lock().chunks.get(hash).cloned())
    }
    fn put(&self, hash: &ChunkHash, bytes: &[u8]) -> Result<(), StoreError> {
        verify(hash, bytes)?;
        self.lock().chunks.insert(*hash, bytes.to_vec());
        Ok(())
    }
    fn put_index(&self, index: &ArtifactIndex) -> Result<(), StoreError> {
        self.lock().indexes.insert(index.id(), index.clone());
        Ok(())
    }
    fn get_index(&self, id: &ArtifactId) -> Result<Option<ArtifactIndex>, StoreError> {
        Ok(self.lock().indexes.get(id).cloned())
    }
}

/// A store in a directory: `chunks/<hex sha256>` and `indexes/<hex id>`.
#[derive(Debug)]
pub struct FileStore {
    root: PathBuf,
}

impl FileStore {
    /// Opens (creating if needed) the store under `root`.
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        for sub in ["chunks", "indexes"] {
            let dir = root.join(sub);
            std::fs::create_dir_all(&dir)
                .map_err(|source| StoreError::Write { path: dir, source })?;
        }
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    fn chunk_path(&self, hash: &ChunkHash) -> PathBuf {
        self.root.join("chunks").join(hex::encode(hash))
    }

    fn index_path(&self, id: &ArtifactId) -> PathBuf {
        self.root.join("indexes").join(hex::encode(id))
    }

    /// Reassembles a complete artifact into `out` (written atomically), verifying every chunk
    /// again on the way.
    pub fn export(&self, index: &ArtifactIndex, out: &Path) -> Result<(), StoreError> {
        export(self, index, out)
    }
}

/// Reassembles a complete artifact from any store into `out`: chunks in order, each re-hashed,
/// through a temp file, fsync and rename, so `out` is whole or absent.
pub fn export(
    store: &dyn FabricStore,
    index: &ArtifactIndex,
    out: &Path,
) -> Result<(), StoreError> {
    let tmp = out.with_extension(format!("{}.part", std::process::id()));
    let write_err = |source| StoreError::Write {
        path: tmp.clone(),
        source,
    };
    let result = (|| {
        let mut file = std::fs::File::create(&tmp).map_err(write_err)?;
        for hash in &index.chunks {
            let bytes = store
                .get(hash)?
                .ok_or_else(|| StoreError::Missing(hex::encode(hash)))?;
            verify(hash, &bytes)?;
            file.write_all(&bytes).map_err(write_err)?;
        }
        file.sync_all().map_err(write_err)?;
        std::fs::rename(&tmp, out).map_err(|source| StoreError::Write {
            path: out.to_path_buf(),
            source,
        })
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

static TEMP_COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Writes `bytes` to `path` through a temp file of its own (unique per call, so two threads
/// storing the same chunk never share one) and a rename: a reader sees the whole file or none.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let n = TEMP_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("{}.{n}.tmp", std::process::id()));
    let err = |source| StoreError::Write {
        path: path.to_path_buf(),
        source,
    };
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(err)
}

impl FabricStore for FileStore {
    fn has(&self, hash: &ChunkHash) -> bool {
        self.chunk_path(hash).is_file()
    }

    fn get(&self, hash: &ChunkHash) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.chunk_path(hash);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StoreError::Read { path, source }),
        }
    }

    fn put(&self, hash: &ChunkHash, bytes: &[u8]) -> Result<(), StoreError> {
        verify(hash, bytes)?;
        write_atomic(&self.chunk_path(hash), bytes)
    }

    fn put_index(&self, index: &ArtifactIndex) -> Result<(), StoreError> {
        write_atomic(&self.index_path(&index.id()), &index.encode())
    }

    fn get_index(&self, id: &ArtifactId) -> Result<Option<ArtifactIndex>, StoreError> {
        read_index(self.index_path(id), id)
    }
}

/// Reads the index of artifact `id` from `path`: `None` when there is none, an error when the
/// file is unreadable or does not decode to an index with that id.
pub(crate) fn read_index(
    path: PathBuf,
    id: &ArtifactId,
) -> Result<Option<ArtifactIndex>, StoreError> {
    match std::fs::read(&path) {
        Ok(bytes) => ArtifactIndex::decode_for(id, &bytes)
            .map(Some)
            .map_err(|source| StoreError::Index {
                id: hex::encode(id),
                source,
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StoreError::Read { path, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_store_verifies_before_writing_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        let data = vec![3u8; 5000];
        let hash: ChunkHash = Sha256::digest(&data).into();
        assert!(store.put(&hash, b"other bytes").is_err());
        assert!(
            !store.has(&hash),
            "a refused chunk must leave nothing on disk"
        );
        store.put(&hash, &data).unwrap();
        assert_eq!(store.get(&hash).unwrap().unwrap(), data);

        let index = ArtifactIndex::from_bytes(&data, 4096).unwrap();
        for (i, h) in index.chunks.iter().enumerate() {
            store
                .put(h, &data[i * 4096..(i * 4096 + index.chunk_size(i))])
                .unwrap();
        }
        store.put_index(&index).unwrap();
        let reopened = FileStore::open(dir.path()).unwrap();
        assert_eq!(reopened.get_index(&index.id()).unwrap().unwrap(), index);
        let out = dir.path().join("out.bin");
        reopened.export(&index, &out).unwrap();
        assert_eq!(std::fs::read(out).unwrap(), data);
    }
}
