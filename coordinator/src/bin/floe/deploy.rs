//! `floe deploy …`: create deployments, drive their lifecycle, watch them, read their reports.
//!
//! `deploy create` builds the contract's body from flags: targets as `--device ID` (repeatable)
//! or `--selector k=v` (repeatable; `type`/`device_type` and `region` select those fields, any
//! other key, or `label.KEY`, selects a label), and the config from `--config FILE` (JSON, or
//! TOML when the name ends in `.toml`) overlaid with `--set key=value` (a value that parses as
//! JSON, such as `5`, `true` or `[…]`, is sent as that JSON; anything else, such as `5m`, as a
//! string). The server checks the values and names the field at fault.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use floe_coordinator::client::{
    Client, Deployment, DeploymentAction, DeploymentInput, DeploymentPage, ReportFormat, Target,
};
use serde_json::{Map, Value, json};

use crate::config::{Conn, call, client, fields, key_value, or_dash, print_raw, table};
use crate::watch::{self, Mode, WatchOptions};

/// The strategies of the contract.
pub(crate) const STRATEGIES: [&str; 6] = [
    "all-at-once",
    "rolling",
    "canary",
    "blue-green",
    "canary-waves",
    "steps",
];

/// Most targets listed by `deploy status` without `--json` (the rest are counted).
const MAX_TARGET_ROWS: usize = 50;
/// Deployments asked for per page by `deploy list` (it follows the cursors to the end).
const PAGE: usize = 1000;
/// The largest `--config` file read.
const MAX_CONFIG_FILE: u64 = 1024 * 1024;

/// `floe deploy`.
#[derive(Debug, Args)]
pub(crate) struct DeployArgs {
    #[command(flatten)]
    conn: Conn,
    #[command(subcommand)]
    command: DeployCommand,
}

#[derive(Debug, Subcommand)]
enum DeployCommand {
    /// Create a deployment (pending until started).
    Create(CreateArgs),
    /// List deployments.
    List {
        /// pending, running, paused, completed, failed or rolled_back.
        #[arg(long)]
        status: Option<String>,
        /// Only deployments of this flow.
        #[arg(long = "flow")]
        flow_id: Option<String>,
    },
    /// Show a deployment; --watch follows it until it ends (exit 0 completed, 1 failed,
    /// 2 rolled back).
    Status {
        /// The deployment id.
        id: String,
        /// Follow live progress until the deployment ends.
        #[arg(long)]
        watch: bool,
        /// Poll interval for --watch, in milliseconds.
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(100..=60_000))]
        interval_ms: u64,
    },
    /// Start a pending deployment: the pre-deployment checklist runs first and a failed item
    /// stops the start (every failed item is listed) unless overridden.
    Start {
        /// The deployment id.
        id: String,
        /// Checklist items to start despite their failure (audited), e.g.
        /// --override disk_space,connectivity.
        #[arg(long = "override", value_name = "ITEM", value_delimiter = ',')]
        overrides: Vec<String>,
    },
    /// Abort a deployment: before its start it ends at once; afterwards the devices not yet
    /// committed are rolled back.
    Abort {
        /// The deployment id.
        id: String,
    },
    /// Print reference 003's state block of a deployment.
    State {
        /// The deployment id.
        id: String,
    },
    /// Pause a running deployment.
    Pause {
        /// The deployment id.
        id: String,
    },
    /// Resume a paused deployment.
    Resume {
        /// The deployment id.
        id: String,
    },
    /// Approve the next stage of a deployment that waits for approval.
    Approve {
        /// The deployment id.
        id: String,
    },
    /// Roll a deployment back on every device it reached.
    Rollback {
        /// The deployment id.
        id: String,
    },
    /// Print a deployment's incident report (failed or rolled-back deployments).
    Incident {
        /// The deployment id.
        id: String,
        /// markdown (default) or json.
        #[arg(long, value_parser = ["markdown", "json"], default_value = "markdown")]
        format: String,
    },
    /// Print a deployment's report (and its incident report, if it has one).
    Report {
        /// The deployment id.
        id: String,
        /// markdown (default) or json.
        #[arg(long, value_parser = ["markdown", "json"], default_value = "markdown")]
        format: String,
    },
}

