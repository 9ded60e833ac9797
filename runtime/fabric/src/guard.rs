//! A guard in front of gossipsub that penalises floods gossipsub itself only survives.
//!
//! Gossipsub bounds what one RPC can cost (its size limit, `max_ihave_length`, the
//! subscription filter), but two floods are not penalised by it at all:
//! - **IWANT requests.** Gossipsub answers what it has and silently skips unknown ids, so a
//!   peer can ask for ids forever at the cost of our CPU.
//! - **Subscriptions.** An RPC over the subscription filter's limits is dropped whole, again
//!   without a mark against the sender.
//!
//! [`Guarded`] wraps the gossipsub behaviour and sees every RPC a connection handler decoded
//! before gossipsub does. It keeps a token bucket per connected peer for IWANT ids and one for
//! subscription changes ([`Budget`]), sized from what an honest peer can send:
//! - An honest peer only asks for ids we advertised to it, and we advertise at most
//!   `max_ihave_length` ids per topic per heartbeat ([`super::gossip::config`]); the bucket
//!   holds four heartbeats' worth and refills one heartbeat's worth per heartbeat.
//! - An honest peer sends its subscriptions once per connection and when its topics change;
//!   the bucket holds [`SUBSCRIPTION_BURST`] and refills [`SUBSCRIPTIONS_PER_SECOND`].
//!
//! It also passes on how many messages gossipsub's handler found invalid (a bad signature, or
//! over a topic's size limit, see [`super::gossip::config`]) as [`GuardEvent::Invalid`], so the
//! fabric counts them with the messages its own validator rejects.
//!
//! A peer that overdraws either bucket is reported once as [`GuardEvent::Flood`] (the fabric
//! bans it) and every further RPC from it is dropped here, unseen by gossipsub. The per-peer
//! state is removed when the peer's last connection closes, so it is bounded by the connection
//! limit.

use super::gossip;
use libp2p::PeerId;
use libp2p::core::{Endpoint, Multiaddr, transport::PortUse};
use libp2p::gossipsub;
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm,
};
use std::collections::{HashMap, VecDeque};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// Subscription changes an honest peer may send at once (its whole list on a new connection,
/// several times over).
pub const SUBSCRIPTION_BURST: f64 = 64.0;
/// Subscription changes per second an honest peer may keep sending.
pub const SUBSCRIPTIONS_PER_SECOND: f64 = 4.0;
/// Flood reports waiting to be taken by the swarm (one per peer, so more means many peers
/// flood at once; the oldest report is dropped, its peer's RPCs are dropped all the same).
const MAX_REPORTS: usize = 64;

/// What a peer flooded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flood {
    /// IWANT requests for more ids than we can have advertised to it.
    Iwant,
    /// More subscription changes than an honest peer sends.
    Subscriptions,
}

impl Flood {
    /// The reason given when the peer is banned.
    pub fn reason(self) -> &'static str {
        match self {
            Flood::Iwant => "IWANT flood",
            Flood::Subscriptions => "subscription flood",
        }
    }
}

/// What the guard reports to the swarm: gossipsub's own events, and floods.
#[derive(Debug)]
pub enum GuardEvent {
    /// An event of gossipsub.
    Gossip(gossipsub::Event),
    /// Gossipsub's connection handler found this many invalid messages (bad signature, or over
    /// a topic's size limit) in RPCs from this peer since the last report. Gossipsub lowers the
    /// peer's score for them; the fabric also counts them as strikes.
    Invalid {
        /// The peer.
        peer: PeerId,
        /// How many.
        count: u32,
    },
    /// This peer overdrew a budget; its RPCs are dropped from now on.
    Flood {
        /// The peer.
        peer: PeerId,
        /// What it flooded.
        what: Flood,
    },
}

/// A token bucket: `capacity` tokens, refilled at `rate` per second. Time comes in as an
/// argument.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    capacity: f64,
    rate: f64,
    at: Instant,
}

