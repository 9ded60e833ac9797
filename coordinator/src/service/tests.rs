//! Tests of the service core in virtual time: enrollment, report handling, a deployment from
//! start to end with signed directives, offline detection, re-signing, and resuming from the
//! database.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::model::{ConfigInput, DeploymentInput, DeviceInput, FlowInput};
use super::*;
use crate::store::Store;
use ed25519_dalek::SigningKey;
use floe_rollout::{Command, DeploymentStatus, DeviceEvent, TargetStatus};
use floe_wire::proto::{
    self, Action, Applied, DeviceReport, Directive, DirectivePost, Envelope, Facts, Fixed,
    HealthLevel, HealthSummary, Progress, SlotInfo, TrustedKey,
};
use std::path::Path;

pub(super) const T0: u64 = 1_800_000_000_000;

pub(super) fn core_at(dir: &Path) -> Core {
    core_with(dir, 20_000)
}

/// A core on `dir` whose engines are snapshotted every `snapshot_every` inputs.
pub(super) fn core_with(dir: &Path, snapshot_every: u64) -> Core {
    let store = Store::open(&dir.join("floe.db")).unwrap();
    let mut config = ServiceConfig::new(dir.to_path_buf());
    config.offline_after = 30_000;
    config.directive_ttl_secs = 600;
    config.snapshot_every = snapshot_every;
    // These tests are about the rollout; the checklist is tested in `preflight_tests`.
    config.preflight.enforce = false;
    Core::new(
        store,
        config,
        SigningKey::from_bytes(&[1; 32]),
        SigningKey::from_bytes(&[2; 32]),
    )
    .unwrap()
}

fn coordinator_key() -> TrustedKey {
    TrustedKey::new(Fixed(
        SigningKey::from_bytes(&[2; 32]).verifying_key().to_bytes(),
    ))
}

fn example() -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/temperature-alert.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

pub(super) struct Dev {
    pub(super) id: String,
    key: SigningKey,
    seq: u64,
    applied: Option<Applied>,
    pub(super) log: Vec<(u64, Action)>,
    token: Option<String>,
    active: Option<SlotInfo>,
    standby: Option<SlotInfo>,
    last_good: Option<SlotInfo>,
    /// Report a 50 % error rate while running this release.
    bad_release: Option<u64>,
    /// Every rollback directive's artifact.
    pub(super) rollbacks: Vec<proto::ArtifactRef>,
    /// Changes every report before it is sent (figures, a missing health summary).
    pub(super) edit: Option<fn(&mut DeviceReport)>,
}

impl Dev {
    /// A device whose key comes from `seed`; its id is the hex of that key, as every device's
    /// is (`_name` only says which one it is in the test).
    pub(super) fn new(_name: &str, seed: u8) -> Dev {
        let key = SigningKey::from_bytes(&[seed; 32]);
        let id = hex::encode(key.verifying_key().to_bytes());
        Dev::claiming(&id, seed)
    }

    /// A device with key `seed` that claims the id `id` (an impostor when it is not its own).
    fn claiming(id: &str, seed: u8) -> Dev {
        Dev {
            id: id.into(),
            key: SigningKey::from_bytes(&[seed; 32]),
            seq: 0,
            applied: None,
            log: Vec::new(),
            token: None,
            active: None,
            standby: None,
            last_good: None,
            bad_release: None,
            rollbacks: Vec::new(),
            edit: None,
        }
    }

    fn public_hex(&self) -> String {
        hex::encode(self.key.verifying_key().to_bytes())
    }

    pub(super) fn report(&mut self) -> DeviceReport {
        self.seq += 1;
        let mut r = DeviceReport {
            schema: 1,
            device_id: self.id.clone(),
            public_key: Fixed(self.key.verifying_key().to_bytes()),
            seq: self.seq,
            facts: Facts {
                device_type: "rpi4".into(),
                arch: "aarch64".into(),
                region: "eu".into(),
                labels: Vec::new(),
                runtime_version: "0.1.0".into(),
            },
            enroll_token: self.token.clone(),
            active: self.active.clone(),
            standby: self.standby.clone(),
            last_known_good: self.last_good.clone(),
            on_trial: false,
            applied: self.applied.clone(),
            health: Some(HealthSummary {
                status: HealthLevel::Healthy,
                flow_running: true,
                error_rate_ppm: if self.bad_release.is_some()
                    && self.active.as_ref().map(|a| a.release) == self.bad_release
                {
                    500_000
                } else {
                    0
                },
                p95_us: 2000,
                memory_kib: 8192,
                restarts: 0,
                system: None,
            }),
        };
        if let Some(edit) = self.edit {
            edit(&mut r);
        }
        r
    }

    /// Applies the current directive if it is newer, then reports.
    pub(super) fn step(&mut self, core: &mut Core, now: u64) {
        if let Some((generation, post)) = core.directive_post(&self.id, now).unwrap() {
            let post = DirectivePost::from_bytes(&post).unwrap();
            let d = proto::open::<Directive>(&post.directive.0, &[coordinator_key()], 1)
                .unwrap()
                .value;
            assert_eq!(d.generation, generation);
            assert!(d.expires > now / 1000);
            if self
                .applied
                .as_ref()
                .is_none_or(|a| a.generation < generation)
            {
                self.log.push((generation, d.action));
                let other = match self.active.as_ref().map(|s| s.slot.as_str()) {
                    Some("blue") => "green",
                    _ => "blue",
                };
                match d.action {
                    Action::Stage => {
                        self.standby = Some(SlotInfo {
                            slot: other.into(),
                            name: d.artifact.name.clone(),
                            release: d.artifact.release,
                            version: format!("1.{}.0", d.artifact.release),
                        })
                    }
                    Action::Switch | Action::Rollback => {
                        if d.action == Action::Rollback {
                            self.rollbacks.push(d.artifact.clone());
                        }
                        std::mem::swap(&mut self.active, &mut self.standby);
                    }
                    Action::Commit => self.last_good = self.active.clone(),
                }
                self.applied = Some(Applied {
                    generation,
                    action: d.action,
                    name: d.artifact.name.clone(),
                    release: d.artifact.release,
                    progress: Progress::Done,
                    detail: String::new(),
                });
            }
        }
        let r = self.report();
        core.device_report(r, now).unwrap();
    }
}

