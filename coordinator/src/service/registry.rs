//! The registry part: every registered device (allowlisted or enrolled), the one-time
//! enrollment tokens, and whether a device is online. A device's report is admitted here
//! (enrollment, key check, record update) before its meaning reaches the engines; the part
//! answers the deployments part's questions (targets, rollback targets) through
//! narrow methods and takes back the quarantine flags the engines set.

use super::audit::{AuditBatch, api_audit, line};
use super::hygiene;
use super::ingest::{health_record, slot_record};
use super::model::{DeviceInput, DevicePatch, Selector};
use super::pending::{Pending, PendingDevice};
use super::{MAX_DEVICES, MAX_OPEN_TOKENS, ServiceError, random_token, validation};
use crate::store::{AppliedRecord, DeviceRecord, SlotRecord, Store, StoreError};
use floe_rollout::Millis;
use floe_rollout::duration::format_duration;
use floe_wire::proto::{DeviceReport, PublicKeyBytes};
use std::collections::BTreeMap;

/// What became of a device's report.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Admission {
    /// The device is registered with another key; the sentence says so.
    KeyMismatch(String),
    /// The report is not newer than the last one; nothing changed.
    Stale,
    /// The registry took the report.
    Accepted {
        /// The device had been marked offline, or had never reported, until this report.
        was_offline: bool,
    },
}

/// The registry part of the core.
#[derive(Debug)]
pub(super) struct Registry {
    devices: BTreeMap<String, DeviceRecord>,
    /// A device silent for this long counts as offline.
    offline_after: Millis,
    /// Devices that asked to join without a token or an allowlist entry.
    pending: Pending,
}

/// A registry record that has never reported.
fn fresh_record(
    id: &str,
    public_key: String,
    device_type: String,
    region: String,
    now: Millis,
) -> DeviceRecord {
    DeviceRecord {
        id: id.to_string(),
        public_key,
        device_type,
        arch: String::new(),
        region,
        labels: BTreeMap::new(),
        runtime_version: String::new(),
        installed: None,
        standby: None,
        last_known_good: None,
        on_trial: false,
        health: None,
        applied: None,
        last_seen: None,
        last_seq: 0,
        offline: false,
        maintenance: false,
        quarantined: false,
        added_at: now,
        enrolled_at: None,
    }
}

impl Registry {
    /// Loads the registry from `store`.
    pub(super) fn load(store: &Store, offline_after: Millis) -> Result<Self, ServiceError> {
        let devices = store
            .devices()?
            .into_iter()
            .map(|d| (d.id.clone(), d))
            .collect();
        Ok(Self {
            devices,
            offline_after,
            pending: Pending::new(),
        })
    }

    /// Every registered device.
    pub(super) fn all(&self) -> impl Iterator<Item = &DeviceRecord> {
        self.devices.values()
    }

