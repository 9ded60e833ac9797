//! The queries the REST layer answers from committed data alone, without the actor: they take
//! any [`Store`], the actor's own or a read-only connection of a [`crate::store::ReadPool`]
//! (see [`super::ServiceHandle::read`]), and the flows part answers its own calls with them, so
//! both paths give the same answer.

use super::ServiceError;
use crate::contract::{FlowState, GroupHealth, HealthGroups};
use crate::store::{AuditFilter, AuditRecord, DeviceRecord, FlowRecord, Store};

/// A flow by id.
pub fn flow(store: &Store, id: &str) -> Result<FlowRecord, ServiceError> {
    store.flow(id)?.ok_or_else(|| ServiceError::NotFound {
        what: "flow",
        id: id.to_string(),
    })
}

/// Flows matching a state (archived hidden unless asked) and a tag, by lineage and version.
pub fn flows(
    store: &Store,
    state: Option<FlowState>,
    tag: Option<&str>,
) -> Result<Vec<FlowRecord>, ServiceError> {
    Ok(store
        .flows()?
        .into_iter()
        .filter(|f| match state {
            Some(s) => f.state == s,
            None => f.state != FlowState::Archived,
        })
        .filter(|f| tag.is_none_or(|t| f.tags.iter().any(|x| x == t)))
        .collect())
}

/// Audit lines matching `filter`, newest first, each with its log position (the cursor).
pub fn audit(store: &Store, filter: &AuditFilter) -> Result<Vec<(u64, AuditRecord)>, ServiceError> {
    Ok(store.audit_page(filter)?)
}

/// The most rollup rows one health answer reads (a day of 1-minute windows for 138 groups).
pub const MAX_ROLLUP_ROWS: usize = 200_000;

/// The fleet's health per device type and per type × region over the windows that started in
/// `[from_ms, to_ms)`, optionally of one device type.
pub fn group_health(
    store: &Store,
    from_ms: u64,
    to_ms: u64,
    window_ms: u64,
    device_type: Option<&str>,
) -> Result<HealthGroups, ServiceError> {
    use floe_rollout::rollup::{Metric, Rollup, summarize};
    use std::collections::BTreeMap;
    let rows = store.rollups(from_ms, to_ms, MAX_ROLLUP_ROWS)?;
    let truncated = rows.len() >= MAX_ROLLUP_ROWS;
    let to_ms = if truncated {
        rows.last().map_or(to_ms, |r| r.start_ms + r.window_ms)
    } else {
        to_ms
    };
    // (type, region or None) → window start → merged rollup.
    let mut groups: BTreeMap<(String, Option<String>), BTreeMap<u64, Rollup>> = BTreeMap::new();
    for row in rows
        .into_iter()
        .filter(|r| device_type.is_none_or(|t| t == r.device_type))
    {
        groups
            .entry((row.device_type.clone(), None))
            .or_default()
            .entry(row.start_ms)
            .or_default()
            .merge(&row.rollup);
        groups
            .entry((row.device_type, Some(row.region)))
            .or_default()
            .insert(row.start_ms, row.rollup);
    }
    let groups = groups
        .into_iter()
        .map(|((device_type, region), windows)| {
            let windows: Vec<(u64, Rollup)> = windows.into_iter().collect();
            let mut total = Rollup::default();
            for (_, r) in &windows {
                total.merge(r);
            }
            GroupHealth {
                device_type,
                region,
                windows: windows.len() as u64,
                reports: total.reports,
                healthy: total.healthy,
                degraded: total.degraded,
                unhealthy: total.unhealthy,
                error_rate: summarize(&windows, Metric::ErrorRate),
                p95_ms: summarize(&windows, Metric::P95Ms),
                memory_mb: summarize(&windows, Metric::MemoryMb),
            }
        })
        .collect();
    Ok(HealthGroups {
        from_ms,
        to_ms,
        window_ms,
        groups,
        truncated,
    })
}

/// Which devices a page holds.
#[derive(Debug, Clone, Default)]
pub struct DeviceFilter {
    /// Only this region.
    pub region: Option<String>,
    /// Only this device type.
    pub device_type: Option<String>,
    /// Only devices with this label.
    pub label: Option<(String, String)>,
    /// Only online (true) or offline (false) devices.
    pub online: Option<bool>,
}

/// Whether a stored device counts as online (the registry's rule).
pub fn online(d: &DeviceRecord) -> bool {
    super::registry::Registry::online(d)
}

/// Up to `limit` devices after `after` (by id) that match `filter`, each with its current
/// directive generation, and whether another matching device follows.
pub fn devices_page(
    store: &Store,
    filter: &DeviceFilter,
    after: Option<&str>,
    limit: usize,
) -> Result<(Vec<(DeviceRecord, u64)>, bool), ServiceError> {
    let mut page = Vec::with_capacity(limit.min(1024));
    let mut more = false;
    store.scan_devices(after, |d, generation| {
        let matches = filter.region.as_ref().is_none_or(|r| *r == d.region)
            && filter
                .device_type
                .as_ref()
                .is_none_or(|t| *t == d.device_type)
            && filter
                .label
                .as_ref()
                .is_none_or(|(k, v)| d.labels.get(k) == Some(v))
            && filter.online.is_none_or(|o| online(&d) == o);
        if !matches {
            return true;
        }
        if page.len() == limit {
            more = true;
            return false;
        }
        page.push((d, generation));
        true
    })?;
    Ok((page, more))
}

/// One device with its current directive generation.
pub fn device(store: &Store, id: &str) -> Result<(DeviceRecord, u64), ServiceError> {
    store
        .device_with_generation(id)?
        .ok_or_else(|| ServiceError::NotFound {
            what: "device",
            id: id.to_string(),
        })
}
