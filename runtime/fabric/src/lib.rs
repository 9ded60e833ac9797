//! The peer-to-peer fabric: one libp2p swarm per process, signed gossip, and a multi-peer chunk
//! exchange.
//!
//! Why this exists: a fleet that pulls every artifact from one server is limited by that
//! server's uplink, and a site behind one slow link downloads each artifact once per device. The
//! reference's "Artifact Distribution" section names central pull (simple, "network bandwidth is
//! bottleneck for large fleets") and peer-to-peer distribution ("subsequent devices can pull from
//! already-deployed peers"). This crate is the second, with the first kept selectable by
//! configuration ([`FabricConfig::central_pull`]) so the two can be compared in one run.
//!
//! Shape (see DESIGN.md "Async shape"): [`node::spawn`] starts one task that owns the `Swarm` and
//! all protocol state; callers hold a cloneable [`node::Fabric`] handle that sends commands with a
//! oneshot for the reply. Events for observers (the daemon, the test harness) come out of a
//! bounded channel that drops and counts when the observer is slow, so a stuck reader can never
//! stall the network.
//!
//! The parts:
//! - [`identity`]: the device's ed25519 key, which is also its libp2p peer id.
//! - [`index`]: [`ArtifactIndex`], the chunk list of one artifact. Its id is the sha256 of its
//!   canonical encoding, so an index fetched from any peer is self-certifying.
//! - [`store`]: the [`store::FabricStore`] trait the fabric reads and writes chunks through,
//!   with a file-backed and an in-memory implementation. The signed artifact layer plugs in here.
//! - [`wire`]: the chunk request-response protocol `/floe/chunk/2`, size-capped before
//!   decoding; chunk responses carry the server's chunk map.
//! - [`direct`]: `/floe/direct/1`, one small request and reply between two peers (a device's
//!   status report to the coordinator and its directive back), answered by a handler the owner
//!   passes to [`node::spawn_with_handler`].
//! - [`download`]: the deterministic download scheduler (rarest first, minimum rate, bans,
//!   resume), with time passed in so it is tested without a network.
//! - [`gossip`]: versioned topics, the validation callback, and peer-score parameters.
//! - [`guard`]: a guard in front of gossipsub against IWANT and subscription floods.
//! - [`signed`]: the bridge to signed artifacts (announcements, the artifact layer's store).
//! - [`node`]: the swarm actor tying it together.
//!
//! Fault injection (corrupt chunks, a read delay standing in for link delay, floods) exists
//! only with the `fault-injection` feature, for the end-to-end tests and the benchmark.
//!
//! Measured (`cargo run --release -p floe-tests --example fabric_bench`: 64 MiB to 16 devices
//! and a seed, every link 50 Mbit/s each way by `tbf`, chunks of 128 KiB as the payload size
//! gives, about 512): `p2p_s=13.80 central_s=183.38 efficiency=0.78 speedup=13.29
//! gossip_p99_ms=18`, with the 10 ms link delay held in the nodes (this kernel has no
//! `sch_netem`; see `delay.rs`, fault injection only); efficiency 0.79 without it. The speedup (8),
//! gossip (p99 ≤ 500 ms) and efficiency (0.6) targets are met. What got there: disk I/O and
//! hashing off the swarm task, super-seeding, 8 upload slots with a queue, and chunk maps that
//! ride along with chunks instead of being polled.
//!
//! Architecture invariant: nothing here knows the device agent, its slots or health; this
//! crate does not depend on `floe-runtime`, so the compiler keeps it so.

pub mod admission;
#[cfg(feature = "fault-injection")]
pub mod delay;
pub mod direct;
pub mod download;
pub mod gate;
pub mod gossip;
pub mod guard;
pub mod identity;
pub mod index;
pub mod node;
pub mod signed;
pub mod store;
pub mod wire;

pub use direct::RequestHandler;
pub use gossip::{Topic, Validation, Validator};
pub use index::{ArtifactId, ArtifactIndex, ChunkHash};
pub use node::{Fabric, FabricEvent, spawn, spawn_with_handler};

use libp2p::Multiaddr;
use std::time::Duration;

