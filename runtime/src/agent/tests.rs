//! Lifecycle tests with a scripted runner: the flow's behaviour is named in its `flow.json`
//! (`ok`, `fail_start`, `hang_start`, `panic_start`, `errors`, `dies`, `smoke_errors`), so each
//! test stages real slot directories and drives the real agent, state database and links.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use super::*;
use crate::health::Status;
use crate::health::{AppSnapshot, NodeCounters};
use crate::slots::{SlotName, VERSION_FILE, record_for_dir};
use runner::{RunnerError, StartSpec};

#[derive(Debug, Default)]
struct Script {
    starts: Rc<Cell<u32>>,
}

#[derive(Debug)]
struct ScriptFlow {
    behaviour: String,
    muted: bool,
    version: String,
    polls: Cell<u64>,
}

impl FlowRunner for Script {
    type Flow = ScriptFlow;

    async fn start(&mut self, spec: StartSpec<'_>) -> Result<ScriptFlow, RunnerError> {
        self.starts.set(self.starts.get() + 1);
        let path = spec.slot_dir.join(&spec.record.flow);
        let text =
            std::fs::read_to_string(&path).map_err(|source| RunnerError::Read { path, source })?;
        let behaviour = text.trim().to_string();
        match behaviour.as_str() {
            "fail_start" => {
                return Err(RunnerError::Start(floe_flow::EngineError::Start {
                    node: "n1".into(),
                    message: "bad config".into(),
                }));
            }
            "hang_start" => std::future::pending::<()>().await,
            "panic_start" => panic!("node n2 exploded"),
            _ => {}
        }
        Ok(ScriptFlow {
            behaviour,
            muted: spec.muted,
            version: spec.record.version.clone(),
            polls: Cell::new(0),
        })
    }
}

impl RunningFlow for ScriptFlow {
    async fn inject(&self, _node: &str, _payload: serde_json::Value) -> Result<(), RunnerError> {
        Ok(())
    }

    fn snapshot(&self) -> AppSnapshot {
        let n = self.polls.get() + 1;
        self.polls.set(n);
        let (errors, running) = match self.behaviour.as_str() {
            "errors" if !self.muted => (n * 5, true),
            "smoke_errors" if self.muted => (n, true),
            "dies" if !self.muted => (0, n < 3),
            _ => (0, true),
        };
        AppSnapshot {
            running,
            stopped_reason: (!running).then(|| "node n2 panicked".to_string()),
            version: Some(self.version.clone()),
            nodes: vec![NodeCounters {
                id: "n1".into(),
                received: n * 10,
                errors,
                restarts: 0,
                p95: Some(Duration::from_micros(1500)),
            }],
        }
    }

    async fn stop(self, _deadline: Duration) {}
}

fn staged(root: &Path, version: &str, behaviour: &str) -> PathBuf {
    let src = root.join(format!("src-{version}"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("flow.json"), behaviour).unwrap();
    let rec = record_for_dir(&src, version, Vec::new()).unwrap();
    std::fs::write(src.join(VERSION_FILE), serde_json::to_vec(&rec).unwrap()).unwrap();
    src
}

fn config(data: &Path) -> Config {
    let mut cfg = Config::minimal(data);
    cfg.trial.min_ready = Duration::from_millis(0);
    cfg.trial.start_timeout = Duration::from_millis(200);
    cfg.trial.smoke_timeout = Duration::from_millis(100);
    // These tests drive the lifecycle with unsigned staged directories.
    cfg.dev.allow_unsigned_install = true;
    cfg
}

async fn run_trial(agent: &mut Agent<Script>) -> Outcome {
    for _ in 0..20 {
        if let Some(o) = agent.tick().await.unwrap() {
            return o;
        }
    }
    panic!("trial did not end");
}

async fn installed(root: &Path, version: &str) -> Agent<Script> {
    let mut agent = Agent::open(config(&root.join("data")), Script::default())
        .await
        .unwrap();
    agent
        .install_dir(&staged(root, version, "ok"), "local:test")
        .await
        .unwrap();
    assert!(matches!(
        run_trial(&mut agent).await,
        Outcome::Committed { .. }
    ));
    agent
}

fn actions(agent: &Agent<Script>) -> Vec<String> {
    agent
        .state
        .audit_log(100)
        .unwrap()
        .iter()
        .map(|a| format!("{}:{}", a.action, a.outcome))
        .collect()
}

#[tokio::test(flavor = "current_thread")]
async fn an_unsigned_directory_is_refused_and_audited_unless_the_developer_setting_is_on() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(&tmp.path().join("data"));
    cfg.dev.allow_unsigned_install = false;
    let mut agent = Agent::open(cfg, Script::default()).await.unwrap();
    let err = agent
        .install_dir(&staged(tmp.path(), "1.0", "ok"), "local:uid=1000")
        .await
        .unwrap_err();
    assert!(matches!(err, AgentError::UnsignedRefused(_)), "{err}");
    assert!(
        err.to_string().contains("dev.allow_unsigned_install"),
        "{err}"
    );
    assert_eq!(agent.slots.active().unwrap(), None);
    let last = agent.state.audit_log(1).unwrap().remove(0);
    assert_eq!(
        (last.action.as_str(), last.outcome.as_str()),
        ("install", "refused")
    );
    assert_eq!(last.actor, "local:uid=1000");

    let tmp = tempfile::tempdir().unwrap();
    let agent = installed(tmp.path(), "1.0").await;
    assert!(actions(&agent).contains(&"install:unsigned".to_string()));
}

