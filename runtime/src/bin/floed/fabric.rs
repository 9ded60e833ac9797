//! `floed fabric`: a fabric-only node. It joins the swarm, seeds or fetches artifacts, and prints
//! what happens as JSON lines on stdout for the test harness and the benchmark. The device agent
//! embeds the same `p2p` module; this command exists so the fabric can be exercised and measured
//! on its own.
//!
//! Besides its flags it reads commands on stdin, one per line, so a harness can start every node
//! first and trigger the transfer when the fleet is connected:
//! `fetch <id>`, `ping` (publish a 1 KiB timestamped health message), `stats`, `quit`, and the
//! fault-injection commands `flood garbage|oversized|subscriptions|unknown <count>`.
//!
//! Fault injection (tests only): `--fault-corrupt-chunks` makes this node flip a byte of every
//! chunk it serves and lifts its own gossip size limit; `flood ...` makes it misbehave on
//! command. Honest deployments never pass these.

use anyhow::{Context, Result, bail};
use clap::Args;
use floe_runtime::p2p::node::{FabricEvent, Flood};
use floe_runtime::p2p::store::FileStore;
use floe_runtime::p2p::{self, ArtifactId, FabricConfig, Topic, Validation};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::collections::{HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::io::AsyncBufReadExt;
use tokio_util::sync::CancellationToken;

/// Flags of `floed fabric`.
#[derive(Debug, Args)]
pub(crate) struct FabricArgs {
    /// Data directory (identity key, chunk store, exported artifacts).
    #[arg(long)]
    data_dir: PathBuf,
    /// Listen address (repeatable).
    #[arg(long, default_value = "/ip4/0.0.0.0/tcp/0")]
    listen: Vec<libp2p::Multiaddr>,
    /// Bootstrap peer, a multiaddr ending in /p2p/<peer id> (repeatable).
    #[arg(long)]
    bootstrap: Vec<libp2p::Multiaddr>,
    /// Switch LAN discovery (mDNS) off.
    #[arg(long)]
    no_mdns: bool,
    /// Seed this file as an artifact.
    #[arg(long)]
    seed: Option<PathBuf>,
    /// Chunk size for --seed, in bytes.
    #[arg(long, default_value_t = p2p::index::DEFAULT_CHUNK_LEN)]
    chunk_size: u32,
    /// Fetch this artifact id (hex) at start.
    #[arg(long)]
    fetch: Option<String>,
    /// Central-pull mode: never serve fetched artifacts, so everyone pulls from the seed.
    #[arg(long)]
    central_pull: bool,
    /// Upload slots (concurrent chunk responses).
    #[arg(long, default_value_t = FabricConfig::default().upload_slots)]
    upload_slots: usize,
    /// Print events as JSON lines on stdout.
    #[arg(long)]
    json_events: bool,
    /// Fault injection (tests only): serve corrupted chunks.
    #[arg(long, hide = true)]
    fault_corrupt_chunks: bool,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

const ANNOUNCE_MAGIC: &[u8; 4] = b"FANN";
const PING_MAGIC: &[u8; 4] = b"FPNG";
/// Announced ids remembered for duplicate detection (oldest forgotten first).
const SEEN_ANNOUNCEMENTS: usize = 4096;

/// Announced ids already seen, and their arrival order for forgetting the oldest.
type SeenIds = (HashSet<[u8; 32]>, VecDeque<[u8; 32]>);

/// The fabric node's gossip validator: announcements are `FANN` + id + timestamp (Ignore when
/// already seen), health pings are `FPNG` + timestamp + padding; anything else is rejected.
fn validator() -> p2p::Validator {
    let seen: Mutex<SeenIds> = Mutex::new((HashSet::new(), VecDeque::new()));
    Arc::new(move |topic, data: &[u8]| match topic {
        Topic::Announce => {
            if data.len() != 44 || &data[..4] != ANNOUNCE_MAGIC {
                return Validation::Reject;
            }
            let mut id = [0u8; 32];
            id.copy_from_slice(&data[4..36]);
            let Ok(mut guard) = seen.lock() else {
                return Validation::Ignore;
            };
            let (set, order) = &mut *guard;
            if !set.insert(id) {
                return Validation::Ignore;
            }
            order.push_back(id);
            if order.len() > SEEN_ANNOUNCEMENTS {
                if let Some(old) = order.pop_front() {
                    set.remove(&old);
                }
            }
            Validation::Accept
        }
        Topic::Health if data.len() >= 12 && &data[..4] == PING_MAGIC => Validation::Accept,
        Topic::Health => Validation::Reject,
        // A fabric-only node holds no coordinator key, so it cannot judge directives.
        Topic::Directive => Validation::Ignore,
    })
}

fn parse_id(text: &str) -> Result<ArtifactId> {
    let bytes = hex::decode(text.trim()).context("artifact id is not hex")?;
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("artifact id must be 32 bytes (64 hex characters)"))
}

struct Printer {
    json: bool,
}

impl Printer {
    fn print(&self, value: serde_json::Value) {
        if self.json {
            println!("{value}");
        } else {
            tracing::info!("{value}");
        }
    }
}

/// Runs the node until SIGINT/SIGTERM or `quit` on stdin.
pub(crate) async fn run(args: FabricArgs) -> Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let key =
        p2p::identity::load_or_create(&args.data_dir).context("loading the device identity")?;
    let store_dir = args.data_dir.join("store");
    let store = FileStore::open(&store_dir).context("opening the chunk store")?;
    let config = FabricConfig {
        listen: args.listen.clone(),
        bootstrap: args.bootstrap.clone(),
        mdns: !args.no_mdns,
        central_pull: args.central_pull,
        upload_slots: args.upload_slots,
        fault_corrupt_chunks: args.fault_corrupt_chunks,
        ..FabricConfig::default()
    };
    let cancel = CancellationToken::new();
    let (fabric, mut events) =
        p2p::spawn(key, config, Box::new(store), validator(), cancel.clone())
            .context("starting the fabric")?;
    let out = Printer {
        json: args.json_events,
    };
    out.print(json!({"event": "ready", "peer_id": fabric.peer_id().to_string()}));

    if let Some(path) = &args.seed {
        let data = tokio::fs::read(path)
            .await
            .with_context(|| format!("reading {}", path.display()))?;
        let id = fabric
            .seed(data, args.chunk_size)
            .await
            .context("seeding")?;
        let _ = announce(&fabric, &id).await;
    }
    if let Some(id) = &args.fetch {
        fabric
            .fetch(parse_id(id)?)
            .await
            .context("starting the fetch")?;
    }

    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut stdin_open = true;
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    loop {
        tokio::select! {
            biased;
            _ = tokio::signal::ctrl_c() => break,
            _ = sigterm.recv() => break,
            line = stdin.next_line(), if stdin_open => match line {
                Ok(Some(line)) => {
                    if line.trim() == "quit" {
                        break;
                    }
                    if let Err(err) = command(&fabric, &out, &line).await {
                        out.print(json!({"event": "error", "message": format!("{err:#}")}));
                    }
                }
                _ => stdin_open = false,
            },
            event = events.recv() => match event {
                Some(event) => on_event(&fabric, &out, &store_dir, &args.data_dir, event).await,
                None => bail!("the fabric task stopped"),
            },
        }
    }
    cancel.cancel();
    Ok(())
}

