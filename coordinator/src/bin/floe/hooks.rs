//! `floe hook …`: webhooks. The coordinator POSTs each matching event to the hook's URL, signed
//! `X-Floe-Signature: sha256=<hex HMAC-SHA256(secret, body)>`; the secret is printed once, by
//! `floe hook add`.

use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Subcommand};
use floe_coordinator::contract::{DeliveryLog, HookCreated, HookInput, HookList};

use crate::config::{Conn, call, client, or_dash, print_raw, table};

/// `floe hook`.
#[derive(Debug, Args)]
pub(crate) struct HookArgs {
    #[command(flatten)]
    conn: Conn,
    #[command(subcommand)]
    command: HookCommand,
}

#[derive(Debug, Subcommand)]
enum HookCommand {
    /// Register a webhook: `floe hook add http://10.0.0.9:8080/floe --kind deployment.
    /// --kind device.offline` (no --kind: every kind). Prints its secret, once.
    Add {
        /// Where to POST (plain http://).
        url: String,
        /// An event kind, or a prefix ending in `.` (repeatable).
        #[arg(long = "kind", value_name = "KIND")]
        kinds: Vec<String>,
        /// Only events of this deployment.
        #[arg(long = "deployment", value_name = "ID")]
        deployment: Option<String>,
    },
    /// Every webhook, with its queue and drops.
    List,
    /// Delete a webhook.
    Rm {
        /// The hook id.
        id: String,
    },
    /// A webhook's recent deliveries (newest first): attempts, answers, errors.
    Deliveries {
        /// The hook id.
        id: String,
    },
}

pub(crate) fn run(args: HookArgs) -> Result<ExitCode> {
    let c = client(&args.conn)?;
    let json = args.conn.json;
    match args.command {
        HookCommand::Add {
            url,
            kinds,
            deployment,
        } => {
            let input = HookInput {
                url,
                kinds,
                deployment_id: deployment,
            };
            let reply = call(&c, |c| c.create_hook(&input))?;
            if json {
                print_raw(&reply.text);
            } else {
                let created: HookCreated = call(&c, |_| reply.json())?;
                outln!("hook {} created", created.hook.id);
                outln!(
                    "secret {} (shown only now: keep it to verify X-Floe-Signature)",
                    created.secret
                );
            }
        }
        HookCommand::List => {
            let reply = call(&c, |c| c.hooks())?;
            if json {
                print_raw(&reply.text);
            } else {
                let list: HookList = call(&c, |_| reply.json())?;
                let rows: Vec<Vec<String>> = list
                    .hooks
                    .iter()
                    .map(|h| {
                        vec![
                            h.id.clone(),
                            h.url.clone(),
                            if h.kinds.is_empty() {
                                "*".to_string()
                            } else {
                                h.kinds.join(",")
                            },
                            or_dash(h.deployment_id.as_deref()),
                            h.queued.to_string(),
                            h.dropped.to_string(),
                        ]
                    })
                    .collect();
                if rows.is_empty() {
                    outln!("no hooks");
                } else {
                    out!(
                        "{}",
                        table(
                            &["ID", "URL", "KINDS", "DEPLOYMENT", "QUEUED", "DROPPED"],
                            &rows
                        )
                    );
                }
            }
        }
        HookCommand::Rm { id } => {
            call(&c, |c| c.delete_hook(&id))?;
            if !json {
                outln!("hook {id} deleted");
            }
        }
        HookCommand::Deliveries { id } => {
            let reply = call(&c, |c| c.hook_deliveries(&id))?;
            if json {
                print_raw(&reply.text);
            } else {
                let log: DeliveryLog = call(&c, |_| reply.json())?;
                let rows: Vec<Vec<String>> = log
                    .deliveries
                    .iter()
                    .map(|d| {
                        vec![
                            d.at.clone(),
                            d.delivery.clone(),
                            d.kind.as_str().to_string(),
                            d.outcome.clone(),
                            d.status
                                .map(|s| s.to_string())
                                .unwrap_or_else(|| "-".into()),
                            or_dash(d.error.as_deref()),
                        ]
                    })
                    .collect();
                if rows.is_empty() {
                    outln!("no deliveries yet");
                } else {
                    out!(
                        "{}",
                        table(
                            &["AT", "DELIVERY", "KIND", "OUTCOME", "STATUS", "ERROR"],
                            &rows
                        )
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
