//! The swarm actor: one task owns the libp2p `Swarm`, the chunk store and every download;
//! [`Fabric`] is the cloneable handle the rest of the process talks to it through.
//!
//! The task waits on one biased select: shutdown first, then commands from handles, then swarm
//! events, then a 50 ms tick that drives download deadlines and chunk-map refreshes. Handlers
//! are synchronous functions on [`Node`]. Everything the task keeps has a bound:
//! - connections: the connection-limits behaviour ([`FabricConfig::max_connections`]);
//! - downloads: [`FabricConfig::max_downloads`] (a further fetch is refused);
//! - peers per download and requests per peer: [`super::download::DownloadConfig`];
//! - outstanding outbound requests: [`MAX_PENDING`] (requests beyond it are not sent);
//! - inbound chunk responses being read from disk or written: [`FabricConfig::upload_slots`],
//!   with up to [`FabricConfig::upload_queue`] more requests waiting for a slot (`Busy` beyond
//!   that);
//! - arrived chunks being hashed and stored: [`MAX_VERIFYING`] (beyond it, done in place:
//!   backpressure);
//! - served artifacts: [`MAX_SERVED`] (oldest fetched artifact is no longer served);
//! - per-peer strike counters: one entry per connected peer, dropped on disconnect;
//! - banned peers: [`FabricConfig::max_banned`] (oldest ban lifted first);
//! - events to the observer: [`FabricConfig::event_capacity`] (dropped and counted beyond it);
//! - direct requests: the bounds of [`super::direct`] (outstanding ours, handlers in flight).
//!
//! Chunk maps: a source's map rides along with every chunk it sends; other peers are asked
//! (`Have`) every [`FabricConfig::have_refresh`], peers that do not serve the artifact twenty
//! times less often, and a peer whose map is complete never again. Polling every peer several
//! times a second, a stream each, used to cost more CPU than moving the chunks.
//!
//! Disk I/O and hashing do not run on this task: serving a chunk reads it on tokio's blocking
//! pool, and an arrived chunk is hashed and stored there while the link that brought it is
//! already asked for the next one. The direct protocol's handler runs there too. Each answer
//! comes back through a channel with room for every job in flight, so no job ever waits.

use super::direct::{self, DirectCodec, DirectResponse, RequestHandler};
use super::download::{Arrival, Download, Failure, Received};
use super::gossip::{self, MAX_GOSSIP_BYTES, Topic, Validation, Validator};
use super::guard::{self, GuardEvent, Guarded};
use super::index::{ArtifactId, ArtifactIndex, ChunkHash};
use super::store::{FabricStore, StoreError};
use super::wire::{self, ChunkCodec, Request, Response};
use super::{FabricConfig, FabricError};
use futures::StreamExt;
use libp2p::gossipsub::{self, MessageAcceptance, TopicHash};
use libp2p::identity::Keypair;
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport};
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent, dial_opts::DialOpts};
use libp2p::{
    Multiaddr, PeerId, Swarm, allow_block_list, connection_limits, identify, kad, mdns, noise,
    ping, tcp, yamux,
};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Most outbound requests outstanding at once, over all downloads.
pub const MAX_PENDING: usize = 4096;
/// Most artifacts served at once.
pub const MAX_SERVED: usize = 64;
/// Capacity of the command channel (senders wait when it is full: backpressure).
const COMMAND_CAPACITY: usize = 64;
/// How long one chunk request may take before libp2p fails it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Most arrived chunks being hashed and stored on blocking threads at once. Beyond it a chunk
/// is hashed and stored on the swarm task itself, which slows the network side down
/// (backpressure) rather than queueing without bound.
pub const MAX_VERIFYING: usize = 16;

/// Things the fabric reports to its observer.
#[derive(Debug, Clone)]
pub enum FabricEvent {
    /// Listening on a new address (with our peer id appended).
    Listening(Multiaddr),
    /// A first connection to a peer was established.
    PeerConnected(PeerId),
    /// The last connection to a peer closed.
    PeerDisconnected(PeerId),
    /// An artifact is stored and served.
    Seeded {
        /// Its id.
        id: ArtifactId,
        /// Its chunk count.
        chunks: usize,
    },
    /// A verified chunk arrived and is stored.
    ChunkReceived {
        /// The artifact.
        id: ArtifactId,
        /// The chunk's position.
        chunk: u32,
        /// The peer it came from.
        from: PeerId,
    },
    /// Every chunk of an artifact is held and verified.
    ArtifactComplete {
        /// The artifact.
        id: ArtifactId,
        /// Its length.
        bytes: u64,
        /// Bytes received over the network in this run (less than `bytes` after a resume).
        received: u64,
        /// Time since the fetch began.
        elapsed: Duration,
    },
    /// A peer missed the minimum rate and gets no requests for a while.
    PeerSnubbed {
        /// The peer.
        peer: PeerId,
    },
    /// A peer was banned: disconnected and refused from now on.
    PeerBanned {
        /// The peer.
        peer: PeerId,
        /// Why.
        reason: &'static str,
    },
    /// A gossip message was accepted by the validator.
    Gossip {
        /// Its topic.
        topic: Topic,
        /// The peer that forwarded it.
        from: PeerId,
        /// The peer that published it, as gossipsub's signed message says (strict validation
        /// means gossipsub has checked that signature). `None` only for unsigned messages,
        /// which this fabric's configuration refuses.
        source: Option<PeerId>,
        /// The exact bytes.
        data: Vec<u8>,
    },
    /// A gossip message was rejected by the validator.
    GossipRejected {
        /// The peer that forwarded it.
        from: PeerId,
    },
}

/// A snapshot of the fabric's counters.
#[derive(Debug, Clone, Default)]
pub struct FabricStats {
    /// Peers with at least one connection.
    pub connected_peers: usize,
    /// Peers currently banned.
    pub banned_peers: usize,
    /// Downloads running.
    pub downloads: usize,
    /// Outbound requests outstanding.
    pub pending_requests: usize,
    /// Chunk responses being written.
    pub uploads_in_flight: usize,
    /// Chunk responses sent in total.
    pub chunks_served: u64,
    /// Chunk requests answered `Busy` (every upload slot taken and the queue full): a sign
    /// that `upload_slots` or `upload_queue` is too small for the demand.
    pub busy_answers: u64,
    /// Gossip RPCs dropped unread because their sender had flooded (see [`guard`]).
    pub flood_rpcs_dropped: u64,
    /// Events dropped because the observer was slow.
    pub dropped_events: u64,
    /// Gossipsub score of each connected peer.
    pub scores: Vec<(PeerId, f64)>,
    /// Fault injection only: raw gossipsub RPC streams a peer read to their end.
    pub fault_rpcs_delivered: u64,
}

/// Fault injection for the end-to-end tests: ways for a node to misbehave on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flood {
    /// Publish undecodable messages on the announce topic.
    GarbageGossip,
    /// Publish messages larger than every honest node's gossip limit.
    OversizedGossip,
    /// Subscribe to many topics nobody uses.
    Subscriptions,
    /// Ask every peer for chunks that do not exist.
    UnknownChunks,
    /// Send every peer gossipsub IWANT requests for message ids it never had: `count` RPCs of
    /// [`IWANT_IDS_PER_RPC`] ids each (at most [`MAX_IWANT_RPCS`]), back to back on one raw
    /// `/meshsub/1.1.0` stream per peer. (Gossipsub keeps one inbound stream per connection and
    /// drops the previous one for a new one, so one stream carries the whole flood.)
    Iwant,
}

/// Message ids in one fault-injection IWANT RPC (it stays under the gossip size limit).
pub const IWANT_IDS_PER_RPC: usize = 400;
/// Most IWANT RPCs one flood sends to one peer (about 14 KiB each).
pub const MAX_IWANT_RPCS: u32 = 2000;

