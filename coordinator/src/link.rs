//! The coordinator on the fabric: it seeds artifacts, keeps each device's current directive
//! posted on `floe/directive/1`, and receives the devices' signed reports from
//! `floe/health/1`.
//!
//! Why this shape: directives are desired state (DESIGN.md "Protocol principles"), so the link
//! does not send a directive once and hope; it keeps the newest post per device and publishes
//! it again every `republish` until it is withdrawn or superseded by a higher generation.
//! Gossipsub drops a message whose bytes it has seen recently (the message id is the digest of
//! the bytes), so a re-publication only reaches a device that missed the first one when the
//! bytes differ: the service's loop calls [`Link::post`] each round with a freshly signed post
//! (a new `issued_at`), and the link publishes it at once and keeps it for later rounds.
//!
//! The link holds no database and no signing key: the service signs directives and decides
//! what each device should do; the link only carries posts and reports. Reports are opened
//! over their exact bytes ([`open_report`]), must name the device id that is the hex of their
//! own key (the id a `floed` derives from its identity), and must carry a sequence number
//! higher than the last one seen from that device, so a replayed or reordered report is
//! dropped. They are handed over through a bounded channel; when the service falls behind, new
//! reports are dropped and counted ([`LinkStats::reports_dropped`]) rather than queued without
//! bound, which is safe because devices report again at every heartbeat.
//!
//! Devices also send their signed report straight to the coordinator over the direct protocol
//! `/floe/direct/1` at every heartbeat, and the answer is their current directive post when
//! they are behind it (DESIGN.md: "a device that was offline asks for its current directive
//! when it comes back"). Gossip only delivers a post whose bytes are new to the mesh, so a
//! device that was down when a post went out would otherwise wait for the next re-signed copy;
//! the direct answer brings it the directive within one heartbeat. The link only carries that
//! exchange: the handler is the application's ([`LinkConfig::direct`]), and [`admit_direct`]
//! holds the checks a direct report must pass, which are the gossip path's plus one more: the
//! peer that sent it must own the key that signed it.
//!
//! Shape (DESIGN.md "Async shape"): one task owns the post table and the sequence table and
//! waits on a biased select (shutdown, commands, fabric events, the republish timer); [`Link`]
//! is a cloneable handle that sends commands with a oneshot for the reply.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use floe_fabric::index::{ArtifactIndex, IndexError};
use floe_fabric::node::FabricEvent;
use floe_fabric::signed::{SignedStore, index_of};
use floe_fabric::{self, Fabric, FabricConfig, FabricError, RequestHandler, Topic, Validation};
use floe_wire::proto::manifest::MAX_MANIFEST_BYTES;
use floe_wire::proto::{
    DeviceReport, DirectivePost, Envelope, Manifest, PostError, SignedError, cbor, open_report,
};
use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Capacity of the command channel (callers wait when it is full).
const COMMAND_CAPACITY: usize = 64;
/// Most listen addresses remembered.
const MAX_LISTEN_ADDRS: usize = 32;

/// How the coordinator joins the fabric.
#[derive(Clone)]
pub struct LinkConfig {
    /// Addresses to listen on (TCP or QUIC multiaddrs).
    pub listen: Vec<Multiaddr>,
    /// Peers to dial at start (multiaddrs ending in `/p2p/<peer id>`).
    pub bootstrap: Vec<Multiaddr>,
    /// Where the identity key and the chunk store live.
    pub data_dir: PathBuf,
    /// The coordinator's libp2p key; None loads or generates `<data_dir>/identity.key`.
    pub identity: Option<Keypair>,
    /// LAN discovery with mDNS (off unless configured).
    pub mdns: bool,
    /// Fabric admission (see [`crate::admission::configure`]); None admits every peer, which
    /// only tests of the link itself want.
    pub admission: Option<floe_fabric::admission::Admission>,
    /// Most connections of peers that are not coordinators (devices, and peers still proving
    /// their membership).
    pub max_connections: u32,
    /// How often every kept post is published again.
    pub republish: Duration,
    /// Capacity of the report channel; reports beyond it are dropped and counted.
    pub report_capacity: usize,
    /// Most devices with a kept post; a post for a further device is refused.
    pub max_posts: usize,
    /// Most devices whose last report sequence is remembered; reports from further devices
    /// are dropped and counted.
    pub max_devices: usize,
    /// The answer to devices' direct requests (`/floe/direct/1`): a signed report in, the
    /// device's current directive post (or nothing) out. None declines every direct request,
    /// so devices fall back to gossip alone.
    pub direct: Option<RequestHandler>,
}

