//! The flow-engine benchmark: the same 4-hop pipeline (generator burst → switch → change →
//! counting sink) in Floe and, with `--vs-node-red`, in Node-RED 4 in the same run.
//!
//! ```text
//! cargo run --release -p floe-flow --example pipeline_bench -- --vs-node-red
//! ```
//!
//! Floe side: the generator is this program's own task, which builds every message (payload
//! `i % 100`, as Node-RED's function node does) and feeds the switch in batches; the sink is a
//! custom node kind that counts. Best of three runs of several million messages.
//!
//! Node-RED side: /work/shared/bench/node-red-pipeline.json (found as `../shared/bench` from the
//! workspace root), installed once with npm into a stable temp folder, started with a settings
//! file that binds its editor to a free loopback port. Its best regime per the bench README:
//! BENCH_N=10000, three runs, best rate. It logs `DONE n=<count> ms=<elapsed>` when done.
//!
//! Also printed: engine start/stop time for a 20-node flow, peak RSS of both sides, and the idle
//! RSS of `floed run` with the example flow when the release `floed` binary is built.

use anyhow::{Context, Result, bail};
use clap::Parser;
use floe_flow::compiled::{CompiledFlow, CompiledNode, Edge};
use floe_flow::engine::{Emit, Engine, EngineOptions, Process, ProcessFactory};
use floe_flow::msg::Msg;
use floe_flow::nodes::NodeError;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