/// Everything the fabric can be configured with. [`FabricConfig::default`] gives the production
/// defaults; tests switch mDNS off and wire bootstrap addresses instead.
#[derive(Debug, Clone)]
pub struct FabricConfig {
    /// Addresses to listen on (TCP and/or QUIC multiaddrs).
    pub listen: Vec<Multiaddr>,
    /// Peers to dial at start (multiaddrs ending in `/p2p/<peer id>`); they seed Kademlia.
    pub bootstrap: Vec<Multiaddr>,
    /// LAN discovery with mDNS. Off by default: only when configured.
    pub mdns: bool,
    /// Who may take part ([`admission`]): None admits every peer (a standalone `floed fabric`
    /// fleet for tests and benchmarks); devices and coordinators always set it.
    pub admission: Option<admission::Admission>,
    /// Central-pull mode: this node never serves chunks of artifacts it fetched (only those it
    /// seeded), so every device pulls from the origin. For comparison with peer-to-peer mode.
    pub central_pull: bool,
    /// Most established connections of peers that are not coordinators (both directions,
    /// admitted or still proving membership); the gate refuses more ([`gate`]). Coordinators
    /// (the bootstrap peers, and peers that showed a coordinator certificate) are never
    /// refused by it; the connection limits leave room for [`node::COORDINATOR_CONNECTIONS`]
    /// of theirs beyond this.
    pub max_connections: u32,
    /// Most established connections to one peer.
    pub max_connections_per_peer: u32,
    /// Most chunk responses this node serves at once ("upload slots").
    pub upload_slots: usize,
    /// Chunk requests that wait for a free upload slot (served in arrival order); requests
    /// beyond them get `Busy` and the requester tries another peer. Waiting keeps the uplink
    /// busy without a round of `Busy` and retry between two chunks.
    pub upload_queue: usize,
    /// Most concurrent downloads; a further `fetch` is refused with [`FabricError::Busy`].
    pub max_downloads: usize,
    /// Tuning of each download.
    pub download: download::DownloadConfig,
    /// How often peers' chunk maps are refreshed while a download runs.
    pub have_refresh: Duration,
    /// Capacity of the event channel to the observer (drop-and-count beyond it).
    pub event_capacity: usize,
    /// Most banned peers remembered (oldest ban forgotten first).
    pub max_banned: usize,
    /// Invalid gossip messages (Reject) from one peer before it is banned outright. Gossipsub's
    /// own scoring penalises each one earlier (see [`gossip::score_thresholds`]).
    pub max_invalid_gossip: u32,
    /// Requests for chunks or artifacts this node does not hold, from one peer, before it is
    /// banned. Honest peers ask at most a few times per download after a `Have` answer, so the
    /// default leaves ample room.
    pub max_unknown_requests: u32,
    /// Fault injection for the end-to-end tests only: serve chunks with flipped bytes (and
    /// accept any topic and oversized gossip, so this node can flood).
    #[cfg(feature = "fault-injection")]
    pub fault_corrupt_chunks: bool,
    /// Test only: hold every byte read from a TCP connection this long before the protocols
    /// see it ([`delay::Delayed`]), to stand in for link delay on kernels without `sch_netem`.
    #[cfg(feature = "fault-injection")]
    pub fault_read_delay: Option<Duration>,
    /// Topics this node subscribes to, and so receives and relays. It may publish to any
    /// topic: gossipsub sends a message on a topic it does not subscribe to to the connected
    /// peers that do. Devices leave out [`Topic::Health`]: only coordinators read reports, and
    /// relaying every device's reports through every device costs each of them memory and
    /// bandwidth in proportion to the fleet.
    pub topics: Vec<Topic>,
}

impl Default for FabricConfig {
    fn default() -> Self {
        Self {
            listen: Vec::new(),
            bootstrap: Vec::new(),
            mdns: false,
            admission: None,
            central_pull: false,
            max_connections: 128,
            max_connections_per_peer: 2,
            upload_slots: 8,
            upload_queue: 16,
            max_downloads: 4,
            download: download::DownloadConfig::default(),
            have_refresh: Duration::from_millis(100),
            event_capacity: 4096,
            max_banned: 1024,
            max_invalid_gossip: 20,
            max_unknown_requests: 256,
            #[cfg(feature = "fault-injection")]
            fault_corrupt_chunks: false,
            #[cfg(feature = "fault-injection")]
            fault_read_delay: None,
            topics: Topic::ALL.to_vec(),
        }
    }
}

