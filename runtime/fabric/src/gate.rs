//! The admission gate: a wrapper around the behaviours that carry Floe's protocols (identify,
//! Kademlia, gossip, chunks, direct requests) that keeps each connection shut until the peer
//! is admitted.
//!
//! Why a gate on the connection handler: libp2p runs every behaviour's protocols as soon as a
//! connection is established. Here the wrapped handler of a new connection refuses every
//! inbound stream (it offers only a denied upgrade) and is not polled, so it opens no stream
//! of its own, until the node tells it the peer proved its membership ([`crate::admission`]).
//! An outsider can complete the transport handshake and the admission exchange, nothing else:
//! it cannot subscribe to a topic, ask for a chunk, send a report or learn a peer address.
//!
//! The gate opens in two steps so neither side ever sends a stream the other still refuses:
//! `inbound` once we checked the peer's certificate (we accept its streams), `open` once the
//! peer also accepted ours (it answered our certificate) — only then is the inner handler
//! polled and may open streams.
//!
//! The gate also holds the connection bound ([`Gated::new`]): connections of peers not known
//! as coordinators are refused beyond `max_peers`; a coordinator's are never refused by it.

use libp2p::PeerId;
use libp2p::core::transport::PortUse;
use libp2p::core::upgrade::DeniedUpgrade;
use libp2p::core::{Endpoint, Multiaddr};
use libp2p::swarm::derive_prelude::Either;
use libp2p::swarm::handler::{
    ConnectionEvent, ConnectionHandler, ConnectionHandlerEvent, FullyNegotiatedInbound,
    ListenUpgradeError, SendWrapper, SubstreamProtocol,
};
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, NotifyHandler, THandler,
    THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use std::collections::{HashMap, HashSet, VecDeque};
use std::task::{Context, Poll, Waker};

/// What the gate behaviour tells one connection's handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Accept the peer's streams.
    Inbound,
    /// Accept its streams and run the inner handler.
    Open,
}

/// Most peers remembered as coordinators beyond the configured ones.
const MAX_LEARNED_COORDINATORS: usize = 16;

/// The connection bound refused a connection.
#[derive(Debug, thiserror::Error)]
#[error("{established} connections of non-coordinator peers, the bound")]
pub struct PeerBound {
    /// Connections of non-coordinator peers at the time.
    pub established: usize,
}

/// One peer's gate.
#[derive(Debug, Default)]
struct PeerGate {
    /// Its connections, each with whether it counts against the bound.
    connections: Vec<(ConnectionId, bool)>,
    inbound: bool,
    outbound: bool,
}

/// The gate around `B` (see the module documentation).
#[derive(Debug)]
pub struct Gated<B> {
    inner: B,
    /// Open every connection at once (a fabric without admission).
    open_all: bool,
    peers: HashMap<PeerId, PeerGate>,
    /// Coordinators configured (bootstrap peers of a device) and learned from certificates.
    coordinators: HashSet<PeerId>,
    learned: VecDeque<PeerId>,
    /// Connections of non-coordinator peers beyond which new ones are refused.
    max_peers: usize,
    others: usize,
    refused: u64,
    notify: VecDeque<(PeerId, ConnectionId, Gate)>,
}

impl<B> Gated<B> {
    /// A gate around `inner`. With `open_all` every connection opens at once (no admission);
    /// otherwise connections wait for [`Gated::accept_inbound`] and [`Gated::accepted_by`].
    /// `coordinators` are never refused by the bound; other peers' connections are refused
    /// beyond `max_peers`.
    pub fn new(
        inner: B,
        open_all: bool,
        coordinators: impl IntoIterator<Item = PeerId>,
        max_peers: usize,
    ) -> Self {
        Self {
            inner,
            open_all,
            peers: HashMap::new(),
            coordinators: coordinators.into_iter().collect(),
            learned: VecDeque::new(),
            max_peers,
            others: 0,
            refused: 0,
            notify: VecDeque::new(),
        }
    }

    /// The wrapped behaviour.
    pub fn inner(&self) -> &B {
        &self.inner
    }

    /// The wrapped behaviour, mutably.
    pub fn inner_mut(&mut self) -> &mut B {
        &mut self.inner
    }

    /// Connections the bound refused so far.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// Whether connections of non-coordinator peers have reached the bound (do not dial more).
    pub fn at_bound(&self) -> bool {
        self.others >= self.max_peers
    }