#[derive(Debug, Parser)]
#[command(about = "Floe vs Node-RED on the same 4-hop pipeline")]
struct Args {
    /// Also run Node-RED 4 (installed with npm on first use).
    #[arg(long)]
    vs_node_red: bool,
    /// Messages per Floe run.
    #[arg(long, default_value_t = 5_000_000)]
    messages: u64,
    /// Runs per side; the best rate counts.
    #[arg(long, default_value_t = 3)]
    runs: u32,
    /// Messages per Node-RED run (its best regime is 10 000).
    #[arg(long, default_value_t = 10_000)]
    node_red_n: u64,
    /// Where Node-RED is installed (reused across runs).
    #[arg(long, default_value = "/tmp/floe-bench-node-red")]
    node_red_dir: PathBuf,
    /// The Node-RED flow; default: ../shared/bench/node-red-pipeline.json from the workspace root.
    #[arg(long)]
    node_red_flow: Option<PathBuf>,
    /// Tokio worker threads for the Floe side.
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

/// The counting sink: counts and wakes the bench when the target is reached.
struct Counter {
    count: Arc<AtomicU64>,
    target: u64,
    done: Arc<Notify>,
}

impl Process for Counter {
    fn process(&mut self, _msg: Msg, _out: &mut Emit<'_>) -> Result<(), NodeError> {
        let c = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        if c == self.target {
            self.done.notify_one();
        }
        Ok(())
    }
}

fn node(id: &str, kind: &str, config: Value, inputs: u32, outputs: u32) -> CompiledNode {
    CompiledNode::by_hand(id, kind, config, inputs, outputs)
}

fn edge(from: usize, to: usize) -> Edge {
    Edge::first_ports(from, to)
}

fn pipeline() -> CompiledFlow {
    CompiledFlow {
        nodes: vec![
            node(
                "sw",
                "switch",
                json!({"property": "payload", "rules": [{"op": "gte", "value": 0}], "check_all": true}),
                1,
                1,
            ),
            node(
                "ch",
                "change",
                json!({"rules": [{"action": "set", "property": "topic", "value": "alert"}]}),
                1,
                1,
            ),
            node("cnt", "counter", json!({}), 1, 0),
        ],
        edges: vec![edge(0, 1), edge(1, 2)],
    }
}

/// One Floe run: returns messages per second.
async fn floe_run(n: u64) -> Result<(f64, floe_flow::engine::FlowMetrics)> {
    let count = Arc::new(AtomicU64::new(0));
    let done = Arc::new(Notify::new());
    let (c, d) = (count.clone(), done.clone());
    let factory: ProcessFactory = Arc::new(move |_| {
        Ok(Box::new(Counter {
            count: c.clone(),
            target: n,
            done: d.clone(),
        }) as Box<dyn Process>)
    });
    let opts = EngineOptions {
        custom: vec![("counter".into(), factory)],
        ..Default::default()
    };
    let batch = opts.batch_size;
    let flow = Engine::start(pipeline(), opts)?;
    let input = flow.input("sw")?;
    let t0 = Instant::now();
    let mut i = 0u64;
    while i < n {
        let end = (i + batch as u64).min(n);
        let b: Vec<Msg> = (i..end).map(|k| Msg::new(Value::from(k % 100))).collect();
        input.send(b).await.context("switch input closed")?;
        i = end;
    }
    drop(input);
    tokio::time::timeout(Duration::from_secs(120), done.notified())
        .await
        .context("the sink did not see every message within 120 s")?;
    let elapsed = t0.elapsed();
    let got = count.load(Ordering::Relaxed);
    if got != n {
        bail!("sink counted {got}, expected {n}");
    }
    let metrics = flow.metrics();
    let report = flow.stop(Duration::from_secs(5)).await;
    if !report.drained {
        bail!("stop did not drain: {report:?}");
    }
    Ok((n as f64 / elapsed.as_secs_f64(), metrics))
}

/// Start and stop time of a 20-node flow (a chain of switch and change nodes into a sink).
async fn start_stop_20() -> Result<(Duration, Duration, Duration, Duration)> {
    let mut starts = Vec::new();
    let mut stops = Vec::new();
    for _ in 0..21 {
        let mut nodes = Vec::new();
        let mut edges = Vec::new();
        for k in 0..19 {
            if k % 2 == 0 {
                nodes.push(node(&format!("n{k}"), "switch", json!({"rules": [{"op": "gt", "value": 30}, {"op": "else"}], "property": "payload.temperature"}), 1, 2));
            } else {
                nodes.push(node(
                    &format!("n{k}"),
                    "change",
                    json!({"rules": [{"action": "set", "property": "topic", "value": "t"}]}),
                    1,
                    1,
                ));
            }
            if k > 0 {
                edges.push(edge(k - 1, k));
            }
        }
        nodes.push(node("sink", "debug", json!({"active": false}), 1, 0));
        edges.push(edge(18, 19));
        let flow = CompiledFlow { nodes, edges };
        let t0 = Instant::now();
        let running = Engine::start(flow, EngineOptions::default())?;
        let t1 = Instant::now();
        running
            .inject("n0", Msg::new(json!({"temperature": 31})))
            .await?;
        let t2 = Instant::now();
        let r = running.stop(Duration::from_secs(1)).await;
        let t3 = Instant::now();
        if !r.drained {
            bail!("20-node flow did not drain");
        }
        starts.push(t1 - t0);
        stops.push(t3 - t2);
    }
    // The first round warms allocator and runtime; report the rest.
    starts.remove(0);
    stops.remove(0);
    starts.sort();
    stops.sort();
    let med = |v: &[Duration]| v[v.len() / 2];
    let max = |v: &[Duration]| v[v.len() - 1];
    Ok((med(&starts), max(&starts), med(&stops), max(&stops)))
}

fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn ensure_node_red(dir: &Path) -> Result<PathBuf> {
    let bin = dir.join("node_modules/.bin/node-red");
    if bin.exists() {
        return Ok(bin);
    }
    eprintln!("installing node-red@4 into {} (once)…", dir.display());
    std::fs::create_dir_all(dir)?;
    let st = Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--prefix"])
        .arg(dir)
        .arg("node-red@4")
        .stdout(Stdio::null())
        .status()
        .context("running npm (is Node.js installed?)")?;
    if !st.success() || !bin.exists() {
        bail!("npm install node-red@4 failed ({st})");
    }
    Ok(bin)
}

/// One Node-RED run: returns (messages per second, peak RSS in kB).
fn node_red_run(bin: &Path, flow: &Path, n: u64) -> Result<(f64, u64)> {
    let user = tempfile::tempdir()?;
    let flow_file = user.path().join("flows.json");
    std::fs::copy(flow, &flow_file).with_context(|| format!("copying {}", flow.display()))?;
    let port = free_port()?;
    let settings = user.path().join("settings.js");
    std::fs::write(
        &settings,
        format!(
            "module.exports = {{ uiPort: {port}, uiHost: \"127.0.0.1\", flowFile: {flow:?}, userDir: {user:?}, \
             logging: {{ console: {{ level: \"warn\", metrics: false, audit: false }} }}, \
             editorTheme: {{ tours: false }}, diagnostics: {{ enabled: false }}, telemetry: {{ enabled: false }} }};\n",
            flow = flow_file.display().to_string(),
            user = user.path().display().to_string(),
        ),
    )?;
    let mut child = Command::new(bin)
        .arg("-s")
        .arg(&settings)
        .arg("-u")
        .arg(user.path())
        .env("BENCH_N", n.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting node-red")?;
    let pid = child.id();
    let stdout = child.stdout.take().context("node-red stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("DONE n=").nth(1) {
                let _ = tx.send(rest.to_string());
                return;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut peak = 0;
    let result = loop {
        peak = peak.max(status_kb(pid, "VmHWM:").unwrap_or(0));
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(rest) => break Ok(rest),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {}
            Err(_) => break Err(anyhow::anyhow!("node-red did not report DONE within 180 s")),
        }
    };
    peak = peak.max(status_kb(pid, "VmHWM:").unwrap_or(0));
    let _ = child.kill();
    let _ = child.wait();
    let rest = result?;
    // rest is "<count> ms=<elapsed>".
    let ms: f64 = rest
        .split("ms=")
        .nth(1)
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.trim_matches(|c: char| !c.is_ascii_digit()).parse().ok())
        .with_context(|| format!("cannot parse node-red's DONE line: {rest}"))?;
    let count: u64 = rest
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if count != n {
        bail!("node-red counted {count}, expected {n}");
    }
    Ok((n as f64 / (ms.max(1.0) / 1000.0), peak))
}

/// Idle RSS of `floed run` with the example flow (simulated sensor, unreachable broker).
fn floed_idle_rss() -> Result<Option<u64>> {
    let exe = std::env::current_exe()?;
    let Some(dir) = exe.parent().and_then(Path::parent) else {
        return Ok(None);
    };
    let floed = dir.join("floed");
    if !floed.exists() {
        return Ok(None);
    }
    let port = free_port()?;
    let mut child = Command::new(&floed)
        .arg("run")
        .arg("--flow")
        .arg(workspace_root().join("examples/temperature-alert.json"))
        .args(["--var", "simulate=true", "--var", "interval=2s"])
        .arg("--mqtt")
        .arg(format!("mqtt://127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    std::thread::sleep(Duration::from_secs(3));
    let rss = status_kb(child.id(), "VmRSS:");
    let alive = child.try_wait()?.is_none();
    let _ = child.kill();
    let _ = child.wait();
    Ok(if alive { rss } else { None })
}

fn main() -> Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    let mut best = 0f64;
    let mut last_metrics = None;
    for run in 1..=args.runs.max(1) {
        let (rate, metrics) = rt.block_on(floe_run(args.messages))?;
        println!(
            "floe run {run}: {} msgs in 4 hops, {rate:.0} msgs/s",
            args.messages
        );
        best = best.max(rate);
        last_metrics = Some(metrics);
    }
    if let Some(m) = last_metrics {
        for n in &m.nodes {
            println!(
                "floe node {:>3}: in={} out={} p50={:?} p95={:?} p99={:?} (per message, per-batch samples)",
                n.id,
                n.msgs_in,
                n.msgs_out,
                n.p50.unwrap_or_default(),
                n.p95.unwrap_or_default(),
                n.p99.unwrap_or_default()
            );
        }
    }
    let floe_peak = status_kb(std::process::id(), "VmHWM:").unwrap_or(0);
    let (s_med, s_max, t_med, t_max) = rt.block_on(start_stop_20())?;
    println!(
        "engine_20_nodes start_median={:.3}ms start_max={:.3}ms stop_median={:.3}ms stop_max={:.3}ms",
        s_med.as_secs_f64() * 1e3,
        s_max.as_secs_f64() * 1e3,
        t_med.as_secs_f64() * 1e3,
        t_max.as_secs_f64() * 1e3
    );
    drop(rt);
    match floed_idle_rss() {
        Ok(Some(kb)) => println!("floed_run_idle_rss_kb={kb}"),
        Ok(None) => println!(
            "floed_run_idle_rss: skipped (build floed in this profile: cargo build --release -p floe-runtime --bin floed; needs validate::compile)"
        ),
        Err(e) => println!("floed_run_idle_rss: skipped ({e:#})"),
    }

    if !args.vs_node_red {
        println!("floe_msgs_per_s={best:.0}");
        println!("floe_peak_rss_kb={floe_peak}");
        return Ok(());
    }
    let bin = ensure_node_red(&args.node_red_dir)?;
    let flow = args
        .node_red_flow
        .clone()
        .unwrap_or_else(|| workspace_root().join("../shared/bench/node-red-pipeline.json"));
    let mut nr_best = 0f64;
    let mut nr_peak = 0u64;
    for run in 1..=args.runs.max(1) {
        let (rate, peak) = node_red_run(&bin, &flow, args.node_red_n)?;
        println!(
            "node-red run {run}: {} msgs, {rate:.0} msgs/s, peak rss {peak} kB",
            args.node_red_n
        );
        nr_best = nr_best.max(rate);
        nr_peak = nr_peak.max(peak);
    }
    println!(
        "floe_msgs_per_s={best:.0} node_red_msgs_per_s={nr_best:.0} ratio={:.1}",
        best / nr_best.max(1.0)
    );
    println!("floe_peak_rss_kb={floe_peak}");
    println!("node_red_peak_rss_kb={nr_peak}");
    Ok(())
}
