//! The directives part: what each device is told to do. It turns an engine directive into a
//! signed directive post (the proto directive signed with the coordinator key, beside the
//! manifest of the artifact it names), keeps each device's one desired post, re-signs posts
//! older than half their lifetime, and answers which devices are still behind (the outbox).
//! Generations are allocated and posts persisted by the deployments part inside its step's
//! transaction; this part only installs what was written.

use super::ServiceError;
use super::model::{DeploymentDoc, Outgoing, TargetTrack};
use super::names::directive_action;
use crate::store::{DesiredRecord, Store};
use ed25519_dalek::SigningKey;
use floe_rollout::{DirectiveKind, Millis};
use floe_wire::proto::directive::DIRECTIVE_SCHEMA;
use floe_wire::proto::report::POST_SCHEMA;
use floe_wire::proto::{
    self, ArtifactRef, ByteBuf, Digest, Directive, DirectivePost, Envelope, Fixed, PublicKeyBytes,
    TrustedKey,
};
use std::collections::{BTreeMap, HashMap};

/// Directives in the order they were installed: a relay that cannot hear the fabric's push
/// (or the device simulator) follows it with a cursor and hands each new post on once.
/// Sequence numbers live in memory only; `epoch` changes on every load, so a cursor from
/// before a restart is recognised as stale and the follower starts over.
#[derive(Debug)]
struct Feed {
    epoch: u64,
    next: u64,
    /// Sequence number → device.
    order: BTreeMap<u64, std::sync::Arc<str>>,
    /// Device → its sequence number.
    seq_of: HashMap<std::sync::Arc<str>, u64>,
}

impl Feed {
    fn new(epoch: u64) -> Feed {
        Feed {
            epoch,
            next: 0,
            order: BTreeMap::new(),
            seq_of: HashMap::new(),
        }
    }

    /// Moves `device` to the end of the feed.
    fn issue(&mut self, device: &str) {
        self.next += 1;
        let id: std::sync::Arc<str> = match self.seq_of.get_key_value(device) {
            Some((id, old)) => {
                let id = id.clone();
                self.order.remove(old);
                id
            }
            None => device.into(),
        };
        self.order.insert(self.next, id.clone());
        self.seq_of.insert(id, self.next);
    }
}

/// A random feed epoch (never 0, so a cursor of 0 always means "from the start").
fn random_epoch() -> Result<u64, ServiceError> {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).map_err(|source| ServiceError::Random { source })?;
    Ok(u64::from_le_bytes(b) | 1)
}

/// The directives part of the core.
#[derive(Debug)]
pub(super) struct Directives {
    /// Each device's desired directive post.
    desired: HashMap<String, DesiredRecord>,
    /// The issue feed: each device's current directive under the sequence number it was
    /// installed with (in memory only; a reload starts a new [`Feed`] epoch).
    feed: Feed,
    /// Signs directives.
    coordinator_key: SigningKey,
    /// How long a signed directive stays valid, in seconds.
    ttl_secs: u64,
}

impl Directives {
    /// Loads the desired posts from `store`.
    pub(super) fn load(
        store: &Store,
        coordinator_key: SigningKey,
        ttl_secs: u64,
    ) -> Result<Self, ServiceError> {
        let desired: HashMap<String, DesiredRecord> = store
            .desired()?
            .into_iter()
            .map(|d| (d.device_id.clone(), d))
            .collect();
        let mut feed = Feed::new(random_epoch()?);
        let mut ids: Vec<&String> = desired.keys().collect();
        ids.sort_unstable();
        for id in ids {
            feed.issue(id);
        }
        Ok(Self {
            desired,
            feed,
            coordinator_key,
            ttl_secs,
        })
    }

    /// The current directive generation of a device (0: none).
    pub(super) fn generation(&self, device: &str) -> u64 {
        self.desired.get(device).map(|d| d.generation).unwrap_or(0)
    }

    /// Makes a device's desired record current after the caller wrote it.
    pub(super) fn install(&mut self, record: DesiredRecord) {
        self.feed.issue(&record.device_id);
        self.desired.insert(record.device_id.clone(), record);
    }

