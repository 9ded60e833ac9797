//! `floe device …` (the registry: list, show, maintenance and quarantine flags, the enrollment
//! allowlist, values of flow variables) and `floe enroll-token create` (one-time enrollment tokens).

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use floe_coordinator::client::{
    Device, DeviceFilter, DeviceInput, DevicePage, EnrollToken, PendingDeviceList, Slot,
};

use crate::config::{Conn, call, client, fields, key_value, on_off, or_dash, print_raw, table};

/// Devices asked for per page by `device list` (it follows the cursors to the end).
const PAGE: usize = 1000;

/// `floe device`.
#[derive(Debug, Args)]
pub(crate) struct DeviceArgs {
    #[command(flatten)]
    conn: Conn,
    #[command(subcommand)]
    command: DeviceCommand,
}

#[derive(Debug, Subcommand)]
enum DeviceCommand {
    /// List devices.
    List {
        /// Only this region.
        #[arg(long)]
        region: Option<String>,
        /// Only this device type.
        #[arg(long = "type")]
        device_type: Option<String>,
        /// Only devices with this label k=v (repeatable).
        #[arg(long = "label", value_name = "K=V", value_parser = key_value)]
        labels: Vec<(String, String)>,
        /// Only online (true) or offline (false) devices.
        #[arg(long)]
        online: Option<bool>,
    },
    /// The fleet's health per device type and region over a recent window (reports of
    /// normal operation only), from the coordinator's health rollups.
    Health {
        /// How far back (default 24h).
        #[arg(long)]
        window: Option<String>,
        /// Only this device type.
        #[arg(long = "type")]
        device_type: Option<String>,
    },
    /// Show one device.
    Get {
        /// The device id.
        id: String,
    },
    /// Set a device's maintenance or quarantine flag and its canary facts.
    Set {
        /// The device id.
        id: String,
        /// on: the device is left out of rollouts.
        #[arg(long, value_parser = on_off, value_name = "on|off")]
        maintenance: Option<bool>,
        /// on: the device is quarantined (never targeted).
        #[arg(long, value_parser = on_off, value_name = "on|off")]
        quarantine: Option<bool>,
        /// Canary facts.
        #[command(flatten)]
        canary: crate::device_canary::CanaryFactArgs,
    },
    /// A device's own values of flow variables (see `floe group vars` for groups).
    #[command(subcommand)]
    Vars(crate::vars::DeviceVarsCommand),
    /// Devices that reported without an enrollment token or an allowlist entry.
    Pending,
    /// Accept a pending device: its key goes on the allowlist; its next report enrolls it.
    Accept {
        /// The device id (the hex of its key, as `device pending` lists it).
        id: String,
    },
    /// Reject a pending device's request.
    Reject {
        /// The device id.
        id: String,
    },
    /// Add a device's public key to the enrollment allowlist.
    Allow {
        /// The device id.
        id: String,
        /// The device's ed25519 public key, hex.
        #[arg(long)]
        key: String,
        /// Device type.
        #[arg(long = "type")]
        device_type: Option<String>,
        /// Region.
        #[arg(long)]
        region: Option<String>,
        /// A label k=v (repeatable).
        #[arg(long = "label", value_name = "K=V", value_parser = key_value)]
        labels: Vec<(String, String)>,
    },
}

/// `floe enroll-token`.
#[derive(Debug, Args)]
pub(crate) struct EnrollTokenArgs {
    #[command(flatten)]
    conn: Conn,
    #[command(subcommand)]
    command: EnrollTokenCommand,
}

