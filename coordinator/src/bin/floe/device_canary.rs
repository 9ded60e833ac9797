//! `floe device set`'s canary facts (001 "Canary Selection Algorithm": single points of
//! failure, known hardware issues, monitoring coverage) and how `floe device get` shows them
//! with the coordinator's own connectivity history.

use crate::config::on_off;
use clap::Args;
use floe_coordinator::contract::{Device, DevicePatch};

/// The canary facts `floe device set` can change (absent: left alone).
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
pub(crate) struct CanaryFactArgs {
    /// on: the device is a single point of failure at its site and never a canary.
    #[arg(long, value_parser = on_off, value_name = "on|off")]
    pub(crate) single_point_of_failure: Option<bool>,
    /// Known hardware issues in words (keeps the device out of the canary); "" clears them.
    #[arg(long, value_name = "TEXT")]
    pub(crate) known_issues: Option<String>,
    /// Monitoring coverage 0-100; each type's canary is its best-covered eligible device.
    #[arg(long, value_name = "0..100", value_parser = clap::value_parser!(u8).range(0..=100))]
    pub(crate) monitoring: Option<u8>,
}

impl CanaryFactArgs {
    /// Whether any fact is given.
    pub(crate) fn any(&self) -> bool {
        self.single_point_of_failure.is_some()
            || self.known_issues.is_some()
            || self.monitoring.is_some()
    }
}

/// The `PATCH /devices/{id}` body of `floe device set`.
pub(crate) fn patch(
    maintenance: Option<bool>,
    quarantined: Option<bool>,
    facts: CanaryFactArgs,
) -> DevicePatch {
    DevicePatch {
        maintenance,
        quarantined,
        single_point_of_failure: facts.single_point_of_failure,
        known_hardware_issues: facts.known_issues,
        monitoring: facts.monitoring,
    }
}

/// The canary facts as `floe device get` lists them.
pub(crate) fn lines(d: &Device) -> Vec<(&'static str, String)> {
    let on = |b: bool| if b { "on" } else { "off" }.to_string();
    let issues = if d.known_hardware_issues.is_empty() {
        "-".to_string()
    } else {
        d.known_hardware_issues.clone()
    };
    let offline = match (d.offline_history.len(), d.offline_history.last()) {
        (0, _) | (_, None) => "-".to_string(),
        (n, Some(last)) => format!("{n} recorded, last {last}"),
    };
    vec![
        ("spof", on(d.single_point_of_failure)),
        ("known issues", issues),
        (
            "monitoring",
            d.monitoring
                .map_or_else(|| "unset".to_string(), |m| m.to_string()),
        ),
        ("went offline", offline),
    ]
}
