//! Uploads: the artifacts this node serves, the answers to chunk, index and chunk-map
//! requests, the upload slots with their queue, and super-seeding.
//!
//! Why apart from downloads: serving is driven by other peers' requests and bounded by our
//! uplink, fetching by our scheduler. They meet only in the served set: a fetched artifact is
//! served (unless central pull) and each verified chunk is offered from then on, which the
//! downloads record through [`Uploads::serve`] and [`Uploads::mark_held`].
//!
//! A chunk is read on the blocking pool and sent when the read is done
//! ([`Uploads::on_read`]). At most [`FabricConfig::upload_slots`] responses are being read or
//! written at once; up to [`FabricConfig::upload_queue`] further requests wait for a slot in
//! arrival order, and requests beyond them are answered `Busy`.

use super::jobs::Done;
use super::net::Net;
use super::reputation::Reputation;
use crate::FabricConfig;
use crate::index::{ArtifactId, ArtifactIndex, ChunkHash};
use crate::store::{FabricStore, StoreError};
use crate::wire::{self, Request, Response};
use libp2p::PeerId;
use libp2p::request_response::{InboundRequestId, ResponseChannel};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Most artifacts served at once.
pub const MAX_SERVED: usize = 64;

/// Peers banned by a call (usually none); the caller makes the downloads forget them.
pub(super) type NewlyBanned = Vec<PeerId>;

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

/// A chunk request waiting for an upload slot.
struct QueuedChunk {
    peer: PeerId,
    request_id: InboundRequestId,
    id: ArtifactId,
    hash: ChunkHash,
    channel: ResponseChannel<Response>,
}

/// What this node serves and the uploads in progress.
pub(super) struct Uploads {
    store: Arc<dyn FabricStore>,
    /// Where chunk reads report (shared with the downloads' verifications).
    done: mpsc::Sender<Done>,
    central_pull: bool,
    upload_slots: usize,
    queue_capacity: usize,
    /// Fault injection: serve every chunk with its first byte flipped.
    #[cfg(feature = "fault-injection")]
    corrupt: bool,
    served: HashMap<ArtifactId, Served>,
    served_order: VecDeque<ArtifactId>,
    /// Chunk responses being written.
    sending: HashSet<InboundRequestId>,
    /// Chunks being read to serve (counted against the upload slots).
    reading: usize,
    /// Chunk requests waiting for an upload slot, oldest first (at most
    /// [`FabricConfig::upload_queue`]).
    queue: VecDeque<QueuedChunk>,
    chunks_served: u64,
    busy_answers: u64,
}

impl Uploads {
    pub(super) fn new(
        config: &FabricConfig,
        store: Arc<dyn FabricStore>,
        done: mpsc::Sender<Done>,
    ) -> Self {
        Self {
            store,
            done,
            central_pull: config.central_pull,
            upload_slots: config.upload_slots,
            queue_capacity: config.upload_queue,
            #[cfg(feature = "fault-injection")]
            corrupt: config.fault_corrupt_chunks,
            served: HashMap::new(),
            served_order: VecDeque::new(),
            sending: HashSet::new(),
            reading: 0,
            queue: VecDeque::new(),
            chunks_served: 0,
            busy_answers: 0,
        }
    }

    /// Chunk responses being written.
    pub(super) fn in_flight(&self) -> usize {
        self.sending.len()
    }

    /// Chunk responses sent in total.
    pub(super) fn chunks_served(&self) -> u64 {
        self.chunks_served
    }

    /// Chunk requests answered `Busy`.
    pub(super) fn busy_answers(&self) -> u64 {
        self.busy_answers
    }

