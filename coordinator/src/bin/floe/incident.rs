//! `floe deploy incident ID` and the incident part of `floe deploy report ID`: the incident
//! report of a failed or rolled-back deployment (`GET /deployments/{id}/incident`). Device
//! text in it (a device's last word) is untrusted: each line is escaped for the terminal.

use anyhow::Result;
use floe_coordinator::client::{Client, ClientError, ReportFormat};
use floe_wire::text::for_terminal;
use std::process::ExitCode;

use crate::config::{call, print_raw};

/// Prints markdown with every line escaped for the terminal.
fn print_escaped(text: &str) {
    let escaped: Vec<String> = text.lines().map(|l| for_terminal(l).into_owned()).collect();
    print_raw(&escaped.join("\n"));
}

/// `floe deploy incident ID [--format json|markdown]`.
pub(crate) fn print(c: &Client, id: &str, json: bool) -> Result<ExitCode> {
    let f = if json {
        ReportFormat::Json
    } else {
        ReportFormat::Markdown
    };
    let reply = call(c, |c| c.deployment_incident(id, f))?;
    if json {
        print_raw(&reply.text);
    } else {
        print_escaped(&reply.text);
    }
    Ok(ExitCode::SUCCESS)
}

/// After `floe deploy report ID` (markdown): the incident report too, when the deployment
/// has one (a 404 means it neither failed nor was rolled back: nothing to add).
pub(crate) fn append_to_report(c: &Client, id: &str) -> Result<()> {
    match c.deployment_incident(id, ReportFormat::Markdown) {
        Ok(reply) => {
            print_raw("");
            print_escaped(&reply.text);
            Ok(())
        }
        Err(ClientError::Api { status: 404, .. }) => Ok(()),
        Err(e) => call(c, |_| Err::<(), _>(e)),
    }
}
