//! The swarm actor: one task owns the libp2p `Swarm`, the chunk store and every download;
//! [`Fabric`] is the cloneable handle the rest of the process talks to it through.
//!
//! The task waits on one biased select: shutdown first, then commands from handles, then
//! answers of direct-request handlers and finished store jobs, then swarm events, then a 50 ms
//! tick that drives download deadlines and chunk-map refreshes. `Node` only dispatches: each
//! part of the protocol state is owned by a part with its own handlers and file, and they act
//! on the network through `net::Net`:
//! - `uploads`: what is served, the upload slots and queue, super-seeding;
//! - `fetches`: the downloads and our chunk-protocol requests (`peer_map`: when to ask a peer
//!   for its chunk map again);
//! - `reputation`: strikes and bans;
//! - `direct_requests`: the direct protocol's requests in both directions;
//! - `fault` and `flood`, only with the `fault-injection` feature: ways to misbehave on purpose.
//!
//! Gossip validation and publishing, discovery and the Kademlia refresh are a few lines each
//! and stay here. Everything the task keeps has a bound:
//! - connections: the connection-limits behaviour ([`FabricConfig::max_connections`]);
//! - downloads: [`FabricConfig::max_downloads`] (a further fetch is refused);
//! - peers per download and requests per peer: [`crate::download::DownloadConfig`];
//! - outstanding outbound requests: [`MAX_PENDING`] (requests beyond it are not sent);
//! - inbound chunk responses being read from disk or written: [`FabricConfig::upload_slots`],
//!   with up to [`FabricConfig::upload_queue`] more requests waiting for a slot (`Busy` beyond
//!   that);
//! - arrived chunks being hashed and stored: [`MAX_VERIFYING`] (beyond it, done in place:
//!   backpressure);
//! - served artifacts: [`MAX_SERVED`] (oldest fetched artifact is no longer served);
//! - per-peer strike counters: one entry per connected peer, dropped on disconnect;
//! - banned peers: [`FabricConfig::max_banned`] (oldest ban lifted first);
//! - events to the observer: [`FabricConfig::event_capacity`] (dropped and counted beyond it);
//! - direct requests: the bounds of [`crate::direct`] (outstanding ours, handlers in flight).
//!
//! Disk I/O and hashing do not run on this task: serving a chunk reads it on tokio's blocking
//! pool, and an arrived chunk is hashed and stored there while the link that brought it is
//! already asked for the next one. The direct protocol's handler runs there too. Each answer
//! comes back through a channel with room for every job in flight, so no job ever waits.

mod admit;
mod direct_requests;
mod events;
#[cfg(feature = "fault-injection")]
mod fault;
mod fetches;
#[cfg(feature = "fault-injection")]
mod flood;
mod handle;
mod jobs;
mod net;
mod peer_map;
mod reputation;
mod uploads;

pub use admit::AdmissionStats;
pub use events::{FabricEvent, FabricStats};
#[cfg(feature = "fault-injection")]
pub use fault::{Flood, IWANT_IDS_PER_RPC, MAX_IWANT_RPCS};
pub use fetches::{MAX_PENDING, MAX_VERIFYING};
pub use handle::Fabric;
pub use net::COORDINATOR_CONNECTIONS;
pub use uploads::MAX_SERVED;

use crate::admission::{Hello, Welcome};
use crate::direct::{self, RequestHandler};
use crate::gossip::{MAX_GOSSIP_BYTES, Topic, Validation, Validator};
use crate::guard::GuardEvent;
use crate::store::FabricStore;
use crate::wire::{Request, Response};
use crate::{BuildError, FabricConfig, FabricError, PublishError};
use admit::{Admit, Issued, Outcome};
use direct_requests::{Answered, DirectRequests};
use fetches::{Cx, Fetches};
use futures::StreamExt;
use handle::Command;
use jobs::Done;
use libp2p::gossipsub::{self, MessageAcceptance};
use libp2p::identity::Keypair;
use libp2p::request_response;
use libp2p::swarm::{SwarmEvent, dial_opts::DialOpts};
use libp2p::{Multiaddr, PeerId, identify, kad, mdns};
use net::{BehaviourEvent, FloeEvent, Net};
use reputation::Reputation;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uploads::Uploads;

