//! Switch-gap and rollback-time benchmark of the device agent, plus floed's idle RSS.
//!
//! Run: `cargo run --release -p floe-runtime --example switch_bench` (build `floed` first with
//! `cargo build --release -p floe-runtime --bin floed` for the RSS figure).
//!
//! Two versions of a flow (an `inject` source every 10 ms into a `debug` sink, tagged by
//! version) are installed alternately through the full lifecycle 100 times: stage, smoke test,
//! switch, trial (min_ready 0), commit. The engine's tap records when each sink message leaves;
//! the switch gap is the time from the last message of the old flow to the first of the new
//! one. Then 100 operator rollbacks (each returns to the other slot) are timed from the call
//! to the first message of the restored flow. Both include up to one 10 ms inject period,
//! which the figures print separately as the agent's own stop-to-start time.

#![allow(clippy::expect_used, clippy::unwrap_used)] // A benchmark fails loudly.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use floe_runtime::agent::engine::EngineRunner;
use floe_runtime::agent::{Agent, Outcome};
use floe_runtime::config::Config;
use floe_runtime::slots::{VERSION_FILE, record_for_dir};
use tokio::sync::mpsc;

const ROUNDS: usize = 100;

fn flow(tag: &str) -> String {
    serde_json::json!({
        "nodes": [
            {"id": "tick", "type": "inject", "name": "Tick", "config": {"payload": {"tag": tag}, "interval": "10ms", "once": true}},
            {"id": "out", "type": "debug", "name": "Out", "config": {"level": "debug"}}
        ],
        "connections": [{"source": "tick", "target": "out"}]
    })
    .to_string()
}

fn staged(root: &Path, version: &str) -> PathBuf {
    let dir = root.join(version);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("flow.json"), flow(version)).unwrap();
    let rec = record_for_dir(&dir, version, Vec::new()).unwrap();
    std::fs::write(dir.join(VERSION_FILE), serde_json::to_vec(&rec).unwrap()).unwrap();
    dir
}

fn tag_of(ev: &floe_flow::engine::TapEvent) -> String {
    ev.msg.payload["tag"].as_str().unwrap_or("").to_string()
}

/// Drains the tap up to now, remembering the last event time per tag.
fn drain(
    rx: &mut mpsc::Receiver<floe_flow::engine::TapEvent>,
    last: &mut BTreeMap<String, Instant>,
) {
    while let Ok(ev) = rx.try_recv() {
        last.insert(tag_of(&ev), ev.at);
    }
}

