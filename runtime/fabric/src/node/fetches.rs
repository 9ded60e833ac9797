//! Fetches: every running download, our outstanding requests of the chunk protocol, and the
//! verification of arrived chunks.
//!
//! Why apart from uploads: fetching is driven by the scheduler ([`crate::download`]) and our
//! own requests, serving by other peers' requests. A download tells the uploads what it holds
//! (a fetched artifact is served as it arrives), and bans a peer that sends a bad index, map
//! or chunk through [`Reputation`]; that is all they share, and it passes through [`Cx`].
//!
//! An arrived chunk is hashed and stored on the blocking pool (at most [`MAX_VERIFYING`] at
//! once; beyond that in place, which slows the network side down) while the link that brought
//! it is already asked for the next one.

use super::events::FabricEvent;
use super::jobs::Done;
use super::net::Net;
use super::peer_map::PeerMap;
use super::reputation::Reputation;
use super::uploads::Uploads;
use crate::download::{Arrival, Download, DownloadConfig, Failure, Received};
use crate::index::{ArtifactId, ArtifactIndex};
use crate::store::{FabricStore, StoreError};
use crate::wire::{self, Request, Response};
use crate::{FabricConfig, FabricError};
use libp2p::PeerId;
use libp2p::request_response::{OutboundFailure, OutboundRequestId};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Most outbound requests outstanding at once, over all downloads.
pub const MAX_PENDING: usize = 4096;
/// Most arrived chunks being hashed and stored on blocking threads at once. Beyond it a chunk
/// is hashed and stored on the swarm task itself, which slows the network side down
/// (backpressure) rather than queueing without bound.
pub const MAX_VERIFYING: usize = 16;

/// The rest of the node a download acts on: the network, bans, and what is served.
pub(super) struct Cx<'a> {
    pub(super) net: &'a mut Net,
    pub(super) reputation: &'a mut Reputation,
    pub(super) uploads: &'a mut Uploads,
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

#[derive(Clone, Copy)]
enum Pending {
    Index(ArtifactId),
    Have(ArtifactId),
    Chunk(ArtifactId, u32),
    /// A fault-injection request whose answer is irrelevant.
    #[cfg(feature = "fault-injection")]
    Junk,
}

/// The downloads and their requests.
pub(super) struct Fetches {
    store: Arc<dyn FabricStore>,
    /// Where verifications report (shared with the uploads' reads).
    done: mpsc::Sender<Done>,
    max_downloads: usize,
    download: DownloadConfig,
    have_refresh: Duration,
    downloads: HashMap<ArtifactId, Active>,
    pending: HashMap<OutboundRequestId, (PeerId, Pending)>,
    /// Arrived chunks being hashed and stored (at most [`MAX_VERIFYING`]).
    verifying: usize,
    /// Seeds each download's scheduler differently.
    seed: u64,
}

impl Fetches {
    pub(super) fn new(
        config: &FabricConfig,
        store: Arc<dyn FabricStore>,
        done: mpsc::Sender<Done>,
        seed: u64,
    ) -> Self {
        Self {
            store,
            done,
            max_downloads: config.max_downloads,
            download: config.download.clone(),
            have_refresh: config.have_refresh,
            downloads: HashMap::new(),
            pending: HashMap::new(),
            verifying: 0,
            seed,
        }
    }

    /// Downloads running.
    pub(super) fn len(&self) -> usize {
        self.downloads.len()
    }

    /// Outbound requests outstanding.
    pub(super) fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Starts fetching `id` (resuming from held chunks); nothing to do if it runs already.
    pub(super) fn start(&mut self, cx: &mut Cx<'_>, id: ArtifactId) -> Result<(), FabricError> {
        if self.downloads.contains_key(&id) {
            return Ok(());
        }
        if self.downloads.len() >= self.max_downloads {
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
            self.install_index(cx.uploads, &mut active, index);
        }
        if active.dl.as_ref().is_some_and(|d| d.is_complete()) {
            let bytes = active.dl.as_ref().map(|d| d.index().total_len).unwrap_or(0);
            cx.net.emit(FabricEvent::ArtifactComplete {
                id,
                bytes,
                received: 0,
                elapsed: Duration::ZERO,
            });
            return Ok(());
        }
        self.downloads.insert(id, active);
        self.query_all(cx.net, id);
        Ok(())
    }

    fn install_index(&mut self, uploads: &mut Uploads, active: &mut Active, index: ArtifactIndex) {
        let store = &self.store;
        self.seed = self.seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let dl = Download::new(index.clone(), self.download.clone(), self.seed, |i| {
            store.has(&index.chunks[i])
        });
        let bits = dl.held().to_vec();
        let seeded = uploads.is_seeded(&active.id);
        uploads.serve(index, bits, seeded);
        active.dl = Some(dl);
    }

