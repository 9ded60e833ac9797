//! `floe audit`: the coordinator's audit log, newest first, as many entries as asked for
//! (following the server's cursors page by page).

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use floe_coordinator::client::{AuditEntry, AuditPage};
use floe_coordinator::contract::paging::{DEFAULT_PAGE, MAX_PAGE};

use crate::config::{Conn, call, client, or_dash, table};

/// `floe audit`.
#[derive(Debug, Args)]
pub(crate) struct AuditArgs {
    #[command(flatten)]
    conn: Conn,
    /// Only entries about this deployment.
    #[arg(long = "deployment", value_name = "ID")]
    deployment_id: Option<String>,
    /// Only entries about this device.
    #[arg(long = "device", value_name = "ID")]
    device_id: Option<String>,
    /// At most this many entries (100 when not given).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000), conflicts_with = "all")]
    limit: Option<u32>,
    /// Every entry, following the pages to the oldest.
    #[arg(long)]
    all: bool,
}

pub(crate) fn run(args: AuditArgs) -> Result<ExitCode> {
    let c = client(&args.conn)?;
    let wanted = match (args.all, args.limit) {
        (true, _) => usize::MAX,
        (false, Some(n)) => n as usize,
        (false, None) => DEFAULT_PAGE,
    };
    let entries = call(&c, |c| {
        c.audit_entries(
            args.deployment_id.as_deref(),
            args.device_id.as_deref(),
            Some(wanted.min(MAX_PAGE)),
        )
        .take(wanted)
        .collect::<Result<Vec<_>, _>>()
    })?;
    if args.conn.json {
        let page = AuditPage {
            entries,
            next: None,
        };
        outln!("{}", serde_json::to_string_pretty(&page)?);
    } else {
        out!("{}", render(&entries));
    }
    Ok(ExitCode::SUCCESS)
}

/// The audit table.
pub(crate) fn render(entries: &[AuditEntry]) -> String {
    if entries.is_empty() {
        return "no audit entries\n".to_string();
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                e.at.clone(),
                e.actor.clone(),
                e.action.clone(),
                or_dash(e.deployment_id.as_deref()),
                or_dash(e.device_id.as_deref()),
                e.outcome.clone(),
                or_dash(Some(&e.detail)),
            ]
        })
        .collect();
    table(
        &[
            "AT",
            "ACTOR",
            "ACTION",
            "DEPLOYMENT",
            "DEVICE",
            "OUTCOME",
            "DETAIL",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn audit_table() {
        let list: AuditPage = serde_json::from_str(
            r#"{"next":null,"entries":[
              {"at":"2026-11-22T03:00:00Z","actor":"api","action":"deployment.start","device_id":null,"deployment_id":"dep_0a1b2c3d4e","outcome":"ok","detail":""},
              {"at":"2026-11-22T03:00:04Z","actor":"device","action":"report","device_id":"dev_001","deployment_id":"dep_0a1b2c3d4e","outcome":"disagreement","detail":"device says release 1"}
            ]}"#,
        )
        .unwrap();
        assert_eq!(
            render(&list.entries),
            "AT                    ACTOR   ACTION            DEPLOYMENT      DEVICE   OUTCOME       DETAIL\n\
             2026-11-22T03:00:00Z  api     deployment.start  dep_0a1b2c3d4e  -        ok            -\n\
             2026-11-22T03:00:04Z  device  report            dep_0a1b2c3d4e  dev_001  disagreement  device says release 1\n"
        );
        assert_eq!(render(&[]), "no audit entries\n");
    }
}
