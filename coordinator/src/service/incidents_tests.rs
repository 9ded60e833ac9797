//! The incidents part against a real SQLite file: a canary of a bad release fails, the fleet
//! is rolled back, the rolled-back devices are verified on their previous release, and the
//! deployment gets its incident report (timeline, pattern, devices, health); a device that goes
//! silent after its rollback is unverified (offline), not failed.

use super::*;
use crate::contract::{DeviceVerdict, EventKind, FailurePattern};
use crate::store::AuditFilter;

/// Steps devices (those `silent` leaves out) and the clock 500 ms a round, publishing events
/// after each round as the actor does, for `rounds` rounds or until `done`.
fn rounds(
    core: &mut Core,
    devs: &mut [Dev],
    now: &mut u64,
    n: usize,
    silent: &dyn Fn(&Dev) -> bool,
    done: &dyn Fn(&Core) -> bool,
) {
    for _ in 0..n {
        for d in devs.iter_mut().filter(|d| !silent(d)) {
            d.step(core, *now);
            core.flush_events();
        }
        *now += 500;
        core.tick(*now);
        core.flush_events();
        if done(core) {
            return;
        }
    }
}

/// Three devices on release 1 (a completed deployment), then a canary of release 2, which
/// reports a 50 % error rate: returns the core, devices, clock, flow and the canary's id.
fn failed_canary(
    silent: &dyn Fn(&Dev) -> bool,
) -> (tempfile::TempDir, Core, Vec<Dev>, u64, String, String) {
    failed_canary_with_ring(silent, 10_000)
}

/// [`failed_canary`] with an event ring of `ring` events.
fn failed_canary_with_ring(
    silent: &dyn Fn(&Dev) -> bool,
    ring: usize,
) -> (tempfile::TempDir, Core, Vec<Dev>, u64, String, String) {
    let tmp = tempfile::tempdir().unwrap();
    let mut core = {
        let store = Store::open(&tmp.path().join("floe.db")).unwrap();
        let mut config = ServiceConfig::new(tmp.path().to_path_buf());
        config.offline_after = 30_000;
        config.directive_ttl_secs = 600;
        config.event_ring = ring;
        // About what follows a rollback; the checklist is tested in `preflight_tests`.
        config.preflight.enforce = false;
        Core::new(
            store,
            config,
            SigningKey::from_bytes(&[1; 32]),
            SigningKey::from_bytes(&[2; 32]),
        )
        .unwrap()
    };
    let mut now = T0;
    let flow = published(&mut core, now);
    let mut devs = vec![Dev::new("a", 71), Dev::new("b", 72), Dev::new("c", 73)];
    for d in devs.iter_mut() {
        allow(&mut core, d, now);
    }
    let dep = deploy(&mut core, &flow, &devs, "all-at-once", now);
    let dep1 = dep.clone();
    rounds(&mut core, &mut devs, &mut now, 2000, &|_| false, &|c| {
        status(c, &dep1).is_terminal()
    });
    rounds(&mut core, &mut devs, &mut now, 2, &|_| false, &|_| false);
    assert_eq!(status(&core, &dep), DeploymentStatus::Completed);
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
                    // The fleet's reports since the first deployment make the baseline (a
                    // test's minutes, not 001's 24 h).
                    baseline_min_samples: Some(1),
                    ..ConfigInput::default()
                },
            },
            now,
        )
        .unwrap();
    core.command(&dep2, Command::Start, now).unwrap();
    core.flush_events();
    let d2 = dep2.clone();
    rounds(&mut core, &mut devs, &mut now, 2000, silent, &|c| {
        status(c, &d2).is_terminal()
    });
    assert_eq!(status(&core, &dep2), DeploymentStatus::RolledBack);
    (tmp, core, devs, now, dep, dep2)
}

