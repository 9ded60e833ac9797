//! `floed validate FILE [--draft] [--json]`: checks a flow definition file on the device, with
//! the same validator the coordinator runs before publishing, so an operator can see every
//! problem of a flow before deploying it.
//!
//! Exit codes: 0 when the flow passes, 1 when it has problems or cannot be read or parsed
//! (clap's usage errors exit 2). The file is read with a cap, so a huge file is refused after
//! reading at most the cap plus one byte.

use anyhow::Result;
use floe_flow::validate::{self, Invalid, Level, Problem};
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `floed validate`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The flow definition (JSON) to check.
    file: PathBuf,
    /// Check at the draft level (structure only; missing required config is tolerated).
    #[arg(long)]
    draft: bool,
    /// Print a machine-readable result: {"ok":…,"level":…,"problems":[{subject,field,message}]}.
    #[arg(long)]
    json: bool,
}

/// What became of the check.
#[derive(Debug)]
enum Outcome {
    Passed,
    Problems(Vec<Problem>),
    /// The file could not be read, or is not a flow document at all.
    Unusable(String),
}

/// Runs the command and returns the process exit code.
pub(crate) fn run(args: &Args) -> Result<ExitCode> {
    let level = if args.draft {
        Level::Draft
    } else {
        Level::Complete
    };
    let outcome = match validate::read_capped(&args.file) {
        Err(e) => Outcome::Unusable(format!("cannot read {}: {e}", args.file.display())),
        Ok(bytes) => match validate::check(&bytes, level) {
            Ok(_) => Outcome::Passed,
            Err(Invalid::Problems(list)) => Outcome::Problems(list),
            Err(Invalid::Input(e)) => Outcome::Unusable(format!("{}: {e}", args.file.display())),
        },
    };
    tracing::debug!(file = %args.file.display(), ?level, "validated flow file");

    if args.json {
        let problems: Vec<Problem> = match &outcome {
            Outcome::Passed => Vec::new(),
            Outcome::Problems(list) => list.clone(),
            Outcome::Unusable(message) => vec![Problem {
                subject: "input".to_string(),
                field: String::new(),
                message: message.clone(),
            }],
        };
        let report = json!({
            "ok": matches!(outcome, Outcome::Passed),
            "level": level,
            "problems": problems,
        });
        outln!("{report}");
    } else {
        match &outcome {
            Outcome::Passed => outln!("ok"),
            Outcome::Problems(list) => {
                for problem in list {
                    outln!("{problem}");
                }
            }
            Outcome::Unusable(message) => eprintln!("error: {message}"),
        }
    }
    Ok(match outcome {
        Outcome::Passed => ExitCode::SUCCESS,
        Outcome::Problems(_) | Outcome::Unusable(_) => ExitCode::FAILURE,
    })
}