async fn announce(fabric: &p2p::Fabric, id: &ArtifactId) -> Result<()> {
    let mut msg = Vec::with_capacity(44);
    msg.extend_from_slice(ANNOUNCE_MAGIC);
    msg.extend_from_slice(id);
    msg.extend_from_slice(&now_ms().to_be_bytes());
    fabric
        .publish(Topic::Announce, msg)
        .await
        .context("announcing")
}

async fn command(fabric: &p2p::Fabric, out: &Printer, line: &str) -> Result<()> {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        ["fetch", id] => fabric
            .fetch(parse_id(id)?)
            .await
            .context("starting the fetch")?,
        ["ping"] => {
            let mut msg = vec![0u8; 1024];
            msg[..4].copy_from_slice(PING_MAGIC);
            msg[4..12].copy_from_slice(&now_ms().to_be_bytes());
            let _ = getrandom::fill(&mut msg[12..44]);
            fabric
                .publish(Topic::Health, msg)
                .await
                .context("publishing a ping")?;
        }
        ["stats"] => {
            let s = fabric.stats().await?;
            let min_score = s.scores.iter().map(|x| x.1).fold(f64::INFINITY, f64::min);
            out.print(json!({
                "event": "stats",
                "connected": s.connected_peers,
                "banned": s.banned_peers,
                "downloads": s.downloads,
                "pending": s.pending_requests,
                "uploads": s.uploads_in_flight,
                "chunks_served": s.chunks_served,
                "dropped_events": s.dropped_events,
                "min_score": if min_score.is_finite() { min_score } else { 0.0 },
                "rss_kib": rss_kib(),
            }));
        }
        ["flood", kind, count] => {
            let kind = match *kind {
                "garbage" => Flood::GarbageGossip,
                "oversized" => Flood::OversizedGossip,
                "subscriptions" => Flood::Subscriptions,
                "unknown" => Flood::UnknownChunks,
                other => bail!("unknown flood kind {other:?}"),
            };
            let count: u32 = count.parse().context("flood count")?;
            fabric.fault_flood(kind, count.min(100_000)).await?;
        }
        _ => bail!("unknown command {line:?}"),
    }
    Ok(())
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

