//! `floed fabric`: a fabric-only node. It joins the swarm, seeds or fetches artifacts, and prints
//! what happens as JSON lines on stdout for the test harness and the benchmark. The device agent
//! embeds the same `p2p` module; this command exists so the fabric can be exercised and measured
//! on its own.
//!
//! Two kinds of artifact:
//! - **Signed** (`--seed X.floe`, with a trust store): the bundle is verified against the trust
//!   store and imported into `<data>/chunks`, the artifact layer's chunk store. Its manifest
//!   envelope, exactly as signed, is announced on `floe/announce/1`. A node that trusts the
//!   release key verifies an announcement before gossip forwards it, fetches the chunks into its
//!   own `<data>/chunks`, rebuilds the bundle byte for byte (`<data>/artifacts/<id>.floe`) and
//!   verifies it like any other bundle. A node told to `fetch <id>` without having heard the
//!   announcement asks its peers for the manifest over the direct protocol (`/floe/direct/1`).
//! - **Raw** (`--seed-raw FILE`, no trust store): plain bytes, announced by id only, exported to
//!   `<data>/artifacts/<id>`. For fabric experiments and the benchmark.
//!
//! Besides its flags it reads commands on stdin, one per line, so a harness can start every node
//! first and trigger the transfer when the fleet is connected:
//! `fetch <id>`, `ping` (publish a 1 KiB timestamped health message), `stats`, `quit`, and the
//! fault-injection commands `flood garbage|oversized|subscriptions|unknown|iwant <count>`.
//!
//! Fault injection (tests only, and only in a floed built with the `fault-injection` feature;
//! without it the flags and the `flood` command do not exist): `--fault-corrupt-chunks` makes
//! this node flip a byte of every chunk it serves and lifts its own gossip size limit;
//! `--fault-read-delay-ms` holds what it reads for a while, standing in for link delay; `flood
//! ...` makes it misbehave on command.

use anyhow::{Context, Result, bail};
use clap::Args;
use floe_fabric::node::FabricEvent;
#[cfg(feature = "fault-injection")]
use floe_fabric::node::Flood;
use floe_fabric::signed::{SignedStore, verify_announcement, write_bundle};
use floe_fabric::{self, ArtifactId, FabricConfig, FabricError, RequestHandler, Topic, Validation};
use floe_wire::artifact::{self, BundleReader, ChunkStore, keys};
use floe_wire::clock::{unix_ms, unix_secs};
use floe_wire::proto::{TrustStore, manifest};
use libp2p::PeerId;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Flags of `floed fabric`.
#[derive(Debug, Args)]
pub(crate) struct FabricArgs {
    /// Data directory (identity key, chunk store, manifests, rebuilt artifacts).
    #[arg(long)]
    data_dir: PathBuf,
    /// Listen address (repeatable). Loopback unless given.
    #[arg(long, default_value = "/ip4/127.0.0.1/tcp/0")]
    listen: Vec<libp2p::Multiaddr>,
    /// Bootstrap peer, a multiaddr ending in /p2p/<peer id> (repeatable).
    #[arg(long)]
    bootstrap: Vec<libp2p::Multiaddr>,
    /// Switch LAN discovery (mDNS) on (off unless given).
    #[arg(long)]
    mdns: bool,
    /// mDNS is off by default; kept so older scripts still start.
    #[arg(long, hide = true)]
    no_mdns: bool,
    /// The trust directory (holding trust.cbor) or file. Default: <data-dir>/trust.cbor when it
    /// exists. With a trust store the node deals in signed bundles only.
    #[arg(long)]
    trust: Option<PathBuf>,
    /// Seed this signed bundle (X.floe); needs a trust store.
    #[arg(long)]
    seed: Option<PathBuf>,
    /// Seed this file as raw bytes (no signature; without a trust store only).
    #[arg(long, conflicts_with = "seed")]
    seed_raw: Option<PathBuf>,
    /// Chunk size for --seed-raw, in bytes. Default: as for a signed bundle, the power of two
    /// that cuts the file into about 512 chunks, at least 128 KiB.
    #[arg(long)]
    chunk_size: Option<u32>,
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
    /// Fault injection (tests only; with the `fault-injection` feature).
    #[cfg(feature = "fault-injection")]
    #[command(flatten)]
    fault: FaultArgs,
}