pub(super) fn published(core: &mut Core, now: u64) -> String {
    let flow = core
        .create_flow(
            FlowInput {
                name: "Temperature Alert".into(),
                description: String::new(),
                tags: vec![],
                definition: example(),
            },
            now,
        )
        .unwrap();
    core.publish_flow(&flow.id, now).unwrap();
    flow.id
}

pub(super) fn allow(core: &mut Core, dev: &mut Dev, now: u64) {
    core.allow_device(
        DeviceInput {
            id: dev.id.clone(),
            public_key: dev.public_hex(),
            device_type: Some("rpi4".into()),
            region: Some("eu".into()),
            labels: Default::default(),
        },
        now,
    )
    .unwrap();
    let r = dev.report();
    core.device_report(r, now).unwrap();
}

fn deploy(core: &mut Core, flow: &str, devs: &[Dev], strategy: &str, now: u64) -> String {
    let id = core
        .create_deployment(
            DeploymentInput {
                flow_id: flow.into(),
                strategy: strategy.into(),
                target_devices: Some(devs.iter().map(|d| d.id.clone()).collect()),
                selector: None,
                config: ConfigInput {
                    batch_size: Some(1),
                    batch_delay: Some("2s".into()),
                    ..ConfigInput::default()
                },
            },
            now,
        )
        .unwrap();
    core.command(&id, Command::Start, now).unwrap();
    id
}

pub(super) fn status(core: &Core, id: &str) -> DeploymentStatus {
    core.with_deployment(id, |_, e| e.status()).unwrap()
}

/// Steps devices and the clock (500 ms a round) until the deployment finishes.
fn run(core: &mut Core, devs: &mut [Dev], id: &str, now: &mut u64) {
    for _ in 0..2000 {
        for d in devs.iter_mut() {
            d.step(core, *now);
        }
        *now += 500;
        core.tick(*now);
        if status(core, id).is_terminal() {
            // One more round so devices carry out the final commits.
            for d in devs.iter_mut() {
                d.step(core, *now);
            }
            return;
        }
    }
    panic!("the deployment did not finish");
}

#[test]
fn events_map_report_progress_to_engine_inputs() {
    use DeviceEvent::*;
    assert_eq!(events_for(Action::Stage, Progress::Done), [Staged]);
    assert_eq!(events_for(Action::Stage, Progress::Working), []);
    assert_eq!(events_for(Action::Switch, Progress::Working), [Switched]);
    assert_eq!(
        events_for(Action::Switch, Progress::Done),
        [Switched, Healthy]
    );
    assert_eq!(events_for(Action::Commit, Progress::Done), []);
    assert_eq!(events_for(Action::Rollback, Progress::Done), [RolledBack]);
    assert_eq!(events_for(Action::Stage, Progress::Failed), [Failed]);
    assert_eq!(
        events_for(Action::Switch, Progress::RolledBack),
        [RolledBack]
    );
    let h = health_input(&HealthSummary {
        status: HealthLevel::Degraded,
        flow_running: true,
        error_rate_ppm: 25_000,
        p95_us: 1_500,
        memory_kib: 2048,
        restarts: 2,
        system: None,
    });
    assert!((h.error_rate - 0.025).abs() < 1e-6);
    assert!((h.p95_ms - 1.5).abs() < 1e-6);
    assert!((h.memory_mb - 2.0).abs() < 1e-6);
    assert_eq!(h.restarts, 2);
}

#[test]
fn config_errors_name_the_field() {
    use floe_rollout::Strategy;
    let bad = ConfigInput {
        canary_delay: Some("soon".into()),
        ..ConfigInput::default()
    };
    match strategy_config(Strategy::Canary, &bad) {
        Err(ServiceError::Validation { field, .. }) => assert_eq!(field, "config.canary_delay"),
        other => panic!("{other:?}"),
    }
    let c = strategy_config(
        Strategy::Rolling,
        &ConfigInput {
            batch_size: Some(3),
            batch_delay: Some("90s".into()),
            ..ConfigInput::default()
        },
    )
    .unwrap();
    assert_eq!(
        (c.batch_size, c.batch_delay, c.max_parallel),
        (3, 90_000, 3)
    );
    assert_eq!(config_json(&c).batch_delay, "1m30s");
}

