//! The fabric benchmark: an artifact of S = 64 MiB to N = 16 devices in network namespaces,
//! every link (the seed's too) shaped to 50 Mbit/s each way with 10 ms delay, in peer-to-peer
//! mode and in central-pull mode in the same run; then the latency of a 1 KiB signed gossip
//! message to all 16.
//!
//! Run: `cargo run --release -p floe-tests --example fabric_bench` (as root; it prints why and
//! exits otherwise). `FABRIC_BENCH_MIB` and `FABRIC_BENCH_N` shrink it for a quick look,
//! `FABRIC_BENCH_CHUNK_KIB` sets the chunk size, `FABRIC_BENCH_P2P_ONLY=1` skips central pull.
//!
//! Delay: on a kernel without `sch_netem` the links get rate and no delay, so every node holds
//! what it reads from TCP for the link delay instead (`floed fabric --fault-read-delay-ms`, see
//! `floe_fabric::delay`); `FABRIC_BENCH_NODE_DELAY=0` turns that off.
//!
//! Efficiency is T_min / T with T_min = max(S/U_seed, S/D, N·S/(U_seed + ΣU_devices)) (Kumar
//! and Ross). The last line is machine-readable:
//! `p2p_s=<t> central_s=<t> efficiency=<e> speedup=<central/p2p> gossip_p99_ms=<ms>`.

use anyhow::{Context, Result, bail};
use floe_tests::fabric::{Node, NodeOpts, write_artifact};
use floe_tests::netns::{LinkShape, NetnsFleet, unavailable};
use std::path::Path;
use std::time::{Duration, Instant};

const MBIT: u32 = 50;
const DELAY_MS: u32 = 10;

/// The chunk size: `FABRIC_BENCH_CHUNK_KIB`, else what the product picks for an artifact of
/// `bytes`.
fn chunk_len(bytes: usize) -> u32 {
    match env_or("FABRIC_BENCH_CHUNK_KIB", 0) {
        0 => floe_wire::proto::manifest::chunk_size_for(bytes as u64),
        kib => (kib * 1024) as u32,
    }
}