/// Encodes one gossipsub RPC holding one IWANT control message for `ids`, framed as gossipsub
/// frames it (an unsigned-varint length, then the protobuf bytes). Fault injection only.
fn iwant_rpc(ids: &[[u8; 32]]) -> Vec<u8> {
    fn varint(mut n: usize, out: &mut Vec<u8>) {
        while n >= 0x80 {
            out.push((n as u8 & 0x7f) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
    }
    fn field(tag: u8, body: &[u8], out: &mut Vec<u8>) {
        out.push(tag);
        varint(body.len(), out);
        out.extend_from_slice(body);
    }
    let mut iwant = Vec::with_capacity(ids.len() * 34);
    for id in ids {
        // ControlIWant.message_ids = 1 (bytes).
        field(0x0a, id, &mut iwant);
    }
    let mut control = Vec::new();
    // ControlMessage.iwant = 2.
    field(0x12, &iwant, &mut control);
    let mut rpc = Vec::new();
    // RPC.control = 3.
    field(0x1a, &control, &mut rpc);
    let mut framed = Vec::with_capacity(rpc.len() + 4);
    varint(rpc.len(), &mut framed);
    framed.extend_from_slice(&rpc);
    framed
}

/// Fault injection only: writes raw bytes on an outbound gossipsub stream and expects no
/// answer. Honest nodes never enable it.
#[derive(Debug, Clone, Copy, Default)]
struct RawRpcCodec;

#[async_trait::async_trait]
impl request_response::Codec for RawRpcCodec {
    type Protocol = libp2p::StreamProtocol;
    type Request = Vec<u8>;
    type Response = ();

    async fn read_request<T>(&mut self, _: &Self::Protocol, _: &mut T) -> std::io::Result<Vec<u8>>
    where
        T: futures::AsyncRead + Unpin + Send,
    {
        Err(std::io::Error::other("outbound only"))
    }

    async fn read_response<T>(&mut self, _: &Self::Protocol, io: &mut T) -> std::io::Result<()>
    where
        T: futures::AsyncRead + Unpin + Send,
    {
        use futures::AsyncReadExt;
        let mut one = [0u8; 1];
        let _ = io.read(&mut one).await?;
        Ok(())
    }

    async fn write_request<T>(
        &mut self,
        _: &Self::Protocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> std::io::Result<()>
    where
        T: futures::AsyncWrite + Unpin + Send,
    {
        use futures::AsyncWriteExt;
        io.write_all(&req).await?;
        io.close().await
    }

    async fn write_response<T>(
        &mut self,
        _: &Self::Protocol,
        _: &mut T,
        _: (),
    ) -> std::io::Result<()>
    where
        T: futures::AsyncWrite + Unpin + Send,
    {
        Ok(())
    }
}

enum Command {
    Serve {
        index: ArtifactIndex,
        reply: oneshot::Sender<Result<ArtifactId, FabricError>>,
    },
    Fetch {
        id: ArtifactId,
        reply: oneshot::Sender<Result<(), FabricError>>,
    },
    Publish {
        topic: Topic,
        data: Vec<u8>,
        reply: oneshot::Sender<Result<(), FabricError>>,
    },
    Dial {
        addr: Multiaddr,
        reply: oneshot::Sender<Result<(), FabricError>>,
    },
    Stats {
        reply: oneshot::Sender<FabricStats>,
    },
    Request {
        peer: PeerId,
        data: Vec<u8>,
        reply: oneshot::Sender<Result<Vec<u8>, FabricError>>,
    },
    Peers {
        reply: oneshot::Sender<Vec<PeerId>>,
    },
    ListenAddrs {
        reply: oneshot::Sender<Vec<Multiaddr>>,
    },
    Flood {
        kind: Flood,
        count: u32,
    },
}

/// The handle to a running fabric. Cheap to clone; the task stops when the cancellation token
/// fires or every handle is dropped.
#[derive(Clone)]
pub struct Fabric {
    commands: mpsc::Sender<Command>,
    peer_id: PeerId,
    /// The fabric's store, shared so that seeding writes chunks on a blocking thread of the
    /// caller rather than on the swarm task.
    store: Arc<dyn FabricStore>,
}

impl std::fmt::Debug for Fabric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fabric")
            .field("peer_id", &self.peer_id)
            .finish_non_exhaustive()
    }
}

/// Runs a store job on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    job: impl FnOnce() -> Result<T, FabricError> + Send + 'static,
) -> Result<T, FabricError> {
    tokio::task::spawn_blocking(job)
        .await
        .map_err(|_| FabricError::Stopped)?
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Command")
    }
}

impl Fabric {
    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, FabricError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| FabricError::Stopped)?;
        rx.await.map_err(|_| FabricError::Stopped)
    }

    /// Stores `data` as an artifact of `chunk_len`-byte chunks and serves it. Returns its id.
    /// Hashing and writing run on a blocking thread.
    pub async fn seed(&self, data: Vec<u8>, chunk_len: u32) -> Result<ArtifactId, FabricError> {
        let store = Arc::clone(&self.store);
        let index = blocking(move || {
            let index = ArtifactIndex::from_bytes(&data, chunk_len)?;
            for (i, hash) in index.chunks.iter().enumerate() {
                if !store.has(hash) {
                    let start = i * chunk_len as usize;
                    store.put(hash, &data[start..start + index.chunk_size(i)])?;
                }
            }
            store.put_index(&index)?;
            Ok(index)
        })
        .await?;
        self.call(|reply| Command::Serve { index, reply }).await?
    }

    /// Serves an artifact whose chunks are already in the store (for example a verified bundle
    /// imported into the artifact layer's chunk store), as if seeded here. Every chunk is checked
    /// to be present first (on a blocking thread); a missing one is an error and nothing is
    /// served. Returns the artifact's id.
    pub async fn serve_index(&self, index: ArtifactIndex) -> Result<ArtifactId, FabricError> {
        index.check()?;
        let store = Arc::clone(&self.store);
        let index = blocking(move || {
            if let Some(missing) = index.chunks.iter().find(|h| !store.has(h)) {
                return Err(FabricError::Store(StoreError::Missing(hex::encode(
                    missing,
                ))));
            }
            store.put_index(&index)?;
            Ok(index)
        })
        .await?;
        self.call(|reply| Command::Serve { index, reply }).await?
    }

    /// Starts fetching an artifact whose index the caller already trusts (for example the
    /// index of a verified manifest, [`super::signed::index_of`]), so no peer needs to be asked
    /// for it. Completion is reported as [`FabricEvent::ArtifactComplete`]. Returns its id.
    pub async fn fetch_index(&self, index: ArtifactIndex) -> Result<ArtifactId, FabricError> {
        index.check()?;
        let id = index.id();
        let store = Arc::clone(&self.store);
        blocking(move || Ok(store.put_index(&index)?)).await?;
        self.fetch(id).await?;
        Ok(id)
    }

    /// Starts fetching an artifact by id (resuming from held chunks). Completion is reported as
    /// [`FabricEvent::ArtifactComplete`].
    pub async fn fetch(&self, id: ArtifactId) -> Result<(), FabricError> {
        self.call(|reply| Command::Fetch { id, reply }).await?
    }

    /// Publishes a gossip message (at most [`MAX_GOSSIP_BYTES`]). [`FabricError::NoPeers`] when
    /// no connected peer subscribes to the topic yet: the message was not sent and may be
    /// published again later (anything once published is a duplicate for a while).
    pub async fn publish(&self, topic: Topic, data: Vec<u8>) -> Result<(), FabricError> {
        self.call(|reply| Command::Publish { topic, data, reply })
            .await?
    }

    /// Dials a peer.
    pub async fn dial(&self, addr: Multiaddr) -> Result<(), FabricError> {
        self.call(|reply| Command::Dial { addr, reply }).await?
    }

    /// The fabric's counters.
    pub async fn stats(&self) -> Result<FabricStats, FabricError> {
        self.call(|reply| Command::Stats { reply }).await
    }

    /// Sends `data` (at most [`direct::MAX_DIRECT_BYTES`]) to `peer` over `/floe/direct/1` and
    /// waits for its handler's reply (at most [`direct::REQUEST_TIMEOUT`]). The peer is dialed if
    /// it is not connected and its address is known.
    ///
    /// Errors: [`FabricError::Request`] when the request is too long, the peer cannot be reached,
    /// times out, or declines to answer; [`FabricError::Busy`] when our own bound of outstanding
    /// requests is reached or the peer answers that it is busy.
    pub async fn request(&self, peer: PeerId, data: Vec<u8>) -> Result<Vec<u8>, FabricError> {
        if data.len() > direct::MAX_DIRECT_BYTES {
            return Err(FabricError::Request {
                peer,
                reason: format!(
                    "{} bytes is over the {}-byte limit",
                    data.len(),
                    direct::MAX_DIRECT_BYTES
                ),
            });
        }
        self.call(|reply| Command::Request { peer, data, reply })
            .await?
    }

    /// The peers with at least one established connection, sorted.
    pub async fn connected_peers(&self) -> Result<Vec<PeerId>, FabricError> {
        self.call(|reply| Command::Peers { reply }).await
    }

    /// The addresses this node listens on, each ending in `/p2p/<our peer id>`.
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, FabricError> {
        self.call(|reply| Command::ListenAddrs { reply }).await
    }

    /// Fault injection for the end-to-end tests: misbehave `count` times. Never used by the
    /// daemon outside its hidden `--fault-*` flags.
    pub async fn fault_flood(&self, kind: Flood, count: u32) -> Result<(), FabricError> {
        self.commands
            .send(Command::Flood { kind, count })
            .await
            .map_err(|_| FabricError::Stopped)
    }
}