    /// The devices with ids after `after` (every one without it), by id.
    pub(super) fn after<'a>(
        &'a self,
        after: Option<&str>,
    ) -> impl Iterator<Item = &'a DeviceRecord> + 'a {
        use std::ops::Bound;
        let from = match after {
            Some(a) => Bound::Excluded(a.to_string()),
            None => Bound::Unbounded,
        };
        self.devices
            .range::<String, _>((from, Bound::Unbounded))
            .map(|(_, d)| d)
    }

    /// A device by id.
    pub(super) fn get(&self, id: &str) -> Result<&DeviceRecord, ServiceError> {
        self.devices.get(id).ok_or_else(|| ServiceError::NotFound {
            what: "device",
            id: id.to_string(),
        })
    }

    /// Whether a device counts as online.
    pub(super) fn online(d: &DeviceRecord) -> bool {
        !d.offline && d.last_seen.is_some()
    }

    /// Whether `id` is registered and not online.
    pub(super) fn is_offline(&self, id: &str) -> bool {
        self.devices.get(id).is_some_and(|d| !Self::online(d))
    }

    /// The generation a device last reported applied (0: none).
    pub(super) fn applied_generation(&self, id: &str) -> u64 {
        self.devices
            .get(id)
            .and_then(|dev| dev.applied.as_ref())
            .map(|a| a.generation)
            .unwrap_or(0)
    }

    /// What a device would roll back to: its last known good release, else its active one.
    pub(super) fn rollback_target(d: &DeviceRecord) -> Option<SlotRecord> {
        d.last_known_good.clone().or_else(|| d.installed.clone())
    }

    /// Up to `limit` devices not yet marked offline that have been silent for longer than the
    /// limit (by id).
    pub(super) fn silent(&self, now: Millis, limit: usize) -> Vec<String> {
        self.devices
            .values()
            .filter(|d| {
                !d.offline
                    && d.last_seen
                        .is_some_and(|t| now.saturating_sub(t) > self.offline_after)
            })
            .take(limit)
            .map(|d| d.id.clone())
            .collect()
    }

    /// Marks a device offline (and audits it) in one transaction, or a savepoint of the caller's
    /// (a tick marks its silent devices in one); false when it is not registered.
    pub(super) fn mark_offline(
        &mut self,
        store: &Store,
        id: &str,
        now: Millis,
    ) -> Result<bool, ServiceError> {
        let Some(mut dev) = self.devices.get(id).cloned() else {
            return Ok(false);
        };
        dev.offline = true;
        let silent = dev.last_seen.map(|t| now.saturating_sub(t)).unwrap_or(0);
        store.atomically(|s| {
            s.put_device(&dev)?;
            s.audit(&line(
                now,
                "service",
                "device.offline",
                (Some(id), None),
                "offline",
                format!("no report for {}", format_duration(silent)),
            ))
        })?;
        self.devices.insert(id.to_string(), dev);
        Ok(true)
    }

    /// The records of the devices among `ids` to flag quarantined (those not flagged yet),
    /// for the caller to write; [`Registry::install`] makes them current afterwards.
    pub(super) fn to_quarantine(&self, ids: &[String]) -> Vec<DeviceRecord> {
        ids.iter()
            .filter_map(|d| self.devices.get(d))
            .filter(|dev| !dev.quarantined)
            .map(|dev| DeviceRecord {
                quarantined: true,
                ..dev.clone()
            })
            .collect()
    }

    /// Makes a device record current after the caller wrote it.
    pub(super) fn install(&mut self, dev: DeviceRecord) {
        self.devices.insert(dev.id.clone(), dev);
    }

    /// The devices a deployment request names: an explicit list (each must exist) or a
    /// selector, never both.
    pub(super) fn targets(
        &self,
        list: Option<&[String]>,
        selector: Option<&Selector>,
    ) -> Result<Vec<&DeviceRecord>, ServiceError> {
        match (list, selector) {
            (Some(_), Some(_)) => Err(validation(
                "selector",
                "give target_devices or a selector, not both",
            )),
            (None, None) => Err(validation(
                "target_devices",
                "give target_devices or a selector",
            )),
            (Some(list), None) => list.iter().map(|id| self.get(id)).collect(),
            (None, Some(sel)) => {
                hygiene::selector(sel)?;
                Ok(self
                    .devices
                    .values()
                    .filter(|d| sel.device_type.as_ref().is_none_or(|t| *t == d.device_type))
                    .filter(|d| sel.region.as_ref().is_none_or(|r| *r == d.region))
                    .filter(|d| sel.labels.iter().all(|(k, v)| d.labels.get(k) == Some(v)))
                    .collect())
            }
        }
    }

    /// `PATCH /devices/:id`.
    pub(super) fn patch(
        &mut self,
        store: &Store,
        id: &str,
        patch: DevicePatch,
        now: Millis,
    ) -> Result<DeviceRecord, ServiceError> {
        let mut dev = self.get(id)?.clone();
        if let Some(m) = patch.maintenance {
            dev.maintenance = m;
        }
        if let Some(q) = patch.quarantined {
            dev.quarantined = q;
        }
        store.atomically(|s| {
            s.put_device(&dev)?;
            s.audit(&api_audit(
                s.caller(),
                now,
                "device.flags",
                Some(id),
                "ok",
                format!(
                    "maintenance={} quarantined={}",
                    dev.maintenance, dev.quarantined
                ),
            ))
        })?;
        self.devices.insert(id.to_string(), dev.clone());
        Ok(dev)
    }

    /// `POST /devices`: puts a device's key on the enrollment allowlist.
    /// Drops devices from memory (after the transaction that added them was rolled back).
    pub(super) fn forget(&mut self, ids: &[String]) {
        for id in ids {
            self.devices.remove(id);
        }
    }

    pub(super) fn allow(
        &mut self,
        store: &Store,
        input: DeviceInput,
        now: Millis,
    ) -> Result<DeviceRecord, ServiceError> {
        self.allow_as(store, input, now, "device.allow")
    }

    /// The devices that asked to join, oldest first.
    pub(super) fn pending(&self) -> Vec<PendingDevice> {
        self.pending.list()
    }

    /// `POST /devices/pending/{id}/accept`: puts a pending device's key on the allowlist
    /// with the facts it reported; its next report enrolls it.
    pub(super) fn accept(
        &mut self,
        store: &Store,
        id: &str,
        now: Millis,
    ) -> Result<DeviceRecord, ServiceError> {
        let p = self
            .pending
            .take(id)
            .ok_or_else(|| ServiceError::NotFound {
                what: "pending device",
                id: id.to_string(),
            })?;
        let input = DeviceInput {
            id: p.id.clone(),
            public_key: p.id.clone(),
            device_type: Some(p.device_type.clone()).filter(|t| !t.is_empty()),
            region: Some(p.region.clone()).filter(|r| !r.is_empty()),
            labels: BTreeMap::new(),
        };
        self.allow_as(store, input, now, "device.accept")
            .inspect_err(|_| self.pending.put_back(p))
    }

    /// `DELETE /devices/pending/{id}`: drops a device's request (audited).
    pub(super) fn reject(
        &mut self,
        store: &Store,
        id: &str,
        now: Millis,
    ) -> Result<(), ServiceError> {
        let p = self
            .pending
            .take(id)
            .ok_or_else(|| ServiceError::NotFound {
                what: "pending device",
                id: id.to_string(),
            })?;
        store.atomically(|s| {
            s.audit(&api_audit(
                s.caller(),
                now,
                "device.reject",
                Some(&p.id),
                "ok",
                format!(
                    "request of a {} in {:?} dropped after {} reports",
                    p.device_type, p.region, p.reports
                ),
            ))
        })?;
        Ok(())
    }

    fn allow_as(
        &mut self,
        store: &Store,
        input: DeviceInput,
        now: Millis,
        action: &str,
    ) -> Result<DeviceRecord, ServiceError> {
        PublicKeyBytes::from_hex(&input.public_key).map_err(|e| {
            validation(
                "public_key",
                format!("not a 32-byte ed25519 public key in hex: {e}"),
            )
        })?;
        hygiene::device_input(&input)?;
        let input = DeviceInput {
            id: input.id.to_lowercase(),
            ..input
        };
        if self.devices.contains_key(&input.id) {
            return Err(ServiceError::Conflict(format!(
                "device {} is registered already",
                input.id
            )));
        }
        if self.devices.len() >= MAX_DEVICES {
            return Err(ServiceError::Conflict(format!(
                "the registry holds {MAX_DEVICES} devices, its limit"
            )));
        }
        let dev = DeviceRecord {
            labels: input.labels,
            ..fresh_record(
                &input.id,
                input.public_key.to_lowercase(),
                input.device_type.unwrap_or_else(|| "unknown".into()),
                input.region.unwrap_or_default(),
                now,
            )
        };
        store.atomically(|s| {
            s.put_device(&dev)?;
            s.audit(&api_audit(
                s.caller(),
                now,
                action,
                Some(&dev.id),
                "ok",
                format!("key {} allowlisted", dev.public_key),
            ))
        })?;
        self.pending.forget(&dev.id);
        self.devices.insert(dev.id.clone(), dev.clone());
        Ok(dev)
    }

    /// `POST /enrollment-tokens`: a one-time token valid for `ttl`.
    pub(super) fn create_token(
        &self,
        store: &Store,
        ttl: Millis,
        now: Millis,
    ) -> Result<(String, Millis), ServiceError> {
        if store.open_tokens(now)? >= MAX_OPEN_TOKENS {
            return Err(ServiceError::Conflict(format!(
                "{MAX_OPEN_TOKENS} enrollment tokens are open; use or let some expire first"
            )));
        }
        let token = random_token(16)?;
        let expires = now.saturating_add(ttl);
        store.atomically(|s| {
            s.put_token(&token, expires)?;
            s.audit(&api_audit(
                s.caller(),
                now,
                "enrollment.token",
                None,
                "ok",
                format!("token valid for {}", format_duration(ttl)),
            ))
        })?;
        Ok((token, expires))
    }

    /// Admits a device's report (its signature already checked against the key it names):
    /// enrolls an unknown device that presents a valid unused token (or is allowlisted),
    /// refuses a known device whose key differs, ignores a report not newer than the last, and
    /// updates the record from the report (the device wins; disagreements are audited).
    pub(super) fn admit(
        &mut self,
        store: &Store,
        r: &DeviceReport,
        now: Millis,
    ) -> Result<Admission, ServiceError> {
        let key = r.public_key.to_hex();
        // One identity per device: its id is the hex of the key that signs its reports, on
        // this path as on the fabric, so a leaked enrollment token cannot bind someone else's
        // id to an attacker's key.
        if r.device_id != key {
            return Ok(Admission::KeyMismatch(format!(
                "device id {:?} is not the hex of the key that signed the report ({key}): a \
                 device's id is its key",
                r.device_id
            )));
        }
        let mut audit = AuditBatch::default();
        let existing = self.devices.get(&r.device_id).cloned();
        let use_token;
        let mut dev = match existing {
            Some(d) => {
                if d.public_key != key {
                    let detail = format!(
                        "device {} is enrolled with key {}, but the report is signed by {key}",
                        r.device_id, d.public_key
                    );
                    return Ok(Admission::KeyMismatch(detail));
                }
                if d.enrolled_at.is_none() {
                    audit.push(
                        now,
                        "device",
                        "enroll",
                        (Some(&d.id), None),
                        "ok",
                        "enrolled from the allowlist",
                    );
                }
                use_token = None;
                d
            }
            None => {
                let Some(token) = &r.enroll_token else {
                    self.pending.note(r, now);
                    return Err(ServiceError::Refused(format!(
                        "device {} is not enrolled: its key is not on the allowlist and the report carries no enrollment token; it is listed as pending until an operator accepts it (floe device accept {})",
                        r.device_id, r.device_id
                    )));
                };
                if self.devices.len() >= MAX_DEVICES {
                    return Err(ServiceError::Refused(format!(
                        "the registry holds {MAX_DEVICES} devices, its limit"
                    )));
                }
                audit.push(
                    now,
                    "device",
                    "enroll",
                    (Some(&r.device_id), None),
                    "ok",
                    "enrolled with a one-time token",
                );
                use_token = Some(token.clone());
                DeviceRecord {
                    arch: r.facts.arch.clone(),
                    ..fresh_record(
                        &r.device_id,
                        key.clone(),
                        r.facts.device_type.clone(),
                        r.facts.region.clone(),
                        now,
                    )
                }
            }
        };
        if dev.enrolled_at.is_some() && r.seq <= dev.last_seq {
            tracing::debug!(device = %dev.id, seq = r.seq, last = dev.last_seq, "stale report ignored");
            return Ok(Admission::Stale);
        }
        // The device is the source of truth about itself; where the registry said otherwise
        // (an operator's allowlist entry, or a stale record), the device wins and it is logged.
        let labels: BTreeMap<String, String> = r
            .facts
            .labels
            .iter()
            .map(|l| (l.key.clone(), l.value.clone()))
            .collect();
        let mut disagree = Vec::new();
        if dev.enrolled_at.is_some() || dev.device_type != "unknown" {
            if dev.device_type != r.facts.device_type {
                disagree.push(format!(
                    "type {:?} -> {:?}",
                    dev.device_type, r.facts.device_type
                ));
            }
            if !dev.region.is_empty() && dev.region != r.facts.region {
                disagree.push(format!("region {:?} -> {:?}", dev.region, r.facts.region));
            }
        }
        if !dev.labels.is_empty() && dev.labels != labels {
            disagree.push(format!("labels {:?} -> {:?}", dev.labels, labels));
        }
        let installed = r.active.as_ref().map(slot_record);
        if dev.enrolled_at.is_some() && dev.installed != installed {
            disagree.push(format!(
                "installed {} -> {}",
                dev.installed
                    .as_ref()
                    .map(|s| format!("{} r{}", s.name, s.release))
                    .unwrap_or_else(|| "nothing".into()),
                installed
                    .as_ref()
                    .map(|s| format!("{} r{}", s.name, s.release))
                    .unwrap_or_else(|| "nothing".into()),
            ));
        }
        if !disagree.is_empty() {
            audit.push(
                now,
                "device",
                "registry.update",
                (Some(&dev.id), None),
                "device wins",
                disagree.join("; "),
            );
        }
        // Not online until now: marked offline, or allowlisted and never heard from. Either
        // way the engines counted it offline (a deployment skips and queues such targets),
        // so they must hear that it is back.
        let was_offline = !Self::online(&dev);
        if dev.offline {
            audit.push(
                now,
                "device",
                "device.online",
                (Some(&dev.id), None),
                "online",
                "reporting again",
            );
        }
        dev.device_type = r.facts.device_type.clone();
        dev.arch = r.facts.arch.clone();
        dev.region = r.facts.region.clone();
        dev.labels = labels;
        dev.runtime_version = r.facts.runtime_version.clone();
        dev.installed = installed;
        dev.standby = r.standby.as_ref().map(slot_record);
        dev.last_known_good = r.last_known_good.as_ref().map(slot_record);
        dev.on_trial = r.on_trial;
        if let Some(h) = &r.health {
            dev.health = Some(health_record(h));
        }
        dev.applied = r.applied.as_ref().map(|a| AppliedRecord {
            generation: a.generation,
            action: a.action.to_string(),
            progress: a.progress.to_string(),
            detail: a.detail.clone(),
        });
        dev.last_seen = Some(now);
        dev.last_seq = r.seq;
        dev.offline = false;
        dev.enrolled_at.get_or_insert(now);
        let refused = store.atomically(|s| -> Result<bool, StoreError> {
            if let Some(token) = &use_token
                && !s.take_token(token, &dev.id, now)?
            {
                return Ok(true);
            }
            s.put_device(&dev)?;
            audit.write(s)?;
            Ok(false)
        })?;
        if refused {
            return Err(ServiceError::Refused(format!(
                "device {} is not enrolled: its enrollment token is unknown, used or expired",
                dev.id
            )));
        }
        self.devices.insert(dev.id.clone(), dev);
        Ok(Admission::Accepted { was_offline })
    }
}