impl std::fmt::Debug for LinkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkConfig")
            .field("listen", &self.listen)
            .field("bootstrap", &self.bootstrap)
            .field("data_dir", &self.data_dir)
            .field(
                "identity",
                &self.identity.as_ref().map(|k| k.public().to_peer_id()),
            )
            .field("mdns", &self.mdns)
            .field("admission", &self.admission)
            .field("max_connections", &self.max_connections)
            .field("republish", &self.republish)
            .field("report_capacity", &self.report_capacity)
            .field("max_posts", &self.max_posts)
            .field("max_devices", &self.max_devices)
            .field("direct", &self.direct.is_some())
            .finish()
    }
}

impl LinkConfig {
    /// The defaults for `data_dir`: listen on loopback on a free TCP port, mDNS off, no
    /// admission, 1024 device connections, republish every 5 s, room for 100 000 devices and
    /// 1024 queued reports.
    pub fn new(data_dir: PathBuf) -> Self {
        let listen = "/ip4/127.0.0.1/tcp/0"
            .parse()
            .map(|a| vec![a])
            .unwrap_or_default();
        LinkConfig {
            listen,
            bootstrap: Vec::new(),
            data_dir,
            identity: None,
            mdns: false,
            admission: None,
            max_connections: 1024,
            republish: Duration::from_secs(5),
            report_capacity: 1024,
            max_posts: 100_000,
            max_devices: 100_000,
            direct: None,
        }
    }
}

