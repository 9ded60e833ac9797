//! Enrollment requests: a device that reports, correctly signed, with neither a valid one-time
//! token nor an allowlist entry is refused as before, and listed here as pending until an
//! operator accepts it (`floe device accept ID`: its key goes on the allowlist and its next
//! report enrolls it) or rejects it (it is dropped from the list; a device that keeps
//! reporting appears again).
//!
//! The list is bounded ([`MAX_PENDING`]; when full, the request seen least recently makes
//! room) and held in memory only: noting a request writes nothing, so a flood of signed reports
//! from made-up keys costs a map update each, never a disk write. After a restart the list
//! fills again from the devices' next reports (every 30 s by default).

use floe_rollout::Millis;
use floe_wire::proto::DeviceReport;
use std::collections::HashMap;

/// Most enrollment requests held.
pub const MAX_PENDING: usize = 1000;

/// A device asking to join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingDevice {
    /// Its id: the hex of its key.
    pub id: String,
    /// Hardware type, as it reported.
    pub device_type: String,
    /// CPU architecture, as it reported.
    pub arch: String,
    /// Region, as it reported.
    pub region: String,
    /// floed's version, as it reported.
    pub runtime_version: String,
    /// When its first report of this spell was refused.
    pub first_seen: Millis,
    /// When its last report was refused.
    pub last_seen: Millis,
    /// How many of its reports were refused since `first_seen`.
    pub reports: u64,
}

/// The pending enrollment requests.
#[derive(Debug)]
pub(super) struct Pending {
    by_id: HashMap<String, PendingDevice>,
    cap: usize,
}

impl Pending {
    pub(super) fn new() -> Self {
        Pending::with_cap(MAX_PENDING)
    }

    fn with_cap(cap: usize) -> Self {
        Pending {
            by_id: HashMap::new(),
            cap: cap.max(1),
        }
    }

    /// Notes a refused report of an unregistered device (its signature already checked
    /// against the key its id names).
    pub(super) fn note(&mut self, r: &DeviceReport, now: Millis) {
        if let Some(p) = self.by_id.get_mut(&r.device_id) {
            p.last_seen = p.last_seen.max(now);
            p.reports = p.reports.saturating_add(1);
            p.device_type.clone_from(&r.facts.device_type);
            p.arch.clone_from(&r.facts.arch);
            p.region.clone_from(&r.facts.region);
            p.runtime_version.clone_from(&r.facts.runtime_version);
            return;
        }
        if self.by_id.len() >= self.cap
            && let Some(stalest) = self
                .by_id
                .values()
                .min_by_key(|p| (p.last_seen, p.id.clone()))
                .map(|p| p.id.clone())
        {
            self.by_id.remove(&stalest);
        }
        self.by_id.insert(
            r.device_id.clone(),
            PendingDevice {
                id: r.device_id.clone(),
                device_type: r.facts.device_type.clone(),
                arch: r.facts.arch.clone(),
                region: r.facts.region.clone(),
                runtime_version: r.facts.runtime_version.clone(),
                first_seen: now,
                last_seen: now,
                reports: 1,
            },
        );
    }

    /// Every request, oldest first.
    pub(super) fn list(&self) -> Vec<PendingDevice> {
        let mut all: Vec<PendingDevice> = self.by_id.values().cloned().collect();
        all.sort_by(|a, b| (a.first_seen, &a.id).cmp(&(b.first_seen, &b.id)));
        all
    }

    /// Takes `id`'s request off the list.
    pub(super) fn take(&mut self, id: &str) -> Option<PendingDevice> {
        self.by_id.remove(id)
    }

    /// Puts a request back (its acceptance failed).
    pub(super) fn put_back(&mut self, p: PendingDevice) {
        if self.by_id.len() < self.cap {
            self.by_id.insert(p.id.clone(), p);
        }
    }

    /// Drops `id`'s request if there is one (it was registered another way).
    pub(super) fn forget(&mut self, id: &str) {
        self.by_id.remove(id);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use floe_wire::proto::report::REPORT_SCHEMA;
    use floe_wire::proto::{Facts, PublicKeyBytes};

    fn report(id: &str, device_type: &str) -> DeviceReport {
        DeviceReport {
            schema: REPORT_SCHEMA,
            device_id: id.into(),
            public_key: PublicKeyBytes::from_hex(&"11".repeat(32)).unwrap(),
            seq: 1,
            facts: Facts {
                device_type: device_type.into(),
                arch: "aarch64".into(),
                region: "eu".into(),
                labels: Vec::new(),
                runtime_version: "0.1.0".into(),
            },
            enroll_token: None,
            active: None,
            standby: None,
            last_known_good: None,
            on_trial: false,
            applied: None,
            health: None,
        }
    }

    #[test]
    fn requests_are_counted_updated_and_the_stalest_makes_room() {
        let mut p = Pending::with_cap(2);
        p.note(&report("a", "rpi4"), 10);
        p.note(&report("b", "rpi4"), 20);
        p.note(&report("a", "rpi5"), 30);
        let a = p.list().into_iter().find(|d| d.id == "a").unwrap();
        assert_eq!((a.reports, a.first_seen, a.last_seen), (2, 10, 30));
        assert_eq!(a.device_type, "rpi5", "the device's latest facts win");
        // Full: b (last seen at 20) is the stalest and goes.
        p.note(&report("c", "jetson"), 40);
        let ids: Vec<String> = p.list().into_iter().map(|d| d.id).collect();
        assert_eq!(ids, ["a", "c"]);
        assert_eq!(p.take("a").unwrap().id, "a");
        assert!(p.take("a").is_none());
        p.forget("c");
        assert!(p.list().is_empty());
    }
}
