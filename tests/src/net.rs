//! Loopback ports for the end-to-end tests.
//!
//! Every harness that starts a server (Mosquitto, `floe serve`, a device's HTTP endpoint) asks
//! for a port here, so there is one way to pick one and one way to wait until a process listens
//! on it, instead of a copy in each test file.

use anyhow::{Result, bail};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// A loopback port that was free a moment ago.
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// Waits until something accepts TCP connections on a loopback port.
pub fn wait_for_port(port: u16, within: Duration) -> Result<()> {
    let until = Instant::now() + within;
    loop {
        if TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return Ok(());
        }
        if Instant::now() >= until {
            bail!("nothing listens on 127.0.0.1:{port} after {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
