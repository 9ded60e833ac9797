//! `floe flow …`: drafts, publishing and versions of flows on the coordinator.
//!
//! Every command is one API call (`flow update` is two: it reads the draft first so that name,
//! description and tags stay as they are unless given). Human output is a table or a field
//! list; `--json` prints the server's reply as received.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use floe_coordinator::client::{Client, Flow, FlowInput, FlowList};
use serde_json::Value;

use crate::config::{Conn, call, client, fields, or_dash, print_raw, table};

/// The largest flow file read; the server caps request bodies at 1 MiB.
const MAX_FLOW_FILE: u64 = 1024 * 1024;

/// Reads a smoke-test file (at most 1 MiB) as the publish request carries it.
fn read_smoke_test(path: &Path) -> Result<floe_coordinator::contract::SmokeTestInput> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .with_context(|| format!("opening smoke-test file {}", path.display()))?
        .take(MAX_FLOW_FILE + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading smoke-test file {}", path.display()))?;
    if bytes.len() as u64 > MAX_FLOW_FILE {
        bail!("smoke-test file {} is larger than 1 MiB", path.display());
    }
    serde_json::from_slice(&bytes).with_context(|| {
        format!(
            "smoke-test file {} is not a smoke test (inject, expect, timeout_ms)",
            path.display()
        )
    })
}

/// `floe flow`.
#[derive(Debug, Args)]
pub(crate) struct FlowArgs {
    #[command(flatten)]
    conn: Conn,
    #[command(subcommand)]
    command: FlowCommand,
}

#[derive(Debug, Subcommand)]
enum FlowCommand {
    /// Create a draft from a flow JSON file.
    Create {
        /// The flow definition (JSON); `-` reads standard input.
        file: PathBuf,
        /// The flow's name.
        #[arg(long)]
        name: String,
        /// A description.
        #[arg(long)]
        description: Option<String>,
        /// A tag (repeatable).
        #[arg(long = "tag")]
        tags: Vec<String>,
    },
    /// List flows (archived ones only with --state archived).
    List {
        /// draft, published or archived.
        #[arg(long, value_parser = ["draft", "published", "archived"])]
        state: Option<String>,
        /// Only flows with this tag.
        #[arg(long)]
        tag: Option<String>,
    },
    /// Show one flow.
    Get {
        /// The flow id.
        id: String,
    },
    /// Replace a draft's definition (name, description and tags are kept unless given).
    Update {
        /// The flow id.
        id: String,
        /// The new definition (JSON); `-` reads standard input.
        file: PathBuf,
        /// A new name.
        #[arg(long)]
        name: Option<String>,
        /// A new description.
        #[arg(long)]
        description: Option<String>,
        /// Replace the tags (repeatable).
        #[arg(long = "tag")]
        tags: Vec<String>,
    },
    /// Delete a flow.
    Delete {
        /// The flow id.
        id: String,
    },
    /// Validate a draft completely, build and sign its artifact, and freeze it.
    Publish {
        /// The flow id.
        id: String,
        /// A smoke test (JSON: `inject` and `expect` lists of `{node, payload}`, and
        /// `timeout_ms`) every device runs on the new version before switching to it; it
        /// travels in the signed manifest (003 layer 4).
        #[arg(long, value_name = "FILE")]
        smoke_test: Option<PathBuf>,
    },
    /// Archive a flow.
    Archive {
        /// The flow id.
        id: String,
    },
    /// Make a new draft (the next version) from a published or archived flow.
    NewVersion {
        /// The flow id.
        id: String,
    },
}

/// Reads and parses a flow definition file, with a size cap.
pub(crate) fn read_definition(path: &Path) -> Result<Value> {
    use std::io::Read;
    let mut text = String::new();
    let name = path.display().to_string();
    if path == Path::new("-") {
        std::io::stdin()
            .take(MAX_FLOW_FILE + 1)
            .read_to_string(&mut text)
            .context("reading the flow from standard input")?;
    } else {
        std::fs::File::open(path)
            .with_context(|| format!("opening flow file {name}"))?
            .take(MAX_FLOW_FILE + 1)
            .read_to_string(&mut text)
            .with_context(|| format!("reading flow file {name}"))?;
    }
    if text.len() as u64 > MAX_FLOW_FILE {
        bail!("flow file {name} is larger than the server's 1 MiB request cap");
    }
    let value: Value = serde_json::from_str(&text)
        .with_context(|| format!("flow file {name} is not valid JSON"))?;
    if !value.is_object() {
        bail!("flow file {name} must hold a JSON object (nodes, connections, variables)");
    }
    Ok(value)
}

