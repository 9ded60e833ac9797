//! kill -9 of a real `floe serve` during a deployment's start, mid-wave and mid-rollback, at a
//! moderate fleet of simulated devices (`KILL9_DEVICES`, default 300); the scenario and what it
//! checks are in `floe_tests::kill9`. The release example `coordinator_scale` runs the same
//! faults at 100 000 devices with `COORD_BENCH_FAULTS=1`.

use std::time::Duration;

#[test]
fn a_deployment_survives_kill9_at_start_mid_wave_and_mid_rollback() {
    let n: usize = std::env::var("KILL9_DEVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let root = tempfile::tempdir().expect("a temp dir");
    let checked = floe_tests::kill9::run(
        root.path(),
        n,
        Duration::from_secs(5),
        Duration::from_secs(1),
        Duration::from_secs(240),
        Duration::from_millis(5),
        None,
    );
    for line in &checked {
        println!("checked: {line}");
    }
    assert_eq!(checked.len(), 5, "{checked:?}");
}
