//! `floe token`: named API tokens with a role (admin only): create, list, revoke; and
//! `floe token whoami`, the caller's own token.

use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Subcommand};
use floe_coordinator::client::{ApiTokenCreated, ApiTokenList, Role, WhoAmI};

use crate::config::{Conn, call, client, or_dash, print_raw, table};

/// `floe token`.
#[derive(Debug, Args)]
pub(crate) struct TokenArgs {
    #[command(flatten)]
    conn: Conn,
    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a named token; its secret is printed once (only its SHA-256 is kept).
    Create {
        /// The token's name (a-z A-Z 0-9 . _ -); the audit log names it token:NAME.
        name: String,
        /// admin (everything), operator (all but tokens), viewer (reads), enroller
        /// (enrollment tokens only).
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// Lifetime (30d, 12h; at most 366d); without it the token lives until revoked.
        #[arg(long, value_name = "DURATION")]
        expires: Option<String>,
    },
    /// List the tokens (never their secrets).
    List,
    /// Revoke a token; it stops working at once.
    Revoke {
        /// The token's name.
        name: String,
    },
    /// The token this command uses: its name and role.
    Whoami,
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse::<Role>().map_err(|e| e.to_string())
}

pub(crate) fn run(args: TokenArgs) -> Result<ExitCode> {
    let c = client(&args.conn)?;
    let json = args.conn.json;
    match args.command {
        TokenCommand::Create {
            name,
            role,
            expires,
        } => {
            let reply = call(&c, |c| c.create_api_token(&name, role, expires.as_deref()))?;
            if json {
                print_raw(&reply.text);
            } else {
                let t: ApiTokenCreated = reply.json()?;
                outln!("{}", t.token);
                eprintln!(
                    "API token {:?}, role {}, {}; this is the only time the secret is shown",
                    t.info.name,
                    t.info.role,
                    match &t.info.expires_at {
                        Some(at) => format!("expires {at}"),
                        None => "valid until revoked".into(),
                    }
                );
            }
        }
        TokenCommand::List => {
            let reply = call(&c, |c| c.list_api_tokens())?;
            if json {
                print_raw(&reply.text);
            } else {
                let list: ApiTokenList = reply.json()?;
                let rows: Vec<Vec<String>> = list
                    .tokens
                    .iter()
                    .map(|t| {
                        vec![
                            t.name.clone(),
                            t.role.to_string(),
                            t.created_at.clone(),
                            or_dash(t.expires_at.as_deref()),
                            or_dash(t.last_used_at.as_deref()),
                            if t.bootstrap { "bootstrap file" } else { "" }.to_string(),
                        ]
                    })
                    .collect();
                out!(
                    "{}",
                    table(
                        &["NAME", "ROLE", "CREATED", "EXPIRES", "LAST USED", "NOTE"],
                        &rows
                    )
                );
            }
        }
        TokenCommand::Revoke { name } => {
            call(&c, |c| c.revoke_api_token(&name))?;
            if !json {
                eprintln!("API token {name:?} revoked");
            }
        }
        TokenCommand::Whoami => {
            let reply = call(&c, |c| c.whoami())?;
            if json {
                print_raw(&reply.text);
            } else {
                let w: WhoAmI = reply.json()?;
                outln!("{} ({})", w.name, w.role);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