/// The delay each node holds its TCP reads for: the link delay, when the kernel could not put
/// it on the links (no `sch_netem`) and `FABRIC_BENCH_NODE_DELAY` is not `0`.
fn node_delay_ms(fleet: &NetnsFleet) -> Option<u32> {
    let off = std::env::var("FABRIC_BENCH_NODE_DELAY").is_ok_and(|v| v == "0");
    (!fleet.delay_applied() && !off).then_some(DELAY_MS)
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Run {
    seconds: f64,
    nodes: Vec<Node>,
    seed: Node,
}

fn run_mode(
    fleet: &NetnsFleet,
    root: &Path,
    art: &Path,
    data: &[u8],
    n: usize,
    central: bool,
) -> Result<Run> {
    let mode = if central { "central" } else { "p2p" };
    let dir = root.join(mode);
    let start = |i: usize, opts: NodeOpts| {
        Node::start(NodeOpts {
            data_dir: dir.join(format!("d{i}")),
            listen: Some(format!("/ip4/{}/tcp/0", fleet.addr(i))),
            netns: Some(fleet.devices()[i].clone()),
            read_delay_ms: node_delay_ms(fleet),
            ..opts
        })
    };
    let mut seed = start(
        0,
        NodeOpts {
            seed_raw: Some(art.to_path_buf()),
            chunk_size: Some(chunk_len(data.len())),
            ..NodeOpts::default()
        },
    )?;
    let id = seed.wait_for(Duration::from_secs(120), |e| e["event"] == "seeded")?["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut nodes = Vec::new();
    for i in 1..=n {
        let mut bootstrap = vec![seed.addr.clone()];
        if let Some(prev) = nodes.last() {
            let prev: &Node = prev;
            bootstrap.push(prev.addr.clone());
        }
        nodes.push(start(
            i,
            NodeOpts {
                bootstrap,
                central_pull: central,
                ..NodeOpts::default()
            },
        )?);
    }
    // Give Kademlia a moment to connect the devices to each other.
    let settle = Instant::now() + Duration::from_secs(20);
    loop {
        let mut min = usize::MAX;
        for node in &mut nodes {
            min = min.min(node.stats()?["connected"].as_u64().unwrap_or(0) as usize);
        }
        if min >= n.min(8) || Instant::now() > settle {
            println!("{mode}: every device has at least {min} peers");
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let cpu_before: f64 = std::iter::once(&seed).chain(&nodes).map(cpu_seconds).sum();
    let t0 = Instant::now();
    for node in &mut nodes {
        node.send(&format!("fetch {id}"))?;
    }
    let mut slowest_ms = 0u64;
    let mut each = Vec::new();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let timeline = std::thread::scope(|scope| -> Result<Vec<String>> {
        let sampler = scope.spawn(|| link_timeline(fleet, &stop));
        let waited = wait_all(&nodes, &id, data, mode, &mut each, &mut slowest_ms);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        waited?;
        Ok(sampler.join().unwrap_or_default())
    })?;
    println!("{mode}: link use per second (seed upload; all devices' downloads; all uploads):");
    for line in &timeline {
        println!("  {line}");
    }
    each.sort_unstable();
    println!("{mode}: per-device fetch times (ms, sorted): {each:?}");
    let mut served = Vec::new();
    for node in std::iter::once(&mut seed).chain(nodes.iter_mut()) {
        served.push(node.stats()?["chunks_served"].as_u64().unwrap_or(0));
    }
    println!("{mode}: chunks served (seed first): {served:?}");
    let wall = t0.elapsed().as_secs_f64();
    let cpu: f64 = std::iter::once(&seed)
        .chain(&nodes)
        .map(cpu_seconds)
        .sum::<f64>()
        - cpu_before;
    println!(
        "{mode}: CPU time of all {} processes during the transfer: {cpu:.1} s ({:.0}% of the machine's {} cores)",
        n + 1,
        100.0 * cpu / (wall * cores()),
        cores()
    );
    let seconds = slowest_ms as f64 / 1000.0;
    println!(
        "{mode}: all {n} devices verified; slowest fetch {seconds:.2} s (harness wall {wall:.2} s)"
    );
    Ok(Run {
        seconds,
        nodes,
        seed,
    })
}

/// CPU time (user + system) of a node's process so far, in seconds (0 once it is gone).
fn cpu_seconds(node: &Node) -> f64 {
    floe_tests::cpu_seconds(node.pid()).unwrap_or(0.0)
}

fn cores() -> f64 {
    std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64)
}

/// Waits for every device to hold the artifact, checks the bytes, and records fetch times.
fn wait_all(
    nodes: &[Node],
    id: &str,
    data: &[u8],
    mode: &str,
    each: &mut Vec<u64>,
    slowest_ms: &mut u64,
) -> Result<()> {
    for node in nodes {
        let done = node.wait_complete(id, Duration::from_secs(1200))?;
        let got = std::fs::read(done["path"].as_str().unwrap_or_default())
            .context("reading an export")?;
        if got != data {
            bail!("{mode}: device {} exported different bytes", node.peer_id);
        }
        let ms = done["elapsed_ms"].as_u64().unwrap_or(0);
        each.push(ms);
        *slowest_ms = (*slowest_ms).max(ms);
    }
    Ok(())
}

/// Samples the links once a second until `stop`: the seed's upload, the devices' downloads
/// (summed) and every upload (summed), in Mbit/s, against what the links allow.
fn link_timeline(fleet: &NetnsFleet, stop: &std::sync::atomic::AtomicBool) -> Vec<String> {
    let mut lines = Vec::new();
    let Ok(mut last) = fleet.link_bytes() else {
        return lines;
    };
    let n = last.len().saturating_sub(1) as f64;
    let mut t = Instant::now();
    let start = t;
    // Bounded: a sample a second for at most 20 minutes.
    for _ in 0..1200 {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
        let Ok(now) = fleet.link_bytes() else { break };
        let dt = t.elapsed().as_secs_f64();
        t = Instant::now();
        let mbit = |b: u64| b as f64 * 8.0 / 1e6 / dt;
        let seed_up = mbit(now[0].0.saturating_sub(last[0].0));
        let down: u64 = now
            .iter()
            .zip(&last)
            .skip(1)
            .map(|(a, b)| a.1.saturating_sub(b.1))
            .sum();
        let up: u64 = now
            .iter()
            .zip(&last)
            .map(|(a, b)| a.0.saturating_sub(b.0))
            .sum();
        lines.push(format!(
            "t={:>4.1}s seed {:>5.1}/{MBIT}  down {:>6.1}/{:.0}  up {:>6.1}/{:.0}",
            start.elapsed().as_secs_f64(),
            seed_up,
            mbit(down),
            n * f64::from(MBIT),
            mbit(up),
            (n + 1.0) * f64::from(MBIT),
        ));
        last = now;
    }
    lines
}

fn gossip_p99(run: &mut Run, messages: usize) -> Result<f64> {
    let marks: Vec<usize> = run.nodes.iter().map(Node::event_count).collect();
    for _ in 0..messages {
        run.seed.send("ping")?;
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(3));
    let mut latencies = Vec::new();
    for (node, mark) in run.nodes.iter().zip(marks) {
        let got: Vec<u64> = node.events()[mark..]
            .iter()
            .filter(|e| e["event"] == "gossip" && e["topic"] == "floe/health/1")
            .filter_map(|e| e["latency_ms"].as_u64())
            .collect();
        if got.len() < messages {
            println!(
                "gossip: device {} received {} of {messages}",
                node.peer_id,
                got.len()
            );
        }
        latencies.extend(got);
    }
    let expected = messages * run.nodes.len();
    // Missing deliveries count as infinitely late.
    latencies.resize(expected.max(latencies.len()), u64::MAX);
    latencies.sort_unstable();
    let idx = ((expected as f64) * 0.99).ceil() as usize;
    let p99 = latencies[idx.saturating_sub(1).min(latencies.len() - 1)];
    Ok(if p99 == u64::MAX {
        f64::INFINITY
    } else {
        p99 as f64
    })
}

fn main() -> Result<()> {
    if let Some(reason) = unavailable() {
        println!("skipping the fabric benchmark: {reason}");
        return Ok(());
    }
    let mib = env_or("FABRIC_BENCH_MIB", 64);
    let n = env_or("FABRIC_BENCH_N", 16);
    let shape = LinkShape {
        mbit: MBIT,
        delay_ms: DELAY_MS,
        loss_pct: 0.0,
    };
    let fleet = NetnsFleet::create(n + 1, shape)?;
    println!(
        "fleet: seed + {n} devices, {MBIT} Mbit/s each way, {} ms delay{}, {} KiB chunks",
        DELAY_MS,
        if fleet.delay_applied() {
            " (netem)"
        } else if node_delay_ms(&fleet).is_some() {
            " (no netem in this kernel: held in each node's TCP reads instead)"
        } else {
            " (NOT applied: no netem in this kernel, FABRIC_BENCH_NODE_DELAY=0)"
        },
        chunk_len(mib << 20) / 1024
    );
    let root = tempfile::tempdir()?;
    let art = root.path().join("artifact.bin");
    let data = write_artifact(&art, mib * 1024 * 1024, 42)?;
    let s_bits = (data.len() * 8) as f64;
    let u = f64::from(MBIT) * 1e6;
    let t_min = (s_bits / u)
        .max(s_bits / u)
        .max(n as f64 * s_bits / (u + n as f64 * u));

    let mut p2p = run_mode(&fleet, root.path(), &art, &data, n, false)?;
    let gossip = gossip_p99(&mut p2p, 50)?;
    let p2p_s = p2p.seconds;
    drop(p2p);
    let _ = std::fs::remove_dir_all(root.path().join("p2p"));
    // FABRIC_BENCH_P2P_ONLY=1 skips the (slow) central-pull run, for quick iterations; the
    // recorded figures always come from a full run.
    let central_s = if std::env::var_os("FABRIC_BENCH_P2P_ONLY").is_some() {
        f64::NAN
    } else {
        let central = run_mode(&fleet, root.path(), &art, &data, n, true)?;
        central.seconds
    };

    let efficiency = t_min / p2p_s;
    println!("S = {mib} MiB, N = {n}, T_min = {t_min:.2} s");
    println!(
        "p2p_s={p2p_s:.2} central_s={central_s:.2} efficiency={efficiency:.2} speedup={:.2} gossip_p99_ms={gossip:.0}",
        central_s / p2p_s
    );
    Ok(())
}