impl Bucket {
    fn new(capacity: f64, rate: f64, now: Instant) -> Self {
        Self {
            tokens: capacity,
            capacity,
            rate,
            at: now,
        }
    }

    /// Takes `n` tokens; false when there are not that many (the bucket is then empty).
    fn take(&mut self, n: f64, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        if n <= self.tokens {
            self.tokens -= n;
            true
        } else {
            self.tokens = 0.0;
            false
        }
    }
}

/// The limits of [`Budget`], derived from gossipsub's configuration.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// IWANT ids one peer may ask for at once.
    pub iwant_burst: f64,
    /// IWANT ids per second one peer may keep asking for.
    pub iwant_per_second: f64,
    /// Subscription changes at once.
    pub subscription_burst: f64,
    /// Subscription changes per second.
    pub subscriptions_per_second: f64,
}

impl Limits {
    /// The limits for gossipsub configured with `max_ihave_length` ids per IHAVE and a
    /// heartbeat every `heartbeat`, on `topics` topics.
    pub fn new(max_ihave_length: usize, heartbeat: Duration, topics: usize) -> Self {
        let per_heartbeat = (max_ihave_length * topics.max(1)) as f64;
        Self {
            iwant_burst: 4.0 * per_heartbeat,
            iwant_per_second: per_heartbeat / heartbeat.as_secs_f64().max(0.001),
            subscription_burst: SUBSCRIPTION_BURST,
            subscriptions_per_second: SUBSCRIPTIONS_PER_SECOND,
        }
    }

    /// The limits for gossipsub as `config` sets it up, on the fabric's topics.
    pub fn for_config(config: &gossipsub::Config) -> Self {
        Self::new(
            config.max_ihave_length(),
            config.heartbeat_interval(),
            gossip::Topic::ALL.len(),
        )
    }
}

/// One peer's budgets: a pure accounting core, tested without a swarm.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    iwant: Bucket,
    subscriptions: Bucket,
    flooded: Option<Flood>,
}

impl Budget {
    /// Full budgets at `now`.
    pub fn new(limits: &Limits, now: Instant) -> Self {
        Self {
            iwant: Bucket::new(limits.iwant_burst, limits.iwant_per_second, now),
            subscriptions: Bucket::new(
                limits.subscription_burst,
                limits.subscriptions_per_second,
                now,
            ),
            flooded: None,
        }
    }

    /// Charges one RPC holding `iwant_ids` IWANT ids and `subscriptions` subscription changes.
    /// `Err` once the peer has overdrawn a budget (and for every RPC after that).
    pub fn charge(
        &mut self,
        iwant_ids: usize,
        subscriptions: usize,
        now: Instant,
    ) -> Result<(), Flood> {
        if let Some(flood) = self.flooded {
            return Err(flood);
        }
        if iwant_ids > 0 && !self.iwant.take(iwant_ids as f64, now) {
            self.flooded = Some(Flood::Iwant);
        } else if subscriptions > 0 && !self.subscriptions.take(subscriptions as f64, now) {
            self.flooded = Some(Flood::Subscriptions);
        }
        self.flooded.map_or(Ok(()), Err)
    }
}

/// Which topics may be subscribed to: ours only, unless a fault-injecting node wants more.
#[derive(Debug, Clone)]
pub struct TopicFilter {
    allow_any: bool,
}

impl TopicFilter {
    /// The fabric's topics only, or (`allow_any`, fault injection) any topic.
    pub fn new(allow_any: bool) -> Self {
        Self { allow_any }
    }
}

impl gossipsub::TopicSubscriptionFilter for TopicFilter {
    fn can_subscribe(&mut self, topic_hash: &gossipsub::TopicHash) -> bool {
        self.allow_any || gossip::Topic::from_hash(topic_hash).is_some()
    }
}

