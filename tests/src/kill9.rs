//! The kill -9 scenario shared by the `coordinator_kill9` test (a few hundred devices, debug
//! build) and the fault phase of the `coordinator_scale` example (100 000, release): a real
//! `floe serve` killed with SIGKILL during a deployment's start, in the middle of a wave and in
//! the middle of a rollback, restarted on the same data directory each time, with simulated
//! devices (`floe_coordinator::loadtest`) driving it over the REST API as real devices do.
//! After each restart the deployment resumes: no target is lost, no stage's gate is skipped or
//! passed twice, the devices end on the release the deployment meant, and SQLite's
//! `PRAGMA integrity_check` finds nothing.
//!
//! Like the other harnesses, it panics naming the check that failed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::coordinator::Coordinator;
use floe_coordinator::client::{Client, Method};
use floe_coordinator::loadtest::{Fleet, LoadConfig};
use floe_coordinator::store::Store;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

/// One API call; a 429 (the token's rate limit, reached by the checks' reads at 100 000
/// devices) is retried after a second, at most 120 times.
fn call(c: &Client, method: Method, path: &str, body: Option<&Value>) -> Value {
    let mut tries = 0;
    let reply = loop {
        match c.call(method, path, body) {
            Err(e) if e.status() == Some(429) && tries < 120 => {
                tries += 1;
                std::thread::sleep(Duration::from_secs(1));
            }
            other => break other.unwrap(),
        }
    };
    if reply.text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&reply.text).unwrap()
    }
}

fn definition() -> Value {
    let example =
        std::fs::read(crate::workspace_root().join("examples/temperature-alert.json")).unwrap();
    serde_json::from_slice(&example).unwrap()
}

fn deployment_body(flow_id: &str) -> Value {
    json!({
        "flow_id": flow_id,
        "strategy": "canary-waves",
        "selector": {"labels": {"loadtest": "1"}},
        "config": {
            "canary_delay": "1s", "timeout": "60s", "offline_grace": "30s",
            "require_approval": false, "max_parallel": 100,
            "waves": [
                {"name": "wave-1", "percentage": 10, "soak": "1s"},
                {"name": "wave-2", "percentage": 30, "soak": "1s"},
                {"name": "wave-3", "percentage": 60, "soak": "1s"}
            ]
        }
    })
}

/// One line of a deployment's progress.
fn progress(d: &Value) {
    println!(
        "  {} {} stage={} phase={} pending={} offline={} completed={} failed={} {}",
        d["id"].as_str().unwrap_or("?"),
        d["status"].as_str().unwrap_or("?"),
        d["current_stage"],
        d["phase"],
        d["pending_targets"],
        d["offline_targets"],
        d["completed_targets"],
        d["failed_targets"],
        d["status_reason"].as_str().unwrap_or(""),
    );
}

/// Every item of a paged list (`key` names the array), following the opaque `next` cursors.
fn all_pages(c: &Client, base: &str, key: &str) -> Vec<Value> {
    let sep = if base.contains('?') { '&' } else { '?' };
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(at) => format!("{base}{sep}limit=1000&cursor={at}"),
            None => format!("{base}{sep}limit=1000"),
        };
        let page = call(c, Method::Get, &url, None);
        out.extend(page[key].as_array().unwrap().iter().cloned());
        match page["next"].as_str() {
            Some(n) => cursor = Some(n.to_string()),
            None => return out,
        }
    }
}

/// Every target of a deployment, through the paged targets route.
fn targets(c: &Client, id: &str) -> Vec<Value> {
    all_pages(c, &format!("/deployments/{id}/targets"), "targets")
}

/// The stages whose gate passed, checked: each (stage, gate) passed once, stages in order,
/// and none of `0..stages` missing when `all` is asked.
fn check_gates(dep: &Value, all: bool) {
    let stages = dep["stages"].as_array().unwrap().len() as u64;
    let mut seen = BTreeSet::new();
    let mut last_stage = 0;
    for g in dep["gates"].as_array().unwrap() {
        if g["verdict"] != json!("pass") {
            continue;
        }
        let stage = g["stage"].as_u64().unwrap();
        let key = (stage, g["gate"].as_str().unwrap().to_string());
        assert!(seen.insert(key.clone()), "gate {key:?} passed twice: {dep}");
        assert!(
            stage >= last_stage,
            "stage {stage} passed after {last_stage}"
        );
        last_stage = stage;
    }
    let passed: BTreeSet<u64> = seen.iter().map(|(s, _)| *s).collect();
    if all {
        assert_eq!(
            passed,
            (0..stages).collect::<BTreeSet<_>>(),
            "a stage's gate is missing: {}",
            dep["gates"]
        );
    }
}