    /// Asks every connected peer what it has of `id` (or for its index while unknown).
    fn query_all(&mut self, net: &mut Net, id: ArtifactId) {
        for peer in net.peers() {
            self.query_peer(net, id, peer, Instant::now());
        }
        self.pump(net, id, Instant::now());
    }

    fn send(&mut self, net: &mut Net, peer: PeerId, request: Request, pending: Pending) -> bool {
        if self.pending.len() >= MAX_PENDING {
            return false;
        }
        let rid = net
            .swarm
            .behaviour_mut()
            .gated
            .inner_mut()
            .chunks
            .send_request(&peer, request);
        self.pending.insert(rid, (peer, pending));
        true
    }

    /// Fault injection: sends a request whose answer is ignored (within [`MAX_PENDING`]).
    #[cfg(feature = "fault-injection")]
    pub(super) fn send_junk(&mut self, net: &mut Net, peer: PeerId, request: Request) -> bool {
        self.send(net, peer, request, Pending::Junk)
    }

    fn query_peer(&mut self, net: &mut Net, id: ArtifactId, peer: PeerId, now: Instant) {
        let Some(active) = self.downloads.get_mut(&id) else {
            return;
        };
        if active.dl.is_none() {
            if active.index_asked.insert(peer) {
                self.send(net, peer, Request::Index(id), Pending::Index(id));
            }
            return;
        }
        let refresh = self.have_refresh;
        let due = active
            .have_asked
            .get(&peer)
            .is_none_or(|m| m.due(now, refresh));
        if due && self.send(net, peer, Request::Have(id), Pending::Have(id)) {
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
    fn pump(&mut self, net: &mut Net, id: ArtifactId, now: Instant) {
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
            if !self.send(
                net,
                peer,
                Request::Chunk(id, hash),
                Pending::Chunk(id, chunk),
            ) {
                if let Some(dl) = self.downloads.get_mut(&id).and_then(|a| a.dl.as_mut()) {
                    dl.on_failure(peer, chunk, Failure::Busy, now);
                }
            }
        }
    }

    /// The periodic tick: snub slow peers, refresh chunk maps, send what the schedulers want.
    pub(super) fn on_tick(&mut self, net: &mut Net, now: Instant) {
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
                net.emit(FabricEvent::PeerSnubbed { peer });
            }
            for peer in net.peers() {
                self.query_peer(net, id, peer, now);
            }
            self.pump(net, id, now);
        }
    }

    /// A peer's first connection: ask it about every download.
    pub(super) fn on_connected(&mut self, net: &mut Net, peer: PeerId) {
        let ids: Vec<ArtifactId> = self.downloads.keys().copied().collect();
        for id in ids {
            self.query_peer(net, id, peer, Instant::now());
        }
    }

    /// A peer's last connection closed: forget what it said and what it was asked.
    pub(super) fn on_disconnected(&mut self, peer: &PeerId) {
        for active in self.downloads.values_mut() {
            active.have_asked.remove(peer);
            active.index_asked.remove(peer);
            if let Some(dl) = active.dl.as_mut() {
                dl.remove_peer(peer);
            }
        }
    }

    /// A peer was banned: no download asks it again.
    pub(super) fn forget_banned(&mut self, peer: &PeerId) {
        for active in self.downloads.values_mut() {
            if let Some(dl) = active.dl.as_mut() {
                dl.remove_peer(peer);
            }
        }
    }

    /// Bans `peer` and, when the ban is new, forgets it in every download.
    fn ban(&mut self, cx: &mut Cx<'_>, peer: PeerId, reason: &'static str) {
        if cx.reputation.ban(cx.net, peer, reason) {
            self.forget_banned(&peer);
        }
    }

    /// The answer to one of our requests.
    pub(super) fn on_response(
        &mut self,
        cx: &mut Cx<'_>,
        peer: PeerId,
        request_id: OutboundRequestId,
        response: Response,
    ) {
        if let Some((_, pending)) = self.pending.remove(&request_id) {
            self.on_answer(cx, peer, pending, response);
        }
    }

    fn on_answer(&mut self, cx: &mut Cx<'_>, peer: PeerId, pending: Pending, response: Response) {
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
                            self.install_index(cx.uploads, &mut active, index);
                        }
                        Err(_) => {
                            self.downloads.insert(id, active);
                            self.ban(cx, peer, "index does not match its id");
                            return;
                        }
                    }
                }
                self.downloads.insert(id, active);
                self.query_all(cx.net, id);
            }
            (Pending::Have(id), Response::Have(bytes)) => {
                let Some(active) = self.downloads.get_mut(&id) else {
                    return;
                };
                if let Some(entry) = active.have_asked.get_mut(&peer) {
                    entry.outstanding = false;
                }
                if self.learn_map(cx, peer, id, &bytes, now) {
                    self.pump(cx.net, id, now);
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
                if have.is_empty() || self.learn_map(cx, peer, id, &have, now) {
                    self.on_chunk(cx, peer, id, chunk, bytes, now);
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
                self.pump(cx.net, id, now);
            }
            (Pending::Index(_), _) => {}
            #[cfg(feature = "fault-injection")]
            (Pending::Junk, _) => {}
        }
    }

    /// Records a peer's chunk map (packed bits) for a download. False when the map is malformed
    /// (the peer is banned) or the download is gone.
    fn learn_map(
        &mut self,
        cx: &mut Cx<'_>,
        peer: PeerId,
        id: ArtifactId,
        packed: &[u8],
        now: Instant,
    ) -> bool {
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
                self.ban(cx, peer, "malformed chunk map");
                false
            }
        }
    }

    fn on_chunk(
        &mut self,
        cx: &mut Cx<'_>,
        peer: PeerId,
        id: ArtifactId,
        chunk: u32,
        bytes: Vec<u8>,
        now: Instant,
    ) {
        let Some(active) = self.downloads.get_mut(&id) else {
            return;
        };
        let Some(dl) = active.dl.as_mut() else { return };
        match dl.on_received(peer, chunk, bytes.len()) {
            Received::Corrupt => {
                self.ban(cx, peer, "served a chunk of the wrong length");
                self.pump(cx.net, id, now);
                return;
            }
            Received::Duplicate => {
                self.pump(cx.net, id, now);
                return;
            }
            Received::Verify => {}
        }
        let hash = dl.index().chunks[chunk as usize];
        // The peer's request slot is free again: ask it (and others) for more while this chunk
        // is hashed and stored.
        self.pump(cx.net, id, now);
        if self.verifying >= MAX_VERIFYING {
            // At the bound: do it here, which holds the swarm task up (backpressure).
            let result = self.store.put(&hash, &bytes);
            self.settle(cx, id, chunk, peer, result, now);
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

    /// A verification on the blocking pool finished.
    pub(super) fn on_stored(
        &mut self,
        cx: &mut Cx<'_>,
        id: ArtifactId,
        chunk: u32,
        peer: PeerId,
        result: Result<(), StoreError>,
    ) {
        self.verifying = self.verifying.saturating_sub(1);
        self.settle(cx, id, chunk, peer, result, Instant::now());
    }

    /// An arrived chunk was hashed and stored, or refused: settle it in its download.
    fn settle(
        &mut self,
        cx: &mut Cx<'_>,
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
                    self.pump(cx.net, id, now);
                    return;
                }
            },
            Err(StoreError::Verify { .. }) => {
                dl.on_verified(peer, chunk, false);
                self.ban(cx, peer, "served a corrupt chunk");
                self.pump(cx.net, id, now);
                return;
            }
            Err(err) => {
                tracing::error!(%err, "storing a verified chunk");
                dl.on_store_failed(chunk);
                self.pump(cx.net, id, now);
                return;
            }
        }
        // Serve it from now on.
        cx.uploads.mark_held(&id, chunk);
        cx.net.emit(FabricEvent::ChunkReceived {
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
                cx.net.emit(FabricEvent::ArtifactComplete {
                    id,
                    bytes,
                    received,
                    elapsed: now.duration_since(started),
                });
            }
            _ => self.pump(cx.net, id, now),
        }
    }

    /// One of our requests failed (timeout, connection closed, protocol refused).
    pub(super) fn on_failure(
        &mut self,
        net: &mut Net,
        peer: PeerId,
        request_id: OutboundRequestId,
        error: &OutboundFailure,
    ) {
        let Some((_, pending)) = self.pending.remove(&request_id) else {
            return;
        };
        tracing::debug!(%peer, %error, "request failed");
        let now = Instant::now();
        match pending {
            Pending::Chunk(id, chunk) => {
                if let Some(dl) = self.downloads.get_mut(&id).and_then(|a| a.dl.as_mut()) {
                    dl.on_failure(peer, chunk, Failure::Error, now);
                }
                self.pump(net, id, now);
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
            #[cfg(feature = "fault-injection")]
            Pending::Junk => {}
        }
    }
}