#[test]
fn enrollment_needs_a_token_or_the_allowlist_and_keys_stay_bound() {
    let tmp = tempfile::tempdir().unwrap();
    let mut core = core_at(tmp.path());
    let mut stranger = Dev::new("dev_x", 9);
    let r = stranger.report();
    let err = core.device_report(r, T0).unwrap_err();
    assert!(
        matches!(err, ServiceError::Refused(ref m) if m.contains("not enrolled")),
        "{err}"
    );

    // A one-time token enrolls once.
    let (token, _) = core.create_token(60_000, T0).unwrap();
    stranger.token = Some(token.clone());
    let r = stranger.report();
    core.device_report(r, T0).unwrap();
    assert!(core.device(&stranger.id).unwrap().enrolled_at.is_some());
    let mut other = Dev::new("dev_y", 10);
    other.token = Some(token);
    let r = other.report();
    assert!(matches!(
        core.device_report(r, T0),
        Err(ServiceError::Refused(_))
    ));
    // An expired token does not enroll.
    let (late, _) = core.create_token(1_000, T0).unwrap();
    other.token = Some(late);
    let r = other.report();
    assert!(matches!(
        core.device_report(r, T0 + 5_000),
        Err(ServiceError::Refused(_))
    ));

    // The allowlist enrolls on the first signed report; another key for the same id is refused.
    let mut listed = Dev::new("dev_z", 11);
    allow(&mut core, &mut listed, T0);
    assert!(core.device(&listed.id).unwrap().enrolled_at.is_some());
    let mut impostor = Dev::claiming(&listed.id, 12);
    impostor.seq = 100;
    let r = impostor.report();
    assert!(
        matches!(core.device_report(r, T0), Err(ServiceError::Refused(ref m)) if m.contains("not the hex of the key")),
    );
    // A leaked token does not let an attacker's key take a victim's id either (the id is the
    // hex of the key on every path).
    let (token, _) = core.create_token(60_000, T0).unwrap();
    let victim = Dev::new("victim", 13);
    let mut squatter = Dev::claiming(&victim.id, 14);
    squatter.token = Some(token);
    let r = squatter.report();
    assert!(
        matches!(core.device_report(r, T0), Err(ServiceError::Refused(ref m)) if m.contains("not the hex of the key")),
    );
    assert!(core.device(&victim.id).is_err());

    // A report not newer than the last is ignored.
    let mut old = listed.report();
    old.seq = 1;
    old.facts.region = "us".into();
    core.device_report(old, T0 + 1).unwrap();
    assert_eq!(core.device(&listed.id).unwrap().region, "eu");
    let entries = core
        .audit_entries(&crate::store::AuditFilter {
            limit: 100,
            device_id: Some(listed.id.clone()),
            deployment_id: None,
            before: None,
        })
        .unwrap();
    assert!(entries.iter().any(|e| e.outcome == "refused"));
}

#[test]
fn a_deployment_runs_to_completion_with_growing_generations_across_deployments() {
    let tmp = tempfile::tempdir().unwrap();
    let mut core = core_at(tmp.path());
    let mut now = T0;
    let flow = published(&mut core, now);
    let mut devs = vec![Dev::new("a", 21), Dev::new("b", 22), Dev::new("c", 23)];
    for d in devs.iter_mut() {
        allow(&mut core, d, now);
    }
    let dep = deploy(&mut core, &flow, &devs, "rolling", now);
    // A device follows one deployment at a time.
    let again = core.create_deployment(
        DeploymentInput {
            flow_id: flow.clone(),
            strategy: "rolling".into(),
            target_devices: Some(vec![devs[0].id.clone()]),
            selector: None,
            config: ConfigInput::default(),
        },
        now,
    );
    assert!(matches!(again, Err(ServiceError::Conflict(_))), "{again:?}");
    run(&mut core, &mut devs, &dep, &mut now);
    assert_eq!(status(&core, &dep), DeploymentStatus::Completed);
    for d in &devs {
        let actions: Vec<Action> = d.log.iter().map(|(_, a)| *a).collect();
        assert_eq!(
            actions,
            [Action::Stage, Action::Switch, Action::Commit],
            "{}",
            d.id
        );
        // Every directive sent and the device's success are in the audit log.
        let lines = core
            .audit_entries(&crate::store::AuditFilter {
                limit: 100,
                deployment_id: Some(dep.clone()),
                device_id: Some(d.id.clone()),
                before: None,
            })
            .unwrap();
        let mut seen: Vec<(&str, &str)> = lines
            .iter()
            .map(|l| (l.action.as_str(), l.outcome.as_str()))
            .collect();
        seen.reverse();
        assert_eq!(
            seen,
            [
                ("directive", "stage"),
                ("directive", "switch"),
                ("directive", "commit"),
                ("target.status", "success")
            ],
            "{}",
            d.id
        );
    }
    // Finished deployments refuse commands with a conflict.
    assert!(matches!(
        core.command(&dep, Command::Resume, now),
        Err(ServiceError::Conflict(_))
    ));
    assert!(core.outbox(now).unwrap().is_empty());

    // The next version deploys with generations above the first deployment's.
    let v2 = core.new_version(&flow, now).unwrap();
    core.publish_flow(&v2.id, now).unwrap();
    let last: Vec<u64> = devs.iter().map(|d| d.log.last().unwrap().0).collect();
    let dep2 = deploy(&mut core, &v2.id, &devs, "all-at-once", now);
    let outbox = core.outbox(now).unwrap();
    assert_eq!(outbox.len(), 3);
    for (o, before) in outbox.iter().zip(&last) {
        assert!(o.generation > *before, "{} <= {before}", o.generation);
    }
    run(&mut core, &mut devs, &dep2, &mut now);
    assert_eq!(status(&core, &dep2), DeploymentStatus::Completed);
    assert_eq!(core.artifact_blobs().unwrap().len(), 2);
}

#[test]
fn silent_devices_go_offline_and_come_back() {
    let tmp = tempfile::tempdir().unwrap();
    let mut core = core_at(tmp.path());
    let now = T0;
    let flow = published(&mut core, now);
    let mut devs = vec![Dev::new("a", 31), Dev::new("b", 32)];
    for d in devs.iter_mut() {
        allow(&mut core, d, now);
    }
    let dep = deploy(&mut core, &flow, &devs, "all-at-once", now);
    core.tick(now + 31_000);
    assert!(core.device(&devs[0].id).unwrap().offline);
    let target = core
        .with_deployment(&dep, |_, e| e.target_status(0))
        .unwrap();
    assert_eq!(target, Some(TargetStatus::Offline));
    let r = devs[0].report();
    core.device_report(r, now + 32_000).unwrap();
    assert!(!core.device(&devs[0].id).unwrap().offline);
    assert!(core.online(core.device(&devs[0].id).unwrap()));
    let target = core
        .with_deployment(&dep, |_, e| e.target_status(0))
        .unwrap();
    assert_ne!(target, Some(TargetStatus::Offline));
}