/// Gossipsub as the fabric configures it (behind [`Guarded`]). It is defined here, next to
/// the guard that wraps it, so that the guard and the swarm actor depend on it one way only.
pub type Gossip = gossipsub::Behaviour<
    gossipsub::IdentityTransform,
    gossipsub::MaxCountSubscriptionFilter<TopicFilter>,
>;

type Inner = Gossip;

/// Gossipsub behind the guard. Derefs to the gossipsub behaviour for publishing, subscribing
/// and scoring.
pub struct Guarded {
    inner: Inner,
    limits: Limits,
    budgets: HashMap<PeerId, Budget>,
    reports: VecDeque<(PeerId, Flood)>,
    /// Invalid messages per peer not yet reported (at most one entry per connected peer).
    invalid: HashMap<PeerId, u32>,
    /// RPCs dropped because their sender had flooded.
    dropped: u64,
}

impl Guarded {
    /// Wraps `inner` with the given limits.
    pub fn new(inner: Inner, limits: Limits) -> Self {
        Self {
            inner,
            limits,
            budgets: HashMap::new(),
            reports: VecDeque::new(),
            invalid: HashMap::new(),
            dropped: 0,
        }
    }

    /// RPCs dropped so far because their sender had flooded.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

impl std::fmt::Debug for Guarded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guarded")
            .field("limits", &self.limits)
            .field("peers", &self.budgets.len())
            .field("dropped", &self.dropped)
            .finish_non_exhaustive()
    }
}

impl std::ops::Deref for Guarded {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.inner
    }
}

impl std::ops::DerefMut for Guarded {
    fn deref_mut(&mut self) -> &mut Inner {
        &mut self.inner
    }
}

/// The IWANT ids and subscription changes one decoded RPC carries. Gossipsub does not export
/// its control-message types, so the control part is re-encoded as gossipsub's own protobuf
/// and the ids counted there (only for RPCs that carry control messages).
#[allow(deprecated)]
fn rpc_cost(rpc: &gossipsub::Rpc) -> (usize, usize) {
    let ids = if rpc.control_msgs.is_empty() {
        0
    } else {
        let control = gossipsub::Rpc {
            messages: Vec::new(),
            subscriptions: Vec::new(),
            control_msgs: rpc.control_msgs.clone(),
        };
        control
            .into_protobuf()
            .control
            .map(|c| c.iwant.iter().map(|w| w.message_ids.len()).sum())
            .unwrap_or(0)
    };
    (ids, rpc.subscriptions.len())
}

type InnerOut = THandlerOutEvent<Inner>;

