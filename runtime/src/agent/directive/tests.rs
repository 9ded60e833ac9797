#![allow(clippy::unwrap_used, clippy::expect_used)]
use super::*;
use crate::agent::engine::EngineRunner;
use crate::config::Config;
use ed25519_dalek::SigningKey;
use floe_wire::artifact::{BuildSpec, BundleReader, build};
use floe_wire::clock::unix_secs;
use floe_wire::proto::directive::DIRECTIVE_SCHEMA;
use floe_wire::proto::report::POST_SCHEMA;
use floe_wire::proto::{ArtifactRef, ByteBuf, Digest, TrustedKey, open_report};
use floe_wire::proto::{Fixed, Progress};

struct Keys {
    release: SigningKey,
    coordinator: SigningKey,
    rogue: SigningKey,
}

fn keys() -> Keys {
    Keys {
        release: SigningKey::from_bytes(&[1; 32]),
        coordinator: SigningKey::from_bytes(&[2; 32]),
        rogue: SigningKey::from_bytes(&[3; 32]),
    }
}

fn public(k: &SigningKey) -> TrustedKey {
    TrustedKey::new(Fixed(k.verifying_key().to_bytes()))
}

/// A signed manifest envelope and its digest, signed by `key`.
fn manifest(dir: &std::path::Path, key: &SigningKey, release: u64) -> (Vec<u8>, Digest) {
    let now = unix_secs();
    let spec = BuildSpec::new("temp", "1.0.0", release, now, now + 3600);
    let out = dir.join(format!(
        "m{release}-{}.floe",
        key.verifying_key().as_bytes()[0]
    ));
    build(
        &spec,
        b"{\"nodes\":[],\"connections\":[]}",
        None,
        &[key],
        &out,
    )
    .unwrap();
    let env = BundleReader::open(&out).unwrap().envelope_bytes;
    let digest = Digest::of(&Envelope::from_bytes::<Manifest>(&env).unwrap().payload.0);
    (env, digest)
}

#[allow(clippy::too_many_arguments)]
fn post(
    key: &SigningKey,
    device: &str,
    generation: u64,
    action: Action,
    digest: Digest,
    manifest: &[u8],
    expires_in: i64,
) -> Vec<u8> {
    let now = unix_secs();
    let d = Directive {
        schema: DIRECTIVE_SCHEMA,
        device_id: device.into(),
        generation,
        action,
        artifact: ArtifactRef {
            name: "temp".into(),
            release: 1,
            manifest_sha256: digest,
        },
        issued_at: now - 10,
        expires: now.saturating_add_signed(expires_in),
        vars: Default::default(),
        secret_vars: Default::default(),
    };
    DirectivePost {
        schema: POST_SCHEMA,
        directive: ByteBuf(Envelope::sign(&d, &[key]).unwrap().to_bytes().unwrap()),
        manifest: ByteBuf(manifest.to_vec()),
    }
    .to_bytes()
    .unwrap()
}

async fn agent(dir: &std::path::Path, k: &Keys) -> Agent<EngineRunner> {
    let cfg = Config::minimal(&dir.join("data"));
    let trust = TrustStore::new(vec![public(&k.release)], public(&k.coordinator));
    keys::write_trust(&cfg.trust_store, &trust).unwrap();
    Agent::open(cfg, EngineRunner::default()).await.unwrap()
}