#[test]
fn a_tick_marks_a_bounded_batch_of_silent_devices_offline_each_audited() {
    let tmp = tempfile::tempdir().unwrap();
    let mut core = core_at(tmp.path());
    let now = T0;
    let n = OFFLINE_BATCH + 3;
    let mut devs: Vec<Dev> = (0..n)
        .map(|i| {
            let mut seed = [0u8; 32];
            seed[..8].copy_from_slice(&(i as u64 + 1000).to_le_bytes());
            let key = SigningKey::from_bytes(&seed);
            Dev {
                id: hex::encode(key.verifying_key().to_bytes()),
                key,
                ..Dev::new(&format!("d{i:05}"), 0)
            }
        })
        .collect();
    let inputs = devs
        .iter()
        .map(|d| DeviceInput {
            id: d.id.clone(),
            public_key: d.public_hex(),
            device_type: Some("rpi4".into()),
            region: Some("eu".into()),
            labels: Default::default(),
        })
        .collect::<Vec<_>>();
    for chunk in inputs.chunks(1000) {
        core.allow_devices(chunk.to_vec(), now).unwrap();
    }
    let reports: Vec<DeviceReport> = devs.iter_mut().map(Dev::report).collect();
    for outcome in core.ingest(reports, now).unwrap() {
        outcome.unwrap();
    }
    let offline = |core: &Core| core.devices().filter(|d| d.offline).count();
    // Silent for exactly the limit: still online.
    core.tick(now + 30_000);
    assert_eq!(offline(&core), 0);
    core.tick(now + 30_001);
    assert_eq!(
        offline(&core),
        OFFLINE_BATCH,
        "one tick marks at most a batch"
    );
    core.tick(now + 31_001);
    assert_eq!(offline(&core), n);
    // Every device has its own audit line, and the state is on disk: a reopened core agrees.
    let lines = core
        .audit_entries(&crate::store::AuditFilter {
            limit: 10_000,
            ..Default::default()
        })
        .unwrap();
    let audited: std::collections::BTreeSet<_> = lines
        .iter()
        .filter(|a| a.action == "device.offline")
        .filter_map(|a| a.device_id.clone())
        .collect();
    assert_eq!(audited.len(), n);
    drop(core);
    let core = core_at(tmp.path());
    assert_eq!(offline(&core), n);
}

#[test]
fn old_directives_are_re_signed_with_the_same_generation() {
    let tmp = tempfile::tempdir().unwrap();
    let mut core = core_at(tmp.path());
    let now = T0;
    let flow = published(&mut core, now);
    let mut devs = vec![Dev::new("a", 41)];
    allow(&mut core, &mut devs[0], now);
    deploy(&mut core, &flow, &devs, "all-at-once", now);
    let a = devs[0].id.clone();
    let (g1, p1) = core.directive_post(&a, now).unwrap().unwrap();
    let (g2, p2) = core.directive_post(&a, now + 200_000).unwrap().unwrap();
    assert_eq!((g1, &p1), (g2, &p2), "younger than half the TTL: unchanged");
    let (g3, p3) = core.directive_post(&a, now + 400_000).unwrap().unwrap();
    assert_eq!(g3, g1);
    assert_ne!(p3, p1);
    let d = |p: &[u8]| {
        let post = DirectivePost::from_bytes(p).unwrap();
        proto::open::<Directive>(&post.directive.0, &[coordinator_key()], 1)
            .unwrap()
            .value
    };
    assert_eq!(d(&p3).issued_at, (now + 400_000) / 1000);
    assert_eq!(d(&p3).action, d(&p1).action);
    assert!(
        Envelope::from_bytes::<Directive>(&DirectivePost::from_bytes(&p3).unwrap().directive.0)
            .is_ok()
    );
}

#[test]
fn a_reopened_core_resumes_the_same_deployment_state() {
    let tmp = tempfile::tempdir().unwrap();
    let mut now = T0;
    let (dep, view, posts) = {
        let mut core = core_at(tmp.path());
        let flow = published(&mut core, now);
        let mut devs = vec![Dev::new("a", 51), Dev::new("b", 52)];
        for d in devs.iter_mut() {
            allow(&mut core, d, now);
        }
        let dep = deploy(&mut core, &flow, &devs, "rolling", now);
        for _ in 0..3 {
            for d in devs.iter_mut() {
                d.step(&mut core, now);
            }
            now += 500;
            core.tick(now);
        }
        let view = core
            .with_deployment(&dep, |doc, e| (doc.clone(), e.clone()))
            .unwrap();
        let posts: Vec<_> = [&devs[0].id, &devs[1].id]
            .iter()
            .map(|d| core.directive_post(d, now).unwrap())
            .collect();
        (dep, view, posts)
    };
    let mut core = core_at(tmp.path());
    let again = core
        .with_deployment(&dep, |doc, e| (doc.clone(), e.clone()))
        .unwrap();
    assert_eq!(again.0, view.0);
    assert_eq!(again.1, view.1);
    let posts_again: Vec<_> = [Dev::new("a", 51).id, Dev::new("b", 52).id]
        .iter()
        .map(|d| core.directive_post(d, now).unwrap())
        .collect();
    assert_eq!(posts, posts_again);
}