    /// The feed's epoch (a new one after every load).
    pub(super) fn feed_epoch(&self) -> u64 {
        self.feed.epoch
    }

    /// Up to `limit` devices whose current directive was installed after sequence number
    /// `since` (in this epoch) and which have not reported it applied, in issue order, with
    /// the sequence number and generation of each: what a relay has not pushed yet.
    pub(super) fn issued_since(
        &self,
        applied: impl Fn(&str) -> u64,
        since: u64,
        limit: usize,
    ) -> Vec<(u64, String, u64)> {
        self.feed
            .order
            .range(since.saturating_add(1)..)
            .filter_map(|(seq, id)| {
                let generation = self.desired.get(id.as_ref())?.generation;
                (applied(id) < generation).then(|| (*seq, id.to_string(), generation))
            })
            .take(limit)
            .collect()
    }

    /// The desired record for one engine directive at `generation`: built and signed, not
    /// yet written (the caller writes it in its transaction, then [`Directives::install`]s it).
    pub(super) fn issue(
        &self,
        store: &Store,
        doc: &DeploymentDoc,
        track: &TargetTrack,
        kind: DirectiveKind,
        generation: u64,
        now: Millis,
    ) -> Result<DesiredRecord, ServiceError> {
        let (directive, manifest) = self.build(store, doc, track, kind, generation, now)?;
        let post = self.sign_post(&directive, &manifest)?;
        Ok(DesiredRecord {
            device_id: track.device_id.clone(),
            generation,
            deployment_id: doc.id.clone(),
            directive: format!(
                "{} {} release {}",
                kind.as_str(),
                directive.artifact.name,
                directive.artifact.release
            ),
            post,
            issued_at: directive.issued_at,
        })
    }

    /// The proto directive for one engine directive and the manifest of the artifact it
    /// names.
    fn build(
        &self,
        store: &Store,
        doc: &DeploymentDoc,
        track: &TargetTrack,
        kind: DirectiveKind,
        generation: u64,
        now: Millis,
    ) -> Result<(Directive, Vec<u8>), ServiceError> {
        let current = store
            .artifact_release(&doc.artifact.name, doc.artifact.release)?
            .ok_or_else(|| {
                ServiceError::Internal(format!(
                    "the artifact {} release {} of deployment {} is gone",
                    doc.artifact.name, doc.artifact.release, doc.id
                ))
            })?;
        let stored = |name: &str, release: u64, hex: &str| -> Result<ArtifactRef, ServiceError> {
            Ok(ArtifactRef {
                name: name.to_string(),
                release,
                manifest_sha256: Digest::from_hex(hex)
                    .map_err(|source| ServiceError::Digest { source })?,
            })
        };
        let (artifact, manifest) = match (kind, &track.previous) {
            // Roll back to what the device ran before the deployment. If that release is not
            // one this coordinator published, the device rolls back to its own last known
            // good slot: the ref names the release and carries no digest.
            (DirectiveKind::Rollback, Some(prev)) => {
                match store.artifact_release(&prev.name, prev.release)? {
                    Some(a) => (stored(&a.name, a.release, &a.manifest_sha256)?, a.manifest),
                    None => (
                        ArtifactRef {
                            name: prev.name.clone(),
                            release: prev.release,
                            manifest_sha256: Fixed([0u8; 32]),
                        },
                        current.manifest.clone(),
                    ),
                }
            }
            _ => (
                stored(&current.name, current.release, &current.manifest_sha256)?,
                current.manifest.clone(),
            ),
        };
        let issued_at = now / 1000;
        let directive = Directive {
            schema: DIRECTIVE_SCHEMA,
            device_id: track.device_id.clone(),
            generation,
            action: directive_action(kind),
            artifact,
            issued_at,
            expires: issued_at + self.ttl_secs.max(2),
            // Only a Stage installs a flow; the other actions act on what is staged.
            vars: if kind == DirectiveKind::Stage {
                track.vars.clone()
            } else {
                BTreeMap::new()
            },
            secret_vars: if kind == DirectiveKind::Stage {
                track.secret_vars.clone()
            } else {
                BTreeMap::new()
            },
        };
        Ok((directive, manifest))
    }