/// Which topics may be subscribed to: ours only, unless a fault-injecting node wants more.
#[derive(Debug, Clone)]
pub struct TopicFilter {
    allow_any: bool,
}

impl gossipsub::TopicSubscriptionFilter for TopicFilter {
    fn can_subscribe(&mut self, topic_hash: &TopicHash) -> bool {
        self.allow_any || Topic::from_hash(topic_hash).is_some()
    }
}

/// Gossipsub as the fabric configures it (behind [`Guarded`]).
pub(crate) type Gossip = gossipsub::Behaviour<
    gossipsub::IdentityTransform,
    gossipsub::MaxCountSubscriptionFilter<TopicFilter>,
>;

/// The composed behaviour.
#[derive(NetworkBehaviour)]
struct Behaviour {
    limits: connection_limits::Behaviour,
    blocked: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    mdns: Toggle<mdns::tokio::Behaviour>,
    kad: kad::Behaviour<kad::store::MemoryStore>,
    gossip: Guarded,
    chunks: request_response::Behaviour<ChunkCodec>,
    direct: request_response::Behaviour<DirectCodec>,
    /// Fault injection only (off on honest nodes): raw gossipsub RPCs.
    raw_rpc: Toggle<request_response::Behaviour<RawRpcCodec>>,
}

fn build_swarm(key: Keypair, config: &FabricConfig) -> Result<Swarm<Behaviour>, FabricError> {
    let build = |e: String| FabricError::Build(e);
    let limits = connection_limits::ConnectionLimits::default()
        .with_max_established(Some(config.max_connections))
        .with_max_established_per_peer(Some(config.max_connections_per_peer))
        .with_max_pending_incoming(Some(config.max_connections / 2 + 1));
    let fault = config.fault_corrupt_chunks;
    let mdns_on = config.mdns;
    let mut gossip_config = gossip::config().map_err(build)?;
    if fault {
        // A misbehaving node is allowed to send what honest nodes refuse.
        let mut builder = gossipsub::ConfigBuilder::from(gossip_config);
        for topic in Topic::ALL {
            builder.max_transmit_size_for_topic(256 * 1024, topic.ident().hash());
        }
        gossip_config = builder
            .max_transmit_size(256 * 1024)
            .build()
            .map_err(|e| build(e.to_string()))?;
    }
    let guard_limits = guard::Limits::for_config(&gossip_config);
    let read_delay = config.fault_read_delay;
    let swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_quic()
        .with_other_transport(|key| {
            // TCP, noise, yamux, as `with_tcp` would build it; the stream passes through
            // `Delayed` only when the test-only read delay is set.
            use libp2p::Transport;
            let delay = read_delay.unwrap_or_default();
            let transport = tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
                .map(move |stream, _| {
                    if delay.is_zero() {
                        futures::future::Either::Left(stream)
                    } else {
                        futures::future::Either::Right(super::delay::Delayed::new(stream, delay))
                    }
                })
                .upgrade(libp2p::core::upgrade::Version::V1Lazy)
                .authenticate(noise::Config::new(key)?)
                .multiplex(yamux::Config::default());
            Ok(transport)
        })
        .map_err(|e| build(e.to_string()))?
        .with_behaviour(|key| {
            let peer_id = key.public().to_peer_id();
            let filter = gossipsub::MaxCountSubscriptionFilter {
                filter: TopicFilter { allow_any: fault },
                max_subscribed_topics: if fault { 10_000 } else { 16 },
                max_subscriptions_per_request: 32,
            };
            let mut gossip: Gossip = gossipsub::Behaviour::new_with_subscription_filter(
                gossipsub::MessageAuthenticity::Signed(key.clone()),
                gossip_config,
                filter,
            )?;
            gossip.with_peer_score(gossip::score_params(), gossip::score_thresholds())?;
            let mdns = if mdns_on {
                Some(mdns::tokio::Behaviour::new(
                    mdns::Config::default(),
                    peer_id,
                )?)
            } else {
                None
            };
            let mut kad = kad::Behaviour::with_config(
                peer_id,
                kad::store::MemoryStore::new(peer_id),
                kad::Config::new(libp2p::StreamProtocol::new("/floe/kad/1")),
            );
            kad.set_mode(Some(kad::Mode::Server));
            Ok(Behaviour {
                limits: connection_limits::Behaviour::new(limits),
                blocked: allow_block_list::Behaviour::default(),
                identify: identify::Behaviour::new(identify::Config::new(
                    "/floe/id/1".into(),
                    key.public(),
                )),
                ping: ping::Behaviour::default(),
                mdns: Toggle::from(mdns),
                kad,
                gossip: Guarded::new(gossip, guard_limits),
                chunks: request_response::Behaviour::with_codec(
                    ChunkCodec,
                    [(wire::PROTOCOL, ProtocolSupport::Full)],
                    request_response::Config::default()
                        .with_request_timeout(REQUEST_TIMEOUT)
                        .with_max_concurrent_streams(256),
                ),
                raw_rpc: Toggle::from(fault.then(|| {
                    request_response::Behaviour::with_codec(
                        RawRpcCodec,
                        [(
                            libp2p::StreamProtocol::new("/meshsub/1.1.0"),
                            ProtocolSupport::Outbound,
                        )],
                        request_response::Config::default()
                            .with_request_timeout(Duration::from_secs(2))
                            .with_max_concurrent_streams(64),
                    )
                })),
                direct: request_response::Behaviour::with_codec(
                    DirectCodec,
                    [(direct::PROTOCOL, ProtocolSupport::Full)],
                    request_response::Config::default()
                        .with_request_timeout(direct::REQUEST_TIMEOUT)
                        .with_max_concurrent_streams(direct::MAX_HANDLERS_PER_PEER * 4),
                ),
            })
        })
        .map_err(|e| build(e.to_string()))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(300)))
        .build();
    Ok(swarm)
}

/// Starts the fabric task without a direct-request handler (incoming direct requests are
/// declined). Returns the handle and the event stream.
pub fn spawn(
    key: Keypair,
    config: FabricConfig,
    store: Box<dyn FabricStore>,
    validator: Validator,
    cancel: CancellationToken,
) -> Result<(Fabric, mpsc::Receiver<FabricEvent>), FabricError> {
    spawn_inner(key, config, store, validator, None, cancel)
}

/// Starts the fabric task with `handler` answering incoming `/floe/direct/1` requests (see
/// [`direct::RequestHandler`] for how and where it runs). Returns the handle and the event
/// stream.
pub fn spawn_with_handler(
    key: Keypair,
    config: FabricConfig,
    store: Box<dyn FabricStore>,
    validator: Validator,
    handler: RequestHandler,
    cancel: CancellationToken,
) -> Result<(Fabric, mpsc::Receiver<FabricEvent>), FabricError> {
    spawn_inner(key, config, store, validator, Some(handler), cancel)
}

fn spawn_inner(
    key: Keypair,
    config: FabricConfig,
    store: Box<dyn FabricStore>,
    validator: Validator,
    handler: Option<RequestHandler>,
    cancel: CancellationToken,
) -> Result<(Fabric, mpsc::Receiver<FabricEvent>), FabricError> {
    let peer_id = key.public().to_peer_id();
    let store: Arc<dyn FabricStore> = Arc::from(store);
    let mut swarm = build_swarm(key, &config)?;
    for addr in &config.listen {
        swarm
            .listen_on(addr.clone())
            .map_err(|e| FabricError::Listen {
                addr: addr.clone(),
                reason: e.to_string(),
            })?;
    }
    for topic in &config.topics {
        swarm
            .behaviour_mut()
            .gossip
            .subscribe(&topic.ident())
            .map_err(|e| FabricError::Build(e.to_string()))?;
    }
    for addr in &config.bootstrap {
        if let Some(libp2p::multiaddr::Protocol::P2p(peer)) = addr.iter().last() {
            swarm.behaviour_mut().kad.add_address(&peer, addr.clone());
        }
        swarm.dial(addr.clone()).map_err(|e| FabricError::Dial {
            addr: addr.clone(),
            reason: e.to_string(),
        })?;
    }
    let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_CAPACITY);
    let (ev_tx, ev_rx) = mpsc::channel(config.event_capacity.max(1));
    // Room for every handler in flight: a finished handler never waits to report.
    let (answered_tx, answered_rx) = mpsc::channel(direct::MAX_HANDLERS);
    // Room for every store job in flight (reads bounded by the upload slots, verifications by
    // MAX_VERIFYING): a finished job never waits to report.
    let (done_tx, done_rx) = mpsc::channel(MAX_VERIFYING + config.upload_slots.max(1));
    let node = Node {
        done: done_tx,
        reading: 0,
        verifying: 0,
        handler,
        answered: answered_tx,
        handlers_in_flight: HashMap::new(),
        direct_pending: HashMap::new(),
        swarm,
        store: Arc::clone(&store),
        validator,
        events: ev_tx,
        dropped_events: 0,
        served: HashMap::new(),
        served_order: VecDeque::new(),
        downloads: HashMap::new(),
        pending: HashMap::new(),
        uploads: HashSet::new(),
        upload_queue: VecDeque::new(),
        busy_answers: 0,
        chunks_served: 0,
        fault_rpcs_delivered: 0,
        strikes: HashMap::new(),
        banned: VecDeque::new(),
        connected: HashSet::new(),
        seed: u64::from_le_bytes(peer_id.to_bytes()[2..10].try_into().unwrap_or([7; 8])),
        last_bootstrap: None,
        config,
    };
    tokio::spawn(node.run(cmd_rx, answered_rx, done_rx, cancel));
    Ok((
        Fabric {
            commands: cmd_tx,
            peer_id,
            store,
        },
        ev_rx,
    ))
}

