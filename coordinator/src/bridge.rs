//! The bridge between the service (store + rollout engines) and the fabric link.
//!
//! Why a separate task: the service decides and the link carries, and neither should wait on
//! the other. The bridge owns no state that matters after a crash: every round it asks the
//! service for the directives devices still have to apply (the outbox is computed from SQLite,
//! so a restarted coordinator posts exactly what it posted before) and hands them to the link;
//! it forwards every report the link admitted to the service; and it seeds each published
//! artifact into the fabric once per run, so devices can fetch chunks from the coordinator and
//! from each other.
//!
//! Shape (DESIGN.md "Async shape"): one task, a closed [`Event`] set, one biased select with
//! shutdown first. Reports come before the round timer so a burst of reports is never starved
//! by posting, and the report channel is bounded by the link (drop-and-count when full).

use std::collections::HashSet;
use std::time::Duration;

use floe_wire::proto::DeviceReport;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::link::Link;
use crate::service::ServiceHandle;

/// What the bridge waits for.
#[derive(Debug)]
enum Event {
    /// Stop.
    Shutdown,
    /// A report the link admitted (None: the link is gone).
    Report(Option<Box<DeviceReport>>),
    /// An artifact was published (false: the service is gone).
    Published(bool),
    /// Time to post the outbox again.
    Round,
}

/// Counters of one bridge run, returned when it stops (for logs and tests).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BridgeStats {
    /// Reports handed to the service.
    pub reports: u64,
    /// Reports the service refused (enrollment, stale, unknown device).
    pub refused: u64,
    /// Posts handed to the link.
    pub posts: u64,
    /// Artifacts seeded into the fabric.
    pub seeded: u64,
}

/// Runs the bridge until `shutdown` fires or the link's report channel closes.
///
/// `round` is how often the outbox is posted again: directives are desired state, and a device
/// that missed a post (offline, joined late) gets it on a later round.
pub async fn run(
    service: ServiceHandle,
    link: Link,
    mut reports: mpsc::Receiver<DeviceReport>,
    shutdown: CancellationToken,
    round: Duration,
) -> BridgeStats {
    let mut stats = BridgeStats::default();
    let mut seeded: HashSet<(String, u64)> = HashSet::new();
    let mut posted: HashSet<String> = HashSet::new();
    let mut published: watch::Receiver<u64> = service.published();
    let mut ticker = tokio::time::interval(round);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reports_open = true;
    let mut published_open = true;
    seed_new(&service, &link, &mut seeded, &mut stats).await;
    loop {
        let event = tokio::select! {
            biased;
            _ = shutdown.cancelled() => Event::Shutdown,
            r = reports.recv(), if reports_open => Event::Report(r.map(Box::new)),
            c = published.changed(), if published_open => Event::Published(c.is_ok()),
            _ = ticker.tick() => Event::Round,
        };
        match event {
            Event::Shutdown => break,
            Event::Report(None) => {
                reports_open = false;
                tracing::warn!("the fabric link stopped delivering reports");
            }
            Event::Report(Some(report)) => {
                stats.reports += 1;
                let device = report.device_id.clone();
                if let Err(e) = service.device_report(*report).await {
                    stats.refused += 1;
                    tracing::debug!(device = %device, error = %e, "report refused");
                }
            }
            Event::Published(false) => published_open = false,
            Event::Published(true) => {
                seed_new(&service, &link, &mut seeded, &mut stats).await;
            }
            Event::Round => {
                post_outbox(&service, &link, &mut posted, &mut stats).await;
            }
        }
    }
    stats
}

/// Seeds every published artifact not seeded yet in this run.
async fn seed_new(
    service: &ServiceHandle,
    link: &Link,
    seeded: &mut HashSet<(String, u64)>,
    stats: &mut BridgeStats,
) {
    let blobs = match service.artifacts().await {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, "listing artifacts to seed failed");
            return;
        }
    };
    for blob in blobs {
        let key = (blob.name.clone(), blob.release);
        if seeded.contains(&key) {
            continue;
        }
        match link
            .seed(&blob.manifest, blob.payload, blob.chunk_size)
            .await
        {
            Ok(id) => {
                tracing::info!(name = %blob.name, release = blob.release, id = %hex::encode(id), "artifact seeded");
                seeded.insert(key);
                stats.seeded += 1;
            }
            Err(e) => {
                tracing::warn!(name = %blob.name, release = blob.release, error = %e, "seeding failed");
            }
        }
    }
}

/// Posts the outbox and withdraws the posts of devices that no longer need one.
async fn post_outbox(
    service: &ServiceHandle,
    link: &Link,
    posted: &mut HashSet<String>,
    stats: &mut BridgeStats,
) {
    let outbox = match service.outbox().await {
        Ok(o) => o,
        Err(e) => {
            tracing::warn!(error = %e, "reading the outbox failed");
            return;
        }
    };
    let mut now_posted = HashSet::with_capacity(outbox.len());
    for out in outbox {
        now_posted.insert(out.device_id.clone());
        match link.post(&out.device_id, out.generation, out.post).await {
            Ok(()) => stats.posts += 1,
            Err(e) => {
                tracing::warn!(device = %out.device_id, generation = out.generation, error = %e, "posting failed");
            }
        }
    }
    for device in posted.difference(&now_posted) {
        if let Err(e) = link.withdraw(device).await {
            tracing::debug!(device = %device, error = %e, "withdraw failed");
        }
    }
    *posted = now_posted;
}
