//! Adapters between the fabric and the signed artifact layer: the artifact layer's
//! [`ChunkStore`] as a [`FabricStore`], and a verified [`Manifest`] as an [`ArtifactIndex`].
//!
//! Why: the fabric moves chunks by hash and knows nothing of signatures; the artifact layer
//! verifies the release signature over the manifest before anything is decoded. A device that
//! has accepted a manifest turns it into an index here and fetches with the fabric into the same
//! chunk store that `artifact::store::assemble` reads, so nothing is stored twice.
//!
//! How a signed artifact travels: the seed imports a verified `.floe` bundle into its chunk
//! store and announces the manifest envelope (its exact signed bytes) on `floe/announce/1`. A
//! peer checks the envelope against its trust store ([`verify_announcement`]) before gossip
//! forwards it, turns the manifest into an index ([`index_of`]) and fetches the chunks. When
//! every chunk is held, [`write_bundle`] puts header, envelope and payload back together: the
//! result is byte for byte the bundle the release key signed, and the artifact layer verifies
//! it like any other.

use super::index::{ArtifactId, ArtifactIndex, IndexError};
use super::store::{FabricStore, StoreError};
use floe_wire::artifact::bundle::{FORMAT_VERSION, MAGIC};
use floe_wire::artifact::store::ChunkStore;
use floe_wire::proto::{Envelope, Fixed, Manifest, SignedError, TrustStore, Verified};
use sha2::{Digest as _, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Why an announced manifest was not taken.
#[derive(Debug, thiserror::Error)]
pub enum AnnounceError {
    /// The envelope did not decode, or its signatures did not meet the trust store's threshold.
    #[error("manifest envelope: {0}")]
    Verify(#[from] SignedError),
    /// The manifest verified but describes no valid fabric index.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// The manifest expired (`expires` is at or before `now`).
    #[error("manifest expired at {expires} (now {now})")]
    Expired {
        /// Its expiry, unix seconds.
        expires: u64,
        /// The time it was checked at.
        now: u64,
    },
}

/// Checks an announced manifest envelope (its exact bytes) against `trust` at time `now` (unix
/// seconds): decoded with the envelope's size cap, signatures verified before the manifest is
/// decoded, not expired. Returns the verified manifest and its fabric index.
pub fn verify_announcement(
    bytes: &[u8],
    trust: &TrustStore,
    now: u64,
) -> Result<(Verified<Manifest>, ArtifactIndex), AnnounceError> {
    let envelope = Envelope::from_bytes::<Manifest>(bytes)?;
    let verified: Verified<Manifest> = trust.verify_release(&envelope)?;
    if verified.value.expires <= now {
        return Err(AnnounceError::Expired {
            expires: verified.value.expires,
            now,
        });
    }
    let index = index_of(&verified.value)?;
    Ok((verified, index))
}

/// Writes the `.floe` bundle of `index` to `out`: the bundle header, the manifest `envelope`
/// exactly as signed, then every chunk from `store` in order, each re-hashed on the way. Written
/// to a temp file, fsynced and renamed, so `out` is whole or absent. The caller verifies the
/// result against its trust store (`artifact::verify_file`).
pub fn write_bundle(
    store: &dyn FabricStore,
    index: &ArtifactIndex,
    envelope: &[u8],
    out: &Path,
) -> Result<(), StoreError> {
    let tmp = out.with_extension(format!("{}.part", std::process::id()));
    let write_err = |source| StoreError::Write {
        path: tmp.clone(),
        source,
    };
    let len = u32::try_from(envelope.len())
        .map_err(|_| write_err(std::io::Error::other("manifest envelope too large")))?;
    let result = (|| {
        let mut file = std::io::BufWriter::with_capacity(
            1 << 20,
            std::fs::File::create(&tmp).map_err(write_err)?,
        );
        file.write_all(MAGIC).map_err(write_err)?;
        file.write_all(&FORMAT_VERSION.to_be_bytes())
            .map_err(write_err)?;
        file.write_all(&len.to_be_bytes()).map_err(write_err)?;
        file.write_all(envelope).map_err(write_err)?;
        for hash in &index.chunks {
            let bytes = store
                .get(hash)?
                .ok_or_else(|| StoreError::Missing(hex::encode(hash)))?;
            if Sha256::digest(&bytes).as_slice() != hash {
                return Err(StoreError::Verify {
                    hash: hex::encode(hash),
                    source: None,
                });
            }
            file.write_all(&bytes).map_err(write_err)?;
        }
        let file = file.into_inner().map_err(|e| write_err(e.into_error()))?;
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
        let chunks = ChunkStore::open(data_dir).map_err(|source| StoreError::Chunks {
            at: data_dir.join("chunks").display().to_string(),
            source,
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
            .map_err(|source| StoreError::Chunks {
                at: hex::encode(hash),
                source,
            })
    }

    fn put(&self, hash: &[u8; 32], bytes: &[u8]) -> Result<(), StoreError> {
        use floe_wire::artifact::StoreError as Layer;
        match self.chunks.put(&Fixed(*hash), bytes) {
            Ok(()) => Ok(()),
            // Bytes that do not match their hash (or could never be a chunk) are the peer's
            // fault; everything else is ours (disk full, permissions).
            Err(source @ (Layer::HashMismatch { .. } | Layer::TooLarge { .. })) => {
                Err(StoreError::Verify {
                    hash: hex::encode(hash),
                    source: Some(source),
                })
            }
            Err(source) => Err(StoreError::Chunks {
                at: hex::encode(hash),
                source,
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
    use ed25519_dalek::SigningKey;
    use floe_wire::artifact::{BuildSpec, build, import, verify_file};
    use floe_wire::proto::TrustedKey;

    fn trust_for(key: &SigningKey) -> TrustStore {
        let public = Fixed(key.verifying_key().to_bytes());
        let coordinator = Fixed(SigningKey::from_bytes(&[9; 32]).verifying_key().to_bytes());
        TrustStore::new(vec![TrustedKey::new(public)], TrustedKey::new(coordinator))
    }

    #[test]
    fn an_imported_bundle_is_announced_verified_and_reassembled_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        let files = dir.path().join("files");
        std::fs::create_dir_all(&files).unwrap();
        let payload: Vec<u8> = (0..70_000u32).map(|i| (i * 7 % 253) as u8).collect();
        std::fs::write(files.join("model.bin"), &payload).unwrap();
        let key = SigningKey::from_bytes(&[3; 32]);
        let mut spec = BuildSpec::new("demo", "1.0.0", 5, 1_000, 2_000);
        spec.chunk_size = Some(16 * 1024);
        let bundle = dir.path().join("demo.floe");
        build(&spec, b"{}", Some(&files), &[&key], &bundle).unwrap();
        let trust = trust_for(&key);

        // The seed: import into the chunk store; the announcement is the envelope's bytes.
        let seed_dir = dir.path().join("seed");
        let verified = import(&bundle, &trust, &ChunkStore::open(&seed_dir).unwrap()).unwrap();
        let envelope = floe_wire::artifact::BundleReader::open(&bundle)
            .unwrap()
            .envelope_bytes;
        let (announced, index) = verify_announcement(&envelope, &trust, 1_500).unwrap();
        assert_eq!(announced.digest, verified.digest);
        assert_eq!(index, index_of(&verified.value).unwrap());

        // Refused: expired, signed by a stranger, or tampered with.
        assert!(matches!(
            verify_announcement(&envelope, &trust, 2_000),
            Err(AnnounceError::Expired { .. })
        ));
        let stranger = trust_for(&SigningKey::from_bytes(&[4; 32]));
        assert!(matches!(
            verify_announcement(&envelope, &stranger, 1_500),
            Err(AnnounceError::Verify(_))
        ));
        let mut tampered = envelope.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(verify_announcement(&tampered, &trust, 1_500).is_err());

        // A peer that fetched the chunks into its own store writes the identical bundle.
        let peer_dir = dir.path().join("peer");
        let seed_store = SignedStore::open(&seed_dir).unwrap();
        let peer_store = SignedStore::open(&peer_dir).unwrap();
        let out = peer_dir.join("demo.floe");
        assert!(matches!(
            write_bundle(&peer_store, &index, &envelope, &out),
            Err(StoreError::Missing(_))
        ));
        assert!(!out.exists(), "a failed write must leave nothing behind");
        for hash in &index.chunks {
            let bytes = seed_store.get(hash).unwrap().unwrap();
            peer_store.put(hash, &bytes).unwrap();
        }
        write_bundle(&peer_store, &index, &envelope, &out).unwrap();
        assert_eq!(
            std::fs::read(&out).unwrap(),
            std::fs::read(&bundle).unwrap()
        );
        assert_eq!(verify_file(&out, &trust).unwrap().digest, verified.digest);
    }

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
