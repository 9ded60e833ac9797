//! The coordinator at fleet scale (issue #14): simulated devices with real keys
//! (`floe_coordinator::loadtest`) against a real `floe serve` with a real SQLite file.
//!
//! For each fleet size (env `COORD_BENCH_SIZES`, default `1000,100000`) it starts a fresh
//! coordinator, allowlists the fleet, and measures three things:
//! 1. ingest: every device reports once per 30 s on average for `COORD_BENCH_INGEST_S`
//!    (default 60) seconds with no deployment: reports/s, coordinator CPU per report, p99 of
//!    the POST, refusals, RSS;
//! 2. start: creating and starting one canary+waves deployment over the whole fleet, and the
//!    slowest `GET /api/v1/flows` answered meanwhile (polled every 50 ms);
//! 3. rollout: the same deployment with 1 s soaks driven to its end by the devices (they report
//!    on every change and every 10 s while mid-deployment, `COORD_BENCH_ACTIVE_S`, and a push
//!    thread stands in for the fabric's gossip);
//!    wall time to `completed`, CPU per report meanwhile. `COORD_BENCH_MAX_PARALLEL` (default
//!    2000) sets the deployment's parallelism; the reference's default is 50.
//!
//! With `COORD_BENCH_FAULTS=1` it runs the fault phase instead, per size: the kill -9
//! scenario of `floe_tests::kill9` (a real `floe serve` killed with SIGKILL during the
//! deployment's start, `COORD_BENCH_KILL_MS` after the start request (default 900), in the
//! middle of a wave and in the middle of a rollback, restarted each time on the same data
//! directory), printing each thing it checked. `COORD_BENCH_PARTIAL_S=<s>` is for a fleet this
//! machine cannot roll out whole (100 000): the mid-wave phase ends `s` seconds after the
//! restart, checking the deployment moved on, and the rollback phase rolls that deployment back.
//!
//! Run: `cargo run --release -p floe-tests --example coordinator_scale`. Each size prints one
//! line `devices=… allow_s=… ingest_reports_per_s=… ingest_cpu_ms_per_report=… ingest_p99_ms=…
//! refused=… start_s=… flows_max_ms=… rollout_s=… rollout_status=… deploy_cpu_ms_per_report=…
//! rss_mb=…`, and the last line compares CPU per report between the smallest and largest size.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use floe_coordinator::client::{Client, Method};
use floe_coordinator::loadtest::{Fleet, LoadConfig};
use floe_tests::coordinator::Coordinator;
use floe_tests::proc_status_kb;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// CPU time (user + system) of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    floe_tests::cpu_seconds(pid).unwrap()
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn call(c: &Client, method: Method, path: &str, body: Option<&Value>) -> Value {
    let reply = c.call(method, path, body).unwrap();
    if reply.text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&reply.text).unwrap()
    }
}

struct Figures {
    devices: usize,
    ingest_cpu_ms: f64,
    line: String,
}