impl FabricConfig {
    /// The peers named by `/p2p/<peer id>` in the bootstrap addresses: the node's coordinators,
    /// whose connections the bound never refuses.
    pub fn coordinator_peers(&self) -> Vec<libp2p::PeerId> {
        let mut peers = Vec::new();
        for addr in &self.bootstrap {
            if let Some(libp2p::multiaddr::Protocol::P2p(p)) = addr.iter().last()
                && !peers.contains(&p)
            {
                peers.push(p);
            }
        }
        peers
    }
}

/// Errors of the fabric, named by the phase that failed.
#[derive(Debug, thiserror::Error)]
pub enum FabricError {
    /// Building the swarm (transport, behaviours, subscriptions) failed.
    #[error("building the libp2p swarm: {0}")]
    Build(#[from] BuildError),
    /// Listening on an address failed.
    #[error("listening on {addr}: {source}")]
    Listen {
        /// The address that was refused.
        addr: Multiaddr,
        /// Why.
        source: libp2p::TransportError<std::io::Error>,
    },
    /// Dialing a bootstrap or explicit peer failed immediately.
    #[error("dialing {addr}: {source}")]
    Dial {
        /// The address.
        addr: Multiaddr,
        /// Why.
        source: libp2p::swarm::DialError,
    },
    /// Publishing a gossip message failed (too large, duplicate, ...).
    #[error("publishing on {topic}: {source}")]
    Publish {
        /// The topic.
        topic: String,
        /// Why.
        source: PublishError,
    },
    /// Nobody subscribed to the topic is connected yet, so a message would reach no one; it
    /// was not published (and not remembered as sent), so it can be published again later.
    #[error("no connected peer subscribes to {topic} yet")]
    NoPeers {
        /// The topic.
        topic: String,
    },
    /// The chunk store failed.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// The index is malformed.
    #[error(transparent)]
    Index(#[from] index::IndexError),
    /// A bound was reached (too many downloads); try again later.
    #[error("at capacity: {0}")]
    Busy(&'static str),
    /// The fabric task has stopped.
    #[error("the fabric task has stopped")]
    Stopped,
    /// A direct request (`/floe/direct/1`) failed: too long, the peer unreachable or banned,
    /// no answer in time, or the peer declined to answer.
    #[error("direct request to {peer}: {source}")]
    Request {
        /// The peer asked.
        peer: libp2p::PeerId,
        /// Why.
        source: RequestError,
    },
}

/// Why building the swarm failed, by the part that failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Gossipsub refused its configuration.
    #[error("the gossipsub configuration: {0}")]
    Gossip(#[source] libp2p::gossipsub::ConfigBuilderError),
    /// The TCP transport (noise, yamux) could not be built.
    #[error("{0}")]
    Transport(#[source] libp2p::TransportBuilderError),
    /// A behaviour (gossipsub, its peer scoring, mDNS) could not be built.
    #[error("{0}")]
    Behaviour(#[source] libp2p::BehaviourBuilderError),
    /// Subscribing to a configured topic failed.
    #[error("subscribing to {topic}: {source}")]
    Subscribe {
        /// The topic's name.
        topic: &'static str,
        /// Why.
        source: libp2p::gossipsub::SubscriptionError,
    },
}

/// Why a gossip message was not published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The message is longer than [`gossip::MAX_GOSSIP_BYTES`].
    #[error("{len} bytes is over the {limit}-byte limit")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// Gossipsub refused it (a duplicate, or every send failed).
    #[error("{0}")]
    Gossip(#[source] libp2p::gossipsub::PublishError),
}

/// Why a direct request got no reply.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The request is longer than [`direct::MAX_DIRECT_BYTES`].
    #[error("{len} bytes is over the {limit}-byte limit")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// We banned the peer.
    #[error("the peer is banned")]
    Banned,
    /// The peer's handler declined (or it has none).
    #[error("the peer declined to answer")]
    Declined,
    /// The exchange failed: unreachable, timed out, or the stream broke.
    #[error("{0}")]
    Failed(#[source] libp2p::request_response::OutboundFailure),
}

#[cfg(test)]
mod admission_tests;
#[cfg(test)]
mod fabric_tests;
