//! A fleet in Linux network namespaces: one hub namespace holding a bridge, and one namespace
//! per device joined to it by a veth pair, each link shaped in both directions: rate with
//! `tbf`, delay and loss with `netem`.
//!
//! Kernels without `sch_netem` (this machine's among them) get the rate limit and the loss, but
//! no delay: loss then comes from a classic-BPF filter on each veth end's ingress that picks
//! packets at random (`ld rand`) and redirects them to an interface that is down, where they
//! are dropped. Such links carry plain MTU-sized packets (`gso_max_segs 1`), so a lost packet
//! is one segment, as on a real link. No other qdisc here can hold a packet for a fixed time,
//! so the delay is not applied; [`NetnsFleet::delay_applied`] says so and runs print it.
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
    /// Interfaces carrying a loss filter on their ingress, as (namespace, interface).
    lossy: Vec<(String, String)>,
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
            lossy: Vec::new(),
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
    /// `netem` child of it. Kernels built without `sch_netem` keep the rate limit and get the
    /// loss from [`NetnsFleet::filter_loss`]; the missing delay is recorded
    /// ([`NetnsFleet::delay_applied`]) and printed rather than failing the run.
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
            if self.delay_applied && shape.delay_ms > 0 {
                println!(
                    "netem unavailable ({err:#}); links get their rate, and loss from a filter, \
                     but no {} ms delay",
                    shape.delay_ms
                );
            }
            self.delay_applied = shape.delay_ms == 0;
            if shape.loss_pct > 0.0 {
                // Kernels without cls_bpf, mirred or ifb get no loss either; like the missing
                // delay, that is printed rather than failing the run.
                if let Err(err) = self.filter_loss(ns, dev, shape.loss_pct) {
                    println!("loss filter unavailable ({err:#}); {dev} has no loss");
                }
            }
        }
        Ok(())
    }

    /// Drops `loss_pct` percent of the packets arriving on `dev` (so, called for both ends of a
    /// veth, of each direction): a classic-BPF filter on its ingress matches a packet when a
    /// random 32-bit number is above the threshold, and the match is redirected to `fdrop`, an
    /// interface of the same namespace that is never brought up.
    fn filter_loss(&mut self, ns: &str, dev: &str, loss_pct: f32) -> Result<()> {
        if !self.lossy.iter().any(|(n, _)| n == ns) {
            ip(&["-n", ns, "link", "add", "fdrop", "type", "ifb"])?;
        }
        // One segment per packet, so a loss is one segment as on a real link.
        ip(&["-n", ns, "link", "set", dev, "gso_max_segs", "1"])?;
        tc_in(ns, &["qdisc", "add", "dev", dev, "ingress"])?;
        let keep = 1.0 - f64::from(loss_pct.clamp(0.0, 100.0)) / 100.0;
        let threshold = (keep * f64::from(u32::MAX)) as u32;
        // ld rand (SKF_AD_OFF + SKF_AD_RANDOM); jgt threshold; ret match; ret no match.
        let program = format!("4,32 0 0 4294963256,37 0 1 {threshold},6 0 0 4294967295,6 0 0 0");
        tc_in(
            ns,
            &[
                "filter", "add", "dev", dev, "parent", "ffff:", "protocol", "all", "prio", "1",
                "bpf", "bytecode", &program, "action", "mirred", "egress", "redirect", "dev",
                "fdrop",
            ],
        )?;
        self.lossy.push((ns.to_string(), dev.to_string()));
        Ok(())
    }

    /// Whether delay was applied (false when the kernel lacks `sch_netem`).
    pub fn delay_applied(&self) -> bool {
        self.delay_applied
    }

    /// Whether loss comes from the harness's filters (netem missing) rather than netem.
    pub fn loss_filtered(&self) -> bool {
        !self.lossy.is_empty()
    }

    /// Packets the loss filters have dropped so far (0 when netem does the loss: it keeps no
    /// per-filter count).
    pub fn filtered_losses(&self) -> Result<u64> {
        let mut total = 0;
        for (ns, dev) in &self.lossy {
            let out = Command::new("ip")
                .args([
                    "netns", "exec", ns, "tc", "-s", "filter", "show", "dev", dev,
                ])
                .args(["ingress"])
                .output()
                .context("running tc -s filter show")?;
            let text = String::from_utf8_lossy(&out.stdout);
            // "Sent B bytes P pkt (dropped D, overlimits O requeues R)": mirred counts a packet
            // it could not hand to the down interface as an overlimit.
            for part in text.split("overlimits ").skip(1) {
                let n: String = part.chars().take_while(char::is_ascii_digit).collect();
                total += n.parse::<u64>().unwrap_or(0);
            }
        }
        Ok(total)
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