/// The engine is persisted as a snapshot every few inputs plus the inputs since. At every
/// round of a deployment, a core opened afresh on the same database (snapshot + replay) holds
/// exactly the live core's document and engine, and the log never grows past the snapshot
/// interval (the larger of `snapshot_every` and twice the targets).
#[test]
fn snapshot_and_replay_give_the_live_state_at_every_step() {
    let tmp = tempfile::tempdir().unwrap();
    let open = |dir: &Path| core_with(dir, 5);
    let mut core = open(tmp.path());
    let mut now = T0;
    let flow = published(&mut core, now);
    let mut devs: Vec<Dev> = (0..6).map(|i| Dev::new(&format!("r{i}"), 70 + i)).collect();
    for d in devs.iter_mut() {
        allow(&mut core, d, now);
    }
    let dep = deploy(&mut core, &flow, &devs, "rolling", now);
    let mut rounds = 0;
    let mut longest_log = 0;
    while !status(&core, &dep).is_terminal() {
        for d in devs.iter_mut() {
            d.step(&mut core, now);
        }
        now += 500;
        core.tick(now);
        let live = core
            .with_deployment(&dep, |doc, e| (doc.clone(), e.clone()))
            .unwrap();
        let reopened = open(tmp.path());
        let again = reopened
            .with_deployment(&dep, |doc, e| (doc.clone(), e.clone()))
            .unwrap();
        assert_eq!(again.0, live.0, "document after round {rounds}");
        assert_eq!(again.1, live.1, "engine after round {rounds}");
        let store = Store::open(&tmp.path().join("floe.db")).unwrap();
        let (at, _) = store.snapshot_position(&dep).unwrap().unwrap();
        longest_log = longest_log.max(store.inputs_after(&dep, at).unwrap().len());
        rounds += 1;
        assert!(rounds < 500, "the deployment did not finish");
    }
    assert_eq!(status(&core, &dep), DeploymentStatus::Completed);
    // A snapshot comes every 5 inputs, but at most once per two inputs per target (6 targets).
    assert!(
        longest_log > 0 && longest_log < 12,
        "longest log {longest_log}"
    );
    // A finished deployment is its final snapshot: nothing is left to replay.
    let store = Store::open(&tmp.path().join("floe.db")).unwrap();
    let (at, _) = store.snapshot_position(&dep).unwrap().unwrap();
    assert!(store.inputs_after(&dep, at).unwrap().is_empty());
    assert!(at > 5, "snapshots were taken along the way ({at})");
}

/// Reports are applied in batches, one transaction each: a refused report (a forged key)
/// undoes only itself, the others land and survive a restart.
#[test]
fn a_batch_of_reports_commits_together_and_a_refused_one_undoes_only_itself() {
    let tmp = tempfile::tempdir().unwrap();
    let now = T0;
    {
        let mut core = core_at(tmp.path());
        let mut a = Dev::new("a", 81);
        let mut b = Dev::new("b", 82);
        allow(&mut core, &mut a, now);
        allow(&mut core, &mut b, now);
        a.active = Some(SlotInfo {
            slot: "blue".into(),
            name: "x".into(),
            release: 7,
            version: "1.7.0".into(),
        });
        let mut forged = Dev::claiming(&b.id, 99);
        let outcomes = core
            .ingest(vec![a.report(), forged.report(), b.report()], now + 1000)
            .unwrap();
        assert!(outcomes[0].is_ok(), "{:?}", outcomes[0]);
        assert!(
            matches!(outcomes[1], Err(ServiceError::Refused(_))),
            "{:?}",
            outcomes[1]
        );
        assert!(outcomes[2].is_ok(), "{:?}", outcomes[2]);
    }
    let core = core_at(tmp.path());
    let a = core.device(&Dev::new("a", 81).id).unwrap();
    assert_eq!(a.installed.as_ref().map(|s| s.release), Some(7));
    assert_eq!(a.last_seen, Some(now + 1000));
    assert_eq!(
        core.device(&Dev::new("b", 82).id).unwrap().last_seen,
        Some(now + 1000)
    );
}

/// A deployment's targets come in pages in plan order; the last page names no next cursor,
/// and the deployment object says where the targets it does not embed start.
#[test]
fn targets_page_in_plan_order() {
    let tmp = tempfile::tempdir().unwrap();
    let mut core = core_at(tmp.path());
    let now = T0;
    let flow = published(&mut core, now);
    let mut devs: Vec<Dev> = (0..5).map(|i| Dev::new(&format!("p{i}"), 90 + i)).collect();
    for d in devs.iter_mut() {
        allow(&mut core, d, now);
    }
    let dep = deploy(&mut core, &flow, &devs, "rolling", now);
    let page = |from, limit| {
        core.with_deployment(&dep, |doc, e| {
            crate::api::views::targets(doc, e, from, limit)
        })
        .unwrap()
    };
    let ids = |t: &[crate::contract::Target]| -> Vec<String> {
        t.iter().map(|t| t.device_id.clone()).collect()
    };
    let (first, more1) = page(0, 2);
    let (second, more2) = page(2, 2);
    let (last, more3) = page(4, 2);
    assert_eq!((first.len(), more1), (2, true));
    assert_eq!((second.len(), more2), (2, true));
    assert_eq!((last.len(), more3), (1, false));
    let all: Vec<String> = [ids(&first), ids(&second), ids(&last)].concat();
    // Plan order is the deployment document's target order; each target's stage is the
    // engine's.
    let (plan_ids, stages) = core
        .with_deployment(&dep, |doc, e| {
            let ids: Vec<String> = doc.targets.iter().map(|t| t.device_id.clone()).collect();
            let stages: Vec<u32> = (0..5).map(|i| e.target_stage(i).unwrap()).collect();
            (ids, stages)
        })
        .unwrap();
    assert_eq!(all, plan_ids);
    let got: Vec<u32> = [first, second, last]
        .concat()
        .iter()
        .map(|t| t.stage)
        .collect();
    assert_eq!(got, stages);
    assert!(page(9, 1000).0.is_empty());
}

/// Allowlisting in bulk is one transaction: known devices count as existing, and one bad
/// entry refuses the whole batch, naming it, with nothing written.
#[test]
fn a_device_batch_is_all_or_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let now = T0;
    let input = |d: &Dev| DeviceInput {
        id: d.id.clone(),
        public_key: d.public_hex(),
        device_type: Some("rpi4".into()),
        region: None,
        labels: Default::default(),
    };
    let devs: Vec<Dev> = (0..4)
        .map(|i| Dev::new(&format!("b{i}"), 110 + i))
        .collect();
    {
        let mut core = core_at(tmp.path());
        let (created, existing) = core
            .allow_devices(devs[..2].iter().map(input).collect(), now)
            .unwrap();
        assert_eq!((created, existing), (2, 0));
        let (created, existing) = core
            .allow_devices(devs[..3].iter().map(input).collect(), now)
            .unwrap();
        assert_eq!((created, existing), (1, 2));
        let b9 = Dev::new("b9", 119);
        let mut bad = input(&devs[3]);
        bad.public_key = "zz".into();
        let err = core.allow_devices(vec![input(&b9), bad], now).unwrap_err();
        assert!(
            matches!(&err, ServiceError::Validation { field, .. } if field == "devices[1].public_key"),
            "{err}"
        );
        assert!(
            core.device(&b9.id).is_err(),
            "a refused batch leaves nothing in memory"
        );
    }
    let core = core_at(tmp.path());
    assert_eq!(core.devices().count(), 3);
    assert!(
        core.device(&Dev::new("b9", 119).id).is_err(),
        "a refused batch leaves nothing on disk"
    );
}

