//! Gossip: versioned topics, the application's validation callback, and gossipsub's
//! configuration and peer-score parameters.
//!
//! Gossip announces, request-response carries (DESIGN.md): messages here are small signed
//! envelopes (artifact announcements, directives, health summaries), capped at
//! [`MAX_GOSSIP_BYTES`], far below gossipsub's default 64 KiB limit. Every message goes through
//! the application's [`Validator`] before gossipsub forwards it:
//! - `Accept`: valid; forwarded and delivered.
//! - `Reject`: undecodable or badly signed; dropped and the sender is penalised (gossipsub's
//!   P4 "invalid message deliveries" term), and banned by the fabric after
//!   [`super::FabricConfig::max_invalid_gossip`] rejects or as soon as its score is below the
//!   graylist threshold, whichever comes first. Messages gossipsub's own handler finds invalid
//!   (bad signature, over [`MAX_MESSAGE_BYTES`]) count the same way (see the guard in `guard.rs`).
//! - `Ignore`: stale or duplicate; dropped without penalty.
//!
//! The message id is the sha256 of the raw message bytes, so the same content from two sources
//! is one message and duplicates are cheap to spot.
//!
//! Peer-score thresholds (see [`score_thresholds`]): a peer's score falls by
//! `topic_weight (1.0) × invalid_weight (-10) × count²` for invalid messages; at -100 (ten
//! invalid messages decay aside) our gossip to it is suppressed (`gossip_threshold`), at -200 we
//! do not publish to it (`publish_threshold`), at -400 we ignore everything it sends
//! (`graylist_threshold`) and the fabric bans it. Honest peers sit at or above zero.

use libp2p::gossipsub::{
    self, IdentTopic, MessageId, PeerScoreParams, PeerScoreThresholds, TopicScoreParams,
};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Largest gossip message the fabric sends or accepts (16 KiB).
pub const MAX_GOSSIP_BYTES: usize = 16 * 1024;
/// Largest encoded message on a fabric topic: [`MAX_GOSSIP_BYTES`] of data and room for the
/// signature, key, sequence number and topic. A larger message inside a readable RPC is invalid
/// and penalised (see [`MAX_RPC_BYTES`]).
pub const MAX_MESSAGE_BYTES: usize = MAX_GOSSIP_BYTES + 1024;
/// Largest gossipsub RPC frame read. Above [`MAX_MESSAGE_BYTES`] on purpose: an oversized
/// message up to this size is still decoded, so gossipsub marks it invalid and lowers its
/// sender's score, and the fabric counts a strike. A frame beyond this is cut off unread (the
/// stream is dropped); gossipsub gives no way to attribute that, so it costs the sender its
/// stream but no score.
pub const MAX_RPC_BYTES: usize = 128 * 1024;

/// Gossipsub's per-connection send queue length: half of it bounds the queue of forwards and
/// IHAVE/IWANT gossip, half the publishes waiting for one connection. Gossipsub's default of
/// 5000 preallocates a 2500-slot queue per connection, about 0.6 MB each, which was most of a
/// device's memory once it had a few dozen peers. Fleet gossip is a few small messages a
/// second, so 256 leaves ample room; at the bound gossipsub drops what it would queue for that
/// (slow) peer and counts it against the peer, and the others still get the message.
pub const CONNECTION_QUEUE: usize = 256;

/// The fabric's topics. The `/1` suffix is the wire version of the payload carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    /// Artifact announcements: "artifact X is available".
    Announce,
    /// Coordinator directives to devices.
    Directive,
    /// Device health summaries.
    Health,
}

impl Topic {
    /// Every topic, in a fixed order.
    pub const ALL: [Topic; 3] = [Topic::Announce, Topic::Directive, Topic::Health];
    /// The topics a device subscribes to. It publishes its reports on [`Topic::Health`] without
    /// subscribing (see [`super::FabricConfig::topics`]).
    pub const DEVICE: [Topic; 2] = [Topic::Announce, Topic::Directive];

