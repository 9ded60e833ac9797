//! Admission on the swarm task: the Hellos we send and answer, the peers still waiting to be
//! admitted and their deadlines, our own certificate and its renewal, and the counters.
//!
//! See [`crate::admission`] for the protocol and [`crate::gate`] for what stays shut until a
//! peer is admitted. The issuer (a coordinator's) runs on tokio's blocking pool; its answer
//! comes back through a channel with room for every call in flight ([`MAX_ISSUING`]).

use super::net::Net;
use crate::admission::{Admission, Hello, IssueRequest, MAX_ISSUING, Welcome};
use floe_wire::proto::membership::{self, Membership, Role};
use floe_wire::proto::{ByteBuf, Fixed};
use libp2p::PeerId;
use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How often a device asks a coordinator to renew its certificate, at most.
const RENEW_EVERY: Duration = Duration::from_secs(30);
/// How long a refused peer keeps its connection (so our Welcome reaches it).
const CLOSE_AFTER_REFUSAL: Duration = Duration::from_millis(500);

/// An issuer call's answer on its way back to the swarm task.
pub(super) enum Issued {
    /// For a peer's Hello.
    Peer {
        peer: PeerId,
        channel: ResponseChannel<Welcome>,
        presented: Option<Role>,
        result: Result<Option<Vec<u8>>, String>,
    },
    /// Our own certificate.
    Own(Result<Option<Vec<u8>>, String>),
}

/// What a change of admission means for the rest of the node.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Nothing to do.
    None,
    /// The peer is admitted both ways: the node treats it as connected from now on.
    Open(PeerId),
}

/// Admission counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AdmissionStats {
    /// Peers admitted (both ways).
    pub admitted: u64,
    /// Hellos we refused (no valid certificate, the issuer said no, busy).
    pub refused: u64,
    /// Connections closed because the peer was not admitted in time.
    pub timeouts: u64,
    /// Hellos of ours a peer refused.
    pub refused_by_peers: u64,
    /// Certificates of ours received (issued or renewed).
    pub certificates: u64,
}

pub(super) struct Admit {
    config: Admission,
    my_key: [u8; 32],
    own: Option<(Vec<u8>, Membership)>,
    /// Peers with a connection that are not admitted both ways yet, with their deadline.
    waiting: HashMap<PeerId, Instant>,
    /// Peers we refused: closed at the deadline.
    closing: HashMap<PeerId, Instant>,
    /// Roles of the peers whose certificate we checked.
    roles: HashMap<PeerId, Role>,
    hellos: HashMap<OutboundRequestId, PeerId>,
    issuing: usize,
    issued: mpsc::Sender<Issued>,
    last_renewal: Option<Instant>,
    renewing_own: bool,
    stats: AdmissionStats,
}

fn now_secs() -> u64 {
    floe_wire::clock::unix_secs()
}

/// The ed25519 key behind a peer id, when it is one.
fn public_key(peer: &PeerId) -> Option<[u8; 32]> {
    let key = libp2p::identity::PublicKey::try_decode_protobuf(peer.as_ref().digest()).ok()?;
    Some(key.try_into_ed25519().ok()?.to_bytes())
}

impl Admit {
    pub(super) fn new(config: Admission, me: PeerId, issued: mpsc::Sender<Issued>) -> Self {
        let my_key = public_key(&me).unwrap_or([0; 32]);
        let own = config.certificate.as_ref().and_then(|bytes| {
            membership::verify(&config.coordinator_key, bytes, &Fixed(my_key), now_secs())
                .map_err(|e| tracing::info!(error = %e, "the stored membership certificate is not usable"))
                .ok()
                .map(|m| (bytes.clone(), m))
        });
        Self {
            config,
            my_key,
            own,
            waiting: HashMap::new(),
            closing: HashMap::new(),
            roles: HashMap::new(),
            hellos: HashMap::new(),
            issuing: 0,
            issued,
            last_renewal: None,
            renewing_own: false,
            stats: AdmissionStats::default(),
        }
    }

    pub(super) fn stats(&self) -> AdmissionStats {
        self.stats
    }

    /// A peer's first connection: it has `timeout` to be admitted; we send our Hello.
    pub(super) fn on_connected(&mut self, net: &mut Net, peer: PeerId, now: Instant) {
        self.waiting.insert(peer, now + self.config.timeout);
        self.send_hello(net, peer);
    }

    /// A peer's last connection closed.
    pub(super) fn on_disconnected(&mut self, peer: &PeerId) {
        self.waiting.remove(peer);
        self.closing.remove(peer);
        self.roles.remove(peer);
        self.hellos.retain(|_, p| p != peer);
    }

