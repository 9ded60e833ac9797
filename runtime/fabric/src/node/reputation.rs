//! Reputation: strikes against peers that misbehave, and the bans they lead to.
//!
//! Why it is apart from the protocols: gossip, uploads and downloads each notice their own
//! kind of misbehaviour, but a ban is one decision for the whole node (the peer is blocked,
//! blacklisted by gossipsub and dropped from Kademlia). The downloads also forget a banned
//! peer; [`Reputation::ban`] says whether a ban is new so its caller can tell them.
//!
//! Bounds: one strike counter per connected peer (dropped on disconnect, [`Reputation::forget`])
//! and at most [`FabricConfig::max_banned`] bans (the oldest is lifted first).

use super::events::FabricEvent;
use super::net::Net;
use crate::FabricConfig;
use crate::gossip;
use libp2p::PeerId;
use std::collections::{HashMap, VecDeque};

#[derive(Default)]
struct Strikes {
    invalid_gossip: u32,
    unknown_requests: u32,
}

/// Strike counters and bans.
pub(super) struct Reputation {
    strikes: HashMap<PeerId, Strikes>,
    banned: VecDeque<PeerId>,
    max_banned: usize,
    max_invalid_gossip: u32,
    max_unknown_requests: u32,
}

impl Reputation {
    pub(super) fn new(config: &FabricConfig) -> Self {
        Self {
            strikes: HashMap::new(),
            banned: VecDeque::new(),
            max_banned: config.max_banned,
            max_invalid_gossip: config.max_invalid_gossip,
            max_unknown_requests: config.max_unknown_requests,
        }
    }

    pub(super) fn is_banned(&self, peer: &PeerId) -> bool {
        self.banned.contains(peer)
    }

    /// How many peers are banned now.
    pub(super) fn banned(&self) -> usize {
        self.banned.len()
    }

    /// Drops the strike counters of a peer whose last connection closed.
    pub(super) fn forget(&mut self, peer: &PeerId) {
        self.strikes.remove(peer);
    }

    /// Bans `peer`: blocked, blacklisted by gossipsub, removed from Kademlia, and reported.
    /// True when the ban is new (the caller then makes the downloads forget the peer); false
    /// when it was banned already.
    #[must_use]
    pub(super) fn ban(&mut self, net: &mut Net, peer: PeerId, reason: &'static str) -> bool {
        if self.banned.contains(&peer) {
            return false;
        }
        tracing::warn!(%peer, reason, "banning peer");
        if self.banned.len() >= self.max_banned {
            if let Some(old) = self.banned.pop_front() {
                net.swarm.behaviour_mut().blocked.unblock_peer(old);
            }
        }
        self.banned.push_back(peer);
        let behaviour = net.swarm.behaviour_mut();
        behaviour.blocked.block_peer(peer);
        behaviour.gated.inner_mut().gossip.blacklist_peer(&peer);
        behaviour.gated.inner_mut().kad.remove_peer(&peer);
        net.emit(FabricEvent::PeerBanned { peer, reason });
        true
    }

    /// Counts `count` invalid gossip messages against `peer`. It is banned at the limit, or as
    /// soon as gossipsub's score for it falls below the graylist threshold: from then on
    /// gossipsub ignores it, so its further messages would never reach the count. True when
    /// this banned it.
    #[must_use]
    pub(super) fn strike_invalid_gossip(
        &mut self,
        net: &mut Net,
        peer: PeerId,
        count: u32,
    ) -> bool {
        let strikes = self.strikes.entry(peer).or_default();
        strikes.invalid_gossip = strikes.invalid_gossip.saturating_add(count);
        let over = strikes.invalid_gossip >= self.max_invalid_gossip;
        let graylisted = net
            .swarm
            .behaviour()
            .gated
            .inner()
            .gossip
            .peer_score(&peer)
            .is_some_and(gossip::graylisted);
        (over || graylisted) && self.ban(net, peer, "invalid gossip")
    }

    /// Counts a request for something this node does not hold against `peer`; banned at the
    /// limit. True when this banned it.
    #[must_use]
    pub(super) fn strike_unknown(&mut self, net: &mut Net, peer: PeerId) -> bool {
        let strikes = self.strikes.entry(peer).or_default();
        strikes.unknown_requests += 1;
        strikes.unknown_requests >= self.max_unknown_requests
            && self.ban(net, peer, "requests for unknown chunks")
    }
}