/// The hidden fault-injection flags of `floed fabric`, for the abuse tests and the benchmark.
#[cfg(feature = "fault-injection")]
#[derive(Debug, Args)]
struct FaultArgs {
    /// Fault injection (tests only): serve corrupted chunks.
    #[arg(long, hide = true)]
    fault_corrupt_chunks: bool,
    /// Tests only: hold every byte read from a TCP connection this many milliseconds (1 to
    /// 10 000), standing in for link delay where the kernel has no `sch_netem`.
    #[arg(long, hide = true, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    fault_read_delay_ms: Option<u64>,
}

const ANNOUNCE_MAGIC: &[u8; 4] = b"FANN";
const PING_MAGIC: &[u8; 4] = b"FPNG";
/// The direct request for a manifest: this magic and the artifact id.
const MANIFEST_REQUEST: &[u8; 4] = b"FMAN";
/// Announced ids remembered for duplicate detection (oldest forgotten first).
const SEEN_ANNOUNCEMENTS: usize = 4096;
/// Artifacts whose manifest is being looked for at once; a further `fetch` is refused.
const MAX_WANTED: usize = 64;
/// Announcements waiting for a subscribed peer; a further one is dropped (and printed).
const MAX_UNSENT: usize = 16;
/// Largest manifest envelope file read back from disk (the envelope's own cap is below it).
const MAX_MANIFEST_FILE: u64 = 2 << 20;

/// Announced ids already seen, and their arrival order for forgetting the oldest.
#[derive(Default)]
struct Seen {
    set: HashSet<[u8; 32]>,
    order: VecDeque<[u8; 32]>,
}