#[tokio::test]
async fn posts_are_verified_in_order_and_refusals_name_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let k = keys();
    let mut a = agent(dir.path(), &k).await;
    let me = a.device().to_string();
    let now = unix_secs();
    let (env, digest) = manifest(dir.path(), &k.release, 1);
    let good = post(&k.coordinator, &me, 1, Action::Commit, digest, &env, 60);
    let accepted = a.check_post(&good, now).unwrap();
    assert_eq!(accepted.directive.value.generation, 1);
    assert_eq!(accepted.manifest.digest, digest);

    let garbage = a.check_post(b"not a post", now).unwrap_err();
    assert!(matches!(garbage, PostRefusal::Decode(_)), "{garbage}");
    let forged = post(&k.rogue, &me, 1, Action::Commit, digest, &env, 60);
    let err = a.check_post(&forged, now).unwrap_err();
    assert!(matches!(err, PostRefusal::Signature(_)), "{err}");
    assert!(!err.is_routine());
    let other = post(
        &k.coordinator,
        "someone-else",
        1,
        Action::Commit,
        digest,
        &env,
        60,
    );
    let err = a.check_post(&other, now).unwrap_err();
    assert!(err.is_routine(), "{err}");
    let expired = post(&k.coordinator, &me, 1, Action::Commit, digest, &env, -1);
    let err = a.check_post(&expired, now).unwrap_err();
    assert!(err.to_string().contains("expired"), "{err}");
    assert!(!err.is_routine());
    let wrong_digest = post(
        &k.coordinator,
        &me,
        1,
        Action::Commit,
        Digest::of(b"x"),
        &env,
        60,
    );
    let err = a.check_post(&wrong_digest, now).unwrap_err();
    assert!(matches!(err, PostRefusal::ManifestDigest { .. }), "{err}");
    let (rogue_env, rogue_digest) = manifest(dir.path(), &k.rogue, 1);
    let rogue_manifest = post(
        &k.coordinator,
        &me,
        1,
        Action::Commit,
        rogue_digest,
        &rogue_env,
        60,
    );
    let err = a.check_post(&rogue_manifest, now).unwrap_err();
    assert!(matches!(err, PostRefusal::Manifest(_)), "{err}");

    // Refusals that are not routine are audited, by the coordinator actor.
    a.audit_refusal(&a.check_post(&forged, now).unwrap_err())
        .unwrap();
    let log = a.state.audit_log(5).unwrap();
    let last = log.last().unwrap();
    assert_eq!(
        (last.actor.as_str(), last.outcome.as_str()),
        ("coordinator", "refused")
    );
    assert!(last.detail.contains("signature"), "{}", last.detail);

    // Nothing was committed, so the commit fails; the generation is still applied and
    // survives a reopen, after which the same generation is routine and an older one is
    // a refusal worth auditing.
    let step = a.begin_directive(accepted).await.unwrap();
    assert!(matches!(step, DirectiveStep::Settled));
    let applied = a.applied().unwrap().unwrap();
    assert_eq!(
        (applied.generation, applied.action, applied.progress),
        (1, Action::Commit, Progress::Failed)
    );
    a.shutdown().await;
    let a = agent_reopen(dir.path()).await;
    let err = a.check_post(&good, now).unwrap_err();
    assert!(err.is_routine(), "{err}");
    let newer = post(&k.coordinator, &me, 2, Action::Commit, digest, &env, 60);
    assert!(a.check_post(&newer, now).is_ok());
    let older = post(&k.coordinator, &me, 0, Action::Commit, digest, &env, 60);
    let err = a.check_post(&older, now).unwrap_err();
    assert!(!err.is_routine(), "{err}");
}

async fn agent_reopen(dir: &std::path::Path) -> Agent<EngineRunner> {
    Agent::open(Config::minimal(&dir.join("data")), EngineRunner::default())
        .await
        .unwrap()
}

#[tokio::test]
async fn rollback_with_nothing_to_return_to_fails_and_keeps_the_permit() {
    let dir = tempfile::tempdir().unwrap();
    let k = keys();
    let mut a = agent(dir.path(), &k).await;
    let me = a.device().to_string();
    let (env, digest) = manifest(dir.path(), &k.release, 1);
    let bytes = post(&k.coordinator, &me, 3, Action::Rollback, digest, &env, 60);
    let accepted = a.check_post(&bytes, unix_secs()).unwrap();
    let permit = accepted.directive_envelope.clone();
    a.begin_directive(accepted).await.unwrap();
    let applied = a.applied().unwrap().unwrap();
    assert_eq!(applied.progress, Progress::Failed);
    assert!(applied.detail.contains("no slot"), "{}", applied.detail);
    assert_eq!(a.state.rollback_permit().unwrap(), Some(permit));
}

#[tokio::test]
async fn the_report_is_self_signed_and_carries_the_applied_directive() {
    let dir = tempfile::tempdir().unwrap();
    let k = keys();
    let mut a = agent(dir.path(), &k).await;
    let me = a.device().to_string();
    let (env, digest) = manifest(dir.path(), &k.release, 1);
    let bytes = post(&k.coordinator, &me, 4, Action::Switch, digest, &env, 60);
    let accepted = a.check_post(&bytes, unix_secs()).unwrap();
    a.begin_directive(accepted).await.unwrap();
    let key = floe_wire::identity::load_or_generate(&a.config().data_dir).unwrap();
    let report = a.device_report(42, &key).unwrap();
    let signed = Envelope::sign(&report, &[&key])
        .unwrap()
        .to_bytes()
        .unwrap();
    let opened = open_report(&signed).unwrap();
    assert_eq!(opened.device_id, me);
    assert_eq!(opened.seq, 42);
    assert_eq!(opened.active, None);
    let applied = opened.applied.unwrap();
    assert_eq!((applied.generation, applied.action), (4, Action::Switch));
    // Nothing was staged, so the switch failed and says why.
    assert_eq!(applied.progress, Progress::Failed);
    assert!(
        applied.detail.contains("stage it first"),
        "{}",
        applied.detail
    );
}