/// Why a link operation failed, named by the phase.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// Loading or creating the identity key failed.
    #[error("coordinator identity: {0}")]
    Identity(#[source] floe_fabric::identity::IdentityError),
    /// Creating the data directory failed.
    #[error("chunk store: {}: {source}", path.display())]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Opening the chunk store under the data directory failed.
    #[error("chunk store: {0}")]
    Store(#[source] floe_fabric::store::StoreError),
    /// Starting the fabric failed.
    #[error("starting the fabric: {0}")]
    Start(#[source] FabricError),
    /// The manifest envelope does not decode.
    #[error("manifest: {0}")]
    ManifestEnvelope(#[source] SignedError),
    /// The manifest inside the envelope does not decode.
    #[error("manifest: {0}")]
    ManifestDecode(#[source] cbor::CborError),
    /// The manifest's or the payload's chunk index cannot be built.
    #[error("manifest: {0}")]
    Index(#[source] IndexError),
    /// The payload is not what the manifest describes (the sentence says how).
    #[error("manifest: {0}")]
    Manifest(String),
    /// Seeding the payload failed.
    #[error("seeding: {0}")]
    Seed(#[source] FabricError),
    /// The post does not decode.
    #[error("post for {device}: {source}")]
    PostDecode {
        /// The device.
        device: String,
        /// Why.
        #[source]
        source: PostError,
    },
    /// The post was refused (older generation, too many devices).
    #[error("post for {device}: {reason}")]
    Post {
        /// The device.
        device: String,
        /// Why, for a person.
        reason: String,
    },
    /// The link task has stopped.
    #[error("the link task has stopped")]
    Stopped,
}

/// The link's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Devices with a kept post.
    pub posts: usize,
    /// Posts published (first publications and re-publications that gossip took).
    pub published: u64,
    /// Publications gossip did not take (duplicate bytes, no subscribed peers yet).
    pub publish_skipped: u64,
    /// Reports handed to the service.
    pub reports: u64,
    /// Reports dropped because the service's channel was full.
    pub reports_dropped: u64,
    /// Reports dropped as replays or reordered (sequence not higher than the last one).
    pub reports_stale: u64,
    /// Reports refused (bad signature, device id not the key's, too many devices).
    pub reports_refused: u64,
}

enum Command {
    Post {
        device: String,
        generation: u64,
        bytes: Vec<u8>,
        reply: oneshot::Sender<Result<(), LinkError>>,
    },
    Withdraw {
        device: String,
    },
    ListenAddrs {
        reply: oneshot::Sender<Vec<Multiaddr>>,
    },
    Stats {
        reply: oneshot::Sender<LinkStats>,
    },
}

/// The handle to the running link. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Link {
    commands: mpsc::Sender<Command>,
    fabric: Fabric,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Command")
    }
}

/// Checks that `payload` is exactly the artifact the (unverified) manifest in `envelope`
/// describes, chunk by chunk, and returns the fabric's index of it.
pub fn check_payload(
    envelope: &[u8],
    payload: &[u8],
    chunk_size: u32,
) -> Result<ArtifactIndex, LinkError> {
    let env = Envelope::from_bytes::<Manifest>(envelope).map_err(LinkError::ManifestEnvelope)?;
    let manifest: Manifest = cbor::decode_canonical(&env.payload.0, MAX_MANIFEST_BYTES)
        .map_err(LinkError::ManifestDecode)?;
    if manifest.chunk_size != chunk_size {
        return Err(LinkError::Manifest(format!(
            "chunk size {chunk_size} is not the manifest's {}",
            manifest.chunk_size
        )));
    }
    if payload.len() as u64 != manifest.size {
        return Err(LinkError::Manifest(format!(
            "payload is {} bytes, the manifest says {}",
            payload.len(),
            manifest.size
        )));
    }
    let wanted = index_of(&manifest).map_err(LinkError::Index)?;
    let have = ArtifactIndex::from_bytes(payload, chunk_size).map_err(LinkError::Index)?;
    if let Some(i) = (0..wanted.chunks.len()).find(|&i| wanted.chunks.get(i) != have.chunks.get(i))
    {
        return Err(LinkError::Manifest(format!(
            "chunk {i} of the payload does not match the manifest"
        )));
    }
    if wanted.id() != have.id() {
        return Err(LinkError::Manifest(
            "the payload's chunk list is not the manifest's".to_string(),
        ));
    }
    Ok(wanted)
}

impl Link {
    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, LinkError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| LinkError::Stopped)?;
        rx.await.map_err(|_| LinkError::Stopped)
    }

    /// Stores and serves an artifact so devices can fetch its chunks: `payload` must be
    /// exactly what the manifest in `manifest_envelope` describes, cut into `chunk_size`-byte
    /// chunks. Returns the fabric's artifact id.
    pub async fn seed(
        &self,
        manifest_envelope: &[u8],
        payload: Vec<u8>,
        chunk_size: u32,
    ) -> Result<floe_fabric::ArtifactId, LinkError> {
        let index = check_payload(manifest_envelope, &payload, chunk_size)?;
        let id = self
            .fabric
            .seed(payload, chunk_size)
            .await
            .map_err(LinkError::Seed)?;
        if id != index.id() {
            return Err(LinkError::Manifest(
                "the seeded artifact's id is not the manifest's".to_string(),
            ));
        }
        Ok(id)
    }

    /// Publishes `post_bytes` (an encoded [`DirectivePost`] whose directive has `generation`)
    /// for `device_id` now, and keeps re-publishing it every `republish` until it is withdrawn
    /// or a higher generation replaces it. A post with the same generation replaces the bytes
    /// (a freshly signed copy); a lower generation is refused.
    pub async fn post(
        &self,
        device_id: &str,
        generation: u64,
        post_bytes: Vec<u8>,
    ) -> Result<(), LinkError> {
        let device = device_id.to_string();
        self.call(|reply| Command::Post {
            device,
            generation,
            bytes: post_bytes,
            reply,
        })
        .await?
    }

    /// Stops re-publishing the post for `device_id` (the device reported it done).
    pub async fn withdraw(&self, device_id: &str) -> Result<(), LinkError> {
        self.commands
            .send(Command::Withdraw {
                device: device_id.to_string(),
            })
            .await
            .map_err(|_| LinkError::Stopped)
    }

    /// The addresses the coordinator listens on so far (each ending in `/p2p/<peer id>`).
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, LinkError> {
        self.call(|reply| Command::ListenAddrs { reply }).await
    }

    /// The coordinator's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.fabric.peer_id()
    }

    /// The link's counters.
    pub async fn stats(&self) -> Result<LinkStats, LinkError> {
        self.call(|reply| Command::Stats { reply }).await
    }
}

