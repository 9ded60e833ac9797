//! The download scheduler: which chunk to ask of which peer, and what to do when a peer is slow,
//! busy, gone or lying. Pure and deterministic: time comes in as an argument and ties are
//! broken by a seeded generator, so it is tested without a network (see the tests below).
//!
//! Policy, after BitTorrent, Kraken and Dragonfly:
//! - **Rarest first.** Among the chunks a peer holds and we lack, ask for the one fewest known
//!   peers hold, breaking ties at random so that peers starting together ask the origin for
//!   different chunks and can then trade them.
//! - **Pipelining.** Up to [`DownloadConfig::per_peer_in_flight`] requests per peer, enough to
//!   fill the bandwidth-delay product of a 1 MiB chunk on a LAN or a shaped WAN link.
//! - **Minimum rate.** A request that has not completed within `chunk / min_rate + grace` marks
//!   the peer *snubbed* for [`DownloadConfig::snub_for`]; its chunk goes back to the pool (the
//!   late answer is still taken if it arrives first).
//! - **Bad data bans.** A chunk of the wrong length or hash is dropped and the peer is reported
//!   to the caller to be banned; its requests are withdrawn.
//! - **Resume.** A download starts from the chunks the store already holds.
//! - **Verification off the network task.** [`Download::on_received`] frees the peer's request
//!   slot as soon as a chunk arrives and reserves the chunk while a blocking thread hashes and
//!   stores it; [`Download::on_verified`] settles it. A reserved chunk is never requested
//!   again meanwhile, so the swarm task can keep every link busy while the disk works.
//! - **End game.** When every missing chunk is already requested, an idle peer may ask for one
//!   again (at most [`DownloadConfig::endgame_duplicates`] copies), so one slow peer cannot hold
//!   the last chunk hostage.

use super::index::ArtifactIndex;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Tuning of one download.
#[derive(Debug, Clone)]
pub struct DownloadConfig {
    /// Requests in flight to one peer.
    pub per_peer_in_flight: u32,
    /// Most peers a download tracks; further peers are not added until one leaves.
    pub max_peers: usize,
    /// The slowest acceptable transfer rate in bytes per second.
    pub min_rate: u64,
    /// Added to every request's deadline to absorb connection setup and queueing.
    pub grace: Duration,
    /// How long a snubbed peer gets no new requests.
    pub snub_for: Duration,
    /// How long a peer that answered `Busy` gets no new requests.
    pub busy_backoff: Duration,
    /// Most copies of one chunk requested at once in end game.
    pub endgame_duplicates: u32,
    /// Most bytes requested and not yet arrived, over all peers of this download. With 16 MiB
    /// chunks this, not `per_peer_in_flight × max_peers`, is what bounds the memory a download
    /// can be made to hold (at least one request is always allowed).
    pub max_in_flight_bytes: u64,
}

impl Default for DownloadConfig {
    fn default() -> Self {
        Self {
            per_peer_in_flight: 2,
            max_peers: 64,
            min_rate: 64 * 1024,
            grace: Duration::from_secs(3),
            snub_for: Duration::from_secs(10),
            busy_backoff: Duration::from_millis(100),
            endgame_duplicates: 2,
            max_in_flight_bytes: 8 * 1024 * 1024,
        }
    }
}

/// What became of a chunk that arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// Verified and new: store it and serve it from now on.
    Accepted,
    /// Verified but already held (an end-game duplicate or a late answer).
    Duplicate,
    /// Wrong length or hash: the peer must be banned.
    Corrupt,
}

/// What to do with a chunk that has just arrived, before its hash is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// Hash and store it, then report with [`Download::on_verified`].
    Verify,
    /// Already held or being verified: drop it.
    Duplicate,
    /// Wrong length or position: the peer must be banned (it was already dropped here).
    Corrupt,
}

/// Why a request produced no chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The peer's upload slots were full.
    Busy,
    /// The peer does not hold it after all.
    NotFound,
    /// The stream or connection failed.
    Error,
}