impl Seen {
    /// Records `id`; false when it was already there.
    fn insert(&mut self, id: [u8; 32]) -> bool {
        if !self.set.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > SEEN_ANNOUNCEMENTS {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }
}

/// The gossip validator. With a trust store, announcements must be manifest envelopes that
/// verify (Reject otherwise, Ignore when expired or already seen); without one, they are
/// `FANN` + id + timestamp. Health pings are `FPNG` + timestamp + padding; anything else is
/// rejected.
fn validator(trust: Option<Arc<TrustStore>>) -> floe_fabric::Validator {
    let seen: Mutex<Seen> = Mutex::new(Seen::default());
    Arc::new(move |topic, data: &[u8]| match topic {
        Topic::Announce => {
            let id = match &trust {
                Some(trust) => match verify_announcement(data, trust, unix_secs()) {
                    Ok((_, index)) => index.id(),
                    Err(floe_fabric::signed::AnnounceError::Expired { .. }) => {
                        return Validation::Ignore;
                    }
                    Err(_) => return Validation::Reject,
                },
                None if data.len() == 44 && &data[..4] == ANNOUNCE_MAGIC => {
                    let mut id = [0u8; 32];
                    id.copy_from_slice(&data[4..36]);
                    id
                }
                None => return Validation::Reject,
            };
            let fresh = seen.lock().map(|mut seen| seen.insert(id)).unwrap_or(false);
            if fresh {
                Validation::Accept
            } else {
                Validation::Ignore
            }
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
            outln!("{value}");
        } else {
            tracing::info!("{value}");
        }
    }
}

/// Where verified manifest envelopes are kept: `<data>/manifests/<hex id>`.
fn manifest_path(data_dir: &Path, id: &ArtifactId) -> PathBuf {
    data_dir.join("manifests").join(hex::encode(id))
}

/// Reads a kept manifest envelope, if there is one (size-capped).
fn read_manifest(data_dir: &Path, id: &ArtifactId) -> Option<Vec<u8>> {
    let path = manifest_path(data_dir, id);
    let meta = std::fs::metadata(&path).ok()?;
    if meta.len() > MAX_MANIFEST_FILE {
        return None;
    }
    std::fs::read(path).ok()
}

/// Keeps a verified manifest envelope (temp file and rename: whole or absent).
fn write_manifest(data_dir: &Path, id: &ArtifactId, envelope: &[u8]) -> Result<()> {
    let path = manifest_path(data_dir, id);
    let dir = data_dir.join("manifests");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
    std::fs::write(&tmp, envelope).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("renaming to {}", path.display()))
}

/// The direct-request handler: answers `FMAN` + id with the kept manifest envelope of that
/// artifact; declines everything else. It runs on a blocking thread, so reading a file is fine.
fn direct_handler(data_dir: PathBuf) -> RequestHandler {
    Arc::new(move |_peer: PeerId, request: Vec<u8>| {
        if request.len() != 36 || &request[..4] != MANIFEST_REQUEST {
            return None;
        }
        let id: ArtifactId = request[4..].try_into().ok()?;
        read_manifest(&data_dir, &id)
    })
}

/// An artifact whose manifest this node is looking for.
#[derive(Default)]
struct Wanted {
    /// Round-robin position among the connected peers.
    next_peer: usize,
    /// A request is out.
    asking: bool,
    /// The chunks are complete; only the manifest is missing.
    complete: Option<Completion>,
}

#[derive(Clone, Copy)]
struct Completion {
    bytes: u64,
    received: u64,
    elapsed: Duration,
}

/// The answer to a manifest request, back from its task.
type ManifestAnswer = (ArtifactId, PeerId, Result<Vec<u8>, FabricError>);

struct App {
    fabric: floe_fabric::Fabric,
    out: Printer,
    data_dir: PathBuf,
    trust: Option<Arc<TrustStore>>,
    /// Manifests being looked for (at most [`MAX_WANTED`]).
    wanted: HashMap<ArtifactId, Wanted>,
    /// Announcements not yet sent because nobody subscribed yet (at most [`MAX_UNSENT`]).
    unsent: Vec<Vec<u8>>,
    answers: mpsc::Sender<ManifestAnswer>,
}

/// Runs the node until SIGINT/SIGTERM or `quit` on stdin.
pub(crate) async fn run(args: FabricArgs) -> Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let key = floe_fabric::identity::load_or_create(&args.data_dir)
        .context("loading the device identity")?;
    let trust_path = args
        .trust
        .clone()
        .or_else(|| Some(args.data_dir.join(keys::TRUST_FILE)).filter(|p| p.is_file()));
    let trust = match &trust_path {
        Some(path) => Some(Arc::new(
            keys::load_trust(path).context("loading the trust store")?,
        )),
        None => None,
    };
    if args.seed.is_some() && trust.is_none() {
        bail!("seeding a signed bundle needs a trust store (--trust)");
    }
    if args.seed_raw.is_some() && trust.is_some() {
        bail!("--seed-raw is for nodes without a trust store; seed a signed bundle with --seed");
    }
    // Import before the fabric starts: the import verifies the whole bundle and writes its
    // chunks into the same store the fabric then serves them from.
    let imported = match (&args.seed, &trust) {
        (Some(path), Some(trust)) => Some(import_bundle(path, trust, &args.data_dir).await?),
        _ => None,
    };
    let store = SignedStore::open(&args.data_dir).context("opening the chunk store")?;
    let config = FabricConfig {
        listen: args.listen.clone(),
        bootstrap: args.bootstrap.clone(),
        mdns: args.mdns && !args.no_mdns,
        central_pull: args.central_pull,
        upload_slots: args.upload_slots,
        #[cfg(feature = "fault-injection")]
        fault_corrupt_chunks: args.fault.fault_corrupt_chunks,
        #[cfg(feature = "fault-injection")]
        fault_read_delay: args.fault.fault_read_delay_ms.map(Duration::from_millis),
        ..FabricConfig::default()
    };
    let cancel = CancellationToken::new();
    let (fabric, mut events) = floe_fabric::spawn_with_handler(
        key,
        config,
        Box::new(store),
        validator(trust.clone()),
        direct_handler(args.data_dir.clone()),
        cancel.clone(),
    )
    .context("starting the fabric")?;
    let (answers_tx, mut answers) = mpsc::channel(MAX_WANTED);
    let mut app = App {
        fabric,
        out: Printer {
            json: args.json_events,
        },
        data_dir: args.data_dir.clone(),
        trust,
        wanted: HashMap::new(),
        unsent: Vec::new(),
        answers: answers_tx,
    };
    app.out
        .print(json!({"event": "ready", "peer_id": app.fabric.peer_id().to_string()}));

