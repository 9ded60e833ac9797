//! The swarm as every part of the actor uses it: the composed libp2p behaviour, how it is
//! built, and [`Net`], the swarm together with the observer's event channel and the set of
//! connected peers.
//!
//! Why one owner for these: uploads, downloads, reputation and the direct protocol all send
//! on the same swarm and report to the same observer. Handing each of them `&mut Net` keeps
//! their own state separate while they share the one network.

use super::events::FabricEvent;
use crate::admission::{self, AdmitCodec};
use crate::gate::Gated;
use crate::gossip::{self, Topic};
use crate::guard::{self, Gossip, Guarded, TopicFilter};
use crate::wire::{self, ChunkCodec};
use crate::{BuildError, FabricConfig, direct, direct::DirectCodec};
use libp2p::gossipsub;
use libp2p::identity::Keypair;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{
    PeerId, Swarm, allow_block_list, connection_limits, identify, kad, mdns, noise, ping, tcp,
    yamux,
};
use std::collections::HashSet;
use std::time::Duration;
use tokio::sync::mpsc;

/// How long one chunk request may take before libp2p fails it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The raw gossipsub writer of the IWANT flood (fault injection; off on honest nodes).
#[cfg(feature = "fault-injection")]
type RawRpc = Toggle<request_response::Behaviour<super::fault::RawRpcCodec>>;
/// Without fault injection there is no raw writer: a behaviour that does nothing holds its
/// place, so the composed behaviour has one shape in every build.
#[cfg(not(feature = "fault-injection"))]
type RawRpc = libp2p::swarm::dummy::Behaviour;

/// The composed behaviour. Only the connection limits, the block list, admission, ping and
/// mDNS run on a connection before its peer is admitted; everything that carries Floe's
/// protocols sits behind the gate ([`crate::gate`]).
#[derive(NetworkBehaviour)]
pub(super) struct Behaviour {
    limits: connection_limits::Behaviour,
    pub(super) blocked: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    pub(super) admit: request_response::Behaviour<AdmitCodec>,
    ping: ping::Behaviour,
    mdns: Toggle<mdns::tokio::Behaviour>,
    pub(super) gated: Gated<Floe>,
}

/// The behaviours that carry Floe's protocols, run only with admitted peers.
#[derive(NetworkBehaviour)]
pub(super) struct Floe {
    identify: identify::Behaviour,
    pub(super) kad: kad::Behaviour<kad::store::MemoryStore>,
    pub(super) gossip: Guarded,
    pub(super) chunks: request_response::Behaviour<ChunkCodec>,
    pub(super) direct: request_response::Behaviour<DirectCodec>,
    /// Fault injection only (off on honest nodes): raw gossipsub RPCs.
    pub(super) raw_rpc: RawRpc,
}

/// Most connections of peers known as coordinators the connection limits leave room for
/// beyond [`FabricConfig::max_connections`] (the gate never refuses a coordinator).
pub const COORDINATOR_CONNECTIONS: u32 = 32;

/// Whether this node may misbehave (fault injection, `fault_corrupt_chunks`): always false
/// without the feature.
fn faulty(config: &FabricConfig) -> bool {
    #[cfg(feature = "fault-injection")]
    return config.fault_corrupt_chunks;
    #[cfg(not(feature = "fault-injection"))]
    {
        let _ = config;
        false
    }
}

/// Gossipsub's configuration; a misbehaving node is allowed to send what honest nodes refuse.
fn gossip_config(fault: bool) -> Result<gossipsub::Config, BuildError> {
    let config = gossip::config().map_err(BuildError::Gossip)?;
    if !fault {
        return Ok(config);
    }
    let mut builder = gossipsub::ConfigBuilder::from(config);
    for topic in Topic::ALL {
        builder.max_transmit_size_for_topic(256 * 1024, topic.ident().hash());
    }
    builder
        .max_transmit_size(256 * 1024)
        .build()
        .map_err(BuildError::Gossip)
}

/// The TCP transport's stream: as it comes, or held back by the test-only read delay.
#[cfg(feature = "fault-injection")]
fn tcp_stream<S>(
    stream: S,
    delay: Duration,
) -> futures::future::Either<S, crate::delay::Delayed<S>> {
    if delay.is_zero() {
        futures::future::Either::Left(stream)
    } else {
        futures::future::Either::Right(crate::delay::Delayed::new(stream, delay))
    }
}

