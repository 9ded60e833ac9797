//! [`Fabric`], the cloneable handle the rest of the process holds, and the commands it sends
//! to the swarm task.
//!
//! Why a handle and commands: the task owns the swarm and all protocol state, so nothing else
//! can touch them; a call sends a [`Command`] with a oneshot for the reply and waits. Work
//! that would stall the network (hashing and writing a seeded artifact, checking that an
//! imported one is whole) runs on a blocking thread of the caller before the command is sent.

use super::events::FabricStats;
#[cfg(feature = "fault-injection")]
use super::fault::Flood;
use crate::direct;
use crate::gossip::Topic;
use crate::index::{ArtifactId, ArtifactIndex};
use crate::store::{FabricStore, StoreError};
use crate::{FabricError, RequestError};
use libp2p::{Multiaddr, PeerId};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// A request to the swarm task, with where its reply goes.
pub(super) enum Command {
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
    /// Fault injection only.
    #[cfg(feature = "fault-injection")]
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
    pub(super) fn new(
        commands: mpsc::Sender<Command>,
        peer_id: PeerId,
        store: Arc<dyn FabricStore>,
    ) -> Self {
        Self {
            commands,
            peer_id,
            store,
        }
    }

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
    /// index of a verified manifest, [`crate::signed::index_of`]), so no peer needs to be asked
    /// for it. Completion is reported as [`super::FabricEvent::ArtifactComplete`]. Returns its id.
    pub async fn fetch_index(&self, index: ArtifactIndex) -> Result<ArtifactId, FabricError> {
        index.check()?;
        let id = index.id();
        let store = Arc::clone(&self.store);
        blocking(move || Ok(store.put_index(&index)?)).await?;
        self.fetch(id).await?;
        Ok(id)
    }

    /// Starts fetching an artifact by id (resuming from held chunks). Completion is reported as
    /// [`super::FabricEvent::ArtifactComplete`].
    pub async fn fetch(&self, id: ArtifactId) -> Result<(), FabricError> {
        self.call(|reply| Command::Fetch { id, reply }).await?
    }

    /// Publishes a gossip message (at most [`crate::gossip::MAX_GOSSIP_BYTES`]).
    /// [`FabricError::NoPeers`] when no connected peer subscribes to the topic yet: the message
    /// was not sent and may be published again later (anything once published is a duplicate
    /// for a while).
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
                source: RequestError::TooLarge {
                    len: data.len(),
                    limit: direct::MAX_DIRECT_BYTES,
                },
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
    #[cfg(feature = "fault-injection")]
    pub async fn fault_flood(&self, kind: Flood, count: u32) -> Result<(), FabricError> {
        self.commands
            .send(Command::Flood { kind, count })
            .await
            .map_err(|_| FabricError::Stopped)
    }
}
