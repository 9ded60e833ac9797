//! Tests for the smoke test a manifest carries: it travels inside the signature, and a bad one
//! is refused with the reason. They sit beside the other wire tests, not inside manifest.rs,
//! because they share those tests' fixtures (keys, a sample manifest).

#![allow(clippy::unwrap_used)]

use super::manifest::{
    MAX_SMOKE_MESSAGES, MAX_SMOKE_PAYLOAD_BYTES, MAX_SMOKE_TIMEOUT_MS, Manifest, SmokeMessage,
    SmokeTest,
};
use super::tests::{key, sample_manifest, trusted};
use super::{Envelope, Payload as _};

fn smoke() -> SmokeTest {
    SmokeTest {
        inject: vec![SmokeMessage {
            node: "scale".into(),
            payload: r#"{"raw":21500}"#.into(),
        }],
        expect: vec![SmokeMessage {
            node: "out".into(),
            payload: r#"{"celsius":21.5}"#.into(),
        }],
        timeout_ms: 2000,
    }
}

#[test]
fn a_smoke_test_travels_in_the_signed_manifest() {
    let mut m = sample_manifest();
    let plain = Envelope::sign(&m, &[&key(1)]).unwrap().payload;
    m.smoke_test = Some(smoke());
    let envelope = Envelope::sign(&m, &[&key(1)]).unwrap();
    assert_ne!(envelope.payload, plain);
    let bytes = envelope.to_bytes().unwrap();
    let back = Envelope::from_bytes::<Manifest>(&bytes).unwrap();
    let verified = back.verify::<Manifest>(&[trusted(&key(1))], 1).unwrap();
    assert_eq!(verified.value.smoke_test, Some(smoke()));
    // A manifest without a smoke test encodes without the field, as before it existed.
    m.smoke_test = None;
    assert_eq!(Envelope::sign(&m, &[&key(1)]).unwrap().payload, plain);
}

#[test]
fn bad_smoke_tests_are_refused_with_the_reason() {
    type Edit = Box<dyn Fn(&mut SmokeTest)>;
    let cases: Vec<(Edit, &str)> = vec![
        (Box::new(|s| s.timeout_ms = 0), "timeout_ms"),
        (
            Box::new(|s| s.timeout_ms = MAX_SMOKE_TIMEOUT_MS + 1),
            "timeout_ms",
        ),
        (
            Box::new(|s| s.inject[0].payload = "{nope".into()),
            "not JSON",
        ),
        (Box::new(|s| s.expect[0].node = String::new()), "node id"),
        (
            Box::new(|s| {
                s.inject.clear();
                s.expect.clear();
            }),
            "expects nothing",
        ),
        (
            Box::new(|s| {
                s.expect = vec![s.expect[0].clone(); MAX_SMOKE_MESSAGES + 1];
            }),
            "more than",
        ),
        (
            Box::new(|s| {
                s.inject[0].payload = format!("\"{}\"", "x".repeat(MAX_SMOKE_PAYLOAD_BYTES))
            }),
            "longer than",
        ),
    ];
    for (edit, needle) in cases {
        let mut m = sample_manifest();
        let mut s = smoke();
        edit(&mut s);
        m.smoke_test = Some(s);
        let err = m.check().unwrap_err();
        assert!(err.contains(needle), "{needle}: {err}");
    }
    let mut m = sample_manifest();
    m.smoke_test = Some(smoke());
    m.check().unwrap();
}
