//! Tests of the artifact pipeline: the refusal table, the chunk store, assembly, the release
//! store and the install decision.

use super::*;
use crate::proto::manifest::FLOW_FILE;
use crate::proto::{Action, ArtifactRef, ByteBuf, Digest, Fixed, TrustedKey, cbor};
use ed25519_dalek::SigningKey;
use std::path::{Path, PathBuf};

const NOW: u64 = 1_750_000_000;
const FLOW: &[u8] = br#"{"nodes":[],"connections":[],"variables":[]}"#;

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn trusted(k: &SigningKey) -> TrustedKey {
    TrustedKey::new(Fixed(k.verifying_key().to_bytes()))
}

fn trust() -> TrustStore {
    TrustStore::new(vec![trusted(&key(1)), trusted(&key(2))], trusted(&key(9)))
}

fn facts() -> DeviceFacts {
    DeviceFacts {
        device_id: "pi-01".into(),
        arch: "aarch64".into(),
        device_type: "rpi4".into(),
        runtime_version: "0.1.0".into(),
        free_disk: 1 << 30,
        now: NOW,
    }
}

fn spec(release: u64) -> BuildSpec {
    let mut spec = BuildSpec::new(
        "temperature-alert",
        "1.0.0",
        release,
        NOW - 100,
        NOW + 86_400,
    );
    spec.chunk_size = Some(4096);
    spec.min_runtime = "0.1.0".into();
    spec
}

/// A files directory with a 10 000-byte model and a nested config.
fn files_dir(root: &std::path::Path) -> PathBuf {
    let dir = root.join("files");
    std::fs::create_dir_all(dir.join("conf")).unwrap();
    let model: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(dir.join("model.bin"), model).unwrap();
    std::fs::write(dir.join("conf/app.toml"), b"threshold = 30\n").unwrap();
    dir
}

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    bundle: PathBuf,
    manifest: Manifest,
}

fn fixture(release: u64, signers: &[&SigningKey]) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let files = files_dir(&root);
    let bundle = root.join("a.floe");
    let manifest = build(&spec(release), FLOW, Some(&files), signers, &bundle).unwrap();
    Fixture {
        _dir: dir,
        root,
        bundle,
        manifest,
    }
}

#[test]
fn build_then_verify_round_trip() {
    let f = fixture(3, &[&key(1)]);
    assert_eq!(
        f.manifest
            .files
            .iter()
            .map(|e| e.path.as_str())
            .collect::<Vec<_>>(),
        [FLOW_FILE, "conf/app.toml", "model.bin"]
    );
    assert_eq!(f.manifest.size, FLOW.len() as u64 + 15 + 10_000);
    assert_eq!(f.manifest.chunks.len(), 3);
    let verified = verify_file(&f.bundle, &trust()).unwrap();
    assert_eq!(verified.value, f.manifest);
    install_decision(&verified, &facts(), None, None).unwrap();
    // The bundle is never overwritten.
    assert!(matches!(
        build(&spec(4), FLOW, None, &[&key(1)], &f.bundle),
        Err(BundleError::Build(_))
    ));
}

#[test]
fn without_a_chunk_size_the_build_sizes_chunks_for_its_payload() {
    let dir = tempfile::tempdir().unwrap();
    let files = dir.path().join("files");
    std::fs::create_dir_all(&files).unwrap();
    // 100 MiB of files (sparse, so the test stays cheap): 256 KiB chunks, 400 + 1 of them.
    let model = std::fs::File::create(files.join("model.bin")).unwrap();
    model.set_len(100 << 20).unwrap();
    let mut auto = spec(1);
    auto.chunk_size = None;
    let out = dir.path().join("big.floe");
    let m = build(&auto, FLOW, Some(&files), &[&key(1)], &out).unwrap();
    assert_eq!(m.chunk_size, crate::proto::manifest::chunk_size_for(m.size));
    assert_eq!(m.chunk_size, 256 << 10);
    assert_eq!(m.chunks.len() as u64, m.size.div_ceil(256 << 10));
    verify_file(&out, &trust()).unwrap();
}