/// The pending list names the devices behind their current directive, and a device leaves
/// it once its report says it applied the directive.
#[test]
fn pending_directives_list_who_is_behind_until_they_report() {
    let tmp = tempfile::tempdir().unwrap();
    let mut core = core_at(tmp.path());
    let now = T0;
    let flow = published(&mut core, now);
    let mut devs: Vec<Dev> = (0..3)
        .map(|i| Dev::new(&format!("q{i}"), 120 + i))
        .collect();
    // Pages go by device id: q0, q1, q2 are the devices in id order.
    devs.sort_by(|a, b| a.id.cmp(&b.id));
    let q: Vec<String> = devs.iter().map(|d| d.id.clone()).collect();
    for d in devs.iter_mut() {
        allow(&mut core, d, now);
    }
    assert!(core.pending_directives(None, 10).is_empty());
    deploy(&mut core, &flow, &devs, "all-at-once", now);
    let pending = core.pending_directives(None, 10);
    let ids: Vec<&str> = pending.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, vec![q[0].as_str(), q[1].as_str(), q[2].as_str()]);
    assert!(pending.iter().all(|(_, g)| *g > 0));
    assert_eq!(core.pending_directives(Some(&q[0]), 1).len(), 1);
    assert_eq!(core.pending_directives(Some(&q[0]), 1)[0].0, q[1]);
    devs[1].step(&mut core, now + 100);
    let ids: Vec<String> = core
        .pending_directives(None, 10)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    // q0 and q2 have not reported; q1 is listed again only if its report made the engine
    // issue its next directive.
    assert!(ids.contains(&q[0]) && ids.contains(&q[2]), "{ids:?}");
    let applied = devs[1].applied.as_ref().unwrap().generation;
    assert!(applied > 0);
    assert_eq!(
        ids.contains(&q[1]),
        core.desired_generation(&q[1]) > applied,
        "{ids:?}"
    );
}

/// A device allowlisted but never heard from is offline when a deployment starts (skipped and
/// queued); its first report is its return, and it is caught up with its stage's directive.
#[test]
fn a_target_never_heard_from_is_caught_up_on_its_first_report() {
    let tmp = tempfile::tempdir().unwrap();
    let mut core = core_at(tmp.path());
    let now = T0;
    let flow = published(&mut core, now);
    let mut devs = vec![Dev::new("n0", 150), Dev::new("n1", 151)];
    allow(&mut core, &mut devs[0], now);
    core.allow_device(
        DeviceInput {
            id: devs[1].id.clone(),
            public_key: devs[1].public_hex(),
            device_type: Some("rpi4".into()),
            region: Some("eu".into()),
            labels: Default::default(),
        },
        now,
    )
    .unwrap();
    deploy(&mut core, &flow, &devs, "all-at-once", now);
    let (n0, n1) = (devs[0].id.clone(), devs[1].id.clone());
    assert!(core.desired_generation(&n0) > 0);
    assert_eq!(
        core.desired_generation(&n1),
        0,
        "silent targets are skipped"
    );
    let r = devs[1].report();
    core.device_report(r, now + 1_000).unwrap();
    assert!(
        core.desired_generation(&n1) > 0,
        "the first report of a silent target must catch it up"
    );
}

/// The directive feed lists each newly issued directive once, in issue order, until its
/// device reports it applied; a cursor of an older epoch (before a reload) starts over.
#[test]
fn the_directive_feed_hands_each_new_directive_on_once() {
    let tmp = tempfile::tempdir().unwrap();
    let mut core = core_at(tmp.path());
    let now = T0;
    let flow = published(&mut core, now);
    let mut devs: Vec<Dev> = (0..3)
        .map(|i| Dev::new(&format!("f{i}"), 140 + i))
        .collect();
    for d in devs.iter_mut() {
        allow(&mut core, d, now);
    }
    let (epoch, page) = core.directive_feed(0, 0, 10, now).unwrap();
    assert!(page.is_empty());
    deploy(&mut core, &flow, &devs, "all-at-once", now);
    let (same, page) = core.directive_feed(epoch, 0, 10, now).unwrap();
    assert_eq!(same, epoch);
    let ids: Vec<&str> = page.iter().map(|(_, id, ..)| id.as_str()).collect();
    assert_eq!(ids.len(), 3, "{ids:?}");
    assert!(page.windows(2).all(|w| w[0].0 < w[1].0), "issue order");
    for (_, id, generation, post) in &page {
        assert_eq!(*generation, core.desired_generation(id));
        assert_eq!(core.directive_post(id, now).unwrap().unwrap().1, *post);
    }
    // Paged: one at a time from the cursor, nothing after the last.
    let (_, one) = core.directive_feed(epoch, 0, 1, now).unwrap();
    let (_, two) = core.directive_feed(epoch, one[0].0, 1, now).unwrap();
    assert_eq!(two[0].1, page[1].1);
    let last = page[2].0;
    assert!(
        core.directive_feed(epoch, last, 10, now)
            .unwrap()
            .1
            .is_empty()
    );
    // A device that reports its directive applied leaves the feed; its next directive (if
    // the engine issues one) comes after the cursor.
    devs[0].step(&mut core, now + 100);
    let (_, later) = core.directive_feed(epoch, last, 10, now + 100).unwrap();
    assert!(
        later
            .iter()
            .all(|(seq, id, ..)| *seq > last && id == &devs[0].id)
    );
    assert_eq!(
        later.len(),
        usize::from(
            core.desired_generation(&devs[0].id) > devs[0].applied.as_ref().unwrap().generation
        )
    );
    // Another epoch's cursor starts over: the devices still behind are all listed.
    let (_, over) = core.directive_feed(epoch ^ 2, last, 10, now + 100).unwrap();
    assert!(over.len() >= 2, "{over:?}");
}

