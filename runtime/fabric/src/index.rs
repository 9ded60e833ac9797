//! [`ArtifactIndex`]: what the fabric needs to know about one artifact (its length, chunk size
//! and the sha256 of every chunk), and its canonical encoding.
//!
//! The artifact's fabric id is the sha256 of that encoding, so a downloader that knows only the
//! id can take the index from any peer and check it. The signed manifest of the artifact layer
//! carries the same facts; an adapter turns one into the other, and the manifest's signature is
//! what makes the id trustworthy in the first place.

use sha2::{Digest, Sha256};

/// The sha256 of one chunk.
pub type ChunkHash = [u8; 32];
/// The sha256 of an [`ArtifactIndex`]'s canonical encoding.
pub type ArtifactId = [u8; 32];

/// Smallest chunk size accepted (4 KiB).
pub const MIN_CHUNK_LEN: u32 = 4 * 1024;
/// Largest chunk size accepted: the manifest's own limit (16 MiB,
/// [`floe_wire::proto::manifest::MAX_CHUNK_SIZE`]), so every manifest the artifact layer accepts
/// has a fabric index. The wire codec's response cap follows from it; what bounds memory is
/// the bytes a download may have in flight (`max_in_flight_bytes` of the download module's
/// `DownloadConfig`) and the upload slots, not the chunk size alone.
pub const MAX_CHUNK_LEN: u32 = floe_wire::proto::manifest::MAX_CHUNK_SIZE;
/// Most chunks in one artifact (16 Ki chunks; an artifact cut by
/// [`floe_wire::proto::manifest::chunk_size_for`] has about 512 up to 8 GiB). Bounds the index
/// (512 KiB) and every per-chunk vector a download keeps.
pub const MAX_CHUNKS: u32 = 16 * 1024;

const MAGIC: &[u8; 8] = b"FLOEIDX1";
const HEADER_LEN: usize = 8 + 8 + 4 + 4;

/// Why an index was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IndexError {
    /// The bytes are not a well-formed index.
    #[error("malformed artifact index: {0}")]
    Decode(&'static str),
    /// The bytes are well formed but do not hash to the id they were fetched for.
    #[error("artifact index does not match its id")]
    Mismatch,
}

/// The chunk list of one artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactIndex {
    /// Total length in bytes.
    pub total_len: u64,
    /// Length of every chunk but the last.
    pub chunk_len: u32,
    /// The sha256 of every chunk, in order.
    pub chunks: Vec<ChunkHash>,
}

impl ArtifactIndex {
    /// Splits `data` into chunks of `chunk_len` and hashes each.
    pub fn from_bytes(data: &[u8], chunk_len: u32) -> Result<Self, IndexError> {
        if !(MIN_CHUNK_LEN..=MAX_CHUNK_LEN).contains(&chunk_len) {
            return Err(IndexError::Decode("chunk length out of range"));
        }
        let chunks: Vec<ChunkHash> = data
            .chunks(chunk_len as usize)
            .map(|c| Sha256::digest(c).into())
            .collect();
        let index = Self {
            total_len: data.len() as u64,
            chunk_len,
            chunks,
        };
        index.check()?;
        Ok(index)
    }

    /// Checks the invariants: chunk size in range, the chunk count matches the length, and the
    /// count is within [`MAX_CHUNKS`].
    pub fn check(&self) -> Result<(), IndexError> {
        if !(MIN_CHUNK_LEN..=MAX_CHUNK_LEN).contains(&self.chunk_len) {
            return Err(IndexError::Decode("chunk length out of range"));
        }
        if self.total_len == 0 {
            return Err(IndexError::Decode("empty artifact"));
        }
        let expected = self.total_len.div_ceil(u64::from(self.chunk_len));
        if expected > u64::from(MAX_CHUNKS) {
            return Err(IndexError::Decode("too many chunks"));
        }
        if self.chunks.len() as u64 != expected {
            return Err(IndexError::Decode("chunk count does not match length"));
        }
        Ok(())
    }

    /// The exact length of chunk `i` (the last one may be short). Out-of-range gives 0.
    pub fn chunk_size(&self, i: usize) -> usize {
        let n = self.chunks.len();
        if i >= n {
            return 0;
        }
        if i + 1 < n {
            self.chunk_len as usize
        } else {
            (self.total_len - (n as u64 - 1) * u64::from(self.chunk_len)) as usize
        }
    }

    /// The canonical encoding: magic, total length, chunk length, count, then the hashes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + 32 * self.chunks.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.total_len.to_be_bytes());
        out.extend_from_slice(&self.chunk_len.to_be_bytes());
        out.extend_from_slice(&(self.chunks.len() as u32).to_be_bytes());
        for c in &self.chunks {
            out.extend_from_slice(c);
        }
        out
    }

    /// Decodes and checks an index.
    pub fn decode(bytes: &[u8]) -> Result<Self, IndexError> {
        if bytes.len() < HEADER_LEN || &bytes[..8] != MAGIC {
            return Err(IndexError::Decode("bad header"));
        }
        let total_len = u64::from_be_bytes(arr(&bytes[8..16]));
        let chunk_len = u32::from_be_bytes(arr(&bytes[16..20]));
        let count = u32::from_be_bytes(arr(&bytes[20..24]));
        if count > MAX_CHUNKS {
            return Err(IndexError::Decode("too many chunks"));
        }
        if bytes.len() != HEADER_LEN + 32 * count as usize {
            return Err(IndexError::Decode("length does not match chunk count"));
        }
        let chunks = bytes[HEADER_LEN..].chunks_exact(32).map(arr).collect();
        let index = Self {
            total_len,
            chunk_len,
            chunks,
        };
        index.check()?;
        Ok(index)
    }

    /// Decodes an index fetched for `id`, refusing it unless it hashes to `id`.
    pub fn decode_for(id: &ArtifactId, bytes: &[u8]) -> Result<Self, IndexError> {
        if Sha256::digest(bytes).as_slice() != id {
            return Err(IndexError::Mismatch);
        }
        Self::decode(bytes)
    }

    /// The artifact's fabric id: sha256 of [`ArtifactIndex::encode`].
    pub fn id(&self) -> ArtifactId {
        Sha256::digest(self.encode()).into()
    }
}

fn arr<const N: usize>(s: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(s);
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_last_chunk_is_short() {
        let data = vec![7u8; 10_000];
        let index = ArtifactIndex::from_bytes(&data, MIN_CHUNK_LEN).unwrap();
        assert_eq!(index.chunks.len(), 3);
        assert_eq!(index.chunk_size(2), 10_000 - 2 * 4096);
        assert_eq!(index.chunk_size(3), 0);
        let bytes = index.encode();
        assert_eq!(
            ArtifactIndex::decode_for(&index.id(), &bytes).unwrap(),
            index
        );
    }

    #[test]
    fn tampered_or_truncated_indexes_are_refused() {
        let index = ArtifactIndex::from_bytes(&[1u8; 9000], MIN_CHUNK_LEN).unwrap();
        let id = index.id();
        let mut bytes = index.encode();
        bytes[30] ^= 1;
        assert_eq!(
            ArtifactIndex::decode_for(&id, &bytes),
            Err(IndexError::Mismatch)
        );
        let bytes = index.encode();
        assert!(ArtifactIndex::decode(&bytes[..bytes.len() - 1]).is_err());
        // A count that disagrees with the length is refused even if well framed.
        let mut lying = index.clone();
        lying.total_len = 100_000;
        assert!(ArtifactIndex::decode(&lying.encode()).is_err());
        assert!(ArtifactIndex::decode(b"FLOEIDX1").is_err());
    }
}
