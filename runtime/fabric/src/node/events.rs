//! What the fabric tells the rest of the process: the events its observer reads and the
//! counters [`super::Fabric::stats`] returns. They live apart from the actor so that every part
//! of it can report without depending on the others.

use crate::gossip::Topic;
use crate::index::ArtifactId;
use libp2p::{Multiaddr, PeerId};
use std::time::Duration;

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
    /// Admitted peers with at least one connection.
    pub connected_peers: usize,
    /// Admission counters (all zero on a fabric without admission).
    pub admission: super::AdmissionStats,
    /// Connections the bound on non-coordinator peers refused ([`crate::gate`]).
    pub bound_refused: u64,
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
    /// Gossip RPCs dropped unread because their sender had flooded (see [`crate::guard`]).
    pub flood_rpcs_dropped: u64,
    /// Events dropped because the observer was slow.
    pub dropped_events: u64,
    /// Gossipsub score of each connected peer.
    pub scores: Vec<(PeerId, f64)>,
    /// Fault injection only: raw gossipsub RPC streams a peer read to their end.
    #[cfg(feature = "fault-injection")]
    pub fault_rpcs_delivered: u64,
}