    if let Some((index, envelope)) = imported {
        let id = app
            .fabric
            .serve_index(index)
            .await
            .context("serving the bundle")?;
        write_manifest(&app.data_dir, &id, &envelope)?;
        app.queue_announcement(envelope);
    }
    if let Some(path) = &args.seed_raw {
        let data = tokio::fs::read(path)
            .await
            .with_context(|| format!("reading {}", path.display()))?;
        let chunk_size = args
            .chunk_size
            .unwrap_or_else(|| manifest::chunk_size_for(data.len() as u64));
        let id = app.fabric.seed(data, chunk_size).await.context("seeding")?;
        app.queue_announcement(raw_announcement(&id));
    }
    if let Some(id) = &args.fetch {
        app.fetch(parse_id(id)?).await?;
    }

    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut stdin_open = true;
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
                    if let Err(err) = app.command(&line).await {
                        app.out.print(json!({"event": "error", "message": format!("{err:#}")}));
                    }
                }
                _ => stdin_open = false,
            },
            event = events.recv() => match event {
                Some(event) => app.on_event(event).await,
                None => bail!("the fabric task stopped"),
            },
            Some((id, peer, result)) = answers.recv() => app.on_manifest_answer(id, peer, result).await,
            _ = tick.tick() => app.on_tick().await,
        }
    }
    cancel.cancel();
    Ok(())
}

/// Verifies a bundle against the trust store and imports its chunks into `<data>/chunks`
/// (on a blocking thread). Returns the fabric index and the manifest envelope's exact bytes.
async fn import_bundle(
    path: &Path,
    trust: &Arc<TrustStore>,
    data_dir: &Path,
) -> Result<(floe_fabric::ArtifactIndex, Vec<u8>)> {
    let (path, trust, data_dir) = (
        path.to_path_buf(),
        Arc::clone(trust),
        data_dir.to_path_buf(),
    );
    tokio::task::spawn_blocking(move || -> Result<(floe_fabric::ArtifactIndex, Vec<u8>)> {
        let envelope = BundleReader::open(&path)
            .with_context(|| format!("reading {}", path.display()))?
            .envelope_bytes;
        let store = ChunkStore::open(&data_dir).context("opening the chunk store")?;
        let verified = artifact::import(&path, &trust, &store)
            .with_context(|| format!("{} is not a valid bundle", path.display()))?;
        if verified.value.expires <= unix_secs() {
            bail!("{} has expired", path.display());
        }
        let index =
            floe_fabric::signed::index_of(&verified.value).context("indexing the manifest")?;
        Ok((index, envelope))
    })
    .await
    .context("the import thread failed")?
}

fn raw_announcement(id: &ArtifactId) -> Vec<u8> {
    let mut msg = Vec::with_capacity(44);
    msg.extend_from_slice(ANNOUNCE_MAGIC);
    msg.extend_from_slice(id);
    msg.extend_from_slice(&unix_ms().to_be_bytes());
    msg
}

impl App {
    /// Sends an announcement now if someone listens, else keeps it for the next tick.
    fn queue_announcement(&mut self, message: Vec<u8>) {
        if self.unsent.len() >= MAX_UNSENT {
            self.out
                .print(json!({"event": "error", "message": "too many unsent announcements"}));
            return;
        }
        self.unsent.push(message);
    }

