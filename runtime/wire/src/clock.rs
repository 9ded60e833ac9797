//! The wall clock, in the two units Floe's records use.
//!
//! Deterministic cores (the rollout engine, the download scheduler, the install decision) take
//! time as an input; this module is where services and binaries read it. A clock set before
//! 1970 reads as 0 rather than failing, and a value past `u64` saturates, so no caller has to
//! handle an error that cannot matter and nothing wraps.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Whole seconds since the Unix epoch (what signed directives and manifests carry).
pub fn unix_secs() -> u64 {
    unix_ms() / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_and_milliseconds_agree_and_are_after_2020() {
        let ms = unix_ms();
        let s = unix_secs();
        assert!(s >= 1_577_836_800, "{s}");
        assert!(s.abs_diff(ms / 1000) <= 1, "{s} vs {ms}");
    }
}
