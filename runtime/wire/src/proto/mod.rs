//! Wire types shared by devices and the coordinator, and the rules every one of them obeys.
//!
//! Every message here is versioned (a `schema` field), size-capped before decoding, decoded
//! only after the canonical-CBOR pre-scan in [`cbor`], and accepted only if it re-encodes to
//! the exact bytes received. Signed messages travel in an [`Envelope`] whose signatures are
//! checked over those exact bytes before the payload is decoded.
//!
//! Encoding: CBOR as ciborium writes it (shortest integers, definite lengths, struct fields as
//! text-keyed maps in declaration order, digests and keys as byte strings). That one encoding
//! per value is what "canonical" means here.

pub mod bytes;
pub mod cbor;
pub mod device_auth;
pub mod directive;
pub mod envelope;
pub mod manifest;
pub mod membership;
pub mod report;
pub mod sealed;
pub mod trust;

pub use bytes::{ByteBuf, Digest, Fixed, KeyId, PublicKeyBytes, SignatureBytes};
pub use cbor::{CborError, MAX_DEPTH};
pub use directive::{
    Action, ArtifactRef, Directive, DirectiveRefusal, MAX_DIRECTIVE_BYTES, MAX_DIRECTIVE_VARS,
    MAX_DIRECTIVE_VARS_BYTES, UnknownName, accept_directive, check_directive_secrets,
    check_directive_vars,
};
pub use envelope::{
    Envelope, Payload, Rejected, Signature, SignedError, TrustedKey, Verified, open,
};
pub use manifest::{FileEntry, Manifest};
pub use membership::{Membership, MembershipError, Role};
pub use report::{
    Applied, DeviceReport, DirectivePost, Facts, HealthLevel, HealthSummary, Label, PostError,
    Progress, SlotInfo, SystemSummary, open_report, open_report_from,
};
pub use sealed::{SEAL_OVERHEAD, SealError, SealedValue};
pub use trust::{RotationError, TrustStore};

/// A manifest whose signatures met the release threshold and that decoded canonically.
pub type VerifiedManifest = Verified<Manifest>;
/// A directive signed by the coordinator key that decoded canonically.
pub type VerifiedDirective = Verified<Directive>;

#[cfg(test)]
mod sealed_tests;
#[cfg(test)]
mod smoke_tests;
#[cfg(test)]
mod tests;