pub(crate) fn run(args: FlowArgs) -> Result<ExitCode> {
    let c = client(&args.conn)?;
    let json = args.conn.json;
    let reply = match args.command {
        FlowCommand::Create {
            file,
            name,
            description,
            tags,
        } => {
            let body = FlowInput {
                name,
                description: description.unwrap_or_default(),
                tags,
                definition: read_definition(&file)?,
            };
            call(&c, |c| c.create_flow(&body))?
        }
        FlowCommand::List { state, tag } => {
            let reply = call(&c, |c| c.list_flows(state.as_deref(), tag.as_deref()))?;
            if json {
                print_raw(&reply.text);
            } else {
                let list: FlowList = reply.json()?;
                out!("{}", render_list(&list.flows));
            }
            return Ok(ExitCode::SUCCESS);
        }
        FlowCommand::Get { id } => call(&c, |c| c.get_flow(&id))?,
        FlowCommand::Update {
            id,
            file,
            name,
            description,
            tags,
        } => update(&c, &id, &file, name, description, tags)?,
        FlowCommand::Delete { id } => {
            let reply = call(&c, |c| c.delete_flow(&id))?;
            if json {
                print_raw(&reply.text);
            } else {
                outln!("deleted {id}");
            }
            return Ok(ExitCode::SUCCESS);
        }
        FlowCommand::Publish { id, smoke_test } => match smoke_test {
            None => call(&c, |c| c.publish_flow(&id))?,
            Some(path) => {
                let body = floe_coordinator::contract::PublishInput {
                    smoke_test: Some(read_smoke_test(&path)?),
                };
                call(&c, |c| c.publish_flow_with(&id, &body))?
            }
        },
        FlowCommand::Archive { id } => call(&c, |c| c.archive_flow(&id))?,
        FlowCommand::NewVersion { id } => call(&c, |c| c.new_flow_version(&id))?,
    };
    if json {
        print_raw(&reply.text);
    } else {
        let flow: Flow = reply.json()?;
        out!("{}", render_one(&flow));
    }
    Ok(ExitCode::SUCCESS)
}

fn update(
    c: &Client,
    id: &str,
    file: &Path,
    name: Option<String>,
    description: Option<String>,
    tags: Vec<String>,
) -> Result<floe_coordinator::client::Reply> {
    let definition = read_definition(file)?;
    let current: Flow = call(c, |c| c.get_flow(id))?.json()?;
    let body = FlowInput {
        name: name.unwrap_or(current.name),
        description: description.unwrap_or(current.description),
        tags: if tags.is_empty() { current.tags } else { tags },
        definition,
    };
    call(c, |c| c.update_flow(id, &body))
}

/// `name r<release>` of a flow's artifact, or `-`.
fn artifact_text(flow: &Flow) -> String {
    match &flow.artifact {
        Some(a) if a.version.is_empty() => format!("{} r{}", a.name, a.release),
        Some(a) => format!("{} r{} ({})", a.name, a.release, a.version),
        None => "-".to_string(),
    }
}

/// The table of `floe flow list`.
pub(crate) fn render_list(flows: &[Flow]) -> String {
    if flows.is_empty() {
        return "no flows\n".to_string();
    }
    let rows: Vec<Vec<String>> = flows
        .iter()
        .map(|f| {
            vec![
                f.id.clone(),
                f.name.clone(),
                f.state.to_string(),
                f.version.to_string(),
                or_dash(Some(&f.tags.join(","))),
                artifact_text(f),
                or_dash(Some(&f.updated_at)),
            ]
        })
        .collect();
    table(
        &[
            "ID", "NAME", "STATE", "VERSION", "TAGS", "ARTIFACT", "UPDATED",
        ],
        &rows,
    )
}

