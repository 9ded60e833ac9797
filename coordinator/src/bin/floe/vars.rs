//! `floe device vars …` and `floe group vars …`: values of flow variables per device and per
//! group (a label `key=value` or a device type). A device receives, with its next deployment,
//! its own value over a label group's over a device-type group's, for the names the deployed
//! flow declares; `[vars]` in the device's `floed.toml` overrides them all.
//!
//! `--secret NAME=VALUE` or `--secret-file NAME=PATH` (`-`: standard input, so the value stays
//! out of the shell history and the process list) set a secret value: stored encrypted,
//! delivered sealed to each device's key, shown as `<secret>` from then on.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use floe_coordinator::client::{
    Client, DeviceVars, GroupVars, GroupVarsChange, GroupVarsList, VarGroup, VarSource, VarsChange,
};

use crate::config::{Conn, call, client, key_value, print_raw, table};

/// `floe device vars`.
#[derive(Debug, Subcommand)]
pub(crate) enum DeviceVarsCommand {
    /// Set (and with --unset remove) a device's own values: `floe device vars set ID
    /// broker=mqtt://10.0.0.5:1883 sensor=/dev/i2c-1`.
    Set {
        /// The device id.
        id: String,
        /// Values as name=value.
        #[arg(value_name = "NAME=VALUE", value_parser = key_value)]
        values: Vec<(String, String)>,
        /// Remove the device's own value of this name (repeatable).
        #[arg(long = "unset", value_name = "NAME")]
        unset: Vec<String>,
        #[command(flatten)]
        secrets: SecretArgs,
    },
    /// A device's own values and what it resolves to now, with the source of each.
    List {
        /// The device id.
        id: String,
    },
}

/// `floe group`.
#[derive(Debug, Args)]
pub(crate) struct GroupArgs {
    #[command(flatten)]
    conn: Conn,
    #[command(subcommand)]
    command: GroupCommand,
}

#[derive(Debug, Subcommand)]
enum GroupCommand {
    /// Values of flow variables for a group of devices.
    #[command(subcommand)]
    Vars(GroupVarsCommand),
}

#[derive(Debug, Subcommand)]
enum GroupVarsCommand {
    /// Set (and with --unset remove) a group's values: `floe group vars set type=rpi4
    /// interval=5s` or `floe group vars set label site=plant-3 broker=mqtt://10.3.0.1:1883`.
    Set {
        /// `type=DEVICE_TYPE`, or `label` followed by `KEY=VALUE`, then the values as
        /// name=value.
        #[arg(value_name = "GROUP NAME=VALUE", required = true, num_args = 1..)]
        args: Vec<String>,
        /// Remove the group's value of this name (repeatable).
        #[arg(long = "unset", value_name = "NAME")]
        unset: Vec<String>,
        #[command(flatten)]
        secrets: SecretArgs,
    },
    /// Every group holding values.
    List,
}

/// Secret values of a `set` (repeatable flags).
#[derive(Debug, Args)]
pub(crate) struct SecretArgs {
    /// A secret value as name=value: stored encrypted, delivered sealed to each device,
    /// never shown again (repeatable). Prefer --secret-file to keep it out of the history.
    #[arg(long = "secret", value_name = "NAME=VALUE", value_parser = key_value)]
    secret: Vec<(String, String)>,
    /// A secret value read from a file (`-`: standard input), one line, the trailing newline
    /// dropped (repeatable).
    #[arg(long = "secret-file", value_name = "NAME=PATH", value_parser = key_value)]
    secret_file: Vec<(String, String)>,
}

/// The most bytes read for one secret value from a file (a value is at most 256 bytes; the
/// rest is room for a line ending, so a longer one is refused by the coordinator, by name).
const MAX_SECRET_FILE_BYTES: u64 = 1024;

impl SecretArgs {
    fn values(&self) -> Result<BTreeMap<String, String>> {
        let mut out: BTreeMap<String, String> = self.secret.iter().cloned().collect();
        for (name, path) in &self.secret_file {
            let mut text = String::new();
            let read = if path == "-" {
                std::io::Read::read_to_string(
                    &mut std::io::Read::take(std::io::stdin().lock(), MAX_SECRET_FILE_BYTES),
                    &mut text,
                )
            } else {
                std::fs::File::open(path).and_then(|f| {
                    std::io::Read::read_to_string(
                        &mut std::io::Read::take(f, MAX_SECRET_FILE_BYTES),
                        &mut text,
                    )
                })
            };
            read.map_err(|e| anyhow::anyhow!("reading the secret {name} from {path}: {e}"))?;
            let value = text.strip_suffix('\n').unwrap_or(&text);
            let value = value.strip_suffix('\r').unwrap_or(value);
            if out.insert(name.clone(), value.to_string()).is_some() {
                bail!("the secret {name} is given twice");
            }
        }
        Ok(out)
    }
}