    /// Signs a directive and encodes it with its manifest as a post.
    fn sign_post(&self, directive: &Directive, manifest: &[u8]) -> Result<Vec<u8>, ServiceError> {
        let envelope = Envelope::sign(directive, &[&self.coordinator_key]).map_err(|source| {
            ServiceError::Signed {
                what: "signing a directive",
                source,
            }
        })?;
        let bytes = envelope.to_bytes().map_err(|source| ServiceError::Signed {
            what: "encoding a directive",
            source,
        })?;
        DirectivePost {
            schema: POST_SCHEMA,
            directive: ByteBuf(bytes),
            manifest: ByteBuf(manifest.to_vec()),
        }
        .to_bytes()
        .map_err(|source| ServiceError::Encode {
            what: "encoding a directive post",
            source,
        })
    }

    /// The current post of a device, re-signed with a fresh `issued_at` when the signed one
    /// is older than half its lifetime.
    pub(super) fn post(
        &mut self,
        store: &Store,
        device: &str,
        now: Millis,
    ) -> Result<Option<(u64, Vec<u8>)>, ServiceError> {
        let Some(rec) = self.desired.get(device).cloned() else {
            return Ok(None);
        };
        let age = (now / 1000).saturating_sub(rec.issued_at);
        if age <= self.ttl_secs / 2 {
            return Ok(Some((rec.generation, rec.post)));
        }
        let post = DirectivePost::from_bytes(&rec.post)
            .map_err(|source| ServiceError::StoredPost { source })?;
        let public: PublicKeyBytes = Fixed(self.coordinator_key.verifying_key().to_bytes());
        let verified = proto::open::<Directive>(&post.directive.0, &[TrustedKey::new(public)], 1)
            .map_err(|source| ServiceError::Signed {
            what: "stored directive",
            source,
        })?;
        let mut directive = verified.value;
        directive.issued_at = now / 1000;
        directive.expires = directive.issued_at + self.ttl_secs.max(2);
        let bytes = self.sign_post(&directive, &post.manifest.0)?;
        let fresh = DesiredRecord {
            post: bytes.clone(),
            issued_at: directive.issued_at,
            ..rec
        };
        store.put_desired(&fresh)?;
        self.desired.insert(device.to_string(), fresh);
        Ok(Some((directive.generation, bytes)))
    }

    /// Whether `device` has a desired directive whose generation is above `applied`, the one
    /// it last reported applied (the rule the outbox and a direct answer share).
    pub(super) fn is_behind(&self, device: &str, applied: u64) -> bool {
        self.desired
            .get(device)
            .is_some_and(|desired| applied < desired.generation)
    }

    /// Up to `limit` devices (by id, after `after`) whose applied generation is below their
    /// desired directive's, with that generation: who a push should reach next.
    pub(super) fn behind(
        &self,
        applied: impl Fn(&str) -> u64,
        after: Option<&str>,
        limit: usize,
    ) -> Vec<(String, u64)> {
        let mut out: Vec<(String, u64)> = self
            .desired
            .values()
            .filter(|d| after.is_none_or(|a| d.device_id.as_str() > a))
            .filter(|d| self.is_behind(&d.device_id, applied(&d.device_id)))
            .map(|d| (d.device_id.clone(), d.generation))
            .collect();
        out.sort_unstable();
        out.truncate(limit);
        out
    }

    /// Every device whose reported applied generation (as `applied` tells) is below its
    /// desired directive's, with its current post, ordered by device.
    pub(super) fn outbox(
        &mut self,
        store: &Store,
        applied: impl Fn(&str) -> u64,
        now: Millis,
    ) -> Result<Vec<Outgoing>, ServiceError> {
        let behind: Vec<String> = self
            .desired
            .values()
            .filter(|d| self.is_behind(&d.device_id, applied(&d.device_id)))
            .map(|d| d.device_id.clone())
            .collect();
        let mut out = Vec::with_capacity(behind.len());
        for device in behind {
            if let Some((generation, post)) = self.post(store, &device, now)? {
                out.push(Outgoing {
                    device_id: device,
                    generation,
                    post,
                });
            }
        }
        out.sort_by(|a, b| a.device_id.cmp(&b.device_id));
        Ok(out)
    }
}