#[test]
fn build_refuses_symlinks_and_a_second_flow_json() {
    let dir = tempfile::tempdir().unwrap();
    let files = files_dir(dir.path());
    std::os::unix::fs::symlink("/etc/passwd", files.join("link")).unwrap();
    let err = build(
        &spec(1),
        FLOW,
        Some(&files),
        &[&key(1)],
        &dir.path().join("x.floe"),
    )
    .unwrap_err();
    assert!(err.to_string().contains("symlink"), "{err}");
    assert!(!dir.path().join("x.floe").exists());
    std::fs::remove_file(files.join("link")).unwrap();
    std::fs::write(files.join("flow.json"), b"{}").unwrap();
    let err = build(
        &spec(1),
        FLOW,
        Some(&files),
        &[&key(1)],
        &dir.path().join("x.floe"),
    )
    .unwrap_err();
    assert!(err.to_string().contains("reserved"), "{err}");
}

/// Signs raw bytes as a manifest payload, so that malformed manifests reach the decoder only
/// after their signatures verify.
fn signed_raw(payload: Vec<u8>) -> Vec<u8> {
    let mut envelope = Envelope {
        schema: 1,
        kind: "manifest".into(),
        payload: ByteBuf(payload),
        signatures: vec![],
    };
    envelope.add_signature(&key(1)).unwrap();
    envelope.to_bytes().unwrap()
}

fn manifest_bytes() -> Vec<u8> {
    cbor::encode(&fixture(3, &[&key(1)]).manifest).unwrap()
}

fn find(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap()
}

fn flip_in_file(path: &std::path::Path, offset: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offset] ^= 0x01;
    std::fs::write(path, bytes).unwrap();
}