    async fn publish_unsent(&mut self) {
        let mut keep = Vec::new();
        for message in std::mem::take(&mut self.unsent) {
            match self.fabric.publish(Topic::Announce, message.clone()).await {
                Ok(()) => self
                    .out
                    .print(json!({"event": "announced", "bytes": message.len()})),
                // Nobody subscribed yet: try again on the next tick.
                Err(FabricError::NoPeers { .. }) => keep.push(message),
                Err(err) => self
                    .out
                    .print(json!({"event": "error", "message": format!("announcing: {err}")})),
            }
        }
        self.unsent = keep;
    }

    /// Fetches an artifact by id. With a trust store, its manifest comes from disk if kept, or
    /// is asked of peers until one answers with an envelope that verifies and matches the id.
    async fn fetch(&mut self, id: ArtifactId) -> Result<()> {
        if self.trust.is_some()
            && read_manifest(&self.data_dir, &id).is_none()
            && !self.wanted.contains_key(&id)
        {
            if self.wanted.len() >= MAX_WANTED {
                bail!("already looking for {MAX_WANTED} manifests");
            }
            self.wanted.insert(id, Wanted::default());
        }
        self.fabric.fetch(id).await.context("starting the fetch")
    }

    async fn on_tick(&mut self) {
        if !self.unsent.is_empty() {
            self.publish_unsent().await;
        }
        if self.wanted.values().all(|w| w.asking) {
            return;
        }
        let Ok(peers) = self.fabric.connected_peers().await else {
            return;
        };
        if peers.is_empty() {
            return;
        }
        for (id, wanted) in self.wanted.iter_mut().filter(|(_, w)| !w.asking) {
            let peer = peers[wanted.next_peer % peers.len()];
            wanted.next_peer = wanted.next_peer.wrapping_add(1);
            wanted.asking = true;
            let (fabric, answers, id) = (self.fabric.clone(), self.answers.clone(), *id);
            tokio::spawn(async move {
                let mut request = MANIFEST_REQUEST.to_vec();
                request.extend_from_slice(&id);
                let result = fabric.request(peer, request).await;
                let _ = answers.send((id, peer, result)).await;
            });
        }
    }

    async fn on_manifest_answer(
        &mut self,
        id: ArtifactId,
        peer: PeerId,
        result: Result<Vec<u8>, FabricError>,
    ) {
        let Some(wanted) = self.wanted.get_mut(&id) else {
            return;
        };
        wanted.asking = false;
        let (Ok(envelope), Some(trust)) = (result, &self.trust) else {
            return;
        };
        match verify_announcement(&envelope, trust, unix_secs()) {
            Ok((_, index)) if index.id() == id => {
                let complete = self.wanted.remove(&id).and_then(|w| w.complete);
                if let Err(err) = write_manifest(&self.data_dir, &id, &envelope) {
                    self.out.print(json!({"event": "error", "message": format!("{err:#}")}));
                    return;
                }
                self.out.print(json!({"event": "manifest", "id": hex::encode(id), "from": peer.to_string()}));
                if let Some(done) = complete {
                    self.rebuild(id, done).await;
                }
            }
            Ok(_) => self.out.print(json!({"event": "error", "message": format!("{peer} sent the manifest of another artifact")})),
            Err(err) => self.out.print(json!({"event": "error", "message": format!("manifest from {peer}: {err}")})),
        }
    }