    /// Whether `peer` is known as a coordinator.
    pub fn is_coordinator(&self, peer: &PeerId) -> bool {
        self.coordinators.contains(peer)
    }

    /// Remembers `peer` as a coordinator (it showed a coordinator certificate); the oldest
    /// learned one is forgotten beyond a small bound.
    pub fn learn_coordinator(&mut self, peer: PeerId) {
        if self.coordinators.contains(&peer) {
            return;
        }
        if self.learned.len() >= MAX_LEARNED_COORDINATORS
            && let Some(old) = self.learned.pop_front()
        {
            self.coordinators.remove(&old);
        }
        self.learned.push_back(peer);
        self.coordinators.insert(peer);
    }

    /// Whether `peer` is admitted both ways (its streams accepted, ours accepted by it).
    pub fn is_open(&self, peer: &PeerId) -> bool {
        self.open_all
            || self
                .peers
                .get(peer)
                .is_some_and(|g| g.inbound && g.outbound)
    }

    /// We checked `peer`'s membership: accept its streams. Returns whether it is now open.
    pub fn accept_inbound(&mut self, peer: PeerId) -> bool {
        self.set(peer, |g| g.inbound = true)
    }

    /// `peer` accepted our membership. Returns whether it is now open.
    pub fn accepted_by(&mut self, peer: PeerId) -> bool {
        self.set(peer, |g| g.outbound = true)
    }

    fn set(&mut self, peer: PeerId, f: impl FnOnce(&mut PeerGate)) -> bool {
        let Some(gate) = self.peers.get_mut(&peer) else {
            return false;
        };
        let before = (gate.inbound, gate.inbound && gate.outbound);
        f(gate);
        let after = (gate.inbound, gate.inbound && gate.outbound);
        if after != before {
            let what = if after.1 { Gate::Open } else { Gate::Inbound };
            for (c, _) in &gate.connections {
                self.notify.push_back((peer, *c, what));
            }
        }
        after.1
    }

    fn initial(&self, peer: &PeerId) -> (bool, bool) {
        if self.open_all {
            return (true, true);
        }
        self.peers
            .get(peer)
            .map_or((false, false), |g| (g.inbound, g.inbound && g.outbound))
    }

    fn check_bound(&mut self, peer: &PeerId) -> Result<(), ConnectionDenied> {
        if self.coordinators.contains(peer) || self.others < self.max_peers {
            return Ok(());
        }
        self.refused += 1;
        Err(ConnectionDenied::new(PeerBound {
            established: self.others,
        }))
    }
}

impl<B: NetworkBehaviour> NetworkBehaviour for Gated<B> {
    type ConnectionHandler = GatedHandler<THandler<B>>;
    type ToSwarm = B::ToSwarm;

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
        self.check_bound(&peer)?;
        let inner = self.inner.handle_established_inbound_connection(
            connection_id,
            peer,
            local_addr,
            remote_addr,
        )?;
        let (inbound, open) = self.initial(&peer);
        Ok(GatedHandler::new(inner, inbound, open))
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
        self.check_bound(&peer)?;
        let inner = self.inner.handle_established_outbound_connection(
            connection_id,
            peer,
            addr,
            role_override,
            port_use,
        )?;
        let (inbound, open) = self.initial(&peer);
        Ok(GatedHandler::new(inner, inbound, open))
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match &event {
            FromSwarm::ConnectionEstablished(e) => {
                let counted = !self.coordinators.contains(&e.peer_id);
                if counted {
                    self.others += 1;
                }
                self.peers
                    .entry(e.peer_id)
                    .or_default()
                    .connections
                    .push((e.connection_id, counted));
            }
            FromSwarm::ConnectionClosed(e) => {
                if let Some(gate) = self.peers.get_mut(&e.peer_id) {
                    if let Some(i) = gate
                        .connections
                        .iter()
                        .position(|(c, _)| *c == e.connection_id)
                    {
                        let (_, counted) = gate.connections.swap_remove(i);
                        if counted {
                            self.others = self.others.saturating_sub(1);
                        }
                    }
                    if gate.connections.is_empty() {
                        self.peers.remove(&e.peer_id);
                    }
                }
            }
            _ => {}
        }
        self.inner.on_swarm_event(event);
    }

    fn on_connection_handler_event(
        &mut self,
        peer_id: PeerId,
        connection_id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        self.inner
            .on_connection_handler_event(peer_id, connection_id, event);
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        if let Some((peer_id, connection, gate)) = self.notify.pop_front() {
            return Poll::Ready(ToSwarm::NotifyHandler {
                peer_id,
                handler: NotifyHandler::One(connection),
                event: Either::Right(gate),
            });
        }
        self.inner
            .poll(cx)
            .map(|action| action.map_in(Either::Left))
    }
}