/// The field list of one flow.
pub(crate) fn render_one(f: &Flow) -> String {
    let count = |k: &str| {
        f.definition
            .get(k)
            .and_then(Value::as_array)
            .map_or(0, Vec::len)
    };
    let mut pairs = vec![
        ("id", f.id.clone()),
        ("name", f.name.clone()),
        ("state", f.state.to_string()),
        ("version", f.version.to_string()),
        ("lineage", or_dash(Some(&f.lineage))),
        ("parent", or_dash(f.parent_id.as_deref())),
        ("tags", or_dash(Some(&f.tags.join(", ")))),
    ];
    if !f.description.is_empty() {
        pairs.push(("description", f.description.clone()));
    }
    pairs.push((
        "definition",
        format!(
            "{} nodes, {} connections, {} variables",
            count("nodes"),
            count("connections"),
            count("variables")
        ),
    ));
    pairs.push(("artifact", artifact_text(f)));
    if let Some(a) = &f.artifact {
        pairs.push((
            "manifest",
            format!("sha256 {} ({} bytes)", a.manifest_sha256, a.size),
        ));
    }
    pairs.push(("created", or_dash(Some(&f.created_at))));
    pairs.push(("updated", or_dash(Some(&f.updated_at))));
    pairs.push(("published", or_dash(f.published_at.as_deref())));
    if f.archived_at.is_some() {
        pairs.push(("archived", or_dash(f.archived_at.as_deref())));
    }
    fields(&pairs)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn published() -> Flow {
        serde_json::from_str(
            r#"{"id":"flow_3f2a9c0d1e","name":"Temperature Alert","description":"Alerts above 30 °C","tags":["temperature","demo"],
            "state":"published","version":2,"lineage":"flow_3f2a9c0d1e","parent_id":"flow_0000000001",
            "definition":{"nodes":[{"id":"n1"},{"id":"n2"},{"id":"n3"}],"connections":[{},{}],"variables":[]},
            "artifact":{"name":"flow_3f2a9c0d1e","release":2,"version":"1.2.0","manifest_sha256":"ab12","size":2048},
            "created_at":"2026-11-22T03:00:00Z","updated_at":"2026-11-22T03:01:00Z","published_at":"2026-11-22T03:02:00Z","archived_at":null}"#,
        )
        .unwrap()
    }

    #[test]
    fn list_table() {
        let draft: Flow = serde_json::from_str(
            r#"{"id":"flow_aaaaaaaaaa","name":"Bridge","description":"","tags":[],"state":"draft","version":1,
            "lineage":"flow_aaaaaaaaaa","parent_id":null,"definition":{},"artifact":null,
            "created_at":"2026-11-22T03:05:00Z","updated_at":"2026-11-22T03:05:00Z","published_at":null,"archived_at":null}"#,
        )
        .unwrap();
        assert_eq!(
            render_list(&[published(), draft]),
            "ID               NAME               STATE      VERSION  TAGS              ARTIFACT                    UPDATED\n\
             flow_3f2a9c0d1e  Temperature Alert  published  2        temperature,demo  flow_3f2a9c0d1e r2 (1.2.0)  2026-11-22T03:01:00Z\n\
             flow_aaaaaaaaaa  Bridge             draft      1        -                 -                           2026-11-22T03:05:00Z\n"
        );
        assert_eq!(render_list(&[]), "no flows\n");
    }

    #[test]
    fn one_flow() {
        let text = render_one(&published());
        assert!(text.contains("state:        published\n"), "{text}");
        assert!(
            text.contains("definition:   3 nodes, 2 connections, 0 variables\n"),
            "{text}"
        );
        assert!(
            text.contains("manifest:     sha256 ab12 (2048 bytes)\n"),
            "{text}"
        );
        assert!(text.contains("parent:       flow_0000000001\n"), "{text}");
        assert!(
            text.contains("description:  Alerts above 30 °C\n"),
            "{text}"
        );
        assert!(!text.contains("archived"), "{text}");
    }

    #[test]
    fn definition_files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.json");
        std::fs::write(&p, "[1,2]").unwrap();
        assert!(
            read_definition(&p)
                .unwrap_err()
                .to_string()
                .contains("JSON object")
        );
        std::fs::write(&p, "{nope").unwrap();
        assert!(
            read_definition(&p)
                .unwrap_err()
                .to_string()
                .contains("not valid JSON")
        );
        std::fs::write(&p, vec![b' '; 1024 * 1024 + 10]).unwrap();
        assert!(
            read_definition(&p)
                .unwrap_err()
                .to_string()
                .contains("1 MiB")
        );
        let missing = dir.path().join("missing.json");
        assert!(
            read_definition(&missing)
                .unwrap_err()
                .to_string()
                .contains("missing.json")
        );
        std::fs::write(&p, r#"{"nodes":[]}"#).unwrap();
        assert_eq!(
            read_definition(&p).unwrap(),
            serde_json::json!({"nodes": []})
        );
    }
}
