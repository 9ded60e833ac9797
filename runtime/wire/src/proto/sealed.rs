//! Secret flow variable values sealed to one device's key.
//!
//! A value is sealed with an anonymous sealed box (libsodium's `crypto_box_seal`: an
//! ephemeral X25519 key, XSalsa20-Poly1305, the nonce derived from both public keys; the
//! RustCrypto `crypto_box` crate) to the X25519 form of the device's ed25519 identity key
//! (the device id is the hex of that key). Only the holder of the device's identity key can
//! open it; the sender cannot, and a changed byte fails the Poly1305 check. The coordinator
//! seals when it resolves a deployment's values; the device keeps the sealed bytes and opens
//! them in memory only when it starts the flow.

use base64::Engine as _;
use crypto_box::{PublicKey, SecretKey};
use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::de::Visitor;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// What sealing adds to a value: the ephemeral public key (32) and the tag (16).
pub const SEAL_OVERHEAD: usize = crypto_box::KEY_SIZE + 16;

/// Why a value could not be sealed or opened. Never carries the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The device id is not the hex of a valid ed25519 public key.
    #[error("device id {0:?} is not the hex of an ed25519 public key")]
    DeviceKey(String),
    /// Encryption failed (no randomness).
    #[error("sealing failed")]
    Seal,
    /// The bytes are not a box sealed to this device's key, or were changed.
    #[error(
        "the sealed value does not open with this device's key (sealed to another device, or changed)"
    )]
    Open,
    /// The opened bytes are not UTF-8 text.
    #[error("the opened value is not UTF-8 text")]
    NotText,
}

/// A value sealed to one device: the sealed box's bytes. A CBOR byte string on the wire, a
/// base64 string in JSON (deployment and slot records). Its `Debug` shows only the length.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedValue(pub Vec<u8>);

impl fmt::Debug for SealedValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SealedValue({} bytes)", self.0.len())
    }
}

/// The X25519 public key of the device whose id is `device_id` (hex ed25519 key).
fn device_public(device_id: &str) -> Result<PublicKey, SealError> {
    let bad = || SealError::DeviceKey(device_id.chars().take(80).collect());
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(device_id, &mut bytes).map_err(|_| bad())?;
    let key = VerifyingKey::from_bytes(&bytes).map_err(|_| bad())?;
    Ok(PublicKey::from(key.to_montgomery().to_bytes()))
}

/// Seals `value` to the device whose id is `device_id`.
pub fn seal(device_id: &str, value: &str) -> Result<SealedValue, SealError> {
    let public = device_public(device_id)?;
    public
        .seal(&mut crypto_box::aead::OsRng, value.as_bytes())
        .map(SealedValue)
        .map_err(|_| SealError::Seal)
}

/// Opens a value sealed to `key`'s device. The clear text lives only in the returned string.
pub fn open(key: &SigningKey, sealed: &SealedValue) -> Result<String, SealError> {
    let secret = SecretKey::from(key.to_scalar_bytes());
    let bytes = secret.unseal(&sealed.0).map_err(|_| SealError::Open)?;
    String::from_utf8(bytes).map_err(|_| SealError::NotText)
}

impl Serialize for SealedValue {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
        } else {
            serializer.serialize_bytes(&self.0)
        }
    }
}

struct SealedVisitor;

impl Visitor<'_> for SealedVisitor {
    type Value = SealedValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a sealed value (a byte string, or base64 text)")
    }

    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
        Ok(SealedValue(v.to_vec()))
    }

    fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Self::Value, E> {
        Ok(SealedValue(v))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
        base64::engine::general_purpose::STANDARD
            .decode(v)
            .map(SealedValue)
            .map_err(|e| E::custom(format!("a sealed value is not base64: {e}")))
    }
}

impl<'de> Deserialize<'de> for SealedValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            deserializer.deserialize_str(SealedVisitor)
        } else {
            deserializer.deserialize_byte_buf(SealedVisitor)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::proto::cbor;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn id(k: &SigningKey) -> String {
        hex::encode(k.verifying_key().to_bytes())
    }

    #[test]
    fn a_sealed_value_opens_with_the_device_key_only() {
        let device = key(7);
        let sealed = seal(&id(&device), "hunter2").unwrap();
        assert_eq!(sealed.0.len(), "hunter2".len() + SEAL_OVERHEAD);
        assert!(
            !sealed.0.windows(7).any(|w| w == b"hunter2"),
            "the clear text shows in the sealed bytes"
        );
        assert_eq!(open(&device, &sealed).unwrap(), "hunter2");
        // Another device's key does not open it.
        assert_eq!(open(&key(8), &sealed), Err(SealError::Open));
        // Two seals of one value differ (fresh ephemeral key each time).
        assert_ne!(seal(&id(&device), "hunter2").unwrap(), sealed);
    }

    #[test]
    fn a_changed_or_cut_sealed_value_is_refused() {
        let device = key(7);
        let sealed = seal(&id(&device), "hunter2").unwrap();
        for i in 0..sealed.0.len() {
            let mut bad = sealed.clone();
            bad.0[i] ^= 0x01;
            assert_eq!(
                open(&device, &bad),
                Err(SealError::Open),
                "byte {i} flipped"
            );
        }
        let cut = SealedValue(sealed.0[..SEAL_OVERHEAD - 1].to_vec());
        assert_eq!(open(&device, &cut), Err(SealError::Open));
        assert_eq!(
            open(&device, &SealedValue(Vec::new())),
            Err(SealError::Open)
        );
    }

    #[test]
    fn an_empty_value_seals_and_a_bad_device_id_is_named() {
        let device = key(3);
        let sealed = seal(&id(&device), "").unwrap();
        assert_eq!(open(&device, &sealed).unwrap(), "");
        assert!(matches!(seal("zz", "x"), Err(SealError::DeviceKey(_))));
        assert!(matches!(
            seal(&"ab".repeat(31), "x"),
            Err(SealError::DeviceKey(_))
        ));
    }

    #[test]
    fn sealed_values_are_byte_strings_in_cbor_and_base64_in_json() {
        let sealed = SealedValue(vec![1, 2, 3]);
        assert_eq!(hex::encode(cbor::encode(&sealed).unwrap()), "43010203");
        assert_eq!(serde_json::to_string(&sealed).unwrap(), "\"AQID\"");
        let back: SealedValue = serde_json::from_str("\"AQID\"").unwrap();
        assert_eq!(back, sealed);
        assert!(serde_json::from_str::<SealedValue>("\"not base64!\"").is_err());
        assert_eq!(format!("{sealed:?}"), "SealedValue(3 bytes)");
    }
}
