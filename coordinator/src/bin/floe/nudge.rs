//! What tells `floe deploy status --watch` to refresh: the coordinator's event stream for the
//! deployment (`GET /api/v1/events?deployment=ID`), read on a thread of its own. Each event
//! nudges the watch to fetch the deployment at once; with no event it still refreshes every
//! [`SAFETY_REFRESH`] (soak timers and phases change without events, and the stream may have
//! started after a change). The stream is opened again when the server ends it (at its
//! request timeout) after the last event seen; when it cannot be opened or brings nothing
//! several times in a row (an older coordinator without it, a restart), the watch falls back
//! to polling at its interval.

use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::time::Duration;

use floe_coordinator::client::Client;

/// Longest wait between two refreshes while the stream is up.
pub(crate) const SAFETY_REFRESH: Duration = Duration::from_secs(2);

/// Consecutive stream openings that failed or brought nothing before the watch polls instead.
const MAX_FAILED_OPENS: u32 = 3;

/// How long a stream must have stayed open to count as working though it brought nothing.
const LIVED: Duration = Duration::from_secs(10);

/// Follows the stream, nudging `tx` on each event. The server ends a stream at its request
/// timeout (60 s by default): the stream is opened again after the last event seen, so
/// nothing is missed. Gives up (the watch then polls) after [`MAX_FAILED_OPENS`] openings in a
/// row that failed or brought no event, or when the watch is gone.
fn follow(client: &Client, id: &str, tx: &SyncSender<()>) {
    let mut last: Option<u64> = None;
    let mut failed = 0;
    while failed < MAX_FAILED_OPENS {
        let stream = match client.events(Some(id), &[], last) {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "no event stream");
                failed += 1;
                continue;
            }
        };
        let opened = std::time::Instant::now();
        let mut got = false;
        for event in stream {
            let Ok(event) = event else { break };
            got = true;
            last = Some(event.id);
            match tx.try_send(()) {
                // Full: a refresh is already due.
                Ok(()) | Err(TrySendError::Full(())) => {}
                Err(TrySendError::Disconnected(())) => return,
            }
        }
        // A stream that brought events, or stayed open a while (a quiet soak), was fine.
        failed = if got || opened.elapsed() > LIVED {
            0
        } else {
            failed + 1
        };
    }
    tracing::debug!("the event stream is gone; polling");
}

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
            .spawn(move || follow(&client, &id, &tx));
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