#[test]
fn a_rolled_back_canary_is_verified_healthy_and_gets_an_incident_report() {
    let (_tmp, mut core, mut devs, mut now, dep1, dep2) = failed_canary(&|_| false);
    let rolled: Vec<String> = devs
        .iter()
        .filter(|d| !d.rollbacks.is_empty())
        .map(|d| d.id.clone())
        .collect();
    assert!(!rolled.is_empty());
    // The rolled-back devices report again, healthy on release 1.
    let d2 = dep2.clone();
    rounds(&mut core, &mut devs, &mut now, 20, &|_| false, &|c| {
        c.rollback_verification(&d2)
            .unwrap()
            .is_some_and(|v| v.pending == 0)
    });
    let v = core.rollback_verification(&dep2).unwrap().unwrap();
    assert_eq!(v.result, "healthy", "{v:?}");
    assert_eq!(v.scope, "fleet");
    assert_eq!(v.healthy, rolled.len() as u64);
    assert_eq!((v.unhealthy, v.unverified_offline, v.pending), (0, 0, 0));
    assert_eq!(v.fleet_within_baseline, Some(true), "{v:?}");
    assert!(v.finished_at.is_some());

    let r = core.incident_report(&dep2, now).unwrap();
    assert_eq!(r.status, "rolled_back");
    assert!(
        r.title.starts_with("Incident: Temperature Alert v"),
        "{}",
        r.title
    );
    assert!(r.reason.contains("error_rate"), "{}", r.reason);
    let kinds: Vec<&str> = r.timeline.iter().map(|e| e.what.as_str()).collect();
    for k in [
        "deployment.create",
        "deployment.start",
        "deployment.status",
        "rollback.start",
        "rollback.end",
        "rollback.verify",
    ] {
        assert!(kinds.contains(&k), "{k} missing in {kinds:?}");
    }
    let times: Vec<&str> = r.timeline.iter().map(|e| e.at.as_str()).collect();
    assert!(
        times.iter().all(|t| t.ends_with('Z') && t.len() == 24),
        "{times:?}"
    );
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    // The canary's devices breached the baseline on release 2: the same on all of them.
    assert_eq!(
        r.pattern.pattern,
        FailurePattern::AllDevices,
        "{:?}",
        r.pattern
    );
    assert_eq!(r.pattern.deployed, rolled.len() as u64);
    assert_eq!(r.affected.targets, 3);
    assert_eq!(r.affected.rolled_back, rolled.len() as u64);
    assert_eq!(r.affected.not_started, 3 - rolled.len() as u64);
    assert_eq!(r.affected.skipped_unreachable, 0);
    for d in &r.affected.devices {
        assert!(rolled.contains(&d.id));
        assert_eq!(d.verification.as_deref(), Some("healthy"));
        assert!(
            d.what_happened.contains("error rate 50.00%"),
            "{}",
            d.what_happened
        );
    }
    let error = &r.health[0];
    assert_eq!(error.metric, "error_rate");
    assert_eq!(
        (error.before, error.during, error.after),
        (Some(0.0), Some(50.0), Some(0.0))
    );
    assert_eq!(r.health[3].metric, "cpu_percent");
    assert_eq!(
        r.verification.as_ref().map(|v| v.result.as_str()),
        Some("healthy")
    );
    assert!(r.to_markdown().contains("**Failure pattern**: all_devices"));

    // Audited, announced, and served from the store after a restart.
    let audit = core
        .audit_entries(&AuditFilter {
            limit: 1000,
            deployment_id: Some(dep2.clone()),
            device_id: None,
            before: None,
        })
        .unwrap();
    assert!(
        audit
            .iter()
            .any(|a| a.action == "rollback.verify" && a.outcome == "healthy")
    );
    let events = published_events(&mut core);
    let verified: Vec<_> = events
        .iter()
        .filter(|e| e.kind == EventKind::RollbackVerified)
        .collect();
    assert_eq!(verified.len(), 1, "{verified:?}");
    assert_eq!(verified[0].deployment_id.as_deref(), Some(dep2.as_str()));
    assert_eq!(verified[0].data["result"], "healthy");

    // A completed deployment has none: a clear 404.
    match core.incident_report(&dep1, now) {
        Err(ServiceError::NotFound { what, id }) => {
            assert_eq!(what, "incident report");
            assert!(id.contains("completed"), "{id}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_device_silent_after_its_rollback_is_unverified_not_failed() {
    // The devices stop reporting once they have rolled back.
    let silent = |d: &Dev| !d.rollbacks.is_empty();
    let (tmp, core, mut devs, mut now, _, dep2) = failed_canary(&silent);
    let rolled: Vec<String> = devs
        .iter()
        .filter(|d| silent(d))
        .map(|d| d.id.clone())
        .collect();
    assert!(!rolled.is_empty());
    let v = core.rollback_verification(&dep2).unwrap().unwrap();
    assert_eq!(v.result, "pending", "{v:?}");
    // The verification survives a restart of the coordinator.
    drop(core);
    let mut core = core_at(tmp.path());
    // Past the 5 minute deadline.
    let d2 = dep2.clone();
    rounds(&mut core, &mut devs, &mut now, 700, &silent, &|c| {
        c.rollback_verification(&d2)
            .unwrap()
            .is_some_and(|v| v.pending == 0)
    });
    let v = core.rollback_verification(&dep2).unwrap().unwrap();
    assert_eq!(v.result, "unverified", "{v:?}");
    assert_eq!(v.unverified_offline, rolled.len() as u64);
    assert_eq!(v.unhealthy, 0);
    assert!(
        v.devices
            .iter()
            .all(|d| d.verdict == DeviceVerdict::UnverifiedOffline)
    );
    // No post-rollback metrics: the fleet check cannot say.
    assert_eq!(v.fleet_within_baseline, None);
    let r = core.incident_report(&dep2, now).unwrap();
    assert_eq!(
        r.verification.as_ref().map(|v| v.result.as_str()),
        Some("unverified")
    );
    assert!(
        r.affected
            .devices
            .iter()
            .all(|d| d.verification.as_deref() == Some("unverified_offline"))
    );
}

#[test]
fn dropped_events_do_not_lose_the_incident_report_or_the_rolled_back_devices() {
    // A ring of one event: every step that stages more drops them all for one reset.
    let (_tmp, mut core, mut devs, mut now, _, dep2) = failed_canary_with_ring(&|_| false, 1);
    let rolled = devs.iter().filter(|d| !d.rollbacks.is_empty()).count() as u64;
    // Stored without anyone asking for it.
    let stored = core.store().incident(&dep2).unwrap().unwrap();
    assert!(stored.report.is_some());
    let d2 = dep2.clone();
    rounds(&mut core, &mut devs, &mut now, 20, &|_| false, &|c| {
        c.rollback_verification(&d2)
            .unwrap()
            .is_some_and(|v| v.pending == 0)
    });
    let v = core.rollback_verification(&dep2).unwrap().unwrap();
    assert_eq!((v.result.as_str(), v.healthy), ("healthy", rolled), "{v:?}");
}