/// Reads `type=T …` or `label K=V …` into the group and the rest.
fn split_group(args: &[String]) -> Result<(VarGroup, &[String])> {
    match args {
        [first, rest @ ..] if first.starts_with("type=") => Ok((
            VarGroup {
                label: None,
                device_type: Some(first["type=".len()..].to_string()),
            },
            rest,
        )),
        [first, selector, rest @ ..] if first == "label" => Ok((
            VarGroup {
                label: Some(selector.clone()),
                device_type: None,
            },
            rest,
        )),
        _ => bail!(
            "name the group first: type=DEVICE_TYPE, or label KEY=VALUE (e.g. `label site=plant-3`)"
        ),
    }
}

fn values(pairs: &[String]) -> Result<BTreeMap<String, String>> {
    pairs
        .iter()
        .map(|p| key_value(p).map_err(anyhow::Error::msg))
        .collect()
}

fn source_text(source: VarSource, group: Option<&str>) -> String {
    match source {
        VarSource::Device => "device".to_string(),
        VarSource::Label => format!("label {}", group.unwrap_or("-")),
        VarSource::DeviceType => format!("type {}", group.unwrap_or("-")),
    }
}

/// The table of `floe device vars list`.
pub(crate) fn render_device(v: &DeviceVars) -> String {
    if v.resolved.is_empty() {
        return format!(
            "device {} has no values; flows use their defaults\n",
            v.device_id
        );
    }
    let rows: Vec<Vec<String>> = v
        .resolved
        .iter()
        .map(|(name, r)| {
            vec![
                name.clone(),
                r.value.clone(),
                source_text(r.source, r.group.as_deref()),
            ]
        })
        .collect();
    table(&["NAME", "VALUE", "FROM"], &rows)
}

fn render_groups(list: &GroupVarsList) -> String {
    let mut rows = Vec::new();
    for g in &list.groups {
        let group = group_text(g);
        for (name, value) in &g.values {
            rows.push(vec![group.clone(), name.clone(), value.clone()]);
        }
    }
    if rows.is_empty() {
        return "no group holds values\n".to_string();
    }
    table(&["GROUP", "NAME", "VALUE"], &rows)
}

fn group_text(g: &GroupVars) -> String {
    match (&g.group.label, &g.group.device_type) {
        (Some(l), _) => format!("label {l}"),
        (_, Some(t)) => format!("type={t}"),
        _ => "-".to_string(),
    }
}

/// `floe device vars …` on a connected client.
pub(crate) fn run_device(c: &Client, json: bool, command: DeviceVarsCommand) -> Result<ExitCode> {
    let reply = match command {
        DeviceVarsCommand::Set {
            id,
            values,
            unset,
            secrets,
        } => {
            let secret = secrets.values()?;
            if values.is_empty() && unset.is_empty() && secret.is_empty() {
                bail!(
                    "nothing to set: give NAME=VALUE pairs, --secret NAME=VALUE and/or --unset NAME"
                );
            }
            let change = VarsChange {
                set: values.into_iter().collect(),
                unset,
                secret,
            };
            call(c, |c| c.set_device_vars(&id, &change))?
        }
        DeviceVarsCommand::List { id } => call(c, |c| c.device_vars(&id))?,
    };
    if json {
        print_raw(&reply.text);
    } else {
        let v: DeviceVars = reply.json()?;
        out!("{}", render_device(&v));
    }
    Ok(ExitCode::SUCCESS)
}

/// `floe group …`.
pub(crate) fn run_group(args: GroupArgs) -> Result<ExitCode> {
    let c = client(&args.conn)?;
    let json = args.conn.json;
    let GroupCommand::Vars(command) = args.command;
    match command {
        GroupVarsCommand::Set {
            args,
            unset,
            secrets,
        } => {
            let (group, rest) = split_group(&args)?;
            let set = values(rest)?;
            let secret = secrets.values()?;
            if set.is_empty() && unset.is_empty() && secret.is_empty() {
                bail!(
                    "nothing to set: give NAME=VALUE pairs, --secret NAME=VALUE and/or --unset NAME"
                );
            }
            let change = GroupVarsChange {
                group,
                set,
                unset,
                secret,
            };
            let reply = call(&c, |c| c.set_group_vars(&change))?;
            if json {
                print_raw(&reply.text);
            } else {
                let g: GroupVars = reply.json()?;
                out!("{}", render_groups(&GroupVarsList { groups: vec![g] }));
            }
        }
        GroupVarsCommand::List => {
            let reply = call(&c, |c| c.group_vars())?;
            if json {
                print_raw(&reply.text);
            } else {
                let list: GroupVarsList = reply.json()?;
                out!("{}", render_groups(&list));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn groups_are_read_from_the_first_words() {
        let args: Vec<String> = ["type=rpi4", "a=1"].iter().map(|s| s.to_string()).collect();
        let (g, rest) = split_group(&args).unwrap();
        assert_eq!(g.device_type.as_deref(), Some("rpi4"));
        assert_eq!(rest.len(), 1);
        let args: Vec<String> = ["label", "site=plant-3", "a=1", "b=x=y"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (g, rest) = split_group(&args).unwrap();
        assert_eq!(g.label.as_deref(), Some("site=plant-3"));
        let v = values(rest).unwrap();
        assert_eq!(v["b"], "x=y");
        assert!(split_group(&["a=1".to_string()]).is_err());
        assert!(values(&["novalue".to_string()]).is_err());
    }
}