    async fn command(&mut self, line: &str) -> Result<()> {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["fetch", id] => self.fetch(parse_id(id)?).await?,
            ["ping"] => {
                let mut msg = vec![0u8; 1024];
                msg[..4].copy_from_slice(PING_MAGIC);
                msg[4..12].copy_from_slice(&unix_ms().to_be_bytes());
                let _ = getrandom::fill(&mut msg[12..44]);
                self.fabric
                    .publish(Topic::Health, msg)
                    .await
                    .context("publishing a ping")?;
            }
            ["stats"] => {
                let s = self.fabric.stats().await?;
                let min_score = s.scores.iter().map(|x| x.1).fold(f64::INFINITY, f64::min);
                #[cfg_attr(not(feature = "fault-injection"), allow(unused_mut))]
                let mut stats = json!({
                    "event": "stats",
                    "connected": s.connected_peers,
                    "banned": s.banned_peers,
                    "downloads": s.downloads,
                    "pending": s.pending_requests,
                    "uploads": s.uploads_in_flight,
                    "chunks_served": s.chunks_served,
                    "busy_answers": s.busy_answers,
                    "flood_rpcs_dropped": s.flood_rpcs_dropped,
                    "dropped_events": s.dropped_events,
                    "min_score": if min_score.is_finite() { min_score } else { 0.0 },
                    "rss_kib": rss_kib(),
                });
                #[cfg(feature = "fault-injection")]
                {
                    stats["fault_rpcs_delivered"] = s.fault_rpcs_delivered.into();
                }
                self.out.print(stats);
            }
            #[cfg(feature = "fault-injection")]
            ["flood", kind, count] => {
                let kind = match *kind {
                    "garbage" => Flood::GarbageGossip,
                    "oversized" => Flood::OversizedGossip,
                    "subscriptions" => Flood::Subscriptions,
                    "unknown" => Flood::UnknownChunks,
                    "iwant" => Flood::Iwant,
                    other => bail!("unknown flood kind {other:?}"),
                };
                let count: u32 = count.parse().context("flood count")?;
                self.fabric.fault_flood(kind, count.min(100_000)).await?;
            }
            _ => bail!("unknown command {line:?}"),
        }
        Ok(())
    }

    /// Every chunk is held: rebuild and verify the signed bundle (or export the raw bytes), on
    /// a blocking thread, and report it.
    async fn rebuild(&mut self, id: ArtifactId, done: Completion) {
        let data_dir = self.data_dir.clone();
        let trust = self.trust.clone();
        let job = tokio::task::spawn_blocking(move || -> Result<(PathBuf, String, bool)> {
            let store = SignedStore::open(&data_dir)?;
            let index = floe_fabric::store::FabricStore::get_index(&store, &id)?
                .ok_or_else(|| anyhow::anyhow!("index missing after completion"))?;
            let dir = data_dir.join("artifacts");
            std::fs::create_dir_all(&dir)?;
            let (path, verified) = match &trust {
                Some(trust) => {
                    let envelope = read_manifest(&data_dir, &id)
                        .ok_or_else(|| anyhow::anyhow!("manifest missing"))?;
                    let path = dir.join(format!("{}.floe", hex::encode(id)));
                    write_bundle(&store, &index, &envelope, &path)?;
                    artifact::verify_file(&path, trust).with_context(|| {
                        format!("the rebuilt {} does not verify", path.display())
                    })?;
                    (path, true)
                }
                None => {
                    let path = dir.join(hex::encode(id));
                    floe_fabric::store::export(&store, &index, &path)?;
                    (path, false)
                }
            };
            let digest = sha256_file(&path)?;
            Ok((path, digest, verified))
        })
        .await;
        let (path, sha, verified) = match job {
            Ok(Ok(v)) => (v.0.display().to_string(), v.1, v.2),
            Ok(Err(err)) => (format!("rebuild failed: {err:#}"), String::new(), false),
            Err(err) => (format!("rebuild failed: {err}"), String::new(), false),
        };
        self.out.print(json!({
            "event": "complete", "id": hex::encode(id), "bytes": done.bytes,
            "received": done.received, "elapsed_ms": done.elapsed.as_millis() as u64,
            "path": path, "sha256": sha, "verified": verified,
        }));
        if self.trust.is_none() {
            // Raw mode: tell others this node holds it too (signed manifests are announced
            // once, by the seed; a second copy would be a gossip duplicate).
            self.queue_announcement(raw_announcement(&id));
        }
    }

    async fn on_event(&mut self, event: FabricEvent) {
        let out = &self.out;
        match event {
            FabricEvent::Listening(addr) => out.print(json!({"event": "listening", "addr": addr.to_string()})),
            FabricEvent::PeerConnected(p) => out.print(json!({"event": "peer_connected", "peer": p.to_string()})),
            FabricEvent::PeerDisconnected(p) => out.print(json!({"event": "peer_disconnected", "peer": p.to_string()})),
            FabricEvent::Seeded { id, chunks } => out.print(json!({"event": "seeded", "id": hex::encode(id), "chunks": chunks})),
            FabricEvent::ChunkReceived { id, chunk, from } => {
                out.print(json!({"event": "chunk", "id": hex::encode(id), "chunk": chunk, "from": from.to_string()}))
            }
            FabricEvent::ArtifactComplete { id, bytes, received, elapsed } => {
                let done = Completion { bytes, received, elapsed };
                if let Some(wanted) = self.wanted.get_mut(&id) {
                    // The manifest is still on its way; rebuild when it arrives.
                    wanted.complete = Some(done);
                    return;
                }
                self.rebuild(id, done).await;
            }
            FabricEvent::PeerSnubbed { peer } => out.print(json!({"event": "snubbed", "peer": peer.to_string()})),
            FabricEvent::PeerBanned { peer, reason } => {
                out.print(json!({"event": "banned", "peer": peer.to_string(), "reason": reason}))
            }
            FabricEvent::Gossip { topic: Topic::Announce, from, source, data } => {
                self.on_announcement(from, source, data).await
            }
            FabricEvent::Gossip { topic, from, data, .. } => {
                let latency = if topic == Topic::Health && data.len() >= 12 {
                    let mut ts = [0u8; 8];
                    ts.copy_from_slice(&data[4..12]);
                    Some(unix_ms().saturating_sub(u64::from_be_bytes(ts)))
                } else {
                    None
                };
                out.print(json!({"event": "gossip", "topic": topic.name(), "from": from.to_string(), "bytes": data.len(), "latency_ms": latency}));
            }
            FabricEvent::GossipRejected { from } => out.print(json!({"event": "gossip_rejected", "from": from.to_string()})),
        }
    }

    /// A validated announcement: with a trust store, keep the manifest and fetch the artifact.
    async fn on_announcement(&mut self, from: PeerId, source: Option<PeerId>, data: Vec<u8>) {
        let source = source.map(|p| p.to_string());
        let Some(trust) = &self.trust else {
            self.out.print(json!({"event": "gossip", "topic": Topic::Announce.name(), "from": from.to_string(), "source": source, "bytes": data.len()}));
            return;
        };
        // The validator checked it already; checking again is cheap and keeps this honest.
        let (verified, index) = match verify_announcement(&data, trust, unix_secs()) {
            Ok(v) => v,
            Err(err) => {
                self.out
                    .print(json!({"event": "error", "message": format!("announcement: {err}")}));
                return;
            }
        };
        let id = index.id();
        self.out.print(json!({
            "event": "announcement", "id": hex::encode(id), "from": from.to_string(),
            "source": source, "name": verified.value.name, "release": verified.value.release,
        }));
        if let Err(err) = write_manifest(&self.data_dir, &id, &data) {
            self.out
                .print(json!({"event": "error", "message": format!("{err:#}")}));
            return;
        }
        // The manifest is here now; a fetch that waited for it rebuilds on completion.
        if let Some(done) = self.wanted.remove(&id).and_then(|w| w.complete) {
            self.rebuild(id, done).await;
            return;
        }
        if let Err(err) = self.fabric.fetch_index(index).await {
            self.out.print(json!({"event": "error", "message": format!("fetching {}: {err}", hex::encode(id))}));
        }
    }
}

fn sha256_file(path: &Path) -> Result<String> {
    use std::io::Read;
    let mut file =
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
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