#[derive(Debug)]
struct PeerState {
    bits: Vec<bool>,
    in_flight: u32,
    paused_until: Option<Instant>,
}

/// One artifact being downloaded. `P` is the peer key (`PeerId` in the swarm, small integers in
/// tests).
#[derive(Debug)]
pub struct Download<P> {
    index: ArtifactIndex,
    config: DownloadConfig,
    have: Vec<bool>,
    /// Chunks that arrived and are being hashed and stored.
    verifying: Vec<bool>,
    missing: usize,
    /// Copies of each chunk in flight.
    requested: Vec<u32>,
    /// Requests in flight, with their deadlines. At most `per_peer_in_flight * max_peers`.
    in_flight: HashMap<(P, u32), Instant>,
    peers: HashMap<P, PeerState>,
    rng: u64,
    bytes_received: u64,
}

impl<P: Copy + Eq + Hash + Ord> Download<P> {
    /// Starts a download; `held(i)` says whether chunk `i` is already in the store (resume).
    pub fn new(
        index: ArtifactIndex,
        config: DownloadConfig,
        seed: u64,
        held: impl Fn(usize) -> bool,
    ) -> Self {
        let n = index.chunks.len();
        let have: Vec<bool> = (0..n).map(held).collect();
        let missing = have.iter().filter(|h| !**h).count();
        Self {
            index,
            config,
            have,
            verifying: vec![false; n],
            missing,
            requested: vec![0; n],
            in_flight: HashMap::new(),
            peers: HashMap::new(),
            rng: seed | 1,
            bytes_received: 0,
        }
    }

    /// The artifact's index.
    pub fn index(&self) -> &ArtifactIndex {
        &self.index
    }

    /// Whether every chunk is held.
    pub fn is_complete(&self) -> bool {
        self.missing == 0
    }

    /// Chunks still missing.
    pub fn missing(&self) -> usize {
        self.missing
    }

    /// Which chunks are held.
    pub fn held(&self) -> &[bool] {
        &self.have
    }

    /// Bytes of verified, new chunks received.
    pub fn bytes_received(&self) -> u64 {
        self.bytes_received
    }

    /// Peers currently tracked.
    pub fn peers(&self) -> impl Iterator<Item = &P> {
        self.peers.keys()
    }

    /// Records which chunks `peer` holds. Returns false when the peer is new and the peer table
    /// is full (the update is dropped) or the bitfield has the wrong length.
    pub fn update_peer(&mut self, peer: P, bits: Vec<bool>) -> bool {
        if bits.len() != self.have.len() {
            return false;
        }
        if let Some(state) = self.peers.get_mut(&peer) {
            state.bits = bits;
            return true;
        }
        if self.peers.len() >= self.config.max_peers {
            return false;
        }
        self.peers.insert(
            peer,
            PeerState {
                bits,
                in_flight: 0,
                paused_until: None,
            },
        );
        true
    }