#[derive(Debug, Subcommand)]
enum EnrollTokenCommand {
    /// Create a one-time token a device presents on its first report.
    Create {
        /// How long the token is valid (e.g. 1h, 30m).
        #[arg(long)]
        ttl: Option<String>,
        /// Print a join string instead of the bare token: the coordinator's REST and fabric
        /// addresses, the device trust store, the token and its expiry, and the pin of the
        /// coordinator's TLS certificate when it serves https, for `floed join`.
        #[arg(long)]
        join: bool,
        /// With --join: write the join string to this file (mode 0600) instead of stdout.
        #[arg(long, value_name = "FILE", requires = "join")]
        out: Option<std::path::PathBuf>,
        /// With --join: a REST address devices reach the coordinator at (repeatable; default
        /// the --server this command uses); https:// when the coordinator serves TLS.
        #[arg(long = "coordinator-url", value_name = "URL", requires = "join")]
        coordinator_urls: Vec<String>,
        /// With --join: a fabric address devices bootstrap to, ending in /p2p/<peer id>
        /// (repeatable; default the coordinator's own, loopback ones left out when it has
        /// others).
        #[arg(long = "fabric-addr", value_name = "MULTIADDR", requires = "join")]
        fabric_addrs: Vec<String>,
    },
}

/// Checks that a public key is 32 bytes of hex (64 hex digits).
pub(crate) fn check_key(key: &str) -> Result<String> {
    let key = key.trim().to_ascii_lowercase();
    if key.len() != 64 || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!(
            "--key must be the device's ed25519 public key as 64 hex digits, got {} characters",
            key.len()
        );
    }
    Ok(key)
}

