//! The deployment report as 003's template: the title, absolute times, unreachable devices
//! apart from devices never started, and the health delta's CPU.

use super::*;

/// A canary whose devices report a 13 % error rate (baseline 1 %): the fleet is rolled back
/// with most of it never started; device 5 is offline from the start.
fn failed_canary() -> H {
    let mut h = canary_waves(100);
    let offline = 5u32;
    assert!(!h.r.plan().canary.contains(&offline));
    assert!(h.send(dev(offline, DeviceEvent::Offline)).is_ok());
    let bad = HealthReport {
        error_rate: 0.13,
        ..good()
    };
    h.respond = reports_after_switch(bad);
    assert!(h.cmd(Command::Start).is_ok());
    h.run_to_end();
    h
}

#[test]
fn a_stopped_deployment_counts_never_started_devices_apart_from_unreachable_ones() {
    let h = failed_canary();
    assert_ne!(h.r.status(), DeploymentStatus::Completed);
    let report = crate::Report::from_rollout(&h.r);
    let canary = h.r.plan().canary.len() as u64;
    assert_eq!(report.counts.skipped, 1, "{:?}", report.counts);
    assert_eq!(
        report.counts.not_started,
        100 - canary - 1,
        "{:?}",
        report.counts
    );
    assert!(h.r.target_unreachable(5));
    let md = report.to_markdown();
    assert!(md.contains("| Skipped (unreachable) | 1 | 1.0% |"), "{md}");
    assert!(
        md.contains(&format!(
            "| Not started (deployment stopped) | {} |",
            100 - canary - 1
        )),
        "{md}"
    );
}

#[test]
fn the_title_names_the_flow_and_times_are_absolute_on_the_wall_clock() {
    let h = failed_canary();
    // The harness's clock starts at 0: 1970-01-01 is the wall clock's epoch.
    let report = crate::Report::from_rollout(&h.r)
        .for_flow("thermostat", "1.4.0")
        .at_wall_clock(0);
    let md = report.to_markdown();
    assert!(
        md.starts_with("## Fleet Deployment Report: thermostat v1.4.0\n"),
        "{md}"
    );
    assert!(
        md.contains("**Duration**: 1970-01-01T00:00:00.000Z to 1970-01-01T"),
        "{md}"
    );
    assert!(!md.contains("T+"), "{md}");
    assert_eq!(
        report.started_at_utc.as_deref(),
        Some("1970-01-01T00:00:00.000Z")
    );
    // Without the wall clock, the engine's relative times stay.
    let relative = crate::Report::from_rollout(&h.r).to_markdown();
    assert!(relative.contains("**Duration**: T+0s to T+"), "{relative}");
    assert!(
        relative.starts_with("## Fleet Deployment Report: flow v2\n"),
        "{relative}"
    );
}

#[test]
fn cpu_is_unknown_rather_than_na_when_no_device_sent_it() {
    // A completed deployment: its gates computed a health delta.
    let mut h = H::new(StrategyConfig::defaults(Strategy::Rolling), 10);
    assert!(h.cmd(Command::Start).is_ok());
    h.run_to_end();
    assert_eq!(h.r.status(), DeploymentStatus::Completed);
    let report = crate::Report::from_rollout(&h.r);
    let delta = report.health_delta.as_ref().map(|d| d.cpu_pp);
    assert_eq!(delta, Some(None), "{:?}", report.health_delta);
    let md = report.to_markdown();
    assert!(md.contains("CPU unknown (not reported)"), "{md}");
    assert!(!md.contains("n/a"), "{md}");
}