    /// Forgets a peer (disconnected or banned) and withdraws its requests.
    pub fn remove_peer(&mut self, peer: &P) {
        self.peers.remove(peer);
        let mine: Vec<(P, u32)> = self
            .in_flight
            .keys()
            .filter(|(p, _)| p == peer)
            .copied()
            .collect();
        for key in mine {
            self.in_flight.remove(&key);
            self.requested[key.1 as usize] = self.requested[key.1 as usize].saturating_sub(1);
        }
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64*: small, seeded, good enough to break ties.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn deadline(&self, chunk: usize, now: Instant) -> Instant {
        let bytes = self.index.chunk_size(chunk) as u64;
        let secs = bytes as f64 / self.config.min_rate.max(1) as f64;
        now + Duration::from_secs_f64(secs) + self.config.grace
    }

    /// Decides the next requests: a list of `(peer, chunk)` to send now, each already counted as
    /// in flight.
    pub fn schedule(&mut self, now: Instant) -> Vec<(P, u32)> {
        let mut out = Vec::new();
        if self.missing == 0 {
            return out;
        }
        let n = self.have.len();
        // Availability of each missing chunk among tracked peers.
        let mut avail = vec![0u32; n];
        for state in self.peers.values() {
            for (i, b) in state.bits.iter().enumerate() {
                if *b {
                    avail[i] += 1;
                }
            }
        }
        let mut peers: Vec<P> = self.peers.keys().copied().collect();
        peers.sort();
        // Visit peers in a random rotation so no peer is always served first.
        if !peers.is_empty() {
            let k = (self.next_random() % peers.len() as u64) as usize;
            peers.rotate_left(k);
        }
        loop {
            let mut progressed = false;
            for peer in &peers {
                let Some(state) = self.peers.get(peer) else {
                    continue;
                };
                if state.in_flight >= self.config.per_peer_in_flight {
                    continue;
                }
                let in_flight_bytes = self.in_flight.len() as u64 * u64::from(self.index.chunk_len);
                if !self.in_flight.is_empty() && in_flight_bytes >= self.config.max_in_flight_bytes
                {
                    return out;
                }
                if state.paused_until.is_some_and(|t| t > now) {
                    continue;
                }
                let Some(chunk) = self.pick(peer, &avail) else {
                    continue;
                };
                let deadline = self.deadline(chunk, now);
                self.in_flight.insert((*peer, chunk as u32), deadline);
                self.requested[chunk] += 1;
                if let Some(state) = self.peers.get_mut(peer) {
                    state.in_flight += 1;
                }
                out.push((*peer, chunk as u32));
                progressed = true;
            }
            if !progressed {
                return out;
            }
        }
    }

    fn pick(&mut self, peer: &P, avail: &[u32]) -> Option<usize> {
        let state = self.peers.get(peer)?;
        let mut best: Option<(u32, u32, u64, usize)> = None;
        for (i, ((held, offered), available)) in
            self.have.iter().zip(&state.bits).zip(avail).enumerate()
        {
            if *held
                || !*offered
                || self.verifying[i]
                || self.in_flight.contains_key(&(*peer, i as u32))
            {
                continue;
            }
            // Fresh chunks first; in end game, duplicates up to the limit.
            let copies = self.requested[i];
            if copies >= self.config.endgame_duplicates.max(1) {
                continue;
            }
            let tie = self.rng_peek(i);
            let key = (copies, *available, tie, i);
            if best.is_none_or(|b| (key.0, key.1, key.2) < (b.0, b.1, b.2)) {
                best = Some(key);
            }
        }
        let (copies, _, _, i) = best?;
        // A duplicate is only worth it once nothing fresh is left anywhere (end game).
        if copies > 0
            && self
                .requested
                .iter()
                .zip(&self.have)
                .zip(&self.verifying)
                .any(|((r, h), v)| !*h && !*v && *r == 0)
        {
            return None;
        }
        Some(i)
    }

    fn rng_peek(&self, i: usize) -> u64 {
        // A per-call, per-chunk mix of the generator state: deterministic, differs by peer visit.
        let mut x = self.rng ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^ (x >> 33)
    }

    /// A chunk arrived from `peer`. Verifies length (never more than the index allows) and hash
    /// at once: [`Download::on_received`] and [`Download::on_verified`] in one call.
    pub fn on_chunk(&mut self, peer: P, chunk: u32, bytes: &[u8]) -> Arrival {
        let i = chunk as usize;
        let good = |this: &Self| Sha256::digest(bytes).as_slice() == this.index.chunks[i];
        match self.on_received(peer, chunk, bytes.len()) {
            Received::Corrupt => Arrival::Corrupt,
            Received::Duplicate if good(self) => Arrival::Duplicate,
            Received::Duplicate => {
                self.remove_peer(&peer);
                Arrival::Corrupt
            }
            Received::Verify => {
                let ok = good(self);
                self.on_verified(peer, chunk, ok)
            }
        }
    }

    /// A chunk of `len` bytes arrived from `peer`: frees the request's slot and checks what can
    /// be checked without hashing (position and exact length, so never more than the index
    /// allows). On [`Received::Verify`] the chunk is reserved until [`Download::on_verified`] or
    /// [`Download::on_store_failed`].
    pub fn on_received(&mut self, peer: P, chunk: u32, len: usize) -> Received {
        let i = chunk as usize;
        self.finish(peer, chunk);
        if i >= self.have.len() || len != self.index.chunk_size(i) {
            self.remove_peer(&peer);
            return Received::Corrupt;
        }
        if self.have[i] || self.verifying[i] {
            return Received::Duplicate;
        }
        self.verifying[i] = true;
        Received::Verify
    }

    /// The hash check of a chunk reserved by [`Download::on_received`] came back: `ok` when the
    /// bytes matched and are stored.
    pub fn on_verified(&mut self, peer: P, chunk: u32, ok: bool) -> Arrival {
        let i = chunk as usize;
        if i >= self.have.len() {
            return Arrival::Duplicate;
        }
        self.verifying[i] = false;
        if !ok {
            self.remove_peer(&peer);
            return Arrival::Corrupt;
        }
        // Advance the generator so the next schedule breaks ties differently.
        self.next_random();
        if self.have[i] {
            return Arrival::Duplicate;
        }
        self.have[i] = true;
        self.missing -= 1;
        self.bytes_received += self.index.chunk_size(i) as u64;
        Arrival::Accepted
    }

    /// A verified chunk could not be stored (disk full, I/O error): it goes back to the pool.
    pub fn on_store_failed(&mut self, chunk: u32) {
        if let Some(v) = self.verifying.get_mut(chunk as usize) {
            *v = false;
        }
    }

    /// Marks a chunk held without a transfer (e.g. the store got it some other way).
    pub fn mark_held(&mut self, chunk: u32) {
        let i = chunk as usize;
        if i < self.have.len() && !self.have[i] {
            self.have[i] = true;
            self.missing -= 1;
        }
    }

    /// A request produced no chunk.
    pub fn on_failure(&mut self, peer: P, chunk: u32, failure: Failure, now: Instant) {
        self.finish(peer, chunk);
        match failure {
            Failure::Busy => self.pause(&peer, now + self.config.busy_backoff),
            Failure::NotFound => {
                if let Some(state) = self.peers.get_mut(&peer) {
                    if let Some(b) = state.bits.get_mut(chunk as usize) {
                        *b = false;
                    }
                }
            }
            Failure::Error => self.pause(&peer, now + self.config.snub_for),
        }
    }

    fn pause(&mut self, peer: &P, until: Instant) {
        if let Some(state) = self.peers.get_mut(peer) {
            state.paused_until = Some(until);
        }
    }

    fn finish(&mut self, peer: P, chunk: u32) {
        if self.in_flight.remove(&(peer, chunk)).is_some() {
            if let Some(c) = self.requested.get_mut(chunk as usize) {
                *c = c.saturating_sub(1);
            }
            if let Some(state) = self.peers.get_mut(&peer) {
                state.in_flight = state.in_flight.saturating_sub(1);
            }
        }
    }

    /// Withdraws requests past their deadline and snubs their peers. Returns the peers snubbed.
    /// The caller keeps the underlying request open: a late, valid answer is still accepted.
    pub fn check_slow(&mut self, now: Instant) -> Vec<P> {
        let late: Vec<(P, u32)> = self
            .in_flight
            .iter()
            .filter(|(_, d)| **d <= now)
            .map(|(k, _)| *k)
            .collect();
        let mut snubbed = Vec::new();
        for (peer, chunk) in late {
            self.finish(peer, chunk);
            self.pause(&peer, now + self.config.snub_for);
            if !snubbed.contains(&peer) {
                snubbed.push(peer);
            }
        }
        snubbed
    }

    /// The earliest request deadline, for the caller's timer.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.in_flight.values().min().copied()
    }

