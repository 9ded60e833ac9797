//! The signed envelope shared by every signed payload (manifests, directives, trust stores).
//!
//! An envelope carries the payload's exact CBOR bytes, never a re-serialisation of a value, so
//! the signature check runs over the bytes that arrived and runs BEFORE the payload is
//! decoded: an unauthenticated peer never gets to exercise the payload decoder. The signed
//! message is domain-separated by payload kind (`floe-sig-v1\0manifest\0<bytes>`), so a
//! signature on a manifest can never be replayed as a directive.
//!
//! Thresholds count distinct public keys. A signature is matched to trusted keys by its key
//! id; the same signature twice, two signatures by the same key, or one key listed under two
//! ids all add one key to the count at most.

use super::bytes::{ByteBuf, Digest, Fixed, KeyId, PublicKeyBytes, SignatureBytes};
use super::cbor::{self, CborError};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::fmt;

/// The envelope schema this code writes and reads.
pub const ENVELOPE_SCHEMA: u32 = 1;
/// At most this many signatures on one envelope; more is refused before any is checked.
pub const MAX_SIGNATURES: usize = 16;
/// Bytes an envelope may add around its payload (kind, signatures, framing).
pub const ENVELOPE_OVERHEAD: usize = 4096;

/// A payload type that travels signed.
pub trait Payload: Serialize + DeserializeOwned {
    /// The kind string carried in the envelope and mixed into the signed message.
    const KIND: &'static str;
    /// The largest encoded payload accepted; checked before decoding.
    const MAX_BYTES: usize;
    /// Schema-level checks beyond the types (schema version, bounds, path rules …). Returns a
    /// sentence naming the field at fault.
    fn check(&self) -> Result<(), String>;
}

/// One signature: which key (by id) and the ed25519 signature bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    /// The signing key's id.
    pub key_id: KeyId,
    /// The signature over the domain-separated payload bytes.
    pub sig: SignatureBytes,
}

/// A signed payload on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    /// Always [`ENVELOPE_SCHEMA`].
    pub schema: u32,
    /// The payload type, [`Payload::KIND`].
    pub kind: String,
    /// The payload's exact CBOR bytes.
    pub payload: ByteBuf,
    /// The signatures, in the order they were added.
    pub signatures: Vec<Signature>,
}

/// A key a verifier trusts, with the id signatures name it by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedKey {
    /// The id signatures carry.
    pub id: KeyId,
    /// The ed25519 public key.
    pub public: PublicKeyBytes,
}

impl TrustedKey {
    /// A trusted key under its derived id.
    pub fn new(public: PublicKeyBytes) -> Self {
        Self {
            id: KeyId::of_key(&public),
            public,
        }
    }
}

/// Why a signature did not count toward the threshold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejected {
    /// No trusted key has this id.
    UnknownKey(KeyId),
    /// A trusted key has this id but the signature does not verify under it.
    BadSignature(KeyId),
    /// The signature verifies under a key already counted.
    Duplicate(KeyId),
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownKey(id) => write!(f, "signature by unknown key {id}"),
            Self::BadSignature(id) => write!(f, "invalid signature for key {id}"),
            Self::Duplicate(id) => write!(f, "key {id} already counted"),
        }
    }
}