#[tokio::test(flavor = "current_thread")]
async fn first_install_commits_and_second_goes_to_the_other_slot() {
    let tmp = tempfile::tempdir().unwrap();
    let mut agent = installed(tmp.path(), "1.0").await;
    assert_eq!(agent.lifecycle().last_good, Some(SlotName::Blue));
    assert_eq!(agent.slots.active().unwrap(), Some(SlotName::Blue));
    assert_eq!(
        agent.report().status,
        Status::Degraded,
        "{:?}",
        agent.report()
    );
    agent
        .install_dir(&staged(tmp.path(), "2.0", "ok"), "local:test")
        .await
        .unwrap();
    assert!(agent.on_trial());
    assert_eq!(agent.lifecycle().phase, Phase::Trial);
    let out = run_trial(&mut agent).await;
    assert_eq!(
        out,
        Outcome::Committed {
            slot: SlotName::Green,
            version: "2.0".into()
        }
    );
    assert_eq!(agent.slots.active().unwrap(), Some(SlotName::Green));
    // The previous version is untouched.
    assert_eq!(agent.slots.verify(SlotName::Blue).unwrap().version, "1.0");
    let a = actions(&agent);
    assert!(
        a.ends_with(&[
            "stage:started".into(),
            "stage:ok".into(),
            "smoke:ok".into(),
            "switch:started".into(),
            "switch:ok".into(),
            "commit:ok".into()
        ]),
        "{a:?}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn the_device_report_carries_the_running_flows_p95_latency() {
    let tmp = tempfile::tempdir().unwrap();
    let mut agent = installed(tmp.path(), "1.0").await;
    agent.tick().await.unwrap();
    let key = floe_wire::identity::load_or_generate(&agent.config().data_dir).unwrap();
    let report = agent.device_report(1, &key).unwrap();
    // The script flow's node reports a 1.5 ms p95; the report had carried 0 whatever the flow.
    assert_eq!(report.health.unwrap().p95_us, 1500);
}

async fn rolled_back(behaviour: &str) -> (Agent<Script>, String, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let mut agent = installed(tmp.path(), "1.0").await;
    agent.cfg.trial.min_ready = Duration::from_secs(60);
    agent
        .install_dir(&staged(tmp.path(), "2.0", behaviour), "local:test")
        .await
        .unwrap();
    let reason = if agent.on_trial() {
        match run_trial(&mut agent).await {
            Outcome::RolledBack { slot, reason } => {
                assert_eq!(slot, Some(SlotName::Blue));
                reason
            }
            o => panic!("{behaviour}: expected a rollback, got {o:?}"),
        }
    } else {
        agent.state.audit_log(1).unwrap()[0].detail.clone()
    };
    assert_eq!(agent.slots.active().unwrap(), Some(SlotName::Blue));
    assert_eq!(agent.lifecycle().phase, Phase::Idle);
    assert_eq!(agent.lifecycle().last_good, Some(SlotName::Blue));
    assert_eq!(agent.running_version.as_deref(), Some("1.0"));
    let a = actions(&agent);
    assert_eq!(a.last().map(String::as_str), Some("rollback:ok"), "{a:?}");
    (agent, reason, tmp)
}

// These behaviours pass the muted smoke test (the scripted failures only show live, as a bad
// sensor or broker would) so they exercise the rollback after the switch.

#[tokio::test(flavor = "current_thread")]
async fn version_whose_error_rate_climbs_is_rolled_back() {
    let (_, reason, _t) = rolled_back("errors").await;
    assert!(reason.contains("error rate"), "{reason}");
}

#[tokio::test(flavor = "current_thread")]
async fn version_that_dies_is_rolled_back() {
    let (_, reason, _t) = rolled_back("dies").await;
    assert!(reason.contains("panicked"), "{reason}");
}

#[tokio::test(flavor = "current_thread")]
async fn versions_that_fail_hang_or_panic_at_start_never_pass_the_smoke_test() {
    for (behaviour, want) in [
        ("fail_start", "bad config"),
        ("hang_start", "hung"),
        ("panic_start", "exploded"),
        ("smoke_errors", "failed on"),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let mut agent = installed(tmp.path(), "1.0").await;
        let err = agent
            .install_dir(&staged(tmp.path(), "2.0", behaviour), "local:test")
            .await
            .unwrap_err();
        assert!(
            matches!(err, AgentError::Smoke { .. }),
            "{behaviour}: {err}"
        );
        assert!(err.to_string().contains(want), "{behaviour}: {err}");
        assert_eq!(agent.slots.active().unwrap(), Some(SlotName::Blue));
        assert_eq!(agent.running_version.as_deref(), Some("1.0"));
        assert_eq!(
            actions(&agent).last().map(String::as_str),
            Some("smoke:failed")
        );
        assert_eq!(agent.lifecycle().phase, Phase::Idle);
    }
}

#[tokio::test(flavor = "current_thread")]
async fn crash_loop_on_trial_starts_the_last_known_good() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut agent = installed(tmp.path(), "1.0").await;
    let mut cfg = config(&data);
    cfg.trial.min_ready = Duration::from_secs(3600);
    agent.cfg = cfg.clone();
    agent
        .install_dir(&staged(tmp.path(), "2.0", "ok"), "local:test")
        .await
        .unwrap();
    drop(agent); // A crash: nothing is stopped or persisted.
    for restart in 1..=3 {
        let agent = Agent::open(cfg.clone(), Script::default()).await.unwrap();
        if restart < 3 {
            assert!(agent.on_trial(), "restart {restart}");
            assert_eq!(agent.slots.active().unwrap(), Some(SlotName::Green));
        } else {
            assert!(!agent.on_trial());
            assert_eq!(agent.slots.active().unwrap(), Some(SlotName::Blue));
            assert_eq!(agent.running_version.as_deref(), Some("1.0"));
            let log = agent.state.audit_log(100).unwrap();
            assert!(
                log.iter().any(|e| e.action == "rollback"
                    && e.outcome == "automatic"
                    && e.detail.contains("crash loop")),
                "{log:?}"
            );
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn tampered_trial_slot_is_not_activated_after_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut agent = installed(tmp.path(), "1.0").await;
    agent.cfg.trial.min_ready = Duration::from_secs(3600);
    let cfg = agent.cfg.clone();
    agent
        .install_dir(&staged(tmp.path(), "2.0", "ok"), "local:test")
        .await
        .unwrap();
    drop(agent);
    std::fs::write(data.join("slots/green/flow.json"), "tampered").unwrap();
    let agent = Agent::open(cfg, Script::default()).await.unwrap();
    assert_eq!(agent.slots.active().unwrap(), Some(SlotName::Blue));
    assert_eq!(agent.running_version.as_deref(), Some("1.0"));
}

#[tokio::test(flavor = "current_thread")]
async fn operator_rollback_after_commit_returns_to_the_previous_version() {
    let tmp = tempfile::tempdir().unwrap();
    let mut agent = installed(tmp.path(), "1.0").await;
    agent
        .install_dir(&staged(tmp.path(), "2.0", "ok"), "local:test")
        .await
        .unwrap();
    run_trial(&mut agent).await;
    let out = agent
        .rollback("local:root", "customer complaint")
        .await
        .unwrap();
    assert!(matches!(
        out,
        Outcome::RolledBack {
            slot: Some(SlotName::Blue),
            ..
        }
    ));
    assert_eq!(agent.lifecycle().last_good, Some(SlotName::Blue));
    assert_eq!(agent.running_version.as_deref(), Some("1.0"));
    let last = agent.state.audit_log(1).unwrap().remove(0);
    assert_eq!(last.actor, "local:root");
    assert!(last.detail.contains("customer complaint"));
}

#[tokio::test(flavor = "current_thread")]
async fn install_refused_while_busy_and_bad_staging_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let mut agent = installed(tmp.path(), "1.0").await;
    agent.cfg.trial.min_ready = Duration::from_secs(3600);
    let bad = staged(tmp.path(), "2.0", "ok");
    std::fs::write(bad.join("flow.json"), "changed after hashing").unwrap();
    let err = agent.install_dir(&bad, "local:test").await.unwrap_err();
    assert!(
        matches!(err, AgentError::Slot(SlotError::HashMismatch { .. })),
        "{err}"
    );
    assert_eq!(agent.lifecycle().phase, Phase::Idle);
    agent
        .install_dir(&staged(tmp.path(), "3.0", "ok"), "local:test")
        .await
        .unwrap();
    let err = agent
        .install_dir(&staged(tmp.path(), "4.0", "ok"), "local:test")
        .await
        .unwrap_err();
    assert!(matches!(err, AgentError::Busy("trial")), "{err}");
}

mod bundles {
    use super::*;
    use ed25519_dalek::SigningKey;
    use floe_wire::artifact::{self, BuildSpec, keys};
    use floe_wire::proto::{Fixed, TrustStore, TrustedKey};

    /// Builds a signed bundle of the scripted flow `behaviour` with `release`.
    fn bundle(root: &Path, key: &SigningKey, version: &str, release: u64) -> PathBuf {
        let now = floe_wire::clock::unix_secs();
        let mut spec = BuildSpec::new("flow", version, release, now, now + 3600);
        spec.archs = vec![floe_wire::artifact::native_arch().to_string()];
        let out = root.join(format!("flow-{version}.floe"));
        artifact::build(&spec, b"ok", None, &[key], &out).unwrap();
        out
    }

    #[tokio::test(flavor = "current_thread")]
    async fn signed_bundle_installs_and_older_or_untrusted_ones_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let release_key = SigningKey::from_bytes(&[5u8; 32]);
        let trust = TrustStore::new(
            vec![TrustedKey::new(Fixed(
                release_key.verifying_key().to_bytes(),
            ))],
            TrustedKey::new(Fixed(
                SigningKey::from_bytes(&[6u8; 32])
                    .verifying_key()
                    .to_bytes(),
            )),
        );
        let mut cfg = config(&data);
        keys::write_trust(&cfg.trust_store, &trust).unwrap();
        cfg.arch = floe_wire::artifact::native_arch().to_string();
        let mut agent = Agent::open(cfg, Script::default()).await.unwrap();

        let b2 = bundle(tmp.path(), &release_key, "2.0.0", 20);
        assert_eq!(agent.install_bundle(&b2, "local:test").await.unwrap(), None);
        let out = run_trial(&mut agent).await;
        assert_eq!(
            out,
            Outcome::Committed {
                slot: SlotName::Blue,
                version: "2.0.0".into()
            }
        );
        assert_eq!(agent.slots.verify(SlotName::Blue).unwrap().files.len(), 1);

        // An older release is refused by the anti-rollback check recorded at commit.
        let b1 = bundle(tmp.path(), &release_key, "1.0.0", 10);
        let err = agent.install_bundle(&b1, "local:test").await.unwrap_err();
        assert!(
            matches!(
                err,
                AgentError::Bundle(bundle::BundleInstallError::Refused(_))
            ),
            "{err}"
        );

        // A bundle signed by an unknown key never reaches a slot.
        let stranger = SigningKey::from_bytes(&[7u8; 32]);
        let b3 = bundle(tmp.path(), &stranger, "3.0.0", 30);
        let err = agent.install_bundle(&b3, "local:test").await.unwrap_err();
        assert!(
            matches!(
                err,
                AgentError::Bundle(bundle::BundleInstallError::Verify { .. })
            ),
            "{err}"
        );
        assert_eq!(agent.lifecycle().phase, Phase::Idle);
        assert_eq!(agent.slots.active().unwrap(), Some(SlotName::Blue));
        assert!(
            actions(&agent)
                .iter()
                .filter(|a| *a == "verify:failed")
                .count()
                >= 1
        );
    }
}