    fn send_hello(&mut self, net: &mut Net, peer: PeerId) {
        let now = now_secs();
        let cert = self
            .own
            .as_ref()
            .filter(|(_, m)| now < m.expires)
            .map(|(b, _)| ByteBuf(b.clone()));
        let wants_cert = self.own.as_ref().is_none_or(|(_, m)| m.needs_renewal(now));
        let report = if wants_cert && self.config.issuer.is_none() {
            self.config.report.as_ref().and_then(|r| r()).map(ByteBuf)
        } else {
            None
        };
        let hello = Hello {
            schema: crate::admission::ADMIT_SCHEMA,
            cert,
            report,
        };
        let id = net.swarm.behaviour_mut().admit.send_request(&peer, hello);
        self.hellos.insert(id, peer);
    }

    /// Checks a certificate `peer` showed.
    fn check(&self, peer: &PeerId, cert: Option<&ByteBuf>) -> Result<Membership, String> {
        let key = public_key(peer).ok_or("the peer id is not an ed25519 key")?;
        let cert = cert.ok_or("no membership certificate")?;
        membership::verify(
            &self.config.coordinator_key,
            &cert.0,
            &Fixed(key),
            now_secs(),
        )
        .map_err(|e| e.to_string())
    }

    /// A peer's Hello: check its certificate (and ask the issuer, on a coordinator).
    pub(super) fn on_hello(
        &mut self,
        net: &mut Net,
        peer: PeerId,
        hello: Hello,
        channel: ResponseChannel<Welcome>,
    ) -> Outcome {
        let checked = self.check(&peer, hello.cert.as_ref());
        let Some(issuer) = self.config.issuer.clone() else {
            return match checked {
                Ok(m) => self.accept(net, peer, m.role, channel, None),
                Err(why) => self.refuse(net, peer, channel, &why),
            };
        };
        if self.issuing >= MAX_ISSUING {
            return self.refuse(net, peer, channel, "busy admitting other peers; try again");
        }
        let Some(public_key) = public_key(&peer) else {
            return self.refuse(net, peer, channel, "the peer id is not an ed25519 key");
        };
        let presented = checked.ok();
        let role = presented.as_ref().map(|m| m.role);
        let request = IssueRequest::Peer {
            peer,
            public_key,
            presented,
            report: hello.report.map(|b| b.0),
        };
        self.issuing += 1;
        let tx = self.issued.clone();
        tokio::task::spawn_blocking(move || {
            let result = issuer(request);
            let _ = tx.try_send(Issued::Peer {
                peer,
                channel,
                presented: role,
                result,
            });
        });
        Outcome::None
    }

