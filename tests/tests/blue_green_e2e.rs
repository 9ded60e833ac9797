//! Blue-green across real `floed` devices (issue 15, reference 003): a real `floe serve` and
//! four real devices on loopback with a real Mosquitto. v1 goes out rolling; v2 goes out
//! blue-green, which stages it on every device first, switches the canary, and switches the
//! rest in two waves after the canary's gate: the devices' own audit logs show every stage
//! before the first switch and the canary's switch before the waves'.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::time::Duration;

use floe_tests::Mosquitto;
use floe_tests::coordinator::{Coordinator, Device, temperature_flow, wait};
use serde_json::{Value, json};

/// When (ms since the epoch) the device's audit log first shows `action` with `outcome` for
/// `version`.
fn first_at(d: &Device, action: &str, outcome: &str, version: &str) -> Option<i64> {
    d.status()["audit"]
        .as_array()?
        .iter()
        .filter(|e| e["action"] == action && e["outcome"] == outcome)
        .filter(|e| e["detail"].as_str().is_some_and(|t| t.contains(version)))
        .filter_map(|e| e["at_ms"].as_i64())
        .min()
}

#[test]
fn blue_green_stages_everywhere_then_switches_the_canary_then_the_waves() {
    let broker = Mosquitto::start().unwrap();
    let root = tempfile::tempdir().unwrap();
    let coord = Coordinator::start(root.path());
    let regions = ["eu", "us", "eu", "us"];
    let devices: Vec<Device> = regions
        .iter()
        .enumerate()
        .map(|(i, r)| Device::start(&coord, root.path(), &format!("dev-{i}"), r))
        .collect();
    let refs: Vec<&Device> = devices.iter().collect();
    coord.wait_online(&refs, Duration::from_secs(60));

    let v1 = coord.publish("Temperature Alert", temperature_flow(&broker.url()));
    let rolling = json!({"batch_size": 4, "batch_delay": "1s", "timeout": "60s",
                         "offline_grace": "30s", "auto_rollback": true, "health_check": true});
    let dep = coord.deploy(&v1, "rolling", &refs, rolling);
    let done = coord.wait_done(&dep, Duration::from_secs(120));
    assert_eq!(
        done.status.as_str(),
        "completed",
        "{:?}",
        done.status_reason
    );

    let v2 = coord.publish_next(&v1, temperature_flow(&broker.url()));
    let cfg = json!({"switch_delay": "2s", "canary_percentage": 10, "canary_delay": "2s",
                     "timeout": "60s", "offline_grace": "30s", "auto_rollback": true,
                     "health_check": true,
                     "waves": [{"name": "wave-1", "percentage": 50, "soak": "2s"},
                               {"name": "wave-2", "percentage": 100, "soak": "2s"}]});
    let dep = coord.deploy(&v2, "blue-green", &refs, cfg);
    let planned = coord.deployment(&dep);
    let names: Vec<&str> = planned.stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "Stage (green)",
            "Canary (switch)",
            "wave-1 (switch)",
            "wave-2 (switch)"
        ],
        "{names:?}"
    );
    // Two regions of one type: the canary covers both.
    assert_eq!(planned.plan.canary.len(), 2, "{:?}", planned.plan);
    let canary: Vec<String> = planned
        .plan
        .canary
        .iter()
        .map(|c| c.device_id.clone())
        .collect();
    let done = coord.wait_done(&dep, Duration::from_secs(180));
    assert_eq!(
        done.status.as_str(),
        "completed",
        "{:?}",
        done.status_reason
    );
    assert_eq!(done.completed_targets, 4);
    let passed: Vec<&str> = done
        .gates
        .iter()
        .filter(|g| g.verdict.as_str() == "pass")
        .map(|g| g.gate.as_str())
        .collect();
    assert!(passed.contains(&"canary"), "{passed:?}");

    // The devices' own word: every device staged v2 before any switched; the canary switched
    // before every wave device; everyone runs v2 committed.
    let mut staged = HashMap::new();
    let mut switched = HashMap::new();
    for d in &devices {
        let s = wait("the device to commit v2", Duration::from_secs(30), || {
            let s = d.status();
            (s["phase"] == "idle" && s["last_good"] == s["active"]).then_some(s)
        });
        assert_eq!(d.active_version().as_deref(), Some("1.2.0"), "{s}");
        let audit: Value = s["audit"].clone();
        staged.insert(
            d.id.clone(),
            first_at(d, "stage", "ok", "1.2.0").unwrap_or_else(|| panic!("{audit}")),
        );
        switched.insert(
            d.id.clone(),
            first_at(d, "switch", "started", "1.2.0").unwrap_or_else(|| panic!("{audit}")),
        );
    }
    let last_stage = staged.values().max().copied().unwrap_or(0);
    let first_switch = switched.values().min().copied().unwrap_or(0);
    assert!(
        last_stage <= first_switch,
        "staged {staged:?}, switched {switched:?}"
    );
    let canary_last = canary.iter().map(|id| switched[id]).max().unwrap_or(0);
    for (id, at) in &switched {
        if !canary.contains(id) {
            // The canary soaked 2 s before its gate: the waves switched after it.
            assert!(
                *at >= canary_last + 1_500,
                "{id} switched at {at}, canary by {canary_last}"
            );
        }
    }
}