pub(crate) fn run(args: DeviceArgs) -> Result<ExitCode> {
    let c = client(&args.conn)?;
    let json = args.conn.json;
    let reply = match args.command {
        DeviceCommand::List {
            region,
            device_type,
            labels,
            online,
        } => {
            let filter = DeviceFilter {
                region,
                device_type,
                labels: labels
                    .into_iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect(),
                online,
            };
            // Every page, following the cursors.
            let devices = call(&c, |c| c.devices(&filter, Some(PAGE)).all())?;
            if json {
                let all = DevicePage {
                    devices,
                    next: None,
                };
                outln!("{}", serde_json::to_string_pretty(&all)?);
            } else {
                out!("{}", render_list(&devices));
            }
            return Ok(ExitCode::SUCCESS);
        }
        DeviceCommand::Get { id } => call(&c, |c| c.get_device(&id))?,
        DeviceCommand::Pending => {
            let reply = call(&c, |c| c.pending_devices())?;
            if json {
                print_raw(&reply.text);
            } else {
                out!("{}", render_pending(&reply.json()?));
            }
            return Ok(ExitCode::SUCCESS);
        }
        DeviceCommand::Accept { id } => {
            let reply = call(&c, |c| c.accept_device(&id))?;
            if json {
                print_raw(&reply.text);
            } else {
                outln!("accepted {id}: it enrolls on its next report");
            }
            return Ok(ExitCode::SUCCESS);
        }
        DeviceCommand::Reject { id } => {
            call(&c, |c| c.reject_device(&id))?;
            if !json {
                outln!("rejected {id}'s request (it asks again if it keeps reporting)");
            }
            return Ok(ExitCode::SUCCESS);
        }
        DeviceCommand::Health {
            window,
            device_type,
        } => {
            let reply = call(&c, |c| {
                c.group_health(window.as_deref(), device_type.as_deref())
            })?;
            if json {
                print_raw(&reply.text);
            } else {
                out!("{}", crate::health::render(&reply.json()?));
            }
            return Ok(ExitCode::SUCCESS);
        }
        DeviceCommand::Vars(command) => return crate::vars::run_device(&c, json, command),
        DeviceCommand::Set {
            id,
            maintenance,
            quarantine,
            canary,
        } => {
            if maintenance.is_none() && quarantine.is_none() && !canary.any() {
                bail!(
                    "nothing to set: give --maintenance, --quarantine, --single-point-of-failure \
                     (on|off), --known-issues TEXT or --monitoring 0..100"
                );
            }
            let body = crate::device_canary::patch(maintenance, quarantine, canary);
            call(&c, |c| c.patch_device(&id, &body))?
        }
        DeviceCommand::Allow {
            id,
            key,
            device_type,
            region,
            labels,
        } => {
            let body = DeviceInput {
                id,
                public_key: check_key(&key)?,
                device_type,
                region,
                labels: labels.into_iter().collect::<BTreeMap<_, _>>(),
            };
            let reply = call(&c, |c| c.allow_device(&body))?;
            if json {
                print_raw(&reply.text);
            } else {
                outln!(
                    "allowed {}: the device is accepted on its first signed report",
                    body.id
                );
            }
            return Ok(ExitCode::SUCCESS);
        }
    };
    if json {
        print_raw(&reply.text);
    } else {
        let d: Device = reply.json()?;
        out!("{}", render_one(&d));
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn run_enroll_token(args: EnrollTokenArgs) -> Result<ExitCode> {
    let c = client(&args.conn)?;
    match args.command {
        EnrollTokenCommand::Create {
            ttl,
            join: true,
            out,
            coordinator_urls,
            fabric_addrs,
        } => {
            let opts = crate::join::JoinOptions {
                out,
                coordinator_urls,
                fabric_addrs,
            };
            crate::join::create(&c, ttl.as_deref(), &opts)?;
        }
        EnrollTokenCommand::Create { ttl, .. } => {
            let reply = call(&c, |c| c.create_enroll_token(ttl.as_deref()))?;
            if args.conn.json {
                print_raw(&reply.text);
            } else {
                let t: EnrollToken = reply.json()?;
                outln!("{}", t.token);
                eprintln!("one-time enrollment token, expires {}", t.expires_at);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn release_text(i: Option<&Slot>) -> String {
    match i {
        Some(i) if i.slot.is_empty() => format!("{} r{}", i.name, i.release),
        Some(i) => format!("{} r{} [{}]", i.name, i.release, i.slot),
        None => "-".to_string(),
    }
}

fn flags_text(d: &Device) -> String {
    let mut f = Vec::new();
    if d.maintenance {
        f.push("maintenance");
    }
    if d.quarantined {
        f.push("quarantined");
    }
    if d.on_trial {
        f.push("on-trial");
    }
    if d.single_point_of_failure {
        f.push("spof");
    }
    if !d.known_hardware_issues.is_empty() {
        f.push("known-issues");
    }
    if f.is_empty() {
        "-".to_string()
    } else {
        f.join(",")
    }
}

/// The table of `floe device list`.
/// `device pending` as a table.
fn render_pending(list: &PendingDeviceList) -> String {
    if list.devices.is_empty() {
        return "no pending devices\n".to_string();
    }
    let rows: Vec<Vec<String>> = list
        .devices
        .iter()
        .map(|p| {
            vec![
                p.id.clone(),
                or_dash(Some(&p.device_type)),
                or_dash(Some(&p.region)),
                or_dash(Some(&p.arch)),
                p.reports.to_string(),
                p.first_seen.clone(),
                p.last_seen.clone(),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "TYPE",
            "REGION",
            "ARCH",
            "REPORTS",
            "FIRST SEEN",
            "LAST SEEN",
        ],
        &rows,
    )
}

pub(crate) fn render_list(devices: &[Device]) -> String {
    if devices.is_empty() {
        return "no devices\n".to_string();
    }
    let rows: Vec<Vec<String>> = devices
        .iter()
        .map(|d| {
            vec![
                d.id.clone(),
                or_dash(Some(&d.device_type)),
                or_dash(Some(&d.region)),
                if d.online { "yes" } else { "no" }.to_string(),
                release_text(d.installed.as_ref()),
                or_dash(d.health.as_ref().map(|h| h.status.as_str())),
                flags_text(d),
                or_dash(d.last_seen.as_deref()),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "TYPE",
            "REGION",
            "ONLINE",
            "INSTALLED",
            "HEALTH",
            "FLAGS",
            "LAST SEEN",
        ],
        &rows,
    )
}

/// The field list of one device.
pub(crate) fn render_one(d: &Device) -> String {
    let labels: Vec<String> = d.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut pairs = vec![
        ("id", d.id.clone()),
        ("type", or_dash(Some(&d.device_type))),
        ("arch", or_dash(Some(&d.arch))),
        ("region", or_dash(Some(&d.region))),
        ("labels", or_dash(Some(&labels.join(", ")))),
        ("online", if d.online { "yes" } else { "no" }.to_string()),
        ("last seen", or_dash(d.last_seen.as_deref())),
        ("installed", release_text(d.installed.as_ref())),
        ("standby", release_text(d.standby.as_ref())),
        ("last known good", release_text(d.last_known_good.as_ref())),
        (
            "on trial",
            if d.on_trial { "yes" } else { "no" }.to_string(),
        ),
    ];
    let health = match &d.health {
        Some(h) => {
            let mut s = format!(
                "{}, error rate {:.4}, p95 {:.1} ms, {:.1} MB, {} restarts",
                h.status, h.error_rate, h.p95_ms, h.memory_mb, h.restarts
            );
            if !h.flow_running {
                s.push_str(", flow not running");
            }
            s
        }
        None => "-".to_string(),
    };
    pairs.push(("health", health));
    let system = d.health.as_ref().map(|h| crate::system::render(&h.system));
    pairs.push(("system", system.unwrap_or_else(|| "-".into())));
    pairs.push(("generation", d.generation.to_string()));
    pairs.push((
        "maintenance",
        if d.maintenance { "on" } else { "off" }.to_string(),
    ));
    pairs.push((
        "quarantine",
        if d.quarantined { "on" } else { "off" }.to_string(),
    ));
    pairs.extend(crate::device_canary::lines(d));
    pairs.push(("runtime", or_dash(Some(&d.runtime_version))));
    pairs.push(("public key", or_dash(Some(&d.public_key))));
    pairs.push(("enrolled", or_dash(d.enrolled_at.as_deref())));
    fields(&pairs)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn pending_devices_render_as_a_table_and_escapes_are_not_printed_raw() {
        let list: PendingDeviceList = serde_json::from_str(
            r#"{"devices":[{"id":"ab12","type":"rpi4\u001b[2J","arch":"aarch64","region":"eu",
            "runtime_version":"0.1.0","first_seen":"2026-12-07T19:00:00Z",
            "last_seen":"2026-12-07T19:05:00Z","reports":11}]}"#,
        )
        .unwrap();
        let out = render_pending(&list);
        assert!(out.starts_with("ID"), "{out}");
        assert!(out.contains("ab12") && out.contains("11") && out.contains("2026-12-07T19:05:00Z"));
        assert!(!out.contains('\u{1b}'), "{out:?}");
        let none = render_pending(&PendingDeviceList { devices: vec![] });
        assert_eq!(none, "no pending devices\n");
    }

    fn device() -> Device {
        serde_json::from_str(
            r#"{"id":"dev_001","type":"rpi4","arch":"aarch64","region":"eu","labels":{"site":"north","floor":"2"},
            "public_key":"ab","runtime_version":"0.1.0",
            "installed":{"name":"flow_3f2a9c0d1e","release":2,"version":"1.2.0","slot":"green"},"standby":null,
            "last_known_good":{"name":"flow_3f2a9c0d1e","release":1,"version":"1.0.0","slot":"blue"},"on_trial":true,
            "applied":null,
            "health":{"status":"healthy","error_rate":0.0,"p95_ms":1.2,"memory_mb":9.1,"restarts":0,"flow_running":true},
            "online":true,"last_seen":"2026-11-22T03:00:00Z","generation":4,"maintenance":false,"quarantined":true,
            "enrolled_at":"2026-11-21T10:00:00Z"}"#,
        )
        .unwrap()
    }

    #[test]
    fn list_table() {
        let bare: Device = serde_json::from_str(
            r#"{"id":"dev_002","type":"","arch":"","region":"","labels":{},"public_key":"cd",
            "runtime_version":"","installed":null,"standby":null,"last_known_good":null,
            "on_trial":false,"health":null,"applied":null,"online":false,"last_seen":null,
            "generation":0,"maintenance":false,"quarantined":false,"enrolled_at":null}"#,
        )
        .unwrap();
        assert_eq!(
            render_list(&[device(), bare]),
            "ID       TYPE  REGION  ONLINE  INSTALLED                   HEALTH   FLAGS                 LAST SEEN\n\
             dev_001  rpi4  eu      yes     flow_3f2a9c0d1e r2 [green]  healthy  quarantined,on-trial  2026-11-22T03:00:00Z\n\
             dev_002  -     -       no      -                           -        -                     -\n"
        );
        assert_eq!(render_list(&[]), "no devices\n");
    }

    #[test]
    fn one_device() {
        let text = render_one(&device());
        assert!(
            text.contains("labels:           floor=2, site=north\n"),
            "{text}"
        );
        assert!(
            text.contains("installed:        flow_3f2a9c0d1e r2 [green]\n"),
            "{text}"
        );
        assert!(
            text.contains("last known good:  flow_3f2a9c0d1e r1 [blue]\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "health:           healthy, error rate 0.0000, p95 1.2 ms, 9.1 MB, 0 restarts\n"
            ),
            "{text}"
        );
        assert!(text.contains("quarantine:       on\n"), "{text}");
        assert!(text.contains("spof:             off\n"), "{text}");
        assert!(text.contains("monitoring:       unset\n"), "{text}");
        assert!(text.contains("went offline:     -\n"), "{text}");
    }

    #[test]
    fn set_arguments() {
        use crate::{Cli, Command};
        use clap::Parser;
        let parsed = Cli::try_parse_from([
            "floe",
            "device",
            "set",
            "dev_001",
            "--maintenance",
            "on",
            "--quarantine",
            "off",
        ])
        .unwrap();
        match parsed.command {
            Command::Device(DeviceArgs {
                command:
                    DeviceCommand::Set {
                        id,
                        maintenance,
                        quarantine,
                        ..
                    },
                ..
            }) => {
                assert_eq!(id, "dev_001");
                assert_eq!((maintenance, quarantine), (Some(true), Some(false)));
            }
            other => panic!("{other:?}"),
        }
        let parsed = Cli::try_parse_from([
            "floe",
            "device",
            "set",
            "d",
            "--single-point-of-failure",
            "on",
            "--known-issues",
            "fan fails above 40 C",
            "--monitoring",
            "80",
        ])
        .unwrap();
        match parsed.command {
            Command::Device(DeviceArgs {
                command: DeviceCommand::Set { canary, .. },
                ..
            }) => {
                let body = crate::device_canary::patch(None, None, canary);
                assert_eq!(body.single_point_of_failure, Some(true));
                assert_eq!(
                    body.known_hardware_issues.as_deref(),
                    Some("fan fails above 40 C")
                );
                assert_eq!(body.monitoring, Some(80));
                assert_eq!(body.maintenance, None);
            }
            other => panic!("{other:?}"),
        }
        let err =
            Cli::try_parse_from(["floe", "device", "set", "d", "--monitoring", "101"]).unwrap_err();
        assert!(err.to_string().contains("101"), "{err}");
        let err = Cli::try_parse_from(["floe", "device", "set", "d", "--maintenance", "maybe"])
            .unwrap_err();
        assert!(err.to_string().contains("not on or off"), "{err}");
        assert!(Cli::try_parse_from(["floe", "enroll-token", "create", "--ttl", "1h"]).is_ok());
        assert!(
            Cli::try_parse_from(["floe", "device", "allow", "d"]).is_err(),
            "--key is required"
        );
    }

    #[test]
    fn keys_are_checked() {
        let good = "AB".repeat(32);
        assert_eq!(check_key(&good).unwrap(), "ab".repeat(32));
        assert!(
            check_key("abc")
                .unwrap_err()
                .to_string()
                .contains("64 hex digits")
        );
        assert!(check_key(&"zz".repeat(32)).is_err());
    }
}
