//! The device's decode → verify → install-decision pipeline.
//!
//! The first input byte picks the mode. Mode 0 feeds the rest as envelope bytes, the way a
//! peer's message arrives. Mode 1 signs the rest as a manifest payload with a trusted key
//! first, so that the fuzzer reaches the manifest decoder and the install decision behind the
//! signature check (which random bytes never pass).

#![no_main]

use ed25519_dalek::SigningKey;
use floe_wire::artifact::{DeviceFacts, check_manifest_envelope};
use floe_wire::proto::{ByteBuf, Envelope, Fixed, TrustStore, TrustedKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let release_key = SigningKey::from_bytes(&[1; 32]);
    let trusted = TrustedKey::new(Fixed(release_key.verifying_key().to_bytes()));
    let trust = TrustStore::new(vec![trusted.clone()], trusted);
    let facts = DeviceFacts {
        device_id: "fuzz".into(),
        arch: "aarch64".into(),
        device_type: "rpi4".into(),
        runtime_version: "0.1.0".into(),
        free_disk: 1 << 32,
        now: 1_750_000_000,
    };
    let bytes = if mode % 2 == 0 {
        rest.to_vec()
    } else {
        let mut envelope = Envelope {
            schema: 1,
            kind: "manifest".into(),
            payload: ByteBuf(rest.to_vec()),
            signatures: Vec::new(),
        };
        if envelope.add_signature(&release_key).is_err() {
            return;
        }
        match envelope.to_bytes() {
            Ok(bytes) => bytes,
            Err(_) => return,
        }
    };
    let highest = (mode >= 128).then_some(u64::from(mode));
    let _ = check_manifest_envelope(&bytes, &trust, &facts, highest, None);
});