/// Builds the swarm with every behaviour the fabric runs.
pub(super) fn build_swarm(
    key: Keypair,
    config: &FabricConfig,
) -> Result<Swarm<Behaviour>, BuildError> {
    let coordinators = config.coordinator_peers();
    let limits = connection_limits::ConnectionLimits::default()
        .with_max_established(Some(
            config
                .max_connections
                .saturating_add(COORDINATOR_CONNECTIONS),
        ))
        .with_max_established_per_peer(Some(config.max_connections_per_peer))
        .with_max_pending_incoming(Some(config.max_connections / 2 + 1));
    let fault = faulty(config);
    let mdns_on = config.mdns;
    let gossip_config = gossip_config(fault)?;
    let guard_limits = guard::Limits::for_config(&gossip_config);
    #[cfg(feature = "fault-injection")]
    let read_delay = config.fault_read_delay.unwrap_or_default();
    let swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_quic()
        .with_other_transport(|key| {
            // TCP, noise, yamux, as `with_tcp` would build it; with fault injection the stream
            // passes through `Delayed` when the test-only read delay is set.
            use libp2p::Transport;
            let transport = tcp::tokio::Transport::new(tcp::Config::default().nodelay(true));
            #[cfg(feature = "fault-injection")]
            let transport = transport.map(move |stream, _| tcp_stream(stream, read_delay));
            let transport = transport
                .upgrade(libp2p::core::upgrade::Version::V1Lazy)
                .authenticate(noise::Config::new(key)?)
                .multiplex(yamux::Config::default());
            Ok(transport)
        })
        .map_err(BuildError::Transport)?
        .with_behaviour(|key| {
            let peer_id = key.public().to_peer_id();
            let filter = gossipsub::MaxCountSubscriptionFilter {
                filter: TopicFilter::new(fault),
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
            let floe = Floe {
                identify: identify::Behaviour::new(identify::Config::new(
                    "/floe/id/1".into(),
                    key.public(),
                )),
                kad,
                gossip: Guarded::new(gossip, guard_limits),
                chunks: request_response::Behaviour::with_codec(
                    ChunkCodec,
                    [(wire::PROTOCOL, ProtocolSupport::Full)],
                    request_response::Config::default()
                        .with_request_timeout(REQUEST_TIMEOUT)
                        .with_max_concurrent_streams(256),
                ),
                raw_rpc: raw_rpc(fault),
                direct: request_response::Behaviour::with_codec(
                    DirectCodec,
                    [(direct::PROTOCOL, ProtocolSupport::Full)],
                    request_response::Config::default()
                        .with_request_timeout(direct::REQUEST_TIMEOUT)
                        .with_max_concurrent_streams(direct::MAX_HANDLERS_PER_PEER * 4),
                ),
            };
            Ok(Behaviour {
                limits: connection_limits::Behaviour::new(limits),
                blocked: allow_block_list::Behaviour::default(),
                admit: request_response::Behaviour::with_codec(
                    AdmitCodec,
                    [(admission::PROTOCOL, ProtocolSupport::Full)],
                    request_response::Config::default()
                        .with_request_timeout(admission::REQUEST_TIMEOUT)
                        .with_max_concurrent_streams(8),
                ),
                ping: ping::Behaviour::default(),
                mdns: Toggle::from(mdns),
                gated: Gated::new(
                    floe,
                    config.admission.is_none(),
                    coordinators.iter().copied(),
                    config.max_connections as usize,
                ),
            })
        })
        .map_err(BuildError::Behaviour)?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(300)))
        .build();
    Ok(swarm)
}

/// The raw gossipsub writer, on a misbehaving node only.
#[cfg(feature = "fault-injection")]
fn raw_rpc(fault: bool) -> RawRpc {
    Toggle::from(fault.then(|| {
        request_response::Behaviour::with_codec(
            super::fault::RawRpcCodec,
            [(
                libp2p::StreamProtocol::new("/meshsub/1.1.0"),
                ProtocolSupport::Outbound,
            )],
            request_response::Config::default()
                .with_request_timeout(Duration::from_secs(2))
                .with_max_concurrent_streams(64),
        )
    }))
}

/// No raw writer without fault injection.
#[cfg(not(feature = "fault-injection"))]
fn raw_rpc(_fault: bool) -> RawRpc {
    libp2p::swarm::dummy::Behaviour
}

/// The swarm, the observer's channel and who is connected: what every part of the actor acts
/// through.
pub(super) struct Net {
    pub(super) swarm: Swarm<Behaviour>,
    events: mpsc::Sender<FabricEvent>,
    dropped_events: u64,
    /// Peers with at least one established connection.
    pub(super) connected: HashSet<PeerId>,
}

impl Net {
    pub(super) fn new(swarm: Swarm<Behaviour>, events: mpsc::Sender<FabricEvent>) -> Self {
        Self {
            swarm,
            events,
            dropped_events: 0,
            connected: HashSet::new(),
        }
    }

    /// Reports to the observer; drops and counts the event when the observer is behind.
    pub(super) fn emit(&mut self, event: FabricEvent) {
        if self.events.try_send(event).is_err() {
            self.dropped_events += 1;
        }
    }

    /// Events dropped so far because the observer was slow.
    pub(super) fn dropped_events(&self) -> u64 {
        self.dropped_events
    }

    /// The connected peers, copied (handlers that send to each of them need `&mut self`).
    pub(super) fn peers(&self) -> Vec<PeerId> {
        self.connected.iter().copied().collect()
    }
}
