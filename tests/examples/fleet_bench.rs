//! The coordinator's benchmark (issue #7 §7): a canary+waves deployment to 20 real `floed`
//! processes on loopback with 1-second soaks. It prints the wall time from the start command
//! until every device reports the new release committed, and the coordinator's CPU time and
//! peak RSS, and the idle RSS of the device daemons afterwards (3 s after the deployment and,
//! for the figure, `FLEET_IDLE_S` = 130 s after it, once gossipsub's caches have turned over).
//!
//! Run: `cargo run --release -p floe-tests --example fleet_bench` (needs Mosquitto at
//! /usr/sbin/mosquitto). Set `FLEET_N` to change the fleet size. The last line is
//! `devices=<n> soaks_s=<s> wall_s=<t> target_s=<10+s> coordinator_cpu_s=<c>
//! coordinator_cpu_deploy_s=<c> coordinator_peak_rss_mb=<m> floed_idle_rss_mb=<m>`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use floe_tests::Mosquitto;
use floe_tests::coordinator::{Coordinator, Device, temperature_flow, wait};
use serde_json::json;

/// CPU time (user + system) of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    floe_tests::cpu_seconds(pid).unwrap()
}

fn main() {
    let n: usize = std::env::var("FLEET_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
        .clamp(1, 64);
    let broker = Mosquitto::start().unwrap();
    let root = tempfile::tempdir().unwrap();
    let coord = Coordinator::start(root.path());
    let pid = coord.pid().unwrap();
    let regions = ["eu", "us", "ap"];
    let devices: Vec<Device> = (0..n)
        .map(|i| {
            Device::start(
                &coord,
                root.path(),
                &format!("dev-{i:02}"),
                regions[i % regions.len()],
            )
        })
        .collect();
    let refs: Vec<&Device> = devices.iter().collect();
    coord.wait_online(&refs, Duration::from_secs(120));
    println!("{n} devices online");

    let flow = coord.publish("Temperature Alert", temperature_flow(&broker.url()));
    let soak = "1s";
    let soaks_s = 3.0;
    let cfg = json!({
        "canary_percentage": 10, "canary_delay": soak, "timeout": "60s",
        "offline_grace": "30s", "auto_rollback": true, "health_check": true,
        "require_approval": false,
        "waves": [
            {"name": "wave-1", "percentage": 50, "soak": soak, "failure_threshold": 20},
            {"name": "wave-2", "percentage": 50, "soak": soak, "failure_threshold": 20}
        ]
    });
    let cpu_before = cpu_seconds(pid);
    let t0 = Instant::now();
    let dep = coord.deploy(&flow, "canary-waves", &refs, cfg);
    let done = coord.wait_done(&dep, Duration::from_secs(300));
    let completed_s = t0.elapsed().as_secs_f64();
    assert_eq!(
        done.status.as_str(),
        "completed",
        "{:?}",
        done.status_reason
    );
    // "All committed" is the devices' word: every report says release 1, not on trial.
    wait("every device committed", Duration::from_secs(120), || {
        devices
            .iter()
            .all(|d| {
                let r = coord.device(&d.id);
                r["installed"]["release"] == json!(1) && r["on_trial"] == json!(false)
            })
            .then_some(())
    });
    let wall_s = t0.elapsed().as_secs_f64();
    let cpu_deploy = cpu_seconds(pid) - cpu_before;
    let cpu_total = cpu_seconds(pid);
    let peak_mb = floe_tests::proc_status_kb(pid, "VmHWM").unwrap_or(0) as f64 / 1024.0;
    // Device memory once the fleet is idle again: floed daemon + fabric + the example flow.
    // Measured twice: just after the deployment, and once gossipsub's 120-second caches (the
    // duplicate cache and the peer-score delivery records) have turned over, which is the
    // steady state a device idles in.
    println!("deployment completed at {completed_s:.2} s; every device committed at {wall_s:.2} s");
    std::thread::sleep(Duration::from_secs(3));
    let early = idle_rss(&devices);
    println!("floed RSS 3 s after the deployment: {early}");
    let idle_s: u64 = std::env::var("FLEET_IDLE_S")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(130)
        .min(600);
    std::thread::sleep(Duration::from_secs(idle_s.saturating_sub(3)));
    let idle = idle_rss(&devices);
    println!(
        "floed idle RSS {idle_s} s after the deployment (daemon, fabric, {} peers, example flow): {idle}",
        n
    );
    if let Ok(secs) = std::env::var("FLEET_HOLD_S") {
        // Keeps the fleet up for a look at /proc/<pid>/smaps by hand.
        let secs: u64 = secs.parse().unwrap_or(0).min(600);
        for d in &devices {
            println!("device {} pid {:?}", d.id, d.pid());
        }
        std::thread::sleep(Duration::from_secs(secs));
    }
    println!(
        "devices={n} soaks_s={soaks_s:.0} wall_s={wall_s:.2} target_s={:.0} coordinator_cpu_s={cpu_total:.2} coordinator_cpu_deploy_s={cpu_deploy:.2} coordinator_peak_rss_mb={peak_mb:.1} floed_idle_rss_mb={:.1}",
        10.0 + soaks_s,
        idle.median
    );
}

/// Resident memory of the device daemons: median and max of VmRSS, and the median of its
/// anonymous (heap, stacks) and file-backed (the binary's code) parts, in MB.
struct Rss {
    median: f64,
    max: f64,
    anon: f64,
    file: f64,
}

impl std::fmt::Display for Rss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "median {:.1} MB (anonymous {:.1} MB, file-backed {:.1} MB), max {:.1} MB",
            self.median, self.anon, self.file, self.max
        )
    }
}

fn idle_rss(devices: &[Device]) -> Rss {
    let sorted = |field: &str| {
        let mut v: Vec<f64> = devices
            .iter()
            .filter_map(|d| floe_tests::proc_status_kb(d.pid()?, field))
            .map(|kb| kb as f64 / 1024.0)
            .collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let median = |v: &[f64]| v.get(v.len() / 2).copied().unwrap_or(0.0);
    let rss = sorted("VmRSS");
    Rss {
        median: median(&rss),
        max: rss.last().copied().unwrap_or(0.0),
        anon: median(&sorted("RssAnon")),
        file: median(&sorted("RssFile")),
    }
}