/// Arguments of `floe deploy create`.
#[derive(Debug, Args)]
pub(crate) struct CreateArgs {
    /// The published flow to deploy.
    #[arg(long = "flow")]
    flow_id: String,
    /// The strategy.
    #[arg(long, value_parser = STRATEGIES)]
    strategy: String,
    /// A target device (repeatable).
    #[arg(
        long = "device",
        value_name = "ID",
        required_unless_present = "selector",
        conflicts_with = "selector"
    )]
    devices: Vec<String>,
    /// A selector term k=v (repeatable): type=…, region=…, or a label (site=north, label.region=x).
    #[arg(long, value_name = "K=V", value_parser = key_value)]
    selector: Vec<(String, String)>,
    /// A config value key=value (repeatable), e.g. --set batch_size=5 --set batch_delay=5m.
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = key_value)]
    sets: Vec<(String, String)>,
    /// The config as a file (JSON, or TOML for *.toml); --set values override it.
    #[arg(long = "config", value_name = "FILE")]
    config_file: Option<PathBuf>,
    /// Steps strategy: cumulative percentages, rising, ending at 100 (e.g. 5,25,50,100).
    #[arg(long, value_name = "P,P,…", value_delimiter = ',')]
    steps: Vec<f64>,
    /// Steps strategy: the observation period after each step (e.g. 10m).
    #[arg(long, value_name = "DURATION")]
    soak: Option<String>,
    /// All-at-once above its size limit (10 devices): deploy to every target at once anyway
    /// (audited).
    #[arg(long)]
    force: bool,
    /// Start the deployment right after creating it.
    #[arg(long)]
    start: bool,
    /// Start it and follow its progress (implies --start).
    #[arg(long)]
    watch: bool,
}

/// The selector object from `k=v` terms.
pub(crate) fn selector(terms: &[(String, String)]) -> Result<Value> {
    let mut labels = Map::new();
    let mut sel = Map::new();
    for (k, v) in terms {
        let (slot, key) = match k.as_str() {
            "type" | "device_type" => (&mut sel, "device_type".to_string()),
            "region" => (&mut sel, "region".to_string()),
            other => (
                &mut labels,
                other.strip_prefix("label.").unwrap_or(other).to_string(),
            ),
        };
        if key.is_empty() {
            bail!("selector `{k}={v}` names no label");
        }
        if slot.insert(key, Value::String(v.clone())).is_some() {
            bail!("selector `{k}` is given twice");
        }
    }
    if !labels.is_empty() {
        sel.insert("labels".into(), Value::Object(labels));
    }
    Ok(Value::Object(sel))
}

