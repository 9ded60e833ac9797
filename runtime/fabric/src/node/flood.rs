//! Fault injection: carrying out a [`Flood`] on the swarm, for the abuse tests.
//!
//! Why apart from [`super::fault`]: that module holds the kinds of flood and the raw writer the
//! swarm is built with; this one acts through the swarm and the downloads' request bound, which
//! are built from it, so keeping the two apart keeps the dependencies one way.

use super::fault::{Flood, IWANT_IDS_PER_RPC, MAX_IWANT_RPCS, iwant_rpc};
use super::fetches::Fetches;
use super::net::Net;
use crate::gossip::Topic;
use crate::wire::Request;
use libp2p::{PeerId, gossipsub};

/// Misbehaves `count` times as `kind` says, towards every connected peer.
pub(super) fn flood(net: &mut Net, fetches: &mut Fetches, kind: Flood, count: u32) {
    let peers: Vec<PeerId> = net.peers();
    for i in 0..count {
        let mut noise = [0u8; 32];
        let _ = getrandom::fill(&mut noise);
        match kind {
            Flood::GarbageGossip => {
                let _ = net
                    .swarm
                    .behaviour_mut()
                    .gated
                    .inner_mut()
                    .gossip
                    .publish(Topic::Announce.ident(), noise.to_vec());
            }
            Flood::OversizedGossip => {
                let mut big = vec![0u8; 100 * 1024];
                big[..32].copy_from_slice(&noise);
                let _ = net
                    .swarm
                    .behaviour_mut()
                    .gated
                    .inner_mut()
                    .gossip
                    .publish(Topic::Announce.ident(), big);
            }
            Flood::Subscriptions => {
                let topic =
                    gossipsub::IdentTopic::new(format!("junk/{i}/{}", hex::encode(&noise[..4])));
                let _ = net
                    .swarm
                    .behaviour_mut()
                    .gated
                    .inner_mut()
                    .gossip
                    .subscribe(&topic);
            }
            Flood::Iwant => {
                // One stream per peer carries the whole flood; see `Flood::Iwant`.
                if i > 0 {
                    continue;
                }
                for peer in &peers {
                    let mut stream = Vec::new();
                    for _ in 0..count.min(MAX_IWANT_RPCS) {
                        let mut ids = vec![[0u8; 32]; IWANT_IDS_PER_RPC];
                        for id in &mut ids {
                            let _ = getrandom::fill(id);
                        }
                        stream.extend_from_slice(&iwant_rpc(&ids));
                    }
                    if let Some(raw) = net.swarm.behaviour_mut().gated.inner_mut().raw_rpc.as_mut()
                    {
                        raw.send_request(peer, stream);
                    }
                }
            }
            Flood::UnknownChunks => {
                for peer in &peers {
                    if !fetches.send_junk(net, *peer, Request::Chunk(noise, noise)) {
                        break;
                    }
                }
            }
        }
    }
}