/// One connection's gated handler (see the module documentation).
#[derive(Debug)]
pub struct GatedHandler<H> {
    inner: H,
    inbound: bool,
    open: bool,
    waker: Option<Waker>,
}

impl<H> GatedHandler<H> {
    fn new(inner: H, inbound: bool, open: bool) -> Self {
        Self {
            inner,
            inbound: inbound || open,
            open,
            waker: None,
        }
    }
}

impl<H: ConnectionHandler> ConnectionHandler for GatedHandler<H> {
    type FromBehaviour = Either<H::FromBehaviour, Gate>;
    type ToBehaviour = H::ToBehaviour;
    type InboundProtocol = Either<SendWrapper<H::InboundProtocol>, SendWrapper<DeniedUpgrade>>;
    type OutboundProtocol = H::OutboundProtocol;
    type InboundOpenInfo = Either<H::InboundOpenInfo, ()>;
    type OutboundOpenInfo = H::OutboundOpenInfo;

    fn listen_protocol(&self) -> SubstreamProtocol<Self::InboundProtocol, Self::InboundOpenInfo> {
        if self.inbound {
            self.inner
                .listen_protocol()
                .map_upgrade(|u| Either::Left(SendWrapper(u)))
                .map_info(Either::Left)
        } else {
            SubstreamProtocol::new(Either::Right(SendWrapper(DeniedUpgrade)), Either::Right(()))
        }
    }

    fn on_behaviour_event(&mut self, event: Self::FromBehaviour) {
        match event {
            Either::Left(event) => self.inner.on_behaviour_event(event),
            Either::Right(gate) => {
                self.inbound = true;
                if gate == Gate::Open {
                    self.open = true;
                    if let Some(w) = self.waker.take() {
                        w.wake();
                    }
                }
            }
        }
    }

    fn connection_keep_alive(&self) -> bool {
        self.open && self.inner.connection_keep_alive()
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<
        ConnectionHandlerEvent<Self::OutboundProtocol, Self::OutboundOpenInfo, Self::ToBehaviour>,
    > {
        if !self.open {
            self.waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        self.inner.poll(cx)
    }

    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<Option<Self::ToBehaviour>> {
        self.inner.poll_close(cx)
    }

    fn on_connection_event(
        &mut self,
        event: ConnectionEvent<
            Self::InboundProtocol,
            Self::OutboundProtocol,
            Self::InboundOpenInfo,
            Self::OutboundOpenInfo,
        >,
    ) {
        match event {
            ConnectionEvent::FullyNegotiatedInbound(FullyNegotiatedInbound { protocol, info }) => {
                match (protocol, info) {
                    (futures::future::Either::Left(protocol), Either::Left(info)) => {
                        self.inner
                            .on_connection_event(ConnectionEvent::FullyNegotiatedInbound(
                                FullyNegotiatedInbound { protocol, info },
                            ));
                    }
                    (futures::future::Either::Right(never), _) => match never {},
                    // A denied stream never negotiates; an inner one never carries our info.
                    (futures::future::Either::Left(_), Either::Right(())) => {}
                }
            }
            ConnectionEvent::ListenUpgradeError(ListenUpgradeError { info, error }) => {
                if let (Either::Left(info), Either::Left(error)) = (info, error) {
                    self.inner
                        .on_connection_event(ConnectionEvent::ListenUpgradeError(
                            ListenUpgradeError { info, error },
                        ));
                }
            }
            ConnectionEvent::FullyNegotiatedOutbound(e) => self
                .inner
                .on_connection_event(ConnectionEvent::FullyNegotiatedOutbound(e)),
            ConnectionEvent::DialUpgradeError(e) => self
                .inner
                .on_connection_event(ConnectionEvent::DialUpgradeError(e)),
            ConnectionEvent::AddressChange(e) => self
                .inner
                .on_connection_event(ConnectionEvent::AddressChange(e)),
            ConnectionEvent::LocalProtocolsChange(e) => self
                .inner
                .on_connection_event(ConnectionEvent::LocalProtocolsChange(e)),
            ConnectionEvent::RemoteProtocolsChange(e) => self
                .inner
                .on_connection_event(ConnectionEvent::RemoteProtocolsChange(e)),
            _ => {}
        }
    }
}