#[tokio::test]
async fn a_stage_interrupted_by_a_restart_resumes_its_fetch() {
    let dir = tempfile::tempdir().unwrap();
    let k = keys();
    let mut a = agent(dir.path(), &k).await;
    let me = a.device().to_string();
    let (env, digest) = manifest(dir.path(), &k.release, 1);
    let bytes = post(&k.coordinator, &me, 5, Action::Stage, digest, &env, 60);
    let accepted = a.check_post(&bytes, unix_secs()).unwrap();
    let DirectiveStep::Fetch { id, .. } = a.begin_directive(accepted).await.unwrap() else {
        panic!("a stage of an artifact the device lacks must fetch");
    };
    let applied = a.applied().unwrap().unwrap();
    assert_eq!(applied.progress, Progress::Working);
    a.shutdown().await;
    // After the restart the same generation is routine traffic, so only resuming it from
    // the stored post gets the fetch going again.
    let mut a = agent_reopen(dir.path()).await;
    assert!(a.check_post(&bytes, unix_secs()).unwrap_err().is_routine());
    let DirectiveStep::Fetch { id: again, post } = a.resume_directive().await.unwrap() else {
        panic!("the interrupted stage was not resumed");
    };
    assert_eq!(again, id);
    assert_eq!(post.directive.value.generation, 5);
    // A fetch that fails ends the stage as failed, with the reason.
    a.finish_stage(&post, Err(FetchError::TimedOut { secs: 7 }))
        .await
        .unwrap();
    let applied = a.applied().unwrap().unwrap();
    assert_eq!(applied.progress, Progress::Failed);
    assert!(
        applied.detail.contains("no complete copy within 7 s"),
        "{}",
        applied.detail
    );
    assert!(matches!(
        a.resume_directive().await.unwrap(),
        DirectiveStep::Settled
    ));
}

#[test]
fn refusal_memory_is_bounded_and_forgets_the_oldest() {
    let mut m = RefusalMemory::default();
    assert!(m.first_time(b"a"));
    assert!(!m.first_time(b"a"));
    for i in 0..REFUSALS_REMEMBERED {
        assert!(m.first_time(&i.to_le_bytes()));
    }
    assert_eq!(m.seen.len(), REFUSALS_REMEMBERED);
    assert!(m.first_time(b"a"), "the oldest entry was forgotten");
}

#[test]
fn details_are_clipped_to_the_report_cap_without_control_characters() {
    let long = "é\n".repeat(MAX_DETAIL_BYTES);
    let c = clip(&long);
    assert!(c.len() <= MAX_DETAIL_BYTES);
    assert!(!c.chars().any(char::is_control));
}

#[tokio::test]
async fn a_stage_whose_secret_does_not_open_here_fails_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let k = keys();
    let mut a = agent(dir.path(), &k).await;
    let me = a.device().to_string();
    let (env, digest) = manifest(dir.path(), &k.release, 1);
    // Sealed to another device's key: the coordinator signed it, but this device cannot open it.
    let other = hex::encode(k.rogue.verifying_key().to_bytes());
    let now = unix_secs();
    let d = Directive {
        schema: DIRECTIVE_SCHEMA,
        device_id: me.clone(),
        generation: 6,
        action: Action::Stage,
        artifact: ArtifactRef {
            name: "temp".into(),
            release: 1,
            manifest_sha256: digest,
        },
        issued_at: now - 10,
        expires: now + 60,
        vars: Default::default(),
        secret_vars: [(
            "token".to_string(),
            floe_wire::proto::sealed::seal(&other, "not-for-me").unwrap(),
        )]
        .into(),
    };
    let bytes = DirectivePost {
        schema: POST_SCHEMA,
        directive: ByteBuf(
            Envelope::sign(&d, &[&k.coordinator])
                .unwrap()
                .to_bytes()
                .unwrap(),
        ),
        manifest: ByteBuf(env.clone()),
    }
    .to_bytes()
    .unwrap();
    let accepted = a.check_post(&bytes, now).unwrap();
    let DirectiveStep::Fetch { post, .. } = a.begin_directive(accepted).await.unwrap() else {
        panic!("a stage of an artifact the device lacks must fetch");
    };
    a.finish_stage(&post, Ok(())).await.unwrap();
    let applied = a.applied().unwrap().unwrap();
    assert_eq!(applied.progress, Progress::Failed);
    assert!(
        applied.detail.contains("secret variable token")
            && applied
                .detail
                .contains("does not open with this device's key"),
        "{}",
        applied.detail
    );
}