/// Why a signed payload was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignedError {
    /// The envelope's own bytes are not a canonical envelope.
    #[error("envelope: {0}")]
    Envelope(#[source] CborError),
    /// The envelope is for another schema or payload kind, or carries too many signatures.
    #[error("envelope: expected {expected}, found {found}")]
    Mismatch {
        /// What the verifier expected.
        expected: String,
        /// What the envelope says.
        found: String,
    },
    /// Fewer distinct trusted keys signed than the threshold needs. Lists why each other
    /// signature did not count.
    #[error("signature threshold not met: {valid} of {needed} distinct trusted keys signed{}", describe(.rejected))]
    Threshold {
        /// Distinct trusted keys needed.
        needed: usize,
        /// Distinct trusted keys whose signature verified.
        valid: usize,
        /// Why each remaining signature did not count.
        rejected: Vec<Rejected>,
    },
    /// The signatures verified but the payload is not a canonical instance of its type.
    #[error("payload decode: {0}")]
    Decode(#[source] CborError),
    /// The payload decoded but breaks a schema rule.
    #[error("payload check: {0}")]
    Check(String),
    /// Signing refused the payload (too large for its type, too many signatures).
    #[error("sign: {0}")]
    Sign(String),
    /// Signing failed because the payload could not be encoded.
    #[error("sign: {0}")]
    Encode(#[source] CborError),
}

fn describe(rejected: &[Rejected]) -> String {
    if rejected.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = rejected.iter().map(ToString::to_string).collect();
    format!(" ({})", parts.join("; "))
}

/// A payload whose signatures met the threshold and whose bytes decoded canonically.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified<T> {
    /// The decoded payload.
    pub value: T,
    /// The exact payload bytes that were signed.
    pub bytes: Vec<u8>,
    /// SHA-256 of `bytes` (for a manifest: the manifest digest directives name).
    pub digest: Digest,
    /// Ids of the distinct keys that counted.
    pub signers: Vec<KeyId>,
}

/// The message a signature covers: the kind is mixed in so signatures cannot cross types.
fn signed_message(kind: &str, payload: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(payload.len() + kind.len() + 16);
    message.extend_from_slice(b"floe-sig-v1\0");
    message.extend_from_slice(kind.as_bytes());
    message.push(0);
    message.extend_from_slice(payload);
    message
}

/// The id of a signing key.
pub fn key_id(key: &SigningKey) -> KeyId {
    KeyId::of_key(&Fixed(key.verifying_key().to_bytes()))
}

impl Envelope {
    /// The largest envelope accepted for a payload type.
    pub const fn max_bytes<T: Payload>() -> usize {
        T::MAX_BYTES + ENVELOPE_OVERHEAD
    }

    /// Encodes the payload canonically and signs it with every key given.
    pub fn sign<T: Payload>(value: &T, keys: &[&SigningKey]) -> Result<Self, SignedError> {
        value.check().map_err(SignedError::Check)?;
        let payload = cbor::encode(value).map_err(SignedError::Encode)?;
        if payload.len() > T::MAX_BYTES {
            return Err(SignedError::Sign(format!(
                "payload is {} bytes, more than the {} allowed for a {}",
                payload.len(),
                T::MAX_BYTES,
                T::KIND
            )));
        }
        let mut envelope = Self {
            schema: ENVELOPE_SCHEMA,
            kind: T::KIND.to_string(),
            payload: ByteBuf(payload),
            signatures: Vec::new(),
        };
        for key in keys {
            envelope.add_signature(key)?;
        }
        Ok(envelope)
    }

    /// Adds one more signature over the payload as it is (for k-of-n signing by several
    /// holders).
    pub fn add_signature(&mut self, key: &SigningKey) -> Result<(), SignedError> {
        if self.signatures.len() >= MAX_SIGNATURES {
            return Err(SignedError::Sign(format!(
                "an envelope holds at most {MAX_SIGNATURES} signatures"
            )));
        }
        let sig = key.sign(&signed_message(&self.kind, &self.payload.0));
        self.signatures.push(Signature {
            key_id: key_id(key),
            sig: SignatureBytes::from(sig.to_bytes()),
        });
        Ok(())
    }

    /// The envelope's canonical bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, SignedError> {
        cbor::encode(self).map_err(SignedError::Envelope)
    }

    /// Decodes envelope bytes carrying a `T`, with the size cap for `T` applied first.
    pub fn from_bytes<T: Payload>(bytes: &[u8]) -> Result<Self, SignedError> {
        let envelope: Self =
            cbor::decode_canonical(bytes, Self::max_bytes::<T>()).map_err(SignedError::Envelope)?;
        if envelope.schema != ENVELOPE_SCHEMA {
            return Err(SignedError::Mismatch {
                expected: format!("envelope schema {ENVELOPE_SCHEMA}"),
                found: format!("schema {}", envelope.schema),
            });
        }
        if envelope.kind != T::KIND {
            return Err(SignedError::Mismatch {
                expected: format!("a {} envelope", T::KIND),
                found: format!("a {:?} envelope", envelope.kind),
            });
        }
        if envelope.signatures.len() > MAX_SIGNATURES {
            return Err(SignedError::Mismatch {
                expected: format!("at most {MAX_SIGNATURES} signatures"),
                found: format!("{} signatures", envelope.signatures.len()),
            });
        }
        if envelope.payload.0.len() > T::MAX_BYTES {
            return Err(SignedError::Mismatch {
                expected: format!("a payload of at most {} bytes", T::MAX_BYTES),
                found: format!("{} bytes", envelope.payload.0.len()),
            });
        }
        Ok(envelope)
    }

    /// Checks the signatures against `trusted` (threshold counted over distinct public keys),
    /// then, and only then, decodes and checks the payload.
    pub fn verify<T: Payload>(
        &self,
        trusted: &[TrustedKey],
        threshold: usize,
    ) -> Result<Verified<T>, SignedError> {
        if self.kind != T::KIND {
            return Err(SignedError::Mismatch {
                expected: format!("a {} envelope", T::KIND),
                found: format!("a {:?} envelope", self.kind),
            });
        }
        let message = signed_message(&self.kind, &self.payload.0);
        let mut counted: HashSet<[u8; 32]> = HashSet::new();
        let mut signers = Vec::new();
        let mut rejected = Vec::new();
        for signature in self.signatures.iter().take(MAX_SIGNATURES) {
            let sig = ed25519_dalek::Signature::from_bytes(&signature.sig.0);
            let mut matched_key = None;
            let mut known = false;
            for key in trusted.iter().filter(|k| k.id == signature.key_id) {
                known = true;
                let Ok(public) = VerifyingKey::from_bytes(&key.public.0) else {
                    continue;
                };
                if public.verify_strict(&message, &sig).is_ok() {
                    matched_key = Some(key.public.0);
                    break;
                }
            }
            match matched_key {
                Some(public) if counted.insert(public) => signers.push(signature.key_id),
                Some(_) => rejected.push(Rejected::Duplicate(signature.key_id)),
                None if known => rejected.push(Rejected::BadSignature(signature.key_id)),
                None => rejected.push(Rejected::UnknownKey(signature.key_id)),
            }
        }
        if threshold == 0 || counted.len() < threshold {
            return Err(SignedError::Threshold {
                needed: threshold.max(1),
                valid: counted.len(),
                rejected,
            });
        }
        let value: T =
            cbor::decode_canonical(&self.payload.0, T::MAX_BYTES).map_err(SignedError::Decode)?;
        value.check().map_err(SignedError::Check)?;
        Ok(Verified {
            value,
            digest: Digest::of(&self.payload.0),
            bytes: self.payload.0.clone(),
            signers,
        })
    }
}

impl From<[u8; 64]> for SignatureBytes {
    fn from(bytes: [u8; 64]) -> Self {
        Self(bytes)
    }
}

/// Decodes and verifies envelope bytes carrying a `T` in one step.
pub fn open<T: Payload>(
    envelope_bytes: &[u8],
    trusted: &[TrustedKey],
    threshold: usize,
) -> Result<Verified<T>, SignedError> {
    Envelope::from_bytes::<T>(envelope_bytes)?.verify(trusted, threshold)
}