    /// The topic's versioned name.
    pub fn name(self) -> &'static str {
        match self {
            Topic::Announce => "floe/announce/1",
            Topic::Directive => "floe/directive/1",
            Topic::Health => "floe/health/1",
        }
    }

    /// The gossipsub topic.
    pub fn ident(self) -> IdentTopic {
        IdentTopic::new(self.name())
    }

    /// Looks a topic up by its gossipsub hash.
    pub fn from_hash(hash: &gossipsub::TopicHash) -> Option<Topic> {
        Self::ALL.into_iter().find(|t| &t.ident().hash() == hash)
    }
}

/// The verdict of the application on one gossip message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validation {
    /// Valid: deliver and forward.
    Accept,
    /// Invalid (decoding or signature): drop and penalise the sender.
    Reject,
    /// Stale or duplicate: drop quietly.
    Ignore,
}

/// The application's validation callback: topic and the exact bytes received.
pub type Validator = Arc<dyn Fn(Topic, &[u8]) -> Validation + Send + Sync>;

/// The message id: the sha256 of the raw data.
pub fn message_id(message: &gossipsub::Message) -> MessageId {
    MessageId::from(Sha256::digest(&message.data).to_vec())
}

/// Gossipsub's configuration: strict signing, validation by the application, content ids,
/// bounded message size and IHAVE/IWANT handling.
pub fn config() -> Result<gossipsub::Config, gossipsub::ConfigBuilderError> {
    let mut builder = gossipsub::ConfigBuilder::default();
    for topic in Topic::ALL {
        builder.max_transmit_size_for_topic(MAX_MESSAGE_BYTES, topic.ident().hash());
    }
    builder
        .heartbeat_interval(Duration::from_millis(700))
        .validation_mode(gossipsub::ValidationMode::Strict)
        .validate_messages()
        .message_id_fn(message_id)
        .max_transmit_size(MAX_RPC_BYTES)
        .max_messages_per_rpc(Some(64))
        .max_ihave_length(500)
        .max_ihave_messages(10)
        .gossip_retransimission(3)
        .duplicate_cache_time(Duration::from_secs(120))
        .connection_handler_queue_len(CONNECTION_QUEUE)
        .build()
}

/// Per-topic and global peer-score parameters; see the module docs for what they mean.
pub fn score_params() -> PeerScoreParams {
    let mut topics = HashMap::new();
    for topic in Topic::ALL {
        topics.insert(
            topic.ident().hash(),
            TopicScoreParams {
                topic_weight: 1.0,
                // Mesh delivery-rate penalties (P3, P3b) assume steady traffic; fleet gossip is
                // bursty (an announcement per release), so they are off.
                mesh_message_deliveries_weight: 0.0,
                mesh_failure_penalty_weight: 0.0,
                invalid_message_deliveries_weight: -10.0,
                invalid_message_deliveries_decay: 0.5,
                ..TopicScoreParams::default()
            },
        );
    }
    PeerScoreParams {
        topics,
        // Many devices of a site share one public address; loopback tests share 127.0.0.1.
        ip_colocation_factor_weight: 0.0,
        ..PeerScoreParams::default()
    }
}

/// The thresholds documented in the module docs.
pub fn score_thresholds() -> PeerScoreThresholds {
    PeerScoreThresholds {
        gossip_threshold: -100.0,
        publish_threshold: -200.0,
        graylist_threshold: -400.0,
        accept_px_threshold: 10.0,
        opportunistic_graft_threshold: 5.0,
    }
}

/// Whether a peer's score is below the graylist threshold.
pub fn graylisted(score: f64) -> bool {
    score < score_thresholds().graylist_threshold
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_versioned_and_params_validate() {
        for t in Topic::ALL {
            assert!(t.name().starts_with("floe/") && t.name().ends_with("/1"));
            assert_eq!(Topic::from_hash(&t.ident().hash()), Some(t));
        }
        assert!(score_params().validate().is_ok());
        assert!(score_thresholds().validate().is_ok());
        assert!(config().is_ok());
        assert!(MAX_GOSSIP_BYTES < gossipsub::Config::default_max_transmit_size());
    }
}
