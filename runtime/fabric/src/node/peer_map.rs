//! What the downloads know of each peer's chunk map, and when to ask it again.
//!
//! Why it is apart: a source's map rides along with every chunk it sends, and other peers are
//! asked (`Have`) every [`crate::FabricConfig::have_refresh`], peers that do not serve the
//! artifact twenty times less often, and a peer whose map is complete never again. Polling
//! every peer several times a second, a stream each, used to cost more CPU than moving the
//! chunks. The rule is pure (time comes in as an argument) and tested here on its own.

use std::time::{Duration, Instant};

/// When a peer's chunk map was last asked for (or came with a chunk), and what it said.
#[derive(Debug, Clone, Copy)]
pub(super) struct PeerMap {
    pub(super) at: Instant,
    /// A `Have` request to it is outstanding.
    pub(super) outstanding: bool,
    /// It answered that it does not serve this artifact (a central-pull device, or one that
    /// has not started it): asked again only every [`NOT_SERVING_REFRESH`] refreshes.
    pub(super) not_serving: bool,
    /// Its map had every chunk; a complete map cannot grow, so it is not asked again.
    complete: bool,
}

/// How many `have_refresh` periods a peer that does not serve an artifact waits to be asked
/// again.
const NOT_SERVING_REFRESH: u32 = 20;

impl PeerMap {
    pub(super) fn new(now: Instant) -> Self {
        Self {
            at: now,
            outstanding: false,
            not_serving: false,
            complete: false,
        }
    }

    /// Whether to ask again now.
    pub(super) fn due(&self, now: Instant, refresh: Duration) -> bool {
        if self.outstanding || self.complete {
            return false;
        }
        let wait = if self.not_serving {
            refresh * NOT_SERVING_REFRESH
        } else {
            refresh
        };
        now.duration_since(self.at) >= wait
    }

    /// A map arrived (answer to `Have`, or with a chunk).
    pub(super) fn learned(&mut self, now: Instant, bits: &[bool]) {
        self.at = now;
        self.not_serving = false;
        self.complete = bits.iter().all(|b| *b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_map_is_asked_for_again_by_what_it_last_said() {
        let t0 = Instant::now();
        let refresh = Duration::from_millis(100);
        let mut map = PeerMap::new(t0);
        assert!(!map.due(t0 + refresh / 2, refresh));
        assert!(map.due(t0 + refresh, refresh));
        // An outstanding request is never doubled.
        map.outstanding = true;
        assert!(!map.due(t0 + refresh * 100, refresh));
        map.outstanding = false;
        // A map with gaps (or one that came with a chunk) restarts the wait.
        map.learned(t0 + refresh, &[true, false]);
        assert!(!map.due(t0 + refresh + refresh / 2, refresh));
        assert!(map.due(t0 + refresh * 2, refresh));
        // A peer that does not serve the artifact is asked twenty times less often.
        map.not_serving = true;
        assert!(!map.due(t0 + refresh * 20, refresh));
        assert!(map.due(t0 + refresh * 21, refresh));
        // Serving again clears it; a complete map is never asked for again.
        map.learned(t0 + refresh * 21, &[true, true]);
        assert!(!map.not_serving);
        assert!(!map.due(t0 + refresh * 10_000, refresh));
    }
}