struct Served {
    index: ArtifactIndex,
    bits: Vec<bool>,
    position: HashMap<ChunkHash, u32>,
    /// Seeded here (always served) rather than fetched (served unless central pull).
    seeded: bool,
    /// Times each chunk was handed out (by its position in `position`), for super-seeding.
    handed_out: Vec<u8>,
    /// Distinct chunks never handed out yet. While it is above zero a seed in peer-to-peer
    /// mode answers `NotFound` to a request for a chunk it already handed out once, so its
    /// upload goes to chunks nobody has and devices trade the rest among themselves
    /// (BitTorrent's super-seeding). At zero every request is served normally, so a device
    /// that vanished with the only copy of a chunk cannot stall anyone for long.
    never_handed_out: usize,
}

struct Active {
    id: ArtifactId,
    started: Instant,
    dl: Option<Download<PeerId>>,
    /// Peers asked for the index (each once).
    index_asked: HashSet<PeerId>,
    /// What we know of each connected peer's chunk map, to decide when to ask again.
    have_asked: HashMap<PeerId, PeerMap>,
}

/// When a peer's chunk map was last asked for (or came with a chunk), and what it said.
#[derive(Debug, Clone, Copy)]
struct PeerMap {
    at: Instant,
    /// A `Have` request to it is outstanding.
    outstanding: bool,
    /// It answered that it does not serve this artifact (a central-pull device, or one that
    /// has not started it): asked again only every [`NOT_SERVING_REFRESH`] refreshes.
    not_serving: bool,
    /// Its map had every chunk; a complete map cannot grow, so it is not asked again.
    complete: bool,
}

/// How many `have_refresh` periods a peer that does not serve an artifact waits to be asked
/// again.
const NOT_SERVING_REFRESH: u32 = 20;

impl PeerMap {
    fn new(now: Instant) -> Self {
        Self {
            at: now,
            outstanding: false,
            not_serving: false,
            complete: false,
        }
    }

    /// Whether to ask again now.
    fn due(&self, now: Instant, refresh: Duration) -> bool {
        if self.outstanding || self.complete {
            return false;
        }
        let wait = if self.not_serving {
            refresh * NOT_SERVING_REFRESH
        } else {
            refresh
        };
        now.duration_since(self.at) >= wait
    }

    /// A map arrived (answer to `Have`, or with a chunk).
    fn learned(&mut self, now: Instant, bits: &[bool]) {
        self.at = now;
        self.not_serving = false;
        self.complete = bits.iter().all(|b| *b);
    }
}

#[derive(Clone, Copy)]
enum Pending {
    Index(ArtifactId),
    Have(ArtifactId),
    Chunk(ArtifactId, u32),
    /// A fault-injection request whose answer is irrelevant.
    Junk,
}

/// A chunk request waiting for an upload slot.
struct QueuedChunk {
    peer: PeerId,
    request_id: request_response::InboundRequestId,
    id: ArtifactId,
    hash: ChunkHash,
    channel: request_response::ResponseChannel<Response>,
}

#[derive(Default)]
struct Strikes {
    invalid_gossip: u32,
    unknown_requests: u32,
}

/// Where the reply to one of our direct requests goes.
type DirectReply = oneshot::Sender<Result<Vec<u8>, FabricError>>;

/// A handler's answer on its way back to the swarm task.
type Answered = (
    PeerId,
    request_response::ResponseChannel<DirectResponse>,
    DirectResponse,
);

/// A store job finished on a blocking thread.
enum Done {
    /// A chunk to serve was read.
    Read {
        id: ArtifactId,
        request_id: request_response::InboundRequestId,
        channel: request_response::ResponseChannel<Response>,
        result: Result<Option<Vec<u8>>, StoreError>,
    },
    /// An arrived chunk was hashed and stored (or refused).
    Stored {
        id: ArtifactId,
        chunk: u32,
        peer: PeerId,
        result: Result<(), StoreError>,
    },
}

struct Node {
    swarm: Swarm<Behaviour>,
    /// Where store jobs report (capacity: every job that can be in flight).
    done: mpsc::Sender<Done>,
    /// Chunks being read to serve (counted against the upload slots).
    reading: usize,
    /// Arrived chunks being hashed and stored (at most [`MAX_VERIFYING`]).
    verifying: usize,
    /// Answers incoming direct requests; `None` declines them all.
    handler: Option<RequestHandler>,
    /// Where blocking handler calls send their answers (capacity [`direct::MAX_HANDLERS`]).
    answered: mpsc::Sender<Answered>,
    /// Handler calls in flight per asking peer (at most [`direct::MAX_HANDLERS`] in total).
    handlers_in_flight: HashMap<PeerId, usize>,
    /// Our outstanding direct requests (at most [`direct::MAX_OUTBOUND`]).
    direct_pending: HashMap<OutboundRequestId, (PeerId, DirectReply)>,
    store: Arc<dyn FabricStore>,
    validator: Validator,
    config: FabricConfig,
    events: mpsc::Sender<FabricEvent>,
    dropped_events: u64,
    served: HashMap<ArtifactId, Served>,
    served_order: VecDeque<ArtifactId>,
    downloads: HashMap<ArtifactId, Active>,
    pending: HashMap<OutboundRequestId, (PeerId, Pending)>,
    uploads: HashSet<request_response::InboundRequestId>,
    /// Chunk requests waiting for an upload slot, oldest first (at most
    /// [`FabricConfig::upload_queue`]).
    upload_queue: VecDeque<QueuedChunk>,
    chunks_served: u64,
    busy_answers: u64,
    /// Fault injection only: raw RPC streams delivered.
    fault_rpcs_delivered: u64,
    strikes: HashMap<PeerId, Strikes>,
    banned: VecDeque<PeerId>,
    connected: HashSet<PeerId>,
    seed: u64,
    last_bootstrap: Option<Instant>,
}

