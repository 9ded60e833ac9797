//! Fabric membership certificates: the proof a peer shows when it connects.
//!
//! Only enrolled devices and coordinators take part in the fabric. Each proves it with a
//! certificate the coordinator key signs: "the peer whose key is K is a device (or a
//! coordinator) of this fleet from `issued_at` until `expires`". A peer checks the certificate
//! against its trust store's coordinator key when a connection is established, before any
//! Floe protocol runs on it (see `floe-fabric`'s admission). Nothing per-fleet is listed
//! anywhere: a device holds its own certificate and the trust store it already has, so a fleet
//! of 100 000 devices costs each device one certificate, not a list.
//!
//! Revocation: certificates live [`MAX_LIFETIME_SECS`] at most (the coordinator issues
//! [`DEFAULT_LIFETIME_SECS`]) and are renewed by the coordinator only for devices still in its
//! registry, so a removed device drops out of the fleet when its certificate expires, and at
//! once at every coordinator (which checks its registry at each admission).
//!
//! The checks are pure: the current time is an input.

use super::bytes::PublicKeyBytes;
use super::envelope::{Envelope, Payload, SignedError, TrustedKey};
use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};

/// The membership schema this code writes and reads.
pub const MEMBERSHIP_SCHEMA: u32 = 1;
/// The largest encoded certificate payload.
pub const MAX_MEMBERSHIP_BYTES: usize = 512;
/// The longest a certificate may live.
pub const MAX_LIFETIME_SECS: u64 = 30 * 24 * 3600;
/// What the coordinator issues by default: one day (renewed after half of it).
pub const DEFAULT_LIFETIME_SECS: u64 = 24 * 3600;
/// How far in the future `issued_at` may be (clocks of devices and coordinator disagree).
pub const MAX_CLOCK_SKEW_SECS: u64 = 300;

/// What a member is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// An enrolled device.
    Device,
    /// A coordinator.
    Coordinator,
}

impl Role {
    /// The role's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Device => "device",
            Role::Coordinator => "coordinator",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One peer's membership, signed by the coordinator key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Membership {
    /// Always [`MEMBERSHIP_SCHEMA`].
    pub schema: u32,
    /// The member's ed25519 public key (its fabric peer id and its device id derive from it).
    pub peer: PublicKeyBytes,
    /// Device or coordinator.
    pub role: Role,
    /// When it was issued, unix seconds.
    pub issued_at: u64,
    /// When it stops being valid, unix seconds.
    pub expires: u64,
}

impl Payload for Membership {
    const KIND: &'static str = "membership";
    const MAX_BYTES: usize = MAX_MEMBERSHIP_BYTES;

    fn check(&self) -> Result<(), String> {
        if self.schema != MEMBERSHIP_SCHEMA {
            return Err(format!(
                "membership schema {} is not supported (expected {MEMBERSHIP_SCHEMA})",
                self.schema
            ));
        }
        if self.expires <= self.issued_at {
            return Err(format!(
                "expires ({}) is not after issued_at ({})",
                self.expires, self.issued_at
            ));
        }
        if self.expires - self.issued_at > MAX_LIFETIME_SECS {
            return Err(format!(
                "lives {} s, more than the {MAX_LIFETIME_SECS} s allowed",
                self.expires - self.issued_at
            ));
        }
        if ed25519_dalek::VerifyingKey::from_bytes(&self.peer.0).is_err() {
            return Err("peer is not an ed25519 public key".to_string());
        }
        Ok(())
    }
}

impl Membership {
    /// Whether the certificate has used up half its life at `now` (time to renew).
    pub fn needs_renewal(&self, now: u64) -> bool {
        let half = (self.expires - self.issued_at.min(self.expires)) / 2;
        now >= self.issued_at.saturating_add(half)
    }
}

/// Why a certificate was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    /// The envelope or its signature is not right (not signed by the coordinator key, bad
    /// bytes, a schema rule broken).
    #[error("membership certificate: {0}")]
    Signed(#[source] SignedError),
    /// It names another key than the peer's.
    #[error("the membership certificate is for another peer")]
    NotThePeer,
    /// It was issued further in the future than the allowed clock skew.
    #[error(
        "the membership certificate is issued in the future ({issued_at} > {now} + {MAX_CLOCK_SKEW_SECS} s)"
    )]
    NotYetValid {
        /// Its issue time.
        issued_at: u64,
        /// The checker's time.
        now: u64,
    },
    /// It has expired.
    #[error("the membership certificate expired at {expires} (now {now})")]
    Expired {
        /// Its expiry.
        expires: u64,
        /// The checker's time.
        now: u64,
    },
}

