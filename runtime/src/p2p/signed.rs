//! Adapters between the fabric and the signed artifact layer: the artifact layer's
//! [`ChunkStore`] as a [`FabricStore`], and a verified [`Manifest`] as an [`ArtifactIndex`].
//!
//! Why: the fabric moves chunks by hash and knows nothing of signatures; the artifact layer
//! verifies the release signature over the manifest before anything is decoded. A device that
//! has accepted a manifest turns it into an index here and fetches with the fabric into the same
//! chunk store that `artifact::store::assemble` reads, so nothing is stored twice.

use super::index::{ArtifactId, ArtifactIndex, IndexError};
use super::store::{FabricStore, StoreError};
use crate::artifact::store::ChunkStore;
use crate::proto::{Fixed, Manifest};
use std::path::{Path, PathBuf};

/// The fabric's index of a verified manifest (same chunk size, lengths and chunk hashes).
pub fn index_of(manifest: &Manifest) -> Result<ArtifactIndex, IndexError> {
    let index = ArtifactIndex {
        total_len: manifest.size,
        chunk_len: manifest.chunk_size,
        chunks: manifest.chunks.iter().map(|d| d.0).collect(),
    };
    index.check()?;
    Ok(index)
}

/// The artifact layer's chunk store (`<data>/chunks`) plus the fabric's indexes
/// (`<data>/fabric-indexes`).
#[derive(Debug)]
pub struct SignedStore {
    chunks: ChunkStore,
    indexes: PathBuf,
}

impl SignedStore {
    /// Opens both under `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let chunks = ChunkStore::open(data_dir).map_err(|e| StoreError::Read {
            path: data_dir.join("chunks"),
            source: std::io::Error::other(e.to_string()),
        })?;
        let indexes = data_dir.join("fabric-indexes");
        std::fs::create_dir_all(&indexes).map_err(|source| StoreError::Write {
            path: indexes.clone(),
            source,
        })?;
        Ok(Self { chunks, indexes })
    }
}

impl FabricStore for SignedStore {
    fn has(&self, hash: &[u8; 32]) -> bool {
        self.chunks.has(&Fixed(*hash))
    }

    fn get(&self, hash: &[u8; 32]) -> Result<Option<Vec<u8>>, StoreError> {
        self.chunks
            .get(&Fixed(*hash))
            .map_err(|e| StoreError::Read {
                path: PathBuf::from(hex::encode(hash)),
                source: std::io::Error::other(e.to_string()),
            })
    }

    fn put(&self, hash: &[u8; 32], bytes: &[u8]) -> Result<(), StoreError> {
        use crate::artifact::StoreError as Layer;
        match self.chunks.put(&Fixed(*hash), bytes) {
            Ok(()) => Ok(()),
            // Bytes that do not match their hash (or could never be a chunk) are the peer's
            // fault; everything else is ours (disk full, permissions).
            Err(Layer::HashMismatch { .. } | Layer::TooLarge { .. }) => {
                Err(StoreError::Verify(hex::encode(hash)))
            }
            Err(other) => Err(StoreError::Write {
                path: PathBuf::from(hex::encode(hash)),
                source: std::io::Error::other(other.to_string()),
            }),
        }
    }

    fn put_index(&self, index: &ArtifactIndex) -> Result<(), StoreError> {
        super::store::write_atomic(&self.indexes.join(hex::encode(index.id())), &index.encode())
    }

    fn get_index(&self, id: &ArtifactId) -> Result<Option<ArtifactIndex>, StoreError> {
        super::store::read_index(self.indexes.join(hex::encode(id)), id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest as _, Sha256};

    #[test]
    fn chunks_land_in_the_artifact_layers_store_after_verification() {
        let dir = tempfile::tempdir().unwrap();
        let store = SignedStore::open(dir.path()).unwrap();
        let data = vec![5u8; 10_000];
        let index = ArtifactIndex::from_bytes(&data, 4096).unwrap();
        let first: [u8; 32] = Sha256::digest(&data[..4096]).into();
        assert_eq!(first, index.chunks[0]);
        assert!(store.put(&first, &data[..4095]).is_err());
        store.put(&first, &data[..4096]).unwrap();
        // The artifact layer sees the chunk the fabric stored.
        let layer = ChunkStore::open(dir.path()).unwrap();
        assert!(layer.has(&Fixed(first)));
        store.put_index(&index).unwrap();
        assert_eq!(store.get_index(&index.id()).unwrap().unwrap(), index);
    }
}