/// Waits for the first event with `tag`.
async fn first_of(
    rx: &mut mpsc::Receiver<floe_flow::engine::TapEvent>,
    tag: &str,
    last: &mut BTreeMap<String, Instant>,
) -> Instant {
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("no message from the new flow")
            .unwrap();
        let t = tag_of(&ev);
        last.insert(t.clone(), ev.at);
        if t == tag {
            return ev.at;
        }
    }
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn print(name: &str, v: &mut [f64]) {
    println!(
        "{name:<34} n={:<4} p50={:>7.2} ms  p99={:>7.2} ms  max={:>7.2} ms",
        v.len(),
        pct(v, 0.5),
        pct(v, 0.99),
        pct(v, 1.0)
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(bench());
    rss();
}

async fn bench() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut cfg = Config::minimal(&data);
    cfg.trial.min_ready = Duration::ZERO;
    cfg.trial.smoke_timeout = Duration::from_millis(20);
    cfg.trial.stop_timeout = Duration::from_millis(200);
    let (tx, mut rx) = mpsc::channel(16 * 1024);
    let runner = EngineRunner { tap: Some(tx) };
    let mut agent = Agent::open(cfg, runner).await.unwrap();
    let a = staged(tmp.path(), "a");
    let b = staged(tmp.path(), "b");
    let mut last = BTreeMap::new();
    let mut gaps = Vec::new();
    let mut agent_gaps = Vec::new();
    for round in 0..=ROUNDS {
        let (from, to, dir) = if round % 2 == 0 {
            ("b", "a", &a)
        } else {
            ("a", "b", &b)
        };
        agent.install_dir(dir, "bench").await.unwrap();
        let first = first_of(&mut rx, to, &mut last).await;
        if round > 0 {
            let old = last.get(from).copied().expect("old flow sent something");
            gaps.push(first.saturating_duration_since(old).as_secs_f64() * 1000.0);
            let m = agent.metrics_text();
            let g = m
                .lines()
                .find(|l| l.starts_with("floe_last_switch_gap_seconds "))
                .unwrap();
            agent_gaps.push(g.rsplit(' ').next().unwrap().parse::<f64>().unwrap() * 1000.0);
        }
        loop {
            tokio::time::sleep(Duration::from_millis(5)).await;
            if let Some(o) = agent.tick().await.unwrap() {
                assert!(matches!(o, Outcome::Committed { .. }), "{o:?}");
                break;
            }
        }
        drain(&mut rx, &mut last);
    }
    let mut rollbacks = Vec::new();
    let mut calls = Vec::new();
    // After an even number of installs the last one was "a" (round 100), so the previous
    // version is "b".
    let mut current = if ROUNDS % 2 == 0 { "a" } else { "b" };
    for _ in 0..ROUNDS {
        tokio::time::sleep(Duration::from_millis(15)).await;
        drain(&mut rx, &mut last);
        let target = if current == "a" { "b" } else { "a" };
        let t0 = Instant::now();
        agent.rollback("bench", "benchmark").await.unwrap();
        calls.push(t0.elapsed().as_secs_f64() * 1000.0);
        let first = first_of(&mut rx, target, &mut last).await;
        rollbacks.push(first.saturating_duration_since(t0).as_secs_f64() * 1000.0);
        current = target;
    }
    println!("switch_bench: {ROUNDS} switches and {ROUNDS} rollbacks, inject every 10 ms");
    print("switch gap (last old -> first new)", &mut gaps);
    print("  agent stop->start inside it", &mut agent_gaps);
    print("rollback (call -> first message)", &mut rollbacks);
    print("  rollback call duration", &mut calls);
    agent.shutdown().await;
}

/// Idle RSS of a real floed daemon running the example flow (simulated DHT22, mqtt_out to a
/// local Mosquitto), when the binaries are built.
fn rss() {
    let exe = std::env::current_exe().unwrap();
    let floed = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("floed"))
        .unwrap();
    if !floed.exists() {
        println!("idle RSS: skipped ({} not built)", floed.display());
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let conf = tmp.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\n"),
    )
    .unwrap();
    let mut mosq = match std::process::Command::new("/usr/sbin/mosquitto")
        .arg("-c")
        .arg(&conf)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            println!("idle RSS: skipped (mosquitto: {e})");
            return;
        }
    };
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut example: serde_json::Value = serde_json::from_slice(
        &std::fs::read(repo.join("examples/temperature-alert.json")).unwrap(),
    )
    .unwrap();
    for v in example["variables"].as_array_mut().unwrap() {
        match v["name"].as_str().unwrap() {
            "simulate" => v["value"] = "true".into(),
            "broker" => v["value"] = format!("mqtt://127.0.0.1:{port}").into(),
            _ => {}
        }
    }
    let dir = tmp.path().join("example");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("flow.json"), example.to_string()).unwrap();
    let rec = record_for_dir(&dir, "1.0", Vec::new()).unwrap();
    std::fs::write(dir.join(VERSION_FILE), serde_json::to_vec(&rec).unwrap()).unwrap();
    let data = tmp.path().join("data");
    let http = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfgp = tmp.path().join("floed.toml");
    std::fs::write(
        &cfgp,
        format!("data_dir = \"{}\"\ndevice_type = \"bench\"\narch = \"x\"\nhttp_listen = \"127.0.0.1:{http}\"\n[trial]\nmin_ready_seconds = 0\n", data.display()),
    )
    .unwrap();
    let st = std::process::Command::new(&floed)
        .arg("install")
        .arg("--config")
        .arg(&cfgp)
        .arg(&dir)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let mut d = std::process::Command::new(&floed)
        .arg("daemon")
        .arg("--config")
        .arg(&cfgp)
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(5));
    let status = std::fs::read_to_string(format!("/proc/{}/status", d.id())).unwrap();
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .unwrap()
        .to_string();
    println!(
        "idle RSS of floed with the example flow after 5 s: {}",
        rss.trim_start_matches("VmRSS:").trim()
    );
    let _ = d.kill();
    let _ = d.wait();
    let _ = mosq.kill();
    let _ = mosq.wait();
}