/// How often the bootstrap peers are dialled again while none of them is connected.
const REDIAL_EVERY: Duration = Duration::from_secs(5);

/// Capacity of the command channel (senders wait when it is full: backpressure).
const COMMAND_CAPACITY: usize = 64;

/// Starts the fabric task without a direct-request handler (incoming direct requests are
/// declined). Returns the handle and the event stream.
pub fn spawn(
    key: Keypair,
    config: FabricConfig,
    store: Box<dyn FabricStore>,
    validator: Validator,
    cancel: CancellationToken,
) -> Result<(Fabric, mpsc::Receiver<FabricEvent>), FabricError> {
    spawn_inner(key, config, store, validator, None, cancel)
}

/// Starts the fabric task with `handler` answering incoming `/floe/direct/1` requests (see
/// [`direct::RequestHandler`] for how and where it runs). Returns the handle and the event
/// stream.
pub fn spawn_with_handler(
    key: Keypair,
    config: FabricConfig,
    store: Box<dyn FabricStore>,
    validator: Validator,
    handler: RequestHandler,
    cancel: CancellationToken,
) -> Result<(Fabric, mpsc::Receiver<FabricEvent>), FabricError> {
    spawn_inner(key, config, store, validator, Some(handler), cancel)
}

fn spawn_inner(
    key: Keypair,
    config: FabricConfig,
    store: Box<dyn FabricStore>,
    validator: Validator,
    handler: Option<RequestHandler>,
    cancel: CancellationToken,
) -> Result<(Fabric, mpsc::Receiver<FabricEvent>), FabricError> {
    let peer_id = key.public().to_peer_id();
    let store: Arc<dyn FabricStore> = Arc::from(store);
    let mut swarm = net::build_swarm(key, &config)?;
    for addr in &config.listen {
        swarm
            .listen_on(addr.clone())
            .map_err(|source| FabricError::Listen {
                addr: addr.clone(),
                source,
            })?;
    }
    for topic in &config.topics {
        swarm
            .behaviour_mut()
            .gated
            .inner_mut()
            .gossip
            .subscribe(&topic.ident())
            .map_err(|source| BuildError::Subscribe {
                topic: topic.name(),
                source,
            })?;
    }
    for addr in &config.bootstrap {
        if let Some(libp2p::multiaddr::Protocol::P2p(peer)) = addr.iter().last() {
            swarm
                .behaviour_mut()
                .gated
                .inner_mut()
                .kad
                .add_address(&peer, addr.clone());
        }
        swarm
            .dial(addr.clone())
            .map_err(|source| FabricError::Dial {
                addr: addr.clone(),
                source,
            })?;
    }
    let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_CAPACITY);
    let (ev_tx, ev_rx) = mpsc::channel(config.event_capacity.max(1));
    // Room for every handler in flight: a finished handler never waits to report.
    let (answered_tx, answered_rx) = mpsc::channel(direct::MAX_HANDLERS);
    // Room for every store job in flight (reads bounded by the upload slots, verifications by
    // MAX_VERIFYING): a finished job never waits to report.
    let (done_tx, done_rx) = mpsc::channel(MAX_VERIFYING + config.upload_slots.max(1));
    let seed = u64::from_le_bytes(peer_id.to_bytes()[2..10].try_into().unwrap_or([7; 8]));
    // Room for every issuer call in flight and our own renewal: an answer never waits.
    let (issued_tx, issued_rx) = mpsc::channel(crate::admission::MAX_ISSUING + 1);
    let admit = config
        .admission
        .clone()
        .map(|a| Admit::new(a, peer_id, issued_tx));
    let node = Node {
        admit,
        bootstrap: config.bootstrap.clone(),
        last_redial: Instant::now(),
        net: Net::new(swarm, ev_tx),
        uploads: Uploads::new(&config, Arc::clone(&store), done_tx.clone()),
        fetches: Fetches::new(&config, Arc::clone(&store), done_tx, seed),
        reputation: Reputation::new(&config),
        direct: DirectRequests::new(handler, answered_tx),
        validator,
        last_bootstrap: None,
        #[cfg(feature = "fault-injection")]
        fault_rpcs_delivered: 0,
    };
    tokio::spawn(node.run(cmd_rx, answered_rx, done_rx, issued_rx, cancel));
    Ok((Fabric::new(cmd_tx, peer_id, store), ev_rx))
}