#[test]
fn a_failing_canary_rolls_back_to_the_release_the_device_had() {
    let tmp = tempfile::tempdir().unwrap();
    let mut core = core_at(tmp.path());
    let mut now = T0;
    let flow = published(&mut core, now);
    let mut devs = vec![Dev::new("a", 61), Dev::new("b", 62), Dev::new("c", 63)];
    for d in devs.iter_mut() {
        allow(&mut core, d, now);
    }
    let dep = deploy(&mut core, &flow, &devs, "all-at-once", now);
    run(&mut core, &mut devs, &dep, &mut now);
    assert_eq!(status(&core, &dep), DeploymentStatus::Completed);
    let v1 = core.artifact_of(&flow).unwrap().unwrap();

    assert_eq!(
        core.device(&devs[0].id)
            .unwrap()
            .last_known_good
            .as_ref()
            .map(|s| s.release),
        Some(1)
    );

    // Release 2 is bad wherever it runs: the canary's health fails and everything rolls back.
    let v2 = core.new_version(&flow, now).unwrap();
    core.publish_flow(&v2.id, now).unwrap();
    for d in devs.iter_mut() {
        d.bad_release = Some(2);
    }
    let dep2 = core
        .create_deployment(
            DeploymentInput {
                flow_id: v2.id.clone(),
                strategy: "canary".into(),
                target_devices: Some(devs.iter().map(|d| d.id.clone()).collect()),
                selector: None,
                config: ConfigInput {
                    canary_delay: Some("5s".into()),
                    ..ConfigInput::default()
                },
            },
            now,
        )
        .unwrap();
    core.command(&dep2, Command::Start, now).unwrap();
    run(&mut core, &mut devs, &dep2, &mut now);
    assert_eq!(status(&core, &dep2), DeploymentStatus::RolledBack);
    let rolled: Vec<&Dev> = devs.iter().filter(|d| !d.rollbacks.is_empty()).collect();
    assert!(!rolled.is_empty(), "some device got a rollback directive");
    for d in rolled {
        let r = &d.rollbacks[0];
        assert_eq!((r.name.as_str(), r.release), (v1.name.as_str(), 1));
        assert_eq!(r.manifest_sha256.to_hex(), v1.manifest_sha256);
        assert_eq!(
            d.active.as_ref().map(|s| s.release),
            Some(1),
            "{} is back on 1",
            d.id
        );
    }
    let (gates, reason) = core
        .with_deployment(&dep2, |doc, _| {
            (doc.gates.clone(), doc.status_reason.clone())
        })
        .unwrap();
    assert!(reason.contains("error_rate"), "{reason}");
    assert!(
        gates
            .iter()
            .all(|g| g.verdict != crate::contract::GateVerdict::Pass),
        "{gates:?}"
    );
}

#[tokio::test]
async fn the_actor_answers_signals_publishes_and_stops_on_shutdown() {
    let tmp = tempfile::tempdir().unwrap();
    let core = core_at(tmp.path());
    let shutdown = tokio_util::sync::CancellationToken::new();
    let (handle, task) = spawn(core, shutdown.clone());
    let mut signal = handle.published();
    let before = *signal.borrow_and_update();
    let flow = handle
        .call(|core, now| Ok(published(core, now)))
        .await
        .unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(5), signal.changed())
        .await
        .unwrap()
        .unwrap();
    assert!(*signal.borrow() > before);
    let blobs = handle.artifacts().await.unwrap();
    assert_eq!(blobs.len(), 1);
    assert_eq!(blobs[0].name, flow);
    assert!(!blobs[0].payload.is_empty());
    assert!(handle.outbox().await.unwrap().is_empty());
    shutdown.cancel();
    task.await.unwrap();
    assert!(matches!(handle.outbox().await, Err(ServiceError::Closed)));
}

#[path = "secret_vars_tests.rs"]
mod secret_vars_tests;
#[path = "vars_tests.rs"]
mod vars_tests;

#[path = "incidents_tests.rs"]
mod incidents_tests;

/// Every event published so far, oldest first.
fn published_events(core: &mut Core) -> Vec<crate::contract::Event> {
    core.flush_events();
    core.event_bus()
        .kept()
        .iter()
        .map(|e| (**e).clone())
        .collect()
}