    /// An issuer call finished.
    pub(super) fn on_issued(&mut self, net: &mut Net, issued: Issued) -> Outcome {
        match issued {
            Issued::Own(result) => {
                self.renewing_own = false;
                match result {
                    Ok(Some(cert)) => self.take_own(cert),
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "our membership certificate was not renewed")
                    }
                }
                Outcome::None
            }
            Issued::Peer {
                peer,
                channel,
                presented,
                result,
            } => {
                self.issuing = self.issuing.saturating_sub(1);
                match (result, presented) {
                    (Ok(Some(cert)), _) => match self.check(&peer, Some(&ByteBuf(cert.clone()))) {
                        Ok(m) => self.accept(net, peer, m.role, channel, Some(cert)),
                        Err(e) => {
                            tracing::error!(%peer, error = %e, "the issuer gave a certificate that does not check");
                            self.refuse(net, peer, channel, "no usable certificate issued")
                        }
                    },
                    (Ok(None), Some(role)) => self.accept(net, peer, role, channel, None),
                    (Ok(None), None) => {
                        self.refuse(net, peer, channel, "no membership certificate")
                    }
                    (Err(why), _) => self.refuse(net, peer, channel, &why),
                }
            }
        }
    }

    fn accept(
        &mut self,
        net: &mut Net,
        peer: PeerId,
        role: Role,
        channel: ResponseChannel<Welcome>,
        cert: Option<Vec<u8>>,
    ) -> Outcome {
        let _ = net
            .swarm
            .behaviour_mut()
            .admit
            .send_response(channel, Welcome::admitted(cert));
        self.roles.insert(peer, role);
        let gate = &mut net.swarm.behaviour_mut().gated;
        if role == Role::Coordinator {
            gate.learn_coordinator(peer);
        }
        let open = gate.accept_inbound(peer);
        self.opened(peer, open)
    }

    fn opened(&mut self, peer: PeerId, open: bool) -> Outcome {
        if open && self.waiting.remove(&peer).is_some() {
            self.stats.admitted += 1;
            tracing::debug!(%peer, "peer admitted to the fabric");
            return Outcome::Open(peer);
        }
        Outcome::None
    }

    fn refuse(
        &mut self,
        net: &mut Net,
        peer: PeerId,
        channel: ResponseChannel<Welcome>,
        why: &str,
    ) -> Outcome {
        let _ = net
            .swarm
            .behaviour_mut()
            .admit
            .send_response(channel, Welcome::refused(why));
        self.stats.refused += 1;
        let n = self.stats.refused;
        if n <= 16 || n.is_power_of_two() {
            tracing::warn!(%peer, reason = why, refused = n, "fabric admission refused");
        }
        // A peer already admitted (a renewal that failed) keeps its connection until its
        // certificate is checked again at the next one.
        if !net.swarm.behaviour().gated.is_open(&peer) {
            self.closing
                .insert(peer, Instant::now() + CLOSE_AFTER_REFUSAL);
        }
        Outcome::None
    }

    /// The answer to one of our Hellos.
    pub(super) fn on_welcome(
        &mut self,
        net: &mut Net,
        peer: PeerId,
        id: OutboundRequestId,
        welcome: Welcome,
    ) -> Outcome {
        if self.hellos.remove(&id).is_none() {
            return Outcome::None;
        }
        if let Some(cert) = welcome.cert {
            self.take_own(cert.0);
        }
        if !welcome.admitted {
            self.stats.refused_by_peers += 1;
            tracing::info!(%peer, reason = %welcome.reason, "a peer refused our membership");
            return Outcome::None;
        }
        let open = net.swarm.behaviour_mut().gated.accepted_by(peer);
        self.opened(peer, open)
    }

    /// One of our Hellos got no answer.
    pub(super) fn on_failure(
        &mut self,
        peer: PeerId,
        id: OutboundRequestId,
        error: &request_response::OutboundFailure,
    ) {
        if self.hellos.remove(&id).is_some() {
            tracing::debug!(%peer, %error, "admission hello failed");
        }
    }

    /// A certificate for us: kept and handed to the sink if it checks and lives longer than
    /// the one we have.
    fn take_own(&mut self, cert: Vec<u8>) {
        let checked = membership::verify(
            &self.config.coordinator_key,
            &cert,
            &Fixed(self.my_key),
            now_secs(),
        );
        let m = match checked {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "a certificate offered to us does not check");
                return;
            }
        };
        if self
            .own
            .as_ref()
            .is_some_and(|(_, o)| o.expires >= m.expires)
        {
            return;
        }
        self.stats.certificates += 1;
        tracing::info!(role = %m.role, expires = m.expires, "membership certificate received");
        if let Some(sink) = &self.config.on_certificate {
            sink(cert.clone());
        }
        self.own = Some((cert, m));
    }

    /// Deadlines (close peers refused or not admitted in time) and renewal of our certificate.
    pub(super) fn on_tick(&mut self, net: &mut Net, now: Instant) {
        let due: Vec<PeerId> = self
            .closing
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(p, _)| *p)
            .collect();
        for peer in due {
            self.closing.remove(&peer);
            self.waiting.remove(&peer);
            let _ = net.swarm.disconnect_peer_id(peer);
        }
        let late: Vec<PeerId> = self
            .waiting
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(p, _)| *p)
            .collect();
        for peer in late {
            self.waiting.remove(&peer);
            self.stats.timeouts += 1;
            let n = self.stats.timeouts;
            if n <= 16 || n.is_power_of_two() {
                tracing::warn!(%peer, timeouts = n, "fabric admission timed out: disconnecting");
            }
            let _ = net.swarm.disconnect_peer_id(peer);
        }
        self.renew(net, now);
    }

    fn renew(&mut self, net: &mut Net, now: Instant) {
        let secs = now_secs();
        if !self.own.as_ref().is_none_or(|(_, m)| m.needs_renewal(secs)) {
            return;
        }
        if self
            .last_renewal
            .is_some_and(|t| now.duration_since(t) < RENEW_EVERY)
        {
            return;
        }
        if let Some(issuer) = self.config.issuer.clone() {
            if self.renewing_own {
                return;
            }
            self.last_renewal = Some(now);
            self.renewing_own = true;
            let tx = self.issued.clone();
            let public_key = self.my_key;
            tokio::task::spawn_blocking(move || {
                let _ = tx.try_send(Issued::Own(issuer(IssueRequest::Own { public_key })));
            });
            return;
        }
        // A device: ask a connected coordinator.
        let coordinator = self
            .roles
            .iter()
            .find(|(p, r)| **r == Role::Coordinator && net.swarm.is_connected(p))
            .map(|(p, _)| *p);
        if let Some(peer) = coordinator {
            self.last_renewal = Some(now);
            self.send_hello(net, peer);
        }
    }
}
