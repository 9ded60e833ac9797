//! A fleet in Linux network namespaces: one hub namespace holding a bridge, and one namespace
//! per device joined to it by a veth pair, each link shaped with `tc netem` (rate, delay, loss)
//! in both directions.
//!
//! Why namespaces: loopback has no bandwidth limit or delay, so it cannot show what peer-to-peer
//! distribution buys on a slow uplink. Namespaces give every device its own shaped link on one
//! machine, with traffic that never leaves it. Creating them needs root and `ip`; without them
//! [`NetnsFleet::create`] returns a printed reason to skip. Every namespace carries a per-run
//! prefix and is deleted when the [`NetnsFleet`] drops, even when a test fails.

use anyhow::{Context, Result, bail};
use std::process::Command;

/// The shape of every device's link.
#[derive(Debug, Clone, Copy)]
pub struct LinkShape {
    /// Rate in Mbit/s, each direction.
    pub mbit: u32,
    /// One-way delay in ms added in each direction.
    pub delay_ms: u32,
    /// Packet loss in percent, each direction.
    pub loss_pct: f32,
}

/// Namespaces made for one run.
#[derive(Debug)]
pub struct NetnsFleet {
    prefix: String,
    hub: String,
    devices: Vec<String>,
    delay_applied: bool,
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn tc_in(ns: &str, args: &[&str]) -> Result<()> {
    let mut full = vec!["netns", "exec", ns, "tc"];
    full.extend_from_slice(args);
    ip(&full)
}

/// The effective uid, read from `/proc/self/status` (the second field of `Uid:`).
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Why namespaces cannot be made here, if they cannot.
pub fn unavailable() -> Option<String> {
    if effective_uid() != Some(0) {
        return Some("network-namespace tests need root".into());
    }
    let has = |bin: &str| Command::new(bin).arg("-V").output().is_ok();
    if !has("ip") {
        return Some("the `ip` command (iproute2) is missing".into());
    }
    if !has("tc") {
        return Some("the `tc` command (iproute2) is missing".into());
    }
    None
}

impl NetnsFleet {
    /// Creates `n` device namespaces (addresses 10.<net>.0.<i+1>/16) shaped as `shape`. Returns
    /// `Err` with the reason when namespaces are unavailable or setup fails; whatever was made is
    /// removed again.
    pub fn create(n: usize, shape: LinkShape) -> Result<NetnsFleet> {
        if let Some(reason) = unavailable() {
            bail!(reason);
        }
        if n == 0 || n > 250 {
            bail!("a netns fleet has 1 to 250 devices, not {n}");
        }
        let tag = std::process::id() % 100_000;
        let prefix = format!("floe{tag}");
        let mut fleet = NetnsFleet {
            hub: format!("{prefix}-hub"),
            prefix,
            devices: Vec::new(),
            delay_applied: true,
        };
        // A private /16 per run, derived from the pid, to keep concurrent runs apart.
        let net = 64 + (tag % 64);
        ip(&["netns", "add", &fleet.hub])?;
        ip(&["-n", &fleet.hub, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &fleet.hub, "link", "set", "br0", "up"])?;
        ip(&["-n", &fleet.hub, "link", "set", "lo", "up"])?;
        for i in 0..n {
            let ns = format!("{}-{i}", fleet.prefix);
            ip(&["netns", "add", &ns])?;
            fleet.devices.push(ns.clone());
            let dev_if = format!("f{tag}d{i}");
            let hub_if = format!("f{tag}h{i}");
            ip(&[
                "link", "add", &dev_if, "netns", &ns, "type", "veth", "peer", "name", &hub_if,
                "netns", &fleet.hub,
            ])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("10.{net}.0.{}/16", i + 1),
                "dev",
                &dev_if,
            ])?;
            ip(&["-n", &ns, "link", "set", &dev_if, "up"])?;
            ip(&["-n", &fleet.hub, "link", "set", &hub_if, "master", "br0"])?;
            ip(&["-n", &fleet.hub, "link", "set", &hub_if, "up"])?;
            // Upload: the device's egress. Download: the hub side's egress towards the device.
            let hub = fleet.hub.clone();
            for (where_ns, dev) in [(&ns, &dev_if), (&hub, &hub_if)] {
                fleet.shape_link(where_ns, dev, shape)?;
            }
        }
        Ok(fleet)
    }

    /// Rate with a token bucket (`tbf`, 64 KiB burst, 50 ms queue); delay and loss with a
    /// `netem` child of it. Kernels built without `sch_netem` keep the rate limit only; that is
    /// recorded ([`NetnsFleet::delay_applied`]) and printed rather than failing the run.
    fn shape_link(&mut self, ns: &str, dev: &str, shape: LinkShape) -> Result<()> {
        let rate = format!("{}mbit", shape.mbit);
        tc_in(
            ns,
            &[
                "qdisc", "add", "dev", dev, "root", "handle", "1:", "tbf", "rate", &rate, "burst",
                "64kb", "latency", "50ms",
            ],
        )?;
        if shape.delay_ms == 0 && shape.loss_pct == 0.0 {
            return Ok(());
        }
        let delay = format!("{}ms", shape.delay_ms);
        let loss = format!("{}%", shape.loss_pct);
        let netem = tc_in(
            ns,
            &[
                "qdisc", "add", "dev", dev, "parent", "1:1", "handle", "10:", "netem", "delay",
                &delay, "loss", &loss, "limit", "10000",
            ],
        );
        if let Err(err) = netem {
            if self.delay_applied {
                println!(
                    "netem unavailable ({err:#}); links are rate-limited without delay or loss"
                );
            }
            self.delay_applied = false;
        }
        Ok(())
    }

    /// Whether delay and loss were applied (false when the kernel lacks `sch_netem`).
    pub fn delay_applied(&self) -> bool {
        self.delay_applied
    }

    /// The namespace names of the devices.
    pub fn devices(&self) -> &[String] {
        &self.devices
    }

    /// Device `i`'s address.
    pub fn addr(&self, i: usize) -> String {
        let tag = std::process::id() % 100_000;
        format!("10.{}.0.{}", 64 + (tag % 64), i + 1)
    }

    /// Bytes each device has sent and received so far, read from the hub's side of its veth
    /// (the hub receives what the device uploads and transmits what it downloads).
    pub fn link_bytes(&self) -> Result<Vec<(u64, u64)>> {
        let out = Command::new("ip")
            .args(["-n", &self.hub, "-s", "-j", "link", "show"])
            .output()
            .context("running ip -s link")?;
        if !out.status.success() {
            bail!(
                "ip -s link failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let links: serde_json::Value =
            serde_json::from_slice(&out.stdout).context("parsing ip -s -j link")?;
        let tag = std::process::id() % 100_000;
        let counter = |i: usize, dir: &str| -> u64 {
            let name = format!("f{tag}h{i}");
            links
                .as_array()
                .and_then(|a| a.iter().find(|l| l["ifname"] == name.as_str()))
                .and_then(|l| l["stats64"][dir]["bytes"].as_u64())
                .unwrap_or(0)
        };
        Ok((0..self.devices.len())
            .map(|i| (counter(i, "rx"), counter(i, "tx")))
            .collect())
    }

    /// The per-run prefix of every namespace name.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

impl Drop for NetnsFleet {
    fn drop(&mut self) {
        // Deleting a namespace removes its end of every veth pair, and with it the other end.
        for ns in self.devices.iter().chain(std::iter::once(&self.hub)) {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}