impl Node {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut answered: mpsc::Receiver<Answered>,
        mut done: mpsc::Receiver<Done>,
        cancel: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                cmd = commands.recv() => match cmd {
                    Some(cmd) => self.on_command(cmd),
                    None => break,
                },
                Some(answer) = answered.recv() => self.on_answered(answer),
                Some(job) = done.recv() => self.on_done(job),
                event = self.swarm.select_next_some() => self.on_swarm(event),
                _ = tick.tick() => self.on_tick(Instant::now()),
            }
        }
        tracing::debug!("fabric task stopped");
    }

    fn emit(&mut self, event: FabricEvent) {
        if self.events.try_send(event).is_err() {
            self.dropped_events += 1;
        }
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Serve { index, reply } => {
                let id = index.id();
                let chunks = index.chunks.len();
                self.serve(index, vec![true; chunks], true);
                self.emit(FabricEvent::Seeded { id, chunks });
                let _ = reply.send(Ok(id));
            }
            Command::Fetch { id, reply } => {
                let _ = reply.send(self.start_fetch(id));
            }
            Command::Publish { topic, data, reply } => {
                let result = if data.len() > MAX_GOSSIP_BYTES {
                    Err(FabricError::Publish {
                        topic: topic.name().into(),
                        reason: format!(
                            "{} bytes is over the {MAX_GOSSIP_BYTES}-byte limit",
                            data.len()
                        ),
                    })
                } else {
                    self.swarm
                        .behaviour_mut()
                        .gossip
                        .publish(topic.ident(), data)
                        .map(|_| ())
                        .map_err(|e| match e {
                            gossipsub::PublishError::NoPeersSubscribedToTopic => {
                                FabricError::NoPeers {
                                    topic: topic.name().into(),
                                }
                            }
                            other => FabricError::Publish {
                                topic: topic.name().into(),
                                reason: other.to_string(),
                            },
                        })
                };
                let _ = reply.send(result);
            }
            Command::Dial { addr, reply } => {
                let result = self
                    .swarm
                    .dial(addr.clone())
                    .map_err(|e| FabricError::Dial {
                        addr,
                        reason: e.to_string(),
                    });
                let _ = reply.send(result);
            }
            Command::Stats { reply } => {
                let gossip = &self.swarm.behaviour().gossip;
                let scores = self
                    .connected
                    .iter()
                    .map(|p| (*p, gossip.peer_score(p).unwrap_or(0.0)))
                    .collect();
                let _ = reply.send(FabricStats {
                    connected_peers: self.connected.len(),
                    banned_peers: self.banned.len(),
                    downloads: self.downloads.len(),
                    pending_requests: self.pending.len(),
                    uploads_in_flight: self.uploads.len(),
                    busy_answers: self.busy_answers,
                    flood_rpcs_dropped: self.swarm.behaviour().gossip.dropped(),
                    chunks_served: self.chunks_served,
                    dropped_events: self.dropped_events,
                    scores,
                    fault_rpcs_delivered: self.fault_rpcs_delivered,
                });
            }
            Command::Flood { kind, count } => self.flood(kind, count),
            Command::Request { peer, data, reply } => self.send_direct(peer, data, reply),
            Command::Peers { reply } => {
                let mut peers: Vec<PeerId> = self.connected.iter().copied().collect();
                peers.sort();
                let _ = reply.send(peers);
            }
            Command::ListenAddrs { reply } => {
                let me = *self.swarm.local_peer_id();
                let addrs = self
                    .swarm
                    .listeners()
                    .map(|a| a.clone().with(libp2p::multiaddr::Protocol::P2p(me)))
                    .collect();
                let _ = reply.send(addrs);
            }
        }
    }

    fn send_direct(&mut self, peer: PeerId, data: Vec<u8>, reply: DirectReply) {
        if self.banned.contains(&peer) {
            let _ = reply.send(Err(FabricError::Request {
                peer,
                reason: "the peer is banned".into(),
            }));
            return;
        }
        let to_peer = self
            .direct_pending
            .values()
            .filter(|(p, _)| *p == peer)
            .count();
        if self.direct_pending.len() >= direct::MAX_OUTBOUND
            || to_peer >= direct::MAX_OUTBOUND_PER_PEER
        {
            let _ = reply.send(Err(FabricError::Busy(
                "too many direct requests outstanding",
            )));
            return;
        }
        let id = self.swarm.behaviour_mut().direct.send_request(&peer, data);
        self.direct_pending.insert(id, (peer, reply));
    }

    /// An incoming direct request: run the handler off this task, or answer at once when there
    /// is no handler or the bounds are reached.
    fn on_direct_request(
        &mut self,
        peer: PeerId,
        data: Vec<u8>,
        channel: request_response::ResponseChannel<DirectResponse>,
    ) {
        let Some(handler) = self.handler.clone() else {
            let _ = self
                .swarm
                .behaviour_mut()
                .direct
                .send_response(channel, DirectResponse::Declined);
            return;
        };
        let total: usize = self.handlers_in_flight.values().sum();
        let mine = self.handlers_in_flight.get(&peer).copied().unwrap_or(0);
        if total >= direct::MAX_HANDLERS || mine >= direct::MAX_HANDLERS_PER_PEER {
            let _ = self
                .swarm
                .behaviour_mut()
                .direct
                .send_response(channel, DirectResponse::Busy);
            return;
        }
        *self.handlers_in_flight.entry(peer).or_default() += 1;
        let answered = self.answered.clone();
        tokio::task::spawn_blocking(move || {
            let reply =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler(peer, data)));
            let response = match reply {
                Ok(Some(bytes)) if bytes.len() <= direct::MAX_DIRECT_BYTES => {
                    DirectResponse::Reply(bytes)
                }
                Ok(Some(bytes)) => {
                    tracing::error!(
                        len = bytes.len(),
                        "direct reply over the size limit; declining instead"
                    );
                    DirectResponse::Declined
                }
                Ok(None) => DirectResponse::Declined,
                Err(_) => {
                    tracing::error!("the direct-request handler panicked; declining");
                    DirectResponse::Declined
                }
            };
            // The channel has room for every handler in flight, so this never waits; it fails
            // only when the fabric has stopped, and then nobody needs the answer.
            let _ = answered.try_send((peer, channel, response));
        });
    }

    fn on_answered(&mut self, (peer, channel, response): Answered) {
        if let Some(n) = self.handlers_in_flight.get_mut(&peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.handlers_in_flight.remove(&peer);
            }
        }
        // Fails only when the connection closed meanwhile; the asker then sees an error.
        let _ = self
            .swarm
            .behaviour_mut()
            .direct
            .send_response(channel, response);
    }

    fn on_direct(&mut self, event: request_response::Event<Vec<u8>, DirectResponse>) {
        use request_response::{Event, Message};
        match event {
            Event::Message {
                peer,
                message:
                    Message::Request {
                        request, channel, ..
                    },
                ..
            } => self.on_direct_request(peer, request, channel),
            Event::Message {
                peer,
                message:
                    Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                if let Some((_, reply)) = self.direct_pending.remove(&request_id) {
                    let result = match response {
                        DirectResponse::Reply(bytes) => Ok(bytes),
                        DirectResponse::Busy => {
                            Err(FabricError::Busy("the peer is answering too many requests"))
                        }
                        DirectResponse::Declined => Err(FabricError::Request {
                            peer,
                            reason: "the peer declined to answer".into(),
                        }),
                    };
                    let _ = reply.send(result);
                }
            }
            Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                if let Some((_, reply)) = self.direct_pending.remove(&request_id) {
                    let _ = reply.send(Err(FabricError::Request {
                        peer,
                        reason: error.to_string(),
                    }));
                }
            }
            Event::InboundFailure { .. } | Event::ResponseSent { .. } => {}
        }
    }

    fn flood(&mut self, kind: Flood, count: u32) {
        let peers: Vec<PeerId> = self.connected.iter().copied().collect();
        for i in 0..count {
            let mut noise = [0u8; 32];
            let _ = getrandom::fill(&mut noise);
            match kind {
                Flood::GarbageGossip => {
                    let _ = self
                        .swarm
                        .behaviour_mut()
                        .gossip
                        .publish(Topic::Announce.ident(), noise.to_vec());
                }
                Flood::OversizedGossip => {
                    let mut big = vec![0u8; 100 * 1024];
                    big[..32].copy_from_slice(&noise);
                    let _ = self
                        .swarm
                        .behaviour_mut()
                        .gossip
                        .publish(Topic::Announce.ident(), big);
                }
                Flood::Subscriptions => {
                    let topic = gossipsub::IdentTopic::new(format!(
                        "junk/{i}/{}",
                        hex::encode(&noise[..4])
                    ));
                    let _ = self.swarm.behaviour_mut().gossip.subscribe(&topic);
                }
                Flood::Iwant => {
                    // One stream per peer carries the whole flood; see `Flood::Iwant`.
                    if i > 0 {
                        continue;
                    }
                    for peer in &peers {
                        let mut stream = Vec::new();
                        for _ in 0..count.min(MAX_IWANT_RPCS) {
                            let mut ids = vec![[0u8; 32]; IWANT_IDS_PER_RPC];
                            for id in &mut ids {
                                let _ = getrandom::fill(id);
                            }
                            stream.extend_from_slice(&iwant_rpc(&ids));
                        }
                        if let Some(raw) = self.swarm.behaviour_mut().raw_rpc.as_mut() {
                            raw.send_request(peer, stream);
                        }
                    }
                }
                Flood::UnknownChunks => {
                    for peer in &peers {
                        if self.pending.len() >= MAX_PENDING {
                            break;
                        }
                        let id = self
                            .swarm
                            .behaviour_mut()
                            .chunks
                            .send_request(peer, Request::Chunk(noise, noise));
                        self.pending.insert(id, (*peer, Pending::Junk));
                    }
                }
            }
        }
    }

    fn serve(&mut self, index: ArtifactIndex, bits: Vec<bool>, seeded: bool) {
        let id = index.id();
        if !self.served.contains_key(&id) {
            if self.served.len() >= MAX_SERVED {
                // At the bound, stop serving the oldest artifact (its chunks stay on disk).
                if let Some(old) = self.served_order.pop_front() {
                    self.served.remove(&old);
                }
            }
            self.served_order.push_back(id);
        }
        let position: HashMap<ChunkHash, u32> = index
            .chunks
            .iter()
            .enumerate()
            .map(|(i, h)| (*h, i as u32))
            .collect();
        let never_handed_out = position.len();
        self.served.insert(
            id,
            Served {
                handed_out: vec![0; index.chunks.len()],
                never_handed_out,
                index,
                bits,
                position,
                seeded,
            },
        );
    }

    fn start_fetch(&mut self, id: ArtifactId) -> Result<(), FabricError> {
        if self.downloads.contains_key(&id) {
            return Ok(());
        }
        if self.downloads.len() >= self.config.max_downloads {
            return Err(FabricError::Busy("too many downloads"));
        }
        let started = Instant::now();
        let mut active = Active {
            id,
            started,
            dl: None,
            index_asked: HashSet::new(),
            have_asked: HashMap::new(),
        };
        if let Some(index) = self.store.get_index(&id)? {
            self.install_index(&mut active, index);
        }
        if active.dl.as_ref().is_some_and(|d| d.is_complete()) {
            let bytes = active.dl.as_ref().map(|d| d.index().total_len).unwrap_or(0);
            self.emit(FabricEvent::ArtifactComplete {
                id,
                bytes,
                received: 0,
                elapsed: Duration::ZERO,
            });
            return Ok(());
        }
        self.downloads.insert(id, active);
        self.query_all(id);
        Ok(())
    }

    fn install_index(&mut self, active: &mut Active, index: ArtifactIndex) {
        let store = &self.store;
        self.seed = self.seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let dl = Download::new(
            index.clone(),
            self.config.download.clone(),
            self.seed,
            |i| store.has(&index.chunks[i]),
        );
        let bits = dl.held().to_vec();
        let seeded = self.served.get(&active.id).is_some_and(|s| s.seeded);
        self.serve(index, bits, seeded);
        active.dl = Some(dl);
    }

    /// Asks every connected peer what it has of `id` (or for its index while unknown).
    fn query_all(&mut self, id: ArtifactId) {
        let peers: Vec<PeerId> = self.connected.iter().copied().collect();
        for peer in peers {
            self.query_peer(id, peer, Instant::now());
        }
        self.pump(id, Instant::now());
    }

    fn send(&mut self, peer: PeerId, request: Request, pending: Pending) -> bool {
        if self.pending.len() >= MAX_PENDING {
            return false;
        }
        let rid = self
            .swarm
            .behaviour_mut()
            .chunks
            .send_request(&peer, request);
        self.pending.insert(rid, (peer, pending));
        true
    }

    fn query_peer(&mut self, id: ArtifactId, peer: PeerId, now: Instant) {
        let Some(active) = self.downloads.get_mut(&id) else {
            return;
        };
        if active.dl.is_none() {
            if active.index_asked.insert(peer) {
                self.send(peer, Request::Index(id), Pending::Index(id));
            }
            return;
        }
        let refresh = self.config.have_refresh;
        let due = active
            .have_asked
            .get(&peer)
            .is_none_or(|m| m.due(now, refresh));
        if due && self.send(peer, Request::Have(id), Pending::Have(id)) {
            if let Some(active) = self.downloads.get_mut(&id) {
                let map = active
                    .have_asked
                    .entry(peer)
                    .or_insert_with(|| PeerMap::new(now));
                map.at = now;
                map.outstanding = true;
            }
        }
    }

    /// Sends whatever requests the scheduler wants now.
    fn pump(&mut self, id: ArtifactId, now: Instant) {
        let Some(active) = self.downloads.get_mut(&id) else {
            return;
        };
        let Some(dl) = active.dl.as_mut() else { return };
        let wanted = dl.schedule(now);
        for (peer, chunk) in wanted {
            let hash = self
                .downloads
                .get(&id)
                .and_then(|a| a.dl.as_ref())
                .map(|d| d.index().chunks[chunk as usize]);
            let Some(hash) = hash else { continue };
            if !self.send(peer, Request::Chunk(id, hash), Pending::Chunk(id, chunk)) {
                if let Some(dl) = self.downloads.get_mut(&id).and_then(|a| a.dl.as_mut()) {
                    dl.on_failure(peer, chunk, Failure::Busy, now);
                }
            }
        }
    }

    fn on_tick(&mut self, now: Instant) {
        let ids: Vec<ArtifactId> = self.downloads.keys().copied().collect();
        for id in ids {
            let snubbed = self
                .downloads
                .get_mut(&id)
                .and_then(|a| a.dl.as_mut())
                .map(|dl| dl.check_slow(now))
                .unwrap_or_default();
            for peer in snubbed {
                tracing::info!(%peer, "peer below the minimum rate; moving its chunks elsewhere");
                self.emit(FabricEvent::PeerSnubbed { peer });
            }
            let peers: Vec<PeerId> = self.connected.iter().copied().collect();
            for peer in peers {
                self.query_peer(id, peer, now);
            }
            self.pump(id, now);
        }
        // Re-run the Kademlia bootstrap now and then so routed peers keep finding each other.
        let due = self
            .last_bootstrap
            .is_none_or(|t| now.duration_since(t) > Duration::from_secs(30));
        if due && !self.connected.is_empty() {
            self.last_bootstrap = Some(now);
            let _ = self.swarm.behaviour_mut().kad.bootstrap();
        }
    }

    fn ban(&mut self, peer: PeerId, reason: &'static str) {
        if self.banned.contains(&peer) {
            return;
        }
        tracing::warn!(%peer, reason, "banning peer");
        if self.banned.len() >= self.config.max_banned {
            if let Some(old) = self.banned.pop_front() {
                self.swarm.behaviour_mut().blocked.unblock_peer(old);
            }
        }
        self.banned.push_back(peer);
        let behaviour = self.swarm.behaviour_mut();
        behaviour.blocked.block_peer(peer);
        behaviour.gossip.blacklist_peer(&peer);
        behaviour.kad.remove_peer(&peer);
        for active in self.downloads.values_mut() {
            if let Some(dl) = active.dl.as_mut() {
                dl.remove_peer(&peer);
            }
        }
        self.emit(FabricEvent::PeerBanned { peer, reason });
    }

    fn on_swarm(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                let peer = *self.swarm.local_peer_id();
                let full = address.with(libp2p::multiaddr::Protocol::P2p(peer));
                self.emit(FabricEvent::Listening(full));
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                num_established,
                ..
            } => self.on_connected(peer_id, num_established.get()),
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established,
                ..
            } => self.on_disconnected(peer_id, num_established),
            SwarmEvent::Behaviour(event) => self.on_behaviour(event),
            _ => {}
        }
    }

    fn on_connected(&mut self, peer_id: PeerId, num_established: u32) {
        if num_established == 1 && self.connected.insert(peer_id) {
            self.emit(FabricEvent::PeerConnected(peer_id));
            let ids: Vec<ArtifactId> = self.downloads.keys().copied().collect();
            for id in ids {
                self.query_peer(id, peer_id, Instant::now());
            }
        }
    }

    fn on_disconnected(&mut self, peer_id: PeerId, num_established: u32) {
        if num_established == 0 && self.connected.remove(&peer_id) {
            self.strikes.remove(&peer_id);
            for active in self.downloads.values_mut() {
                active.have_asked.remove(&peer_id);
                active.index_asked.remove(&peer_id);
                if let Some(dl) = active.dl.as_mut() {
                    dl.remove_peer(&peer_id);
                }
            }
            self.emit(FabricEvent::PeerDisconnected(peer_id));
        }
    }

    fn dial_discovered(&mut self, peer: PeerId, addrs: Vec<Multiaddr>) {
        if peer == *self.swarm.local_peer_id()
            || self.connected.contains(&peer)
            || self.banned.contains(&peer)
            || self.connected.len() >= self.config.max_connections as usize
        {
            return;
        }
        let _ = self
            .swarm
            .dial(DialOpts::peer_id(peer).addresses(addrs).build());
    }

    fn on_behaviour(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                for addr in info.listen_addrs.into_iter().take(8) {
                    self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                }
            }
            BehaviourEvent::Kad(kad::Event::RoutingUpdated {
                peer, addresses, ..
            }) => {
                self.dial_discovered(peer, addresses.into_vec());
            }
            BehaviourEvent::Mdns(mdns::Event::Discovered(list)) => {
                for (peer, addr) in list.into_iter().take(64) {
                    self.swarm
                        .behaviour_mut()
                        .kad
                        .add_address(&peer, addr.clone());
                    self.dial_discovered(peer, vec![addr]);
                }
            }
            BehaviourEvent::Gossip(GuardEvent::Gossip(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            })) => {
                self.on_gossip(propagation_source, message_id, message);
            }
            BehaviourEvent::Gossip(GuardEvent::Flood { peer, what }) => {
                self.ban(peer, what.reason());
            }
            BehaviourEvent::Gossip(GuardEvent::Invalid { peer, count }) => {
                self.emit(FabricEvent::GossipRejected { from: peer });
                self.strike_invalid_gossip(peer, count);
            }
            BehaviourEvent::Chunks(event) => self.on_chunks(event),
            BehaviourEvent::Direct(event) => self.on_direct(event),
            BehaviourEvent::RawRpc(request_response::Event::Message { .. }) => {
                self.fault_rpcs_delivered += 1;
            }
            _ => {}
        }
    }

    fn on_gossip(&mut self, from: PeerId, id: gossipsub::MessageId, message: gossipsub::Message) {
        let verdict = match Topic::from_hash(&message.topic) {
            Some(_) if message.data.len() > MAX_GOSSIP_BYTES => Validation::Reject,
            Some(topic) => (self.validator)(topic, &message.data),
            None => Validation::Reject,
        };
        let acceptance = match verdict {
            Validation::Accept => MessageAcceptance::Accept,
            Validation::Reject => MessageAcceptance::Reject,
            Validation::Ignore => MessageAcceptance::Ignore,
        };
        self.swarm
            .behaviour_mut()
            .gossip
            .report_message_validation_result(&id, &from, acceptance);
        match verdict {
            Validation::Accept => {
                if let Some(topic) = Topic::from_hash(&message.topic) {
                    self.emit(FabricEvent::Gossip {
                        topic,
                        from,
                        source: message.source,
                        data: message.data,
                    });
                }
            }
            Validation::Reject => {
                self.emit(FabricEvent::GossipRejected { from });
                self.strike_invalid_gossip(from, 1);
            }
            Validation::Ignore => {}
        }
    }

    fn on_chunks(&mut self, event: request_response::Event<Request, Response>) {
        use request_response::{Event, Message};
        match event {
            Event::Message {
                peer,
                message:
                    Message::Request {
                        request_id,
                        request,
                        channel,
                    },
                ..
            } => match request {
                Request::Chunk(id, hash) => self.serve_chunk(peer, request_id, id, hash, channel),
                other => {
                    let response = self.answer(other);
                    let _ = self
                        .swarm
                        .behaviour_mut()
                        .chunks
                        .send_response(channel, response);
                }
            },
            Event::Message {
                peer,
                message:
                    Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                if let Some((_, pending)) = self.pending.remove(&request_id) {
                    self.on_response(peer, pending, response);
                }
            }
            Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                if let Some((_, pending)) = self.pending.remove(&request_id) {
                    tracing::debug!(%peer, %error, "request failed");
                    self.on_request_failed(peer, pending);
                }
            }
            Event::InboundFailure { request_id, .. } | Event::ResponseSent { request_id, .. } => {
                if self.uploads.remove(&request_id) {
                    self.serve_queued();
                }
            }
        }
    }

    /// Counts `count` invalid gossip messages against `peer`. It is banned at the limit, or as
    /// soon as gossipsub's score for it falls below the graylist threshold: from then on
    /// gossipsub ignores it, so its further messages would never reach the count.
    fn strike_invalid_gossip(&mut self, peer: PeerId, count: u32) {
        let limit = self.config.max_invalid_gossip;
        let strikes = self.strikes.entry(peer).or_default();
        strikes.invalid_gossip = strikes.invalid_gossip.saturating_add(count);
        let over = strikes.invalid_gossip >= limit;
        let graylisted = self
            .swarm
            .behaviour()
            .gossip
            .peer_score(&peer)
            .is_some_and(gossip::graylisted);
        if over || graylisted {
            self.ban(peer, "invalid gossip");
        }
    }

    fn strike_unknown(&mut self, peer: PeerId) {
        let limit = self.config.max_unknown_requests;
        let strikes = self.strikes.entry(peer).or_default();
        strikes.unknown_requests += 1;
        if strikes.unknown_requests >= limit {
            self.ban(peer, "requests for unknown chunks");
        }
    }

    fn servable(&self, id: &ArtifactId) -> Option<&Served> {
        self.served
            .get(id)
            .filter(|s| s.seeded || !self.config.central_pull)
    }

    /// Answers the small requests (index, chunk map) at once.
    fn answer(&mut self, request: Request) -> Response {
        match request {
            Request::Index(id) => match self.servable(&id) {
                Some(s) => Response::Index(s.index.encode()),
                // Index requests for unknown ids are normal: a new download asks everyone.
                None => Response::NotFound,
            },
            Request::Have(id) => match self.servable(&id) {
                Some(s) => Response::Have(wire::pack_bits(&s.bits)),
                None => Response::NotFound,
            },
            // Chunks are served by `serve_chunk`.
            Request::Chunk(..) => Response::NotFound,
        }
    }

    /// Answers a chunk request: `NotFound` (and a strike) for what we do not hold, `Busy` when
    /// every upload slot is taken, else the chunk is read on a blocking thread and sent when
    /// the read is done ([`Node::on_done`]).
    fn serve_chunk(
        &mut self,
        peer: PeerId,
        request_id: request_response::InboundRequestId,
        id: ArtifactId,
        hash: ChunkHash,
        channel: request_response::ResponseChannel<Response>,
    ) {
        let position = self
            .servable(&id)
            .and_then(|s| s.position.get(&hash).copied())
            .filter(|i| self.served.get(&id).is_some_and(|s| s.bits[*i as usize]));
        let super_seeding = !self.config.central_pull;
        let already_out = position.is_some_and(|i| {
            self.served.get(&id).is_some_and(|s| {
                super_seeding && s.seeded && s.never_handed_out > 0 && s.handed_out[i as usize] > 0
            })
        });
        let response = if position.is_none() {
            self.strike_unknown(peer);
            Response::NotFound
        } else if already_out {
            // Super-seeding: a peer that got this chunk from us serves it to the others.
            Response::NotFound
        } else if self.uploads.len() + self.reading >= self.config.upload_slots {
            if self.upload_queue.len() < self.config.upload_queue {
                // Served when a slot frees (and checked again then): the link goes on to the
                // next request at once instead of idling until a bounced requester retries.
                self.upload_queue.push_back(QueuedChunk {
                    peer,
                    request_id,
                    id,
                    hash,
                    channel,
                });
                return;
            }
            self.busy_answers += 1;
            Response::Busy
        } else {
            if let (Some(i), Some(s)) = (position, self.served.get_mut(&id)) {
                let count = &mut s.handed_out[i as usize];
                if *count == 0 {
                    s.never_handed_out = s.never_handed_out.saturating_sub(1);
                }
                *count = count.saturating_add(1);
            }
            self.reading += 1;
            let store = Arc::clone(&self.store);
            let done = self.done.clone();
            tokio::task::spawn_blocking(move || {
                let result = store.get(&hash);
                // Never waits: the channel has room for every read in flight.
                let _ = done.try_send(Done::Read {
                    id,
                    request_id,
                    channel,
                    result,
                });
            });
            return;
        };
        let _ = self
            .swarm
            .behaviour_mut()
            .chunks
            .send_response(channel, response);
    }

    /// Starts queued chunk requests while upload slots are free.
    fn serve_queued(&mut self) {
        while self.uploads.len() + self.reading < self.config.upload_slots {
            let Some(q) = self.upload_queue.pop_front() else {
                return;
            };
            self.serve_chunk(q.peer, q.request_id, q.id, q.hash, q.channel);
        }
    }

    fn on_done(&mut self, job: Done) {
        match job {
            Done::Read {
                id,
                request_id,
                channel,
                result,
            } => {
                self.reading = self.reading.saturating_sub(1);
                let response = match result {
                    Ok(Some(mut bytes)) => {
                        if self.config.fault_corrupt_chunks {
                            if let Some(b) = bytes.first_mut() {
                                *b ^= 0xff;
                            }
                        }
                        // Our chunk map rides along, so the requester need not ask for it.
                        let have = self
                            .served
                            .get(&id)
                            .map(|s| wire::pack_bits(&s.bits))
                            .unwrap_or_default();
                        Response::Chunk { bytes, have }
                    }
                    Ok(None) => Response::NotFound,
                    Err(err) => {
                        tracing::error!(%err, "reading a chunk to serve");
                        Response::NotFound
                    }
                };
                let is_chunk = matches!(response, Response::Chunk { .. });
                if self
                    .swarm
                    .behaviour_mut()
                    .chunks
                    .send_response(channel, response)
                    .is_ok()
                    && is_chunk
                {
                    self.uploads.insert(request_id);
                    self.chunks_served += 1;
                } else {
                    self.serve_queued();
                }
            }
            Done::Stored {
                id,
                chunk,
                peer,
                result,
            } => {
                self.verifying = self.verifying.saturating_sub(1);
                self.on_stored(id, chunk, peer, result, Instant::now());
            }
        }
    }

    fn on_response(&mut self, peer: PeerId, pending: Pending, response: Response) {
        let now = Instant::now();
        match (pending, response) {
            (Pending::Index(id), Response::Index(bytes)) => {
                let Some(mut active) = self.downloads.remove(&id) else {
                    return;
                };
                if active.dl.is_none() {
                    match ArtifactIndex::decode_for(&id, &bytes) {
                        Ok(index) => {
                            if let Err(err) = self.store.put_index(&index) {
                                tracing::error!(%err, "storing an index");
                            }
                            self.install_index(&mut active, index);
                        }
                        Err(_) => {
                            self.downloads.insert(id, active);
                            self.ban(peer, "index does not match its id");
                            return;
                        }
                    }
                }
                self.downloads.insert(id, active);
                self.query_all(id);
            }
            (Pending::Have(id), Response::Have(bytes)) => {
                let Some(active) = self.downloads.get_mut(&id) else {
                    return;
                };
                if let Some(entry) = active.have_asked.get_mut(&peer) {
                    entry.outstanding = false;
                }
                if self.learn_map(peer, id, &bytes, now) {
                    self.pump(id, now);
                }
            }
            (Pending::Have(id), _) => {
                if let Some(entry) = self
                    .downloads
                    .get_mut(&id)
                    .and_then(|a| a.have_asked.get_mut(&peer))
                {
                    entry.outstanding = false;
                    entry.not_serving = true;
                }
            }
            (Pending::Chunk(id, chunk), Response::Chunk { bytes, have }) => {
                // An empty map is allowed (the server had none to give); a malformed one bans.
                if have.is_empty() || self.learn_map(peer, id, &have, now) {
                    self.on_chunk(peer, id, chunk, bytes, now);
                }
            }
            (Pending::Chunk(id, chunk), other) => {
                let failure = if matches!(other, Response::Busy) {
                    Failure::Busy
                } else {
                    Failure::NotFound
                };
                if let Some(dl) = self.downloads.get_mut(&id).and_then(|a| a.dl.as_mut()) {
                    dl.on_failure(peer, chunk, failure, now);
                }
                self.pump(id, now);
            }
            (Pending::Index(_), _) | (Pending::Junk, _) => {}
        }
    }

    /// Records a peer's chunk map (packed bits) for a download. False when the map is malformed
    /// (the peer is banned) or the download is gone.
    fn learn_map(&mut self, peer: PeerId, id: ArtifactId, packed: &[u8], now: Instant) -> bool {
        let Some(active) = self.downloads.get_mut(&id) else {
            return false;
        };
        let Some(dl) = active.dl.as_mut() else {
            return false;
        };
        match wire::unpack_bits(packed, dl.index().chunks.len()) {
            Some(bits) => {
                let map = active
                    .have_asked
                    .entry(peer)
                    .or_insert_with(|| PeerMap::new(now));
                map.learned(now, &bits);
                dl.update_peer(peer, bits);
                true
            }
            None => {
                self.ban(peer, "malformed chunk map");
                false
            }
        }
    }

    fn on_chunk(&mut self, peer: PeerId, id: ArtifactId, chunk: u32, bytes: Vec<u8>, now: Instant) {
        let Some(active) = self.downloads.get_mut(&id) else {
            return;
        };
        let Some(dl) = active.dl.as_mut() else { return };
        match dl.on_received(peer, chunk, bytes.len()) {
            Received::Corrupt => {
                self.ban(peer, "served a chunk of the wrong length");
                self.pump(id, now);
                return;
            }
            Received::Duplicate => {
                self.pump(id, now);
                return;
            }
            Received::Verify => {}
        }
        let hash = dl.index().chunks[chunk as usize];
        // The peer's request slot is free again: ask it (and others) for more while this chunk
        // is hashed and stored.
        self.pump(id, now);
        if self.verifying >= MAX_VERIFYING {
            // At the bound: do it here, which holds the swarm task up (backpressure).
            let result = self.store.put(&hash, &bytes);
            self.on_stored(id, chunk, peer, result, now);
            return;
        }
        self.verifying += 1;
        let store = Arc::clone(&self.store);
        let done = self.done.clone();
        tokio::task::spawn_blocking(move || {
            let result = store.put(&hash, &bytes);
            // Never waits: the channel has room for every verification in flight.
            let _ = done.try_send(Done::Stored {
                id,
                chunk,
                peer,
                result,
            });
        });
    }

    /// An arrived chunk was hashed and stored, or refused: settle it in its download.
    fn on_stored(
        &mut self,
        id: ArtifactId,
        chunk: u32,
        peer: PeerId,
        result: Result<(), StoreError>,
        now: Instant,
    ) {
        let Some(dl) = self.downloads.get_mut(&id).and_then(|a| a.dl.as_mut()) else {
            return;
        };
        match result {
            Ok(()) => match dl.on_verified(peer, chunk, true) {
                Arrival::Accepted => {}
                Arrival::Duplicate | Arrival::Corrupt => {
                    self.pump(id, now);
                    return;
                }
            },
            Err(StoreError::Verify(_)) => {
                dl.on_verified(peer, chunk, false);
                self.ban(peer, "served a corrupt chunk");
                self.pump(id, now);
                return;
            }
            Err(err) => {
                tracing::error!(%err, "storing a verified chunk");
                dl.on_store_failed(chunk);
                self.pump(id, now);
                return;
            }
        }
        // Serve it from now on.
        if let Some(served) = self.served.get_mut(&id) {
            if let Some(b) = served.bits.get_mut(chunk as usize) {
                *b = true;
            }
        }
        self.emit(FabricEvent::ChunkReceived {
            id,
            chunk,
            from: peer,
        });
        let done = self.downloads.get(&id).and_then(|a| {
            a.dl.as_ref().map(|d| {
                (
                    d.is_complete(),
                    d.index().total_len,
                    d.bytes_received(),
                    a.started,
                )
            })
        });
        match done {
            Some((true, bytes, received, started)) => {
                self.downloads.remove(&id);
                self.emit(FabricEvent::ArtifactComplete {
                    id,
                    bytes,
                    received,
                    elapsed: now.duration_since(started),
                });
            }
            _ => self.pump(id, now),
        }
    }

    fn on_request_failed(&mut self, peer: PeerId, pending: Pending) {
        let now = Instant::now();
        match pending {
            Pending::Chunk(id, chunk) => {
                if let Some(dl) = self.downloads.get_mut(&id).and_then(|a| a.dl.as_mut()) {
                    dl.on_failure(peer, chunk, Failure::Error, now);
                }
                self.pump(id, now);
            }
            Pending::Have(id) => {
                if let Some(entry) = self
                    .downloads
                    .get_mut(&id)
                    .and_then(|a| a.have_asked.get_mut(&peer))
                {
                    entry.outstanding = false;
                }
            }
            Pending::Index(id) => {
                // Let the peer be asked again later.
                if let Some(active) = self.downloads.get_mut(&id) {
                    active.index_asked.remove(&peer);
                }
            }
            Pending::Junk => {}
        }
    }
}

#[cfg(test)]
mod peer_map_tests {
    use super::*;

    #[test]
    fn a_peer_map_is_asked_for_again_by_what_it_last_said() {
        let t0 = Instant::now();
        let refresh = Duration::from_millis(100);
        let mut map = PeerMap::new(t0);
        assert!(!map.due(t0 + refresh / 2, refresh));
        assert!(map.due(t0 + refresh, refresh));
        // An outstanding request is never doubled.
        map.outstanding = true;
        assert!(!map.due(t0 + refresh * 100, refresh));
        map.outstanding = false;
        // A map with gaps (or one that came with a chunk) restarts the wait.
        map.learned(t0 + refresh, &[true, false]);
        assert!(!map.due(t0 + refresh + refresh / 2, refresh));
        assert!(map.due(t0 + refresh * 2, refresh));
        // A peer that does not serve the artifact is asked twenty times less often.
        map.not_serving = true;
        assert!(!map.due(t0 + refresh * 20, refresh));
        assert!(map.due(t0 + refresh * 21, refresh));
        // Serving again clears it; a complete map is never asked for again.
        map.learned(t0 + refresh * 21, &[true, true]);
        assert!(!map.not_serving);
        assert!(!map.due(t0 + refresh * 10_000, refresh));
    }
}
