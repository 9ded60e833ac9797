//! The direct protocol's state on the swarm task: our outstanding requests, and the incoming
//! ones whose handler is running.
//!
//! Why here and not in [`crate::direct`]: that module is the wire (codec, framing, bounds);
//! this one enforces the bounds while the actor runs. The handler runs on tokio's blocking
//! pool, never on the swarm task; its answer comes back through a channel with room for every
//! handler in flight ([`direct::MAX_HANDLERS`]), which the actor passes to
//! [`DirectRequests::on_answered`].

use super::net::Net;
use crate::direct::{self, DirectResponse, RequestHandler};
use crate::{FabricError, RequestError};
use libp2p::PeerId;
use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use std::collections::HashMap;
use tokio::sync::{mpsc, oneshot};

/// Where the reply to one of our direct requests goes.
pub(super) type DirectReply = oneshot::Sender<Result<Vec<u8>, FabricError>>;

/// A handler's answer on its way back to the swarm task.
pub(super) type Answered = (PeerId, ResponseChannel<DirectResponse>, DirectResponse);

/// Direct requests in both directions.
pub(super) struct DirectRequests {
    /// Answers incoming direct requests; `None` declines them all.
    handler: Option<RequestHandler>,
    /// Where blocking handler calls send their answers (capacity [`direct::MAX_HANDLERS`]).
    answered: mpsc::Sender<Answered>,
    /// Handler calls in flight per asking peer (at most [`direct::MAX_HANDLERS`] in total).
    handlers_in_flight: HashMap<PeerId, usize>,
    /// Our outstanding direct requests (at most [`direct::MAX_OUTBOUND`]).
    pending: HashMap<OutboundRequestId, (PeerId, DirectReply)>,
}

impl DirectRequests {
    pub(super) fn new(handler: Option<RequestHandler>, answered: mpsc::Sender<Answered>) -> Self {
        Self {
            handler,
            answered,
            handlers_in_flight: HashMap::new(),
            pending: HashMap::new(),
        }
    }

    /// Sends one of our requests, unless the peer is banned or our bounds are reached.
    pub(super) fn send(
        &mut self,
        net: &mut Net,
        banned: bool,
        peer: PeerId,
        data: Vec<u8>,
        reply: DirectReply,
    ) {
        if banned {
            let _ = reply.send(Err(FabricError::Request {
                peer,
                source: RequestError::Banned,
            }));
            return;
        }
        let to_peer = self.pending.values().filter(|(p, _)| *p == peer).count();
        if self.pending.len() >= direct::MAX_OUTBOUND || to_peer >= direct::MAX_OUTBOUND_PER_PEER {
            let _ = reply.send(Err(FabricError::Busy(
                "too many direct requests outstanding",
            )));
            return;
        }
        let id = net
            .swarm
            .behaviour_mut()
            .gated
            .inner_mut()
            .direct
            .send_request(&peer, data);
        self.pending.insert(id, (peer, reply));
    }

    /// An incoming direct request: run the handler off this task, or answer at once when there
    /// is no handler or the bounds are reached.
    fn on_request(
        &mut self,
        net: &mut Net,
        peer: PeerId,
        data: Vec<u8>,
        channel: ResponseChannel<DirectResponse>,
    ) {
        let Some(handler) = self.handler.clone() else {
            let _ = net
                .swarm
                .behaviour_mut()
                .gated
                .inner_mut()
                .direct
                .send_response(channel, DirectResponse::Declined);
            return;
        };
        let total: usize = self.handlers_in_flight.values().sum();
        let mine = self.handlers_in_flight.get(&peer).copied().unwrap_or(0);
        if total >= direct::MAX_HANDLERS || mine >= direct::MAX_HANDLERS_PER_PEER {
            let _ = net
                .swarm
                .behaviour_mut()
                .gated
                .inner_mut()
                .direct
                .send_response(channel, DirectResponse::Busy);
            return;
        }
        *self.handlers_in_flight.entry(peer).or_default() += 1;
        let answered = self.answered.clone();
        tokio::task::spawn_blocking(move || {
            let reply =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler(peer, data)));
            let response = match reply {
                Ok(Some(bytes)) if bytes.len() <= direct::MAX_DIRECT_BYTES => {
                    DirectResponse::Reply(bytes)
                }
                Ok(Some(bytes)) => {
                    tracing::error!(
                        len = bytes.len(),
                        "direct reply over the size limit; declining instead"
                    );
                    DirectResponse::Declined
                }
                Ok(None) => DirectResponse::Declined,
                Err(_) => {
                    tracing::error!("the direct-request handler panicked; declining");
                    DirectResponse::Declined
                }
            };
            // The channel has room for every handler in flight, so this never waits; it fails
            // only when the fabric has stopped, and then nobody needs the answer.
            let _ = answered.try_send((peer, channel, response));
        });
    }

    /// A handler answered: send its answer.
    pub(super) fn on_answered(&mut self, net: &mut Net, (peer, channel, response): Answered) {
        if let Some(n) = self.handlers_in_flight.get_mut(&peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.handlers_in_flight.remove(&peer);
            }
        }
        // Fails only when the connection closed meanwhile; the asker then sees an error.
        let _ = net
            .swarm
            .behaviour_mut()
            .gated
            .inner_mut()
            .direct
            .send_response(channel, response);
    }

    /// An event of the direct protocol's behaviour.
    pub(super) fn on_event(
        &mut self,
        net: &mut Net,
        event: request_response::Event<Vec<u8>, DirectResponse>,
    ) {
        use request_response::{Event, Message};
        match event {
            Event::Message {
                peer,
                message:
                    Message::Request {
                        request, channel, ..
                    },
                ..
            } => self.on_request(net, peer, request, channel),
            Event::Message {
                peer,
                message:
                    Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                if let Some((_, reply)) = self.pending.remove(&request_id) {
                    let result = match response {
                        DirectResponse::Reply(bytes) => Ok(bytes),
                        DirectResponse::Busy => {
                            Err(FabricError::Busy("the peer is answering too many requests"))
                        }
                        DirectResponse::Declined => Err(FabricError::Request {
                            peer,
                            source: RequestError::Declined,
                        }),
                    };
                    let _ = reply.send(result);
                }
            }
            Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                if let Some((_, reply)) = self.pending.remove(&request_id) {
                    let _ = reply.send(Err(FabricError::Request {
                        peer,
                        source: RequestError::Failed(error),
                    }));
                }
            }
            Event::InboundFailure { .. } | Event::ResponseSent { .. } => {}
        }
    }
}