fn run_size(n: usize) -> Figures {
    let root = tempfile::tempdir().unwrap();
    // Devices report every 30 s here; a device is offline after three missed reports, as
    // floed's 10 s heartbeat is against the 30 s default. With 30 s against 30 s every device
    // would flap offline and online once a period.
    let server = Coordinator::start_configured(root.path(), "2s", "90s");
    let pid = server.pid().unwrap();
    let client = server.client.clone();
    let mut config = LoadConfig::new(&server.url(), n);
    config.token = Some(server.token());
    config.in_flight = 32;
    // While deploying, a device reports at floed's default heartbeat (10 s) and on every
    // change; it hears new directives from the push stand-in at once.
    config.active_period = Duration::from_secs(env_u64("COORD_BENCH_ACTIVE_S", 10));
    config.trust = Some(floe_wire::artifact::keys::load_trust(&server.dir.join("trust")).unwrap());
    let fleet = Fleet::new(config).unwrap();
    let t0 = Instant::now();
    fleet.allow_all().unwrap();
    let allow_s = t0.elapsed().as_secs_f64();
    println!("{n} devices allowlisted in {allow_s:.1} s");

    // 1. Ingest without a deployment.
    let ingest_s = env_u64("COORD_BENCH_INGEST_S", 60);
    let stop = AtomicBool::new(false);
    let cpu0 = cpu_seconds(pid);
    let me = std::process::id();
    let sim0 = cpu_seconds(me);
    let stats = fleet
        .run(Duration::from_secs(ingest_s), &stop, |s| {
            if s.elapsed.as_secs() % 10 == 0 {
                println!("  ingest {s}");
            }
        })
        .unwrap();
    let ingest = stats.summary();
    let ingest_cpu_ms = (cpu_seconds(pid) - cpu0) * 1000.0 / ingest.accepted.max(1) as f64;
    // The other side of the same run: the simulator's own CPU (this process: signing,
    // HTTP, scheduling) per report it sent.
    let ingest_sim_ms = (cpu_seconds(me) - sim0) * 1000.0 / ingest.accepted.max(1) as f64;
    println!("  ingest summary {ingest}");

    // 2. Create and start one deployment over the whole fleet.
    let example =
        std::fs::read(floe_tests::workspace_root().join("examples/temperature-alert.json"))
            .unwrap();
    let definition: Value = serde_json::from_slice(&example).unwrap();
    let flow = call(
        &client,
        Method::Post,
        "/flows",
        Some(&json!({"name": "Scale", "definition": definition})),
    );
    let flow_id = flow["id"].as_str().unwrap().to_string();
    call(
        &client,
        Method::Post,
        &format!("/flows/{flow_id}/publish"),
        None,
    );
    let soak = "1s";
    // The reference's default parallelism (max_parallel_deploys: 50) paces a 100 000-device
    // rollout at 50 devices in flight; a fleet that size is deployed with more.
    let max_parallel = env_u64("COORD_BENCH_MAX_PARALLEL", 2000);
    let body = json!({
        "flow_id": flow_id,
        "strategy": "canary-waves",
        "selector": {"labels": {"loadtest": "1"}},
        "config": {
            "canary_delay": soak, "timeout": "120s", "offline_grace": "30s",
            "require_approval": false,
            "max_parallel": max_parallel,
            "waves": [
                {"name": "wave-1", "percentage": 10, "soak": soak},
                {"name": "wave-2", "percentage": 30, "soak": soak},
                {"name": "wave-3", "percentage": 60, "soak": soak}
            ]
        }
    });
    let flows_max_us = AtomicU64::new(0);
    let probing = AtomicBool::new(true);
    let (start_s, dep_id) = std::thread::scope(|scope| {
        scope.spawn(|| {
            while probing.load(Ordering::Relaxed) {
                let t = Instant::now();
                let _ = client.call(Method::Get, "/flows", None);
                flows_max_us.fetch_max(t.elapsed().as_micros() as u64, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        std::thread::sleep(Duration::from_millis(200));
        let t0 = Instant::now();
        let dep = call(&client, Method::Post, "/deployments", Some(&body));
        let id = dep["id"].as_str().unwrap().to_string();
        call(
            &client,
            Method::Post,
            &format!("/deployments/{id}/start"),
            None,
        );
        let took = t0.elapsed().as_secs_f64();
        std::thread::sleep(Duration::from_millis(200));
        probing.store(false, Ordering::Relaxed);
        (took, id)
    });
    let flows_max_ms = flows_max_us.load(Ordering::Relaxed) as f64 / 1000.0;

    // 3. The rollout, driven by the devices.
    let limit = env_u64("COORD_BENCH_ROLLOUT_S", 900);
    let stop = AtomicBool::new(false);
    let cpu0 = cpu_seconds(pid);
    let sim0 = cpu_seconds(me);
    let t0 = Instant::now();
    let mut status = String::from("running");
    let mut finished_s = None;
    let stats = fleet
        .run(Duration::from_secs(limit), &stop, |s| {
            let dep = client
                .call(Method::Get, &format!("/deployments/{dep_id}"), None)
                .ok()
                .and_then(|r| serde_json::from_str::<Value>(&r.text).ok());
            if let Some(d) = dep {
                status = d["status"].as_str().unwrap_or("?").to_string();
                if s.elapsed.as_secs() % 5 == 0 {
                    println!("  rollout {status} {s}");
                }
                if matches!(
                    status.as_str(),
                    "completed" | "failed" | "rolled_back" | "paused"
                ) {
                    if status != "completed" {
                        println!(
                            "  stopped: {status}; last gate {}",
                            d["gates"]
                                .as_array()
                                .and_then(|g| g.last())
                                .unwrap_or(&Value::Null)
                        );
                    }
                    finished_s.get_or_insert(t0.elapsed().as_secs_f64());
                    stop.store(true, Ordering::Relaxed);
                }
            }
        })
        .unwrap();
    let rollout = stats.summary();
    for (what, count) in stats.error_kinds() {
        println!("  rollout error {count} × {what}");
    }
    let deploy_cpu_ms = (cpu_seconds(pid) - cpu0) * 1000.0 / rollout.accepted.max(1) as f64;
    let deploy_sim_ms = (cpu_seconds(me) - sim0) * 1000.0 / rollout.accepted.max(1) as f64;
    let rss_mb = proc_status_kb(pid, "VmHWM").unwrap_or(0) as f64 / 1024.0;
    let line = format!(
        "devices={n} max_parallel={max_parallel} allow_s={allow_s:.1} ingest_reports_per_s={:.0} ingest_cpu_ms_per_report={ingest_cpu_ms:.3} ingest_sim_cpu_ms_per_report={ingest_sim_ms:.3} \
         ingest_p99_ms={:.1} refused={} start_s={start_s:.2} flows_max_ms={flows_max_ms:.1} \
         rollout_s={} rollout_status={status} deploy_cpu_ms_per_report={deploy_cpu_ms:.3} deploy_sim_cpu_ms_per_report={deploy_sim_ms:.3} rss_mb={rss_mb:.0}",
        ingest.rate(),
        ingest.latency_ms.1,
        ingest.refused_busy + ingest.refused_other + ingest.errors,
        finished_s.map_or("unfinished".to_string(), |s| format!("{s:.1}")),
    );
    println!("{line}");
    Figures {
        devices: n,
        ingest_cpu_ms,
        line,
    }
}

fn main() {
    let sizes: Vec<usize> = std::env::var("COORD_BENCH_SIZES")
        .unwrap_or_else(|_| "1000,100000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    if env_u64("COORD_BENCH_FAULTS", 0) == 1 {
        for n in sizes {
            let root = tempfile::tempdir().unwrap();
            let t0 = Instant::now();
            let checked = floe_tests::kill9::run(
                root.path(),
                n,
                Duration::from_secs(30),
                Duration::from_secs(env_u64("COORD_BENCH_ACTIVE_S", 10)),
                Duration::from_secs(env_u64("COORD_BENCH_ROLLOUT_S", 900)),
                Duration::from_millis(env_u64("COORD_BENCH_KILL_MS", 900)),
                // COORD_BENCH_PARTIAL_S: end the mid-wave phase that many seconds after the
                // restart and roll that deployment back (for fleets whose rollout does not
                // finish on this machine).
                match env_u64("COORD_BENCH_PARTIAL_S", 0) {
                    0 => None,
                    s => Some(Duration::from_secs(s)),
                },
            );
            for line in &checked {
                println!("faults devices={n}: {line}");
            }
            println!(
                "faults devices={n}: all checks passed in {:.0} s",
                t0.elapsed().as_secs_f64()
            );
        }
        return;
    }
    let figures: Vec<Figures> = sizes.into_iter().map(run_size).collect();
    println!();
    for f in &figures {
        println!("{}", f.line);
    }
    if let (Some(small), Some(large)) = (figures.first(), figures.last())
        && figures.len() > 1
    {
        println!(
            "cpu_per_report_ratio={:.2} ({} devices {:.3} ms, {} devices {:.3} ms; target <= 2)",
            large.ingest_cpu_ms / small.ingest_cpu_ms.max(1e-9),
            small.devices,
            small.ingest_cpu_ms,
            large.devices,
            large.ingest_cpu_ms
        );
    }
}