/// Opens the stopped coordinator's database and checks the file.
fn integrity(server: &Coordinator) {
    let store = Store::open(&server.dir.join("floe.db")).unwrap();
    let problems = store.integrity_check().unwrap();
    assert!(problems.is_empty(), "integrity_check: {problems:?}");
}

/// Runs the fleet until `done` says so (checked every tick), killing and restarting the
/// coordinator once when `kill_when` first holds. Returns what `kill_when` saw.
fn drive(
    fleet: &Fleet,
    server: &mut Coordinator,
    limit: Duration,
    mut kill_when: impl FnMut(&Client) -> Option<String>,
    mut done: impl FnMut(&Client) -> bool,
) -> Option<String> {
    let stop = AtomicBool::new(false);
    let client = server.client.clone();
    let mut killed = None;
    fleet
        .run(limit, &stop, |_| {
            if killed.is_none()
                && let Some(what) = kill_when(&client)
            {
                server.kill9();
                let t = Instant::now();
                server.restart();
                println!("killed {what}; restarted in {:?}", t.elapsed());
                killed = Some(what);
            }
            if killed.is_some() && done(&client) {
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        })
        .unwrap();
    killed
}

/// The scenario for `n` simulated devices under `root`: `period` and `active_period` are the
/// devices' report periods idle and mid-deployment, `limit` bounds each driven phase, and
/// `start_kill_after` is how long after the start request the coordinator is killed. With
/// `partial` (for a fleet this machine cannot carry through a whole rollout), the mid-wave
/// phase ends `partial` after the restart instead of at `completed`, checking that the
/// deployment moved on from where it was killed, and the rollback phase rolls that same
/// deployment back (see [`partial_phases`]). Returns one line per thing checked; panics naming
/// the check that failed.
pub fn run(
    root: &Path,
    n: usize,
    period: Duration,
    active_period: Duration,
    limit: Duration,
    start_kill_after: Duration,
    partial: Option<Duration>,
) -> Vec<String> {
    let mut checked = Vec::new();
    let mut server = Coordinator::start_configured(root, "2s", "90s");
    let client = server.client.clone();
    let mut config = LoadConfig::new(&server.url(), n);
    config.token = Some(server.token());
    config.in_flight = 32;
    config.period = period;
    config.active_period = active_period;
    config.trust = Some(floe_wire::artifact::keys::load_trust(&server.dir.join("trust")).unwrap());
    let fleet = Fleet::new(config).unwrap();
    assert_eq!(fleet.allow_all().unwrap(), (n as u64, 0));
    let v1 = server.publish("Kill9", definition());

    // 1. kill -9 while the start runs: after the restart the deployment is either not started
    // (pending, every target pending) or started (running, every target accounted for).
    let dep = call(
        &client,
        Method::Post,
        "/deployments",
        Some(&deployment_body(&v1)),
    );
    let id = dep["id"].as_str().unwrap().to_string();
    let url = server.url();
    let token = server.token();
    let starter = std::thread::spawn(move || {
        let c = Client::new(&url, Some(token)).unwrap();
        c.call(Method::Post, &format!("/deployments/{id}/start"), None)
            .map(|r| r.status)
    });
    std::thread::sleep(start_kill_after);
    server.kill9();
    let answered = starter.join().unwrap();
    integrity(&server);
    server.restart();
    let id = dep["id"].as_str().unwrap().to_string();
    let after = call(&client, Method::Get, &format!("/deployments/{id}"), None);
    assert_eq!(after["total_targets"], json!(n), "{after}");
    let all = targets(&client, &id);
    assert_eq!(all.len(), n);
    match after["status"].as_str().unwrap() {
        "pending" => {
            assert!(all.iter().all(|t| t["status"] == json!("pending")));
            checked.push(format!(
                "start: killed {start_kill_after:?} into it, before it committed (answer: {answered:?}); \
                 after restart pending with all {n} targets pending; started again"
            ));
            call(
                &client,
                Method::Post,
                &format!("/deployments/{id}/start"),
                None,
            );
        }
        "running" => {
            let counted = after["offline_targets"].as_u64().unwrap()
                + after["pending_targets"].as_u64().unwrap();
            assert_eq!(counted, n as u64, "{after}");
            checked.push(format!(
                "start: killed {start_kill_after:?} into it, after it committed (answer: {answered:?}); \
                 after restart running with all {n} targets offline or pending"
            ));
        }
        other => panic!("after a kill during start the deployment is {other}: {after}"),
    }
    checked.push("start: integrity_check ok after the kill".into());

    if let Some(after_restart) = partial {
        partial_phases(
            &fleet,
            &mut server,
            &id,
            n,
            limit,
            after_restart,
            &mut checked,
        );
        server.kill9();
        integrity(&server);
        checked.push("end: integrity_check ok".into());
        return checked;
    }

    // 2. kill -9 in the middle of a wave; the devices carry the deployment to its end.
    let dep_path = format!("/deployments/{id}");
    let killed = drive(
        &fleet,
        &mut server,
        limit,
        |c| {
            let d = call(c, Method::Get, &dep_path, None);
            progress(&d);
            let stage = d["current_stage"].as_u64()?;
            let deploying = d["pending_targets"].as_u64()? > 0;
            (d["status"] == json!("running") && stage >= 1 && deploying)
                .then(|| format!("in stage {stage} ({})", d["stages"][stage as usize]["name"]))
        },
        |c| {
            let d = call(c, Method::Get, &dep_path, None);
            d["status"] != json!("running")
        },
    );
    if killed.is_none() {
        let d = call(&client, Method::Get, &dep_path, None);
        panic!(
            "the deployment never reached a wave: {} {}",
            d["status_reason"], d["gates"]
        );
    }
    let done = call(&client, Method::Get, &dep_path, None);
    assert_eq!(done["status"], json!("completed"), "{done}");
    assert_eq!(done["completed_targets"], json!(n), "{done}");
    check_gates(&done, true);
    let all = targets(&client, &id);
    assert_eq!(all.len(), n);
    assert!(
        all.iter().all(|t| t["status"] == json!("success")),
        "a target did not end in success"
    );
    checked.push(format!(
        "mid-wave: killed {}; completed with {n} of {n} targets success, each stage's gate passed once and in order",
        killed.unwrap_or_default()
    ));

    // 3. kill -9 in the middle of a rollback: the operator rolls the next version back in
    // wave 1 and the coordinator dies before the devices have answered.
    let v2 = server.publish_next(&v1, definition());
    let dep2 = call(
        &client,
        Method::Post,
        "/deployments",
        Some(&deployment_body(&v2)),
    );
    let id2 = dep2["id"].as_str().unwrap().to_string();
    call(
        &client,
        Method::Post,
        &format!("/deployments/{id2}/start"),
        None,
    );
    let dep2_path = format!("/deployments/{id2}");
    // The devices' own word (the registry is updated from their reports) about the targets the
    // rollback reached: every such device for a fleet the list route returns whole, an even
    // sample of 2 000 targets otherwise. Each must report the rollback directive applied, and
    // be back on release 1 unless it had committed release 2 before the rollback (the
    // simulated device's rollback returns to its last known good, which a commit moved to 2).
    // Returns (devices checked, those that fail).
    let rolled_back_on_v1 = |c: &Client| -> (usize, Vec<String>) {
        let ts = targets(c, &id2);
        let ids: Vec<&str> = ts
            .iter()
            .step_by((ts.len() / 2000).max(1))
            .filter(|t| t["status"] == json!("rolled_back"))
            .filter_map(|t| t["device_id"].as_str())
            .collect();
        let devices: std::collections::HashMap<String, Value> = if n <= 5000 {
            all_pages(c, "/devices?label=loadtest=1", "devices")
                .iter()
                .map(|d| (d["id"].as_str().unwrap_or_default().to_string(), d.clone()))
                .collect()
        } else {
            ids.iter()
                .map(|id| {
                    (
                        id.to_string(),
                        call(c, Method::Get, &format!("/devices/{id}"), None),
                    )
                })
                .collect()
        };
        let ok = |d: &Value| {
            let applied = d["applied"]["action"] == json!("rollback")
                && d["applied"]["progress"] == json!("done");
            let committed_new = d["last_known_good"]["release"] == json!(2);
            applied && (committed_new || d["installed"]["release"] == json!(1))
        };
        let off = ids
            .iter()
            .filter(|id| !devices.get(**id).is_some_and(ok))
            .map(|id| format!("{id}: {}", devices.get(*id).cloned().unwrap_or_default()))
            .collect();
        (ids.len(), off)
    };
    let killed = kill_after_rollback(&fleet, &mut server, limit, &dep2_path, 1, |c| {
        rolled_back_on_v1(c).1.is_empty()
    });
    assert!(
        killed.is_some(),
        "the second deployment never reached a wave"
    );
    let by_status = rolled_back_targets(&client, &id2, n);
    let (checked_devices, off) = rolled_back_on_v1(&client);
    assert!(
        checked_devices > 0,
        "no target was rolled back: {by_status:?}"
    );
    assert!(
        off.is_empty(),
        "{} rolled-back devices did not apply the rollback back to release 1: {off:?} (targets {by_status:?})",
        off.len()
    );
    checked.push(format!(
        "mid-rollback: killed {}; rolled_back, targets {by_status:?}, {checked_devices} rolled-back devices report the rollback applied and release 1 (or their committed 2)",
        killed.unwrap_or_default()
    ));
    server.kill9();
    integrity(&server);
    checked.push("end: integrity_check ok".into());
    checked
}

/// Phases 2 and 3 for a fleet whose rollout does not finish here. 2: kill -9 in the middle of a
/// wave, then drive the devices `after_restart` more: every target is kept, the gates passed so
/// far passed once and in order, and the deployment moved on (more targets committed than at
/// the kill, or finished). 3: roll that deployment back and kill -9 right after the command:
/// after the restart it ends `rolled_back`, no target is left deploying, and the rolled-back
/// devices checked (an even sample of at most 2 000) report the rollback applied.
fn partial_phases(
    fleet: &Fleet,
    server: &mut Coordinator,
    id: &str,
    n: usize,
    limit: Duration,
    after_restart: Duration,
    checked: &mut Vec<String>,
) {
    let client = server.client.clone();
    let dep_path = format!("/deployments/{id}");
    let mut at_kill: Option<(u64, u64)> = None;
    let mut restarted: Option<Instant> = None;
    let killed = drive(
        fleet,
        server,
        limit,
        |c| {
            let d = call(c, Method::Get, &dep_path, None);
            progress(&d);
            let stage = d["current_stage"].as_u64()?;
            let deploying = d["pending_targets"].as_u64()? > 0;
            let hit = d["status"] == json!("running") && stage >= 1 && deploying;
            hit.then(|| {
                at_kill = Some((stage, d["completed_targets"].as_u64().unwrap_or(0)));
                format!("in stage {stage} ({})", d["stages"][stage as usize]["name"])
            })
        },
        |c| {
            let since = *restarted.get_or_insert_with(Instant::now);
            let d = call(c, Method::Get, &dep_path, None);
            progress(&d);
            d["status"] != json!("running") || since.elapsed() >= after_restart
        },
    );
    let Some(killed) = killed else {
        let d = call(&client, Method::Get, &dep_path, None);
        panic!(
            "the deployment never reached a wave: {} {}",
            d["status_reason"], d["gates"]
        );
    };
    let (stage_at_kill, committed_at_kill) = at_kill.unwrap();
    let d = call(&client, Method::Get, &dep_path, None);
    assert_eq!(d["total_targets"], json!(n), "{d}");
    assert!(
        d["status"] == json!("running") || d["status"] == json!("completed"),
        "after a kill mid-wave the deployment is {}: {}",
        d["status"],
        d["status_reason"]
    );
    check_gates(&d, d["status"] == json!("completed"));
    let stage = d["current_stage"].as_u64().unwrap_or(u64::MAX);
    let committed = d["completed_targets"].as_u64().unwrap();
    assert!(
        stage >= stage_at_kill && committed > committed_at_kill,
        "no progress after the restart: stage {stage_at_kill} -> {stage}, committed {committed_at_kill} -> {committed}"
    );
    let all = targets(&client, id);
    assert_eq!(all.len(), n, "targets listed after the restart");
    checked.push(format!(
        "mid-wave: killed {killed} with {committed_at_kill} targets committed; {:.0} s after the restart {} in stage {stage} with {committed} committed, all {n} targets kept, gates passed once and in order",
        after_restart.as_secs_f64(),
        d["status"]
    ));

    let rolled_back_applied = |c: &Client| -> (usize, Vec<String>) {
        let ts = targets(c, id);
        let rolled: Vec<&str> = ts
            .iter()
            .filter(|t| t["status"] == json!("rolled_back"))
            .filter_map(|t| t["device_id"].as_str())
            .collect();
        let sample: Vec<&str> = rolled
            .iter()
            .step_by((rolled.len() / 2000).max(1))
            .copied()
            .collect();
        let off = sample
            .iter()
            .filter_map(|dev| {
                let d = call(c, Method::Get, &format!("/devices/{dev}"), None);
                let ok = d["applied"]["action"] == json!("rollback")
                    && d["applied"]["progress"] == json!("done");
                (!ok).then(|| format!("{dev}: {}", d["applied"]))
            })
            .collect();
        (sample.len(), off)
    };
    let killed = kill_after_rollback(fleet, server, limit, &dep_path, 0, |c| {
        rolled_back_applied(c).1.is_empty()
    });
    let Some(killed) = killed else {
        let d = call(&client, Method::Get, &dep_path, None);
        panic!(
            "the deployment was not running for its rollback: {}",
            d["status"]
        );
    };
    let by_status = rolled_back_targets(&client, id, n);
    let (sampled, off) = rolled_back_applied(&client);
    assert!(sampled > 0, "no target was rolled back: {by_status:?}");
    assert!(
        off.is_empty(),
        "{} rolled-back devices did not apply the rollback: {off:?}",
        off.len()
    );
    checked.push(format!(
        "mid-rollback: killed {killed}; rolled_back, targets {by_status:?}, {sampled} rolled-back devices checked report the rollback applied"
    ));
}

/// Drives the fleet and, once the deployment at `dep_path` is running in stage `min_stage` or
/// later, sends the rollback command and kills the coordinator right after it; then drives
/// until the deployment is `rolled_back` and `applied` says the devices agree.
fn kill_after_rollback(
    fleet: &Fleet,
    server: &mut Coordinator,
    limit: Duration,
    dep_path: &str,
    min_stage: u64,
    applied: impl Fn(&Client) -> bool,
) -> Option<String> {
    drive(
        fleet,
        server,
        limit,
        |c| {
            let d = call(c, Method::Get, dep_path, None);
            progress(&d);
            if d["status"] != json!("running") || d["current_stage"].as_u64()? < min_stage {
                return None;
            }
            let on_new = d["completed_targets"].as_u64()?;
            let r = call(c, Method::Post, &format!("{dep_path}/rollback"), None);
            Some(format!(
                "right after the rollback command ({on_new} targets on the new version, status {})",
                r["status"]
            ))
        },
        |c| {
            let d = call(c, Method::Get, dep_path, None);
            progress(&d);
            d["status"] == json!("rolled_back") && applied(c)
        },
    )
}

/// A rolled-back deployment's checks that do not depend on the devices: `rolled_back`, all
/// `n` targets kept, gates passed once and in order, no target left deploying. Returns its
/// targets counted by status.
fn rolled_back_targets(
    client: &Client,
    id: &str,
    n: usize,
) -> std::collections::BTreeMap<String, usize> {
    let rolled = call(client, Method::Get, &format!("/deployments/{id}"), None);
    assert_eq!(rolled["status"], json!("rolled_back"), "{rolled}");
    assert_eq!(rolled["total_targets"], json!(n));
    check_gates(&rolled, false);
    let t = targets(client, id);
    assert_eq!(t.len(), n);
    let mut by_status = std::collections::BTreeMap::new();
    for x in &t {
        *by_status
            .entry(x["status"].as_str().unwrap_or("?").to_string())
            .or_insert(0usize) += 1;
    }
    assert!(
        !by_status.contains_key("deploying"),
        "a target is still deploying after the rollback: {by_status:?}"
    );
    by_status
}
