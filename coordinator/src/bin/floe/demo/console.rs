//! `floe demo --console`: after the two deployments, the demo fleet and its coordinator keep
//! running so the operator console (served at `/` by `floe serve`) can be tried on them; the
//! demo prints the console's URL and the API token to sign in with, and runs until Ctrl-C.
//!
//! The token is printed on purpose: the demo's coordinator lives in a temporary directory
//! that is removed when the demo stops, on loopback only, and the operator at this terminal
//! needs the token to sign in.

use super::{ChildGuard, INTERRUPTED, TOKEN_FILE};
use anyhow::{Context, Result};
use floe_coordinator::client::Client;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Prints where the console is and waits for Ctrl-C (or SIGTERM), checking every second
/// that the coordinator still runs.
pub(super) fn hold(client: &Client, server_data: &Path, server: &mut ChildGuard) -> Result<()> {
    let token = std::fs::read_to_string(server_data.join(TOKEN_FILE))
        .with_context(|| format!("reading {}", server_data.join(TOKEN_FILE).display()))?;
    outln!();
    outln!("console: {}/", client.server());
    outln!("token:   {}", token.trim());
    outln!("(the fleet and the coordinator keep running; Ctrl-C stops them)");
    let mut checked = Instant::now();
    while !INTERRUPTED.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(200));
        if checked.elapsed() >= Duration::from_secs(1) {
            server.check_running()?;
            checked = Instant::now();
        }
    }
    // Stopping is what was asked for here, not a failure.
    Ok(())
}