    /// Serves an artifact holding the chunks `bits` marks (replacing what was served of it).
    pub(super) fn serve(&mut self, index: ArtifactIndex, bits: Vec<bool>, seeded: bool) {
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

    /// Whether `id` was seeded here (rather than fetched).
    pub(super) fn is_seeded(&self, id: &ArtifactId) -> bool {
        self.served.get(id).is_some_and(|s| s.seeded)
    }

    /// A chunk of a served artifact is held now: serve it from now on.
    pub(super) fn mark_held(&mut self, id: &ArtifactId, chunk: u32) {
        if let Some(served) = self.served.get_mut(id) {
            if let Some(b) = served.bits.get_mut(chunk as usize) {
                *b = true;
            }
        }
    }

    fn servable(&self, id: &ArtifactId) -> Option<&Served> {
        self.served
            .get(id)
            .filter(|s| s.seeded || !self.central_pull)
    }

    /// An incoming request of the chunk protocol: index and chunk-map requests are answered at
    /// once, chunk requests by [`Uploads::serve_chunk`]. Returns the peers this banned.
    pub(super) fn on_request(
        &mut self,
        net: &mut Net,
        reputation: &mut Reputation,
        peer: PeerId,
        request_id: InboundRequestId,
        request: Request,
        channel: ResponseChannel<Response>,
    ) -> NewlyBanned {
        let mut banned = Vec::new();
        match request {
            Request::Chunk(id, hash) => self.serve_chunk(
                net,
                reputation,
                &mut banned,
                QueuedChunk {
                    peer,
                    request_id,
                    id,
                    hash,
                    channel,
                },
            ),
            other => {
                let response = self.answer(other);
                let _ = net
                    .swarm
                    .behaviour_mut()
                    .gated
                    .inner_mut()
                    .chunks
                    .send_response(channel, response);
            }
        }
        banned
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
    /// every upload slot is taken and the queue is full, else the chunk is read on a blocking
    /// thread and sent when the read is done ([`Uploads::on_read`]).
    fn serve_chunk(
        &mut self,
        net: &mut Net,
        reputation: &mut Reputation,
        banned: &mut NewlyBanned,
        request: QueuedChunk,
    ) {
        let QueuedChunk {
            peer,
            request_id,
            id,
            hash,
            channel,
        } = request;
        let position = self
            .servable(&id)
            .and_then(|s| s.position.get(&hash).copied())
            .filter(|i| self.served.get(&id).is_some_and(|s| s.bits[*i as usize]));
        let super_seeding = !self.central_pull;
        let already_out = position.is_some_and(|i| {
            self.served.get(&id).is_some_and(|s| {
                super_seeding && s.seeded && s.never_handed_out > 0 && s.handed_out[i as usize] > 0
            })
        });
        let response = if position.is_none() {
            if reputation.strike_unknown(net, peer) {
                banned.push(peer);
            }
            Response::NotFound
        } else if already_out {
            // Super-seeding: a peer that got this chunk from us serves it to the others.
            Response::NotFound
        } else if self.sending.len() + self.reading >= self.upload_slots {
            if self.queue.len() < self.queue_capacity {
                // Served when a slot frees (and checked again then): the link goes on to the
                // next request at once instead of idling until a bounced requester retries.
                self.queue.push_back(QueuedChunk {
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
        let _ = net
            .swarm
            .behaviour_mut()
            .gated
            .inner_mut()
            .chunks
            .send_response(channel, response);
    }

    /// Starts queued chunk requests while upload slots are free.
    fn serve_queued(
        &mut self,
        net: &mut Net,
        reputation: &mut Reputation,
        banned: &mut NewlyBanned,
    ) {
        while self.sending.len() + self.reading < self.upload_slots {
            let Some(q) = self.queue.pop_front() else {
                return;
            };
            self.serve_chunk(net, reputation, banned, q);
        }
    }

    /// A response was sent or failed: if it was a chunk, its slot is free for a queued request.
    pub(super) fn on_finished(
        &mut self,
        net: &mut Net,
        reputation: &mut Reputation,
        request_id: InboundRequestId,
    ) -> NewlyBanned {
        let mut banned = Vec::new();
        if self.sending.remove(&request_id) {
            self.serve_queued(net, reputation, &mut banned);
        }
        banned
    }

    /// A chunk to serve was read: send it, with our chunk map riding along.
    pub(super) fn on_read(
        &mut self,
        net: &mut Net,
        reputation: &mut Reputation,
        id: ArtifactId,
        request_id: InboundRequestId,
        channel: ResponseChannel<Response>,
        result: Result<Option<Vec<u8>>, StoreError>,
    ) -> NewlyBanned {
        self.reading = self.reading.saturating_sub(1);
        let response = match result {
            #[cfg_attr(not(feature = "fault-injection"), allow(unused_mut))]
            Ok(Some(mut bytes)) => {
                #[cfg(feature = "fault-injection")]
                if self.corrupt {
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
        let mut banned = Vec::new();
        let is_chunk = matches!(response, Response::Chunk { .. });
        if net
            .swarm
            .behaviour_mut()
            .gated
            .inner_mut()
            .chunks
            .send_response(channel, response)
            .is_ok()
            && is_chunk
        {
            self.sending.insert(request_id);
            self.chunks_served += 1;
        } else {
            self.serve_queued(net, reputation, &mut banned);
        }
        banned
    }
}