/// The task's state: the parts, and what is left for dispatching.
struct Node {
    net: Net,
    /// Admission (None: every peer is admitted at once).
    admit: Option<Admit>,
    /// Where to find our coordinators again when no connection to one is left.
    bootstrap: Vec<Multiaddr>,
    last_redial: Instant,
    uploads: Uploads,
    fetches: Fetches,
    reputation: Reputation,
    direct: DirectRequests,
    validator: Validator,
    last_bootstrap: Option<Instant>,
    /// Fault injection only: raw RPC streams delivered.
    #[cfg(feature = "fault-injection")]
    fault_rpcs_delivered: u64,
}

impl Node {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut answered: mpsc::Receiver<Answered>,
        mut done: mpsc::Receiver<Done>,
        mut issued: mpsc::Receiver<Issued>,
        cancel: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                cmd = commands.recv() => match cmd {
                    Some(cmd) => self.on_command(cmd),
                    None => break,
                },
                Some(answer) = answered.recv() => self.direct.on_answered(&mut self.net, answer),
                Some(job) = done.recv() => self.on_done(job),
                Some(answer) = issued.recv() => self.on_issued(answer),
                event = self.net.swarm.select_next_some() => self.on_swarm(event),
                _ = tick.tick() => self.on_tick(Instant::now()),
            }
        }
        tracing::debug!("fabric task stopped");
    }

    /// The downloads, and the rest of the node they act on.
    fn fetches(&mut self) -> (&mut Fetches, Cx<'_>) {
        let cx = Cx {
            net: &mut self.net,
            reputation: &mut self.reputation,
            uploads: &mut self.uploads,
        };
        (&mut self.fetches, cx)
    }

    /// Peers banned outside the downloads are forgotten by them too.
    fn forget(&mut self, banned: impl IntoIterator<Item = PeerId>) {
        for peer in banned {
            self.fetches.forget_banned(&peer);
        }
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Serve { index, reply } => {
                let id = index.id();
                let chunks = index.chunks.len();
                self.uploads.serve(index, vec![true; chunks], true);
                self.net.emit(FabricEvent::Seeded { id, chunks });
                let _ = reply.send(Ok(id));
            }
            Command::Fetch { id, reply } => {
                let (fetches, mut cx) = self.fetches();
                let _ = reply.send(fetches.start(&mut cx, id));
            }
            Command::Publish { topic, data, reply } => {
                let _ = reply.send(self.publish(topic, data));
            }
            Command::Dial { addr, reply } => {
                let result = self
                    .net
                    .swarm
                    .dial(addr.clone())
                    .map_err(|source| FabricError::Dial { addr, source });
                let _ = reply.send(result);
            }
            Command::Stats { reply } => {
                let _ = reply.send(self.stats());
            }
            #[cfg(feature = "fault-injection")]
            Command::Flood { kind, count } => {
                flood::flood(&mut self.net, &mut self.fetches, kind, count);
            }
            Command::Request { peer, data, reply } => {
                let banned = self.reputation.is_banned(&peer);
                self.direct.send(&mut self.net, banned, peer, data, reply);
            }
            Command::Peers { reply } => {
                let mut peers = self.net.peers();
                peers.sort();
                let _ = reply.send(peers);
            }
            Command::ListenAddrs { reply } => {
                let me = *self.net.swarm.local_peer_id();
                let addrs = self
                    .net
                    .swarm
                    .listeners()
                    .map(|a| a.clone().with(libp2p::multiaddr::Protocol::P2p(me)))
                    .collect();
                let _ = reply.send(addrs);
            }
        }
    }

    fn publish(&mut self, topic: Topic, data: Vec<u8>) -> Result<(), FabricError> {
        if data.len() > MAX_GOSSIP_BYTES {
            return Err(FabricError::Publish {
                topic: topic.name().into(),
                source: PublishError::TooLarge {
                    len: data.len(),
                    limit: MAX_GOSSIP_BYTES,
                },
            });
        }
        self.net
            .swarm
            .behaviour_mut()
            .gated
            .inner_mut()
            .gossip
            .publish(topic.ident(), data)
            .map(|_| ())
            .map_err(|e| match e {
                gossipsub::PublishError::NoPeersSubscribedToTopic => FabricError::NoPeers {
                    topic: topic.name().into(),
                },
                other => FabricError::Publish {
                    topic: topic.name().into(),
                    source: PublishError::Gossip(other),
                },
            })
    }

    fn stats(&self) -> FabricStats {
        let gossip = &self.net.swarm.behaviour().gated.inner().gossip;
        let scores = self
            .net
            .connected
            .iter()
            .map(|p| (*p, gossip.peer_score(p).unwrap_or(0.0)))
            .collect();
        FabricStats {
            connected_peers: self.net.connected.len(),
            admission: self.admit.as_ref().map(Admit::stats).unwrap_or_default(),
            bound_refused: self.net.swarm.behaviour().gated.refused(),
            banned_peers: self.reputation.banned(),
            downloads: self.fetches.len(),
            pending_requests: self.fetches.pending(),
            uploads_in_flight: self.uploads.in_flight(),
            busy_answers: self.uploads.busy_answers(),
            flood_rpcs_dropped: gossip.dropped(),
            chunks_served: self.uploads.chunks_served(),
            dropped_events: self.net.dropped_events(),
            scores,
            #[cfg(feature = "fault-injection")]
            fault_rpcs_delivered: self.fault_rpcs_delivered,
        }
    }

    fn on_done(&mut self, job: Done) {
        match job {
            Done::Read {
                id,
                request_id,
                channel,
                result,
            } => {
                let banned = self.uploads.on_read(
                    &mut self.net,
                    &mut self.reputation,
                    id,
                    request_id,
                    channel,
                    result,
                );
                self.forget(banned);
            }
            Done::Stored {
                id,
                chunk,
                peer,
                result,
            } => {
                let (fetches, mut cx) = self.fetches();
                fetches.on_stored(&mut cx, id, chunk, peer, result);
            }
        }
    }

    fn on_tick(&mut self, now: Instant) {
        self.fetches.on_tick(&mut self.net, now);
        if let Some(admit) = self.admit.as_mut() {
            admit.on_tick(&mut self.net, now);
        }
        self.redial(now);
        // Re-run the Kademlia bootstrap now and then so routed peers keep finding each other.
        let due = self
            .last_bootstrap
            .is_none_or(|t| now.duration_since(t) > Duration::from_secs(30));
        if due && !self.net.connected.is_empty() {
            self.last_bootstrap = Some(now);
            let _ = self
                .net
                .swarm
                .behaviour_mut()
                .gated
                .inner_mut()
                .kad
                .bootstrap();
        }
    }

    fn on_swarm(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                let peer = *self.net.swarm.local_peer_id();
                let full = address.with(libp2p::multiaddr::Protocol::P2p(peer));
                self.net.emit(FabricEvent::Listening(full));
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                num_established,
                ..
            } => self.on_connected(peer_id, num_established.get()),
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established,
                ..
            } => self.on_disconnected(peer_id, num_established),
            SwarmEvent::Behaviour(event) => self.on_behaviour(event),
            _ => {}
        }
    }

    fn on_connected(&mut self, peer_id: PeerId, num_established: u32) {
        if num_established != 1 {
            return;
        }
        match self.admit.as_mut() {
            Some(admit) => admit.on_connected(&mut self.net, peer_id, Instant::now()),
            None => self.on_admitted(peer_id),
        }
    }

    /// A peer is admitted both ways: from now on it is one of ours.
    fn on_admitted(&mut self, peer_id: PeerId) {
        if self.net.connected.insert(peer_id) {
            self.net.emit(FabricEvent::PeerConnected(peer_id));
            self.fetches.on_connected(&mut self.net, peer_id);
        }
    }

    fn on_disconnected(&mut self, peer_id: PeerId, num_established: u32) {
        if num_established != 0 {
            return;
        }
        if let Some(admit) = self.admit.as_mut() {
            admit.on_disconnected(&peer_id);
        }
        if self.net.connected.remove(&peer_id) {
            self.reputation.forget(&peer_id);
            self.fetches.on_disconnected(&peer_id);
            self.net.emit(FabricEvent::PeerDisconnected(peer_id));
        }
    }

    fn on_admission(&mut self, outcome: Outcome) {
        if let Outcome::Open(peer) = outcome {
            self.on_admitted(peer);
        }
    }

    fn on_issued(&mut self, answer: Issued) {
        if let Some(admit) = self.admit.as_mut() {
            let outcome = admit.on_issued(&mut self.net, answer);
            self.on_admission(outcome);
        }
    }

    /// The admission protocol: Hellos in, Welcomes back.
    fn on_admit(&mut self, event: request_response::Event<Hello, Welcome>) {
        use request_response::{Event, Message};
        let outcome = match (self.admit.as_mut(), event) {
            (
                admit,
                Event::Message {
                    peer,
                    message:
                        Message::Request {
                            request, channel, ..
                        },
                    ..
                },
            ) => match admit {
                Some(admit) => admit.on_hello(&mut self.net, peer, request, channel),
                // Without admission every peer is welcome.
                None => {
                    let _ = self
                        .net
                        .swarm
                        .behaviour_mut()
                        .admit
                        .send_response(channel, Welcome::admitted(None));
                    Outcome::None
                }
            },
            (
                Some(admit),
                Event::Message {
                    peer,
                    message:
                        Message::Response {
                            request_id,
                            response,
                        },
                    ..
                },
            ) => admit.on_welcome(&mut self.net, peer, request_id, response),
            (
                Some(admit),
                Event::OutboundFailure {
                    peer,
                    request_id,
                    error,
                    ..
                },
            ) => {
                admit.on_failure(peer, request_id, &error);
                Outcome::None
            }
            _ => Outcome::None,
        };
        self.on_admission(outcome);
    }

    /// Dials the bootstrap peers again when none of them is connected (a coordinator that
    /// restarted, or one that refused us before we had a report to show), every 5 s at most.
    fn redial(&mut self, now: Instant) {
        if self.bootstrap.is_empty() || now.duration_since(self.last_redial) < REDIAL_EVERY {
            return;
        }
        self.last_redial = now;
        let me = *self.net.swarm.local_peer_id();
        for addr in &self.bootstrap {
            if let Some(libp2p::multiaddr::Protocol::P2p(peer)) = addr.iter().last()
                && peer != me
                && !self.net.swarm.is_connected(&peer)
            {
                let _ = self.net.swarm.dial(addr.clone());
            }
        }
    }

    fn dial_discovered(&mut self, peer: PeerId, addrs: Vec<Multiaddr>) {
        if peer == *self.net.swarm.local_peer_id()
            || self.net.connected.contains(&peer)
            || self.reputation.is_banned(&peer)
            || self.net.swarm.behaviour().gated.at_bound()
        {
            return;
        }
        let _ = self
            .net
            .swarm
            .dial(DialOpts::peer_id(peer).addresses(addrs).build());
    }

    fn on_behaviour(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Gated(FloeEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                for addr in info.listen_addrs.into_iter().take(8) {
                    self.net
                        .swarm
                        .behaviour_mut()
                        .gated
                        .inner_mut()
                        .kad
                        .add_address(&peer_id, addr);
                }
            }
            BehaviourEvent::Gated(FloeEvent::Kad(kad::Event::RoutingUpdated {
                peer,
                addresses,
                ..
            })) => {
                self.dial_discovered(peer, addresses.into_vec());
            }
            BehaviourEvent::Mdns(mdns::Event::Discovered(list)) => {
                for (peer, addr) in list.into_iter().take(64) {
                    self.net
                        .swarm
                        .behaviour_mut()
                        .gated
                        .inner_mut()
                        .kad
                        .add_address(&peer, addr.clone());
                    self.dial_discovered(peer, vec![addr]);
                }
            }
            BehaviourEvent::Gated(FloeEvent::Gossip(GuardEvent::Gossip(
                gossipsub::Event::Message {
                    propagation_source,
                    message_id,
                    message,
                },
            ))) => {
                self.on_gossip(propagation_source, message_id, message);
            }
            BehaviourEvent::Gated(FloeEvent::Gossip(GuardEvent::Flood { peer, what })) => {
                let banned = self.reputation.ban(&mut self.net, peer, what.reason());
                self.forget(banned.then_some(peer));
            }
            BehaviourEvent::Gated(FloeEvent::Gossip(GuardEvent::Invalid { peer, count })) => {
                self.net.emit(FabricEvent::GossipRejected { from: peer });
                self.strike_invalid_gossip(peer, count);
            }
            BehaviourEvent::Gated(FloeEvent::Chunks(event)) => self.on_chunks(event),
            BehaviourEvent::Gated(FloeEvent::Direct(event)) => {
                self.direct.on_event(&mut self.net, event)
            }
            BehaviourEvent::Admit(event) => self.on_admit(event),
            #[cfg(feature = "fault-injection")]
            BehaviourEvent::Gated(FloeEvent::RawRpc(request_response::Event::Message {
                ..
            })) => {
                self.fault_rpcs_delivered += 1;
            }
            _ => {}
        }
    }

    fn strike_invalid_gossip(&mut self, peer: PeerId, count: u32) {
        let banned = self
            .reputation
            .strike_invalid_gossip(&mut self.net, peer, count);
        self.forget(banned.then_some(peer));
    }

    fn on_gossip(&mut self, from: PeerId, id: gossipsub::MessageId, message: gossipsub::Message) {
        let verdict = match Topic::from_hash(&message.topic) {
            Some(_) if message.data.len() > MAX_GOSSIP_BYTES => Validation::Reject,
            Some(topic) => (self.validator)(topic, &message.data),
            None => Validation::Reject,
        };
        let acceptance = match verdict {
            Validation::Accept => MessageAcceptance::Accept,
            Validation::Reject => MessageAcceptance::Reject,
            Validation::Ignore => MessageAcceptance::Ignore,
        };
        self.net
            .swarm
            .behaviour_mut()
            .gated
            .inner_mut()
            .gossip
            .report_message_validation_result(&id, &from, acceptance);
        match verdict {
            Validation::Accept => {
                if let Some(topic) = Topic::from_hash(&message.topic) {
                    self.net.emit(FabricEvent::Gossip {
                        topic,
                        from,
                        source: message.source,
                        data: message.data,
                    });
                }
            }
            Validation::Reject => {
                self.net.emit(FabricEvent::GossipRejected { from });
                self.strike_invalid_gossip(from, 1);
            }
            Validation::Ignore => {}
        }
    }

    /// Dispatches the chunk protocol: requests and finished responses to the uploads, answers
    /// and failures of our requests to the downloads.
    fn on_chunks(&mut self, event: request_response::Event<Request, Response>) {
        use request_response::{Event, Message};
        match event {
            Event::Message {
                peer,
                message:
                    Message::Request {
                        request_id,
                        request,
                        channel,
                    },
                ..
            } => {
                let banned = self.uploads.on_request(
                    &mut self.net,
                    &mut self.reputation,
                    peer,
                    request_id,
                    request,
                    channel,
                );
                self.forget(banned);
            }
            Event::Message {
                peer,
                message:
                    Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                let (fetches, mut cx) = self.fetches();
                fetches.on_response(&mut cx, peer, request_id, response);
            }
            Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                self.fetches
                    .on_failure(&mut self.net, peer, request_id, &error);
            }
            Event::InboundFailure { request_id, .. } | Event::ResponseSent { request_id, .. } => {
                let banned =
                    self.uploads
                        .on_finished(&mut self.net, &mut self.reputation, request_id);
                self.forget(banned);
            }
        }
    }
}
