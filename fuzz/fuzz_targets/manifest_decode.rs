//! Manifest decoding: the canonical-CBOR pre-scan and the strict decoders must never panic,
//! never allocate beyond the input's size, and accept only bytes that re-encode identically.

#![no_main]

use floe_wire::proto::manifest::MAX_MANIFEST_BYTES;
use floe_wire::proto::{Directive, Envelope, Manifest, TrustStore, cbor};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = cbor::prescan(data);
    if let Ok(manifest) = cbor::decode_canonical::<Manifest>(data, MAX_MANIFEST_BYTES) {
        // Whatever decodes must be the one encoding of its value.
        assert_eq!(cbor::encode(&manifest).ok().as_deref(), Some(data));
    }
    let _ = cbor::decode_canonical::<Directive>(data, 4096);
    let _ = cbor::decode_canonical::<TrustStore>(data, 16 * 1024);
    let _ = Envelope::from_bytes::<Manifest>(data);
});
