//! Byte-string wire types.
//!
//! serde writes `[u8; 32]` as an array of 32 integers; these types write CBOR byte strings
//! instead (34 bytes for a digest, not up to 66) and refuse any other length on the way in.

use serde::de::Visitor;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// A fixed-length byte string: digests, key ids, public keys, signatures.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fixed<const N: usize>(pub [u8; N]);

/// A SHA-256 digest.
pub type Digest = Fixed<32>;
/// A key id: the first 8 bytes of SHA-256 over the ed25519 public key.
pub type KeyId = Fixed<8>;
/// An ed25519 public key.
pub type PublicKeyBytes = Fixed<32>;
/// An ed25519 signature.
pub type SignatureBytes = Fixed<64>;

impl<const N: usize> Fixed<N> {
    /// Parses lowercase or uppercase hex of exactly `N` bytes.
    pub fn from_hex(text: &str) -> Result<Self, hex::FromHexError> {
        let mut out = [0u8; N];
        hex::decode_to_slice(text.trim(), &mut out)?;
        Ok(Self(out))
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl Digest {
    /// SHA-256 of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        use sha2::Digest as _;
        Self(sha2::Sha256::digest(bytes).into())
    }
}

impl KeyId {
    /// The id of a public key: the first 8 bytes of its SHA-256.
    pub fn of_key(public: &PublicKeyBytes) -> Self {
        let digest = Digest::of(&public.0);
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest.0[..8]);
        Self(id)
    }
}

impl<const N: usize> fmt::Debug for Fixed<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl<const N: usize> fmt::Display for Fixed<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl<const N: usize> Serialize for Fixed<N> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

struct FixedVisitor<const N: usize>;

impl<const N: usize> Visitor<'_> for FixedVisitor<N> {
    type Value = Fixed<N>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a byte string of {N} bytes")
    }

    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
        let array: [u8; N] = v
            .try_into()
            .map_err(|_| E::invalid_length(v.len(), &self))?;
        Ok(Fixed(array))
    }

    fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Self::Value, E> {
        self.visit_bytes(&v)
    }
}

impl<'de, const N: usize> Deserialize<'de> for Fixed<N> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_bytes(FixedVisitor::<N>)
    }
}

/// A variable-length byte string (an envelope's payload).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct ByteBuf(pub Vec<u8>);

impl fmt::Debug for ByteBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ByteBuf({} bytes)", self.0.len())
    }
}

impl Serialize for ByteBuf {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

struct BufVisitor;

impl Visitor<'_> for BufVisitor {
    type Value = ByteBuf;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a byte string")
    }

    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
        Ok(ByteBuf(v.to_vec()))
    }

    fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Self::Value, E> {
        Ok(ByteBuf(v))
    }
}

impl<'de> Deserialize<'de> for ByteBuf {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_byte_buf(BufVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::cbor;

    #[test]
    fn fixed_bytes_are_cbor_byte_strings_of_exact_length() {
        let id = KeyId::from_hex("0102030405060708").unwrap();
        let bytes = cbor::encode(&id).unwrap();
        assert_eq!(hex::encode(&bytes), "480102030405060708");
        assert_eq!(cbor::decode_canonical::<KeyId>(&bytes, 64).unwrap(), id);
        // Seven bytes where eight are required.
        let short = hex::decode("4701020304050607").unwrap();
        assert!(matches!(
            cbor::decode_canonical::<KeyId>(&short, 64),
            Err(cbor::CborError::Schema(_))
        ));
        // An array of integers is not a byte string.
        let array = hex::decode("880102030405060708").unwrap();
        assert!(cbor::decode_canonical::<KeyId>(&array, 64).is_err());
    }

    #[test]
    fn key_id_is_the_digest_prefix() {
        let public = PublicKeyBytes::from_hex(&"11".repeat(32)).unwrap();
        assert_eq!(KeyId::of_key(&public).0, Digest::of(&public.0).0[..8]);
    }
}