fn check_bytes(envelope: &[u8]) -> Result<(), String> {
    check_manifest_envelope(envelope, &trust(), &facts(), None, None)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn signed_manifest(mutate: impl FnOnce(&mut Manifest)) -> Vec<u8> {
    let mut manifest = fixture(3, &[&key(1)]).manifest;
    mutate(&mut manifest);
    signed_raw(cbor::encode(&manifest).unwrap())
}

/// Verifies a bundle against the test trust store, with any refusal as its message.
fn verify_text(bundle: &Path) -> Result<(), String> {
    verify_file(bundle, &trust())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Every hostile input of the issue's list is refused with its own error, without a panic,
/// on a thread with a 2 MiB stack.
#[test]
fn refusal_table() {
    type Case = (
        &'static str,
        Box<dyn FnOnce() -> Result<(), String> + Send>,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        (
            "flipped byte in the manifest",
            Box::new(|| {
                let f = fixture(3, &[&key(1)]);
                // The artifact name inside the manifest bytes.
                let at = find(&std::fs::read(&f.bundle).unwrap(), b"temperature-alert");
                flip_in_file(&f.bundle, at);
                verify_text(&f.bundle)
            }),
            "invalid signature for key",
        ),
        (
            "flipped byte in a signature",
            Box::new(|| {
                let f = fixture(3, &[&key(1)]);
                let bytes = std::fs::read(&f.bundle).unwrap();
                let at = find(&bytes, b"csigX@") + 10;
                flip_in_file(&f.bundle, at);
                verify_text(&f.bundle)
            }),
            "invalid signature for key",
        ),
        (
            "flipped byte in a chunk",
            Box::new(|| {
                let f = fixture(3, &[&key(1)]);
                let len = std::fs::metadata(&f.bundle).unwrap().len() as usize;
                flip_in_file(&f.bundle, len - 5000);
                verify_text(&f.bundle)
            }),
            "chunk 1 is corrupt",
        ),
        (
            "signature by an unknown key",
            Box::new(|| {
                let f = fixture(3, &[&key(7)]);
                verify_text(&f.bundle)
            }),
            "signature by unknown key",
        ),
        (
            "one signature counted twice",
            Box::new(|| {
                let f = fixture(3, &[&key(1)]);
                let reader = BundleReader::open(&f.bundle).unwrap();
                let mut envelope = reader.envelope.clone();
                envelope.signatures.push(envelope.signatures[0].clone());
                let mut two_of_two = trust();
                two_of_two.threshold = 2;
                check_manifest_envelope(
                    &envelope.to_bytes().unwrap(),
                    &two_of_two,
                    &facts(),
                    None,
                    None,
                )
                .map(|_| ())
                .map_err(|e| e.to_string())
            }),
            "already counted",
        ),
        (
            "lower release",
            Box::new(|| {
                let verified = verify_file(&fixture(3, &[&key(1)]).bundle, &trust()).unwrap();
                install_decision(&verified, &facts(), Some(5), None).map_err(|e| e.to_string())
            }),
            "release 3 of temperature-alert is lower than installed release 5",
        ),
        (
            "expired manifest",
            Box::new(|| {
                let verified = verify_file(&fixture(3, &[&key(1)]).bundle, &trust()).unwrap();
                let late = DeviceFacts {
                    now: NOW + 86_400,
                    ..facts()
                };
                install_decision(&verified, &late, None, None).map_err(|e| e.to_string())
            }),
            "manifest expired",
        ),
        (
            "manifest created in the future",
            Box::new(|| {
                let verified = verify_file(&fixture(3, &[&key(1)]).bundle, &trust()).unwrap();
                // Created at NOW - 100; a device whose clock is 11 minutes behind refuses it.
                let behind = DeviceFacts {
                    now: NOW - 100 - 601,
                    ..facts()
                };
                install_decision(&verified, &behind, None, None).map_err(|e| e.to_string())
            }),
            "created in the future",
        ),
        (
            "wrong architecture",
            Box::new(|| {
                let verified = verify_file(&fixture(3, &[&key(1)]).bundle, &trust()).unwrap();
                let mips = DeviceFacts {
                    arch: "mips".into(),
                    ..facts()
                };
                install_decision(&verified, &mips, None, None).map_err(|e| e.to_string())
            }),
            "wrong architecture: expected one of [\"aarch64\", \"armv7\", \"x86_64\"], found \"mips\"",
        ),
        (
            "truncated bundle",
            Box::new(|| {
                let f = fixture(3, &[&key(1)]);
                let bytes = std::fs::read(&f.bundle).unwrap();
                std::fs::write(&f.bundle, &bytes[..bytes.len() - 1]).unwrap();
                verify_text(&f.bundle)
            }),
            "truncated bundle",
        ),
        (
            "array length bomb",
            Box::new(|| check_bytes(&hex::decode("9BFFFFFFFFFFFFFFFF").unwrap())),
            "array at byte 0 claims 18446744073709551615 bytes or items",
        ),
        (
            "byte string length bomb",
            Box::new(|| check_bytes(&hex::decode("5BFFFFFFFFFFFFFFFF").unwrap())),
            "byte string at byte 0 claims 18446744073709551615",
        ),
        (
            "signed length bomb",
            Box::new(|| check_bytes(&signed_raw(hex::decode("5BFFFFFFFFFFFFFFFF").unwrap()))),
            "payload decode: byte string at byte 0 claims",
        ),
        (
            "100 000 nested arrays",
            Box::new(|| {
                let mut deep = vec![0x81u8; 100_000];
                deep.push(0);
                check_bytes(&signed_raw(deep))
            }),
            "nesting deeper than 16",
        ),
        (
            "indefinite length without break",
            Box::new(|| {
                let mut bytes = manifest_bytes();
                bytes[0] = 0xbf;
                check_bytes(&signed_raw(bytes))
            }),
            "an indefinite-length item at byte 0",
        ),
        (
            "tag around a field",
            Box::new(|| {
                let mut bytes = manifest_bytes();
                let at = find(&bytes, b"dnameq") + 5;
                bytes.insert(at, 0xc0);
                check_bytes(&signed_raw(bytes))
            }),
            "a tag at byte",
        ),
        (
            "duplicate map key",
            Box::new(|| {
                let mut bytes = manifest_bytes();
                bytes[0] += 1;
                bytes.extend_from_slice(b"\x66schema\x01");
                check_bytes(&signed_raw(bytes))
            }),
            "duplicate map key \"schema\"",
        ),
        (
            "non-minimal integer",
            Box::new(|| {
                let mut bytes = manifest_bytes();
                let at = find(&bytes, b"grelease") + 8;
                assert_eq!(bytes[at], 3);
                bytes.splice(at..=at, [0x18, 0x03]);
                check_bytes(&signed_raw(bytes))
            }),
            "non-minimal integer or length encoding",
        ),
        (
            "file path with ../",
            Box::new(|| {
                check_bytes(&signed_manifest(|m| {
                    m.files[1].path = "../../etc/cron.d/x".into()
                }))
            }),
            "component that could escape the target",
        ),
        (
            "absolute file path",
            Box::new(|| check_bytes(&signed_manifest(|m| m.files[1].path = "/etc/passwd".into()))),
            "is absolute",
        ),
        (
            "file path with a NUL byte",
            Box::new(|| {
                check_bytes(&signed_manifest(|m| {
                    m.files[1].path = "conf/a\0.toml".into()
                }))
            }),
            "contains a NUL byte",
        ),
    ];
    // Two cases may share a message only when they expect the same one (a flipped manifest
    // byte and a flipped signature byte are both, truthfully, an invalid signature).
    let mut messages: std::collections::HashMap<String, &str> = std::collections::HashMap::new();
    for (name, run, expected) in cases {
        let outcome = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(run)
            .unwrap()
            .join()
            .unwrap_or_else(|_| panic!("{name}: panicked"));
        let message = outcome.err().unwrap_or_else(|| panic!("{name}: accepted"));
        assert!(
            message.contains(expected),
            "{name}: {message:?} does not contain {expected:?}"
        );
        if let Some(other) = messages.insert(message.clone(), expected) {
            assert_eq!(
                other, expected,
                "{name}: message {message:?} is not distinct"
            );
        }
    }
}

#[test]
fn import_resumes_and_assembles() {
    let f = fixture(3, &[&key(1)]);
    let store = ChunkStore::open(&f.root.join("data")).unwrap();
    assert_eq!(store.missing(&f.manifest), f.manifest.chunks);
    // A partial download: only the second chunk is held.
    let bytes = std::fs::read(&f.bundle).unwrap();
    let payload = &bytes[bytes.len() - f.manifest.size as usize..];
    let (start, end) = f.manifest.chunk_range(1);
    store
        .put(
            &f.manifest.chunks[1],
            &payload[start as usize..end as usize],
        )
        .unwrap();
    assert_eq!(
        store.missing(&f.manifest),
        vec![f.manifest.chunks[0], f.manifest.chunks[2]]
    );
    // Bytes that do not match their name are refused.
    assert!(matches!(
        store.put(&f.manifest.chunks[0], b"nope"),
        Err(StoreError::HashMismatch { .. })
    ));

    import(&f.bundle, &trust(), &store).unwrap();
    assert!(store.missing(&f.manifest).is_empty());
    let target = f.root.join("slot");
    assemble(&f.manifest, &store, &target).unwrap();
    assert_eq!(std::fs::read(target.join("flow.json")).unwrap(), FLOW);
    assert_eq!(
        std::fs::read(target.join("conf/app.toml")).unwrap(),
        b"threshold = 30\n"
    );
    assert_eq!(
        std::fs::metadata(target.join("model.bin")).unwrap().len(),
        10_000
    );
    assert!(matches!(
        assemble(&f.manifest, &store, &target),
        Err(StoreError::Exists(_))
    ));
}

#[test]
fn assemble_refuses_escapes_and_bad_files_and_leaves_nothing() {
    let f = fixture(3, &[&key(1)]);
    let store = ChunkStore::open(&f.root.join("data")).unwrap();
    import(&f.bundle, &trust(), &store).unwrap();
    for bad in ["../escape", "/abs", "a\0b", "conf/../../x"] {
        let mut m = f.manifest.clone();
        m.files[1].path = bad.into();
        let target = f.root.join("t1");
        let err = assemble(&m, &store, &target).unwrap_err();
        assert!(matches!(err, StoreError::Path(_)), "{bad}: {err}");
        assert!(!target.exists());
    }
    // A file whose digest does not match: refused, and no target directory appears.
    let mut m = f.manifest.clone();
    m.files[1].sha256 = Digest::of(b"other");
    let target = f.root.join("t2");
    assert!(matches!(
        assemble(&m, &store, &target),
        Err(StoreError::File { .. })
    ));
    assert!(!target.exists());
    let leftovers: Vec<_> = std::fs::read_dir(&f.root)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // A symlinked directory on the way is never followed.
    let root = f.root.join("sym");
    std::fs::create_dir(&root).unwrap();
    std::os::unix::fs::symlink("/tmp", root.join("conf")).unwrap();
    assert!(matches!(
        store::tests_support::safe_parent(&root, "conf/app.toml"),
        Err(StoreError::Path(_))
    ));
}

#[test]
fn store_verify_and_gc() {
    let f = fixture(3, &[&key(1)]);
    let data = f.root.join("data");
    let store = ChunkStore::open(&data).unwrap();
    import(&f.bundle, &trust(), &store).unwrap();
    let extra = b"an orphan chunk";
    store.put(&Digest::of(extra), extra).unwrap();
    // Damage one chunk on disk.
    let victim = f.manifest.chunks[2].to_hex();
    let path = data.join("chunks").join(&victim[..2]).join(&victim);
    std::fs::write(&path, b"rot").unwrap();
    assert!(matches!(
        store.get(&f.manifest.chunks[2]),
        Err(StoreError::HashMismatch { .. })
    ));
    let report = store.verify().unwrap();
    assert_eq!(report.good, 3);
    assert_eq!(report.corrupt, vec![f.manifest.chunks[2]]);
    assert_eq!(store.missing(&f.manifest), vec![f.manifest.chunks[2]]);

    let keep = store::referenced([&f.manifest]);
    let gc = store.gc(&keep).unwrap();
    assert_eq!((gc.kept, gc.removed, gc.freed), (2, 1, extra.len() as u64));
    assert!(!store.has(&Digest::of(extra)));
    assert!(store.get(&f.manifest.chunks[0]).unwrap().is_some());
}

fn rollback_directive(
    release: u64,
    digest: Digest,
    action: Action,
) -> crate::proto::Verified<Directive> {
    let directive = Directive {
        schema: 1,
        device_id: "pi-01".into(),
        generation: 9,
        action,
        artifact: ArtifactRef {
            name: "temperature-alert".into(),
            release,
            manifest_sha256: digest,
        },
        issued_at: NOW - 10,
        expires: NOW + 600,
        vars: Default::default(),
        secret_vars: Default::default(),
    };
    let envelope = Envelope::sign(&directive, &[&key(9)]).unwrap();
    trust().verify_coordinator(&envelope).unwrap()
}

#[test]
fn install_decision_refusals_say_expected_and_found() {
    let f = fixture(3, &[&key(1)]);
    let verified = verify_file(&f.bundle, &trust()).unwrap();
    let mut typed = verified.clone();
    typed.value.device_types = vec!["jetson-nano".into()];
    assert_eq!(
        install_decision(&typed, &facts(), None, None),
        Err(Refusal::DeviceType {
            expected: vec!["jetson-nano".into()],
            found: "rpi4".into()
        })
    );
    let old = DeviceFacts {
        runtime_version: "0.0.9".into(),
        ..facts()
    };
    assert_eq!(
        install_decision(&verified, &old, None, None),
        Err(Refusal::RuntimeTooOld {
            expected: "0.1.0".into(),
            found: "0.0.9".into()
        })
    );
    let size = f.manifest.size;
    let tight = DeviceFacts {
        free_disk: 2 * size,
        ..facts()
    };
    assert_eq!(
        install_decision(&verified, &tight, None, None),
        Err(Refusal::DiskSpace {
            expected: 2 * size,
            found: 2 * size
        })
    );
    install_decision(
        &verified,
        &DeviceFacts {
            free_disk: 2 * size + 1,
            ..facts()
        },
        None,
        None,
    )
    .unwrap();

    // A rollback directive lifts anti-rollback only for this device, manifest and time.
    let good = rollback_directive(3, verified.digest, Action::Rollback);
    install_decision(&verified, &facts(), Some(5), Some(&good)).unwrap();
    let other_manifest = rollback_directive(3, Digest::of(b"x"), Action::Rollback);
    assert!(matches!(
        install_decision(&verified, &facts(), Some(5), Some(&other_manifest)),
        Err(Refusal::Directive { .. })
    ));
    let elsewhere = DeviceFacts {
        device_id: "pi-02".into(),
        ..facts()
    };
    assert!(matches!(
        install_decision(&verified, &elsewhere, Some(5), Some(&good)),
        Err(Refusal::Directive { .. })
    ));
    let later = DeviceFacts {
        now: NOW + 601,
        ..facts()
    };
    assert!(matches!(
        install_decision(&verified, &later, Some(5), Some(&good)),
        Err(Refusal::Directive { .. })
    ));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// The fuzz targets' entry points, driven by proptest so they run in every `cargo test`.
    #[test]
    fn fuzz_smoke_pipeline(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..2048)) {
        let _ = check_manifest_envelope(&bytes, &trust(), &facts(), None, None);
        let _ = check_manifest_envelope(&signed_raw(bytes.clone()), &trust(), &facts(), Some(2), None);
        let _ = cbor::decode_canonical::<Manifest>(&bytes, crate::proto::manifest::MAX_MANIFEST_BYTES);
    }
}

#[test]
fn the_native_arch_is_named_as_manifests_name_it() {
    let arch = super::native_arch();
    if cfg!(target_arch = "arm") {
        assert!(matches!(arch, "armv7" | "armv6"), "{arch}");
    } else {
        assert_eq!(arch, std::env::consts::ARCH);
    }
}
