//! `floe serve` under systemd (`systemd/floe.service`: `Type=notify`, `WatchdogSec=`).
//!
//! [`started`] is called once the coordinator is fully up (database open, fabric listening,
//! API bound): it sends `READY=1`, then, when systemd asked for a watchdog, `WATCHDOG=1` at half
//! the watchdog period, but only after the service actor answered a no-op job. A coordinator
//! whose actor is wedged therefore stops pinging and systemd restarts it; one that merely has
//! a busy HTTP side keeps pinging. At shutdown it sends `STOPPING=1`. Outside systemd
//! (`NOTIFY_SOCKET` unset) every notification is a no-op.

use floe_coordinator::service::ServiceHandle;
use sd_notify::NotifyState;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Sends `READY=1` and starts the watchdog task; it ends, sending `STOPPING=1`, when
/// `shutdown` is cancelled. Must be called inside the Tokio runtime.
pub(crate) fn started(service: ServiceHandle, shutdown: CancellationToken) {
    if let Err(e) = sd_notify::notify(&[NotifyState::Ready]) {
        tracing::warn!(error = %e, "could not notify systemd that floe serve is ready");
    }
    let period = sd_notify::watchdog_enabled();
    tokio::spawn(async move {
        // Dropped when shutdown begins, or with the runtime if that comes first.
        let _stopping = Stopping;
        if let Some(period) = period {
            watchdog(&service, &shutdown, period).await;
        } else {
            shutdown.cancelled().await;
        }
    });
}

/// Sends `STOPPING=1` when dropped.
#[derive(Debug)]
struct Stopping;

impl Drop for Stopping {
    fn drop(&mut self) {
        let _ = sd_notify::notify(&[NotifyState::Stopping]);
    }
}

/// Pings systemd every `period / 2` while the service actor answers within that time.
async fn watchdog(service: &ServiceHandle, shutdown: &CancellationToken, period: Duration) {
    let every = (period / 2).max(Duration::from_millis(10));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let probe = tokio::time::timeout(every, service.call(|_, _| Ok(())));
        let answer = tokio::select! {
            () = shutdown.cancelled() => return,
            answer = probe => answer,
        };
        match answer {
            Ok(Ok(())) => {
                if let Err(e) = sd_notify::notify(&[NotifyState::Watchdog]) {
                    tracing::warn!(error = %e, "watchdog ping failed");
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "service actor gone; no watchdog ping"),
            Err(_) => tracing::warn!(
                waited = ?every,
                "service actor did not answer; no watchdog ping"
            ),
        }
    }
}