#[test]
fn a_deployment_announces_its_status_stages_gates_and_transitions_in_order() {
    use crate::contract::EventKind;
    let dir = tempfile::tempdir().unwrap();
    let mut core = core_at(dir.path());
    let mut now = T0;
    let flow = published(&mut core, now);
    let mut devs: Vec<Dev> = (0..3).map(|i| Dev::new("d", 40 + i)).collect();
    for d in devs.iter_mut() {
        allow(&mut core, d, now);
    }
    let before = published_events(&mut core);
    assert_eq!(
        before
            .iter()
            .filter(|e| e.kind == EventKind::DeviceOnline)
            .count(),
        3,
        "{before:#?}"
    );
    assert!(before.iter().any(|e| e.kind == EventKind::DeviceHealth));
    let id = deploy(&mut core, &flow, &devs, "rolling", now);
    run(&mut core, &mut devs, &id, &mut now);
    let all = published_events(&mut core);
    // Ids grow by one, with nothing missing.
    for w in all.windows(2) {
        assert_eq!(w[1].id, w[0].id + 1);
    }
    let of_dep: Vec<_> = all
        .iter()
        .filter(|e| e.deployment_id.as_deref() == Some(id.as_str()))
        .collect();
    let statuses: Vec<&str> = of_dep
        .iter()
        .filter(|e| e.kind == EventKind::DeploymentStatus)
        .map(|e| e.data["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses.first(), Some(&"running"), "{statuses:?}");
    assert_eq!(statuses.last(), Some(&"completed"), "{statuses:?}");
    assert!(of_dep.iter().any(|e| e.kind == EventKind::DeploymentStage));
    let gate = of_dep
        .iter()
        .find(|e| e.kind == EventKind::GateVerdict && e.data["verdict"] == "pass")
        .expect("a passing gate");
    assert!(gate.data["checks"].is_array());
    // Each device walks from pending to success, each step announced once with its `from`.
    for d in &devs {
        let steps: Vec<(String, String)> = of_dep
            .iter()
            .filter(|e| {
                e.kind == EventKind::TargetTransition && e.device_id.as_deref() == Some(&d.id)
            })
            .map(|e| {
                (
                    e.data["from"].as_str().unwrap().to_string(),
                    e.data["to"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(
            steps.first().map(|s| s.0.as_str()),
            Some("pending"),
            "{steps:?}"
        );
        assert_eq!(
            steps.last().map(|s| s.1.as_str()),
            Some("success"),
            "{steps:?}"
        );
        for w in steps.windows(2) {
            assert_eq!(w[0].1, w[1].0, "transitions chain: {steps:?}");
        }
    }
    assert!(all.iter().all(|e| e.at.ends_with('Z')));
}

#[test]
fn a_stalled_deployment_is_announced_stuck_once_after_its_deadline_and_again_after_progress() {
    use crate::contract::EventKind;
    let dir = tempfile::tempdir().unwrap();
    let mut core = core_at(dir.path());
    let now = T0;
    let flow = published(&mut core, now);
    let mut devs: Vec<Dev> = (0..2).map(|i| Dev::new("d", 60 + i)).collect();
    for d in devs.iter_mut() {
        allow(&mut core, d, now);
    }
    let refused = core.create_deployment(
        DeploymentInput {
            flow_id: flow.clone(),
            strategy: "rolling".into(),
            target_devices: Some(devs.iter().map(|d| d.id.clone()).collect()),
            selector: None,
            config: ConfigInput {
                stuck_after: Some("99999999999999999d".into()),
                ..ConfigInput::default()
            },
        },
        now,
    );
    match refused {
        Err(ServiceError::Validation { field, .. }) => assert_eq!(field, "config.stuck_after"),
        other => panic!("an overflowing stuck_after must be refused: {other:?}"),
    }
    let id = core
        .create_deployment(
            DeploymentInput {
                flow_id: flow,
                strategy: "rolling".into(),
                target_devices: Some(devs.iter().map(|d| d.id.clone()).collect()),
                selector: None,
                config: ConfigInput {
                    batch_size: Some(1),
                    stuck_after: Some("10s".into()),
                    ..ConfigInput::default()
                },
            },
            now,
        )
        .unwrap();
    let shown = core
        .with_deployment(&id, |d, _| d.config.stuck_after.clone())
        .unwrap();
    assert_eq!(shown, "10s");
    core.command(&id, Command::Start, now).unwrap();
    // Each operation's events carry its time: collect them with it.
    let mut timeline: Vec<(u64, crate::contract::Event)> = Vec::new();
    let mut seen = 0u64;
    let mut collect =
        |core: &mut Core, at: u64, timeline: &mut Vec<(u64, crate::contract::Event)>| {
            for e in published_events(core) {
                if e.id > seen {
                    seen = e.id;
                    timeline.push((at, e));
                }
            }
        };
    collect(&mut core, now, &mut timeline);
    // Nobody reports for 25 s (under the 30 s offline limit), then the devices carry out their
    // directives, then silence again for 25 s; the clock ticks every 250 ms.
    let mut t = now;
    while t < now + 25_000 {
        t += 250;
        core.tick(t);
        collect(&mut core, t, &mut timeline);
    }
    for d in devs.iter_mut() {
        d.step(&mut core, t);
    }
    collect(&mut core, t, &mut timeline);
    let resumed = t;
    while t < resumed + 25_000 {
        t += 250;
        core.tick(t);
        collect(&mut core, t, &mut timeline);
    }
    // Every stuck event comes 10 s (one tick at most later) after the last progress it names,
    // once per stall: the first names the start, a later one names the devices' reports (or a
    // step the engine took after them, as a directive issued is progress too).
    let stucks: Vec<(u64, u64)> = timeline
        .iter()
        .filter(|(_, e)| e.kind == EventKind::DeploymentStuck)
        .map(|(at, e)| {
            assert_eq!(e.data["stuck_after"], "10s");
            let since = (*at - 25_000..=*at)
                .find(|ms| e.data["since"] == crate::store::rfc3339(*ms))
                .unwrap_or_else(|| panic!("since is not within the stall: {e:?}"));
            (*at, since)
        })
        .collect();
    assert_eq!(stucks.first(), Some(&(now + 10_250, now)), "{stucks:?}");
    for (at, since) in &stucks {
        assert!((10_001..=10_250).contains(&(at - since)), "{stucks:?}");
    }
    for w in stucks.windows(2) {
        assert!(w[0].1 < w[1].1, "once per stall: {stucks:?}");
    }
    assert!(
        stucks.iter().any(|(_, since)| *since >= resumed),
        "the stall after the reports is announced: {stucks:?}"
    );
    // A paused deployment is not stuck.
    core.command(&id, Command::Pause, t).unwrap();
    collect(&mut core, t, &mut timeline);
    let n = timeline.len();
    core.tick(t + 60_000);
    collect(&mut core, t + 60_000, &mut timeline);
    assert!(
        timeline[n..]
            .iter()
            .all(|(_, e)| e.kind != EventKind::DeploymentStuck),
        "{:#?}",
        &timeline[n..]
    );
}