/// The coordinator's gossip validator: posts must decode (the devices check signatures),
/// reports must be self-signed; announcements are not the coordinator's business.
fn validator() -> floe_fabric::Validator {
    Arc::new(|topic, data: &[u8]| match topic {
        Topic::Directive if DirectivePost::from_bytes(data).is_ok() => Validation::Accept,
        Topic::Directive => Validation::Reject,
        Topic::Health if open_report(data).is_ok() => Validation::Accept,
        Topic::Health => Validation::Reject,
        Topic::Announce => Validation::Ignore,
    })
}

/// Joins the fabric and starts the link task. Returns the handle and the stream of reports
/// (opened, checked, in order per device).
pub async fn spawn(
    cfg: LinkConfig,
    shutdown: CancellationToken,
) -> Result<(Link, mpsc::Receiver<DeviceReport>), LinkError> {
    std::fs::create_dir_all(&cfg.data_dir).map_err(|source| LinkError::DataDir {
        path: cfg.data_dir.clone(),
        source,
    })?;
    let key = match cfg.identity.clone() {
        Some(k) => k,
        None => {
            floe_fabric::identity::load_or_create(&cfg.data_dir).map_err(LinkError::Identity)?
        }
    };
    let store = SignedStore::open(&cfg.data_dir).map_err(LinkError::Store)?;
    let config = FabricConfig {
        listen: cfg.listen.clone(),
        bootstrap: cfg.bootstrap.clone(),
        mdns: cfg.mdns,
        admission: cfg.admission.clone(),
        max_connections: cfg.max_connections,
        ..FabricConfig::default()
    };
    let (fabric, events) = match cfg.direct.clone() {
        Some(handler) => floe_fabric::spawn_with_handler(
            key,
            config,
            Box::new(store),
            validator(),
            handler,
            shutdown.clone(),
        ),
        None => floe_fabric::spawn(key, config, Box::new(store), validator(), shutdown.clone()),
    }
    .map_err(LinkError::Start)?;
    let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_CAPACITY);
    let (report_tx, report_rx) = mpsc::channel(cfg.report_capacity.max(1));
    let gate = ReportGate::new(cfg.max_devices);
    let actor = Actor {
        cfg,
        fabric: fabric.clone(),
        posts: HashMap::new(),
        gate,
        listening: Vec::new(),
        reports: report_tx,
        stats: LinkStats::default(),
    };
    tokio::spawn(actor.run(cmd_rx, events, shutdown));
    Ok((
        Link {
            commands: cmd_tx,
            fabric,
        },
        report_rx,
    ))
}

