//! Round-trip, hex-snapshot and property tests for the wire types, and the signature rules.

use super::*;
use crate::proto::manifest::MAX_MANIFEST_LIFETIME_SECS;
use ed25519_dalek::SigningKey;
use proptest::prelude::*;

pub(crate) fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

pub(crate) fn trusted(key: &SigningKey) -> TrustedKey {
    TrustedKey::new(Fixed(key.verifying_key().to_bytes()))
}

pub(crate) fn sample_manifest() -> Manifest {
    Manifest {
        schema: 1,
        name: "temperature-alert".into(),
        version: "1.2.0".into(),
        release: 7,
        created: 1_700_000_000,
        expires: 1_760_000_000,
        archs: vec!["aarch64".into()],
        device_types: vec![],
        min_runtime: "0.1.0".into(),
        size: 5,
        sha256: Digest::of(b"{}\nab"),
        chunk_size: 4096,
        chunks: vec![Digest::of(b"{}\nab")],
        files: vec![
            FileEntry {
                path: "flow.json".into(),
                size: 3,
                sha256: Digest::of(b"{}\n"),
            },
            FileEntry {
                path: "m/x".into(),
                size: 2,
                sha256: Digest::of(b"ab"),
            },
        ],
        smoke_test: None,
    }
}

fn sample_directive() -> Directive {
    Directive {
        schema: 1,
        device_id: "pi-01".into(),
        generation: 3,
        action: Action::Rollback,
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

fn sample_trust() -> TrustStore {
    TrustStore::new(vec![trusted(&key(1)), trusted(&key(2))], trusted(&key(9)))
}

/// Encodes, checks the bytes against the snapshot, decodes, and checks the value.
fn snapshot<T: Payload + PartialEq + std::fmt::Debug>(value: &T, expected_hex: &str) {
    let bytes = cbor::encode(value).unwrap();
    assert_eq!(hex::encode(&bytes), expected_hex, "snapshot of {}", T::KIND);
    let back: T = cbor::decode_canonical(&bytes, T::MAX_BYTES).unwrap();
    assert_eq!(&back, value);
    back.check().unwrap();
}

#[test]
fn a_manifest_living_longer_than_two_years_is_refused() {
    let mut m = sample_manifest();
    m.expires = m.created + MAX_MANIFEST_LIFETIME_SECS;
    assert!(m.check().is_ok());
    m.expires += 1;
    let err = m.check().unwrap_err();
    assert!(err.contains("two years"), "{err}");
    m.expires = 1 << 63;
    assert!(m.check().is_err());
}

#[test]
fn manifest_snapshot() {
    snapshot(&sample_manifest(), MANIFEST_HEX);
}

#[test]
fn directive_snapshot() {
    snapshot(&sample_directive(), DIRECTIVE_HEX);
}

#[test]
fn directive_variables_are_signed_bounded_and_absent_when_empty() {
    // Without values the encoding is the old one: the snapshot above, no `vars` key.
    let plain = cbor::encode(&sample_directive()).unwrap();
    assert!(!plain.windows(4).any(|w| w == b"vars"));
    // An explicit empty map is a second encoding of the same value, so it is refused.
    let mut with_empty = plain.clone();
    with_empty[0] += 1;
    with_empty.extend_from_slice(&[0x64, b'v', b'a', b'r', b's', 0xa0]);
    assert!(cbor::decode_canonical::<Directive>(&with_empty, MAX_DIRECTIVE_BYTES).is_err());

    let mut d = sample_directive();
    d.action = Action::Stage;
    d.vars
        .insert("broker".into(), "mqtt://127.0.0.1:1883".into());
    d.vars.insert("sensor.path".into(), "/dev/i2c-1".into());
    let envelope = Envelope::sign(&d, &[&key(9)]).unwrap();
    let back = Envelope::from_bytes::<Directive>(&envelope.to_bytes().unwrap()).unwrap();
    let verified: Verified<Directive> = sample_trust().verify_coordinator(&back).unwrap();
    assert_eq!(verified.value.vars, d.vars);
    // The values are under the signature: changing one breaks it.
    let mut bytes = envelope.to_bytes().unwrap();
    let at = bytes.windows(10).position(|w| w == b"/dev/i2c-1").unwrap();
    bytes[at + 9] = b'2';
    let tampered = Envelope::from_bytes::<Directive>(&bytes).unwrap();
    assert!(
        sample_trust()
            .verify_coordinator::<Directive>(&tampered)
            .is_err()
    );

    let refused = |d: &Directive| d.check().err().unwrap_or_default();
    let mut bad = d.clone();
    bad.vars.insert("1bad".into(), "x".into());
    assert!(
        refused(&bad).contains("not a valid variable name"),
        "{}",
        refused(&bad)
    );
    let mut bad = d.clone();
    bad.vars.insert("topic".into(), "a\u{1b}[2J".into());
    assert!(refused(&bad).contains("variable topic contains the control character"));
    let mut bad = d.clone();
    bad.vars.insert("topic".into(), "x".repeat(257));
    assert_eq!(
        refused(&bad),
        "variable topic is 257 bytes, at most 256 allowed"
    );
    let mut bad = d.clone();
    for i in 0..=MAX_DIRECTIVE_VARS {
        bad.vars.insert(format!("v{i}"), "x".into());
    }
    assert!(refused(&bad).contains("at most 16 allowed"));
    let mut bad = d.clone();
    bad.vars.clear();
    for i in 0..10 {
        bad.vars.insert(format!("v{i}"), "x".repeat(250));
    }
    assert!(refused(&bad).contains("at most 2048 allowed"));
    // The largest set of values allowed still encodes within the directive cap, signed.
    let mut big = d.clone();
    big.vars.clear();
    for i in 0..8 {
        big.vars
            .insert(format!("{i:0>64}").replacen('0', "v", 1), "x".repeat(192));
    }
    big.check().unwrap();
    let env = Envelope::sign(&big, &[&key(9)]).unwrap();
    assert!(cbor::encode(&big).unwrap().len() <= MAX_DIRECTIVE_BYTES);
    assert!(Envelope::from_bytes::<Directive>(&env.to_bytes().unwrap()).is_ok());
}

#[test]
fn trust_store_snapshot() {
    snapshot(&sample_trust(), TRUST_HEX);
}

#[test]
fn envelope_snapshot_and_round_trip() {
    // ed25519 signatures are deterministic, so the whole envelope is a stable snapshot.
    let envelope = Envelope::sign(&sample_directive(), &[&key(9)]).unwrap();
    let bytes = envelope.to_bytes().unwrap();
    assert_eq!(hex::encode(&bytes), ENVELOPE_HEX);
    let back = Envelope::from_bytes::<Directive>(&bytes).unwrap();
    assert_eq!(back, envelope);
    let verified: Verified<Directive> = sample_trust().verify_coordinator(&back).unwrap();
    assert_eq!(verified.value, sample_directive());
    assert_eq!(verified.digest, Digest::of(&envelope.payload.0));
    assert_eq!(verified.signers, vec![trusted(&key(9)).id]);
}

#[test]
fn directives_apply_only_newer_for_this_device_and_fresh() {
    let envelope = Envelope::sign(&sample_directive(), &[&key(9)]).unwrap();
    let verified: VerifiedDirective = sample_trust().verify_coordinator(&envelope).unwrap();
    let now = 1_700_000_100;
    accept_directive(&verified, "pi-01", None, now).unwrap();
    accept_directive(&verified, "pi-01", Some(2), now).unwrap();
    assert_eq!(
        accept_directive(&verified, "pi-01", Some(3), now),
        Err(DirectiveRefusal::Stale {
            expected: 3,
            found: 3
        })
    );
    assert_eq!(
        accept_directive(&verified, "pi-02", None, now),
        Err(DirectiveRefusal::Device {
            expected: "pi-02".into(),
            found: "pi-01".into()
        })
    );
    assert_eq!(
        accept_directive(&verified, "pi-01", None, 1_700_003_600),
        Err(DirectiveRefusal::Expired {
            expires: 1_700_003_600,
            now: 1_700_003_600
        })
    );
    // A directive signed by a release key is not a coordinator directive.
    let wrong = Envelope::sign(&sample_directive(), &[&key(1)]).unwrap();
    assert!(
        sample_trust()
            .verify_coordinator::<Directive>(&wrong)
            .is_err()
    );
}

#[test]
fn signatures_do_not_cross_payload_kinds() {
    // A directive envelope relabelled as a manifest must not verify: the kind is signed.
    let mut envelope = Envelope::sign(&sample_directive(), &[&key(1)]).unwrap();
    envelope.kind = "manifest".into();
    let err = envelope
        .verify::<Manifest>(&[trusted(&key(1))], 1)
        .unwrap_err();
    assert!(
        matches!(err, SignedError::Threshold { valid: 0, .. }),
        "{err}"
    );
}

#[test]
fn threshold_counts_distinct_keys_only() {
    let manifest = sample_manifest();
    let keys = [trusted(&key(1)), trusted(&key(2)), trusted(&key(3))];

    // Two of three distinct keys meets a threshold of two.
    let envelope = Envelope::sign(&manifest, &[&key(1), &key(2)]).unwrap();
    envelope.verify::<Manifest>(&keys, 2).unwrap();

    // The same signature twice counts once.
    let mut doubled = Envelope::sign(&manifest, &[&key(1)]).unwrap();
    doubled.signatures.push(doubled.signatures[0].clone());
    let err = doubled.verify::<Manifest>(&keys, 2).unwrap_err();
    assert_eq!(
        err,
        SignedError::Threshold {
            needed: 2,
            valid: 1,
            rejected: vec![Rejected::Duplicate(keys[0].id)]
        }
    );

    // One key listed under two ids, signing under both ids, counts once.
    let alias = TrustedKey {
        id: Fixed([0xaa; 8]),
        public: keys[0].public,
    };
    let mut aliased = Envelope::sign(&manifest, &[&key(1)]).unwrap();
    let mut second = aliased.signatures[0].clone();
    second.key_id = alias.id;
    aliased.signatures.push(second);
    let err = aliased
        .verify::<Manifest>(&[keys[0].clone(), alias.clone()], 2)
        .unwrap_err();
    assert!(
        matches!(err, SignedError::Threshold { valid: 1, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("already counted"), "{err}");
}

#[test]
fn unknown_and_bad_signatures_are_named() {
    let manifest = sample_manifest();
    let envelope = Envelope::sign(&manifest, &[&key(5)]).unwrap();
    let err = envelope
        .verify::<Manifest>(&[trusted(&key(1))], 1)
        .unwrap_err();
    assert_eq!(
        err,
        SignedError::Threshold {
            needed: 1,
            valid: 0,
            rejected: vec![Rejected::UnknownKey(trusted(&key(5)).id)]
        }
    );
    assert!(err.to_string().contains("unknown key"), "{err}");

    let mut flipped = Envelope::sign(&manifest, &[&key(1)]).unwrap();
    flipped.signatures[0].sig.0[10] ^= 0x01;
    let err = flipped
        .verify::<Manifest>(&[trusted(&key(1))], 1)
        .unwrap_err();
    assert!(
        matches!(&err, SignedError::Threshold { rejected, .. } if rejected == &[Rejected::BadSignature(trusted(&key(1)).id)])
    );
}

#[test]
fn payload_is_not_decoded_before_signatures_verify() {
    // Garbage payload with no valid signature: the error is about signatures, not decoding.
    let envelope = Envelope {
        schema: 1,
        kind: "manifest".into(),
        payload: ByteBuf(vec![0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
        signatures: vec![],
    };
    let err = envelope
        .verify::<Manifest>(&[trusted(&key(1))], 1)
        .unwrap_err();
    assert!(matches!(err, SignedError::Threshold { valid: 0, .. }));
}

#[test]
fn trust_rotation_rules() {
    let current = sample_trust();
    let mut next = current.clone();
    next.version = 2;
    next.release_keys = vec![trusted(&key(2)), trusted(&key(3))];

    // Signed by a current key and a new key: accepted.
    let good = Envelope::sign(&next, &[&key(1), &key(3)]).unwrap();
    assert_eq!(current.rotate(&good).unwrap(), next);

    // Signed only by keys the current store does not know: refused.
    let outsider = Envelope::sign(&next, &[&key(3)]).unwrap();
    assert!(matches!(
        current.rotate(&outsider),
        Err(RotationError::Current(_))
    ));

    // Signed by the current store but by none of its own keys: refused.
    let orphan = Envelope::sign(&next, &[&key(1)]).unwrap();
    assert!(matches!(
        current.rotate(&orphan),
        Err(RotationError::Own(_))
    ));

    // Skipping a number is refused and says what was expected.
    let mut skip = next.clone();
    skip.version = 3;
    let skipped = Envelope::sign(&skip, &[&key(1), &key(3)]).unwrap();
    assert_eq!(
        current.rotate(&skipped),
        Err(RotationError::Version {
            expected: 2,
            found: 3
        })
    );
    let mut same = next.clone();
    same.version = 1;
    let replayed = Envelope::sign(&same, &[&key(1), &key(3)]).unwrap();
    assert_eq!(
        current.rotate(&replayed),
        Err(RotationError::Version {
            expected: 2,
            found: 1
        })
    );
}

#[test]
fn trust_store_check_refuses_bad_thresholds_and_duplicates() {
    let mut store = sample_trust();
    store.threshold = 3;
    assert!(store.check().unwrap_err().contains("threshold 3"));
    store.threshold = 0;
    assert!(store.check().is_err());
    let mut dup = sample_trust();
    dup.release_keys.push(TrustedKey {
        id: Fixed([7; 8]),
        public: dup.release_keys[0].public,
    });
    assert!(dup.check().unwrap_err().contains("listed twice"));
}

#[test]
fn manifest_check_refuses_bad_paths_and_sizes() {
    type Case = (&'static str, fn(&mut Manifest));
    let cases: [Case; 9] = [
        ("\"..\" component", |m| {
            m.files[1].path = "../etc/passwd".into()
        }),
        ("is absolute", |m| m.files[1].path = "/etc/passwd".into()),
        ("NUL byte", |m| m.files[1].path = "a\0b".into()),
        ("empty component", |m| m.files[1].path = "a//b".into()),
        ("expected \"flow.json\"", |m| m.files.swap(0, 1)),
        ("add up to", |m| m.files[1].size = 3),
        ("expected 1", |m| m.chunks.push(Digest::of(b""))),
        ("not a semantic version", |m| m.version = "one".into()),
        ("chunk_size", |m| m.chunk_size = 1),
    ];
    for (needle, mutate) in cases {
        let mut manifest = sample_manifest();
        mutate(&mut manifest);
        let err = manifest.check().unwrap_err();
        assert!(err.contains(needle), "{needle}: {err}");
    }
}

#[test]
fn schema_versions_and_unknown_fields_are_refused() {
    let mut manifest = sample_manifest();
    manifest.schema = 2;
    assert!(manifest.check().unwrap_err().contains("schema 2"));
    // An extra field appended to the manifest map (count bumped from 14 to 15).
    let mut bytes = cbor::encode(&sample_manifest()).unwrap();
    assert_eq!(bytes[0], 0xae);
    bytes[0] = 0xaf;
    bytes.extend_from_slice(&[0x63, b'z', b'z', b'z', 0x01]);
    let err = cbor::decode_canonical::<Manifest>(&bytes, MAX).unwrap_err();
    assert!(
        matches!(&err, CborError::Schema(e) if e.to_string().contains("zzz")),
        "{err}"
    );
}

const MAX: usize = manifest::MAX_MANIFEST_BYTES;

fn arb_digest() -> impl Strategy<Value = Digest> {
    any::<[u8; 32]>().prop_map(Fixed)
}

fn arb_manifest() -> impl Strategy<Value = Manifest> {
    (
        "[a-z][a-z0-9-]{0,20}",
        (0u64..50, 0u64..50, 0u64..50),
        any::<u64>(),
        (any::<u32>(), 1u64..=MAX_MANIFEST_LIFETIME_SECS),
        proptest::collection::vec("[a-z0-9_]{1,12}", 1..4),
        proptest::collection::vec((1u64..20_000, arb_digest()), 0..5),
    )
        .prop_map(
            |(name, (ma, mi, pa), release, (created, life), archs, extra)| {
                let mut files = vec![FileEntry {
                    path: "flow.json".into(),
                    size: 10,
                    sha256: Digest::of(b"f"),
                }];
                for (i, (size, sha256)) in extra.into_iter().enumerate() {
                    files.push(FileEntry {
                        path: format!("d/{i}.bin"),
                        size,
                        sha256,
                    });
                }
                let size: u64 = files.iter().map(|f| f.size).sum();
                let chunk_size = 4096;
                let chunks = (0..manifest::chunk_count(size, chunk_size))
                    .map(|i| Digest::of(&i.to_be_bytes()))
                    .collect();
                Manifest {
                    schema: 1,
                    name,
                    version: format!("{ma}.{mi}.{pa}"),
                    release,
                    created: u64::from(created),
                    expires: u64::from(created) + life,
                    archs,
                    device_types: vec![],
                    min_runtime: "0.1.0".into(),
                    size,
                    sha256: Digest::of(&size.to_be_bytes()),
                    chunk_size,
                    chunks,
                    files,
                    smoke_test: None,
                }
            },
        )
}

proptest! {
    #[test]
    fn manifests_round_trip_and_verify(manifest in arb_manifest()) {
        let envelope = Envelope::sign(&manifest, &[&key(1)]).unwrap();
        let bytes = envelope.to_bytes().unwrap();
        let verified: Verified<Manifest> = open(&bytes, &[trusted(&key(1))], 1).unwrap();
        prop_assert_eq!(verified.value, manifest);
    }

    #[test]
    fn any_single_byte_flip_in_a_signed_envelope_is_refused(
        manifest in arb_manifest(),
        index in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let bytes = Envelope::sign(&manifest, &[&key(1)]).unwrap().to_bytes().unwrap();
        let mut flipped = bytes.clone();
        let at = index.index(flipped.len());
        flipped[at] ^= 1 << bit;
        prop_assert!(open::<Manifest>(&flipped, &[trusted(&key(1))], 1).is_err());
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_envelope_path(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = open::<Manifest>(&bytes, &[trusted(&key(1))], 1);
        let _ = cbor::decode_canonical::<Manifest>(&bytes, MAX);
        let _ = cbor::decode_canonical::<Directive>(&bytes, 4096);
        let _ = cbor::decode_canonical::<TrustStore>(&bytes, 4096);
    }
}

const MANIFEST_HEX: &str = "ae66736368656d6101646e616d657174656d70657261747572652d616c6572746776657273696f6e65312e322e306772656c656173650767637265617465641a6553f10067657870697265731a68e778006561726368738167616172636836346c6465766963655f7479706573806b6d696e5f72756e74696d6565302e312e306473697a6505667368613235365820bb82d3a82074d5eb0a30dd56272efeaaf794a751929ddaf7709eb0a6d7d048fe6a6368756e6b5f73697a65191000666368756e6b73815820bb82d3a82074d5eb0a30dd56272efeaaf794a751929ddaf7709eb0a6d7d048fe6566696c657382a3647061746869666c6f772e6a736f6e6473697a6503667368613235365820ca3d163bab055381827226140568f3bef7eaac187cebd76878e0b63e9e442356a36470617468636d2f786473697a6502667368613235365820fb8e20fc2e4c3f248c60c39bd652f3c1347298bb977b8b4d5903b85055620603";
const DIRECTIVE_HEX: &str = "a766736368656d6101696465766963655f69646570692d30316a67656e65726174696f6e0366616374696f6e68726f6c6c6261636b686172746966616374a3646e616d657174656d70657261747572652d616c6572746772656c65617365066f6d616e69666573745f736861323536582062c66a7a5dd70c3146618063c344e531e6d4b59e379808443ce962b3abd63c5a696973737565645f61741a6553f10067657870697265731a6553ff10";
const TRUST_HEX: &str = "a566736368656d61016776657273696f6e016c72656c656173655f6b65797382a26269644834750f98bd59fcfc667075626c696358208a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5ca2626964486a3803d5f059902a667075626c696358208139770ea87d175f56a35466c34c7ecccb8d8a91b4ee37a25df60f5b8fc9b394697468726573686f6c64016f636f6f7264696e61746f725f6b6579a262696448dbc298251c51321b667075626c69635820fd1724385aa0c75b64fb78cd602fa1d991fdebf76b13c58ed702eac835e9f618";
const ENVELOPE_HEX: &str = "a466736368656d6101646b696e6469646972656374697665677061796c6f616458ada766736368656d6101696465766963655f69646570692d30316a67656e65726174696f6e0366616374696f6e68726f6c6c6261636b686172746966616374a3646e616d657174656d70657261747572652d616c6572746772656c65617365066f6d616e69666573745f736861323536582062c66a7a5dd70c3146618063c344e531e6d4b59e379808443ce962b3abd63c5a696973737565645f61741a6553f10067657870697265731a6553ff106a7369676e61747572657381a2666b65795f696448dbc298251c51321b637369675840720a760f183bfe6590ffe82465b4acccd2295adeda98e20b9346703236999dd998c1ce22431b66f664aec1c3008f67d3a47b73a4d24417fbedb735e2e472b802";
