//! The crash-point hook used by the crash tests.
//!
//! With the `crash-points` feature, `FLOE_CRASH_AT=<step>` makes the process kill itself with
//! SIGKILL when it reaches that step, which is exactly what a power cut or the OOM killer does
//! to the daemon: no destructors, no flushing. Without the feature every call compiles to
//! nothing, so release builds carry no trace of it.

/// Kills the process with SIGKILL if `FLOE_CRASH_AT` names `step` (only with the
/// `crash-points` feature; a no-op otherwise).
#[inline]
pub fn crash_point(step: &str) {
    #[cfg(feature = "crash-points")]
    {
        if std::env::var("FLOE_CRASH_AT").is_ok_and(|want| want == step) {
            tracing::warn!(step, "crash point reached, killing the process");
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
        }
    }
    #[cfg(not(feature = "crash-points"))]
    let _ = step;
}
