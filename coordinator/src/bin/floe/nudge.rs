//! What tells `floe deploy status --watch` to refresh: the coordinator's event stream for the
//! deployment (`GET /api/v1/events?deployment=ID`), read on a thread of its own. Each event
//! nudges the watch to fetch the deployment at once; with no event it still refreshes every
//! [`SAFETY_REFRESH`] (soak timers and phases change without events, and the stream may have
//! started after a change). When the stream cannot be opened or ends (an older coordinator
//! without it, a restart, a dropped slow reader), the watch falls back to polling at its
//! interval.

use std::sync::mpsc::{Receiver, RecvTimeoutError, sync_channel};
use std::time::Duration;

use floe_coordinator::client::Client;

/// Longest wait between two refreshes while the stream is up.
pub(crate) const SAFETY_REFRESH: Duration = Duration::from_secs(2);

/// The receiving end of the nudges.
#[derive(Debug)]
pub(crate) struct Nudges {
    /// One pending nudge at most (a bounded channel of one: more events before the watch
    /// refreshes need no second refresh).
    rx: Receiver<()>,
}

impl Nudges {
    /// Starts reading the stream of deployment `id`'s events on a thread.
    pub(crate) fn start(client: &Client, id: &str) -> Nudges {
        let (tx, rx) = sync_channel::<()>(1);
        let client = client.clone();
        let id = id.to_string();
        let spawned = std::thread::Builder::new()
            .name("floe-watch-events".into())
            .spawn(move || {
                let stream = match client.events(Some(&id), &[], None) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::debug!(error = %e, "no event stream; polling");
                        return;
                    }
                };
                for event in stream {
                    if event.is_err() {
                        break;
                    }
                    // Full: a refresh is already due.
                    let _ = tx.try_send(());
                }
                tracing::debug!("the event stream ended; polling");
            });
        if let Err(e) = spawned {
            tracing::debug!(error = %e, "no thread for the event stream; polling");
        }
        Nudges { rx }
    }

    /// Waits for the next refresh: an event, or [`SAFETY_REFRESH`] (at least `interval`)
    /// while the stream is up; `interval` once it is gone.
    pub(crate) fn wait(&self, interval: Duration) {
        match self.rx.recv_timeout(SAFETY_REFRESH.max(interval)) {
            Ok(()) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => std::thread::sleep(interval),
        }
    }
}
