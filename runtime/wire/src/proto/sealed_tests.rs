//! Secret values in directives: sealed, signed, bounded, and absent when there are none.

use super::tests::{key, trusted};
use super::*;

fn trust() -> TrustStore {
    TrustStore::new(vec![trusted(&key(1))], trusted(&key(9)))
}

fn stage_for(device: &ed25519_dalek::SigningKey) -> Directive {
    Directive {
        schema: 1,
        device_id: hex::encode(device.verifying_key().to_bytes()),
        generation: 3,
        action: Action::Stage,
        artifact: ArtifactRef {
            name: "temperature-alert".into(),
            release: 6,
            manifest_sha256: Digest::of(b"m"),
        },
        issued_at: 1_700_000_000,
        expires: 1_700_003_600,
        vars: Default::default(),
        secret_vars: Default::default(),
    }
}

#[test]
fn secret_values_travel_sealed_and_signed() {
    let device = key(5);
    let mut d = stage_for(&device);
    // No secrets: no `secret_vars` key on the wire (older devices decode it).
    let plain = cbor::encode(&d).unwrap();
    assert!(!plain.windows(11).any(|w| w == b"secret_vars"));
    let sealed = sealed::seal(&d.device_id, "s3cr3t-pass").unwrap();
    d.secret_vars.insert("password".into(), sealed);
    d.vars.insert("topic".into(), "t/a".into());
    d.check().unwrap();
    let envelope = Envelope::sign(&d, &[&key(9)]).unwrap();
    let bytes = envelope.to_bytes().unwrap();
    assert!(
        !bytes.windows(11).any(|w| w == b"s3cr3t-pass"),
        "the clear value is in the signed directive"
    );
    let verified: VerifiedDirective = trust()
        .verify_coordinator(&Envelope::from_bytes::<Directive>(&bytes).unwrap())
        .unwrap();
    let got = &verified.value.secret_vars["password"];
    assert_eq!(sealed::open(&device, got).unwrap(), "s3cr3t-pass");
    // The sealed bytes are under the signature.
    let at = bytes
        .windows(got.0.len())
        .position(|w| w == got.0.as_slice())
        .unwrap();
    let mut tampered = bytes.clone();
    tampered[at + 40] ^= 1;
    let env = Envelope::from_bytes::<Directive>(&tampered).unwrap();
    assert!(trust().verify_coordinator::<Directive>(&env).is_err());
}

#[test]
fn secret_values_are_bounded_with_the_clear_ones() {
    let device = key(5);
    let d = stage_for(&device);
    let refused = |d: &Directive| d.check().err().unwrap_or_default();
    let seal = |v: &str| sealed::seal(&d.device_id, v).unwrap();

    let mut bad = d.clone();
    bad.secret_vars.insert("9lives".into(), seal("x"));
    assert!(
        refused(&bad).contains("not a valid variable name"),
        "{}",
        refused(&bad)
    );

    let mut bad = d.clone();
    bad.vars.insert("password".into(), "x".into());
    bad.secret_vars.insert("password".into(), seal("x"));
    assert_eq!(
        refused(&bad),
        "variable password has both a clear and a secret value"
    );

    let mut bad = d.clone();
    bad.secret_vars
        .insert("password".into(), SealedValue(vec![0; SEAL_OVERHEAD - 1]));
    assert!(refused(&bad).contains("secret variable password: sealed value is 47 bytes"));
    let mut bad = d.clone();
    bad.secret_vars
        .insert("password".into(), seal(&"x".repeat(257)));
    assert!(
        refused(&bad).contains("305 bytes, 48 to 304 allowed"),
        "{}",
        refused(&bad)
    );

    let mut bad = d.clone();
    for i in 0..10 {
        bad.vars.insert(format!("v{i}"), "x".into());
    }
    for i in 0..7 {
        bad.secret_vars.insert(format!("s{i}"), seal("x"));
    }
    assert!(refused(&bad).contains("17 variable values (with secret ones), at most 16"));

    let mut bad = d.clone();
    for i in 0..8 {
        bad.secret_vars
            .insert(format!("s{i}"), seal(&"x".repeat(220)));
    }
    assert!(
        refused(&bad).contains("at most 2048 allowed"),
        "{}",
        refused(&bad)
    );

    // The largest allowed set still fits a signed directive.
    let mut big = d.clone();
    for i in 0..7 {
        big.secret_vars.insert(
            format!("{i:0>64}").replacen('0', "s", 1),
            seal(&"x".repeat(180)),
        );
    }
    big.check().unwrap();
    let env = Envelope::sign(&big, &[&key(9)]).unwrap();
    assert!(Envelope::from_bytes::<Directive>(&env.to_bytes().unwrap()).is_ok());
}