    /// Whether `(peer, chunk)` is still counted as in flight.
    pub fn is_in_flight(&self, peer: &P, chunk: u32) -> bool {
        self.in_flight.contains_key(&(*peer, chunk))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::MIN_CHUNK_LEN;

    fn artifact(chunks: usize) -> (Vec<u8>, ArtifactIndex) {
        let data: Vec<u8> = (0..chunks * MIN_CHUNK_LEN as usize)
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        let index = ArtifactIndex::from_bytes(&data, MIN_CHUNK_LEN).unwrap();
        (data, index)
    }

    fn chunk(data: &[u8], i: u32) -> &[u8] {
        let l = MIN_CHUNK_LEN as usize;
        &data[i as usize * l..(i as usize + 1) * l]
    }

    /// A tiny simulator: peers answer every request after `latency[peer]`; time jumps to the next
    /// event. Returns the time taken and the requests each peer served.
    fn simulate(
        index: &ArtifactIndex,
        data: &[u8],
        peers: &[(u32, Duration, bool)],
        config: DownloadConfig,
    ) -> (Duration, HashMap<u32, u32>) {
        let start = Instant::now();
        let mut now = start;
        let mut dl = Download::new(index.clone(), config, 7, |_| false);
        for (p, _, _) in peers {
            assert!(dl.update_peer(*p, vec![true; index.chunks.len()]));
        }
        let mut pending: Vec<(Instant, u32, u32)> = Vec::new();
        let mut served = HashMap::new();
        for _ in 0..10_000 {
            for (p, c) in dl.schedule(now) {
                let (_, lat, corrupt) = peers.iter().find(|x| x.0 == p).copied().unwrap();
                let _ = corrupt;
                pending.push((now + lat, p, c));
            }
            if dl.is_complete() {
                return (now - start, served);
            }
            pending.sort();
            let next_answer = pending.first().map(|x| x.0);
            let next = match (next_answer, dl.next_deadline()) {
                (Some(a), Some(d)) => a.min(d),
                (Some(a), None) => a,
                (None, Some(d)) => d,
                (None, None) => panic!("livelock: nothing pending and not complete"),
            };
            now = next;
            dl.check_slow(now);
            while pending.first().is_some_and(|x| x.0 <= now) {
                let (_, p, c) = pending.remove(0);
                let corrupt = peers.iter().find(|x| x.0 == p).unwrap().2;
                let mut bytes = chunk(data, c).to_vec();
                if corrupt {
                    bytes[0] ^= 0xff;
                }
                if dl.peers().any(|x| *x == p) || dl.is_in_flight(&p, c) {
                    *served.entry(p).or_insert(0) += 1;
                    dl.on_chunk(p, c, &bytes);
                }
            }
        }
        panic!("did not finish in 10000 steps");
    }

    #[test]
    fn pulls_from_all_peers_in_parallel() {
        let (data, index) = artifact(60);
        let peers: Vec<_> = (0..4)
            .map(|p| (p, Duration::from_millis(100), false))
            .collect();
        let config = DownloadConfig::default();
        let per_round = 4 * config.per_peer_in_flight;
        let (took, served) = simulate(&index, &data, &peers, config);
        // 60 chunks from 4 peers, `per_peer_in_flight` at a time from each: every round of
        // 100 ms brings 4 × per_peer_in_flight chunks.
        let rounds = 60u32.div_ceil(per_round);
        assert!(
            took <= Duration::from_millis(100) * (rounds + 1),
            "took {took:?}"
        );
        assert_eq!(served.len(), 4);
        assert!(served.values().all(|n| *n >= 10), "{served:?}");
    }

    #[test]
    fn a_corrupting_peer_is_dropped_and_the_download_completes() {
        let (data, index) = artifact(20);
        let peers = [
            (1, Duration::from_millis(10), true),
            (2, Duration::from_millis(50), false),
        ];
        let mut dl = Download::new(index.clone(), DownloadConfig::default(), 1, |_| false);
        dl.update_peer(1, vec![true; 20]);
        dl.update_peer(2, vec![true; 20]);
        let now = Instant::now();
        let reqs = dl.schedule(now);
        let (p, c) = *reqs.iter().find(|(p, _)| *p == 1).unwrap();
        let mut bad = chunk(&data, c).to_vec();
        bad[5] ^= 1;
        assert_eq!(dl.on_chunk(p, c, &bad), Arrival::Corrupt);
        assert!(
            !dl.peers().any(|x| *x == 1),
            "the corrupting peer is no longer asked"
        );
        // An oversized chunk (more than the index allows) is corrupt too, even with a valid prefix.
        let mut long = chunk(&data, 0).to_vec();
        long.push(0);
        dl.update_peer(3, vec![true; 20]);
        assert_eq!(dl.on_chunk(3, 0, &long), Arrival::Corrupt);
        let (took, served) = simulate(&index, &data, &peers[1..], DownloadConfig::default());
        assert!(took < Duration::from_secs(1));
        assert_eq!(served[&2], 20);
    }

    #[test]
    fn a_slow_peer_is_snubbed_and_its_chunks_move_elsewhere() {
        let (data, index) = artifact(30);
        // Peer 1 answers after 60 s (below min rate for a 4 KiB chunk with 1 s grace).
        let config = DownloadConfig {
            min_rate: 4096,
            grace: Duration::from_secs(1),
            ..DownloadConfig::default()
        };
        let peers = vec![
            (1, Duration::from_secs(60), false),
            (2, Duration::from_millis(100), false),
        ];
        let (took, _) = simulate(&index, &data, &peers, config);
        assert!(
            took < Duration::from_secs(15),
            "a stalled peer held the download for {took:?}"
        );
    }

    #[test]
    fn rarest_chunks_are_requested_first() {
        let (_, index) = artifact(8);
        let mut dl: Download<u32> = Download::new(
            index,
            DownloadConfig {
                per_peer_in_flight: 1,
                ..DownloadConfig::default()
            },
            3,
            |_| false,
        );
        // Chunk 5 is held only by peer 1; every other chunk by all three.
        let mut common = vec![true; 8];
        common[5] = false;
        dl.update_peer(1, vec![true; 8]);
        dl.update_peer(2, common.clone());
        dl.update_peer(3, common);
        let reqs = dl.schedule(Instant::now());
        assert!(reqs.contains(&(1, 5)), "{reqs:?}");
        let chunks: Vec<u32> = reqs.iter().map(|r| r.1).collect();
        let mut dedup = chunks.clone();
        dedup.sort();
        dedup.dedup();
        assert_eq!(
            dedup.len(),
            chunks.len(),
            "no chunk asked twice outside end game"
        );
    }

    #[test]
    fn resume_starts_from_held_chunks_and_peer_table_is_bounded() {
        let (_, index) = artifact(10);
        let config = DownloadConfig {
            max_peers: 2,
            ..DownloadConfig::default()
        };
        let mut dl: Download<u32> = Download::new(index, config, 3, |i| i < 7);
        assert_eq!(dl.missing(), 3);
        assert!(dl.update_peer(1, vec![true; 10]));
        assert!(dl.update_peer(2, vec![true; 10]));
        assert!(
            !dl.update_peer(3, vec![true; 10]),
            "third peer refused at the bound"
        );
        assert!(
            !dl.update_peer(1, vec![true; 3]),
            "wrong-length bitfield refused"
        );
        let reqs = dl.schedule(Instant::now());
        assert!(reqs.iter().all(|(_, c)| *c >= 7), "{reqs:?}");
    }

    #[test]
    fn busy_and_gone_peers_do_not_stall() {
        let (data, index) = artifact(4);
        let mut dl: Download<u32> = Download::new(index, DownloadConfig::default(), 9, |_| false);
        dl.update_peer(1, vec![true; 4]);
        dl.update_peer(2, vec![true; 4]);
        let now = Instant::now();
        let reqs = dl.schedule(now);
        for (p, c) in &reqs {
            if *p == 1 {
                dl.on_failure(*p, *c, Failure::Busy, now);
            } else {
                assert_eq!(dl.on_chunk(*p, *c, chunk(&data, *c)), Arrival::Accepted);
            }
        }
        dl.remove_peer(&1);
        let mut t = now;
        for _ in 0..20 {
            t += Duration::from_millis(200);
            for (p, c) in dl.schedule(t) {
                assert_eq!(p, 2);
                dl.on_chunk(p, c, chunk(&data, c));
            }
            if dl.is_complete() {
                return;
            }
        }
        panic!("did not complete with the remaining peer");
    }

    #[test]
    fn a_chunk_being_verified_is_not_asked_for_again_and_a_failed_store_returns_it() {
        let (_, index) = artifact(3);
        let config = DownloadConfig {
            per_peer_in_flight: 2,
            ..DownloadConfig::default()
        };
        let len = MIN_CHUNK_LEN as usize;
        let mut dl: Download<u32> = Download::new(index, config, 3, |_| false);
        dl.update_peer(1, vec![true; 3]);
        let now = Instant::now();
        let first = dl.schedule(now);
        assert_eq!(first.len(), 2);
        let (c, d) = (first[0].1, first[1].1);
        // It arrives: the peer's slot is free at once, but the chunk is reserved while hashed,
        // so the free slot goes to the third chunk.
        assert_eq!(dl.on_received(1, c, len), Received::Verify);
        assert!(!dl.is_in_flight(&1, c));
        let next = dl.schedule(now);
        assert_eq!(next.len(), 1);
        assert!(next[0].1 != c && next[0].1 != d);
        // The disk failed: the chunk is wanted again as soon as the peer has a free slot.
        dl.on_store_failed(c);
        assert_eq!(dl.on_received(1, d, len), Received::Verify);
        assert_eq!(dl.on_verified(1, d, true), Arrival::Accepted);
        assert_eq!(dl.schedule(now), vec![(1, c)]);
        assert_eq!(dl.on_received(1, c, len), Received::Verify);
        assert_eq!(dl.on_verified(1, c, true), Arrival::Accepted);
        assert_eq!(dl.missing(), 1);
        // A copy of a held chunk is a duplicate; a wrong length is corrupt and drops the peer.
        assert_eq!(dl.on_received(1, c, len), Received::Duplicate);
        assert_eq!(dl.on_received(1, next[0].1, 10), Received::Corrupt);
        assert_eq!(dl.peers().count(), 0);
        // Bad bytes after the hash check drop the peer.
        let mut dl2: Download<u32> =
            Download::new(artifact(1).1, DownloadConfig::default(), 4, |_| false);
        dl2.update_peer(7, vec![true]);
        let (p, c) = dl2.schedule(now)[0];
        assert_eq!(
            dl2.on_received(p, c, MIN_CHUNK_LEN as usize),
            Received::Verify
        );
        assert_eq!(dl2.on_verified(p, c, false), Arrival::Corrupt);
        assert_eq!(dl2.peers().count(), 0);
        assert_eq!(dl2.missing(), 1);
    }

    #[test]
    fn bytes_in_flight_are_bounded_whatever_the_chunk_size() {
        // 8 chunks of 16 MiB offered by 10 peers: the byte budget, not the per-peer count,
        // decides how many are asked for at once.
        let index = ArtifactIndex {
            total_len: 8 * 16 * 1024 * 1024,
            chunk_len: 16 * 1024 * 1024,
            chunks: (0..8u8).map(|i| [i; 32]).collect(),
        };
        let config = DownloadConfig {
            max_in_flight_bytes: 40 * 1024 * 1024,
            ..DownloadConfig::default()
        };
        let mut dl: Download<u32> = Download::new(index, config, 5, |_| false);
        for p in 0..10 {
            dl.update_peer(p, vec![true; 8]);
        }
        let now = Instant::now();
        assert_eq!(dl.schedule(now).len(), 3);
        assert!(dl.schedule(now).is_empty());
    }
}
