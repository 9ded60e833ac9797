//! The operators' deployment commands of the VALIDATE phase and around it: `floe deploy start
//! ID [--override ITEM,…]` (the pre-deployment checklist runs first; a refusal prints every
//! failed item and exits non-zero), `floe deploy abort ID`, `floe deploy state ID` (reference
//! 003's state block), the checklist's rendering for `status`, and the flags `create` turns
//! into config (`--steps 5,25,50,100 --soak 10m`, `--force`).

use std::process::ExitCode;

use anyhow::{Result, bail};
use floe_coordinator::client::{Client, ClientError, Deployment};
use floe_coordinator::contract::{DeploymentState, Preflight, StartInput};

use crate::config::{call, print_raw, table};

/// The devices shown per checklist item (the rest are counted).
const SHOWN: usize = 3;

/// `floe deploy start ID [--override ITEM,…]`.
pub(crate) fn start(
    c: &Client,
    id: &str,
    overrides: &[String],
    json_out: bool,
) -> Result<ExitCode> {
    let body = StartInput {
        overrides: overrides.to_vec(),
    };
    match c.start_deployment(id, &body) {
        Ok(reply) => {
            if json_out {
                print_raw(&reply.text);
            } else {
                let d: Deployment = reply.json()?;
                outln!("{}: start → {}", d.id, d.status);
                if let Some(p) = &d.preflight {
                    out!("{}", render_preflight(p));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(ClientError::Api { code, message, .. }) if code == "preflight_failed" => {
            // The refusal's checklist is stored with the deployment: show it whole.
            let d: Deployment = call(c, |c| c.get_deployment(id))?.json()?;
            if let Some(p) = &d.preflight {
                if json_out {
                    outln!("{}", serde_json::to_string_pretty(p)?);
                } else {
                    out!("{}", render_preflight(p));
                }
            }
            let items: Vec<&str> = d
                .preflight
                .iter()
                .flat_map(|p| p.blocking())
                .map(|i| i.name.as_str())
                .collect();
            bail!(
                "{message}\nthe deployment stays pending; resolve the items or start with --override {}",
                items.join(",")
            )
        }
        Err(e) => call(c, |_| Err::<(), _>(e)).map(|()| ExitCode::FAILURE),
    }
}

/// `floe deploy state ID`.
pub(crate) fn state(c: &Client, id: &str, json_out: bool) -> Result<ExitCode> {
    let reply = call(c, |c| c.deployment_state(id))?;
    if json_out {
        print_raw(&reply.text);
    } else {
        let s: DeploymentState = reply.json()?;
        outln!("{}", s.text);
    }
    Ok(ExitCode::SUCCESS)
}

/// A checklist result as a heading line and a table of its items.
pub(crate) fn render_preflight(p: &Preflight) -> String {
    let verdict = if p.passed && p.overridden.is_empty() {
        "passed".to_string()
    } else if p.passed {
        format!("passed with overrides ({})", p.overridden.join(", "))
    } else {
        let n = p.blocking().count();
        format!("FAILED: {n} item{}", if n == 1 { "" } else { "s" })
    };
    let mode = if p.enforced {
        "enforced"
    } else {
        "not enforced"
    };
    let mut out = format!(
        "pre-flight ({}, {}, {mode}, by {}): {verdict}\n",
        p.when, p.at, p.actor
    );
    let rows: Vec<Vec<String>> = p
        .items
        .iter()
        .map(|i| {
            let result = match (i.passed, i.overridden) {
                (true, _) => "ok",
                (false, true) => "overridden",
                (false, false) => "FAILED",
            };
            let mut devices = i
                .devices
                .iter()
                .take(SHOWN)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ");
            let more = i.count.saturating_sub(SHOWN.min(i.devices.len()) as u64);
            if more > 0 {
                devices.push_str(&format!(" +{more} more"));
            }
            if devices.is_empty() {
                devices = "-".into();
            }
            vec![i.name.clone(), result.into(), devices, i.detail.clone()]
        })
        .collect();
    out.push_str(&table(&["ITEM", "RESULT", "DEVICES", "DETAIL"], &rows));
    out
}

/// The config `create`'s own flags set, as `--set` pairs (which `--set` may override).
pub(crate) fn create_sets(
    strategy: &str,
    steps: &[f64],
    soak: Option<&str>,
    force: bool,
) -> Result<Vec<(String, String)>> {
    let mut sets = Vec::new();
    if (!steps.is_empty() || soak.is_some()) && strategy != "steps" {
        bail!(
            "--steps and --soak go with --strategy steps (other strategies: --set canary_delay=…, batch_delay=…)"
        );
    }
    if !steps.is_empty() {
        sets.push(("steps".to_string(), serde_json::to_string(steps)?));
    }
    if let Some(s) = soak {
        sets.push(("step_soak".to_string(), s.to_string()));
    }
    if force {
        if strategy != "all-at-once" {
            bail!("--force is for --strategy all-at-once above its size limit");
        }
        sets.push(("force".to_string(), "true".to_string()));
    }
    Ok(sets)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use serde_json::json;

    fn fixture() -> Preflight {
        serde_json::from_value(json!({
            "when": "start", "at": "2026-11-22T03:00:00Z", "passed": false, "enforced": true,
            "overridden": ["rollback_target"], "actor": "token:alice",
            "items": [
                {"name": "artifact_integrity", "passed": true, "overridden": false,
                 "detail": "signatures verified", "devices": [], "count": 0},
                {"name": "disk_space", "passed": false, "overridden": false,
                 "detail": "2 of 5 targets have less than 0.002 MB free",
                 "devices": ["dev_1 (free space unknown)", "dev_2 (0.0 MB free)"], "count": 2},
                {"name": "rollback_target", "passed": false, "overridden": true,
                 "detail": "5 of 5 targets have nothing to return to",
                 "devices": ["dev_1", "dev_2", "dev_3", "dev_4", "dev_5"], "count": 5}
            ]
        }))
        .unwrap()
    }

    #[test]
    fn the_checklist_renders_every_item_with_its_devices() {
        assert_eq!(
            render_preflight(&fixture()),
            "pre-flight (start, 2026-11-22T03:00:00Z, enforced, by token:alice): FAILED: 1 item\n\
             ITEM                RESULT      DEVICES                                          DETAIL\n\
             artifact_integrity  ok          -                                                signatures verified\n\
             disk_space          FAILED      dev_1 (free space unknown), dev_2 (0.0 MB free)  2 of 5 targets have less than 0.002 MB free\n\
             rollback_target     overridden  dev_1, dev_2, dev_3 +2 more                      5 of 5 targets have nothing to return to\n"
        );
    }

    #[test]
    fn create_flags_become_config() {
        assert_eq!(
            create_sets("steps", &[5.0, 25.0, 50.0, 100.0], Some("10m"), false).unwrap(),
            vec![
                ("steps".to_string(), "[5.0,25.0,50.0,100.0]".to_string()),
                ("step_soak".to_string(), "10m".to_string())
            ]
        );
        assert_eq!(
            create_sets("all-at-once", &[], None, true).unwrap(),
            vec![("force".to_string(), "true".to_string())]
        );
        assert!(create_sets("rolling", &[5.0, 100.0], None, false).is_err());
        assert!(create_sets("rolling", &[], Some("1m"), false).is_err());
        assert!(create_sets("rolling", &[], None, true).is_err());
        assert!(create_sets("rolling", &[], None, false).unwrap().is_empty());
    }
}