/// Why a received report is not handed to the service.
#[derive(Debug, thiserror::Error)]
pub enum ReportDrop {
    /// It does not open: bad envelope, bad signature, or a payload that breaks the rules.
    #[error("the report does not open: {0}")]
    Invalid(#[source] SignedError),
    /// Its public key is not an ed25519 key libp2p accepts.
    #[error("report key: {0}")]
    Key(#[source] libp2p::identity::DecodingError),
    /// Its device id is not the hex of the key that signed it.
    #[error("the report's device id is not the hex of its key")]
    Identity,
    /// It came directly from a peer whose key is not the one that signed it.
    #[error("the report came from a peer that did not sign it")]
    NotSender,
    /// Its sequence number is not higher than the last one seen from the device.
    #[error("the report is not newer than the last one")]
    Stale,
    /// The table of devices is full and this device is not in it.
    #[error("the table of devices is full")]
    Full,
}

/// Opens a report that `peer` sent directly and checks it the way the gossip path does
/// (self-signed over its exact bytes, the device id the hex of its key), plus that `peer` is
/// the device itself: its ed25519 peer key must be the key that signed the report, so one
/// peer cannot fetch another device's directive by relaying that device's report. Sequence
/// numbers are the service's business here (it ignores a report not newer than the last).
pub fn admit_direct(peer: PeerId, data: &[u8]) -> Result<DeviceReport, ReportDrop> {
    let report = open_report(data).map_err(ReportDrop::Invalid)?;
    if report.device_id != report.public_key.to_hex() {
        return Err(ReportDrop::Identity);
    }
    let key = libp2p::identity::ed25519::PublicKey::try_from_bytes(&report.public_key.0)
        .map_err(ReportDrop::Key)?;
    let owner = libp2p::identity::PublicKey::from(key).to_peer_id();
    if owner != peer {
        return Err(ReportDrop::NotSender);
    }
    Ok(report)
}

/// The checks every report passes before the service sees it: self-signed over its exact
/// bytes, the device id bound to the signing key, and a sequence number that only grows per
/// device. The table of last sequence numbers holds at most `max_devices` entries; reports
/// from further devices are refused.
#[derive(Debug)]
pub struct ReportGate {
    seqs: HashMap<String, u64>,
    max_devices: usize,
}

impl ReportGate {
    /// An empty gate for at most `max_devices` devices.
    pub fn new(max_devices: usize) -> Self {
        ReportGate {
            seqs: HashMap::new(),
            max_devices,
        }
    }

    /// Opens and checks one report.
    pub fn admit(&mut self, data: &[u8]) -> Result<DeviceReport, ReportDrop> {
        let report = open_report(data).map_err(ReportDrop::Invalid)?;
        if report.device_id != report.public_key.to_hex() {
            return Err(ReportDrop::Identity);
        }
        let full = self.seqs.len() >= self.max_devices;
        match self.seqs.get_mut(&report.device_id) {
            Some(last) if report.seq <= *last => return Err(ReportDrop::Stale),
            Some(last) => *last = report.seq,
            None if full => return Err(ReportDrop::Full),
            None => {
                self.seqs.insert(report.device_id.clone(), report.seq);
            }
        }
        Ok(report)
    }
}

struct KeptPost {
    generation: u64,
    bytes: Vec<u8>,
}

struct Actor {
    cfg: LinkConfig,
    fabric: Fabric,
    posts: HashMap<String, KeptPost>,
    gate: ReportGate,
    listening: Vec<Multiaddr>,
    reports: mpsc::Sender<DeviceReport>,
    stats: LinkStats,
}

enum Event {
    Shutdown,
    Command(Option<Command>),
    Fabric(Option<FabricEvent>),
    Republish,
}

impl Actor {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut events: mpsc::Receiver<FabricEvent>,
        shutdown: CancellationToken,
    ) {
        let mut republish =
            tokio::time::interval(self.cfg.republish.max(Duration::from_millis(10)));
        republish.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut commands_open = true;
        loop {
            let event = tokio::select! {
                biased;
                _ = shutdown.cancelled() => Event::Shutdown,
                c = commands.recv(), if commands_open => Event::Command(c),
                e = events.recv() => Event::Fabric(e),
                _ = republish.tick() => Event::Republish,
            };
            match event {
                Event::Shutdown | Event::Fabric(None) => break,
                Event::Command(None) => commands_open = false,
                Event::Command(Some(cmd)) => self.on_command(cmd).await,
                Event::Fabric(Some(e)) => self.on_fabric(e),
                Event::Republish => {
                    let all: Vec<Vec<u8>> = self.posts.values().map(|p| p.bytes.clone()).collect();
                    for bytes in all {
                        self.publish(bytes).await;
                    }
                }
            }
        }
    }

    async fn publish(&mut self, bytes: Vec<u8>) {
        match self.fabric.publish(Topic::Directive, bytes).await {
            Ok(()) => self.stats.published += 1,
            Err(e) => {
                self.stats.publish_skipped += 1;
                tracing::debug!(error = %e, "directive post not published");
            }
        }
    }

    async fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Post {
                device,
                generation,
                bytes,
                reply,
            } => {
                let result = self.keep(&device, generation, &bytes);
                if result.is_ok() {
                    self.publish(bytes).await;
                }
                let _ = reply.send(result);
            }
            Command::Withdraw { device } => {
                self.posts.remove(&device);
            }
            Command::ListenAddrs { reply } => {
                let _ = reply.send(self.listening.clone());
            }
            Command::Stats { reply } => {
                let mut s = self.stats.clone();
                s.posts = self.posts.len();
                let _ = reply.send(s);
            }
        }
    }

    fn keep(&mut self, device: &str, generation: u64, bytes: &[u8]) -> Result<(), LinkError> {
        let refuse = |reason: String| LinkError::Post {
            device: device.to_string(),
            reason,
        };
        DirectivePost::from_bytes(bytes).map_err(|source| LinkError::PostDecode {
            device: device.to_string(),
            source,
        })?;
        let full = self.posts.len() >= self.cfg.max_posts;
        match self.posts.get_mut(device) {
            Some(kept) if generation < kept.generation => Err(refuse(format!(
                "generation {generation} is older than the kept generation {}",
                kept.generation
            ))),
            Some(kept) => {
                kept.generation = generation;
                kept.bytes = bytes.to_vec();
                Ok(())
            }
            None if full => Err(refuse(format!(
                "{} devices already have a post (the bound)",
                self.cfg.max_posts
            ))),
            None => {
                self.posts.insert(
                    device.to_string(),
                    KeptPost {
                        generation,
                        bytes: bytes.to_vec(),
                    },
                );
                Ok(())
            }
        }
    }

    fn on_fabric(&mut self, event: FabricEvent) {
        match event {
            FabricEvent::Listening(addr) if self.listening.len() < MAX_LISTEN_ADDRS => {
                self.listening.push(addr);
            }
            FabricEvent::Gossip {
                topic: Topic::Health,
                data,
                ..
            } => self.on_report(&data),
            _ => {}
        }
    }

    fn on_report(&mut self, data: &[u8]) {
        let report = match self.gate.admit(data) {
            Ok(r) => r,
            Err(ReportDrop::Stale) => {
                self.stats.reports_stale += 1;
                return;
            }
            Err(why) => {
                self.stats.reports_refused += 1;
                tracing::debug!(?why, "report refused");
                return;
            }
        };
        match self.reports.try_send(report) {
            Ok(()) => self.stats.reports += 1,
            Err(_) => self.stats.reports_dropped += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use floe_wire::artifact::bundle::HEADER_LEN;
    use floe_wire::artifact::{BuildSpec, BundleReader, build};

    fn bundle(dir: &std::path::Path) -> (Vec<u8>, Vec<u8>) {
        let key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
        let mut spec = BuildSpec::new("temp", "1.0.0", 1, 100, 100 + 365 * 86_400);
        spec.chunk_size = Some(4096);
        let flow = vec![b'x'; 10_000];
        let out = dir.join("a.floe");
        build(&spec, &flow, None, &[&key], &out).unwrap();
        let env = BundleReader::open(&out).unwrap().envelope_bytes;
        let all = std::fs::read(&out).unwrap();
        let payload = all[HEADER_LEN as usize + env.len()..].to_vec();
        (env, payload)
    }

    fn signed_report(key: &ed25519_dalek::SigningKey, id: Option<&str>, seq: u64) -> Vec<u8> {
        use floe_wire::proto::report::REPORT_SCHEMA;
        use floe_wire::proto::{Facts, Fixed};
        let public = Fixed(key.verifying_key().to_bytes());
        let r = DeviceReport {
            schema: REPORT_SCHEMA,
            device_id: id.map_or_else(|| public.to_hex(), str::to_string),
            public_key: public,
            seq,
            facts: Facts {
                device_type: "rpi4".into(),
                arch: "aarch64".into(),
                region: String::new(),
                labels: Vec::new(),
                runtime_version: "0.1.0".into(),
            },
            enroll_token: None,
            active: None,
            standby: None,
            last_known_good: None,
            on_trial: false,
            applied: None,
            health: None,
        };
        Envelope::sign(&r, &[key]).unwrap().to_bytes().unwrap()
    }

    #[test]
    fn reports_must_be_self_signed_bound_to_their_key_and_in_order() {
        let a = ed25519_dalek::SigningKey::from_bytes(&[1; 32]);
        let b = ed25519_dalek::SigningKey::from_bytes(&[2; 32]);
        let mut gate = ReportGate::new(1);
        assert_eq!(gate.admit(&signed_report(&a, None, 10)).unwrap().seq, 10);
        assert!(matches!(
            gate.admit(&signed_report(&a, None, 10)),
            Err(ReportDrop::Stale)
        ));
        assert!(matches!(
            gate.admit(&signed_report(&a, None, 9)),
            Err(ReportDrop::Stale)
        ));
        assert_eq!(gate.admit(&signed_report(&a, None, 11)).unwrap().seq, 11);
        // Another device beyond the bound is refused; a device claiming an id that is not its
        // key is refused; bytes that do not open are refused.
        assert!(matches!(
            gate.admit(&signed_report(&b, None, 1)),
            Err(ReportDrop::Full)
        ));
        assert!(matches!(
            gate.admit(&signed_report(&b, Some("dev-1"), 1)),
            Err(ReportDrop::Identity)
        ));
        let mut bytes = signed_report(&a, None, 12);
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(matches!(gate.admit(&bytes), Err(ReportDrop::Invalid(_))));
    }

    /// The libp2p peer id of the device whose identity seed is `seed`.
    fn peer_of(seed: [u8; 32]) -> PeerId {
        let mut bytes = seed;
        Keypair::ed25519_from_bytes(&mut bytes)
            .unwrap()
            .public()
            .to_peer_id()
    }

    #[test]
    fn direct_reports_must_come_from_the_device_that_signed_them() {
        let a = ed25519_dalek::SigningKey::from_bytes(&[1; 32]);
        let b = ed25519_dalek::SigningKey::from_bytes(&[2; 32]);
        let report = admit_direct(peer_of([1; 32]), &signed_report(&a, None, 7)).unwrap();
        assert_eq!(report.seq, 7);
        assert_eq!(report.device_id, report.public_key.to_hex());
        // Device b relaying device a's report is refused, and so is a report whose id is not
        // its key's, even from its own peer.
        assert!(matches!(
            admit_direct(peer_of([2; 32]), &signed_report(&a, None, 8)),
            Err(ReportDrop::NotSender)
        ));
        assert!(matches!(
            admit_direct(peer_of([2; 32]), &signed_report(&b, Some("dev-b"), 1)),
            Err(ReportDrop::Identity)
        ));
        let mut bytes = signed_report(&a, None, 9);
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(matches!(
            admit_direct(peer_of([1; 32]), &bytes),
            Err(ReportDrop::Invalid(_))
        ));
        assert!(matches!(
            admit_direct(peer_of([1; 32]), b"junk"),
            Err(ReportDrop::Invalid(_))
        ));
    }

    #[test]
    fn payload_must_match_the_manifest_chunk_by_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let (env, payload) = bundle(dir.path());
        let index = check_payload(&env, &payload, 4096).unwrap();
        assert_eq!(index.chunks.len(), 3);
        let mut bad = payload.clone();
        bad[5000] ^= 1;
        let err = check_payload(&env, &bad, 4096).unwrap_err().to_string();
        assert!(err.contains("chunk 1"), "{err}");
        let err = check_payload(&env, &payload[1..], 4096)
            .unwrap_err()
            .to_string();
        assert!(err.contains("payload is"), "{err}");
        let err = check_payload(&env, &payload, 8192).unwrap_err().to_string();
        assert!(err.contains("chunk size"), "{err}");
        assert!(check_payload(b"junk", &payload, 4096).is_err());
    }

    #[tokio::test]
    async fn posts_keep_the_newest_generation_and_refuse_older_ones() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = LinkConfig::new(dir.path().to_path_buf());
        cfg.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
        cfg.mdns = false;
        cfg.max_posts = 1;
        let token = CancellationToken::new();
        let (link, _reports) = spawn(cfg, token.clone()).await.unwrap();
        let post = DirectivePost {
            schema: floe_wire::proto::report::POST_SCHEMA,
            directive: floe_wire::proto::ByteBuf(vec![1]),
            manifest: floe_wire::proto::ByteBuf(vec![2]),
        }
        .to_bytes()
        .unwrap();
        link.post("dev-a", 5, post.clone()).await.unwrap();
        link.post("dev-a", 5, post.clone()).await.unwrap();
        let err = link.post("dev-a", 4, post.clone()).await.unwrap_err();
        assert!(err.to_string().contains("older"), "{err}");
        let err = link.post("dev-b", 1, post.clone()).await.unwrap_err();
        assert!(err.to_string().contains("bound"), "{err}");
        let err = link.post("dev-a", 6, b"junk".to_vec()).await.unwrap_err();
        assert!(err.to_string().contains("dev-a"), "{err}");
        assert_eq!(link.stats().await.unwrap().posts, 1);
        link.withdraw("dev-a").await.unwrap();
        link.post("dev-b", 1, post).await.unwrap();
        // Nobody is subscribed, so gossip takes none of the publications.
        let stats = link.stats().await.unwrap();
        assert_eq!(stats.published, 0);
        assert!(stats.publish_skipped >= 3);
        let mut addrs = Vec::new();
        for _ in 0..100 {
            addrs = link.listen_addrs().await.unwrap();
            if !addrs.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            addrs[0].to_string().starts_with("/ip4/127.0.0.1/tcp/"),
            "{addrs:?}"
        );
        token.cancel();
    }
}