/// A `--set` value: JSON when it parses as JSON, else the text as a string.
pub(crate) fn set_value(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

/// Reads a `--config` file: JSON, or TOML when the name ends in `.toml`; it must be a table.
pub(crate) fn read_config_file(path: &Path) -> Result<Map<String, Value>> {
    use std::io::Read;
    let name = path.display().to_string();
    let mut text = String::new();
    std::fs::File::open(path)
        .with_context(|| format!("opening config file {name}"))?
        .take(MAX_CONFIG_FILE + 1)
        .read_to_string(&mut text)
        .with_context(|| format!("reading config file {name}"))?;
    if text.len() as u64 > MAX_CONFIG_FILE {
        bail!("config file {name} is larger than 1 MiB");
    }
    let value: Value = if name.ends_with(".toml") {
        let t: toml::Value = toml::from_str(&text).map_err(|e| {
            anyhow::anyhow!(
                "config file {name}: {}",
                e.to_string().trim().replace('\n', " ")
            )
        })?;
        serde_json::to_value(t).with_context(|| format!("config file {name}"))?
    } else {
        serde_json::from_str(&text)
            .with_context(|| format!("config file {name} is not valid JSON"))?
    };
    match value {
        Value::Object(m) => Ok(m),
        _ => bail!("config file {name} must hold an object of config keys"),
    }
}

/// The body of `POST /deployments`.
pub(crate) fn deployment_body(
    flow_id: &str,
    strategy: &str,
    devices: &[String],
    selector_terms: &[(String, String)],
    base_config: Map<String, Value>,
    sets: &[(String, String)],
) -> Result<Value> {
    let mut body = Map::new();
    body.insert("flow_id".into(), json!(flow_id));
    body.insert("strategy".into(), json!(strategy));
    if !devices.is_empty() {
        body.insert("target_devices".into(), json!(devices));
    } else if !selector_terms.is_empty() {
        body.insert("selector".into(), selector(selector_terms)?);
    } else {
        bail!("name the targets with --device ID or --selector k=v");
    }
    let mut config = base_config;
    for (k, v) in sets {
        config.insert(k.clone(), set_value(v));
    }
    if !config.is_empty() {
        body.insert("config".into(), Value::Object(config));
    }
    Ok(Value::Object(body))
}

pub(crate) fn run(args: DeployArgs) -> Result<ExitCode> {
    let c = client(&args.conn)?;
    let json_out = args.conn.json;
    let action = |c: &Client, id: &str, a: DeploymentAction| -> Result<ExitCode> {
        let reply = call(c, |c| c.deployment_action(id, a))?;
        if json_out {
            print_raw(&reply.text);
        } else {
            let d: Deployment = reply.json()?;
            outln!("{}: {} → {}", d.id, a.as_str(), d.status);
        }
        Ok(ExitCode::SUCCESS)
    };
    match args.command {
        DeployCommand::Create(a) => {
            let base = match &a.config_file {
                Some(p) => read_config_file(p)?,
                None => Map::new(),
            };
            let mut sets =
                crate::deploy_ops::create_sets(&a.strategy, &a.steps, a.soak.as_deref(), a.force)?;
            sets.extend(a.sets.iter().cloned());
            let body = deployment_body(
                &a.flow_id,
                &a.strategy,
                &a.devices,
                &a.selector,
                base,
                &sets,
            )?;
            let body: DeploymentInput = serde_json::from_value(body)
                .context("the deployment settings (see `floe deploy create --help`)")?;
            let reply = call(&c, |c| c.create_deployment(&body))?;
            let d: Deployment = reply.json()?;
            if !(a.start || a.watch) {
                if json_out {
                    print_raw(&reply.text);
                } else {
                    out!("{}", render_status(&d, &first_targets(&c, &d.id)?));
                }
                return Ok(ExitCode::SUCCESS);
            }
            let started = call(&c, |c| c.deployment_action(&d.id, DeploymentAction::Start))?;
            if a.watch {
                return follow(&c, &d.id, watch::DEFAULT_INTERVAL, json_out);
            }
            if json_out {
                print_raw(&started.text);
            } else {
                out!(
                    "{}",
                    render_status(&started.json()?, &first_targets(&c, &d.id)?)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        DeployCommand::List { status, flow_id } => {
            // Every page, following the cursors.
            let deployments = call(&c, |c| {
                c.deployments(status.as_deref(), flow_id.as_deref(), Some(PAGE))
                    .all()
            })?;
            if json_out {
                let all = DeploymentPage {
                    deployments,
                    next: None,
                };
                outln!("{}", serde_json::to_string_pretty(&all)?);
            } else {
                out!("{}", render_list(&deployments));
            }
            Ok(ExitCode::SUCCESS)
        }
        DeployCommand::Status {
            id,
            watch,
            interval_ms,
        } => {
            if watch {
                return follow(&c, &id, Duration::from_millis(interval_ms), json_out);
            }
            let reply = call(&c, |c| c.get_deployment(&id))?;
            if json_out {
                print_raw(&reply.text);
            } else {
                out!(
                    "{}",
                    render_status(&reply.json()?, &first_targets(&c, &id)?)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        DeployCommand::Start { id, overrides } => {
            crate::deploy_ops::start(&c, &id, &overrides, json_out)
        }
        DeployCommand::Abort { id } => action(&c, &id, DeploymentAction::Abort),
        DeployCommand::State { id } => crate::deploy_ops::state(&c, &id, json_out),
        DeployCommand::Pause { id } => action(&c, &id, DeploymentAction::Pause),
        DeployCommand::Resume { id } => action(&c, &id, DeploymentAction::Resume),
        DeployCommand::Approve { id } => action(&c, &id, DeploymentAction::Approve),
        DeployCommand::Rollback { id } => action(&c, &id, DeploymentAction::Rollback),
        DeployCommand::Report { id, format } => {
            let f = if json_out || format == "json" {
                ReportFormat::Json
            } else {
                ReportFormat::Markdown
            };
            let reply = call(&c, |c| c.deployment_report(&id, f))?;
            print_raw(&reply.text);
            if f == ReportFormat::Markdown {
                crate::incident::append_to_report(&c, &id)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        DeployCommand::Incident { id, format } => {
            crate::incident::print(&c, &id, json_out || format == "json")
        }
    }
}

/// The first [`MAX_TARGET_ROWS`] targets of a deployment, for the status view.
fn first_targets(c: &Client, id: &str) -> Result<Vec<Target>> {
    let (targets, _) = call(c, |c| c.targets(id, Some(MAX_TARGET_ROWS)).page(None))?;
    Ok(targets)
}

/// Watches a deployment until it ends: bars on a terminal, lines otherwise; with `--json`, the
/// final deployment JSON as the server sent it.
fn follow(c: &Client, id: &str, interval: Duration, json_out: bool) -> Result<ExitCode> {
    let mode = if json_out {
        // Lines would not be JSON: poll quietly and print the final object as received.
        Mode::Quiet
    } else if std::io::stdout().is_terminal() {
        Mode::Bars
    } else {
        Mode::Lines
    };
    let opts = WatchOptions {
        interval,
        mode,
        limit: None,
        interrupted: None,
        live: true,
    };
    let d = if json_out {
        let d = watch::watch(c, id, &opts)?;
        let reply = call(c, |c| c.get_deployment(id))?;
        print_raw(&reply.text);
        d
    } else {
        let d = watch::watch(c, id, &opts)?;
        outln!("{}", watch::final_line(&d));
        d
    };
    Ok(watch::exit_code(&d))
}

/// The table of `floe deploy list`.
pub(crate) fn render_list(deps: &[Deployment]) -> String {
    if deps.is_empty() {
        return "no deployments\n".to_string();
    }
    let rows: Vec<Vec<String>> = deps
        .iter()
        .map(|d| {
            vec![
                d.id.clone(),
                d.flow_id.clone(),
                artifact_text(d),
                d.strategy.clone(),
                d.status.to_string(),
                format!("{}/{}", d.completed_targets, d.total_targets),
                d.failed_targets.to_string(),
                d.offline_targets.to_string(),
                or_dash(Some(&d.created_at)),
            ]
        })
        .collect();
    table(
        &[
            "ID", "FLOW", "ARTIFACT", "STRATEGY", "STATUS", "DONE", "FAILED", "OFFLINE", "CREATED",
        ],
        &rows,
    )
}

fn artifact_text(d: &Deployment) -> String {
    format!("{} r{}", d.artifact.name, d.artifact.release)
}

/// The human view of one deployment: summary fields, stages, gates and `targets` (its first
/// 50; the rest are counted).
pub(crate) fn render_status(d: &Deployment, targets: &[Target]) -> String {
    let mut pairs = vec![
        ("id", d.id.clone()),
        ("flow", d.flow_id.clone()),
        ("artifact", artifact_text(d)),
        ("strategy", d.strategy.clone()),
        (
            "status",
            if d.status_reason.is_empty() {
                d.status.to_string()
            } else {
                format!("{} ({})", d.status, d.status_reason)
            },
        ),
    ];
    if !d.phase.is_empty() {
        pairs.push(("phase", d.phase.clone()));
    }
    pairs.push((
        "targets",
        format!(
            "{} total: {} completed, {} failed, {} offline, {} rolled back, {} pending",
            d.total_targets,
            d.completed_targets,
            d.failed_targets,
            d.offline_targets,
            d.rolled_back_targets,
            d.pending_targets
        ),
    ));
    if d.awaiting_approval {
        pairs.push(("approval", format!("waiting: floe deploy approve {}", d.id)));
    }
    pairs.push(("created", or_dash(Some(&d.created_at))));
    pairs.push(("started", or_dash(d.started_at.as_deref())));
    pairs.push(("completed", or_dash(d.completed_at.as_deref())));
    let mut out = fields(&pairs);
    let plan = crate::plan_view::render(&d.plan);
    if !plan.is_empty() {
        out.push('\n');
        out.push_str(&plan);
    }
    let progress = watch::stage_progress(d);
    if !progress.is_empty() {
        out.push('\n');
        let rows: Vec<Vec<String>> = progress
            .iter()
            .map(|s| {
                let kind = d
                    .stages
                    .iter()
                    .find(|st| st.index == s.index)
                    .map(|st| st.kind.to_string())
                    .unwrap_or_default();
                let marker = if d.current_stage == s.index && !d.is_terminal() {
                    "▶"
                } else {
                    ""
                };
                vec![
                    format!("{marker}{}", s.index),
                    s.name.clone(),
                    or_dash(Some(&kind)),
                    format!("{}/{}", s.done, s.total),
                    watch::counts_text(&s.counts),
                ]
            })
            .collect();
        out.push_str(&table(&["STAGE", "NAME", "KIND", "DONE", "STATUS"], &rows));
    }
    let baselines = crate::gates_view::render_baselines(d);
    if !baselines.is_empty() {
        out.push('\n');
        out.push_str(&baselines);
    }
    if !d.gates.is_empty() {
        out.push('\n');
        for g in &d.gates {
            out.push_str(&watch::gate_line(g));
            out.push('\n');
        }
    }
    if let Some(p) = &d.preflight {
        out.push('\n');
        out.push_str(&crate::deploy_ops::render_preflight(p));
    }
    if !targets.is_empty() {
        out.push('\n');
        let rows: Vec<Vec<String>> = targets
            .iter()
            .take(MAX_TARGET_ROWS)
            .map(|t| {
                vec![
                    t.device_id.clone(),
                    t.status.to_string(),
                    t.stage.to_string(),
                    t.generation.to_string(),
                    or_dash(Some(&t.detail)),
                ]
            })
            .collect();
        out.push_str(&table(
            &["DEVICE", "STATUS", "STAGE", "GEN", "DETAIL"],
            &rows,
        ));
        let total = (d.total_targets as usize).max(targets.len());
        if total > MAX_TARGET_ROWS {
            out.push_str(&format!(
                "… and {} more targets (GET /api/v1/deployments/{}/targets pages through all)\n",
                total - MAX_TARGET_ROWS,
                d.id
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    use crate::{Cli, Command};
    use clap::{CommandFactory, Parser};

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    fn parse(args: &[&str]) -> Result<DeployArgs, clap::Error> {
        let mut full = vec!["floe", "deploy"];
        full.extend_from_slice(args);
        match Cli::try_parse_from(full)?.command {
            Command::Deploy(a) => Ok(a),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn create_arguments() {
        let a = parse(&[
            "create",
            "--flow",
            "flow_1",
            "--strategy",
            "canary-waves",
            "--device",
            "a",
            "--device",
            "b",
            "--set",
            "batch_size=5",
            "--server",
            "http://x:1",
            "--json",
        ])
        .unwrap();
        assert_eq!(a.conn.server.as_deref(), Some("http://x:1"));
        assert!(a.conn.json);
        match a.command {
            DeployCommand::Create(c) => {
                assert_eq!(c.devices, vec!["a", "b"]);
                assert_eq!(c.sets, kv(&[("batch_size", "5")]));
                assert!(!c.start && !c.watch);
            }
            other => panic!("{other:?}"),
        }
        // Global flags go before the subcommand too.
        let a = parse(&["--token", "t", "list", "--status", "running"]).unwrap();
        assert_eq!(a.conn.token.as_deref(), Some("t"));
        // Targets: one of --device or --selector, not both, not neither.
        let err = parse(&["create", "--flow", "f", "--strategy", "rolling"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        // `floe deploy create --flow f --strategy S` followed by `rest`.
        let create = |strategy: &str, rest: &[&str]| {
            let mut args = vec!["create", "--flow", "f", "--strategy", strategy];
            args.extend_from_slice(rest);
            parse(&args).unwrap_err()
        };
        let err = create("rolling", &["--device", "a", "--selector", "site=n"]);
        assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
        let err = create("yolo", &["--device", "a"]);
        assert_eq!(err.kind(), clap::error::ErrorKind::InvalidValue);
        let err = create("rolling", &["--selector", "site"]);
        assert!(err.to_string().contains("not key=value"), "{err}");
        let err = parse(&["status", "d", "--watch", "--interval-ms", "5"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
        let err = parse(&["report", "d", "--format", "html"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::InvalidValue);
        let err = parse(&["incident", "d", "--format", "html"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::InvalidValue);
        assert!(matches!(
            parse(&["incident", "d", "--format", "json"]).map(|a| a.command),
            Ok(DeployCommand::Incident { id, format }) if id == "d" && format == "json"
        ));
    }

    #[test]
    fn body_with_devices_and_sets() {
        let body = deployment_body(
            "flow_3f2a9c0d1e",
            "rolling",
            &["dev_001".into(), "dev_002".into()],
            &[],
            Map::new(),
            &kv(&[
                ("batch_size", "5"),
                ("batch_delay", "5m"),
                ("auto_rollback", "false"),
                (
                    "waves",
                    r#"[{"name":"wave-1","percentage":25,"soak":"10m"}]"#,
                ),
                ("quoted", r#""5""#),
            ]),
        )
        .unwrap();
        assert_eq!(
            body,
            json!({
                "flow_id": "flow_3f2a9c0d1e", "strategy": "rolling",
                "target_devices": ["dev_001", "dev_002"],
                "config": {"batch_size": 5, "batch_delay": "5m", "auto_rollback": false,
                           "waves": [{"name": "wave-1", "percentage": 25, "soak": "10m"}],
                           "quoted": "5"}
            })
        );
    }

    #[test]
    fn body_with_a_selector_and_a_config_file_overridden_by_sets() {
        let dir = tempfile::tempdir().unwrap();
        let toml_path = dir.path().join("c.toml");
        std::fs::write(&toml_path, "batch_size = 2\ncanary_delay = \"30m\"\n").unwrap();
        let base = read_config_file(&toml_path).unwrap();
        let body = deployment_body(
            "flow_1",
            "canary",
            &[],
            &kv(&[
                ("site", "north"),
                ("type", "rpi4"),
                ("region", "eu"),
                ("label.region", "x"),
            ]),
            base,
            &kv(&[("batch_size", "3")]),
        )
        .unwrap();
        assert_eq!(
            body,
            json!({
                "flow_id": "flow_1", "strategy": "canary",
                "selector": {"labels": {"site": "north", "region": "x"}, "device_type": "rpi4", "region": "eu"},
                "config": {"batch_size": 3, "canary_delay": "30m"}
            })
        );
        let json_path = dir.path().join("c.json");
        std::fs::write(&json_path, "[1]").unwrap();
        assert!(
            read_config_file(&json_path)
                .unwrap_err()
                .to_string()
                .contains("object")
        );
        std::fs::write(&toml_path, "batch_size = ").unwrap();
        assert!(
            read_config_file(&toml_path)
                .unwrap_err()
                .to_string()
                .contains("c.toml")
        );
    }

    #[test]
    fn selector_errors() {
        assert!(
            selector(&kv(&[("type", "a"), ("device_type", "b")]))
                .unwrap_err()
                .to_string()
                .contains("twice")
        );
        assert!(
            selector(&kv(&[("label.", "a")]))
                .unwrap_err()
                .to_string()
                .contains("no label")
        );
        assert!(deployment_body("f", "rolling", &[], &[], Map::new(), &[]).is_err());
    }

    fn fixture() -> Deployment {
        let zero = json!({"pending": 0, "deploying": 0, "success": 0, "failed": 0,
                          "offline": 0, "skipped": 0, "rolled_back": 0, "quarantined": 0});
        let mut total = zero.clone();
        total["success"] = json!(1);
        total["pending"] = json!(2);
        let mut canary = zero.clone();
        canary["success"] = json!(1);
        let mut rest = zero;
        rest["pending"] = json!(2);
        serde_json::from_value(json!({
            "id": "dep_0a1b2c3d4e", "flow_id": "flow_3f2a9c0d1e",
            "artifact": {"name": "flow_3f2a9c0d1e", "release": 2, "version": "1.2.0", "manifest_sha256": "00"},
            "strategy": "canary", "status": "running", "status_reason": "",
            "total_targets": 3, "completed_targets": 1, "failed_targets": 0, "offline_targets": 0,
            "rolled_back_targets": 0, "skipped_targets": 0, "pending_targets": 2,
            "target_counts": total,
            "current_stage": 0,
            "stages": [
                {"index": 0, "name": "canary", "kind": "canary", "size": 1, "counts": canary, "devices": ["dev_001"]},
                {"index": 1, "name": "rest", "kind": "batch", "size": 2, "counts": rest, "devices": ["dev_002", "dev_003"]}
            ],
            "gates": [{"stage": 0, "gate": "canary", "verdict": "wait", "reason": "soaking 12s of 30s", "checks": [], "at": "2026-11-22T03:00:05Z"}],
            "awaiting_approval": true, "phase": "VERIFY", "pause_reason": null,
            "created_at": "2026-11-22T03:00:00Z", "started_at": "2026-11-22T03:00:01Z", "completed_at": null,
            "config": crate::watch::tests::config()
        }))
        .unwrap()
    }

    fn targets() -> Vec<Target> {
        serde_json::from_value(json!([
            {"device_id": "dev_001", "status": "success", "stage": 0, "generation": 4, "detail": ""},
            {"device_id": "dev_002", "status": "pending", "stage": 1, "generation": 3, "detail": ""},
            {"device_id": "dev_003", "status": "pending", "stage": 1, "generation": 3, "detail": ""}
        ]))
        .unwrap()
    }

    #[test]
    fn status_view() {
        let text = render_status(&fixture(), &targets());
        let expected = "\
id:         dep_0a1b2c3d4e
flow:       flow_3f2a9c0d1e
artifact:   flow_3f2a9c0d1e r2
strategy:   canary
status:     running
phase:      VERIFY
targets:    3 total: 1 completed, 0 failed, 0 offline, 0 rolled back, 2 pending
approval:   waiting: floe deploy approve dep_0a1b2c3d4e
created:    2026-11-22T03:00:00Z
started:    2026-11-22T03:00:01Z
completed:  -

STAGE  NAME    KIND    DONE  STATUS
▶0     canary  canary  1/1   success 1
1      rest    batch   0/2   pending 2

gate canary (stage 0): WAIT · soaking 12s of 30s

DEVICE   STATUS   STAGE  GEN  DETAIL
dev_001  success  0      4    -
dev_002  pending  1      3    -
dev_003  pending  1      3    -
";
        assert_eq!(text, expected);
    }

    #[test]
    fn status_view_caps_the_target_rows() {
        let mut d = fixture();
        let t = targets()[1].clone();
        let many: Vec<Target> = (0..120)
            .map(|i| {
                let mut t = t.clone();
                t.device_id = format!("dev_{i:03}");
                t
            })
            .collect();
        d.total_targets = 2_000;
        let text = render_status(&d, &many);
        assert!(text.contains("dev_049"));
        assert!(!text.contains("dev_050"));
        assert!(
            text.ends_with(&format!(
                "… and 1950 more targets (GET /api/v1/deployments/{}/targets pages through all)\n",
                d.id
            )),
            "{text}"
        );
    }

    #[test]
    fn list_view() {
        let mut done = fixture();
        done.id = "dep_ffffffffff".into();
        done.status = floe_coordinator::contract::DeploymentStatus::Completed;
        done.completed_targets = 3;
        assert_eq!(
            render_list(&[fixture(), done]),
            "ID              FLOW             ARTIFACT            STRATEGY  STATUS     DONE  FAILED  OFFLINE  CREATED\n\
             dep_0a1b2c3d4e  flow_3f2a9c0d1e  flow_3f2a9c0d1e r2  canary    running    1/3   0       0        2026-11-22T03:00:00Z\n\
             dep_ffffffffff  flow_3f2a9c0d1e  flow_3f2a9c0d1e r2  canary    completed  3/3   0       0        2026-11-22T03:00:00Z\n"
        );
        assert_eq!(render_list(&[]), "no deployments\n");
    }
}
