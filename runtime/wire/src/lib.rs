//! Floe's wire: everything devices and the coordinator must agree on byte for byte.
//!
//! - [`proto`]: the versioned, size-capped wire types (manifest, envelope, directive, device
//!   report, directive post, trust store) and the canonical-CBOR rules they obey.
//! - [`artifact`]: building and verifying signed bundles, key files, the content-addressed
//!   chunk store and the pure install decision.
//! - [`identity`]: a node's ed25519 key on disk.
//! - [`join`]: the join string a device enrolls with (`floed join`).
//! - [`fsutil`]: durable writes (temp file, fsync, rename, directory fsync).
//! - [`clock`]: the wall clock, read only by services and binaries.
//! - [`text`]: limits and control-character rules for untrusted text, and its terminal form.
//!
//! Architecture invariant: this crate depends on serde, ciborium, ed25519-dalek and sha2 and on
//! no async runtime, database or network stack; `cargo tree -p floe-wire` is the check. The
//! coordinator signs with the same code devices verify with.

pub mod artifact;
pub mod clock;
pub mod fsutil;
pub mod identity;
pub mod join;
pub mod proto;
pub mod stdout;
pub mod text;