/// Issues a certificate for `peer` in `role`, valid from `now` for `lifetime_secs`, signed by
/// the coordinator key. Returns the envelope's bytes.
pub fn issue(
    coordinator: &SigningKey,
    peer: PublicKeyBytes,
    role: Role,
    now: u64,
    lifetime_secs: u64,
) -> Result<Vec<u8>, SignedError> {
    let cert = Membership {
        schema: MEMBERSHIP_SCHEMA,
        peer,
        role,
        issued_at: now,
        expires: now.saturating_add(lifetime_secs),
    };
    Envelope::sign(&cert, &[coordinator])?.to_bytes()
}

/// Checks `bytes` as the membership certificate of the peer whose public key is `peer`, at
/// `now`: signed by `coordinator`, for that key, issued no later than `now` plus the clock
/// skew, not expired.
pub fn verify(
    coordinator: &TrustedKey,
    bytes: &[u8],
    peer: &PublicKeyBytes,
    now: u64,
) -> Result<Membership, MembershipError> {
    let envelope = Envelope::from_bytes::<Membership>(bytes).map_err(MembershipError::Signed)?;
    let cert = envelope
        .verify::<Membership>(std::slice::from_ref(coordinator), 1)
        .map_err(MembershipError::Signed)?
        .value;
    if cert.peer != *peer {
        return Err(MembershipError::NotThePeer);
    }
    if cert.issued_at > now.saturating_add(MAX_CLOCK_SKEW_SECS) {
        return Err(MembershipError::NotYetValid {
            issued_at: cert.issued_at,
            now,
        });
    }
    if now >= cert.expires {
        return Err(MembershipError::Expired {
            expires: cert.expires,
            now,
        });
    }
    Ok(cert)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::proto::Fixed;

    fn trusted(key: &SigningKey) -> TrustedKey {
        TrustedKey::new(Fixed(key.verifying_key().to_bytes()))
    }

    #[test]
    fn a_certificate_proves_one_key_for_its_lifetime_only() {
        let coord = SigningKey::from_bytes(&[1; 32]);
        let rogue = SigningKey::from_bytes(&[2; 32]);
        let dev = Fixed(SigningKey::from_bytes(&[3; 32]).verifying_key().to_bytes());
        let other = Fixed(SigningKey::from_bytes(&[4; 32]).verifying_key().to_bytes());
        let cert = issue(&coord, dev, Role::Device, 1000, 3600).unwrap();
        let ok = verify(&trusted(&coord), &cert, &dev, 1000).unwrap();
        assert_eq!((ok.role, ok.expires), (Role::Device, 4600));
        assert!(!ok.needs_renewal(2799));
        assert!(ok.needs_renewal(2800));
        // Another peer cannot use it; it does not verify under another coordinator key.
        assert_eq!(
            verify(&trusted(&coord), &cert, &other, 1000),
            Err(MembershipError::NotThePeer)
        );
        assert!(matches!(
            verify(&trusted(&rogue), &cert, &dev, 1000),
            Err(MembershipError::Signed(SignedError::Threshold { .. }))
        ));
        // Expired at its end; refused when issued beyond the clock skew.
        assert!(matches!(
            verify(&trusted(&coord), &cert, &dev, 4600),
            Err(MembershipError::Expired { .. })
        ));
        assert!(verify(&trusted(&coord), &cert, &dev, 1000 - MAX_CLOCK_SKEW_SECS).is_ok());
        assert!(matches!(
            verify(&trusted(&coord), &cert, &dev, 999 - MAX_CLOCK_SKEW_SECS),
            Err(MembershipError::NotYetValid { .. })
        ));
        // A flipped byte, junk, and another kind of envelope are refused.
        let mut bad = cert.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(verify(&trusted(&coord), &bad, &dev, 1000).is_err());
        assert!(verify(&trusted(&coord), b"junk", &dev, 1000).is_err());
    }

    #[test]
    fn lifetimes_are_bounded_and_never_wrap() {
        let coord = SigningKey::from_bytes(&[1; 32]);
        let dev = Fixed(SigningKey::from_bytes(&[3; 32]).verifying_key().to_bytes());
        let err = issue(&coord, dev, Role::Device, 0, MAX_LIFETIME_SECS + 1).unwrap_err();
        assert!(err.to_string().contains("more than"), "{err}");
        let err = issue(&coord, dev, Role::Device, u64::MAX, 10).unwrap_err();
        assert!(err.to_string().contains("not after"), "{err}");
    }
}