impl NetworkBehaviour for Guarded {
    type ConnectionHandler = <Inner as NetworkBehaviour>::ConnectionHandler;
    type ToSwarm = GuardEvent;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.inner
            .handle_pending_inbound_connection(connection_id, local_addr, remote_addr)
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.inner.handle_established_inbound_connection(
            connection_id,
            peer,
            local_addr,
            remote_addr,
        )
    }

    fn handle_pending_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        maybe_peer: Option<PeerId>,
        addresses: &[Multiaddr],
        effective_role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        self.inner.handle_pending_outbound_connection(
            connection_id,
            maybe_peer,
            addresses,
            effective_role,
        )
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        role_override: Endpoint,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.inner.handle_established_outbound_connection(
            connection_id,
            peer,
            addr,
            role_override,
            port_use,
        )
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        if let FromSwarm::ConnectionClosed(closed) = &event {
            if closed.remaining_established == 0 {
                self.budgets.remove(&closed.peer_id);
                self.invalid.remove(&closed.peer_id);
            }
        }
        self.inner.on_swarm_event(event);
    }

    fn on_connection_handler_event(
        &mut self,
        peer_id: PeerId,
        connection_id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        if let InnerOut::Message {
            rpc,
            invalid_messages,
        } = &event
        {
            if !invalid_messages.is_empty()
                && self
                    .budgets
                    .get(&peer_id)
                    .is_none_or(|b| b.flooded.is_none())
            {
                let count = self.invalid.entry(peer_id).or_default();
                *count = count.saturating_add(invalid_messages.len() as u32);
            }
            let (ids, subscriptions) = rpc_cost(rpc);
            let now = Instant::now();
            let limits = self.limits;
            let budget = self
                .budgets
                .entry(peer_id)
                .or_insert_with(|| Budget::new(&limits, now));
            let first = budget.flooded.is_none();
            if let Err(what) = budget.charge(ids, subscriptions, now) {
                self.dropped += 1;
                if first {
                    if self.reports.len() >= MAX_REPORTS {
                        self.reports.pop_front();
                    }
                    self.reports.push_back((peer_id, what));
                }
                return;
            }
        }
        self.inner
            .on_connection_handler_event(peer_id, connection_id, event);
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        if let Some((peer, what)) = self.reports.pop_front() {
            return Poll::Ready(ToSwarm::GenerateEvent(GuardEvent::Flood { peer, what }));
        }
        if let Some(peer) = self.invalid.keys().next().copied() {
            let count = self.invalid.remove(&peer).unwrap_or(0);
            return Poll::Ready(ToSwarm::GenerateEvent(GuardEvent::Invalid { peer, count }));
        }
        self.inner.poll(cx).map(|e| e.map_out(GuardEvent::Gossip))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The limits the fabric runs with (500 ids per IHAVE, a 700 ms heartbeat, 3 topics).
    fn limits() -> Limits {
        Limits::for_config(&gossip::config().unwrap())
    }

    #[test]
    fn an_honest_peer_stays_within_budget_for_as_long_as_it_runs() {
        let t0 = Instant::now();
        let mut budget = Budget::new(&limits(), t0);
        // Every heartbeat, a full IHAVE's worth of IWANT ids on all three topics, and a
        // resubscription now and then, for ten minutes.
        for beat in 0..(600_000 / 700) {
            let now = t0 + Duration::from_millis(700 * beat);
            budget.charge(1500, 0, now).unwrap();
            if beat % 100 == 0 {
                budget.charge(0, 3, now).unwrap();
            }
        }
        // A reconnect storm's worth of subscription lists at once is still fine.
        let later = t0 + Duration::from_secs(700);
        for _ in 0..20 {
            budget.charge(0, 3, later).unwrap();
        }
    }

    #[test]
    fn a_flood_of_iwant_ids_or_subscriptions_is_caught_and_stays_caught() {
        let t0 = Instant::now();
        let mut budget = Budget::new(&limits(), t0);
        // 300 RPCs of 400 ids back to back (the fault-injection flood).
        let mut caught = None;
        for i in 0..300 {
            if let Err(what) = budget.charge(400, 0, t0 + Duration::from_millis(i)) {
                caught = Some((i, what));
                break;
            }
        }
        let (at, what) = caught.expect("the IWANT flood was not caught");
        assert_eq!(what, Flood::Iwant);
        assert!(at <= 20, "caught only after {at} RPCs");
        // From then on every RPC is refused, even an innocent one much later.
        assert_eq!(
            budget.charge(0, 0, t0 + Duration::from_secs(3600)),
            Err(Flood::Iwant)
        );

        let mut budget = Budget::new(&limits(), t0);
        let caught =
            (0..5000u64).find_map(|i| budget.charge(0, 32, t0 + Duration::from_millis(i)).err());
        assert_eq!(caught, Some(Flood::Subscriptions));
    }

    #[test]
    fn a_bucket_refills_at_its_rate_up_to_its_capacity() {
        let t0 = Instant::now();
        let mut b = Bucket::new(10.0, 2.0, t0);
        assert!(b.take(10.0, t0));
        assert!(!b.take(1.0, t0));
        assert!(b.take(2.0, t0 + Duration::from_secs(1)));
        // Long idle never gives more than the capacity.
        assert!(!b.take(11.0, t0 + Duration::from_secs(100)));
    }
}