async fn on_event(
    fabric: &p2p::Fabric,
    out: &Printer,
    store_dir: &std::path::Path,
    data_dir: &std::path::Path,
    event: FabricEvent,
) {
    match event {
        FabricEvent::Listening(addr) => out.print(json!({"event": "listening", "addr": addr.to_string()})),
        FabricEvent::PeerConnected(p) => out.print(json!({"event": "peer_connected", "peer": p.to_string()})),
        FabricEvent::PeerDisconnected(p) => out.print(json!({"event": "peer_disconnected", "peer": p.to_string()})),
        FabricEvent::Seeded { id, chunks } => out.print(json!({"event": "seeded", "id": hex::encode(id), "chunks": chunks})),
        FabricEvent::ChunkReceived { id, chunk, from } => {
            out.print(json!({"event": "chunk", "id": hex::encode(id), "chunk": chunk, "from": from.to_string()}))
        }
        FabricEvent::ArtifactComplete { id, bytes, received, elapsed } => {
            // Reassemble the artifact off the async threads and report its digest.
            let store_dir = store_dir.to_path_buf();
            let path = data_dir.join("artifacts").join(hex::encode(id));
            let exported = tokio::task::spawn_blocking(move || -> Result<(PathBuf, String)> {
                let store = FileStore::open(&store_dir)?;
                let index = p2p::store::FabricStore::get_index(&store, &id)?
                    .ok_or_else(|| anyhow::anyhow!("index missing after completion"))?;
                std::fs::create_dir_all(path.parent().unwrap_or(&store_dir))?;
                store.export(&index, &path)?;
                let digest = Sha256::digest(std::fs::read(&path)?);
                Ok((path, hex::encode(digest)))
            })
            .await;
            let (path, sha) = match exported {
                Ok(Ok(v)) => (v.0.display().to_string(), v.1),
                Ok(Err(err)) => (format!("export failed: {err:#}"), String::new()),
                Err(err) => (format!("export failed: {err}"), String::new()),
            };
            out.print(json!({
                "event": "complete", "id": hex::encode(id), "bytes": bytes, "received": received,
                "elapsed_ms": elapsed.as_millis() as u64, "path": path, "sha256": sha,
            }));
            let _ = announce(fabric, &id).await;
        }
        FabricEvent::PeerSnubbed { peer } => out.print(json!({"event": "snubbed", "peer": peer.to_string()})),
        FabricEvent::PeerBanned { peer, reason } => {
            out.print(json!({"event": "banned", "peer": peer.to_string(), "reason": reason}))
        }
        FabricEvent::Gossip { topic, from, data, .. } => {
            let latency = if topic == Topic::Health && data.len() >= 12 {
                let mut ts = [0u8; 8];
                ts.copy_from_slice(&data[4..12]);
                Some(now_ms().saturating_sub(u64::from_be_bytes(ts)))
            } else {
                None
            };
            out.print(json!({"event": "gossip", "topic": topic.name(), "from": from.to_string(), "bytes": data.len(), "latency_ms": latency}));
        }
        FabricEvent::GossipRejected { from } => out.print(json!({"event": "gossip_rejected", "from": from.to_string()})),
    }
}
